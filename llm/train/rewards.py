r"""Regularizer → per-token PPO rewards and the pathwise loss term.  No ψ is written here:
every formula is the theory layer's (:mod:`prefmatch.theory.regularizers`); this module wires
tensors to it.

For one sampled response y = (y_1..y_T) to prompt x, PPO maximises the return Σ_t r_t with

.. math::  r_t = \psi_t + \mathbb 1[t = T]\; \mathrm{clip}(r_\theta(x, y), \pm c),

where ψ_t = ``reg.token_reward`` is the per-token share of ψ (theory layer; a regularizer that is
not additive over tokens pays ψ of the whole response at its last token),
r_θ the task reward (reward model or rule) and c the reward clip.  β is the regularizer's own
coefficient (E_π[r] − β·D); the task reward is never rescaled.

Where ψ goes (the ``grad.*`` checks of :mod:`prefmatch.theory.checks.grad` prove each row):

* ``regularizer_mode: reward`` pays ψ_t as a reward only (score-function part).  Exact when the
  per-token terms are affine in log π (``reg.reward_gradient_exact``: KL with k1, PM for every
  C2 — its C2/π term is a constant of J and is not paid —, cPM, max-ent, multi-reference
  reverse KL, f = kl).
* ``regularizer_mode: loss`` adds the pathwise part: the same ψ_t evaluated on the current
  policy, differentiated through log π (:func:`pathwise_regularizer_loss`) — where it is not zero
  in expectation: for ψ affine in log π it is −a·E_π[∇log π] = 0, and ``loss`` is ``reward``.  Reward + pathwise
  is the exact gradient of E_π[Σ_t ψ_t]; exact for the objective when E_π[Σ_t ψ_t] = E_π[ψ]
  (``reg.loss_gradient_exact``: everything but KL's k2).  The pathwise term is put on the PPO
  loss's scale: divided by the same token count (the loss is a token mean) and by the same
  advantage-whitening scale.
* ``auto`` (the default) picks ``reward`` where it is exact and ``loss`` otherwise.

Sequence-level cPM (Definition 4.1) pays −β log π(y_t|·) per token and β·b(y) once at the last
token (b depends on the whole response); token-level cPM (the paper's code) is a different
objective, whose optimum over whole responses is ``reg.sequence_optimal_logp``.

``multi_rkl``: ψ_t = −β Σ_i α_i (log π(y_t|·) − log π_ref,i(y_t|·)) with the *unnormalized*
geometric mixture: summed over tokens it is the sequence-level objective of the multi-reference
paper (eq. 17).  Re-normalizing the mixture per token changes the objective (see
:func:`renormalized_mixture_token_reward`, kept only to show the difference).
"""
from __future__ import annotations

from typing import Any

from prefmatch.theory import regularizers
from prefmatch.theory._array import last_token_mask
from prefmatch.theory.distributions import generalized_escort

REGULARIZER_MODES = ("auto", "reward", "loss")


class RegularizerConfigError(ValueError):
    """A regularizer name/parameters/mode combination the trainer cannot use."""

def build_regularizer(name: str, params: dict[str, Any] | None = None, beta: float | None = None):
    """The regularizer object of a trainer config.

    ``beta`` (the config's β) goes into the regularizer for every regularizer; a
    ``params["beta"]`` that differs from it is refused (one β).  ``cpm`` defaults to the
    token-level indicator (the paper's code).
    """
    params = dict(params or {})
    if name not in regularizers.FACTORIES:
        raise RegularizerConfigError(f"regularizer: must be one of {', '.join(sorted(regularizers.FACTORIES))}, got {name!r}")
    if beta is not None:
        if "beta" in params and params["beta"] != beta:
            raise RegularizerConfigError(
                f"regularizer_params.beta: {params['beta']!r} conflicts with beta: {beta!r}; "
                "set β once, with beta (--beta)")
        params["beta"] = beta
    if name == "cpm":
        params.setdefault("level", "token")
    try:
        return regularizers.get(name, **params)
    except (TypeError, ValueError) as e:
        raise RegularizerConfigError(f"regularizer_params: {e}") from None


def resolve_mode(reg, mode: str) -> str:
    """The placement (``reward`` or ``loss``) for ``mode``; refuses one that is not exact."""
    if mode not in REGULARIZER_MODES:
        raise RegularizerConfigError(f"regularizer_mode: must be one of {', '.join(REGULARIZER_MODES)}, got {mode!r}")
    what = _describe(reg)
    if not reg.loss_gradient_exact:
        raise RegularizerConfigError(
            f"regularizer_params.estimator: {what} reaches the wrong optimum in every placement "
            "(E_π[k2] is not the KL); use estimator k1 (reward or loss) or k3 (loss)")
    if reg.reward_gradient_exact:
        # the pathwise part of ψ affine in log π is −a·E_π[∇log π] = 0: computing it (``loss``) would
        # add only noise, and a bias O(1/B) through the batch's whitening scale (seen in the battery)
        return "reward"
    if mode == "reward":
        raise RegularizerConfigError(
            f"regularizer_mode: {what} as a reward only gives a biased policy gradient; "
            "use regularizer_mode: loss (or auto), which adds its pathwise gradient term")
    return "loss"


def _describe(reg) -> str:
    est = getattr(reg, "estimator", None)
    f = getattr(reg, "f", None)
    return reg.name + (f" with estimator {est}" if est else "") + (f" with f={f}" if f else "")


def sequence_psi(reg, logp_t, ref_logp_t, mask_t):
    """ψ(log π(y|x), log π_ref(y|x)) per sequence from token log-probs (the theory ``psi``)."""
    m = mask_t.to(logp_t.dtype)
    seq_ref = None if ref_logp_t is None else (ref_logp_t * m).sum(-1)
    return reg.psi((logp_t * m).sum(-1), seq_ref)


def ppo_token_rewards(reg, score, logp_t, ref_logp_t, mask_t, reward_clip: float | None = None):
    """``(rewards [B,T], psi_t [B,T])``: ψ_t plus the clipped task score at the last token."""
    import torch

    psi_t = reg.token_reward(logp_t, ref_logp_t, mask_t)
    s = score.to(logp_t.dtype)
    if reward_clip is not None and reward_clip > 0:
        s = torch.clamp(s, -reward_clip, reward_clip)
    last = last_token_mask(mask_t.to(logp_t.dtype))
    return psi_t + s[:, None] * last, psi_t


def pathwise_regularizer_loss(reg, logp_t, ref_logp_t, mask_t, normalizer=None, scale=1.0):
    r"""The pathwise part of ∇E_π[Σ_t ψ_t], as a loss to minimise: −scale·Σ_{b,t} ψ_t(log π_θ) / normalizer.

    ∇_θ E_{y∼π_θ}[Σ_t ψ_t] = E[Σ_t ∇log π_θ(y_t|·) Σ_{t'≥t} ψ_{t'}] (the score part: ψ_t as a
    reward) + E[Σ_t ∂ψ_t/∂log π_θ · ∇log π_θ] (this term).  ``normalizer`` is the PPO loss's:
    the number of response tokens of the minibatch (default), and ``scale`` the advantage
    whitening factor, so that both parts stand on one scale.
    """
    m = mask_t.to(logp_t.dtype)
    total = reg.token_reward(logp_t, ref_logp_t, mask_t).sum()
    if normalizer is None:
        normalizer = m.sum().clamp(min=1)
    return -scale * total / normalizer


def renormalized_mixture_token_reward(weights, beta, logp_t, ref_logits_t, tokens_t, mask_t):
    r"""The per-token multi-reference KL *with a per-token renormalized* geometric mixture.

    ψ_t = −β (log π(y_t|·) − log p̂(y_t|·)) with p̂(·|prefix) ∝ Π_i π_ref,i(·|prefix)^{α_i}
    normalised over the vocabulary at every step.  This is what some public code does; it is
    not the paper's objective (see module docstring) and is kept only for the comparison test.
    ``ref_logits_t`` is [K, B, T, V] (log-probs of each reference over the vocabulary).
    """
    import torch

    log_mix, _ = generalized_escort(ref_logits_t, weights)  # Π_i π_ref,i^{α_i} normalised over V
    tok = torch.gather(log_mix, -1, tokens_t[..., None]).squeeze(-1)
    m = mask_t.to(logp_t.dtype)
    return -beta * (logp_t - tok) * m
