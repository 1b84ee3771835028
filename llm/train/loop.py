"""What the four training stages share: the accelerator, seeding, logging, checkpoints, errors.

* :func:`make_accelerator`: CUDA with bf16 autocast when present, CPU otherwise; multi-process
  data parallel when launched by ``torchrun`` / ``accelerate launch`` (gloo on CPU).
* :class:`MetricsLog`: ``metrics.jsonl``, one JSON object per step, main process only.
* checkpoints and resume: fingerprints, :func:`find_checkpoint`, :func:`resume_config` (the run
  directories they are written into are :mod:`prefmatch.llm.rundir`'s).
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

from prefmatch.llm.rundir import TrainingError

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
#: config fields that a resumed run may change (the rest must equal the saved run's)
RESUMABLE_FIELDS = ("steps", "log_every", "save_every", "keep_checkpoints", "cpu", "out")



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


REPORT_TO = ("none", "tensorboard", "wandb", "all")


def _trackers(report_to: str) -> list[str]:
    """accelerate tracker names for ``report_to``; a ConfigError-style TrainingError when the
    tracker's package is missing (``all`` takes those that are installed)."""
    import importlib.util

    if report_to in ("none", "", None):
        return []
    have = {"tensorboard": importlib.util.find_spec("tensorboard") is not None,
            "wandb": importlib.util.find_spec("wandb") is not None}
    if report_to == "all":
        return [name for name, ok in have.items() if ok]
    if report_to not in have:
        raise TrainingError(f"report_to: must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if not have[report_to]:
        raise TrainingError(f"report_to: {report_to} is not installed (pip install {report_to})")
    return [report_to]


def make_accelerator(mixed_precision: str = "auto", cpu: bool = False, report_to: str = "none",
                     project_dir: str | os.PathLike | None = None):
    """An ``accelerate.Accelerator``; ``auto`` means bf16 on CUDA (if supported) and fp32 on CPU.

    ``report_to`` (``tensorboard``, ``wandb``, ``all``) adds accelerate's trackers, writing under
    ``project_dir`` (TensorBoard event files in ``project_dir/tensorboard``); :class:`MetricsLog`
    sends every logged record to them."""
    import torch
    from accelerate import Accelerator

    use_cuda = torch.cuda.is_available() and not cpu
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    if mixed_precision == "auto":
        mixed_precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
    if not use_cuda:
        mixed_precision = "no"
    from prefmatch.llm.sharding import enable_cpu_deepspeed, enable_cpu_fsdp  # on CPU processes too (accelerate: GPUs only)

    def enable_cpu_fsdp_or_deepspeed(acc):
        return enable_cpu_deepspeed(enable_cpu_fsdp(acc))

    trackers = _trackers(report_to)
    if not trackers:
        return enable_cpu_fsdp_or_deepspeed(Accelerator(mixed_precision=mixed_precision, cpu=not use_cuda))
    return enable_cpu_fsdp_or_deepspeed(Accelerator(mixed_precision=mixed_precision, cpu=not use_cuda, log_with=trackers,
                                       project_dir=str(project_dir) if project_dir is not None else None))


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


def clip_and_check_grads(accelerator, model, max_norm: float, step: int, last_checkpoint: str | None) -> float:
    """Clip the gradients to ``max_norm`` (0 = no clipping) and stop with :class:`TrainingError`
    when their norm is NaN/inf (before the optimizer step: the weights stay as they were)."""
    import math

    norm = accelerator.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    norm = float(norm) if norm is not None else 0.0
    if not math.isfinite(norm):
        where = f"last checkpoint {last_checkpoint} left untouched" if last_checkpoint else "no checkpoint written"
        hint = low_precision_hint([p for p in model.parameters() if p.requires_grad])
        raise TrainingError(f"non-finite gradient norm at step {step} ({norm}); stopped before the optimizer step; "
                            f"{where}. " + (hint or "Lower lr or check the data and the reward model"))
    return norm


def check_weights_finite(accelerator, model, step: int, last_checkpoint: str | None) -> None:
    """Raise :class:`TrainingError` if the optimizer step made any trainable weight NaN/inf
    (checked before anything is saved or sampled, so the last checkpoint stays the last finite one)."""
    import torch

    from prefmatch.llm.sharding import local_tensor

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    with torch.no_grad():
        # each process checks its own shard of a sharded (FSDP) parameter; the reduce below combines them
        ok = torch.stack([torch.isfinite(local_tensor(p)).all() for p in params]).all().float().reshape(1)
    if accelerator.num_processes > 1:
        ok = accelerator.reduce(ok, reduction="mean")
    if float(ok.item()) == 1.0:
        return
    where = f"last checkpoint {last_checkpoint} is the last finite one" if last_checkpoint else "no checkpoint written"
    raise TrainingError(f"non-finite weights after the optimizer step at step {step} (NaN/inf); stopped; {where}. "
                        + (low_precision_hint(params) or "Lower lr or max_grad_norm"))


def low_precision_hint(params) -> str | None:
    """The advice of a non-finite error when trainable weights are not float32 (the likely cause:
    AdamW's update in fp16/bf16 weights), else None."""
    import torch

    low = sorted({str(p.dtype).replace("torch.", "") for p in params if p.dtype != torch.float32})
    if not low:
        return None
    return (f"The trainable weights are in {', '.join(low)}, not float32: load the model in float32 "
            "(prefmatch.llm.models.load_causal_lm(dir) does; mixed_precision: bf16 runs the forward in bf16)")


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
    """Append-only ``metrics.jsonl`` written by the main process; each record also goes to the
    accelerator's trackers (TensorBoard, W&B: ``report_to``) and, when stderr is not a terminal (a
    log file, CI), to one console line (``console``), so that a long run is never silent."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, truncate_after_step: int | None = None,
                 accelerator=None, run_name: str = "prefmatch", config: dict | None = None,
                 console: bool = False, total: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.accelerator = accelerator
        self.console = console and enabled
        self.run_name, self.total = run_name, total
        self.tracking = bool(accelerator is not None and getattr(accelerator, "log_with", None))
        if self.tracking:
            accelerator.init_trackers(run_name, config=_flat_hparams(config or {}))
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
        step = record.get("step")
        if self.tracking:  # collective-free: accelerate logs on the main process only
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                                 step=step)
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.console:
            shown = " ".join(f"{k}={v:.4g}" for k, v in record.items()
                             if isinstance(v, float) and k in CONSOLE_KEYS)
            of = f"/{self.total}" if self.total else ""
            print(f"{self.run_name} step {step}{of}: {shown}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tracking:
            self.accelerator.end_training()
            self.tracking = False


#: what a console line shows (the full record is in metrics.jsonl)
CONSOLE_KEYS = ("loss", "reward", "kl", "regularizer", "accuracy", "margin", "entropy", "response_length",
                "step_time_s")


def console_logging(quiet: bool, accelerator=None) -> bool:
    """One console line per logged step: not ``quiet``, main process, stderr not a terminal (a
    terminal has the progress bar instead)."""
    main = accelerator is None or accelerator.is_main_process
    return not quiet and main and not sys.stderr.isatty()


def _flat_hparams(config: dict) -> dict:
    """Tracker hyper-parameters: scalars as they are, lists and mappings as their JSON text."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in config.items()}


def read_metrics(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def start_run(trainer, cfg, ckpt, *, run_name: str, total: int, quiet: bool) -> MetricsLog:
    """What PPO and DPO do before their first step: a resumed older checkpoint rewinds the run (its
    later checkpoints, like its later metrics lines, belong to the abandoned future and would sort
    after the new ones), the resolved config is written, and the metrics log is opened."""
    import dataclasses

    from prefmatch.llm.config import save_config

    acc = trainer.acc
    if acc.is_main_process and ckpt is not None:
        for later in (trainer.out / "checkpoints").glob("checkpoint-*"):
            if later.name > f"checkpoint-{trainer.step_count:06d}" and later.resolve() != Path(ckpt).resolve():
                shutil.rmtree(later, ignore_errors=True)
    if acc.is_main_process:
        trainer.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, trainer.out / "config.yaml")
    return MetricsLog(trainer.out / "metrics.jsonl", enabled=acc.is_main_process,
                      truncate_after_step=trainer.step_count if ckpt is not None else None,
                      accelerator=acc, run_name=run_name, config=dataclasses.asdict(cfg),
                      console=console_logging(quiet, acc), total=total)


def write_trainer_state(folder: Path, out: Path, step: int) -> None:
    """``trainer_state.json`` of a checkpoint: its step, the log history up to it and the run's
    fingerprint (:func:`run_fingerprint` of the checkpoint's ``config.yaml``, written before it), which
    a resume compares with the data and config it is given."""
    metrics = out / "metrics.jsonl"
    history = [r for r in read_metrics(metrics) if r.get("step", 0) <= step] if metrics.is_file() else []
    state: dict[str, Any] = {"step": step, "log_history": history}
    if (folder / "config.yaml").is_file():
        from prefmatch.llm.config import read_yaml

        state["fingerprint"] = run_fingerprint(read_yaml(folder / "config.yaml"))
    (folder / "trainer_state.json").write_text(json.dumps(state))


# --------------------------------------------------------------------------- resume: checkpoints and fingerprints
#: config fields that change neither the objective nor the data a run trains on (besides the resumable ones)
NOT_OBJECTIVE = ("report_to", "mixed_precision", "gradient_checkpointing", "data", "quiet")

_DATA_HASHES: dict[tuple, str] = {}


def data_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a data file's bytes (of every file, by relative name, in a ``datasets`` directory);
    None when ``path`` does not exist.  Cached by (path, size, mtime)."""
    import hashlib

    p = Path(path)
    if not p.exists():
        return None
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key in _DATA_HASHES:
        return _DATA_HASHES[key]
    h = hashlib.sha256()
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    _DATA_HASHES[key] = h.hexdigest()
    return _DATA_HASHES[key]


def objective_fields(config: dict) -> dict:
    """The config fields that define what a run optimizes on which data split (all but
    :data:`RESUMABLE_FIELDS` and :data:`NOT_OBJECTIVE`)."""
    return {k: v for k, v in sorted(config.items()) if k not in RESUMABLE_FIELDS and k not in NOT_OBJECTIVE}


def run_fingerprint(config: dict) -> dict:
    """``{"data_sha256", "objective_sha256"}`` of a run's resolved config (a mapping)."""
    import hashlib

    text = json.dumps(objective_fields(config), sort_keys=True, default=str)
    return {"data_sha256": data_sha256(config.get("data", "")) if config.get("data") else None,
            "objective_sha256": hashlib.sha256(text.encode()).hexdigest()}


def check_fingerprint(ckpt: Path, config: dict, allow_changes: bool = False) -> None:
    """Refuse to resume ``ckpt`` with data or objective fields other than the run's (one line naming
    what changed), unless ``allow_changes``.  Checkpoints written before fingerprints pass."""
    try:
        saved = json.loads((ckpt / "trainer_state.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        saved = None
    if not saved or allow_changes:
        return
    import yaml

    config = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))  # the types config.yaml gives back
    now = run_fingerprint(config)
    if saved.get("data_sha256") and now["data_sha256"] != saved["data_sha256"]:
        raise TrainingError(f"--resume {ckpt}: data: {config.get('data')} is not the data the run trained on "
                            "(its SHA-256 differs from the one in trainer_state.json); restore that file, or pass "
                            "--allow-changes to continue the run on the new data")
    if saved.get("objective_sha256") and now["objective_sha256"] != saved["objective_sha256"]:
        changed = ""
        with contextlib.suppress(Exception):
            from prefmatch.llm.config import read_yaml

            old = objective_fields(read_yaml(ckpt / "config.yaml"))
            new = objective_fields(config)
            changed = " (" + ", ".join(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)) + ")"
        raise TrainingError(f"--resume {ckpt}: the config fields that define the objective differ from the run's"
                            f"{changed}; pass --allow-changes to continue with them, or start a new run")


def _safetensors_problem(f: Path) -> str | None:
    """Why a ``.safetensors`` file cannot be loaded (header or length), or None (no tensor is read)."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                return "truncated header"
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return "unreadable header"
    if 8 + n + end != size:
        return f"truncated ({size} bytes, the header needs {8 + n + end})"
    return None


def _zip_problem(f: Path) -> str | None:
    """Why a ``torch.save`` file (a zip archive) is damaged, or None (CRCs checked, nothing unpickled)."""
    import zipfile

    try:
        with zipfile.ZipFile(f) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return "truncated or not a torch.save file"
    return f"corrupt member {bad}" if bad else None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why checkpoint directory ``ckpt`` cannot be resumed, or None: its state (step), config,
    optimizer state and weights are checked without loading a model.  (Randomness needs no saved
    state: every draw of step k comes from seeds derived from (seed, k, rank).)"""
    if not ckpt.is_dir():
        return "not a directory"
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (OSError, ValueError, KeyError, TypeError):
        return "trainer_state.json is corrupt (no step)"
    if ckpt.name.startswith("checkpoint-") and ckpt.name[len("checkpoint-"):].isdigit() \
            and int(ckpt.name[len("checkpoint-"):]) != step:
        return f"trainer_state.json says step {step}, the folder name another"
    try:
        import yaml

        if not isinstance(yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8")), dict):
            raise ValueError
    except (OSError, ValueError, yaml.YAMLError):
        return "config.yaml is missing or corrupt"
    from prefmatch.llm.sharding import SHARDED_DIR

    sharded = (ckpt / SHARDED_DIR).is_dir()  # a sharded run's optimizer state is in sharded/, per process
    if not sharded and not (ckpt / "optimizer.pt").is_file():
        return "optimizer.pt is missing"
    problem = None if sharded else _zip_problem(ckpt / "optimizer.pt")
    if problem:
        return f"optimizer.pt: {problem}"
    if (ckpt / "trainable.pt").exists() and (problem := _zip_problem(ckpt / "trainable.pt")):
        return f"trainable.pt: {problem}"
    policy = ckpt / "policy"
    try:
        json.loads((policy / "config.json").read_text())
    except (OSError, ValueError):
        return "policy/config.json is missing or corrupt"
    weights = sorted(policy.glob("*.safetensors"))
    if not any(w.name != "value_head.safetensors" for w in weights) and not list(policy.glob("*.bin")):
        return "policy/ holds no weights"
    for w in weights:
        if (problem := _safetensors_problem(w)):
            return f"policy/{w.name}: {problem}"
    return None


def _step_of(name: str) -> int:
    tail = name[len("checkpoint-"):]
    return int(tail) if tail.isdigit() else -1


def find_checkpoint(path: str | os.PathLike, report=None) -> Path:
    """The checkpoint to resume from ``path``: a checkpoint directory (used as it is, when valid),
    a ``checkpoints`` directory or a run directory (its ``latest``; when that is missing, dangling
    or damaged, the newest valid checkpoint, said in one line through ``report``).  One-line
    :class:`TrainingError` when there is none."""
    from prefmatch.llm.config import ConfigError

    if report is None:
        report = lambda msg: print(f"prefmatch: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--resume: {p} does not exist (give a run directory or a checkpoint directory)")
    if (p / "trainer_state.json").exists() or p.name.startswith("checkpoint-"):
        problem = checkpoint_problem(p)
        if problem:
            raise ConfigError(f"--resume: checkpoint {p} cannot be resumed: {problem}; give the run directory "
                              f"{p.parent.parent} to resume its newest valid checkpoint")
        return p
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    cands = sorted((c for c in folder.glob("checkpoint-*") if c.is_dir() and _step_of(c.name) >= 0),
                   key=lambda c: _step_of(c.name), reverse=True)
    latest_file = folder / "latest"
    named = latest_file.read_text().strip() if latest_file.is_file() else None
    if named is not None and (folder / named).is_dir():  # start at `latest`, however many are above it
        cands = [folder / named] + [c for c in cands if _step_of(c.name) < _step_of(named)]
    if not cands:
        raise ConfigError(f"--resume: no checkpoint found in {p} (expected a checkpoint-NNNNNN directory "
                          "or a run directory with checkpoints/; the run saves them with save_every > 0)")
    skipped: list[str] = []
    for c in cands:
        problem = checkpoint_problem(c)
        if problem is None:
            if named is None:
                report(f"--resume: {latest_file} is missing; resuming from the newest valid checkpoint, {c.name}")
            elif named != c.name and not skipped:
                report(f"--resume: {latest_file} names {named}, which does not exist; resuming from the newest "
                       f"valid checkpoint, {c.name}")
            elif skipped:
                report(f"--resume: {'; '.join(skipped)}; resuming from {c.name}, the newest valid checkpoint")
            return c
        skipped.append(f"{c.name} is unusable ({problem})")
    raise ConfigError(f"--resume: no usable checkpoint in {folder}: {'; '.join(skipped)}")


def resume_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / "trainer_state.json").read_text())["step"])


def check_resume_steps(ckpt: Path, step: int, total: int, out: Path, what: str = "steps") -> bool:
    """True when the run resumed from ``ckpt`` (at ``step``) already finished (its ``total`` steps done
    and its final model saved): the caller does nothing and says so.  A total below the checkpoint's
    step is a one-line :class:`TrainingError` (the run would contradict its own model and metrics)."""
    if total < step:
        raise TrainingError(f"{what}: {total} is below the step of the checkpoint resumed ({ckpt.name}, step "
                            f"{step}); give {what} >= {step} to continue the run, or start a new run")
    return total == step and (out / "model").is_dir()


def finished_run_result(ckpt: Path, step: int, out: Path, report=None) -> dict:
    """What a resume of a finished run returns: nothing is trained or written."""
    if report is None:
        report = lambda msg: print(f"prefmatch: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    report(f"--resume: the run in {out} already finished at step {step} (final model in {out / 'model'}); "
           "nothing to do (give --steps above it to train further)")
    return {"out": str(out / "model"), "steps": step, "already_finished": True, "last_checkpoint": str(ckpt)}


def resume_config(cls, run: str | os.PathLike, explicit: dict[str, Any], saved_path: str | os.PathLike,
                  allow_changes: bool = False):
    """The saved config of the run being resumed, with ``explicit`` options applied only where
    they equal the saved values or are in :data:`RESUMABLE_FIELDS`; a conflicting explicit option
    is a one-line :class:`TrainingError` (resuming a cPM run without ``--regularizer cpm`` continues
    cPM, and ``--regularizer kl`` is refused) unless ``allow_changes``."""
    from prefmatch.llm.config import coerce, from_dict, read_yaml, _field_types

    saved = read_yaml(saved_path)
    types_ = _field_types(cls)
    conflicts = []
    for k, v in explicit.items():
        if k in RESUMABLE_FIELDS or k not in types_:
            continue
        if k in saved and coerce(k, v, types_[k]) != coerce(k, saved[k], types_[k]):
            conflicts.append(f"--{k} {v!r} (the run has {saved[k]!r})")
    if conflicts and not allow_changes:
        raise TrainingError(f"--resume {run}: {'; '.join(conflicts)} conflicts with the saved run; drop the option "
                            "to continue the run as it was, pass --allow-changes to continue with it, or start a "
                            "new run in another --out")
    merged = {**saved, **dict(explicit.items())}
    return from_dict(cls, merged, source=str(saved_path))


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
