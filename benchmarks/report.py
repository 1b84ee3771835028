"""The measured tables of docs/results/benchmarks.md, regenerated from runs (never copied by hand).

    python benchmarks/report.py [--runs 3] [--markdown docs/results/benchmarks_tables.md]
    python benchmarks/report.py --from docs/results/benchmarks_runs.json --markdown FILE

Runs ``benchmarks/solvers.py --json`` and ``benchmarks/sample_complexity.py --json`` ``--runs``
times each (one after the other, nothing else of ours running), keeps every printed JSON with the
load average before it in ``benchmarks_runs.json`` beside the page, and writes the two tables and
the raw output as a markdown fragment that benchmarks.md includes. ``--from`` rewrites the
fragment from kept runs without running anything (a test checks that the page is that fragment).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("solvers.py", "sample_complexity.py")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_all(n_runs: int) -> dict:
    """Every script ``n_runs`` times: ``{"machine", "date", "runs": {script: [{"load", "result"}]}}``."""
    runs: dict[str, list] = {s: [] for s in SCRIPTS}
    for script in SCRIPTS:
        for i in range(n_runs):
            load = os.getloadavg()[0]
            print(f"[{script} {i + 1}/{n_runs}] load {load:.2f}", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, str(HERE / script), "--json"], capture_output=True, text=True)
            if proc.returncode not in (0, 1):  # 1: a goal missed, still a measurement
                raise SystemExit(f"{script}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
            runs[script].append({"load": load, "result": json.loads(proc.stdout)})
    return {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "runs": runs}


def _x(v: float, digits: int = 2) -> str:
    return f"{v:,.{digits}f}×"


def _row(label: str, goal: str, vals: list[str], met: list[bool] | None) -> str:
    verdict = "—" if met is None else ("**yes**" if all(met) else f"**no** ({sum(met)} of {len(met)} runs)")
    return f"| {label} | {goal} | " + " | ".join(vals) + f" | {verdict} |"


def solver_table(rs: list[dict]) -> str:
    n = len(rs)
    head = "| figure | goal | " + " | ".join(f"run {i + 1}" for i in range(n)) + " | goal met |"
    lines = [head, "|" + "---|" * (n + 3)]
    g = lambda k: [r["goals_met"][k] for r in rs]  # noqa: E731
    lines += [
        _row("`np.exp` floor, 10,000 × 1,000 (best of the run)", "—", [f"{r['exp_floor_s'] * 1e3:.1f} ms" for r in rs], None),
        _row("closed form, worst of three / floor", "≤ 4×", [_x(r["closed_form_vs_exp"]) for r in rs], g("closed_form_vs_exp")),
        _row("… KL / floor", "—", [_x(r["closed_form_vs_exp_each"]["kl"]) for r in rs], None),
        _row("… PM / floor", "—", [_x(r["closed_form_vs_exp_each"]["pm"]) for r in rs], None),
        _row("… multi-reference RKL, K = 4 / floor", "—", [_x(r["closed_form_vs_exp_each"]["multi_rkl_k4"]) for r in rs], None),
        _row("forward-KL λ root-finding / floor", "≤ 15×", [_x(r["fkl_vs_exp"], 1) for r in rs], g("fkl_vs_exp")),
        _row("multi-reference forward KL, K = 4 / floor (no goal)", "—", [_x(r["multi_fkl_k4_vs_exp"], 1) for r in rs], None),
        _row("cvxpy time / closed-form time (1,000 responses)", "≥ 1000×", [_x(r["cvxpy_speedup"], 0) for r in rs],
             g("cvxpy_speedup")),
        _row("max \\|Δπ\\| cvxpy vs closed form", "≤ 1e-7", [f"{r['cvxpy_max_abs_diff']:.1e}" for r in rs],
             g("cvxpy_max_abs_diff")),
    ]
    return "\n".join(lines)


def sweep_table(rs: list[dict]) -> str:
    n = len(rs)
    lines = ["| figure | " + " | ".join(f"run {i + 1}" for i in range(n)) + " |", "|" + "---|" * (n + 1)]
    rows = [
        ("full sweep, vectorized engine", [f"{r['sweep_s']:.2f} s" for r in rs]),
        ("loop baseline, per sample", [f"{r['loop_per_sample_s'] * 1e6:.1f} µs" for r in rs]),
        ("loop baseline, per trial and objective", [f"{r['loop_per_trial_s'] * 1e3:.2f} ms" for r in rs]),
        ("loop baseline, full sweep (extrapolated)", [f"{r['loop_sweep_estimate_s']:,.0f} s" for r in rs]),
        ("speed-up on the full sweep (goal ≥ 50×)",
         [f"**{r['ratio']:,.0f}×, {'met' if r['goal_met'] else 'missed'}**" for r in rs]),
        ("speed-up on the subset itself (both timed)", [f"{r['ratio_same_subset']:.0f}×" for r in rs]),
    ]
    lines += [f"| {label} | " + " | ".join(v) + " |" for label, v in rows]
    return "\n".join(lines)


def fragment(data: dict, command: str) -> str:
    s, c = data["runs"]["solvers.py"], data["runs"]["sample_complexity.py"]
    loads = [x["load"] for x in s + c]
    raw = []
    for script in SCRIPTS:
        for i, x in enumerate(data["runs"][script]):
            res = {k: v for k, v in x["result"].items() if k != "goals"}
            raw += [f"{script}, run {i + 1} (load {x['load']:.2f}):", json.dumps(res), ""]
    return "\n".join([
        f"<!-- written by `{command}`; do not edit -->",
        f"Measured on {data['date']}, {data['machine']}; load average before the runs "
        f"{min(loads):.2f}–{max(loads):.2f}.", "",
        "**Solvers**", "", solver_table([x["result"] for x in s]), "",
        "**Sample-complexity sweep**", "", sweep_table([x["result"] for x in c]), "",
        "**Raw output**: the JSON each command printed (without `solvers.py`'s goal strings):", "",
        "```text", *raw[:-1], "```", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/report.py", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each script (default 3)")
    ap.add_argument("--from", dest="source", default=None, metavar="JSON", help="kept runs to rewrite the page from")
    ap.add_argument("--markdown", default="docs/results/benchmarks_tables.md", help="the fragment to write")
    a = ap.parse_args(argv)
    page = Path(a.markdown)
    kept = page.with_name("benchmarks_runs.json")
    if a.source:
        data = json.loads(Path(a.source).read_text())
    else:
        if a.runs < 1:
            raise SystemExit("--runs: must be >= 1")
        data = run_all(a.runs)
        kept.write_text(json.dumps(data, indent=1) + "\n")
    page.write_text(fragment(data, f"python benchmarks/report.py --runs {len(data['runs']['solvers.py'])} "
                                   f"--markdown {a.markdown}"))
    print(f"wrote {page}" + ("" if a.source else f" and {kept}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
