r"""A prefmatch regularizer in verl's reward, in place of its KL penalty (verl 0.9.1).

verl has two KL hooks (``verl/trainer/ppo/core_algos.py``, ``ray_trainer.py``):
``algorithm.use_kl_in_reward`` subtracts β·``kl_penalty(old_log_prob, ref_log_prob)`` from the
token-level scores in ``ray_trainer.apply_kl_penalty``, and ``actor.use_kl_loss`` adds
``kl_penalty(log_prob, ref_log_prob, kl_loss_type)`` to the actor's loss.  The ``grad.*`` checks
say the first, with ``kl_penalty: kl`` (k1), is exact; the actor-loss default ``low_var_kl`` (k3
without the importance ratio) optimizes the forward KL on one-token responses.

:func:`install` replaces ``apply_kl_penalty`` (in every verl module that imported it) by
:func:`make_apply_regularizer`: token_level_rewards = token_level_scores + ψ_t with ψ_t =
``reg.token_reward(old_log_probs, ref_log_prob, response_mask)``, the regularizer's per-token
share of ψ (its β, not verl's ``kl_ctrl``).  This is the reward placement, exact for the
regularizers affine in log π (kl with k1, pm, cpm, maxent); the others (f-divergences, k3) need a
pathwise loss term on the advantages' scale, which verl's policy-loss hooks
(``register_policy_loss``) cannot build — they are not given the reference log-probs — so
:func:`install` refuses them, and multi-reference regularizers too (verl scores one reference).
Use it with ``algorithm.use_kl_in_reward=True`` and ``actor.use_kl_loss=False``.
"""
from __future__ import annotations

import sys

from prefmatch.llm.rewards import RegularizerConfigError, build_regularizer, resolve_mode

#: the verl version this recipe is tested against (where it imports; see the docs)
TESTED_VERL_VERSION = "0.9.1"


def regularizer_for_verl(name: str, params: dict | None = None, beta: float | None = None):
    """The regularizer object, refused (ValueError, one line) unless its reward placement is exact
    and it needs at most one reference."""
    try:
        reg = build_regularizer(name, params, beta=beta)
        placement = resolve_mode(reg, "auto")
    except RegularizerConfigError as e:
        raise ValueError(str(e)) from None
    if placement != "reward":
        raise ValueError(f"regularizer: {name!r} needs a pathwise loss term (placement {placement!r}), which verl's "
                         "policy-loss hooks cannot build; use one that is exact as a reward (kl, pm, cpm, maxent)")
    if reg.multi_reference:
        raise ValueError(f"regularizer: {name!r} needs K reference models; verl scores one reference")
    return reg


def token_level_rewards(reg, token_level_scores, old_log_probs, ref_log_prob, response_mask):
    """token_level_scores + ψ_t: the regularized per-token rewards verl's advantage estimators read."""
    mask = response_mask.to(old_log_probs.dtype)
    ref = None if reg.refs == "none" else ref_log_prob
    return token_level_scores + reg.token_reward(old_log_probs, ref, mask)


def make_apply_regularizer(reg):
    """A drop-in for ``verl.trainer.ppo.ray_trainer.apply_kl_penalty(data, kl_ctrl, kl_penalty)``."""

    def apply_regularizer(data, kl_ctrl=None, kl_penalty=None):
        b = data.batch
        mask = b["response_mask"]
        rewards = token_level_rewards(reg, b["token_level_scores"], b["old_log_probs"], b.get("ref_log_prob"), mask)
        psi = ((rewards - b["token_level_scores"]) * mask).sum(-1)
        b["token_level_rewards"] = rewards
        return data, {"actor/regularizer_psi": float(psi.mean()), "actor/regularizer_beta": reg.beta}

    apply_regularizer.regularizer = reg
    return apply_regularizer


def install(name: str, params: dict | None = None, beta: float | None = None):
    """Replace verl's ``apply_kl_penalty`` by the regularizer's reward (every loaded verl module that
    bound it, and ``ray_trainer`` for later imports); returns the regularizer."""
    import verl.trainer.ppo.ray_trainer as ray_trainer

    reg = regularizer_for_verl(name, params, beta)
    original = getattr(ray_trainer.apply_kl_penalty, "__wrapped_verl__", ray_trainer.apply_kl_penalty)
    fn = make_apply_regularizer(reg)
    fn.__wrapped_verl__ = original
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("verl") and getattr(mod, "apply_kl_penalty", None) is not None:
            current = mod.apply_kl_penalty
            if current is original or getattr(current, "__wrapped_verl__", None) is original:
                mod.apply_kl_penalty = fn
    return reg
