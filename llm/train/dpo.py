r"""Direct preference optimization with the theory layer's regularizers (one DPO loss each).

Every affine regularizer ψ = −β log π(y) + β b(y) (KL: b = log π_ref; PM: b = C1; cPM:
b = 𝟙[y ∉ M] log π_ref(y) or its token-level variant; max-ent: b = 0; multi-reference reverse KL:
b = Σ_i α_i log π_ref,i) has the RLHF optimum log π* = r/β + b − log Z, so the reward is
identified up to a prompt constant by the *implicit reward* h(y) = β(log π(y) − b(y)), and the
Bradley–Terry likelihood of the preference data in terms of h is the DPO loss

.. math::  \mathcal L(\pi) = -\mathbb E_{(x, y_w, y_l)} \log\sigma\bigl(h(y_w) - h(y_l)\bigr),

whose population minimizer is that RLHF optimum (the ``dpo.*`` checks of ``prefmatch verify``).
Nothing is written here: h is ``reg.sequence_implicit_reward`` and the loss
:func:`prefmatch.theory.dpo.sequence_dpo_loss`.  For PM and max-ent b does not involve π_ref:
the loss is reference-free and no reference model is loaded.

One step (:meth:`DPOTrainer.step`) reads top to bottom: the step's batch of pairs (seeded
epochs, the same order after a resume) → chosen and rejected rows in one right-padded batch →
per-token log-probs of the policy and (without gradient) of the reference(s) over the response
tokens → the loss → clipped AdamW update.  :meth:`DPOTrainer.from_modules` runs the same step on
any torch modules that follow the HF call convention: the convergence battery
(:mod:`prefmatch.llm.battery.dpo`) trains tabular policies with it and compares them with
``reg.sequence_optimal_logp``.

``prefmatch train dpo --config FILE.yaml [--key value ...]``; programmatic: :func:`train_dpo`.
Outputs in ``out``: ``metrics.jsonl``, ``config.yaml``, ``checkpoints/checkpoint-NNNNNN`` every
``save_every`` steps (atomic; ``resume`` continues from one and gives the weights of an
uninterrupted run), and ``model`` (HF format, LoRA merged) at the end.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefmatch.llm.train import loop
from prefmatch.llm.train.checkpoints import CheckpointedTrainer
from prefmatch.llm.train.common import ResumableConfig
from prefmatch.llm.config import (ConfigError, cfg_field, check_fields, check_trainer_regularizer_params,
                                  regularizer_params_help)
from prefmatch.llm.data import encode_prompt, encode_response, load_split
from prefmatch.llm.models import check_finite_weights, logprobs_from_logits, disable_dropout, frozen_dtype, load_causal_lm, model_inputs, save_model
from prefmatch.llm.train.rewards import RegularizerConfigError, build_regularizer
from prefmatch.llm import sharding
from prefmatch.llm.train.sft import (
    accumulation_weights,
    backward_accumulated,
    current_lr,
    epoch_batches,
    make_optimizer,
    make_scheduler,
    setup_trainable,
)
from prefmatch.llm.tokenizer import load_tokenizer, same_tokenizer
from prefmatch.theory.dpo import dpo_regularizers, sequence_dpo_loss

__all__ = ["DPOConfig", "DPOTrainer", "train_dpo", "pair_tensors"]


def _regularizer_params_help() -> str:
    return regularizer_params_help(dpo_regularizers(), "cpm defaults to level: token, as in train ppo")


@dataclass
class DPOConfig(ResumableConfig):
    model: str = cfg_field("", help="initial policy directory (the SFT model); also the default reference")
    reference: list[str] = cfg_field([], help="reference model directories (default: model); several for "
                                     "multi_rkl, in the order of regularizer_params.weights; not used by the "
                                     "reference-free pm and maxent")
    split: str = cfg_field("rm", help="part of the SFT/RM/RL split whose preference pairs are trained on "
                           "(the reward model's part by default)", choices=("all", "sft", "rm", "rl"))
    out: str = cfg_field("out/dpo", help="output directory")
    regularizer: str = cfg_field("kl", help="regularizer ψ whose DPO loss is minimized (the registry's affine, "
                                 "trainable ones)", choices=dpo_regularizers)
    regularizer_params: dict = cfg_field({}, help=_regularizer_params_help)
    beta: float = cfg_field(0.1, help="β, the divergence's coefficient in E[r] − β·D (the DPO β): the implicit "
                            "reward is β(log π − b); at most 1e6 (beyond, β times the margin's gradient leaves float32)",
                            range="(0, 1e6]")
    epochs: int = cfg_field(1, help="passes over the training pairs (when steps is 0)", range="[1, inf)")
    steps: int = cfg_field(0, help="optimizer steps (0 = as many as `epochs` passes take; otherwise exactly this "
                           "many, continuing into further passes)", range="[0, inf)")
    gradient_accumulation_steps: int = cfg_field(
        1, help="micro-batches of batch_size pairs summed into one optimizer step (effective batch = batch_size × "
        "this); the gradient equals the large batch's", range="[1, inf)")
    eval_fraction: float = cfg_field(0.1, help="fraction of the pairs held out for the final implicit-reward "
                                     "accuracy and loss", range="[0, 1)")

    def check(self) -> None:
        super().check()
        if not self.model:
            raise ConfigError("model: required (a local model directory, e.g. the SFT model)")
        self.check_algorithm()

    def check_algorithm(self):
        """The regularizer object (ConfigError naming the field when it cannot be used)."""
        check_fields(self)  # declared ranges (also for a config built in Python, as from_modules takes)
        check_trainer_regularizer_params(self.regularizer, self.regularizer_params)
        if self.regularizer not in dpo_regularizers():
            raise ConfigError(f"regularizer: {self.regularizer!r} has no DPO loss here; choose one of "
                              f"{', '.join(dpo_regularizers())}")
        try:
            return build_regularizer(self.regularizer, self.regularizer_params, self.beta)
        except RegularizerConfigError as e:
            raise ConfigError(str(e)) from None


def pair_tensors(pairs, pad_token_id: int):
    """Chosen rows then rejected rows, right-padded: ``(input_ids, attention_mask, response_mask)``
    [2B, L] from ``pairs`` of token-id lists ``(prompt, chosen, rejected)``."""
    import numpy as np
    import torch

    rows = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    L = max(len(p) + len(y) for p, y in rows)
    ids = np.full((len(rows), L), pad_token_id, dtype=np.int64)
    attn = np.zeros((len(rows), L), dtype=np.int64)
    rmask = np.zeros((len(rows), L), dtype=np.int64)
    for i, (p, y) in enumerate(rows):
        n = len(p) + len(y)
        ids[i, :n] = p + y
        attn[i, :n] = 1
        rmask[i, len(p):n] = 1
    return torch.from_numpy(ids), torch.from_numpy(attn), torch.from_numpy(rmask)


def response_token_logprobs(model, ids, attn, rmask):
    """log π(token_t | ·) at every position after the first [B, L−1] and the response mask there."""
    kw = model_inputs(model, ids, attn)
    if hasattr(model, "config"):
        kw["use_cache"] = False
    logits = model(**kw).logits
    return logprobs_from_logits(logits[:, :-1], ids[:, 1:]), rmask[:, 1:]


def check_complete_responses(pairs, eos_token_id: int | None) -> None:
    """ConfigError naming ``pairs`` if a response without EOS is a proper prefix of another response
    to the same prompt (a response that ends with ``eos_token_id`` is complete by construction)."""
    by_prompt: dict[tuple, set] = {}
    for prompt, *responses in pairs:
        by_prompt.setdefault(tuple(prompt), set()).update(tuple(r) for r in responses)
    for prompt, responses in by_prompt.items():
        prefixes = {r[:k] for r in responses for k in range(1, len(r))}
        for r in sorted(responses):
            if r in prefixes and (eos_token_id is None or r[-1] != eos_token_id):
                longer = next(o for o in sorted(responses) if len(o) > len(r) and o[:len(r)] == r)
                raise ConfigError(
                    f"pairs: response {list(r)} to prompt {list(prompt)} is a proper prefix of {list(longer)} and "
                    f"does not end with EOS (eos_token_id={eos_token_id}); end every response with EOS so that each "
                    "is a complete outcome")


class DPOTrainer(CheckpointedTrainer):
    """Models, optimizer and pairs of a DPO run; :meth:`step` is one optimizer step.

    ``DPOTrainer(cfg)`` loads local HF directories; :meth:`from_modules` runs the same
    :meth:`step` on any torch modules that follow the HF call convention.
    """

    def __init__(self, cfg: DPOConfig, quiet: bool = False):
        import random


        reg = cfg.check_algorithm()
        n_refs = 0 if reg.refs == "none" else (len(reg.weights) if reg.multi_reference else 1)
        ref_dirs = (list(cfg.reference) if not isinstance(cfg.reference, str) else [cfg.reference]) or [cfg.model]
        if n_refs and len(ref_dirs) != n_refs:
            raise ConfigError(f"reference: {cfg.regularizer} needs {n_refs} reference model(s) "
                              f"(one per weight), got {len(ref_dirs)}")
        records = load_split(cfg.data, cfg.split, cfg.split_fractions, cfg.split_seed,
                             tokenizer=load_tokenizer(cfg.model))
        acc = loop.make_accelerator(cfg.mixed_precision, cfg.cpu, cfg.report_to, cfg.out)
        loop.seed_everything(cfg.seed)
        tok = load_tokenizer(cfg.model)
        tok.padding_side = "right"
        ref_names = [f"reference {i + 1} of {n_refs}" if n_refs > 1 else "reference" for i in range(n_refs)]
        for name, d in zip(ref_names, ref_dirs[:n_refs]):
            if not same_tokenizer(tok, load_tokenizer(d, what="reference")):
                raise ConfigError(f"{name}: the tokenizer in {d} does not match the policy's ({cfg.model}); "
                                  "train all models from the same base model")
        policy = load_causal_lm(cfg.model, what="model")
        policy.config.pad_token_id = tok.pad_token_id
        disable_dropout(policy)
        policy = setup_trainable(policy, cfg, "CAUSAL_LM")
        frozen = frozen_dtype(acc.mixed_precision)  # the compute dtype; trainable weights load in float32
        refs = [check_finite_weights(load_causal_lm(d, dtype=frozen, what="reference"), f"{name} ({d})").to(acc.device).eval()
                for name, d in zip(ref_names, ref_dirs[:n_refs])]

        def encode(r):
            return (encode_prompt(tok, r["prompt"], cfg.max_prompt_len),
                    encode_response(tok, r["chosen"], cfg.max_response_len),
                    encode_response(tok, r["rejected"], cfg.max_response_len))

        order = list(range(len(records)))
        random.Random(cfg.seed).shuffle(order)
        n_eval = int(round(cfg.eval_fraction * len(records)))
        if n_eval and len(records) - n_eval < 1:
            raise ConfigError(f"eval_fraction: leaves no training pairs out of {len(records)}")
        eval_pairs = [encode(records[i]) for i in order[:n_eval]]
        pairs = [encode(records[i]) for i in order[n_eval:]]
        self.tok = tok
        self._setup(cfg, quiet, acc, reg, policy, refs, pairs, eval_pairs, pad_token_id=tok.pad_token_id)

    @classmethod
    def from_modules(cls, config: DPOConfig, *, policy, reference=None, pairs, eval_pairs=(), pad_token_id: int = 0,
                     eos_token_id: int | None = None, quiet: bool = True) -> DPOTrainer:
        """The trainer on user modules, with the same :meth:`step`.

        ``policy``/``reference``: torch modules called as ``m(input_ids=..., attention_mask=...)``
        returning an object with ``.logits`` [B, L, V]; ``reference`` may be a list (one per weight
        of ``multi_rkl``) and is not used by reference-free regularizers.  ``pairs``: triples of
        token-id lists ``(prompt, chosen, rejected)``; responses are used as given (no EOS added).
        A response that does not end with ``eos_token_id`` (every response, when it is None) and is
        a proper prefix of another response to the same prompt is refused: the responses are then
        no set of complete outcomes, and there is no distribution over them to converge to.
        """
        from torch import nn

        reg = config.check_algorithm()
        n_refs = 0 if reg.refs == "none" else (len(reg.weights) if reg.multi_reference else 1)
        refs = [] if reference is None else (list(reference) if isinstance(reference, (list, tuple)) else [reference])
        if n_refs and len(refs) != n_refs:
            raise ConfigError(f"reference: {config.regularizer} needs {n_refs} reference module(s), got {len(refs)}")
        if config.lora or config.gradient_checkpointing:
            raise ConfigError("lora, gradient_checkpointing: from_modules trains the modules as given")

        def clean(ps):
            out = [tuple([int(t) for t in part] for part in p) for p in ps]
            if any(len(p) != 3 or not p[1] or not p[2] for p in out):
                raise ConfigError("pairs: triples (prompt, chosen, rejected) of token-id lists with non-empty responses")
            return out

        pairs = clean(pairs)
        check_complete_responses(pairs + clean(eval_pairs), eos_token_id)
        if not pairs:
            raise ConfigError("pairs: at least one (prompt, chosen, rejected) triple")
        self = cls.__new__(cls)
        self.tok = None
        acc = loop.make_accelerator(config.mixed_precision, config.cpu)
        loop.seed_everything(config.seed)
        for r in refs[:n_refs]:
            if isinstance(r, nn.Module):
                r.requires_grad_(False)
        self._setup(config, quiet, acc, reg, policy, refs[:n_refs], pairs, clean(eval_pairs), pad_token_id=pad_token_id)
        return self

    def _setup(self, cfg, quiet, acc, reg, policy, refs, pairs, eval_pairs, *, pad_token_id):
        self.cfg, self.quiet, self.acc, self.reg = cfg, quiet, acc, reg
        self.pairs, self.eval_pairs = pairs, eval_pairs
        self.refs = refs
        self.pad_token_id = pad_token_id
        self.batches_per_epoch = len(epoch_batches(len(pairs), cfg.batch_size, cfg.seed, 0, acc.num_processes))
        if self.batches_per_epoch == 0:
            raise ConfigError(f"batch_size: {len(pairs)} training pairs are fewer than the {acc.num_processes} processes")
        k = cfg.gradient_accumulation_steps
        self.total_steps = cfg.steps or -(-self.batches_per_epoch * cfg.epochs // k)
        self._epoch: tuple = (None, [])
        optimizer = make_optimizer(policy, cfg)
        self.scheduler = make_scheduler(optimizer, cfg, self.total_steps)
        sharding.configure_deepspeed(acc, micro_batch=max(1, cfg.batch_size // acc.num_processes),
                                     max_grad_norm=cfg.max_grad_norm)
        self.model, self.optimizer = acc.prepare(policy, optimizer)
        self.step_count = 0
        self.last_checkpoint: str | None = None
        self.out = Path(cfg.out)

    @property
    def policy(self):
        """The unwrapped policy (no DDP wrapper)."""
        return self.acc.unwrap_model(self.model)

    def micro_batch_indices(self, m: int) -> list[int]:
        """Pair indices of micro-batch ``m`` (0-based, counted over the run): seeded epochs, so a
        resumed run sees the same batches as an uninterrupted one."""
        epoch, j = divmod(m, self.batches_per_epoch)
        if self._epoch[0] != epoch:  # one permutation per epoch
            self._epoch = (epoch, epoch_batches(len(self.pairs), self.cfg.batch_size, self.cfg.seed, epoch,
                                                self.acc.num_processes))
        return self._epoch[1][j]

    def step_micro_batches(self, step: int) -> range:
        """Micro-batches of optimizer step ``step`` (1-based): ``gradient_accumulation_steps`` of them (the
        last step of an epochs-bounded run may have fewer)."""
        k = self.cfg.gradient_accumulation_steps
        end = step * k if self.cfg.steps else min(step * k, self.batches_per_epoch * self.cfg.epochs)
        return range((step - 1) * k, end)

    def batch_indices(self, step: int) -> list[int]:
        """Pair indices of optimizer step ``step`` (1-based), all its micro-batches together."""
        return [i for m in self.step_micro_batches(step) for i in self.micro_batch_indices(m)]

    def pair_loss(self, model, pairs):
        """(loss, implicit-reward margins h(y_w) − h(y_l) [B] detached, chosen and rejected sequence log-probs)."""
        import torch

        ids, attn, rmask = (t.to(self.acc.device) for t in pair_tensors(pairs, self.pad_token_id))
        n = len(pairs)
        logp_t, m = response_token_logprobs(model, ids, attn, rmask)
        ref_t = None
        if self.refs:
            with torch.no_grad():
                ref = torch.stack([response_token_logprobs(r, ids, attn, rmask)[0].float() for r in self.refs])
            ref_t = ref if self.reg.multi_reference else ref[0]
        for what, lp in (("policy", logp_t), ("reference", ref_t)):
            if lp is not None and not loop.all_finite(self.acc, torch.where(m > 0, lp.detach(), 0.0)):
                raise loop.TrainingError(
                    f"non-finite {what} log-probabilities (logits) at step {self.step_count + 1}; stopped before the "
                    "update; " + (f"last checkpoint {self.last_checkpoint} left untouched" if self.last_checkpoint
                                  else "no checkpoint written"))
        ref_w = None if ref_t is None else ref_t[..., :n, :]
        ref_l = None if ref_t is None else ref_t[..., n:, :]
        loss = sequence_dpo_loss(self.reg, logp_t[:n], logp_t[n:], ref_w, ref_l, m[:n], m[n:])
        with torch.no_grad():
            h = self.reg.sequence_implicit_reward(logp_t, ref_t, m)
            seq = (logp_t * m).sum(-1)
        return loss, (h[:n] - h[n:]).detach(), seq[:n].detach(), seq[n:].detach()

    # ------------------------------------------------------------------ one DPO step
    def step(self) -> dict:
        """One optimizer step on the step's batch of pairs; returns its metrics."""
        cfg, acc = self.cfg, self.acc
        step = self.step_count + 1
        t0 = time.perf_counter()
        micro = [[self.pairs[i] for i in loop.rank_slice(self.micro_batch_indices(m), acc)]
                 for m in self.step_micro_batches(step)]
        weights = accumulation_weights([len(mine) for mine in micro])  # the loss is a mean over pairs
        lr = current_lr(self.optimizer)
        self.model.train()

        def micro_loss(mine):
            with acc.autocast():
                loss, margin, lp_w, lp_l = self.pair_loss(self.model, mine)
            loop.check_finite(acc, step, self.last_checkpoint, loss=loss)
            return loss, {"accuracy": float((margin > 0).float().mean()), "margin": float(margin.mean()),
                          "logp_chosen": float(lp_w.mean()), "logp_rejected": float(lp_l.mean())}

        done = backward_accumulated(
            acc, self.model, [(lambda mine=mine: micro_loss(mine), w) for mine, w in zip(micro, weights)])
        loop.clip_and_check_grads(acc, self.model, cfg.max_grad_norm, step, self.last_checkpoint)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        loop.check_weights_finite(acc, self.model, step, self.last_checkpoint)
        self.step_count = step
        metrics = {"loss": sum(w * float(loss) for (loss, _), w in zip(done, weights)),
                   **{key: sum(w * ms[key] for (_, ms), w in zip(done, weights)) for key in done[0][1]}}
        metrics = loop.mean_over_processes(acc, metrics)
        metrics["step_time_s"] = time.perf_counter() - t0
        epoch = self.step_micro_batches(step)[0] // self.batches_per_epoch
        return {"step": step, "epoch": epoch, "lr": lr, **metrics}

    def evaluate(self, batch_size: int = 32) -> dict:
        """Loss and implicit-reward accuracy on the held-out pairs (main-process view, no gradient)."""
        import torch

        if not self.eval_pairs:
            return {}
        self.model.eval()
        losses, margins = [], []
        with torch.no_grad(), self.acc.autocast():
            for i in range(0, len(self.eval_pairs), batch_size):
                chunk = self.eval_pairs[i:i + batch_size]
                loss, margin, _, _ = self.pair_loss(self.policy, chunk)
                losses.append(float(loss) * len(chunk))
                margins.append(margin.float().cpu())
        margin = torch.cat(margins)
        return {"eval_loss": sum(losses) / len(self.eval_pairs),
                "eval_accuracy": float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean()),
                "eval_pairs": len(self.eval_pairs)}

    # ------------------------------------------------------------------ checkpoints (CheckpointedTrainer)
    def _save_policy(self, model, folder: Path) -> None:
        save_model(model, folder, self.tok)

    def _load_full_policy(self, folder: Path) -> None:
        self.policy.load_state_dict(load_causal_lm(folder, what="--resume checkpoint").state_dict())


def train_dpo(cfg: DPOConfig, quiet: bool = False, resume: str | None = None, allow_changes: bool = False) -> dict:
    """Run DPO (optionally resuming); returns ``{"out", "steps", "loss", "accuracy", "margin",
    "eval_loss", "eval_accuracy", "eval_pairs", "wall_time_s", "final_metrics", "last_checkpoint",
    "processes"}``
    (the ``eval_*`` keys when ``eval_fraction`` > 0).  A resume refuses changed data or objective
    fields (unless ``allow_changes``) and a step count below the checkpoint's; resuming a finished
    run does nothing and says so."""
    import dataclasses

    from prefmatch.llm.config import validate
    from prefmatch.llm.train.ppo import resolve_checkpoint

    t0 = time.perf_counter()
    validate(cfg)
    ckpt = resolve_checkpoint(resume) if resume else None
    if ckpt is not None:
        loop.check_fingerprint(ckpt, dataclasses.asdict(cfg), allow_changes)
    trainer = DPOTrainer(cfg, quiet=quiet)
    if ckpt is not None:
        step = loop.resume_step(ckpt)
        if loop.check_resume_steps(ckpt, step, trainer.total_steps, trainer.out):
            return loop.finished_run_result(ckpt, step, trainer.out)
        trainer.load_checkpoint(ckpt)
    acc = trainer.acc
    log, last = trainer.run_steps(cfg, ckpt, total=trainer.total_steps, run_name=f"dpo[{cfg.regularizer}]", quiet=quiet,
                                  postfix=lambda m: {"loss": f"{m['loss']:.3f}", "acc": f"{m['accuracy']:.2f}"})
    ev = trainer.evaluate()
    out = trainer.save_final()
    result = {"out": out, "steps": trainer.step_count, "loss": last.get("loss", float("nan")),
              "accuracy": last.get("accuracy", float("nan")), "margin": last.get("margin", float("nan")), **ev,
              "wall_time_s": time.perf_counter() - t0, "final_metrics": last,
              "last_checkpoint": trainer.last_checkpoint, "processes": acc.num_processes}
    if acc.is_main_process:
        log.log({"step": trainer.step_count, "final": True, **ev})
    log.close()
    return result
