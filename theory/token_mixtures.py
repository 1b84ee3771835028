r"""Multi-reference RLHF as public code does it, against the paper's exact solutions.

On an enumerable token world (vocabulary V, responses of exactly T tokens, so V^T sequences) the
K references are autoregressive models: ``cond[t]`` has shape ``[K, V**t, V]``, the log-probability
of the next token given each prefix of length t (prefix index in base V, first token most
significant).  A sequence is then a "response" of the tabular theory and every sequence-level
object of the multi-reference paper is computed exactly.

What public code does (``mref.practice.*`` checks; docs page ``theory/multi_reference_practice``):

* **per-token geometric mixture** (the ``EnsembleModel`` of the public repository
  idanshen/multi_ref, ``ensemble_type="geometric"``): next-token log-probabilities
  Σ_i α_i log p_i(·|h), renormalized at every token when the ensemble is used as one reference.
  Its sequence law is q_geo(y) = Π_i p_i(y)^{α_i} / Π_t Z_t(y_{<t}) with
  Z_t(h) = Σ_v Π_i p_i(v|h)^{α_i} ≤ 1 (Hölder).  The paper's reverse-KL reference is the
  generalized escort π̂_α(y) = Π_i p_i(y)^{α_i}/F_α (Theorem 5.2): the two differ by the
  prefix-dependent factor Π_t Z_t(y_{<t}), and coincide iff that product is constant over sequences
  (length 1; references that differ only at the first token; identical references).
  Exactly, E_π r − β KL(π‖q_geo) = E_π[r + β D(y)] − β Σ_i α_i KL(π‖p_i) with the *disagreement
  bonus* D(y) = −Σ_t log Z_t(y_{<t}) ≥ 0: a PPO run with the per-token geometric ensemble as its
  reference optimizes the exact multi-reference objective for a reward that pays for visiting
  prefixes where the references disagree.
* **per-token arithmetic mixture** (``ensemble_type="arithmetic"``): next-token law
  Σ_i α_i p_i(·|h).  The sequence-level arithmetic mixture P̄_α = Σ_i α_i p_i (the paper's
  forward-KL reference, Theorem 6.2) has next-token law Σ_i w_i(h) p_i(·|h) with the *posterior*
  weights w_i(h) ∝ α_i p_i(h) (Bayes); the two coincide iff w(h) = α wherever the references'
  next-token laws differ (length 1; references that differ at a single position only).
* **MRPO** (Le et al. 2024, multi-reference DPO, K = 2): the combined reference
  log p₁ + log p₂ − log(α p₁ + (1−α) p₂) is the weighted *harmonic* mean
  ((1−α)/p₁ + α/p₂)^{-1} — note the swap: MRPO's α weighs p₂ — so (unclipped) its DPO loss
  optimizes the lower-bound surrogate of the paper's eq. (18) with weights (1−α, α), whose
  maximizer ∝ H e^{r/β} is not the escort optimum.  Its clipping replaces log p₂ by
  clip(log p₂, (1+η) log p₁, (1−η) log p₁): η = 0 is DPO with p₁ alone, large η the unclipped
  surrogate; with the clip active the combined reference can exceed Π p_i^{w_i}, so the clipped
  surrogate is not a lower bound of the multi-reference objective.

Package β throughout (objective E_π[r] − β·D).  Every objective and optimum is the theory layer's
regularizer object (:func:`prefmatch.theory.regularizers.multi_rkl` / ``multi_fkl``, one reference
= weights ``(1.0,)``); this module only builds the references.
"""
from __future__ import annotations

import math

import numpy as np

from prefmatch.theory import regularizers
from prefmatch.theory._array import logsumexp, quiet
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort, kl_divergence

__all__ = [
    "random_token_references",
    "check_token_references",
    "expand_prefix",
    "sequence_logps",
    "prefix_logps",
    "per_token_geometric",
    "per_token_arithmetic",
    "escort_conditionals",
    "mixture_conditionals",
    "conditionals_to_sequence",
    "disagreement_bonus",
    "mrpo_reference_logp",
    "single_reference_optimum",
    "tv",
    "compare",
    "mrpo_compare",
]


# --------------------------------------------------------------------------- token worlds
def _log_softmax(z, axis=-1):
    return z - logsumexp(z, axis=axis, keepdims=True)


def check_token_references(cond) -> tuple[int, int, int]:
    """Validate ``cond`` (list of T arrays [K, V**t, V] of normalized log-probabilities); (K, V, T)."""
    if not isinstance(cond, (list, tuple)) or len(cond) == 0:
        raise ValueError("cond must be a non-empty list of per-position arrays [K, V**t, V]")
    k, _, v = np.shape(cond[0])
    for t, c in enumerate(cond):
        c = np.asarray(c)
        if c.shape != (k, v ** t, v):
            raise ValueError(f"cond[{t}] must have shape {(k, v ** t, v)}, got {c.shape}")
        with quiet():
            norm = np.exp(logsumexp(c, axis=-1))
        if not np.allclose(norm, 1.0, atol=1e-9):
            raise ValueError(f"cond[{t}] rows must be normalized log-probabilities (max |Σ p − 1| = {np.max(np.abs(norm - 1)):.2e})")
    return k, v, len(cond)


def random_token_references(rng, k: int, vocab: int, length: int, disagreement: float = 1.0,
                            differ_at=None, concentration: float = 1.0):
    """K autoregressive references on V^T sequences: logits base + s·noise_i at every prefix.

    ``disagreement`` s ≥ 0 scales how far the references are from a common base model (s = 0:
    identical references).  ``differ_at`` (positions t, 0-based; default all) restricts where the
    references may differ: elsewhere every reference has the base's next-token law.
    ``concentration`` scales the base logits (larger: peakier references).
    """
    if k < 1 or vocab < 2 or length < 1:
        raise ValueError(f"need k >= 1, vocab >= 2, length >= 1; got k={k}, vocab={vocab}, length={length}")
    if not (disagreement >= 0 and math.isfinite(disagreement)):
        raise ValueError(f"disagreement must be a finite number >= 0, got {disagreement!r}")
    where = set(range(length)) if differ_at is None else set(differ_at)
    cond = []
    for t in range(length):
        base = concentration * rng.normal(size=(1, vocab ** t, vocab))
        noise = rng.normal(size=(k, vocab ** t, vocab))
        logits = base + (disagreement * noise if t in where else 0.0 * noise)
        cond.append(_log_softmax(logits))
    return cond


def expand_prefix(x, t: int, length: int, vocab: int):
    """Values indexed by prefixes of length t ([..., V**t]) as values per sequence ([..., V**T])."""
    return np.repeat(np.asarray(x), vocab ** (length - t), axis=-1)


def _per_sequence(c_t, t, length, vocab):
    """Next-token values [..., V**t, V] at position t, read off along every sequence: [..., V**T]."""
    flat = np.reshape(c_t, np.shape(c_t)[:-2] + (vocab ** (t + 1),))
    return expand_prefix(flat, t + 1, length, vocab)


def conditionals_to_sequence(cond_t_list):
    """Σ_t log q(y_t|y_<t) for per-position conditionals [..., V**t, V] (any leading axes)."""
    length = len(cond_t_list)
    vocab = np.shape(cond_t_list[0])[-1]
    return sum(_per_sequence(c, t, length, vocab) for t, c in enumerate(cond_t_list))


def sequence_logps(cond):
    """log p_i(y) for every reference and sequence: [K, V**T]."""
    return conditionals_to_sequence([np.asarray(c) for c in cond])


def prefix_logps(cond, t: int):
    """log p_i(h) for every prefix h of length t: [K, V**t] (t = 0 gives zeros)."""
    if t == 0:
        return np.zeros((np.shape(cond[0])[0], 1))
    return conditionals_to_sequence([np.asarray(c) for c in cond[:t]])


# --------------------------------------------------------------------------- per-token mixtures
def per_token_geometric(cond, weights):
    """The per-token geometric ensemble: (conditionals [V**t, V] per t, log Z_t [V**t] per t).

    log q(v|h) = Σ_i α_i log p_i(v|h) − log Z_t(h), Z_t(h) = Σ_v Π_i p_i(v|h)^{α_i} ≤ 1.
    """
    w = np.asarray(weights, dtype=np.float64)
    conds, log_z = [], []
    with quiet():
        for c in cond:
            g = np.tensordot(w, np.asarray(c), axes=1)
            lz = logsumexp(g, axis=-1)
            conds.append(g - lz[..., None])
            log_z.append(lz)
    return conds, log_z


def per_token_arithmetic(cond, weights):
    """The per-token arithmetic ensemble: conditionals log Σ_i α_i p_i(v|h), one [V**t, V] per t."""
    w = np.asarray(weights, dtype=np.float64)
    with quiet():
        return [arithmetic_mixture(np.asarray(c), w) for c in cond]


def escort_conditionals(cond, weights):
    r"""Next-token laws of the sequence-level escort π̂_α by backward recursion (and log F_α).

    With g_t(v|h) = Σ_i α_i log p_i(v|h) and W_T ≡ 0, W_t(h) = log Σ_v e^{g_t(v|h) + W_{t+1}(hv)}:
    π̂_α(v|h) = e^{g_t(v|h) + W_{t+1}(hv) − W_t(h)} and W_0 = log F_α.  The per-token geometric
    ensemble is this without the look-ahead W_{t+1}(hv): they agree iff W_{t+1}(h·) is constant
    in v at every prefix.
    """
    w = np.asarray(weights, dtype=np.float64)
    length = len(cond)
    vocab = np.shape(cond[0])[-1]
    nxt = np.zeros(vocab ** length)
    out = [None] * length
    with quiet():
        for t in range(length - 1, -1, -1):
            g = np.tensordot(w, np.asarray(cond[t]), axes=1)  # [V**t, V]
            u = g + nxt.reshape(vocab ** t, vocab)
            wt = logsumexp(u, axis=-1)
            out[t] = u - wt[..., None]
            nxt = wt
    return out, float(nxt[0])


def mixture_conditionals(cond, weights):
    """Next-token laws of the sequence-level mixture P̄_α = Σ α_i p_i: Σ_i w_i(h) p_i(·|h), w_i(h) ∝ α_i p_i(h)."""
    w = np.asarray(weights, dtype=np.float64)
    out = []
    with quiet():
        for t, c in enumerate(cond):
            logpost = np.log(w)[:, None] + prefix_logps(cond, t)  # [K, V**t]
            logpost = logpost - logsumexp(logpost, axis=0)[None]
            out.append(logsumexp(logpost[..., None] + np.asarray(c), axis=0))
    return out


def disagreement_bonus(cond, weights):
    """D(y) = −Σ_t log Z_t(y_<t) ≥ 0 per sequence [V**T]: what the per-token geometric ensemble adds to r/β."""
    _, log_z = per_token_geometric(cond, weights)
    length = len(cond)
    vocab = np.shape(cond[0])[-1]
    return -sum(expand_prefix(lz, t, length, vocab) for t, lz in enumerate(log_z))


# --------------------------------------------------------------------------- MRPO
def mrpo_reference_logp(logp1, logp2, alpha: float, eta=None):
    r"""MRPO's combined reference log p₁ + log p̃₂ − log(α p₁ + (1−α) p̃₂) (unnormalized).

    p̃₂ = p₂ without clipping (``eta=None``); with ``eta`` ≥ 0,
    log p̃₂ = clip(log p₂, (1+η) log p₁, (1−η) log p₁) (log p₁ ≤ 0).  Equals the weighted
    harmonic mean ((1−α)/p₁ + α/p̃₂)^{-1}.
    """
    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    l1, l2 = np.asarray(logp1, dtype=np.float64), np.asarray(logp2, dtype=np.float64)
    if np.any(l1 > 1e-12) or np.any(l2 > 1e-12):
        raise ValueError("logp1 and logp2 must be log-probabilities (<= 0)")
    if eta is not None:
        e = float(eta)
        if not (e >= 0 and math.isfinite(e)):
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        l2 = np.clip(l2, (1 + e) * l1, (1 - e) * l1)
    with quiet():
        return l1 + l2 - np.logaddexp(math.log(a) + l1, math.log1p(-a) + l2)


# --------------------------------------------------------------------------- comparisons
def tv(logp, logq) -> float:
    """Total variation ½ Σ |p − q|."""
    with quiet():
        return 0.5 * float(np.sum(np.abs(np.exp(logp) - np.exp(logq))))


def single_reference_optimum(r, ref_logp, beta: float, kind: str = "rkl"):
    """log of the optimum with one (possibly unnormalized) reference: ∝ q e^{r/β} ("rkl") or the λ-form ("fkl")."""
    reg = (regularizers.multi_rkl if kind == "rkl" else regularizers.multi_fkl)(weights=(1.0,), beta=beta)
    ref = np.asarray(ref_logp, dtype=np.float64)
    if kind == "fkl":
        ref = ref - logsumexp(ref)
    return reg.optimal_logp(r, ref[None])


def compare(cond, weights, r, beta: float) -> dict:
    """Per-token ensembles against the paper's sequence-level references and optima.

    Returns the references' distances (TV, KL(q‖exact)) and the objective gaps: the exact
    multi-reference optimum's value minus the value (same objective) of the policy a trainer reaches
    with the per-token ensemble as its single reference — reverse KL (PPO with the geometric
    ensemble, Algorithm 1) and forward KL (Algorithm 2 with the arithmetic ensemble) — plus
    β KL(π_q‖π*), which equals the reverse-KL gap (Gibbs).
    """
    w = tuple(float(x) for x in weights)
    L = sequence_logps(cond)
    refs = np.exp(L)
    log_hat, _ = generalized_escort(L, w)
    log_bar = arithmetic_mixture(L, np.asarray(w))
    geo_c, _ = per_token_geometric(cond, w)
    log_geo = conditionals_to_sequence(geo_c)
    log_ari = conditionals_to_sequence(per_token_arithmetic(cond, w))
    rkl = regularizers.multi_rkl(weights=w, beta=beta)
    fkl = regularizers.multi_fkl(weights=w, beta=beta)
    lp_star = rkl.optimal_logp(r, L)
    lp_geo = single_reference_optimum(r, log_geo, beta, "rkl")
    lpf_star = fkl.optimal_logp(r, L)
    lpf_ari = single_reference_optimum(r, log_ari, beta, "fkl")
    v_r, v_f = float(rkl.optimal_value(r, L)), float(fkl.optimal_value(r, L))
    return {
        "tv_geometric": tv(log_geo, log_hat),
        "kl_geometric": float(kl_divergence(log_geo, log_hat)),
        "tv_arithmetic": tv(log_ari, log_bar),
        "kl_arithmetic": float(kl_divergence(log_ari, log_bar)),
        "rkl_gap": v_r - float(rkl.objective(np.exp(lp_geo), r, refs)),
        "rkl_gap_kl_form": beta * float(kl_divergence(lp_geo, lp_star)),
        "fkl_gap": v_f - float(fkl.objective(np.exp(lpf_ari), r, refs)),
        "tv_policy_rkl": tv(lp_geo, lp_star),
        "tv_policy_fkl": tv(lpf_ari, lpf_star),
    }


def mrpo_compare(logp1, logp2, alpha: float, r, beta: float, eta=None) -> dict:
    """MRPO's optimum ∝ H e^{r/β} against the escort optimum of the weights (1−α, α) it bounds."""
    L = np.stack([np.asarray(logp1, float), np.asarray(logp2, float)])
    w = (1.0 - float(alpha), float(alpha))
    rkl = regularizers.multi_rkl(weights=w, beta=beta)
    log_h = mrpo_reference_logp(logp1, logp2, alpha, eta)
    lp_m = single_reference_optimum(r, log_h, beta, "rkl")
    lp_star = rkl.optimal_logp(r, L)
    return {
        "gap": float(rkl.optimal_value(r, L)) - float(rkl.objective(np.exp(lp_m), r, np.exp(L))),
        "tv_policy": tv(lp_m, lp_star),
        "log_h": log_h,
        "logp": lp_m,
        "logp_star": lp_star,
    }
