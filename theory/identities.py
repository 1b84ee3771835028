r"""Numeric identities of the multi-reference KL-RLHF paper, both sides as plain functions.

Source: Aminian, Asadi, Shenfeld, Mroueh (2025), "Theoretical Analysis of KL-regularized RLHF
with Multiple Reference Models" (arXiv 2502.01203); formulas as restated, with provenance tags, by the project's transcription of the paper's math
(the "spec"; docs/conventions.md explains the tags).

**β convention.** The package writes every objective as E_π[r] − β·D (PM paper, eq. 2.3), so
β here is β_pkg = 1/β_spec of the paper/spec (whose β, later γ, is an inverse temperature).
Each docstring gives the formula in the package convention and, after "spec:", in the paper's.
Nothing inside a formula converts; convert only when reading the paper.

Inputs: probabilities are passed as log-probabilities (−inf for 0); ``ref_logps`` has a
*leading* K axis ``[K, ..., n]`` like :class:`prefmatch.theory.regularizers.MultiRKL`; the last
axis indexes responses, other axes are a batch of prompts.  Functions reuse the regularizer
objects and the distributions module; they only assemble the *other side* of each identity,
so a check compares two independent routes to the same number.
"""
from __future__ import annotations

import math

import numpy as np

from prefmatch.theory import regularizers
from prefmatch.theory._array import asarray, logsumexp, namespace, quiet, weighted_sum
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort, kl_divergence

__all__ = [
    "weighted_reverse_kl",
    "weighted_forward_kl",
    "escort_identity_sides",
    "average_identity_sides",
    "generalized_js",
    "rkl_optimum_via_escort",
    "harmonic_reference_logp",
    "mrpo_surrogate_objective",
    "mrpo_surrogate_optimum",
    "holder_upper_bound",
    "softmax_jacobian",
    "fkl_optimal_value",
    "fkl_lambda_bounds",
    "fkl_normalization_residual",
    "fkl_normalization_slope",
    "coverage_transfer_rkl",
    "coverage_transfer_fkl",
    "rkl_gaps",
    "fkl_gaps",
]


def _weights(weights, like):
    return asarray(np.asarray(weights, dtype=np.float64), like=like)


# --------------------------------------------------------------------------- divergences
def weighted_reverse_kl(q_logp, ref_logps, weights):
    r"""Σ_i α_i KL(Q ‖ P_i) (left side of Lemma 5.1, eq. 19)."""
    xp = namespace(q_logp, ref_logps)
    kls = kl_divergence(xp.broadcast_to(q_logp[None, ...], ref_logps.shape), ref_logps)
    return weighted_sum(weights, kls)


def weighted_forward_kl(ref_logps, q_logp, weights):
    r"""Σ_i α_i KL(P_i ‖ Q) (left side of Lemma 6.1)."""
    xp = namespace(q_logp, ref_logps)
    kls = kl_divergence(ref_logps, xp.broadcast_to(q_logp[None, ...], ref_logps.shape))
    return weighted_sum(weights, kls)


def escort_identity_sides(q_logp, ref_logps, weights):
    r"""Lemma 5.1 (generalized escort identity, eq. 19), both sides.

    Σ_i α_i KL(Q‖P_i) = KL(Q‖P̂_α) − log F_α,  P̂_α = Π_i P_i^{α_i}/F_α,  F_α = Σ_y Π_i P_i^{α_i} ≤ 1,
    for supp Q ⊆ ∩_i supp P_i (β-free).  Returns ``(lhs, rhs)``.
    """
    lhs = weighted_reverse_kl(q_logp, ref_logps, weights)
    log_hat, log_f = generalized_escort(ref_logps, weights)
    rhs = kl_divergence(q_logp, log_hat) - log_f
    return lhs, rhs


def generalized_js(ref_logps, weights):
    r"""Generalized Jensen–Shannon divergence Σ_i α_i KL(P_i ‖ P̄_α), P̄_α = Σ α_i P_i (eq. 30)."""
    return weighted_forward_kl(ref_logps, arithmetic_mixture(ref_logps, weights), weights)


def average_identity_sides(ref_logps, q_logp, weights):
    r"""Lemma 6.1 (average distribution), both sides.

    Σ_i α_i KL(P_i‖Q) = KL(P̄_α‖Q) + Σ_i α_i KL(P_i‖P̄_α) for supp P_i ⊆ supp Q (β-free).
    Returns ``(lhs, rhs)``.
    """
    lhs = weighted_forward_kl(ref_logps, q_logp, weights)
    rhs = kl_divergence(arithmetic_mixture(ref_logps, weights), q_logp) + generalized_js(ref_logps, weights)
    return lhs, rhs


# --------------------------------------------------------------------------- reverse KL
def rkl_optimum_via_escort(r, ref_logps, weights, beta):
    r"""Theorem 5.2 through the escort route: (log π*, V*).

    Package β: π* = π̂_α e^{r/β}/Ẑ, Ẑ = Σ_y π̂_α e^{r/β}, V* = β log Ẑ + β log F_α.
    Spec (β_s = 1/β): π* = π̂_α e^{β_s r}/Ẑ, V* = (1/β_s)(log Ẑ + log F_α).
    This assembles π̂_α and F_α from :func:`generalized_escort` and the *single-reference* KL
    regularizer against π̂_α, an independent route to ``multi_rkl(...).optimal_logp/value``.
    """
    log_hat, log_f = generalized_escort(ref_logps, weights)
    single = regularizers.kl(beta=beta)
    return single.optimal_logp(r, log_hat), single.optimal_value(r, log_hat) + beta * log_f


def harmonic_reference_logp(ref_logps, weights):
    r"""log H_α, H_α = (Σ_i α_i/π_ref,i)^{-1} (weighted harmonic mean; MRPO, Le et al. 2024).

    H_α ≤ Π_i π_ref,i^{α_i} (weighted HM ≤ GM); H_α(y) = 0 where some π_ref,i(y) = 0 with α_i > 0.
    Not normalized.
    """
    ref_logps = asarray(ref_logps)
    xp = namespace(ref_logps)
    w = _weights(weights, ref_logps)
    with quiet():
        logw = xp.reshape(xp.log(w), (w.shape[0],) + (1,) * (ref_logps.ndim - 1))
        return -logsumexp(logw - ref_logps, axis=0)


def mrpo_surrogate_objective(pi, r, ref_logps, weights, beta):
    r"""MRPO lower-bound surrogate (eq. 18, reconstructed; spec §2): E_π[r] − β E_π[log(π/H_α)].

    Spec: E_π[r] − (1/β_s) E_π[log(π/H_α)].  For every π it is ≤ the multi-reference objective
    E_π[r] − β Σ α_i KL(π‖π_ref,i); the pointwise gap is β E_π[log(Π π_i^{α_i}/H_α)] ≥ 0.
    """
    with quiet():
        return regularizers.kl(beta=beta).objective(pi, r, np.exp(harmonic_reference_logp(ref_logps, weights)))


def mrpo_surrogate_optimum(r, ref_logps, weights, beta):
    r"""Maximizer and value of the MRPO surrogate: (log π_L, β log Z_L).

    π_L = H_α e^{r/β}/Z_L, Z_L = Σ_y H_α e^{r/β}; value β log Z_L ≤ V^RKL_α (Gibbs principle
    with the unnormalized reference H_α).  Spec: π_L ∝ H_α e^{β_s r}, value (1/β_s) log Z_L.
    """
    log_h = harmonic_reference_logp(ref_logps, weights)
    single = regularizers.kl(beta=beta)
    return single.optimal_logp(r, log_h), single.optimal_value(r, log_h)


def holder_upper_bound(r, ref_logps, weights, beta):
    r"""Hölder upper bound (App. B, eqs. 46–48): Σ_i α_i V_i with V_i = β log Σ_y π_ref,i e^{r/β}.

    V^RKL_α = β log Σ_y Π_i (π_ref,i e^{r/β})^{α_i} ≤ β log Π_i Z_i^{α_i} = Σ_i α_i V_i
    (Hölder with exponents 1/α_i).  Spec: V_i = (1/β_s) log Z_i, Z_i = Σ π_ref,i e^{β_s r}.
    Equality iff the tilted references π_ref,i e^{r/β} are all equal (up to 0-weight ones).
    """
    ref_logps = asarray(ref_logps)
    single = regularizers.kl(beta=beta)
    vals = [single.optimal_value(r, ref_logps[i]) for i in range(ref_logps.shape[0])]
    xp = namespace(ref_logps)
    return weighted_sum(weights, xp.stack(vals, axis=0))


def softmax_jacobian(logp, beta):
    r"""Lemma 5.4 (eq. 25) in the package convention: ∂π(y)/∂r(ỹ) = (1/β)(diag π − π πᵀ)[y, ỹ].

    Derivation: π = softmax(ℓ + r/β) with ℓ = log of the (escort) reference, so
    ∂ log π(y)/∂r(ỹ) = (1/β)(1{y=ỹ} − π(ỹ)), and multiplying by π(y) gives the formula.
    Spec (β_s = 1/β): β_s π(y)(1{y=ỹ} − π(ỹ)).  Rows sum to 0 (mass is conserved) and
    J·1 = 0 (shift invariance, Lemma A.4).  Batched: ``logp`` [..., n] → [..., n, n].
    """
    xp = namespace(logp)
    p = xp.exp(logp)
    n = p.shape[-1]
    eye = xp.eye(n, dtype=p.dtype)
    return (p[..., :, None] * eye - p[..., :, None] * p[..., None, :]) / beta


# --------------------------------------------------------------------------- forward KL
def fkl_optimal_value(r, ref_logps, weights, beta):
    r"""Optimal value of the forward-KL multi-reference problem (Theorem 6.2; spec §4, [D]).

    Package β, π* = β P̄_α/(λ − r):
    V = λ − β − β E_{P̄_α}[log((λ − r)/β)] − β Σ_i α_i KL(P_i‖P̄_α).
    Spec (β_s = 1/β): V = λ − 1/β_s − (1/β_s) E_{P̄}[log(β_s(λ − r))] − (1/β_s) JS_α.
    Derivation: E_{π*}[r] = Σ β P̄ r/(λ − r) = λ Σ π* − β = λ − β, and by Lemma 6.1
    Σ α_i KL(P_i‖π*) = KL(P̄‖π*) + JS_α with log(P̄/π*) = log((λ − r)/β).
    Valid when the closed form is the maximizer (no off-support response with r > λ).
    """
    reg = regularizers.multi_fkl(weights=weights, beta=beta)
    xp = namespace(r)
    log_bar = reg.mixture_logp(ref_logps)
    with quiet():
        bar = xp.exp(log_bar)
        on = bar > 0
        # λ − r = (λ − max r) + (max r − r): the first gap can be below one ulp of λ, so it is
        # read off the policy at the best supported response, λ − r_max = β P̄(y_max)/π*(y_max)
        r_on = xp.where(on, r, -xp.inf * xp.ones_like(r))
        rmax = xp.max(r_on, axis=-1, keepdims=True)
        top = r_on == rmax
        lp = reg.optimal_logp(r, ref_logps)
        gap = xp.max(xp.where(top, beta * xp.exp(log_bar - lp), -xp.inf * xp.ones_like(r)), axis=-1, keepdims=True)
        lam_minus_r = gap + (rmax - r)
        inner = xp.where(on, bar * xp.log(xp.where(on, lam_minus_r / beta, xp.ones_like(r))), xp.zeros_like(r))
    lam = rmax[..., 0] + gap[..., 0]
    return lam - beta - beta * xp.sum(inner, axis=-1) - beta * generalized_js(ref_logps, weights)


def fkl_lambda_bounds(r, ref_logps, weights, beta):
    r"""Bounds on λ_x (App. C lemma; spec §4), package β: (E_{P̄}[r] + β, max_{supp P̄} r + β).

    λ ≥ E_{P̄_α}[r] + β (Jensen on the convex 1/(λ − r)) and λ ≤ max r + β (otherwise the mass
    Σ β P̄/(λ − r) < 1); also λ > max_{supp P̄} r.  Spec: β → 1/β_s.
    """
    xp = namespace(r)
    log_bar = arithmetic_mixture(ref_logps, weights)
    with quiet():
        bar = xp.exp(log_bar)
        on = bar > 0
        mean = xp.sum(xp.where(on, bar * r, xp.zeros_like(r)), axis=-1)
        rmax = xp.max(xp.where(on, r, -xp.inf * xp.ones_like(r)), axis=-1)
    return mean + beta, rmax + beta


def fkl_normalization_residual(lam, r, bar, beta):
    r"""g(λ) = Σ_y β P̄(y)/(λ − r(y)) − 1 (package β; spec: Σ P̄/(β_s(λ − r)) − 1).

    Continuous and strictly decreasing on (max_{supp P̄} r, ∞), +∞ at the left end, −1 at +∞:
    the normalizing λ is its unique root.
    """
    xp = namespace(r)
    on = bar > 0
    with quiet():
        return xp.sum(xp.where(on, beta * bar / (lam - r), xp.zeros_like(r)), axis=-1) - 1.0


def fkl_normalization_slope(lam, r, bar, beta):
    r"""g'(λ) = −Σ_y β P̄(y)/(λ − r(y))² < 0 (strict monotonicity, hence uniqueness of λ)."""
    xp = namespace(r)
    on = bar > 0
    with quiet():
        return -xp.sum(xp.where(on, beta * bar / (lam - r) ** 2, xp.zeros_like(r)), axis=-1)


# --------------------------------------------------------------------------- coverage
def coverage_transfer_rkl(ref_coverages, weights, log_f=0.0):
    r"""Coverage transfer to the escort reference (Section 7, eq. 34), β-free.

    If π/π_ref,i ≤ C_i for all i then π/π̂_α = F_α Π_i (π/π_ref,i)^{α_i} ≤ F_α Π_i C_i^{α_i}
    ≤ Π_i C_i^{α_i} ≤ Σ_i α_i C_i (F_α ≤ 1 by Hölder; AM–GM).  ``log_f`` = log F_α (0 gives
    the F-free bound).
    """
    c = np.asarray(ref_coverages, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    return float(np.exp(log_f + np.sum(np.where(w > 0, w * np.log(c), 0.0))))


def coverage_transfer_fkl(ref_coverages, weights):
    r"""Coverage transfer to the mixture reference P̄_α (spec §5 forward case, sharpened; β-free).

    If π ≤ C_i P_i for every i then P̄_α = Σ α_i P_i ≥ π Σ α_i/C_i, so
    π/P̄_α ≤ (Σ_i α_i/C_i)^{-1}, the α-weighted *harmonic* mean of the C_i.  It is ≤ C_j/α_j for
    every j (drop all terms but one) and ≤ Π C_i^{α_i} ≤ Σ α_i C_i (HM ≤ GM ≤ AM), so it is
    sharper than the spec's min(Σ α_i C_i, min_i C_i/α_i).  C_i = inf (reference i does not
    cover) is allowed and contributes nothing.
    """
    c = np.asarray(ref_coverages, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    s = float(np.sum(np.where(w > 0, w / c, 0.0)))
    return math.inf if s == 0.0 else 1.0 / s


# --------------------------------------------------------------------------- gaps
def _policy_value(pi, r):
    xp = namespace(pi, r)
    return xp.sum(xp.where(pi > 0, pi * r, xp.zeros_like(pi)), axis=-1)


def rkl_gaps(r_star, r_hat, ref_logps, weights, beta):
    r"""Exact optimality and sub-optimality gaps of multi-reference RKL-RLHF (eqs. 6–8).

    π* = policy of r*, π̂ = policy of r̂ (Theorem 5.2, same β, same references):
    optimality gap J(π*) − J(π̂) with J(π) = E_π[r*]; sub-optimality gap 𝒥(π*) − 𝒥(π̂) with
    𝒥 = E_π[r*] − β Σα_i KL(π‖π_ref,i).  The latter equals β KL(π̂‖π*) exactly (spec §5, [D];
    spec: (1/β_s) KL).  Returns a dict with ``optimality``, ``suboptimality`` and
    ``suboptimality_kl_form`` (= β KL(π̂‖π*)), shape = batch shape.
    """
    reg = regularizers.multi_rkl(weights=weights, beta=beta)
    xp = namespace(r_star)
    lp_star, lp_hat = reg.optimal_logp(r_star, ref_logps), reg.optimal_logp(r_hat, ref_logps)
    p_star, p_hat = xp.exp(lp_star), xp.exp(lp_hat)
    refs = xp.exp(ref_logps)
    return {
        "optimality": _policy_value(p_star, r_star) - _policy_value(p_hat, r_star),
        "suboptimality": reg.objective(p_star, r_star, refs) - reg.objective(p_hat, r_star, refs),
        "suboptimality_kl_form": beta * kl_divergence(lp_hat, lp_star),
    }


def fkl_gaps(r_star, r_hat, ref_logps, weights, beta):
    r"""Exact optimality and sub-optimality gaps of multi-reference FKL-RLHF (eqs. 6–8, Thm 6.2).

    Same as :func:`rkl_gaps` with 𝒥̂ = E_π[r*] − β Σ α_i KL(π_ref,i‖π) and the λ-form policies.
    """
    reg = regularizers.multi_fkl(weights=weights, beta=beta)
    xp = namespace(r_star)
    p_star = xp.exp(reg.optimal_logp(r_star, ref_logps))
    p_hat = xp.exp(reg.optimal_logp(r_hat, ref_logps))
    refs = xp.exp(ref_logps)
    return {
        "optimality": _policy_value(p_star, r_star) - _policy_value(p_hat, r_star),
        "suboptimality": reg.objective(p_star, r_star, refs) - reg.objective(p_hat, r_star, refs),
    }

