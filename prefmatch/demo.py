"""``make demo``: the main job on built-in defaults, through the real command line.

1. ``prefmatch verify --json``            every check of both papers  → OUT/verify.json
2. ``prefmatch bandit figures --out OUT/figures`` the tabular experiments' figures
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prefmatch.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out", help="output folder (default: out)")
    ap.add_argument("--skip-opinion", action="store_true", help="skip the LLM opinion benchmark")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: list[str] = []
    ok = True

    print("== 1/3 prefmatch verify", flush=True)
    code, text, dt = _run(["verify", "--json"])
    (out / "verify.json").write_text(text)
    try:
        results = json.loads(text)
        n_pass = sum(r["passed"] for r in results)
        for r in results:
            print(f"  {'PASS' if r['passed'] else 'FAIL'}  {r['id']}")
        summary.append(f"verify: {n_pass}/{len(results)} checks passed ({dt:.0f} s) -> {out / 'verify.json'}")
    except json.JSONDecodeError:
        summary.append(f"verify: failed to run (exit {code})")
    ok &= code == 0

    print("== 2/3 prefmatch bandit figures", flush=True)
    code, text, dt = _run(["bandit", "figures", "--out", str(out / "figures")])
    print(text, end="")
    n_fig = len(list((out / "figures").glob("*.png")))
    summary.append(f"tabular: {n_fig} figures ({dt:.0f} s) -> {out / 'figures'}")
    ok &= code == 0

    if not args.skip_opinion:
        print("== 3/3 prefmatch opinion --quick (tiny language models, CPU)", flush=True)
        code, text, dt = _run(["opinion", "--quick", "--json", "--overwrite", "--out", str(out / "opinion")])
        (out / "opinion.json").write_text(text)
        try:
            res = json.loads(text)
            summary.append(f"opinion: {len(res['rows'])} rows at beta=1 ({dt:.0f} s) -> {out / 'opinion'}")
            for cell in res["table3"]["cells"]:
                summary.append(f"  cPM alpha={cell['alpha']:g} ({cell['level']}): PM-divergence reduction vs KL "
                               f"{cell['reduction']:.1%} (the paper, OPT-1.3B: "
                               f"{'-' if cell['paper_reduction'] is None else format(cell['paper_reduction'], '.1%')})")
            for c in res["claims"]:
                summary.append(f"  claim {c['id']}: {'holds' if c['holds'] else 'does not hold'}")
        except (json.JSONDecodeError, KeyError, TypeError):
            summary.append(f"opinion: failed (exit {code}); see the output above")
        ok &= code == 0

    print("\n== summary")
    for line in summary:
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
