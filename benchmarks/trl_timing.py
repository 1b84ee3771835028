"""What the benchmarks that time TRL trainers share (ppo_step.py, grpo_overhead.py, gpu_check.py): the prompts,
a reward that needs no model, a per-step timer, and the command-line options of a timing run.

The benchmarks are scripts; this module sits beside them (``python benchmarks/X.py`` puts the folder on
``sys.path``; a test that loads one of them by path prepends the folder itself).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from pathlib import Path


def read_prompts(data: str | os.PathLike) -> list[str]:
    """The ``prompt`` of every record of a jsonl file."""
    return [json.loads(x)["prompt"] for x in Path(data).read_text().splitlines() if x.strip()]


def reward_len(completions, **kw) -> list[float]:
    """A reward that needs no model (the completion's length / 100): the timing is the trainer's."""
    return [float(len(c)) / 100 for c in completions]


def step_timer():
    """A TRL callback that stamps the end of every optimizer step, and the list it appends to."""
    from transformers import TrainerCallback

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    return Stamp(), stamps


def timed_train(trainer, stamps: list[float], quiet: bool = False) -> list[float]:
    """``trainer.train()``; the seconds of each optimizer step after the first (the warm-up)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():  # TRL prints logged steps
        trainer.train()
    t = [start] + stamps
    return [b - c for b, c in zip(t[2:], t[1:-1])]


def timing_parser(doc: str, *, steps: int, steps_help: str, batch_help: str, gen_len_help: str,
                  repeats_help: str, sizes: tuple[str, ...], size_help: str, table: str) -> argparse.ArgumentParser:
    """The options every timing run takes: --json, --steps, --batch (16), --gen-len (32), --threads, --seed,
    --repeats, --size (the first of ``sizes``) and --markdown (``table`` is the results page it writes)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--batch", type=int, default=16, help=batch_help)
    p.add_argument("--gen-len", type=int, default=32, help=gen_len_help)
    p.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help=repeats_help)
    p.add_argument("--size", default=sizes[0], choices=sizes, help=size_help)
    p.add_argument("--markdown", metavar="FILE", help="also write the result as a table, with the command and the "
                   f"machine, to FILE ({table} is written this way)")
    return p
