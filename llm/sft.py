"""Supervised fine-tuning: next-token loss on the response tokens only (prompt tokens are context).

``prefmatch train sft --config sft.yaml [--key value ...]``; programmatic: :func:`train_sft`.
The model trains on ``prompt + <response_key>`` (the chosen response by default) of the SFT part
of the split and is saved in Hugging Face format to ``out``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from prefmatch.llm.common import CommonConfig
from prefmatch.llm.config import ConfigError, cfg_field, save_config
from prefmatch.llm.data import load_split, prompt_response_batch
from prefmatch.llm.losses import response_nll
from prefmatch.llm.models import disable_dropout, load_causal_lm, lora_wrap, model_inputs, save_model
from prefmatch.llm.tokenizer import load_tokenizer
from prefmatch.llm.sharding import savable_model
from prefmatch.llm.training import (
    MetricsLog,
    atomic_dir,
    check_finite,
    check_weights_finite,
    clip_and_check_grads,
    console_logging,
    derived_seed,
    make_accelerator,
    mean_over_processes,
    progress,
    rank_slice,
    seed_everything,
)


@dataclass
class SupervisedConfig(CommonConfig):
    """Fields of the two supervised stages (SFT and the reward model)."""

    ALIASES: ClassVar[dict] = {"max_steps": "steps"}  # the old name, still accepted (prefmatch.llm.config.from_dict)

    epochs: int = cfg_field(1, help="passes over the data", range="[1, inf)")
    steps: int = cfg_field(0, help="stop after this many optimizer steps (0 = run all epochs)", range="[0, inf)")


@dataclass
class SFTConfig(SupervisedConfig):
    model: str = cfg_field("", help="base model directory (Hugging Face format, e.g. from `prefmatch model init`)")
    split: str = cfg_field("sft", help="part of the SFT/RM/RL split to train on", choices=("all", "sft", "rm", "rl"))
    out: str = cfg_field("out/sft", help="output directory of the fine-tuned model")
    response_key: str = cfg_field("chosen", help="which response field to imitate")

    def check(self) -> None:
        super().check()
        if not self.model:
            raise ConfigError("model: required (a local model directory)")
        if self.epochs < 1:
            raise ConfigError(f"epochs: must be >= 1, got {self.epochs}")


def setup_trainable(model, cfg, task_type: str):
    """Optionally enable gradient checkpointing and wrap with LoRA; returns the model to train."""
    if getattr(cfg, "gradient_checkpointing", False):
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        if cfg.lora:
            model.enable_input_require_grads()
    if cfg.lora:
        try:
            model = lora_wrap(model, task_type, r=cfg.lora_r, alpha=cfg.lora_alpha,
                              target_modules=cfg.lora_target_modules or None)
        except ValueError as e:  # peft: target modules not found in the model, ...
            names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
            raise ConfigError(f"lora_target_modules: {cfg.lora_target_modules} cannot be wrapped "
                              f"({str(e).splitlines()[0][:160]}); module names in this model: {', '.join(names[:20])}") from None
    return model


def make_optimizer(model, cfg):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, world: int) -> list[list[int]]:
    """Seeded shuffled index batches of one epoch; a last batch smaller than the world is dropped."""
    import numpy as np

    perm = np.random.default_rng(derived_seed(seed, epoch)).permutation(n).tolist()
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= world]


def run_supervised(cfg, *, load_model, task_type: str, n_train: int, what: str, desc: str,
                   batch_loss, quiet: bool = False):
    """The training loop shared by SFT and the reward model (one screen, no callbacks).

    Loads tokenizer and model (``load_model(dir, what=...)``), applies LoRA / checkpointing,
    prepares them with accelerate, then runs seeded shuffled epochs over ``n_train`` records:
    ``batch_loss(model, tok, acc, indices) -> (loss, log_metrics)`` gives each process's loss on
    its share of the batch; gradients are clipped and averaged, a NaN loss stops the run.
    Returns ``(acc, model, tok, out, log, steps, last_loss)``.
    """
    acc = make_accelerator(cfg.mixed_precision, cfg.cpu, cfg.report_to, cfg.out)
    seed_everything(cfg.seed)
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, what="model")
    model.config.pad_token_id = tok.pad_token_id
    disable_dropout(model)
    model = setup_trainable(model, cfg, task_type)
    opt = make_optimizer(model, cfg)
    model, opt = acc.prepare(model, opt)
    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = MetricsLog(out / "metrics.jsonl", enabled=acc.is_main_process, accelerator=acc, run_name=desc,
                     config=dataclasses.asdict(cfg), console=console_logging(quiet, acc))

    n_per_epoch = len(epoch_batches(n_train, cfg.batch_size, cfg.seed, 0, acc.num_processes))
    if n_per_epoch == 0:
        raise ConfigError(f"batch_size: {n_train} {what} are fewer than the {acc.num_processes} processes")
    total = n_per_epoch * cfg.epochs
    if cfg.steps:
        total = min(total, cfg.steps)
    bar = progress(total, desc, quiet, acc)
    step, loss_val = 0, float("nan")
    model.train()
    for epoch in range(cfg.epochs):
        for batch in epoch_batches(n_train, cfg.batch_size, cfg.seed, epoch, acc.num_processes):
            if step >= total:
                break
            loss, metrics = batch_loss(model, tok, acc, rank_slice(batch, acc))
            check_finite(acc, step + 1, None, loss=loss)
            acc.backward(loss)
            clip_and_check_grads(acc, model, cfg.max_grad_norm, step + 1, None)
            opt.step()
            opt.zero_grad(set_to_none=True)
            check_weights_finite(acc, model, step + 1, None)
            step += 1
            loss_val = float(loss.detach())
            if step % cfg.log_every == 0 or step == total:
                m = mean_over_processes(acc, {"loss": loss_val, **metrics})
                log.log({"step": step, "epoch": epoch, **m})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.4f}")
    bar.close()
    log.close()
    return acc, model, tok, out, log, step, loss_val


def train_sft(cfg: SFTConfig, quiet: bool = False) -> dict:
    """Run SFT; returns ``{"out", "steps", "loss", "tokens"}``."""
    records = load_split(cfg.data, cfg.split, cfg.split_fractions, cfg.split_seed,
                         keys=("prompt", cfg.response_key), tokenizer=load_tokenizer(cfg.model))
    tokens = 0

    def batch_loss(model, tok, acc, indices):
        nonlocal tokens
        mine = [records[i] for i in indices]
        ids, mask, rmask = prompt_response_batch(tok, [r["prompt"] for r in mine],
                                                 [r[cfg.response_key] for r in mine],
                                                 cfg.max_prompt_len, cfg.max_response_len)
        ids, mask, rmask = ids.to(acc.device), mask.to(acc.device), rmask.to(acc.device)
        with acc.autocast():
            logits = model(**model_inputs(model, ids, mask), use_cache=False).logits
        tokens += int(rmask.sum())
        return response_nll(logits, ids, rmask), {}

    acc, model, tok, out, _, step, loss_val = run_supervised(
        cfg, load_model=load_causal_lm, task_type="CAUSAL_LM", n_train=len(records), what="SFT records",
        desc="sft", batch_loss=batch_loss, quiet=quiet)
    acc.wait_for_everyone()
    plain = savable_model(acc, model)  # collective under FSDP
    if acc.is_main_process:
        with atomic_dir(out / "model") as tmp:
            save_model(plain, tmp, tok)
    acc.wait_for_everyone()
    return {"out": str(out / "model"), "steps": step, "loss": loss_val, "tokens": tokens}
