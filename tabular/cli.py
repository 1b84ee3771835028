"""``prefmatch bandit``: list and run the tabular experiments, write their figures.

    prefmatch bandit list
    prefmatch bandit run NAME [--json] [--plot FILE] [--seed S] [--quick] [--trials T]
    prefmatch bandit figures --out OUTDIR

``run --json`` prints {"experiment", "params", "series", "checks"}; the exit code is 1 when a
check fails.  Progress bars (tqdm) appear on a terminal and never with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from prefmatch.tabular.experiments import EXPERIMENTS
from prefmatch.tabular.plots import make_all_figures, plot
from prefmatch.theory import validate
from prefmatch.theory.errors import UsageError as CLIError


def register(sub) -> None:
    p = sub.add_parser(
        "bandit",
        help="tabular bandit experiments: bias, collapse, cPM, multi-reference, sample complexity",
        description="Finite-bandit simulations of both papers' claims, each with checks and a figure.",
    )
    actions = p.add_subparsers(dest="bandit_action", metavar="ACTION", title="actions")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    ls = actions.add_parser("list", help="name the experiments with one line each")
    ls.add_argument("--json", action="store_true", help="print a JSON list of {name, figure, summary}")
    ls.set_defaults(func=cmd_list)

    run = actions.add_parser("run", help="run one experiment; exit 1 if a check fails")
    run.add_argument("name", help="experiment name (see `prefmatch bandit list`)")
    run.add_argument("--json", action="store_true", help="print the result as JSON (no progress bars)")
    run.add_argument("--plot", metavar="FILE", help="save the experiment's figure to FILE (.png, .pdf, .svg)")
    run.add_argument("--seed", default="0", help=f"random seed (integer in {validate.SEED}, default 0)")
    run.add_argument("--quick", action="store_true", help="sample-complexity only: n in {1e2, 1e3, 1e4}, 200 trials unless --trials is given")
    run.add_argument("--trials", default=None, help=f"bt-mle / sample-complexity: trials per n (integer in {TRIALS})")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --plot file (without it, one is refused)")
    run.set_defaults(func=cmd_run)

    fig = actions.add_parser("figures", help="run every experiment quickly and write OUTDIR/NAME.png")
    fig.add_argument("--out", metavar="DIR", help="output folder (created if missing)")
    fig.add_argument("outdir", nargs="?", help=argparse.SUPPRESS)  # the old spelling: a positional folder
    fig.add_argument("--json", action="store_true", help="print the written paths as a JSON list")
    fig.add_argument("--overwrite", action="store_true", help="replace figures already in OUTDIR (without it, "
                     "an OUTDIR holding any of them is refused)")
    fig.set_defaults(func=cmd_figures)


def _error(msg: str):

    return CLIError(msg)


#: --trials: at most 1e5 per n (about 7 GB for bt-mle, whose arrays take ~70 kB per trial; beyond
#: that a run would die of memory instead of being refused here)
TRIALS = "[10, 100000]"


def _int(value, field: str, interval) -> int:
    try:
        v = int(str(value))
    except ValueError:
        raise _error(f"{field} must be an integer in {interval}, got {value!r}") from None
    try:
        return validate.number(field, v, interval, integer=True)
    except ValueError as e:
        raise _error(str(e)) from None


def cmd_list(args) -> int:

    if getattr(args, "json", False):
        print(json.dumps([{"name": e.name, "figure": e.figure, "summary": e.summary} for e in EXPERIMENTS.values()]))
        return 0
    width = max(len(n) for n in EXPERIMENTS)
    for e in EXPERIMENTS.values():
        print(f"{e.name:<{width}}  [{e.figure}]  {e.summary}")
    return 0


def cmd_run(args) -> int:

    if args.name not in EXPERIMENTS:
        raise _error(f"experiment must be one of {', '.join(EXPERIMENTS)}; got {args.name!r}")
    seed = _int(args.seed, "--seed", validate.SEED)
    sizes: dict[str, Any] = {}
    if args.quick:
        if args.name != "sample-complexity":
            raise _error(f"--quick applies to sample-complexity only, not {args.name!r}")
        sizes["quick"] = True
    if args.trials is not None:
        if args.name not in ("sample-complexity", "bt-mle"):
            raise _error(f"--trials applies to sample-complexity and bt-mle only, not {args.name!r}")
        sizes["trials"] = _int(args.trials, "--trials", TRIALS)
    if args.plot:
        ext = os.path.splitext(args.plot)[1].lower()
        if ext not in (".png", ".pdf", ".svg"):
            raise _error(f"--plot FILE must end in .png, .pdf or .svg, got {args.plot!r}")
        if os.path.isdir(args.plot):
            raise _error(f"--plot: {args.plot} is a directory; give a file such as {os.path.join(args.plot, 'fig.png')}")
        if os.path.exists(args.plot) and not args.overwrite:
            raise _error(f"--plot: {args.plot} exists; pass --overwrite to replace it or choose another file")
        folder = os.path.dirname(os.path.abspath(args.plot))
        try:  # created if missing, like every other output folder
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise _error(f"--plot: cannot create folder {folder!r} ({err.strerror})") from None
    progress = (not args.json) and sys.stderr.isatty()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # solver chatter (cvxpy accuracy notes) stays off stderr
        result = EXPERIMENTS[args.name].run(seed=seed, progress=progress, **sizes)
        if args.plot:

            plot(result, args.plot)
    ok = all(c["passed"] for c in result["checks"])
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        _print_human(result, args.plot)
    return 0 if ok else 1


def _print_human(result: dict, plot_path) -> None:
    print(f"experiment: {result['experiment']}")
    for c in result["checks"]:
        print(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['id']}: {c['detail']}")
    slopes = result["series"].get("slopes")
    if slopes:
        print("  log-log slopes of the (1-delta)-quantile (95% bootstrap CI):")
        for k, s in slopes.items():
            print(f"    {k:<18} {s['slope']:+.3f}  [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}]")
        print(f"  bound_holds: {result['series']['bound_holds']}")
    if plot_path:
        print(f"  figure: {plot_path}")
    n_fail = sum(not c["passed"] for c in result["checks"])
    print(f"{len(result['checks']) - n_fail} of {len(result['checks'])} checks pass")


def cmd_figures(args) -> int:
    import warnings

    if args.outdir is not None:
        if args.out is not None:
            raise _error(f"--out: give the folder once (--out {args.out!r} and the positional {args.outdir!r})")
        print(f"prefmatch: note: `bandit figures {args.outdir}` is the old spelling; use --out {args.outdir}",
              file=sys.stderr)
        args.out = args.outdir
    if not args.out:
        raise _error("--out: required (the folder to write the figures into)")
    args.outdir = args.out
    if os.path.isdir(args.outdir) and not args.overwrite:
        held = [f"{n}.png" for n in EXPERIMENTS if os.path.exists(os.path.join(args.outdir, f"{n}.png"))]
        if held:
            raise _error(f"--out: {args.outdir} already holds figures ({', '.join(held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}); pass --overwrite to replace them or choose another folder")
    try:
        os.makedirs(args.outdir, exist_ok=True)
    except OSError as err:
        raise _error(f"--out: cannot create {args.outdir!r} ({err.strerror})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = [str(p) for p in make_all_figures(args.outdir)]
    print(json.dumps(paths) if args.json else "\n".join(paths))
    return 0
