r"""Regularizer → per-token PPO rewards.  No ψ is written here: every formula is the theory
layer's (:mod:`prefmatch.theory.regularizers`); this module only wires tensors to it.

For one sampled response y = (y_1..y_T) to prompt x, PPO maximises the return
Σ_t r_t with

.. math::  r_t = \psi_t + \mathbb 1[t = T]\; s\cdot \mathrm{clip}(r_\theta(x, y), \pm c),

where ψ_t = ``regularizer.token_reward(log π(y_t|·), log π_ref(y_t|·), mask)`` is the per-token
share of ψ (Σ_t ψ_t = ψ(log π(y|x), log π_ref(y|x)) for token-additive regularizers), r_θ is the
reward model's score, c the reward clip and s the reward scale (1/β for the regularizers that
have no β of their own, as the PM paper's Section 6 does: r = r_θ/β).

Choices documented here:

* ``cpm`` defaults to ``level="token"`` in the trainer: the indicator π_ref ≥ α is applied per
  token on π_ref(y_t | x, y_<t), as the PM paper's implementation does.  Definition 4.1 puts
  the indicator on the *sequence* probability π_ref(y|x); both coincide for one-token
  responses, and ``regularizer_params: {level: sequence}`` selects Definition 4.1 exactly.
* ``multi_rkl``: ψ_t = −β Σ_i α_i (log π(y_t|·) − log π_ref,i(y_t|·)) with the *unnormalized*
  geometric mixture: summed over tokens it is −β Σ_i α_i log(π(y|x)/π_ref,i(y|x)), the
  sequence-level objective of the multi-reference paper (eq. 17) whose optimum is the
  generalized escort tilt (Theorem 5.2).  Re-normalizing the mixture per token would subtract
  β log Σ_v Π_i π_ref,i(v|·)^{α_i} at each step, which depends on the prefix and so changes the
  objective (see :func:`renormalized_mixture_token_reward`, kept only to show the difference).
* Regularizers whose ψ is not affine in log π (``reward_gradient_exact`` False: f-divergences,
  multi-reference forward KL, PM with C2 ≠ 0) give a biased policy gradient when ψ is used as a
  sampled reward.  The trainer refuses them unless ``regularizer_mode: loss``, which adds the
  pathwise term E_π[∂ψ/∂ log π · ∇ log π] as a loss (:func:`pathwise_regularizer_loss`), so
  that reward + loss is the exact gradient of E_π[ψ].
"""
from __future__ import annotations

import inspect
from typing import Any

REGULARIZER_MODES = ("reward", "loss")


class RegularizerConfigError(ValueError):
    """A regularizer name/parameters/mode combination the trainer cannot use."""


def build_regularizer(name: str, params: dict[str, Any] | None = None, beta: float | None = None):
    """``(regularizer, reward_scale)`` from a config.

    ``beta`` goes to the regularizer when its factory takes one (kl, multi_rkl, fdiv,
    multi_fkl); otherwise (pm, cpm, maxent) the reward is scaled by 1/β instead (PM paper §6,
    r = r_θ/β; the same optimum as r + β ψ).  ``cpm`` defaults to the token-level indicator.
    """
    from prefmatch.theory import regularizers as R

    params = dict(params or {})
    factories = R.FACTORIES
    factory = factories.get(name)
    if factory is None:
        raise RegularizerConfigError(f"regularizer: must be one of {', '.join(sorted(factories))}, got {name!r}")
    takes = set(inspect.signature(factory).parameters)
    scale = 1.0
    if beta is not None:
        if "beta" in takes:
            params.setdefault("beta", beta)
        else:
            if not beta > 0:
                raise RegularizerConfigError(f"beta: must be > 0, got {beta!r}")
            scale = 1.0 / beta
    if name == "cpm":
        params.setdefault("level", "token")
    try:
        reg = R.get(name, **params)
    except (TypeError, ValueError) as e:
        raise RegularizerConfigError(f"regularizer_params: {e}") from None
    return reg, scale


def check_mode(reg, mode: str) -> None:
    """Refuse ψ-as-reward for a regularizer whose sampled-reward gradient is not exact."""
    if mode not in REGULARIZER_MODES:
        raise RegularizerConfigError(f"regularizer_mode: must be one of {', '.join(REGULARIZER_MODES)}, got {mode!r}")
    if mode == "reward" and not reg.reward_gradient_exact:
        raise RegularizerConfigError(
            f"regularizer {reg.name!r} is not affine in log π: as a PPO reward its policy gradient is "
            "biased; set regularizer_mode: loss to add its exact (pathwise) gradient term"
        )


def regularizer_token_terms(reg, logp_t, ref_logp_t, mask_t):
    """ψ_t [B, T]: the regularizer's per-token reward (theory ``token_reward``).

    For a regularizer that is not additive over tokens, ψ of the whole sequence is paid at the
    last response token (sequence log-probs are Σ_t of the token log-probs).
    """
    if getattr(reg, "token_additive", True):
        try:
            return reg.token_reward(logp_t, ref_logp_t, mask_t)
        except ValueError:
            if reg.reward_gradient_exact:
                raise
    import torch

    from prefmatch.theory._array import last_token_mask

    m = mask_t.to(logp_t.dtype)
    seq_logp = (logp_t * m).sum(-1)
    seq_ref = None if ref_logp_t is None else (ref_logp_t * m).sum(-1)
    psi = reg.psi(seq_logp, seq_ref)
    return torch.where(m > 0, psi[..., None] * last_token_mask(m), torch.zeros_like(logp_t))


def sequence_psi(reg, logp_t, ref_logp_t, mask_t):
    """ψ(log π(y|x), log π_ref(y|x)) per sequence from token log-probs (the theory ``psi``)."""
    m = mask_t.to(logp_t.dtype)
    seq_ref = None if ref_logp_t is None else (ref_logp_t * m).sum(-1)
    return reg.psi((logp_t * m).sum(-1), seq_ref)


def ppo_token_rewards(reg, score, logp_t, ref_logp_t, mask_t, reward_scale: float = 1.0,
                      reward_clip: float | None = None):
    """``(rewards [B,T], psi_t [B,T])``: ψ_t plus the clipped, scaled score at the last token."""
    import torch

    from prefmatch.theory._array import last_token_mask

    psi_t = regularizer_token_terms(reg, logp_t, ref_logp_t, mask_t)
    s = score.to(logp_t.dtype)
    if reward_clip is not None and reward_clip > 0:
        s = torch.clamp(s, -reward_clip, reward_clip)
    last = last_token_mask(mask_t.to(logp_t.dtype))
    return psi_t + reward_scale * s[:, None] * last, psi_t


def pathwise_regularizer_loss(reg, logp_t, ref_logp_t, mask_t):
    r"""−E[ψ(log π_θ(y|x), ·)] with gradients through log π_θ only (the pathwise part).

    ∇_θ E_{y∼π_θ}[ψ(π_θ(y), y)] = E[ψ ∇log π_θ] (the score part: ψ as reward) +
    E[∂ψ/∂log π · ∇log π_θ] (this term).  Minimise it alongside the PPO loss in ``loss`` mode.
    """
    return -sequence_psi(reg, logp_t, ref_logp_t, mask_t).mean()


def renormalized_mixture_token_reward(weights, beta, logp_t, ref_logits_t, tokens_t, mask_t):
    r"""The per-token multi-reference KL *with a per-token renormalized* geometric mixture.

    ψ_t = −β (log π(y_t|·) − log p̂(y_t|·)) with p̂(·|prefix) ∝ Π_i π_ref,i(·|prefix)^{α_i}
    normalised over the vocabulary at every step.  This is what some public code does; it is
    not the paper's objective (see module docstring) and is kept only for the comparison test.
    ``ref_logits_t`` is [K, B, T, V] (log-probs of each reference over the vocabulary).
    """
    import torch

    from prefmatch.theory.distributions import generalized_escort

    log_mix, _ = generalized_escort(ref_logits_t, weights)  # Π_i π_ref,i^{α_i} normalised over V
    tok = torch.gather(log_mix, -1, tokens_t[..., None]).squeeze(-1)
    m = mask_t.to(logp_t.dtype)
    return -beta * (logp_t - tok) * m
