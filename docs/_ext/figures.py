"""Figures of the docs, made by the package's own code (never hand-edited).

Each figure is one tabular experiment run through its public command line::

    prefmatch bandit run NAME --plot docs/_generated/figures/NAME.png --seed 0 --json

The JSON the command prints (its series and checks) is stored next to the image, with a digest of
the package sources; a figure whose digest differs from the current tree is *stale* and is
remade.  Experiments the package does not provide yet are reported as unavailable, not errors.

Used two ways:

* by the Sphinx extension ``prefmatch_generate`` at build time (the fast figures only), and
* as a script, by ``make figures``::

      python docs/_ext/figures.py            # (re)make every stale or missing figure, fast + slow
      python docs/_ext/figures.py --check    # exit 1 if any figure is missing or stale
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
OUT = DOCS / "_generated" / "figures"
SEED = 0


@dataclass(frozen=True)
class Figure:
    name: str          # experiment name of `prefmatch bandit run`
    caption: str
    slow: bool = False  # the full run is made by `make figures`, not by every docs build
    quick_args: tuple[str, ...] = ()  # a slow figure's fast variant, made by the docs build


FIGURES = (
    Figure("bias", "Algorithmic bias of KL-RLHF (PM paper, Figure 2): the aligned model's "
           "preference against the reward model's, for several reference preferences, β = 1."),
    Figure("beta-bias", "Bias from β with a uniform reference (PM paper, Figure 9); the β = 1 "
           "curve coincides with the aligned line."),
    Figure("collapse", "Preference collapse: p_ref → 0 or 1 drives KL-RLHF to 0 or 1 whatever "
           "the reward; PM does not collapse, conditional PM does not while both responses are in "
           "M = {π_ref ≥ α} and collapses like KL-RLHF outside."),
    Figure("fdiv-bias", "f-divergence RLHF optima: the bias persists for every f except KL, "
           "even at β = 1 with a uniform reference."),
    Figure("conditional-pm", "Conditional PM (Theorem 4): preference matching on {π_ref ≥ α}, "
           "compared with PM and KL on the same instances."),
    Figure("multi-reference", "Multi-reference RLHF: reverse- against forward-KL optima, the "
           "escort and arithmetic mixtures, the MRPO and Hölder bounds."),
    Figure("bt-mle", "Bradley–Terry maximum likelihood (PM paper, Appendix A.2): the error "
           "shrinks like 1/√n."),
    Figure("sample-complexity", "Measured optimality and sub-optimality gaps against the "
           "sample-complexity bounds of the multi-reference paper.", slow=True,
           quick_args=("--quick",)),
    Figure("multiref-practice", "What the per-token geometric and arithmetic ensembles of public "
           "code and MRPO's harmonic-mean reference lose of the multi-reference objective, against "
           "the references' disagreement, the response length, the weights and K."),
)


def source_digest() -> str:
    h = hashlib.sha256()
    for sub in ("theory", "tabular", "prefmatch"):
        for p in sorted((ROOT / sub).rglob("*.py")):
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, "-m", "prefmatch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def available_experiments() -> set[str] | None:
    """Names `prefmatch bandit list` knows, or None when the bandit command does not exist."""
    try:
        proc = _cli("bandit", "list")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    text = proc.stdout
    return {f.name for f in FIGURES if f.name in text.replace(",", " ").split()
            or any(line.strip().startswith(f.name + " ") or line.strip() == f.name
                   for line in text.splitlines())}


def paths(fig: Figure) -> tuple[Path, Path]:
    return OUT / f"{fig.name}.png", OUT / f"{fig.name}.json"


def status(fig: Figure, digest: str, quick_ok: bool = False) -> str:
    """'fresh', 'stale' or 'missing' (a quick variant counts as fresh only when quick_ok)."""
    png, meta = paths(fig)
    if not (png.exists() and meta.exists()):
        return "missing"
    try:
        rec = json.loads(meta.read_text())
    except ValueError:
        return "stale"
    if rec.get("digest") != digest:
        return "stale"
    return "fresh" if quick_ok or rec.get("variant", "full") == "full" else "stale"


def make(fig: Figure, digest: str, timeout: float, quick: bool = False) -> dict:
    """Run the experiment; return the record stored next to the image."""
    png, meta = paths(fig)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = png.with_suffix(".tmp.png")
    extra = fig.quick_args if quick else ()
    import time

    t0 = time.perf_counter()
    try:
        proc = _cli("bandit", "run", fig.name, *extra, "--plot", str(tmp), "--overwrite", "--seed",
                    str(SEED), "--json", timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": fig.name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    rec: dict = {"name": fig.name, "digest": digest, "returncode": proc.returncode,
                 "variant": "quick" if extra else "full", "args": list(extra),
                 "seconds": time.perf_counter() - t0}
    try:
        rec["result"] = json.loads(proc.stdout)
    except ValueError:
        rec["result"] = None
    if proc.returncode not in (0, 1) or not tmp.exists():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        rec.update(ok=False, error=f"exit {proc.returncode}, no figure: {tail}")
        tmp.unlink(missing_ok=True)
        return rec
    tmp.replace(png)
    rec["ok"] = proc.returncode == 0
    if proc.returncode == 1:
        rec["error"] = "the experiment's own checks failed (exit 1)"
    meta.write_text(json.dumps(rec, indent=1))
    return rec


def make_all(include_slow: bool, timeout: float = 300.0, force: bool = False) -> dict[str, dict]:
    """Make every stale or missing figure. Returns {name: record or {'skipped': why}}."""
    digest = source_digest()
    known = available_experiments()
    out: dict[str, dict] = {}
    todo = []
    for fig in FIGURES:
        if known is None:
            out[fig.name] = {"skipped": "the `prefmatch bandit` command does not exist yet"}
        elif fig.name not in known:
            out[fig.name] = {"skipped": f"`prefmatch bandit list` does not list {fig.name!r} yet"}
        elif fig.slow and not include_slow and not fig.quick_args:
            out[fig.name] = {"skipped": "slow figure: made by `make figures`"}
        elif not force and status(fig, digest, quick_ok=fig.slow and not include_slow) == "fresh":
            out[fig.name] = json.loads(paths(fig)[1].read_text())
        else:
            todo.append(fig)
    if todo:
        quick = {f.name: f.slow and not include_slow for f in todo}
        with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 2))) as ex:
            recs = ex.map(lambda f: make(f, digest, timeout, quick[f.name]), todo)
            for fig, rec in zip(todo, recs):
                out[fig.name] = rec
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="only check: exit 1 if a figure the package can make is missing or stale")
    ap.add_argument("--fast-only", action="store_true", help="skip the slow figures")
    ap.add_argument("--force", action="store_true", help="remake even fresh figures")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per figure")
    args = ap.parse_args(argv)
    if args.check:
        digest, known, bad = source_digest(), available_experiments() or set(), []
        for fig in FIGURES:
            if fig.name in known and not (fig.slow and args.fast_only):
                st = status(fig, digest)
                print(f"{fig.name:20s} {st}")
                if st != "fresh":
                    bad.append(fig.name)
            else:
                print(f"{fig.name:20s} unavailable (not provided by the package yet)")
        return 1 if bad else 0
    recs = make_all(include_slow=not args.fast_only, timeout=args.timeout, force=args.force)
    failed = False
    for name, rec in recs.items():
        if "skipped" in rec:
            print(f"{name:20s} skipped: {rec['skipped']}")
        else:
            print(f"{name:20s} {'ok' if rec.get('ok') else 'FAILED: ' + rec.get('error', '')}")
            failed |= not rec.get("ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
