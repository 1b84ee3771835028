"""Per-step time of TRL's GRPO with a prefmatch regularizer against TRL's GRPO with its own KL (CPU).

Same tiny model (GPT-2 style, built locally), prompts, batch, maximum completion length
(``--gen-len``; the untrained model rarely samples EOS, so most completions have that length),
number of generations, ``scale_rewards="none"`` and ``loss_type="dr_grpo"`` (accepted with every
regularizer) and optimizer.  The baseline is ``trl.GRPOTrainer`` with ``beta`` > 0 (its k3 KL in the loss, the
reference model scored once per generation batch); the others are
:class:`prefmatch.llm.integrations.trl.PMGRPOTrainer` with the same β for ``cpm`` (reward
placement; needs the reference) and ``fdiv`` χ² (loss placement).  Both score the reference once
per batch; the prefmatch trainers take the sampling policy's log-probs from generation, so the
expected cost is ψ's arithmetic and the log-softmax of each decoding step.  The three trainers'
optimizer steps are interleaved one by one in one process (TRL's own ``training_step``), so that
the k-th step of each sees the same machine load; the ratio is the median of the per-step ratios
over ``--steps`` steps (after one warm-up) in each of ``--repeats`` repeats.

    python benchmarks/grpo_overhead.py [--json] [--steps 6] [--repeats 3] [--gen-len 32]

``--json`` prints ``{"baseline_step_time_s", "rows": [{"regularizer", "step_time_s", "ratio"}],
"max_ratio", "setup"}``.  Exit code 1 when a ratio exceeds ``--max-ratio`` (1.05).
"""
from __future__ import annotations

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


def make_trainer(setup: dict, a, regularizer: str | None, params: dict | None):
    """One GRPO trainer on the shared setup (``regularizer`` None: TRL's own KL)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trl_timing import reward_len

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    tok = AutoTokenizer.from_pretrained(setup["base"])
    ds = Dataset.from_dict({"prompt": setup["prompts"]})

    cfg = GRPOConfig(output_dir=str(Path(a.work) / "grpo"), per_device_train_batch_size=a.batch,
                     gradient_accumulation_steps=1, num_generations=a.generations, max_completion_length=a.gen_len,
                     max_steps=a.steps + 1, learning_rate=1e-5, beta=a.beta, report_to=[], save_strategy="no",
                     logging_steps=10 ** 6, use_cpu=True, bf16=False, seed=a.seed, disable_tqdm=True,
                     scale_rewards="none", loss_type="dr_grpo")
    kw = dict(model=AutoModelForCausalLM.from_pretrained(setup["base"]), reward_funcs=reward_len, args=cfg,
              train_dataset=ds, processing_class=tok)
    if regularizer is None:
        return GRPOTrainer(**kw)
    return PMGRPOTrainer(**kw, regularizer=regularizer, regularizer_params=params)


def _epochs(trainer):
    """The trainer's batches, epoch after epoch (a run may take more steps than the prompts fill)."""
    while True:
        yield from trainer.get_train_dataloader()


def interleaved_step_times(trainers, a) -> list[list[float]]:
    """Per-step wall times of each trainer, their optimizer steps interleaved one by one (the
    order alternating), so that every trainer's k-th step sees the machine's load of that moment.
    A step: generation and scoring of a batch, loss, backward, optimizer step (TRL's own
    ``training_step``); the first step of each is a warm-up and not timed."""
    import torch

    torch.set_num_threads(a.threads)
    for t in trainers:
        t.create_optimizer_and_scheduler(num_training_steps=a.steps + 1)
        t.current_gradient_accumulation_steps = 1
        t.model.train()
        t._bench_batches = _epochs(t)
    times: list[list[float]] = [[] for _ in trainers]
    for k in range(a.steps + 1):
        order = list(enumerate(trainers))
        for i, t in (order if k % 2 == 0 else order[::-1]):
            batch = next(t._bench_batches)
            t0 = time.perf_counter()
            t.training_step(t.model, batch, None)
            t.optimizer.step()
            t.optimizer.zero_grad()
            if k:
                times[i].append(time.perf_counter() - t0)
    return times


ROWS = [("cpm", {"alpha": 0.3}), ("fdiv", {"f": "chi2"})]


def main(argv=None) -> int:
    from trl_timing import timing_parser

    p = timing_parser(__doc__, steps=6, steps_help="timed optimizer steps per run (after one warm-up)",
                      batch_help="completions per step", gen_len_help="tokens per completion",
                      repeats_help="alternating baseline/prefmatch runs (medians)", sizes=("tiny", "small"),
                      size_help="model size", table="docs/results/grpo_overhead.md")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt (G)")
    p.add_argument("--beta", type=float, default=0.05, help="the KL / regularizer coefficient")
    p.add_argument("--max-ratio", type=float, default=1.05, help="fail (exit 1) above this ratio")
    a = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="grpo_overhead_")
    a.work = tmp.name
    setup = build_setup(Path(a.work), a.size, a.seed)
    base_t, ours = [], {name: [] for name, _ in ROWS}
    paired = {name: [] for name, _ in ROWS}  # per-step ratios ours/baseline (same moment, same load)
    for _ in range(a.repeats):
        with contextlib.redirect_stdout(sys.stderr):
            trainers = [make_trainer(setup, a, None, None)] + [make_trainer(setup, a, n, p) for n, p in ROWS]
            times = interleaved_step_times(trainers, a)
        base_t += times[0]
        for (name, _), t in zip(ROWS, times[1:]):
            ours[name] += t
            paired[name] += [o / b for o, b in zip(t, times[0])]
    rows = [{"regularizer": name, "params": params, "step_time_s": statistics.median(ours[name]),
             "ratio": statistics.median(paired[name]),
             "ratio_quartiles": statistics.quantiles(paired[name], n=4)} for name, params in ROWS]
    out = {"baseline": "trl GRPOTrainer, built-in k3 KL (beta > 0)", "baseline_step_time_s": statistics.median(base_t),
           "rows": rows, "max_ratio": max(r["ratio"] for r in rows),
           "setup": {"model": a.size, "batch": a.batch, "generations": a.generations, "gen_len": a.gen_len,
                     "timed_steps": a.steps, "repeats": a.repeats, "threads": a.threads, "device": "cpu",
                     "load_average": os.getloadavg()[0]}}
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

        lines = [f"<!-- written by `python benchmarks/grpo_overhead.py --steps {a.steps} --repeats {a.repeats} --markdown {a.markdown}`; do not edit -->",
                 f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()} CPU ({a.threads} threads), torch "
                 f"{torch.__version__}, trl {trl.__version__}; tiny GPT-2 ({a.size}), {a.batch} completions of "
                 f"{a.gen_len} tokens per step (G = {a.generations}); {a.steps} timed steps per trainer in each of "
                 f"{a.repeats} repeats, the trainers' steps interleaved; load average {os.getloadavg()[0]:.1f} at "
                 "the end. Ratio: median of the per-step ratios (quartiles in brackets).", "",
                 "| trainer | median s/step | ratio to TRL's built-in KL |", "|---|---|---|",
                 f"| `trl.GRPOTrainer`, built-in k3 KL | {out['baseline_step_time_s']:.3f} | 1 |"]
        lines += [f"| `PMGRPOTrainer`, `{r['regularizer']}` | {r['step_time_s']:.3f} | {r['ratio']:.3f} "
                  f"[{r['ratio_quartiles'][0]:.3f}, {r['ratio_quartiles'][2]:.3f}] |" for r in rows]
        Path(a.markdown).write_text("\n".join(lines) + "\n")
    tmp.cleanup()
    return 0 if out["max_ratio"] <= a.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
