r"""Distributions of both papers, in log space, on numpy arrays or torch tensors.

* Bradley–Terry / Plackett–Luce preferences (PM paper eqs. 2.1–2.2, Definition 3.2);
* pairwise preferences of a policy, π(y1)/(π(y1)+π(y2)) (eq. 5.2, Section 6.1);
* the PM divergence (Section 6.1): KL between the policy's and the reward model's pairwise
  preference on a pair of responses;
* escort P^λ/ΣP^λ, generalized escort Π_i P_i^{α_i}/F_α and arithmetic mixture Σ α_i P_i
  (second paper, Definition 3.1, eqs. 21–22 and 30).
"""
from __future__ import annotations

import math

import numpy as np

from prefmatch.theory._array import asarray, log_softmax, logsumexp, namespace, quiet, weighted_sum

__all__ = [
    "plackett_luce_logp",
    "bradley_terry",
    "log_sigmoid",
    "pairwise_preference",
    "bernoulli_kl",
    "pm_divergence",
    "kl_divergence",
    "escort",
    "generalized_escort",
    "arithmetic_mixture",
]


def plackett_luce_logp(r):
    """log of the PL (softmax) distribution e^{r_y}/Σ e^{r_y'} (Definition 3.2, eq. 3.2)."""
    return log_softmax(r)


def log_sigmoid(z):
    """log σ(z), exact for |z| up to float range: −softplus(−z)."""
    xp = namespace(z)
    return -xp.logaddexp(xp.zeros_like(z), -z)


def bradley_terry(r1, r2):
    """P(y1 ≻ y2) = σ(r1 − r2) (PM paper eq. 2.1)."""
    xp = namespace(r1, r2)
    return xp.exp(log_sigmoid(r1 - r2))


def pairwise_preference(logp1, logp2):
    """A policy's preference for y1 over y2: π(y1)/(π(y1) + π(y2)) = σ(log π(y1) − log π(y2))."""
    xp = namespace(logp1, logp2)
    return xp.exp(log_sigmoid(logp1 - logp2))


def bernoulli_kl(logit_p, logit_q):
    r"""KL(Bern(σ(a)) ‖ Bern(σ(b))) from logits a, b, computed in log space.

    = σ(a)(log σ(a) − log σ(b)) + σ(−a)(log σ(−a) − log σ(−b)); finite for finite logits.
    """
    xp = namespace(logit_p, logit_q)
    lp, lq = log_sigmoid(logit_p), log_sigmoid(logit_q)
    lpn, lqn = log_sigmoid(-logit_p), log_sigmoid(-logit_q)
    return xp.exp(lp) * (lp - lq) + xp.exp(lpn) * (lpn - lqn)


def pm_divergence(logp1, logp2, r1, r2):
    r"""Instance PM divergence (PM paper, Section 6.1).

    KL between the policy's pairwise preference p_llm(y1) = σ(log π(y1) − log π(y2)) and the
    reward model's p_reward(y1) = σ(r(y1) − r(y2)), elementwise over pairs.
    """
    return bernoulli_kl(logp1 - logp2, r1 - r2)


def pm_squared_error(logp1, logp2, r1, r2):
    r"""The PM paper's authors' evaluation metric per pair (their code, no β): the squared gap
    ((r(y1) − r(y2)) − (log π(y1) − log π(y2)))² between the reward margin and the policy's
    log-probability margin; zero exactly where π ∝ exp(r) on the pair (preference matching)."""
    return ((r1 - r2) - (logp1 - logp2)) ** 2


def kl_divergence(logp, logq, axis: int = -1):
    """KL(P‖Q) = Σ P log(P/Q) with 0 log 0 = 0; +inf where P > 0 = Q."""
    xp = namespace(logp, logq)
    with quiet():
        p = xp.exp(logp)
        terms = xp.where(p > 0, p * (logp - logq), 0.0)
        return xp.sum(terms, axis=axis)


def escort(logp, lam: float):
    """Escort distribution P^λ/Σ P^λ (second paper, Definition 3.1), λ ∈ (0, 1]... any λ > 0."""
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    with quiet():
        return log_softmax(lam * logp)


def generalized_escort(ref_logps, weights):
    r"""Generalized escort π̂_α ∝ Π_i π_i^{α_i} and its normalizer (second paper, eqs. 21–22).

    ``ref_logps`` has a leading axis of K references.  Returns (log π̂_α, log F_α) with
    F_α = Σ_y Π_i π_i(y)^{α_i} ≤ 1 (Hölder).  A reference with probability 0 at y (weight > 0)
    gives π̂_α(y) = 0: the support is the intersection of the supports.
    """
    ref_logps = asarray(ref_logps)
    with quiet():
        g = weighted_sum(weights, ref_logps)
        log_f = logsumexp(g)
        if bool(namespace(log_f).any(log_f == -math.inf)):
            raise ValueError("the references' supports do not intersect: the generalized escort is undefined")
        return g - log_f[..., None], log_f


def arithmetic_mixture(ref_logps, weights, out=None, work=None):
    """log P̄_α = log Σ_i α_i π_i (second paper, eq. 30); support = union of the supports.

    ``out`` and ``work`` (numpy buffers of one reference's shape; the row-blocked solvers) make
    it go through probabilities instead — K exps, one log, no temporaries — and fall back to
    the logsumexp form when the mixture falls below 1e-290 anywhere (so that tiny reference
    probabilities stay exact in log space).
    """
    ref_logps = asarray(ref_logps)
    xp = namespace(ref_logps)
    with quiet():
        if out is not None and ref_logps.shape[1:] == out.shape:
            for i, wi in enumerate(weights):
                if i == 0:
                    np.multiply(np.exp(ref_logps[0], out=out), float(wi), out=out)
                else:
                    out += np.multiply(np.exp(ref_logps[i], out=work), float(wi), out=work)
            if out.min() >= 1e-290:
                return np.log(out, out=out)
        w = asarray(weights, like=ref_logps)
        logw = xp.reshape(xp.log(w), (w.shape[0],) + (1,) * (ref_logps.ndim - 1))
        res = logsumexp(logw + ref_logps, axis=0)
        if out is None:
            return res
        out[...] = res
        return out
