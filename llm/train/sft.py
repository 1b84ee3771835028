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

from prefmatch.llm.train.common import CommonConfig
from prefmatch.llm.config import ConfigError, cfg_field, save_config
from prefmatch.llm.data import load_split, prompt_response_batch
from prefmatch.llm.train.losses import response_nll
from prefmatch.llm.models import disable_dropout, load_causal_lm, lora_wrap, model_inputs, save_model
from prefmatch.llm.tokenizer import load_tokenizer
from prefmatch.llm.sharding import savable_model
from prefmatch.llm.train.loop import MetricsLog, check_finite, check_weights_finite, clip_and_check_grads, console_logging, derived_seed, make_accelerator, mean_over_processes, progress, rank_slice, seed_everything
from prefmatch.llm.rundir import atomic_dir


@dataclass
class SupervisedConfig(CommonConfig):
    """Fields of the two supervised stages (SFT and the reward model)."""

    ALIASES: ClassVar[dict] = {"max_steps": "steps"}  # the old name, still accepted (prefmatch.llm.config.from_dict)

    epochs: int = cfg_field(1, help="passes over the data", range="[1, inf)")
    steps: int = cfg_field(0, help="stop after this many optimizer steps (0 = run all epochs)", range="[0, inf)")
    gradient_accumulation_steps: int = cfg_field(
        1, help="micro-batches of batch_size summed into one optimizer step (effective batch = batch_size × this); "
        "the gradient equals the large batch's (SFT weighs by response tokens, the reward model by pairs)",
        range="[1, inf)")


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
    """AdamW over the trainable parameters; they must be float32 (master weights, see
    :func:`prefmatch.llm.models.load_dtype`): Adam's update in fp16 overflows at the first step."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    low = sorted({str(p.dtype).replace("torch.", "") for p in params if p.dtype in (torch.float16, torch.bfloat16)})
    if low:
        from prefmatch.llm.train.loop import TrainingError

        raise TrainingError(f"trainable weights in {', '.join(low)}: AdamW needs float32 master weights; load the "
                            "model in float32 (load_causal_lm(dir) does) and use mixed_precision: bf16 for the forward")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg, total_steps: int):
    """The learning-rate schedule ``cfg.lr_scheduler`` with ``cfg.warmup_steps`` of linear warmup over
    ``total_steps`` optimizer steps: transformers' ``get_scheduler`` (DeepSpeed-Chat's), a
    ``LambdaLR`` stepped once after each optimizer step.  The lr of the (k+1)-th step is
    lr · f(k), with f(k) = k / warmup during warmup, then 1 (constant), (total − k)/(total − warmup)
    (linear) or ½(1 + cos(π (k − warmup)/(total − warmup))) (cosine)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.lr_scheduler, cfg.lr_scheduler)
    if cfg.warmup_steps >= total_steps and cfg.lr_scheduler != "constant":
        raise ConfigError(f"warmup_steps: {cfg.warmup_steps} leaves none of the run's {total_steps} steps to the "
                          f"{cfg.lr_scheduler} schedule; use fewer")
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=max(1, total_steps))


def set_schedule_step(scheduler, steps_done: int) -> None:
    """Put ``scheduler`` (and its optimizer's lr) where it is after ``steps_done`` optimizer steps:
    a resumed run continues the schedule where the checkpoint left it."""
    scheduler.last_epoch = steps_done
    for group, base, f in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * f(steps_done)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def current_lr(optimizer) -> float:
    """The learning rate of the next optimizer step (first parameter group)."""
    return float(optimizer.param_groups[0]["lr"])


def accumulation_weights(counts: list[float]) -> list[float]:
    """Weights of micro-batch losses (each a mean over its ``counts[i]`` items) whose weighted sum is
    the mean over all items: the accumulated gradient is the large batch's."""
    total = float(sum(counts))
    if total <= 0:
        return [1.0 / len(counts)] * len(counts)
    return [c / total for c in counts]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, world: int) -> list[list[int]]:
    """Seeded shuffled index batches of one epoch; a last batch smaller than the world is dropped."""
    import numpy as np

    perm = np.random.default_rng(derived_seed(seed, epoch)).permutation(n).tolist()
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= world]


def accumulation_groups(batches: list, k: int) -> list[list]:
    """Consecutive micro-batches, ``k`` to an optimizer step (the last group of an epoch may be shorter)."""
    return [batches[i:i + k] for i in range(0, len(batches), k)]


def backward_accumulated(acc, model, losses_and_weights):
    """Backward of a group of micro-batch losses ``(loss_fn, weight)`` (each loss computed inside the
    loop, so that one micro-batch's activations live at a time): gradients of Σ weight·loss, with
    the cross-process gradient sync (DDP all-reduce, FSDP reduce-scatter, DeepSpeed's boundary) only
    at the last micro-batch.  Returns the losses (detached) and their metrics."""
    import contextlib

    state = acc.gradient_state
    out = []
    n = len(losses_and_weights)
    for i, (loss_fn, weight) in enumerate(losses_and_weights):
        last = i == n - 1
        state._set_sync_gradients(last)  # DeepSpeed's engine steps only at the boundary
        ctx = contextlib.nullcontext() if last or n == 1 else acc.no_sync(model)
        with ctx:
            loss, metrics = loss_fn()
            acc.backward(loss * weight)
        out.append((loss.detach(), metrics))
    state._set_sync_gradients(True)
    return out


def run_supervised(cfg, *, load_model, task_type: str, n_train: int, what: str, desc: str,
                   batch_loss, quiet: bool = False, count=None):
    """The training loop shared by SFT and the reward model (one screen, no callbacks).

    Loads tokenizer and model (``load_model(dir, what=...)``), applies LoRA / checkpointing,
    prepares them with accelerate, then runs seeded shuffled epochs over ``n_train`` records:
    ``batch_loss(model, tok, acc, indices) -> (loss, log_metrics)`` gives each process's loss on
    its share of a micro-batch (a mean over ``count(tok, indices)`` items: response tokens, pairs;
    default ``len(indices)``); ``gradient_accumulation_steps`` micro-batches are weighted by their
    item counts into one optimizer step, so the gradient is the large batch's.  Gradients are
    clipped and averaged, a NaN loss stops the run, the lr follows ``lr_scheduler``.
    Returns ``(acc, model, tok, out, log, steps, last_loss)``.
    """
    from prefmatch.llm import sharding

    acc = make_accelerator(cfg.mixed_precision, cfg.cpu, cfg.report_to, cfg.out)
    seed_everything(cfg.seed)
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, what="model")
    model.config.pad_token_id = tok.pad_token_id
    disable_dropout(model)
    model = setup_trainable(model, cfg, task_type)
    k = cfg.gradient_accumulation_steps
    micro = epoch_batches(n_train, cfg.batch_size, cfg.seed, 0, acc.num_processes)
    if not micro:
        raise ConfigError(f"batch_size: {n_train} {what} are fewer than the {acc.num_processes} processes")
    n_per_epoch = len(accumulation_groups(micro, k))
    total = n_per_epoch * cfg.epochs
    if cfg.steps:
        total = min(total, cfg.steps)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, total)
    sharding.configure_deepspeed(acc, micro_batch=max(1, cfg.batch_size // acc.num_processes),
                                 max_grad_norm=cfg.max_grad_norm)
    model, opt = acc.prepare(model, opt)
    count = count or (lambda tok, indices: len(indices))
    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = MetricsLog(out / "metrics.jsonl", enabled=acc.is_main_process, accelerator=acc, run_name=desc,
                     config=dataclasses.asdict(cfg), console=console_logging(quiet, acc))

    bar = progress(total, desc, quiet, acc)
    step, loss_val = 0, float("nan")
    model.train()
    for epoch in range(cfg.epochs):
        for group in accumulation_groups(epoch_batches(n_train, cfg.batch_size, cfg.seed, epoch, acc.num_processes), k):
            if step >= total:
                break
            mine = [rank_slice(b, acc) for b in group]
            weights = accumulation_weights([count(tok, m) for m in mine])
            lr = current_lr(opt)

            def loss_fn(m=None):
                loss, metrics = batch_loss(model, tok, acc, m)
                check_finite(acc, step + 1, None, loss=loss)
                return loss, metrics

            done = backward_accumulated(acc, model, [(lambda m=m: loss_fn(m), w) for m, w in zip(mine, weights)])
            clip_and_check_grads(acc, model, cfg.max_grad_norm, step + 1, None)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            check_weights_finite(acc, model, step + 1, None)
            step += 1
            loss_val = float(sum(w * float(l) for (l, _), w in zip(done, weights)))
            if step % cfg.log_every == 0 or step == total:
                metrics = {key: sum(w * float(ms[key]) for (_, ms), w in zip(done, weights)) for key in done[0][1]}
                m = mean_over_processes(acc, {"loss": loss_val, **metrics})
                log.log({"step": step, "epoch": epoch, "lr": lr, **m})
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

    def count(tok, indices):  # response tokens: SFT's loss is a mean over them
        mine = [records[i] for i in indices]
        return float(prompt_response_batch(tok, [r["prompt"] for r in mine], [r[cfg.response_key] for r in mine],
                                           cfg.max_prompt_len, cfg.max_response_len)[2].sum())

    acc, model, tok, out, _, step, loss_val = run_supervised(
        cfg, load_model=load_causal_lm, task_type="CAUSAL_LM", n_train=len(records), what="SFT records",
        desc="sft", batch_loss=batch_loss, quiet=quiet, count=count)
    acc.wait_for_everyone()
    plain = savable_model(acc, model)  # collective under FSDP
    if acc.is_main_process:
        with atomic_dir(out / "model") as tmp:
            save_model(plain, tmp, tok)
    acc.wait_for_everyone()
    return {"out": str(out / "model"), "steps": step, "loss": loss_val, "tokens": tokens}
