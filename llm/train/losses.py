r"""Pure tensor functions of the three stages, each with its equation (rlax style).

Shapes: B sequences, T response positions, V vocabulary; ``mask`` is 1 on response tokens.
"""
from __future__ import annotations

from prefmatch.llm.models import logprobs_from_logits
from prefmatch.theory.distributions import log_sigmoid


def entropy_from_logits(logits):
    """H_t = −Σ_v π(v|·) log π(v|·), shape [B, T]."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x, mask, dim=None):
    """Σ x·m / Σ m (over ``dim`` or everything)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_sum_over(x, mask, normalizer=None):
    """Σ x·m / normalizer, or the masked mean Σ x·m / Σ m when ``normalizer`` is None.

    A loss's normalizer is part of the objective it optimizes: Σ m (the tokens of the minibatch)
    depends on which responses share the minibatch, and so weights a response's gradient by its
    length's company (the length bias of Dr. GRPO, Liu et al. 2025); a constant normalizer (the
    PPO trainer's: minibatch size × max_response_len) scales every response alike."""
    if normalizer is None:
        return masked_mean(x, mask)
    return (x * mask.to(x.dtype)).sum() / normalizer


def masked_whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8, return_scale: bool = False):
    """(x − mean)/std over the masked entries (advantage normalisation).

    With ``return_scale`` also returns 1/std (detached): the factor by which whitening scales the
    score-function gradient, which the pathwise regularizer term must share."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    scale = (var + eps).rsqrt()
    out = (x - mean) * scale
    if not shift_mean:
        out = out + mean
    out = out * mask.to(x.dtype)
    return (out, scale.detach()) if return_scale else out


def batch_moments(x, mask):
    """``(mean, second moment, 1)`` of the masked entries of ``x``: one rollout's term of :func:`fold_moments`."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1)
    return float((x * m).sum() / n), float((x * x * m).sum() / n), 1.0


def fold_moments(moments, fresh, decay: float = 0.9):
    r"""Running ``(mean, second moment, weight)``: ``fresh`` (:func:`batch_moments`) folded into
    ``moments`` by an exponential moving average (weight = Σ decay^k, so that
    :func:`whitening_from_moments` is bias-corrected like Adam's); ``moments`` None starts it.

    The PPO trainer whitens a rollout's advantages with the moments of the *earlier* rollouts: a
    scale computed from the rollout itself is correlated with its rare, large per-token terms (k3's
    e^{log ρ}), which biases the update's expectation; a scale fixed before the rollout is drawn is
    only a step size."""
    if moments is None:
        return tuple(fresh)
    return tuple(decay * old + new for old, new in zip(moments, fresh))


def whitening_from_moments(moments, eps: float = 1e-8):
    """``(mean, 1/std)`` of the running ``moments`` of :func:`fold_moments`."""
    a, b, w = moments
    mean = a / w
    var = max(b / w - mean * mean, 0.0)
    return mean, (var + eps) ** -0.5


def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    r"""Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    δ_t = r_t + γ V_{t+1} − V_t (V_{T} = 0 after the last token),
    A_t = Σ_{l≥0} (γλ)^l δ_{t+l},  returns R_t = A_t + V_t.  Rows are right-padded (mask 1…1 0…0).
    Returns ``(advantages, returns)``, zero where ``mask`` is 0.
    """
    import torch

    m = mask.to(values.dtype)
    T = rewards.shape[-1]
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] * m[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        next_m = m[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * next_m * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


def clipped_policy_loss(logp, old_logp, advantages, mask, clip: float = 0.2, normalizer=None):
    r"""PPO-clip (Schulman et al. 2017, eq. 7), as a loss:
    L = Σ_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)) / N, ρ_t = π_θ(y_t|·)/π_old(y_t|·), N the
    ``normalizer`` (default: the masked token count, a token mean; see :func:`masked_sum_over`).
    Returns ``(loss, clip_fraction, approx_kl)`` with approx_kl = E[(ρ − 1) − log ρ] (k3, token means)."""
    import torch

    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_sum_over(torch.maximum(loss1, loss2), mask, normalizer)
    with torch.no_grad():
        clipfrac = masked_mean((loss2 > loss1).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def clipped_value_loss(values, old_values, returns, mask, clip: float = 0.2, normalizer=None):
    r"""½ Σ_t max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, ±ε) − R_t)²) / N (PPO2 value clipping;
    N as in :func:`clipped_policy_loss`)."""
    import torch

    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_sum_over(torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2), mask, normalizer)


def explained_variance(values, returns, mask):
    """1 − Var[R − V]/Var[R] over masked entries (1: perfect critic, ≤ 0: useless)."""
    r_mean = masked_mean(returns, mask)
    var_r = masked_mean((returns - r_mean) ** 2, mask)
    diff = returns - values
    d_mean = masked_mean(diff, mask)
    var_d = masked_mean((diff - d_mean) ** 2, mask)
    return 1.0 - var_d / var_r.clamp(min=1e-12)


def bradley_terry_loss(r_chosen, r_rejected):
    r"""Reward-model loss, PM paper eq. (2.2): −E log σ(r(x, y_w) − r(x, y_l)) (BT negative log-likelihood)."""
    return -log_sigmoid(r_chosen - r_rejected).mean()


def response_nll(logits, input_ids, response_mask):
    """SFT loss: −mean over response tokens of log π(y_t | x, y_<t) (prompt tokens not trained)."""
    logp = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])
    return -masked_mean(logp, response_mask[:, 1:])
