"""``make demo``: the main job on built-in defaults, through the real command line.

1. ``prefmatch verify --json``            every check of both papers  → OUT/verify.json
2. ``prefmatch bandit figures --out OUT/figures --overwrite`` the tabular experiments' figures
3. ``prefmatch opinion --quick --json``   the opinion benchmark (tiny LMs trained on CPU)
                                          → OUT/opinion/ (table, figures), OUT/opinion.json

and a short summary at the end.  Each step runs as a subprocess of the installed entry point,
so the demo exercises exactly what a user types.  Exit code 1 if any step fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _run(args: list[str], capture: bool = True) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "prefmatch", *args],
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    return res.returncode, res.stdout or "", time.perf_counter() - t0


#: the summary fits one screen: at most this many lines of at most this many characters
SCREEN_LINES, SCREEN_COLS = 16, 100


def summary_lines(out: Path, verify: list | None, n_fig: int | None, opinion: dict | None,
                  times: dict[str, float]) -> list[str]:
    """The demo's closing summary, one screen: checks, figures, the opinion verdict, where the files are
    (each claim, row and check stays in the files, not on the screen)."""
    lines = []
    if verify is None:
        lines.append("checks   did not run; see the output above")
    else:
        n_pass = sum(bool(r["passed"]) for r in verify)
        failed = [r["id"] for r in verify if not r["passed"]]
        lines.append(f"checks   {n_pass} of {len(verify)} pass ({times.get('verify', 0):.0f} s)"
                     + (f"; failing: {', '.join(failed[:3])}{' ...' if len(failed) > 3 else ''}" if failed else ""))
        lines.append(f"         each check's detail: {out / 'verify.json'}")
    if n_fig is not None:
        lines.append(f"figures  {n_fig} tabular figures ({times.get('figures', 0):.0f} s): {out / 'figures'}/")
    if opinion is not None:
        if not opinion:
            lines.append("opinion  failed; see the output above")
        else:
            claims = opinion.get("claims", [])
            hold = sum(c["holds"] is True for c in claims)
            none = sum(c["holds"] is None for c in claims)
            lines.append(f"opinion  quick grid ({times.get('opinion', 0):.0f} s): tiny models trained on CPU, one seed, "
                         "a smoke run of the pipeline")
            for cell in opinion.get("table3", {}).get("cells", [])[:3]:
                paper, red = cell.get("paper_reduction"), cell.get("reduction")
                # a cell without converged seeds has no reduction: its verdict says why
                what = f"{red:.1%}" if red is not None else cell.get("verdict") or "not evaluated"
                lines.append(f"         cPM α={cell['alpha']:g} ({cell['level']}) vs KL: {what}"
                             + (f"; paper (OPT-1.3B) {paper:.1%}" if paper is not None else ""))
            lines.append(f"         claims: {hold} of {len(claims)} hold, {len(claims) - hold - none} do not"
                         + (f", {none} not evaluated" if none else "") + f": {out / 'opinion.json'}")
            lines.append(f"         table, figures: {out / 'opinion'}/; the full grid's verdict: docs, results/opinion")
    lines.append(f"total    {sum(times.values()) / 60:.1f} min; everything above is in {out}/")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prefmatch.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out", help="output folder (default: out)")
    ap.add_argument("--skip-opinion", action="store_true", help="skip the LLM opinion benchmark")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    verify = n_fig = opinion = None
    ok = True

    print("== 1/3 prefmatch verify", flush=True)
    code, text, times["verify"] = _run(["verify", "--json"])
    (out / "verify.json").write_text(text)
    try:
        verify = json.loads(text)
        for r in verify:
            print(f"  {'PASS' if r['passed'] else 'FAIL'}  {r['id']}")
    except json.JSONDecodeError:
        pass
    ok &= code == 0

    print("== 2/3 prefmatch bandit figures", flush=True)
    code, text, times["figures"] = _run(["bandit", "figures", "--out", str(out / "figures"), "--overwrite"])
    print(text, end="")
    n_fig = len(list((out / "figures").glob("*.png")))
    ok &= code == 0

    if not args.skip_opinion:
        print("== 3/3 prefmatch opinion --quick (tiny language models, CPU)", flush=True)
        code, text, times["opinion"] = _run(["opinion", "--quick", "--json", "--overwrite", "--out",
                                             str(out / "opinion")])
        (out / "opinion.json").write_text(text)
        try:
            opinion = json.loads(text)
        except json.JSONDecodeError:
            opinion = {}
        ok &= code == 0

    print(f"\n== summary{'' if ok else ' (a step failed: see its output above)'}")
    for line in summary_lines(out, verify, n_fig, opinion, times):
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
