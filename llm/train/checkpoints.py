"""Checkpoints of the trainers that resume (PPO and DPO): one way to write, keep, resume from and finish them.

``checkpoints/checkpoint-NNNNNN`` is written atomically (:func:`prefmatch.llm.rundir.atomic_dir`): the policy
as a plain HF folder, the trainable tensors of a LoRA run, the optimizer, the config and the trainer state;
sharded runs (FSDP2, DeepSpeed) write every process's model and optimizer state in ``sharded/``
(torch.distributed.checkpoint / the DeepSpeed engine) beside the gathered HF policy and resume from it.
``latest`` names the newest, and the last ``keep_checkpoints`` are kept.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefmatch.llm import rundir, sharding
from prefmatch.llm.config import ConfigError, save_config
from prefmatch.llm.train import loop
from prefmatch.llm.train.sft import set_schedule_step


class CheckpointedTrainer:
    """A trainer with ``acc``, ``model`` (what the engine wraps), ``policy`` (its unwrapped policy),
    ``optimizer``, ``scheduler``, ``cfg`` (``lora``, ``keep_checkpoints``), ``out``, ``step_count`` and
    ``last_checkpoint`` gets :meth:`save_checkpoint`, :meth:`load_checkpoint` and :meth:`save_final` by saying
    how its policy is saved (:meth:`_save_policy`) and loaded (:meth:`_load_full_policy`), and what else a
    checkpoint holds (:meth:`_load_heads`, :meth:`_save_extra`, :meth:`_load_extra`)."""

    acc: Any
    model: Any
    optimizer: Any
    scheduler: Any
    cfg: Any
    out: Path
    step_count: int
    last_checkpoint: str | None

    @property
    def policy(self) -> Any:
        """The policy without its engine wrapper (what is saved and loaded)."""
        raise NotImplementedError

    def _save_policy(self, model, folder: Path) -> None:
        """Write ``model`` (the policy, gathered when sharded) as an HF folder."""
        raise NotImplementedError

    def _load_full_policy(self, folder: Path) -> None:
        """Load the policy's weights from the HF folder a checkpoint holds (runs without LoRA)."""
        raise NotImplementedError

    def _load_heads(self, folder: Path) -> None:
        """Load what the policy folder holds beside the language model (unsharded runs); nothing by default."""

    def _save_extra(self, folder: Path) -> None:
        """Write the trainer's own state into a checkpoint; nothing by default."""

    def _load_extra(self, folder: Path) -> None:
        """Read what :meth:`_save_extra` wrote; nothing by default."""

    def save_checkpoint(self) -> str:
        """Write ``checkpoints/checkpoint-NNNNNN`` atomically and point ``latest`` at it."""
        import torch

        acc = self.acc
        out, cfg = self.out, self.cfg
        path = out / "checkpoints" / f"checkpoint-{self.step_count:06d}"
        acc.wait_for_everyone()
        if sharding.engine_checkpoints(acc):
            with sharding.shared_atomic_dir(acc, path) as tmp:
                sharding.save_sharded_state(acc, self.model, self.optimizer, tmp)
                plain = sharding.savable_model(acc, self.model)  # collective
                if acc.is_main_process:
                    self._save_policy(plain, tmp / "policy")
                    self._save_extra(tmp)
                    save_config(cfg, tmp / "config.yaml")
                    loop.write_trainer_state(tmp, out, self.step_count)
        elif acc.is_main_process:
            with rundir.atomic_dir(path) as tmp:
                policy = self.policy
                self._save_policy(policy, tmp / "policy")
                if cfg.lora:  # the merged HF dir has no adapters: keep the trainable tensors
                    names = {n for n, p in policy.named_parameters() if p.requires_grad}
                    torch.save({k: v.detach().cpu() for k, v in policy.state_dict().items() if k in names},
                               tmp / "trainable.pt")
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                self._save_extra(tmp)
                save_config(cfg, tmp / "config.yaml")
                loop.write_trainer_state(tmp, out, self.step_count)
        if acc.is_main_process:
            rundir.write_text_atomic(out / "checkpoints" / "latest", path.name)
            ckpts = sorted((out / "checkpoints").glob("checkpoint-*"))
            for old in ckpts[: max(0, len(ckpts) - max(1, cfg.keep_checkpoints))]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.last_checkpoint = str(path)
        return str(path)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimizer, step and the trainer's own state from a checkpoint directory (validated
        by :func:`prefmatch.llm.train.loop.find_checkpoint`; a load that still fails is one line naming it)."""
        import torch

        path = Path(path)
        if sharding.engine_checkpoints(self.acc):
            try:
                sharding.load_sharded_state(self.acc, self.model, self.optimizer, path)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            self.step_count = loop.resume_step(path)
            self._load_extra(path)
        elif (path / sharding.SHARDED_DIR).is_dir():
            raise ConfigError(f"--resume: {path} was written by a sharded run (FSDP/DeepSpeed); resume it under the "
                              "same launcher config and process count")
        else:
            try:
                if self.cfg.lora:
                    self.policy.load_state_dict(torch.load(path / "trainable.pt", map_location="cpu"), strict=False)
                else:
                    self._load_full_policy(path / "policy")
                self._load_heads(path / "policy")
                self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
                self.step_count = loop.resume_step(path)
                self._load_extra(path)
            except (OSError, RuntimeError, ValueError, KeyError, EOFError) as e:
                raise loop.TrainingError(f"--resume: checkpoint {path} cannot be loaded ({type(e).__name__}: "
                                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); it does "
                                         "not match this run's models or is damaged") from None
        set_schedule_step(self.scheduler, self.step_count)  # the lr where the checkpoint left it
        self.last_checkpoint = str(path)

    def run_steps(self, cfg, ckpt, *, total: int, run_name: str, quiet: bool, postfix) -> tuple[Any, dict]:
        """Step to ``total`` (from a resumed ``ckpt``'s step): the metrics log every ``cfg.log_every`` steps and
        at the last, a checkpoint every ``cfg.save_every``, a progress bar showing ``postfix(metrics)``.
        Returns the open metrics log and the last step's metrics."""
        log = loop.start_run(self, cfg, ckpt, run_name=run_name, total=total, quiet=quiet)
        bar = loop.progress(total, run_name, quiet, self.acc)
        bar.update(self.step_count)
        last: dict = {}
        while self.step_count < total:
            last = self.step()
            if self.step_count % cfg.log_every == 0 or self.step_count == total:
                log.log(last)
            if cfg.save_every and self.step_count % cfg.save_every == 0:
                self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(**postfix(last))
        bar.close()
        return log, last

    def step(self) -> dict:
        """One optimizer step; its metrics."""
        raise NotImplementedError

    def save_final(self) -> str:
        """The trained policy as ``out/model`` (a plain HF folder)."""
        acc = self.acc
        acc.wait_for_everyone()
        plain = sharding.savable_model(acc, self.model)  # collective under FSDP2 / ZeRO-3
        if acc.is_main_process:
            with rundir.atomic_dir(self.out / "model") as tmp:
                self._save_policy(plain, tmp)
        acc.wait_for_everyone()
        return str(self.out / "model")
