"""Per-step time of TRL's GRPO with a prefmatch regularizer against TRL's GRPO with its own KL (CPU).

Same tiny model (GPT-2 style, built locally), prompts, batch, completion length (no early stop:
every completion has ``--gen-len`` tokens), number of generations and optimizer.  The baseline is
``trl.GRPOTrainer`` with ``beta`` > 0 (its k3 KL in the loss, the reference model scored once per
generation batch); the others are :class:`prefmatch.llm.integrations.trl.PMGRPOTrainer` with the
same β for ``cpm`` (reward placement; needs the reference) and ``fdiv`` χ² (loss placement).  The
prefmatch trainers score the sampling policy once more (no-grad) where TRL reuses the training
forward, so a ratio near 1 + (one forward)/(step) is the expected cost.  Step times are the
median over ``--steps`` optimizer steps after one warm-up, in ``--repeats`` alternating runs;
the ratio is the median of the per-repeat ratios.

    python benchmarks/grpo_overhead.py [--json] [--steps 6] [--repeats 3] [--gen-len 32]

``--json`` prints ``{"baseline_step_time_s", "rows": [{"regularizer", "step_time_s", "ratio"}],
"max_ratio", "setup"}``.  Exit code 1 when a ratio exceeds ``--max-ratio`` (1.10).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_setup(work: Path, size: str, seed: int) -> dict:
    from prefmatch.llm.data import synthetic_preferences
    from prefmatch.llm.models import init_model

    recs = synthetic_preferences(64, seed=seed)
    base = init_model(work / "base", size, texts=[r["prompt"] + r["chosen"] for r in recs], seed=seed)
    return {"base": str(base), "prompts": [r["prompt"] for r in recs]}


def step_times(setup: dict, a, regularizer: str | None, params: dict | None) -> float:
    """Median per-step wall time of one GRPO run (``regularizer`` None: TRL's own KL)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(setup["base"])
    ds = Dataset.from_dict({"prompt": setup["prompts"]})
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    def reward_len(completions, **kw):
        return [float(len(c)) / 100 for c in completions]

    cfg = GRPOConfig(output_dir=str(Path(a.work) / "grpo"), per_device_train_batch_size=a.batch,
                     gradient_accumulation_steps=1, num_generations=a.generations, max_completion_length=a.gen_len,
                     max_steps=a.steps + 1, learning_rate=1e-5, beta=a.beta, report_to=[], save_strategy="no",
                     logging_steps=10 ** 6, use_cpu=True, bf16=False, seed=a.seed, disable_tqdm=True,
                     generation_kwargs={"min_new_tokens": a.gen_len})
    model = AutoModelForCausalLM.from_pretrained(setup["base"])
    kw = dict(model=model, reward_funcs=reward_len, args=cfg, train_dataset=ds, processing_class=tok,
              callbacks=[Stamp()])
    if regularizer is None:
        trainer = GRPOTrainer(**kw)
    else:
        trainer = PMGRPOTrainer(**kw, regularizer=regularizer, regularizer_params=params)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    stamps = [start] + stamps
    per_step = [b - c for b, c in zip(stamps[2:], stamps[1:-1])]  # drop the warm-up step
    return statistics.median(per_step)


ROWS = [("cpm", {"alpha": 0.3}), ("fdiv", {"f": "chi2"})]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per run (after one warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="alternating baseline/prefmatch runs (medians)")
    p.add_argument("--batch", type=int, default=16, help="completions per step")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt (G)")
    p.add_argument("--gen-len", type=int, default=32, help="tokens per completion")
    p.add_argument("--beta", type=float, default=0.05, help="the KL / regularizer coefficient")
    p.add_argument("--size", default="tiny", choices=("tiny", "small"), help="model size")
    p.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-ratio", type=float, default=1.10, help="fail (exit 1) above this ratio")
    p.add_argument("--markdown", metavar="FILE", help="also write the result as a table, with the command and the "
                   "machine, to FILE (docs/results/grpo_overhead.md is written this way)")
    a = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="grpo_overhead_")
    a.work = tmp.name
    setup = build_setup(Path(a.work), a.size, a.seed)
    base_t, ours = [], {name: [] for name, _ in ROWS}
    for _ in range(a.repeats):  # alternate: both see the same background load
        base_t.append(step_times(setup, a, None, None))
        for name, params in ROWS:
            ours[name].append(step_times(setup, a, name, params))
    rows = [{"regularizer": name, "params": params, "step_time_s": statistics.median(ours[name]),
             "ratio": statistics.median(o / b for o, b in zip(ours[name], base_t)),
             "ratio_per_repeat": [o / b for o, b in zip(ours[name], base_t)]} for name, params in ROWS]
    out = {"baseline": "trl GRPOTrainer, built-in k3 KL (beta > 0)", "baseline_step_time_s": statistics.median(base_t),
           "rows": rows, "max_ratio": max(r["ratio"] for r in rows),
           "setup": {"model": a.size, "batch": a.batch, "generations": a.generations, "gen_len": a.gen_len,
                     "timed_steps": a.steps, "repeats": a.repeats, "threads": a.threads, "device": "cpu"}}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"baseline ({out['baseline']}): {out['baseline_step_time_s']:.3f} s/step")
        for r in rows:
            print(f"PMGRPOTrainer {r['regularizer']:5s}: {r['step_time_s']:.3f} s/step   ratio {r['ratio']:.3f}")
    if a.markdown:
        import platform

        import torch
        import trl

        lines = [f"<!-- written by `python benchmarks/grpo_overhead.py --markdown {a.markdown}`; do not edit -->",
                 f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()} CPU ({a.threads} threads), torch "
                 f"{torch.__version__}, trl {trl.__version__}; tiny GPT-2 ({a.size}), {a.batch} completions of "
                 f"{a.gen_len} tokens per step (G = {a.generations}), median of {a.steps} steps, {a.repeats} "
                 "alternating repeats.", "", "| trainer | s/step | ratio to TRL's built-in KL |", "|---|---|---|",
                 f"| `trl.GRPOTrainer`, built-in k3 KL | {out['baseline_step_time_s']:.3f} | 1 |"]
        lines += [f"| `PMGRPOTrainer`, `{r['regularizer']}` | {r['step_time_s']:.3f} | {r['ratio']:.3f} |" for r in rows]
        Path(a.markdown).write_text("\n".join(lines) + "\n")
    tmp.cleanup()
    return 0 if out["max_ratio"] <= a.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
