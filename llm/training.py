"""What the three training stages share: the accelerator, seeding, logging, checkpoints, errors.

* :func:`make_accelerator`: CUDA with bf16 autocast when present, CPU otherwise; multi-process
  data parallel when launched by ``torchrun`` / ``accelerate launch`` (gloo on CPU).
* :class:`MetricsLog`: ``metrics.jsonl``, one JSON object per step, main process only.
* :func:`atomic_dir`: write a checkpoint into a temporary directory, then rename it into place,
  so that an interrupted save never leaves a half-written checkpoint.
* :func:`check_finite`: stop with :class:`TrainingError` on a NaN/inf loss on any process
  (before the optimizer step, so the last good checkpoint is never overwritten by bad weights).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


class TrainingError(RuntimeError):
    """A run that must stop (non-finite loss, mismatched models, nothing to train on)."""


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, step, rank, ...): the same on every run, process-safe."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_accelerator(mixed_precision: str = "auto", cpu: bool = False):
    """An ``accelerate.Accelerator``; ``auto`` means bf16 on CUDA (if supported) and fp32 on CPU."""
    import torch
    from accelerate import Accelerator

    use_cuda = torch.cuda.is_available() and not cpu
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    if mixed_precision == "auto":
        mixed_precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
    if not use_cuda:
        mixed_precision = "no"
    return Accelerator(mixed_precision=mixed_precision, cpu=not use_cuda)


def rank_slice(indices, accelerator):
    """This process's share of a global batch of indices (equal shares; world size divides B)."""
    n = accelerator.num_processes
    return indices[accelerator.process_index::n]


def all_finite(accelerator, *tensors) -> bool:
    """True when every tensor is finite on every process (collective: call on all ranks)."""
    import torch

    ok = torch.tensor([float(all(bool(torch.isfinite(t).all()) for t in tensors))], device=accelerator.device)
    if accelerator.num_processes > 1:
        ok = accelerator.reduce(ok, reduction="sum") / accelerator.num_processes
    return bool(ok.item() == 1.0)


def check_finite(accelerator, step: int, last_checkpoint: str | None, **losses) -> None:
    """Raise :class:`TrainingError` if any loss is NaN/inf on any process."""
    if all_finite(accelerator, *losses.values()):
        return
    vals = ", ".join(f"{k}={float(v.detach().float().mean()):.4g}" for k, v in losses.items())
    where = f"last good checkpoint {last_checkpoint} left untouched" if last_checkpoint else "no checkpoint written"
    raise TrainingError(f"non-finite loss at step {step} ({vals}); stopped before the optimizer step; {where}. "
                        "Lower lr or check the data and the reward model")


def mean_over_processes(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over processes (collective)."""
    import torch

    if accelerator.num_processes == 1 or not metrics:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    t = accelerator.reduce(t, reduction="mean")
    return {k: float(v) for k, v in zip(keys, t.tolist())}


class MetricsLog:
    """Append-only ``metrics.jsonl`` written by the main process."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is None:
            self.path.write_text("")
        elif self.path.exists():  # resume: drop entries logged after the checkpoint
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= truncate_after_step]
            self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temporary sibling directory; on success rename it to ``final`` (replacing it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def progress(total: int, desc: str, quiet: bool, accelerator=None):
    """A tqdm bar on a terminal (main process, not ``quiet``); a no-op object otherwise."""
    from tqdm import tqdm

    main = accelerator is None or accelerator.is_main_process
    disable = quiet or not main or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)


class Timer:
    """Accumulates seconds per named section (CUDA-synchronised) for the model-time fraction."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def section(self, name: str):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                import torch

                torch.cuda.synchronize()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

    def reset(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


def position_ids_from_mask(attention_mask):
    """Positions that skip left padding: cumsum(mask) − 1, clamped at 0 (as ``generate`` uses)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def accepts_position_ids(model) -> bool:
    import inspect

    inner = model
    for attr in ("module", "lm"):
        inner = getattr(inner, attr, inner)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    try:
        return "position_ids" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
