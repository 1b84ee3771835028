r"""TRL's ``DPOTrainer`` with the DPO loss of any affine prefmatch regularizer (PM and cPM included).

A TRL user changes one class and one argument::

    from prefmatch.llm.integrations.trl_dpo import PMDPOTrainer
    trainer = PMDPOTrainer(model=..., args=trl.DPOConfig(beta=0.1, ...), train_dataset=...,
                           processing_class=tok, regularizer="pm")

Every affine regularizer ψ = −β log π + β b(y) has the DPO loss
−log σ(β[(log π(y_w) − b(y_w)) − (log π(y_l) − b(y_l))]) (:doc:`/theory/dpo_affine`).  TRL's
sigmoid loss is −log σ(β[(log π(y_w) − ref(y_w)) − (log π(y_l) − ref(y_l))]) with ref the
reference's sequence log-probability, so the integration only replaces what TRL uses as
"reference log-probabilities" by the regularizer's offset b(y) — computed once per pair before
training (TRL's ``precompute_ref_log_probs``, switched on here) from the reference's *token*
log-probs by ``reg.sequence_implicit_reward`` (b = −h(log π = 0)/β), so token-level cPM gets its
per-token indicator.  KL gives TRL's DPO unchanged; PM and max-ent give b = const and no reference
forward pass at all.  TRL's "rewards/chosen" and "rewards/rejected" metrics are then the
regularizer's implicit rewards.

Refused with one line: a regularizer without a DPO loss of this form, multi_rkl (TRL takes one
reference model), a ``loss_type`` other than ``sigmoid``, an ``f_divergence_type`` other than
``reverse_kl``, ``ld_alpha`` and ``sync_ref_model`` (each changes what the reference term means).
Tested against TRL :data:`TESTED_TRL_VERSION`; other versions are refused in one line (:data:`SUPPORTED_TRL_DPO`).
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from trl import DPOTrainer

from prefmatch.llm.train.rewards import RegularizerConfigError, build_regularizer
from prefmatch.theory.dpo import dpo_regularizers

#: the TRL version this trainer is tested against; it needs TRL's fused LM head and its cache key of precomputed
#: reference log-probs as in 1.16 (1.15's fused head fails on CPU; 1.12 has neither), so it supports 1.16 only
TESTED_TRL_VERSION = "1.16.0"
SUPPORTED_TRL_DPO = ">=1.16.0,<1.17"

__all__ = ["PMDPOTrainer", "SUPPORTED_TRL_DPO", "TESTED_TRL_VERSION"]


def _check_args(args, regularizer: str, regularizer_params: dict | None):
    """The regularizer object for TRL ``args`` (RegularizerConfigError naming the field otherwise)."""
    if regularizer not in dpo_regularizers():
        raise RegularizerConfigError(f"regularizer: {regularizer!r} has no DPO loss of the form β(log π − b); "
                                     f"choose one of {', '.join(dpo_regularizers())}")
    reg = build_regularizer(regularizer, regularizer_params, float(args.beta))
    if reg.multi_reference:
        raise RegularizerConfigError("regularizer: multi_rkl needs K reference models; TRL's DPOTrainer takes one "
                                     "(use `prefmatch train dpo --reference DIR1 DIR2`)")
    rules = [("loss_type", list(args.loss_type) == ["sigmoid"], "['sigmoid'] (the Bradley-Terry loss)"),
             ("f_divergence_type", args.f_divergence_type == "reverse_kl", "'reverse_kl'"),
             ("ld_alpha", args.ld_alpha is None, "None"),
             ("sync_ref_model", not args.sync_ref_model, "False (the offset b is computed once)")]
    for name, holds, must in rules:
        if not holds:
            raise RegularizerConfigError(f"{name}: must be {must} for PMDPOTrainer, got {getattr(args, name)!r}")
    return reg


class PMDPOTrainer(DPOTrainer):
    """``trl.DPOTrainer`` whose loss is the DPO loss of ``regularizer`` (see the module docstring)."""

    def __init__(self, *args: Any, regularizer: str = "kl", regularizer_params: dict | None = None, **kwargs: Any):
        from prefmatch.llm.integrations.trl import check_trl_version

        check_trl_version(supported=SUPPORTED_TRL_DPO, tested=(TESTED_TRL_VERSION,), what="PMDPOTrainer")
        targs = kwargs.get("args")
        if targs is None:
            raise RegularizerConfigError("args: give a trl.DPOConfig (its beta is the regularizer's β)")
        self.reg = _check_args(targs, regularizer, regularizer_params)
        targs.precompute_ref_log_probs = True  # b(y) is computed once, before training
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        # TRL caches the precomputed column by (dataset, model): add the regularizer to the key
        from datasets.fingerprint import Hasher

        model_hash = self._precompute_model_hash  # type: ignore[has-type]  # TRL's attribute (its base class is Any here)
        self._precompute_model_hash = Hasher.hash((model_hash, repr(self.reg)))
        try:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self._precompute_model_hash = model_hash

    def compute_ref_log_probs(self, model, inputs):
        """(b(y_chosen), b(y_rejected)): the regularizer's offset in place of the reference's
        sequence log-probabilities (h = β(log π − b) = ``reg.sequence_implicit_reward``)."""
        mask_t = inputs["completion_mask"][..., 1:].float()
        if self.reg.refs == "none":
            ref_t = None
            zeros = torch.zeros(mask_t.shape, device=mask_t.device)
        else:
            ref_t = self._reference_token_logps(model, inputs).float()
            zeros = torch.zeros_like(ref_t)
        b = -self.reg.sequence_implicit_reward(zeros, ref_t, mask_t) / self.reg.beta
        return b.chunk(2, dim=0)

    def _reference_token_logps(self, model, inputs):
        """log π_ref(y_t | ·) at the completion positions, as TRL's own ``compute_ref_log_probs`` computes them."""
        from trl.trainer.dpo_trainer import disable_gradient_checkpointing, is_peft_model, use_adapter

        model_kwargs = {k: v for k, v in inputs.items() if k not in {"completion_mask", "ref_chosen_logps",
                                                                     "ref_rejected_logps"}}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        adapter = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                adapter, self.accelerator.autocast():
            logps = model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs
        return logps[:, -inputs["completion_mask"][..., 1:].size(1):]

