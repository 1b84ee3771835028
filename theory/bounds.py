r"""Sample-complexity bounds of multi-reference KL-RLHF (second paper, Sections 5.2 and 6.2).

Source: Aminian, Asadi, Shenfeld, Mroueh (2025), arXiv 2502.01203, Theorems 5.5, 5.6, 6.4, 6.5
and Lemma A.1; as restated by the project's transcription of the paper's math, §5 (the "spec").

**β convention.** Every function takes the package β (objective E_π[r] − β·D, PM paper
eq. 2.3): β = β_pkg = 1/β_spec, where β_spec (γ in the later arXiv version) is the paper's
inverse temperature.  Each docstring states the bound in both conventions.  A small β_pkg is
weak regularization.

**Provenance.** ``form="derived"`` [D]: constants derived here (proofs in the docstrings, every
step checked numerically in ``mref.*`` checks and the tests).  ``form="paper"`` [R]: constants
reported for the later arXiv version, transcribed, not re-derived; they depend on that version's
MLE lemma (128 e^{4R} R² log(|R|/δ)/n).  Where the paper's constant is not recoverable
(RKL optimality gap), ``form="paper"`` raises ``ValueError``.

**Common assumptions** (spec §5): rewards in [0, R_max] (Ass. 4.1); a finite reward class
|R| containing r* (Ass. 4.2, realizability); n i.i.d. triples (x, y, y′) with x ∼ ρ and
y, y′ drawn independently from the *effective* reference — the generalized escort π̂_α for
reverse KL, the mixture P̄_α for forward KL — labelled by Bradley–Terry with r*; r̂ the BT
MLE over the class; coverage constant C = sup π/π_data over the policies the proof visits
(Ass. 4.3–4.5).  Every bound holds with probability ≥ 1 − δ, per prompt and for E_{x∼ρ}.

**Infinite (tabular) reward class.**  A tabular reward r ∈ [0, R_max]^{|X|×|Y|} is an infinite
class.  BT identifies r only up to a per-prompt shift, and every gap is shift-invariant
(Lemma A.4), so the effective dimension is d = |X|(|Y| − 1).  We replace log|R| by the log of an
η-net of [0, R_max]^d in the sup norm, log N(η) = d·log(1 + ⌈R_max/(2η)⌉) (see
:func:`tabular_log_class_size`), with η = R_max/n by default.  The discretization perturbs each
BT log-likelihood by at most 2η, adding O(κ²η) = O(κ² R_max/n) to ε²_MLE (same order as the
statistical term), and the rates acquire a log n factor: Õ(d/n) and Õ(√(d/n)).  This is the
standard covering-number replacement (e.g. Zhu, Jordan & Jiao 2023 use d-dimensional linear
classes with the same d·log term).

The registry :data:`BOUNDS` maps ``rkl_optimality``, ``rkl_suboptimality``, ``fkl_optimality``,
``fkl_suboptimality`` to :class:`BoundSpec` (function, rate exponent in n, statement,
provenance, β schedule).  :data:`EXTRA_BOUNDS` adds two fixed-β forward-KL bounds derived here:
the FKL sub-optimality gap is in fact O(1/n) at fixed β (C²ε²/(4β)), like the RKL one, and the
FKL optimality gap is O(1/√n) at fixed β — the paper's Theorem 6.4/6.5 rates are valid but not
sharp in n at fixed β (its bounds are β-free / need β → 0).  Every function accepts ``n`` as a number, a numpy array (for
plotting) or a sympy expression (for the ``mref.bounds_monotone`` limit check).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

from prefmatch.theory.identities import coverage_transfer_fkl, coverage_transfer_rkl

__all__ = [
    "BoundSpec",
    "BOUNDS",
    "ALL_BOUNDS",
    "kappa",
    "log_class_term",
    "tabular_log_class_size",
    "mle_error_sq",
    "rkl_coverage",
    "fkl_coverage",
    "kl_ball_coverage",
    "rkl_suboptimality",
    "rkl_optimality",
    "fkl_suboptimality",
    "fkl_optimality",
    "fkl_suboptimality_fast",
    "fkl_optimality_fixed_beta",
    "EXTRA_BOUNDS",
    "paper_beta_schedule",
]


# --------------------------------------------------------------------------- helpers
def _is_sym(x) -> bool:
    try:
        import sympy as sp
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, sp.Basic)


def _sqrt(x):
    if _is_sym(x):
        import sympy as sp

        return sp.sqrt(x)
    return np.sqrt(x)


def _log(x):
    if _is_sym(x):
        import sympy as sp

        return sp.log(x)
    return np.log(x)


def _check_pos(name, v, allow_zero=False):
    v = float(v)
    if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return v


def kappa(r_max: float) -> float:
    r"""κ = 1/inf_{|z| ≤ R_max} σ'(z) = 2 + e^{R_max} + e^{−R_max} ≤ 4 e^{R_max} (spec §5).

    Reward differences lie in [−R_max, R_max]; σ' = σ(1 − σ) is smallest at |z| = R_max.
    """
    r = _check_pos("r_max", r_max)
    return 2.0 + math.exp(r) + math.exp(-r)


def log_class_term(delta: float, log_class_size: float | None = None, class_size: float | None = None) -> float:
    r"""log(|R|/δ) from either ``log_class_size`` = log|R| or ``class_size`` = |R| (≥ 1)."""
    d = float("nan") if delta is None else float(delta)
    if not (0.0 < d < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if (log_class_size is None) == (class_size is None):
        raise ValueError("give exactly one of log_class_size (log|R|) and class_size (|R|)")
    if class_size is not None:
        if not (float(class_size) >= 1):
            raise ValueError(f"class_size must be >= 1, got {class_size!r}")
        log_class_size = math.log(float(class_size))
    return _check_pos("log_class_size", log_class_size, allow_zero=True) - math.log(d)


def tabular_log_class_size(n_prompts: int, n_responses: int, r_max: float, resolution: float | None = None, n: int | None = None) -> float:
    r"""Replacement of log|R| for the tabular class [0, R_max]^{|X|×|Y|} ([D], module docstring).

    log N(η) = d·log(1 + ⌈R_max/(2η)⌉), d = |X|(|Y| − 1) (BT is blind to per-prompt shifts).
    ``resolution`` η defaults to R_max/n (give ``n``): then log N ≈ d·log(n/2), so the bounds
    become Õ(d/n) / Õ(√(d/n)).  Use a fixed ``resolution`` to compare slopes against exact
    powers of n.
    """
    d = int(n_prompts) * (int(n_responses) - 1)
    if int(n_prompts) < 1 or int(n_responses) < 2:
        raise ValueError("need n_prompts >= 1 and n_responses >= 2")
    r = _check_pos("r_max", r_max)
    if resolution is None:
        if n is None:
            raise ValueError("give resolution (η) or n (η = r_max/n)")
        resolution = r / float(n)
    eta = _check_pos("resolution", resolution)
    return d * math.log(1.0 + math.ceil(r / (2.0 * eta)))


def paper_beta_schedule(n):
    r"""β_pkg(n) = 1/n, i.e. the later version's choice γ = β_spec = n for Theorem 6.5/Remark 6.6."""
    return 1 / n


# --------------------------------------------------------------------------- MLE lemma
def mle_error_sq(n, *, r_max: float, delta=None, log_class_size=None, class_size=None, form: str = "derived"):
    r"""ε²_MLE: w.p. ≥ 1 − δ, E_{x, y, y′ ∼ π_data}[(Δ(x,y) − Δ(x,y′))²] ≤ ε²_MLE, Δ = r* − r̂.

    Lemma A.1 (= Chang et al. 2024, Lemma C.2), β-free.

    * [D] ``form="derived"``: ε² = 2 κ² log(|R|/δ)/n.  Route: the finite-class MLE bound on the
      conditional label distributions, E_{x,y,y′}|P_r̂ − P_r*|² ≤ 2 log(|R|/δ)/n (total
      variation of the Bernoulli label; Agarwal et al. 2020, FLAMBE Thm 21; Geer 2000), and
      |σ(a) − σ(b)| ≥ |a − b|/κ for a, b ∈ [−R_max, R_max].
    * [R] ``form="paper"``: ε² = 128 e^{4 R_max} R_max² log(|R|/δ)/n.
    """
    lt = log_class_term(delta, log_class_size, class_size)
    r = _check_pos("r_max", r_max)
    if form == "derived":
        return 2.0 * kappa(r) ** 2 * lt / n
    if form == "paper":
        return 128.0 * math.exp(4.0 * r) * r * r * lt / n
    raise ValueError(f"form must be 'derived' or 'paper', got {form!r}")


# --------------------------------------------------------------------------- coverage
def rkl_coverage(*, beta: float, r_max: float, coverage=None, ref_coverages=None, weights=None) -> float:
    r"""Coverage constant C_{α,ε_rkl} used by the reverse-KL bounds (Ass. 4.4 w.r.t. π̂_α).

    Priority: ``coverage`` if given; else transfer from per-reference constants
    (eq. 34: C ≤ Π_i C_i^{α_i}, :func:`prefmatch.theory.identities.coverage_transfer_rkl`);
    the result is capped by the always-valid Gibbs bound e^{R_max/β} ([D]: the proofs only visit
    Gibbs policies π ∝ π̂_α e^{r/β} with r ∈ [0, R_max], for which π/π̂_α = e^{r/β}/E_π̂ e^{r/β}
    ≤ e^{R_max/β}; spec: e^{β_s R_max}).
    """
    b = _check_pos("beta", beta)
    r = _check_pos("r_max", r_max)
    gibbs = math.exp(min(r / b, 700.0))
    if coverage is not None:
        return min(_check_pos("coverage", coverage), gibbs)
    if ref_coverages is not None:

        if weights is None:
            raise ValueError("ref_coverages needs weights")
        return min(coverage_transfer_rkl(ref_coverages, weights), gibbs)
    return gibbs


def fkl_coverage(*, coverage=None, ref_coverages=None, weights=None) -> float:
    r"""Coverage constant C_{α,ε_fkl} for the forward-KL bounds (Ass. 4.5 w.r.t. P̄_α).

    ``coverage`` if given, else the transfer (Σ_i α_i/C_i)^{-1} from per-reference constants
    (:func:`prefmatch.theory.identities.coverage_transfer_fkl`).  There is no β-only cap:
    π̃/P̄_α = β/(λ − r) is bounded only through min P̄_α (C ≤ 1/min_y P̄_α(y)).
    """
    if coverage is not None:
        return _check_pos("coverage", coverage)
    if ref_coverages is not None and weights is not None:

        return coverage_transfer_fkl(ref_coverages, weights)
    raise ValueError("forward-KL bounds need coverage (or ref_coverages and weights)")


def kl_ball_coverage(p, eps: float, direction: str = "reverse") -> np.ndarray:
    r"""Per-response local coverage max π(y)/p(y) over a KL ball around ``p`` (Ass. 4.4–4.5).

    ``direction="reverse"``: the ball KL(π‖p) ≤ ε (Ass. 4.4); responses with p(y) = 0 get 0
    (no π of finite KL puts mass there), so the constant is finite even where the global one
    (Ass. 4.3) is infinite.  ``"forward"``: KL(p‖π) ≤ ε (Ass. 4.5), ``p`` of full support.
    For a fixed π(y) = t the closest π spreads 1 − t in proportion to p, so the constraint is the
    Bernoulli KL between t and p(y), increasing in t ≥ p(y): the answer is t/p(y) at its root
    (1/p(y) when the point mass on y is inside the reverse ball).  The constant of the
    assumption is the maximum over y.
    """
    from scipy.optimize import brentq

    eps = _check_pos("eps", eps)
    if direction not in ("reverse", "forward"):
        raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")
    out = []
    for py in np.asarray(p, dtype=np.float64).ravel():
        if direction == "reverse":
            if py <= 0:
                out.append(0.0)
            elif -math.log(py) <= eps:
                out.append(1.0 / py)
            else:
                out.append(brentq(lambda t: t * math.log(t / py) + (1 - t) * math.log((1 - t) / (1 - py)) - eps,
                                  py, 1 - 1e-15, xtol=1e-15) / py)
        else:
            if not py > 0:
                raise ValueError("forward-KL ball coverage needs p > 0 everywhere (Ass. 4.5 with a full-support reference)")
            out.append(brentq(lambda t: py * math.log(py / t) + (1 - py) * math.log((1 - py) / (1 - t)) - eps,
                              py, 1 - 1e-15, xtol=1e-15) / py)
    return np.asarray(out).reshape(np.shape(p))


# --------------------------------------------------------------------------- the four bounds
def rkl_suboptimality(n, *, beta: float, r_max: float, delta=None, log_class_size=None, class_size=None,
                      coverage=None, ref_coverages=None, weights=None, form: str = "derived", eps2=None):
    r"""Theorem 5.5: RKL sub-optimality gap 𝒥(π*_{θ*}) − 𝒥(π_{θ̂}) = O(1/n), w.p. ≥ 1 − δ.

    * [D] ≤ C ε²_MLE/(4β) (package β); spec: (β_s/4) C ε²_MLE.
      Proof: the gap equals β KL(π̂‖π*) = (1/β) ∫_0^1 (1 − λ) Var_{π_λ}(Δ) dλ along the Gibbs
      path π_λ ∝ π̂_α e^{(r̂ + λΔ)/β} (Taylor with integral remainder of the log-partition,
      Lemma 5.4 twice); Var_{π_λ}(Δ) ≤ E_{π_λ}(Δ − c)² ≤ C E_{π̂_α}(Δ − c)² with c = E_{π̂_α}Δ,
      and Var_{π̂_α}(Δ) = ½ E_{y,y′}(Δ(y) − Δ(y′))² ≤ ε²/2; ∫(1 − λ) dλ = ½.
    * [R] ≤ (1/β) C · 128 e^{4R_max} R_max² log(|R|/δ)/n; spec: β_s C 128 e^{4R} R² log(|R|/δ)/n.

    C: :func:`rkl_coverage` (default e^{R_max/β}).  ``eps2`` (optional) replaces ε²_MLE by a
    given value, e.g. the population E_{y,y′∼π̂_α}(Δ(y) − Δ(y′))² of a fitted reward, which makes
    the bound deterministic (then n, δ and the class size are not used).
    """
    c = rkl_coverage(beta=beta, r_max=r_max, coverage=coverage, ref_coverages=ref_coverages, weights=weights)
    if eps2 is None:
        eps2 = mle_error_sq(n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size, form=form)
    if form == "derived":
        return c * eps2 / (4.0 * float(beta))
    return c * eps2 / float(beta)


def rkl_optimality(n, *, beta: float, r_max: float, delta=None, log_class_size=None, class_size=None,
                   coverage=None, ref_coverages=None, weights=None, form: str = "derived", eps2=None):
    r"""Theorem 5.6: RKL optimality gap J(π*_{θ*}) − J(π_{θ̂}) = O(1/√n), J = E_π[r*], w.p. ≥ 1 − δ.

    * [D] ≤ (R_max/(2β)) √(C ε²_MLE/2) (package β); spec: β_s (R_max/2) √(C ε²/2).
      Proof: J(π*) − J(π̂) = (1/β) ∫_0^1 Cov_{π_λ}(r*, Δ) dλ (Lemma 5.4);
      |Cov| ≤ sd(r*) sd(Δ) ≤ (R_max/2) √(C Var_{π̂_α}Δ) ≤ (R_max/2) √(C ε²/2).
    * [R] the paper's constant is not recoverable from the extracted paper text: ``form="paper"`` raises.

    ``eps2``: as in :func:`rkl_suboptimality`.
    """
    if form != "derived":
        raise ValueError("rkl_optimality: the paper's constant is not recoverable; use form='derived'")
    c = rkl_coverage(beta=beta, r_max=r_max, coverage=coverage, ref_coverages=ref_coverages, weights=weights)
    if eps2 is None:
        eps2 = mle_error_sq(n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size)
    return float(r_max) / (2.0 * float(beta)) * _sqrt(c * eps2 / 2.0)


def fkl_suboptimality(n, *, beta: float = 1.0, r_max: float, delta=None, log_class_size=None, class_size=None,
                      coverage=None, ref_coverages=None, weights=None, form: str = "derived", eps2=None):
    r"""Theorem 6.4: FKL sub-optimality gap 𝒥̂(π̃_{θ*}) − 𝒥̂(π̃_{θ̂}) = O(1/√n), w.p. ≥ 1 − δ; β-free.

    * [D] ≤ √(2C) ε_MLE.  Proof: Proposition 6.3 gives gap ≤ Σ_y (Δ − c)(π̃* − π̃̂) for any
      prompt constant c (λ_x cancels); take c = E_{P̄_α}Δ and Cauchy–Schwarz under coverage:
      E_π|Δ − c| ≤ √(C Var_{P̄}Δ) ≤ √(C ε²/2) for both policies.
    * [R] ≤ 16 C e^{2R_max} R_max √(log(|R|/δ)/n).

    ``beta`` is accepted for a uniform signature and unused.  C: :func:`fkl_coverage`.
    ``eps2`` (derived form only): a given ε² (population error under P̄_α), as in
    :func:`rkl_suboptimality`.
    """
    c = fkl_coverage(coverage=coverage, ref_coverages=ref_coverages, weights=weights)
    if form == "derived":
        if eps2 is None:
            eps2 = mle_error_sq(n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size)
        return _sqrt(2.0 * c * eps2)
    if eps2 is not None:
        raise ValueError("eps2 is only used with form='derived'")
    if form == "paper":
        lt = log_class_term(delta, log_class_size, class_size)
        r = _check_pos("r_max", r_max)
        return 16.0 * c * math.exp(2.0 * r) * r * _sqrt(lt / n)
    raise ValueError(f"form must be 'derived' or 'paper', got {form!r}")


def fkl_optimality(n, *, beta=None, r_max: float, delta=None, log_class_size=None, class_size=None,
                   coverage=None, ref_coverages=None, weights=None, form: str = "derived", eps2=None):
    r"""Theorem 6.5 / Remark 6.6: FKL optimality gap J(π̃_{θ*}) − J(π̃_{θ̂}), w.p. ≥ 1 − δ.

    ≤ [Theorem 6.4 bound] + β log(1 + R_max/β) (package β); spec: + (1/β_s) log(1 + β_s R_max).
    [D] Proof: J = 𝒥̂ + β Σα_i KL(P_i‖·), and the KL difference is
    E_{P̄} log(π̃̂/π̃*) ≤ log E_{π̃̂}[(λ* − r*)/β] ≤ log(1 + R_max/β) (Jensen; λ* ≤ R_max + β).
    The second term does not vanish in n at fixed β: the O(1/√n) rate needs β → 0.
    ``beta=None`` uses the paper's schedule β_pkg = 1/n (γ = n, :func:`paper_beta_schedule`),
    which makes it O(log n/n) = o(n^{-1/2}).  Caveat: C_{α,ε_fkl} depends on β through
    ε_fkl = log(1 + R_max/β); a global-coverage C is β-free.  ``form`` selects the Theorem 6.4
    constant ([D] or [R]); the additive term is [D] in both.
    """
    b = paper_beta_schedule(n) if beta is None else beta
    sub = fkl_suboptimality(n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size,
                            coverage=coverage, ref_coverages=ref_coverages, weights=weights, form=form, eps2=eps2)
    r = _check_pos("r_max", r_max)
    return sub + b * _log(1 + r / b)


def fkl_suboptimality_fast(n, *, beta: float, r_max: float, delta=None, log_class_size=None, class_size=None,
                           coverage=None, ref_coverages=None, weights=None, form: str = "derived", eps2=None):
    r"""FKL sub-optimality gap at fixed β: O(1/n) ([D], new here; sharper rate than Theorem 6.4).

    ≤ C² ε²_MLE/(4β) (package β); spec: (β_s/4) C² ε²_MLE.
    Proof: along π_t = β P̄/(λ_t − r̂ − tΔ), ∂𝒥̂/∂π_y = (1 − t)Δ_y + λ_t, and
    π̇_y = w_y(Δ_y − λ̇) with w_y = π_y²/(β P̄_y), λ̇ = Σ wΔ/Σ w, so
    gap = ∫_0^1 (1 − t) Σ_y w_y (Δ_y − λ̇)² dt ≤ ½ sup_t min_c Σ_y w_y (Δ_y − c)²
    ≤ ½ (C²/β) Var_{P̄}(Δ) ≤ C² ε²/(4β), using π/P̄ ≤ C twice.  Same shape as Theorem 5.5 with
    C² for C: the paper's O(1/√n) (Theorem 6.4) is β-free but not rate-sharp.
    """
    if form != "derived":
        raise ValueError("fkl_suboptimality_fast is derived here; use form='derived'")
    c = fkl_coverage(coverage=coverage, ref_coverages=ref_coverages, weights=weights)
    if eps2 is None:
        eps2 = mle_error_sq(n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size)
    return c * c * eps2 / (4.0 * float(beta))


def fkl_optimality_fixed_beta(n, *, beta: float, r_max: float, delta=None, log_class_size=None, class_size=None,
                              coverage=None, ref_coverages=None, weights=None, form: str = "derived", eps2=None):
    r"""FKL optimality gap at fixed β: O(1/√n) ([D], new here; Theorem 6.5 needs β → 0).

    ≤ (R_max/(2β)) C^{3/2} √(ε²_MLE/2) (package β); spec: β_s (R_max/2) C^{3/2} √(ε²/2).
    Proof: with the path of :func:`fkl_suboptimality_fast`, J(π*) − J(π̂) = ∫_0^1 Σ w (r* − c₁)(Δ − λ̇) dt
    ≤ sup_t √(Σ w (r* − c₁)²) √(Σ w (Δ − c₂)²) ≤ √((C/β) R_max²/4) √((C²/β) ε²/2).
    """
    if form != "derived":
        raise ValueError("fkl_optimality_fixed_beta is derived here; use form='derived'")
    c = fkl_coverage(coverage=coverage, ref_coverages=ref_coverages, weights=weights)
    if eps2 is None:
        eps2 = mle_error_sq(n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size)
    return float(r_max) / (2.0 * float(beta)) * c ** 1.5 * _sqrt(eps2 / 2.0)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BoundSpec:
    """A bound as a function of n with its rate: ``func(n, **params) = Θ(n^{-rate})``.

    ``beta_schedule``: β_pkg as a function of n under which the rate holds (``None``: any fixed
    β).  ``provenance``: "[D]" derived here / "[R]" paper constant available via ``form``.
    """
    func: Callable
    rate: float
    statement: str
    source: str
    provenance: str
    beta_schedule: Callable | None = None


BOUNDS: dict[str, BoundSpec] = {
    "rkl_optimality": BoundSpec(
        rkl_optimality, 0.5,
        "J(π*) − J(π̂) ≤ (R_max/(2β)) √(C ε²_MLE/2) = O(n^{-1/2})",
        "Theorem 5.6", "[D]",
    ),
    "rkl_suboptimality": BoundSpec(
        rkl_suboptimality, 1.0,
        "𝒥(π*) − 𝒥(π̂) ≤ C ε²_MLE/(4β) = O(n^{-1})",
        "Theorem 5.5", "[D]; [R] via form='paper'",
    ),
    "fkl_optimality": BoundSpec(
        fkl_optimality, 0.5,
        "J(π̃*) − J(π̃̂) ≤ √(2C) ε_MLE + β log(1 + R_max/β) = O(n^{-1/2}) with β = 1/n",
        "Theorem 6.5, Remark 6.6", "[D]; [R] Thm 6.4 part via form='paper'",
        beta_schedule=paper_beta_schedule,
    ),
    "fkl_suboptimality": BoundSpec(
        fkl_suboptimality, 0.5,
        "𝒥̂(π̃*) − 𝒥̂(π̃̂) ≤ √(2C) ε_MLE = O(n^{-1/2})",
        "Theorem 6.4", "[D]; [R] via form='paper'",
    ),
}

#: sharper fixed-β forward-KL bounds derived here ([D], not in the paper)
EXTRA_BOUNDS: dict[str, BoundSpec] = {
    "fkl_suboptimality_fast": BoundSpec(
        fkl_suboptimality_fast, 1.0,
        "𝒥̂(π̃*) − 𝒥̂(π̃̂) ≤ C² ε²_MLE/(4β) = O(n^{-1}) at fixed β",
        "Theorem 6.4 (sharpened rate, derived here)", "[D]",
    ),
    "fkl_optimality_fixed_beta": BoundSpec(
        fkl_optimality_fixed_beta, 0.5,
        "J(π̃*) − J(π̃̂) ≤ (R_max/(2β)) C^{3/2} √(ε²_MLE/2) = O(n^{-1/2}) at fixed β",
        "Theorem 6.5 (fixed-β variant, derived here)", "[D]",
    ),
}

#: the four gap bounds, the fixed-β FKL bounds and the MLE lemma (checked by ``mref.bounds_monotone``)
ALL_BOUNDS: dict[str, BoundSpec] = {
    **BOUNDS,
    **EXTRA_BOUNDS,
    "mle_error_sq": BoundSpec(
        lambda n, *, beta=None, r_max, delta, log_class_size=None, class_size=None, coverage=None,
        ref_coverages=None, weights=None, form="derived": mle_error_sq(
            n, r_max=r_max, delta=delta, log_class_size=log_class_size, class_size=class_size, form=form),
        1.0, "ε²_MLE = 2κ² log(|R|/δ)/n", "Lemma A.1", "[D]; [R] via form='paper'",
    ),
}
