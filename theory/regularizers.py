r"""The regularizer objects: the single source of every ψ in the package.

Every objective of both papers has the shape (design.md, equation ⋆)

.. math::  J(\pi) = \sum_y \pi(y)\,\bigl[r(y) + \psi(\pi(y), y)\bigr],

and a *regularizer object* carries ψ and what can be said about it.  The layers ask it for

* ``psi(logp, ref_logp)``            ψ per response, on numpy arrays or torch tensors;
* ``token_reward(logp_t, ref_logp_t, mask_t)``  the per-token share of ψ inside PPO;
* ``objective(pi, r, ref)``          J(π) on the simplex (tabular), with 0·∞ limits;
* ``optimal_logp(r, ref_logp)``      log of the maximizer of J, computed in log space;
* ``optimal_value(r, ref_logp)``     J at the maximizer;
* ``cvx_objective(pi_var, r, ref)``  the same J as a concave cvxpy expression;
* ``psi_sympy(p, q)``                ψ as a sympy expression of p = π(y), q = π_ref(y).

Conventions.  The last axis indexes responses; leading axes are a batch of prompts.  β always
multiplies the divergence: J = E_π[r] − β·D(π, π_ref) (PM paper, eq. 2.3).  Multi-reference
regularizers take reference log-probabilities with a *leading* K axis: ``ref_logp[k, ..., y]``.
Probabilities of 0 are log-probabilities of −inf and stay exact.

Two families:

* :class:`AffineLogRegularizer` — ψ = −a·log π + b(y) with a > 0 (KL, PM, conditional PM,
  maximum entropy, multi-reference reverse KL, and any :func:`weighted` sum of them).  Their
  optimum is written once: log π* = log_softmax((r + b)/a), value a·logsumexp((r + b)/a).
  Used as a per-sample reward in a score-function estimator (PPO) ψ gives the exact policy
  gradient, because E_π[∇ log π] = 0 (``reward_gradient_exact``).
* :class:`FDivergence` — ψ = −β (π_ref/π) f(π/π_ref) (PM paper, Section 5.1).  The optimum is
  π* = π_ref·(f')⁻¹((r − λ)/β) with λ fixed by normalization, found by one vectorized,
  safeguarded Newton root-finder (:func:`solve_normalizer`).  Multi-reference forward KL is the
  reverse-KL f-divergence against the arithmetic mixture (Lemma 6.1 of the second paper).
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from prefmatch.theory._array import (
    blockable,
    last_token_mask,
    log_softmax,
    log_softmax_into,
    logsumexp,
    row_blocks,
    take_rows,
    namespace,
    quiet,
    weighted_sum,
    xexpy,
)

__all__ = [
    "Regularizer",
    "AffineLogRegularizer",
    "KL",
    "PM",
    "ConditionalPM",
    "MaxEnt",
    "MultiRKL",
    "Weighted",
    "FDivergence",
    "MultiFKL",
    "GeneralizedPM",
    "FSpec",
    "F_DIVERGENCES",
    "kl",
    "pm",
    "cpm",
    "maxent",
    "f_divergence",
    "multi_rkl",
    "multi_fkl",
    "generalized_pm",
    "weighted",
    "get",
    "ALL_REGULARIZERS",
    "FACTORIES",
    "solve_normalizer",
    "check_positive",
]


# --------------------------------------------------------------------------- validation
def check_positive(name: str, value) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}") from None
    if not (0.0 < a <= 1.0):
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    return a


def _check_weights(weights, tol: float = 1e-6) -> tuple[float, ...]:
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be a list of numbers on the simplex, got {weights!r}") from None
    if w.size == 0:
        raise ValueError("weights must hold at least one reference weight (K >= 1), got []")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > tol:
        raise ValueError(
            f"weights must be non-negative and sum to 1 (tolerance {tol:g}), got {w.tolist()}"
        )
    return tuple(float(x) for x in w / w.sum())


def _check_reward(r, name: str = "reward") -> None:
    xp = namespace(r)
    # one pass: the sum is finite iff every entry is (barring overflow, then check entrywise)
    if bool(xp.isfinite(xp.sum(r))) or bool(xp.all(xp.isfinite(r))):
        return
    raise ValueError(f"{name} must be finite (no NaN or inf)")


# --------------------------------------------------------------------------- base class
@dataclass(frozen=True, kw_only=True)
class Regularizer(abc.ABC):
    """ψ of the objective (⋆) and everything the layers ask of it (see module docstring)."""

    name: ClassVar[str] = "regularizer"
    #: True when ``ref_logp`` has a leading axis of K references
    multi_reference: ClassVar[bool] = False
    #: True when ψ(Σ_t l_t, Σ_t q_t) = Σ_t token_reward_t, so ψ can be paid per token
    token_additive: ClassVar[bool] = True

    # ---- what subclasses provide
    @abc.abstractmethod
    def psi(self, logp, ref_logp=None):
        """ψ(π(y), y) per response from log-probabilities (numpy or torch)."""

    @abc.abstractmethod
    def optimal_logp(self, r, ref_logp=None):
        """log π* = log argmax_π J(π), along the last axis."""

    @abc.abstractmethod
    def cvx_objective(self, pi_var, r, ref):
        """J(π) as a concave cvxpy expression of the variable ``pi_var`` (1-D problems)."""

    @abc.abstractmethod
    def psi_sympy(self, p, q):
        """ψ as a sympy expression of p = π(y) and q = π_ref(y) (a list of K for multi-ref)."""

    # ---- shared behaviour
    @property
    def reward_gradient_exact(self) -> bool:
        """Whether :meth:`token_reward` paid as a sampled reward (score-function part only) gives
        the exact gradient of E_π[ψ]: true when ψ is affine in log π (E_π[∇ log π] = 0)."""
        return False

    @property
    def loss_gradient_exact(self) -> bool:
        """Whether the per-token terms as a reward *plus* their pathwise gradient (the trainer's
        ``regularizer_mode: loss``) give the exact gradient of E_π[ψ] (true unless an estimator
        has the wrong expectation, like KL's k2)."""
        return True

    def sequence_optimal_logp(self, r, ref_logp_t, mask_t):
        """log π* over enumerated whole responses from their *token* reference log-probs
        ``ref_logp_t`` [..., n, T] (leading K axis for multi-reference) and mask [n, T]: the
        optimum of the objective the trainer's per-token terms define.  For every regularizer but
        token-level cPM this is :meth:`optimal_logp` of the summed sequence log-probs."""
        if ref_logp_t is None:
            return self.optimal_logp(r, None)
        xp = namespace(ref_logp_t)
        seq = xp.sum(xp.where(mask_t > 0, ref_logp_t, 0.0), axis=-1)
        return self.optimal_logp(r, seq)

    def pi_psi(self, logp, ref_logp=None):
        """π(y)·ψ(π(y), y) with the limit taken where π(y) = 0 (default limit: 0)."""
        with quiet():
            return xexpy(logp, self.psi(logp, ref_logp))

    def objective(self, pi, r, ref=None):
        """J(π) = Σ_y π(y)[r(y) + ψ(π(y), y)] for probabilities ``pi`` and ``ref`` (last axis)."""
        xp = namespace(pi, r)
        with quiet():
            logp = xp.log(pi)
            ref_logp = None if ref is None else xp.log(ref)
            return xp.sum(xexpy(logp, r) + self.pi_psi(logp, ref_logp), axis=-1)

    def optimal_value(self, r, ref_logp=None):
        """J(π*) (default: the objective evaluated at ``optimal_logp``)."""
        xp = namespace(r)
        logp = self.optimal_logp(r, ref_logp)
        with quiet():
            ref = None if ref_logp is None else xp.exp(ref_logp)
            return self.objective(xp.exp(logp), r, ref)

    def optimal_policy(self, r, ref=None):
        """π* as probabilities, from probabilities ``ref`` (convenience for tabular code)."""
        xp = namespace(r)
        with quiet():
            ref_logp = None if ref is None else xp.log(xp.asarray(ref))
            return xp.exp(self.optimal_logp(r, ref_logp))

    def cvx_constraints(self, pi_var, r, ref) -> list:
        """Constraints added to the simplex in the cvxpy problem (default: none)."""
        return []

    def token_reward(self, logp_t, ref_logp_t, mask_t):
        """Per-token terms ψ_t of ψ for PPO [..., T]; summed over the masked tokens they equal ψ.

        A regularizer that is not additive over tokens (``token_additive`` False) pays ψ of the
        whole response, ψ(Σ_t log π(y_t|·), Σ_t log π_ref(y_t|·)), at its last token: a reward
        that depends on the whole response belongs where the whole response is known.
        """
        xp = namespace(logp_t)
        mask = xp.astype(mask_t, logp_t.dtype)
        seq = xp.sum(xp.where(mask > 0, logp_t, 0.0), axis=-1)
        seq_ref = None if ref_logp_t is None else xp.sum(xp.where(mask > 0, ref_logp_t, 0.0), axis=-1)
        psi = self.psi(seq, seq_ref)
        return xp.where(mask > 0, psi[..., None] * last_token_mask(mask), 0.0)


# --------------------------------------------------------------------------- affine family
@dataclass(frozen=True, kw_only=True)
class AffineLogRegularizer(Regularizer):
    r"""ψ(π, y) = −a·log π(y) + b(y), a > 0.

    The maximizer of Σ π (r + b − a log π) on the simplex is the Gibbs distribution
    π* ∝ exp((r + b)/a) with value a·logsumexp((r + b)/a) (Gibbs variational principle; PM
    paper Prop. 5.1 for KL, Theorem 1 for PM, Theorem 4 for cPM, second paper Theorem 5.2).
    """

    @abc.abstractmethod
    def coefficients(self, ref_logp=None, like=None) -> tuple[Any, Any]:
        """(a, b) with ψ = −a log π + b; b broadcasts against the responses axis."""

    def constant_sum(self, like) -> Any:
        """Σ_y of the terms of π·ψ that do not depend on π (PM's C2 term); default 0."""
        return 0.0

    @property
    def reward_gradient_exact(self) -> bool:
        return True

    def psi(self, logp, ref_logp=None):
        a, b = self.coefficients(ref_logp, like=logp)
        return -a * logp + b

    def gibbs_logits(self, r, ref_logp=None, out=None, work=None):
        """(r + b)/a, the logits of π* (subclasses may compute it with fewer passes).

        ``out`` and ``work`` (numpy only, r's shape) are a result buffer and a scratch buffer
        the row-blocked path passes so that no block-sized temporary is allocated.
        """
        a, b = self.coefficients(ref_logp, like=r)
        if out is None:
            return (r + b) / a
        np.add(r, b, out=out)
        out /= a
        return out

    def optimal_logp(self, r, ref_logp=None):
        if self._blockable_params() and blockable(r, ref_logp, ref_ndim=3 if self.multi_reference else 2):
            with quiet():
                return self._optimal_logp_blocked(r, ref_logp)
        _check_reward(r)
        with quiet():
            z = self.gibbs_logits(r, ref_logp)
            return log_softmax(z, overwrite=z is not r)  # z is a fresh temporary unless it is r

    def _blockable_params(self) -> bool:
        """False when a parameter array has a prompt axis (the row blocks would not slice it)."""
        return True

    def _optimal_logp_blocked(self, r, ref_logp):
        """Row blocks of about 1 MB (rows are independent problems): the logits are formed in
        the output block and normalized there, so every pass but the first read stays in cache."""
        n_rows, n = r.shape
        out = np.empty(np.broadcast_shapes(r.shape, ref_logp.shape[-2:] if ref_logp is not None else r.shape))
        blocks = row_blocks(n_rows, n)
        work = np.empty((blocks[0].stop - blocks[0].start, n))
        for sl in blocks:
            o, w = out[sl], work[: sl.stop - sl.start]
            rb = r[sl]
            z = self.gibbs_logits(rb, take_rows(ref_logp, sl, n_rows), out=o, work=w)
            if not math.isfinite(rb.sum()):  # after the logits: this read comes from cache
                _check_reward(rb)  # raises unless the sum overflowed
            log_softmax_into(z, w)
        return out

    def optimal_value(self, r, ref_logp=None):
        _check_reward(r)
        a, _ = self.coefficients(ref_logp, like=r)
        with quiet():
            return a * logsumexp(self.gibbs_logits(r, ref_logp)) + self.constant_sum(r)

    # token rewards: ψ = −a Σ_t l_t + b_lin(Σ_t q_t) + b_const, b_lin linear in q
    def token_terms(self, ref_logp_t, mask_t):
        """(a, per-token part of b, sequence constant of b) for :meth:`token_reward`."""
        a, b = self.coefficients(ref_logp_t, like=mask_t)
        return a, b, 0.0

    def token_reward(self, logp_t, ref_logp_t, mask_t):
        xp = namespace(logp_t)
        mask = xp.astype(mask_t, logp_t.dtype)
        a, b_tok, b_const = self.token_terms(ref_logp_t, mask)
        out = (-a * logp_t + b_tok) * mask
        if not (isinstance(b_const, float) and b_const == 0.0):
            out = out + b_const * last_token_mask(mask)
        return xp.where(mask > 0, out, 0.0)

    def cvx_objective(self, pi_var, r, ref):
        import cvxpy as cp

        a, b = self.coefficients(None if ref is None else _np_log(ref), like=np.asarray(r, float))
        b = np.broadcast_to(np.asarray(b, dtype=float), np.shape(r))
        finite = np.isfinite(b)
        b_fin = np.where(finite, b, 0.0)
        return (
            cp.sum(cp.multiply(np.asarray(r, float) + b_fin, pi_var))
            + a * cp.sum(cp.entr(pi_var))
            + float(np.sum(self.constant_sum(np.asarray(r, float))))
        )

    def cvx_constraints(self, pi_var, r, ref):
        a, b = self.coefficients(None if ref is None else _np_log(ref), like=np.asarray(r, float))
        b = np.broadcast_to(np.asarray(b, dtype=float), np.shape(r))
        off = np.flatnonzero(~np.isfinite(b))
        return [pi_var[off] == 0] if off.size else []


def _add(z, y):
    """z + y, in place for numpy when the shapes allow it (z is a fresh temporary)."""
    if not isinstance(z, np.ndarray):
        return z + y
    if z.shape == y.shape or (y.ndim <= z.ndim and all(a == b or b == 1 for a, b in zip(z.shape[::-1], y.shape[::-1]))):
        z += y
        return z
    return z + y


def _np_log(x):
    with quiet():
        return np.log(np.asarray(x, dtype=np.float64))


def _param(value, like):
    """A regularizer parameter (scalar or per-response array) in the namespace of ``like``."""
    if isinstance(value, (int, float)):
        return float(value)
    if like is None:
        return np.asarray(value, dtype=np.float64)
    if isinstance(like, np.ndarray):
        return np.asarray(value, dtype=like.dtype)
    import array_api_compat

    xp = namespace(like)
    return xp.asarray(np.asarray(value, dtype=np.float64), dtype=like.dtype, device=array_api_compat.device(like))


def _require_ref(ref_logp, name):
    if ref_logp is None:
        raise ValueError(f"regularizer {name!r} needs reference log-probabilities (ref_logp)")
    return ref_logp


@dataclass(frozen=True, kw_only=True)
class KL(AffineLogRegularizer):
    r"""KL-RLHF: ψ = −β log(π/π_ref) (PM paper eq. 2.3); π* ∝ π_ref e^{r/β} (Prop. 5.1, eq. 5.1).

    ``estimator`` selects the per-token KL estimate k_t that :meth:`token_reward` pays as
    ψ_t = −β k_t, with l_t = log π(y_t|·) − log π_ref(y_t|·) and ρ_t = e^{−l_t}:
    ``"k1"`` = l_t, ``"k2"`` = l_t²/2, ``"k3"`` = (ρ_t − 1) + l_t (Schulman's estimators).
    Which gradient each gives, as a reward or as a loss, is the ``grad.*`` table
    (:mod:`prefmatch.theory.checks_grad`): as a reward only k1 is exact; with its pathwise
    term (``regularizer_mode: loss``) k1 and k3 are exact (E_π[k3_t] = E_π[l_t]); k2 is exact
    only as a pure loss (E_π[∇k2] = ∇KL), which no trainer mode here uses.
    """

    name: ClassVar[str] = "kl"
    beta: float = 1.0
    estimator: str = "k1"

    ESTIMATORS: ClassVar[tuple[str, ...]] = ("k1", "k2", "k3")

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        if self.estimator not in self.ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(self.ESTIMATORS)}, got {self.estimator!r}")

    @property
    def reward_gradient_exact(self) -> bool:
        return self.estimator == "k1"

    @property
    def loss_gradient_exact(self) -> bool:
        return self.estimator in ("k1", "k3")

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, self.beta * _require_ref(ref_logp, self.name)

    def gibbs_logits(self, r, ref_logp=None, out=None, work=None):
        ref_logp = _require_ref(ref_logp, self.name)  # b/a = log π_ref
        if out is None:
            return _add(r * (1.0 / self.beta), ref_logp)
        np.multiply(r, 1.0 / self.beta, out=out)
        out += ref_logp
        return out

    def token_reward(self, logp_t, ref_logp_t, mask_t):
        if self.estimator == "k1":
            return super().token_reward(logp_t, ref_logp_t, mask_t)
        xp = namespace(logp_t)
        mask = xp.astype(mask_t, logp_t.dtype)
        l = xp.where(mask > 0, logp_t - ref_logp_t, 0.0)
        k = 0.5 * l * l if self.estimator == "k2" else xp.expm1(-l) + l
        return xp.where(mask > 0, -self.beta * k, 0.0)

    def psi_sympy(self, p, q):
        import sympy as sp

        return -sp.nsimplify(self.beta) * sp.log(p / q)


@dataclass(frozen=True, kw_only=True)
class PM(AffineLogRegularizer):
    r"""Preference-matching regularizer, ψ = β·R(π) with R(π) = −log π + C1 + C2/π
    (PM paper Theorem 1, eq. 3.8; the paper's β = 1, its Section 6 writes r/β instead).

    The optimum of E_π[r + ψ] is softmax(r/β), the Plackett–Luce distribution of r/β, whatever
    C1, C2 (Theorems 1–2).  ``c1`` may depend on the prompt (scalar or an array broadcasting
    as [..., 1]); ``c2`` on prompt and response (Theorem 2, eq. 3.13): scalar or [..., n].
    The C2 term contributes β Σ_y C2 to J whatever π (Remark 3.4/3.6), so its gradient is 0:
    :meth:`token_reward` leaves it out (paying C2/π(y) as a sampled reward would bias the
    score-function gradient and overflows for sequence probabilities like e^-100).
    """

    name: ClassVar[str] = "pm"
    c1: Any = 0.0
    c2: Any = 0.0
    beta: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        for nm in ("c1", "c2"):
            v = np.asarray(getattr(self, nm), dtype=np.float64)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{nm} must be finite")

    @property
    def _c2_zero(self) -> bool:
        return bool(np.all(np.asarray(self.c2, dtype=np.float64) == 0.0))

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, self.beta * _param(self.c1, like)

    def gibbs_logits(self, r, ref_logp=None, out=None, work=None):
        c1 = _param(self.c1, r)
        if out is not None:
            np.multiply(r, 1.0 / self.beta, out=out)
            return np.add(out, c1, out=out)
        z = r if self.beta == 1.0 else r * (1.0 / self.beta)
        return z if isinstance(c1, float) and c1 == 0.0 else z + c1

    def _blockable_params(self) -> bool:
        return np.ndim(self.c1) <= 1  # a per-prompt c1 [B, 1] takes the whole-array path

    def constant_sum(self, like):
        if self._c2_zero:
            return 0.0
        xp = namespace(like)
        c2 = _param(self.c2, like)
        return self.beta * xp.sum(c2 + xp.zeros_like(like), axis=-1)

    def psi(self, logp, ref_logp=None):
        xp = namespace(logp)
        out = -logp + _param(self.c1, logp)
        if not self._c2_zero:
            with quiet():
                out = out + _param(self.c2, logp) * xp.exp(-logp)
        return self.beta * out

    def pi_psi(self, logp, ref_logp=None):
        xp = namespace(logp)
        with quiet():
            out = xexpy(logp, -logp + _param(self.c1, logp))
        if not self._c2_zero:
            out = out + _param(self.c2, logp) + xp.zeros_like(logp)  # lim π·C2/π = C2
        return self.beta * out

    def token_terms(self, ref_logp_t, mask_t):
        # the C2 term is a constant of J (zero gradient): not paid
        c1 = np.asarray(self.c1, dtype=np.float64)
        if c1.ndim:
            raise ValueError("per-token rewards need a scalar c1")
        return self.beta, 0.0, self.beta * float(c1)

    def psi_sympy(self, p, q=None):
        """β(−log p + C1 + C2/p) (scalar constants; per-response constants are symbols C1, C2)."""
        import sympy as sp

        c1 = sp.nsimplify(float(self.c1)) if np.ndim(self.c1) == 0 else sp.Symbol("C1")
        c2 = sp.nsimplify(float(self.c2)) if np.ndim(self.c2) == 0 else sp.Symbol("C2")
        return sp.nsimplify(self.beta) * (-sp.log(p) + c1 + c2 / p)


@dataclass(frozen=True, kw_only=True)
class MaxEnt(AffineLogRegularizer):
    r"""Maximum-entropy RL: ψ = −β log π; π* ∝ e^{r/β} (PM paper Table 1, where the
    coefficient is called τ; β = 1 is PM with C1 = C2 = 0)."""

    name: ClassVar[str] = "maxent"
    beta: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, 0.0

    def psi_sympy(self, p, q=None):
        import sympy as sp

        return -sp.nsimplify(self.beta) * sp.log(p)


@dataclass(frozen=True, kw_only=True)
class ConditionalPM(AffineLogRegularizer):
    r"""Conditional PM RLHF (PM paper Definition 4.1): ψ = −β log π on M = {π_ref ≥ α},
    −β log(π/π_ref) off M.  π* ∝ e^{r/β} on M and ∝ π_ref e^{r/β} off M, so π* conditioned on
    M is the PL distribution of r/β on M (Theorem 4, the paper's β = 1).

    ``level="sequence"`` is Definition 4.1 (indicator on the sequence probability π_ref(y|x)).
    :meth:`token_reward` pays −β log π(y_t|·) at every token and β·b(y) = β·𝟙[y ∉ M] log π_ref(y|x)
    once, at the last token: b depends on the whole response, and paying its share at an earlier
    token would make that token's reward depend on later tokens (biased with returns-to-go).

    ``level="token"`` is the variant of the paper's code, a different objective: the indicator is
    applied per token on π_ref(y_t | x, y_<t), ψ(y) = −β log π(y) + β Σ_t 𝟙[π_ref(y_t|·) < α]
    log π_ref(y_t|·).  Its optimum over whole responses is :meth:`sequence_optimal_logp`.  On
    one-token responses the two coincide; ``psi`` on whole responses is Definition 4.1 for both.
    """

    name: ClassVar[str] = "cpm"
    alpha: float = 0.3
    level: str = "sequence"
    beta: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "alpha", _check_alpha(self.alpha))
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        if self.level not in ("sequence", "token"):
            raise ValueError(f"level must be 'sequence' or 'token', got {self.level!r}")

    def _b(self, ref_logp):
        xp = namespace(ref_logp)
        off = ref_logp < math.log(self.alpha)
        return xp.where(off, ref_logp, 0.0)

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, self.beta * self._b(_require_ref(ref_logp, self.name))

    def token_terms(self, ref_logp_t, mask_t):
        xp = namespace(ref_logp_t)
        if self.level == "token":
            return self.beta, self.beta * self._b(ref_logp_t), 0.0
        seq = xp.sum(xp.where(mask_t > 0, ref_logp_t, 0.0), axis=-1, keepdims=True)
        return self.beta, 0.0, self.beta * self._b(seq)  # b(y) once, at the last token

    def sequence_optimal_logp(self, r, ref_logp_t, mask_t):
        if self.level == "sequence":
            return super().sequence_optimal_logp(r, ref_logp_t, mask_t)
        xp = namespace(ref_logp_t)
        b = xp.sum(xp.where(mask_t > 0, self._b(ref_logp_t), 0.0), axis=-1)
        _check_reward(r)
        return log_softmax(r / self.beta + b)

    def psi_sympy(self, p, q):
        import sympy as sp

        a, beta = sp.nsimplify(self.alpha), sp.nsimplify(self.beta)
        return beta * sp.Piecewise((-sp.log(p), q >= a), (-sp.log(p / q), True))


@dataclass(frozen=True, kw_only=True)
class MultiRKL(AffineLogRegularizer):
    r"""Multi-reference reverse KL: ψ = −β Σ_i α_i log(π/π_ref,i) (second paper, eq. 17).

    ``ref_logp`` has a leading axis of K references.  b = β Σ_i α_i log π_ref,i is the
    log of the *unnormalized* geometric mixture, so π* ∝ π̂_α e^{r/β} with π̂_α the generalized
    escort distribution (Theorem 5.2) and J(π*) = β log Σ_y Π_i π_ref,i^{α_i} e^{r/β}.
    """

    name: ClassVar[str] = "multi_rkl"
    multi_reference: ClassVar[bool] = True
    weights: tuple = (0.5, 0.5)
    beta: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        object.__setattr__(self, "weights", _check_weights(self.weights))

    def _check_k(self, ref_logp):
        ref_logp = _require_ref(ref_logp, self.name)
        if ref_logp.shape[0] != len(self.weights):
            raise ValueError(
                f"ref_logp has {ref_logp.shape[0]} references on its leading axis but weights has {len(self.weights)}"
            )
        return ref_logp

    def coefficients(self, ref_logp=None, like=None):
        ref_logp = self._check_k(ref_logp)
        return self.beta, self.beta * weighted_sum(self.weights, ref_logp)

    def gibbs_logits(self, r, ref_logp=None, out=None, work=None):
        # b/a = Σ_i α_i log π_ref,i, the unnormalized escort log-density
        ref_logp = self._check_k(ref_logp)
        if out is None:
            return _add(r * (1.0 / self.beta), weighted_sum(self.weights, ref_logp))
        weighted_sum(self.weights, ref_logp, out=out)
        out += r * (1.0 / self.beta) if work is None else np.multiply(r, 1.0 / self.beta, out=work)
        return out

    def psi_sympy(self, p, q):
        import sympy as sp

        return -sp.nsimplify(self.beta) * sum(
            sp.nsimplify(w) * sp.log(p / qi) for w, qi in zip(self.weights, q)
        )


@dataclass(frozen=True, kw_only=True)
class Weighted(AffineLogRegularizer):
    """Sum of affine regularizers (like optax.chain): ψ = Σ_k ψ_k, a = Σ a_k, b = Σ b_k."""

    name: ClassVar[str] = "weighted"
    terms: tuple = ()

    def __post_init__(self):
        if not self.terms:
            raise ValueError("weighted() needs at least one regularizer")
        for t in self.terms:
            if not isinstance(t, AffineLogRegularizer):
                raise ValueError(
                    f"weighted() composes affine-in-log-π regularizers only; {t.name!r} is not one"
                )
        if len({t.multi_reference for t in self.terms}) > 1:
            raise ValueError("weighted() cannot mix single- and multi-reference regularizers")

    @property
    def multi_reference(self):  # type: ignore[override]
        return self.terms[0].multi_reference

    @property
    def reward_gradient_exact(self) -> bool:
        return all(t.reward_gradient_exact for t in self.terms)

    @property
    def loss_gradient_exact(self) -> bool:
        return all(t.loss_gradient_exact for t in self.terms)

    def coefficients(self, ref_logp=None, like=None):
        a, b = 0.0, 0.0
        for t in self.terms:
            at, bt = t.coefficients(ref_logp if _needs_ref(t) else None, like=like)
            a, b = a + at, b + bt
        return a, b

    def _blockable_params(self) -> bool:
        return all(t._blockable_params() for t in self.terms)

    def constant_sum(self, like):
        return sum(t.constant_sum(like) for t in self.terms)

    def psi(self, logp, ref_logp=None):
        return sum(t.psi(logp, ref_logp if _needs_ref(t) else None) for t in self.terms)

    def pi_psi(self, logp, ref_logp=None):
        return sum(t.pi_psi(logp, ref_logp if _needs_ref(t) else None) for t in self.terms)

    def token_terms(self, ref_logp_t, mask_t):
        a, b, c = 0.0, 0.0, 0.0
        for t in self.terms:
            at, bt, ct = t.token_terms(ref_logp_t if _needs_ref(t) else None, mask_t)
            a, b, c = a + at, b + bt, c + ct
        return a, b, c

    def psi_sympy(self, p, q):
        return sum(t.psi_sympy(p, q) for t in self.terms)


def _needs_ref(t) -> bool:
    return isinstance(t, (KL, ConditionalPM, MultiRKL, Weighted))


# --------------------------------------------------------------------------- f-divergences
@dataclass(frozen=True)
class FSpec:
    r"""A convex f with f(1) = 0 and what the optimum of Section 5.1 needs of it.

    With v = (r − λ)/β the stationarity condition of E_π[r] − β Σ π_ref f(π/π_ref) is
    f'(π/π_ref) = v, so π = π_ref·h(v), h = (f')⁻¹ (clipped at 0 where f'(0) is finite).
    h is written in a *gap* variable g = v₀ − v about an anchor v₀ — the pole of h where h has
    one — so that the root-finder keeps full precision next to the pole.  ``moments(xp, q, g, L)``
    returns S = Σ q h(g) and its scaled derivatives (L·S', L²·S'') for a length scale L ≤ g
    (given numpy buffers ``work=`` it may overwrite ``g`` and ``work`` instead of allocating),
    ``log_h(xp, g, out=None)`` gives log h for the returned log-policy, ``h_inv`` inverts h
    (used for the starting point), ``pole_power`` p says h ~ g^{-p} at the pole (0: no pole).
    """

    name: str
    f_over_u: Callable  # (xp, L=log u) -> f(u)/u
    f_sympy: Callable  # u -> sympy f(u)
    f_at_0: float  # f(0) (may be inf)
    fprime_inf: float  # lim f'(u), u → ∞ (may be inf)
    anchor: float  # v₀
    pole_power: float  # p: h ~ g^{-p} as g → 0+ (0 when h has no pole)
    g_one: float  # h(g_one) = 1, i.e. g_one = v₀ − f'(1)
    moments: Callable  # (xp, q, g, L, work=None) -> (S, L·S', L²·S'') of S = Σ q h(g)
    log_h: Callable  # (xp, g, out=None) -> log h
    h_inv: Callable  # (xp, y) -> g with h(g) = y (pole types)


# Moments of S(d) = Σ_y q_y h(g_y) used by the root-finder: (S, L·S', L²·S'') for a length scale
# L ≤ g, written with L/g ≤ 1 so that nothing overflows when π_ref(top) and the gap are 1e-300.
# Each is a few fused passes over the array (vecdot = multiply + sum in one pass).
def _rkl_moments(xp, q, g, L, work=None):
    # h = 1/g; with u = L/g ≤ 1 and w = q·u: S = Σw/L, L·S' = −Σ w u/L, L²·S'' = 2 Σ w u²/L
    if work is None:
        u = L / g
        w = q * u
    else:  # numpy buffers: g (overwritten) and work, no temporary of the block's size
        u = np.divide(L, g, out=g)
        w = np.multiply(q, u, out=work)
    inv_L = 1.0 / L[..., 0]
    S = xp.sum(w, axis=-1) * inv_L
    S1 = -xp.vecdot(w, u) * inv_L
    w *= u
    return S, S1, 2.0 * xp.vecdot(w, u) * inv_L


def _hel_moments(xp, q, g, L, work=None):
    t = 1.0 / g  # h = 1/g²
    ut = L * t
    w = q * t
    w *= t
    S = xp.sum(w, axis=-1)
    S1 = -2.0 * xp.vecdot(w, ut)
    w *= ut
    return S, S1, 6.0 * xp.vecdot(w, ut)


def _js_moments(xp, q, g, L, work=None):
    h = 1.0 / xp.expm1(g)  # h = 1/(e^g − 1), h' = −h(h + 1), h'' = h(h + 1)(2h + 1)
    w = q * h
    S = xp.sum(w, axis=-1)
    Lh1 = L / (-xp.expm1(-g))  # L·(h + 1) = L e^g/(e^g − 1) ≤ L(1/g + 1): no overflow
    S1 = -xp.vecdot(w, Lh1)
    w *= Lh1
    return S, S1, xp.vecdot(w, L * (2.0 * h + 1.0))


def _chi2_moments(xp, q, g, L, work=None):
    h = xp.clip(1.0 - 0.5 * g, 0.0, None)  # h = (1 − g/2)_+, h' = −1/2 where h > 0
    S = xp.sum(q * h, axis=-1)
    S1 = -0.5 * L[..., 0] * xp.sum(xp.where(h > 0, q, 0.0), axis=-1)
    return S, S1, xp.zeros_like(S)


def _kl_moments(xp, q, g, L, work=None):
    w = q * xp.exp(-g)
    S = xp.sum(w, axis=-1)
    return S, -L[..., 0] * S, L[..., 0] ** 2 * S


def _log_chi2_h(xp, g, out=None):
    t = 1.0 - g / 2.0
    with quiet():
        return _into(xp.where(t > 0, xp.log(xp.where(t > 0, t, 1.0)), -math.inf), out)


def _into(x, out):
    """``x``, copied into ``out`` when a numpy buffer is given (log_h for the blocked path)."""
    if out is None:
        return x
    out[...] = x
    return out


def _rkl_log_h(xp, g, out=None):
    if out is None:
        return -xp.log(g)
    return np.negative(np.log(g, out=out), out=out)


def _sympy():
    import sympy

    return sympy


F_DIVERGENCES: dict[str, FSpec] = {
    "kl": FSpec(
        "kl", lambda xp, L: L, lambda u: u * _sympy().log(u), 0.0, math.inf,
        anchor=1.0, pole_power=0.0, g_one=0.0,
        moments=_kl_moments, log_h=lambda xp, g, out=None: _into(-g, out), h_inv=lambda xp, y: -xp.log(y),
    ),
    "reverse_kl": FSpec(
        "reverse_kl", lambda xp, L: -L * xp.exp(-L), lambda u: -_sympy().log(u), math.inf, 0.0,
        anchor=0.0, pole_power=1.0, g_one=1.0,
        moments=_rkl_moments, log_h=_rkl_log_h, h_inv=lambda xp, y: 1.0 / y,
    ),
    "chi2": FSpec(
        "chi2", lambda xp, L: xp.exp(L) - 2.0 + xp.exp(-L), lambda u: (u - 1) ** 2, 1.0, math.inf,
        anchor=0.0, pole_power=0.0, g_one=0.0,
        moments=_chi2_moments, log_h=_log_chi2_h, h_inv=lambda xp, y: 2.0 * (1.0 - y),
    ),
    "hellinger": FSpec(
        "hellinger", lambda xp, L: (1.0 - xp.exp(-L / 2.0)) ** 2, lambda u: (_sympy().sqrt(u) - 1) ** 2,
        1.0, 1.0, anchor=1.0, pole_power=2.0, g_one=1.0,
        moments=_hel_moments, log_h=lambda xp, g, out=None: _into(-2.0 * xp.log(g), out), h_inv=lambda xp, y: 1.0 / xp.sqrt(y),
    ),
    "js": FSpec(
        "js",
        lambda xp, L: L - (1.0 + xp.exp(-L)) * (xp.logaddexp(xp.zeros_like(L), L) - math.log(2.0)),
        lambda u: u * _sympy().log(u) - (1 + u) * _sympy().log((1 + u) / 2),
        math.log(2.0), math.log(2.0), anchor=math.log(2.0), pole_power=1.0, g_one=math.log(2.0),
        moments=_js_moments, log_h=lambda xp, g, out=None: _into(-xp.log(xp.expm1(g)), out), h_inv=lambda xp, y: xp.log1p(1.0 / y),
    ),
}


def solve_normalizer(spec: FSpec, s, ref_logp, *, tol: float = 1e-13, max_iter: int = 300, scratch=None):
    r"""Solve Σ_y π_ref(y)·h(s_y − μ) = 1 for μ, row-wise and vectorized.

    ``s`` = r/β.  Write μ = s_max − v₀ + d, so the gap of response y is g_y = d + (s_max − s_y)
    ≥ d, with s_max the largest s on the support of π_ref, and S(d) = Σ_y π_ref(y) h(g_y) is
    strictly decreasing in d.  For h with a pole h ~ g^{-p} each step fits the model
    S ≈ a/(d + c)^p + b to (S, S', S'') and jumps to the model's root (a rational,
    Halley-type step; Newton on S^{-1/p} when the model is unusable), starting from the larger
    of two points where S ≥ 1 (the top response's pole alone, and Jensen's bound); for χ²
    (no pole, S convex) Newton runs from a Jensen lower bound.
    A bracket is kept and any step leaving it is replaced by bisection, so convergence holds
    for every h; the loop stops at |S − 1| ≤ ``tol``.  Each iteration is a handful of passes
    over the array (no exp/log), which keeps the batched solver near the memory-bound floor.

    Returns (d, s_max, on, base, log_rows) with d, s_max of shape [..., 1], ``on`` the support
    mask (``None`` when π_ref > 0 everywhere) and ``base`` = s_max − s on it; the policy is
    log π = log π_ref + log h(d + base).  ``log_rows`` is ``None``, or (mask, log d) for the rows
    whose top response has π_ref < 1e-300: there d underflows, and log g = logaddexp(log d,
    log base) gives the policy exactly (:func:`_solve_log_rows`).

    ``scratch`` (numpy [rows, n] ``s``, the row-blocked path): three buffers of ``s``'s shape
    (for π_ref, the gaps and the moments' work); with full support ``s`` itself is overwritten
    by ``base``, so that an iteration allocates nothing of the block's size.
    """
    xp = namespace(s, ref_logp)
    with quiet():
        full = math.prod(ref_logp.shape) == 0 or bool(xp.min(ref_logp) > -math.inf)  # no mask array
        on = None if full else ref_logp > -math.inf
        if full and scratch is not None and s.ndim == 2:
            q_buf, g_buf, work = scratch
            idx = np.argmax(s, axis=-1)[:, None]  # one pass for s_max and the top response
            s_max = np.take_along_axis(s, idx, axis=-1)
            base = np.subtract(s_max, s, out=s)
            q = np.exp(ref_logp, out=q_buf)
        elif full:  # full support: skip the masking passes
            s_max = xp.max(s, axis=-1, keepdims=True)
            base = s_max - s
            q = xp.exp(ref_logp)
            g_buf = work = None
        else:
            s_max = xp.max(xp.where(on, s, -math.inf), axis=-1, keepdims=True)
            base = xp.where(on, s_max - s, 0.0)
            q = xp.exp(ref_logp)  # 0 off the support
            g_buf = work = None
        p = spec.pole_power
        hi = xp.zeros_like(s_max) + spec.g_one  # S(hi) ≤ 1: every gap ≥ g_one, so h ≤ 1
        if p > 0:
            # S(d) ≥ q_top h(d) (the responses with s = s_max), so S ≥ 1 at d = h⁻¹(1/q_top):
            # a left end of the bracket that is > 0 — geometric bisection works even when
            # π_ref(top) is 1e-300 — and the length scale L of the iteration (e = d/L)
            if work is not None:  # π_ref of one top response (≤ the sum over ties: still a bound)
                q_top = np.take_along_axis(q, idx, axis=-1)
            else:
                q_top = xp.sum(xp.where(base == 0, q, 0.0), axis=-1, keepdims=True)
            # rows whose top response has π_ref below the normal range (log π_ref < −690, e.g.
            # a long sequence): q_top and the gap d underflow, so those rows are solved in log
            # space (:func:`_solve_log_rows`) and skipped here (q_top = 1 keeps them harmless)
            tiny = q_top < _TINY
            if bool(xp.any(tiny)):
                log_q_top = logsumexp(xp.where(base == 0, ref_logp, -math.inf), axis=-1, keepdims=True)
                q_top = xp.where(tiny, 1.0, q_top)
            else:
                tiny = None
            lo = xp.minimum(spec.h_inv(xp, 1.0 / q_top), hi)
            L = lo
            # start from the larger of two left points (S ≥ 1 at both): lo, and Jensen's bound
            # (h convex: S(d) ≥ h(d + E_q[base]), so S ≥ 1 at d = g_one − E_q[base]).  The
            # rational step from a left point reaches |S − 1| ≤ 1e-13 in 2–3 evaluations for
            # rewards ~ N(0, 1) and β from 0.05 to 5 (from the right end it took 4–6)
            d = xp.maximum(lo, spec.g_one - xp.vecdot(q, base)[..., None])
        else:
            s_min = s_max - xp.max(xp.where(q > 0, base, 0.0), axis=-1, keepdims=True)
            lo = spec.g_one - (s_max - s_min) - 1.0  # every gap ≤ g_one − 1: h ≥ 1, S ≥ 1
            L = xp.ones_like(lo)
            # Jensen (h convex): S(d) ≥ h(d + E_q[base]), so the root has d ≥ g_one − E_q[base];
            # S is convex, so Newton from this left point increases monotonically to the root
            d = xp.maximum(lo, spec.g_one - xp.vecdot(q, base)[..., None])
            tiny = None  # no pole: nothing underflows with π_ref(top)
        # iterate on the rows that have not converged yet (rows are independent)
        base, q = xp.broadcast_arrays(base, q)  # r and π_ref may broadcast against each other
        d, lo, hi, L = xp.broadcast_arrays(d, lo, hi, L)
        shape = d.shape
        n = base.shape[-1]
        base2, q2 = xp.reshape(base, (-1, n)), xp.reshape(q, (-1, n))
        d, lo, hi, L = (xp.reshape(x, (-1, 1)) for x in (d, lo, hi, L))
        active = None  # None: all rows
        ba, qa, da, loa, hia, La = base2, q2, d, lo, hi, L
        if tiny is not None:  # start on the other rows only
            tiny2 = xp.reshape(xp.broadcast_to(tiny, shape), (-1,))
            d, lo, hi = (xp.asarray(x, copy=True) for x in (d, lo, hi))
            active = xp.nonzero(~tiny2)[0]
            ba, qa, da, loa, hia, La = (x[active, ...] for x in (base2, q2, d, lo, hi, L))
        for _ in range(max_iter if da.shape[0] else 0):
            if work is None:
                mom = spec.moments(xp, qa, da + ba, La)
            else:
                k = da.shape[0]
                mom = spec.moments(xp, qa, np.add(da, ba, out=g_buf[:k]), La, work=work[:k])
            S, dS, d2S = (x[..., None] for x in mom)
            done = xp.abs(S - 1.0) <= tol
            lo_new = xp.where(S > 1.0, da, loa)
            hi_new = xp.where(S > 1.0, hia, da)
            loa, hia = lo_new, hi_new
            e = da / La
            if p > 0:
                # fit S ≈ a/(e + c)^p + b to (S, S', S'') and solve the model exactly: a rational
                # (Halley-type) step that captures the far responses as the constant b
                ec = -(p + 1.0) * dS / d2S  # e + c
                a = -dS * ec ** (p + 1.0) / p
                b = S - a / ec**p
                model = (a / (1.0 - b)) ** (1.0 / p) - (ec - e)
                # fallback: Newton on F = S^{-1/p}, F' = -(1/p) S^{-1/p-1} S'
                F = S ** (-1.0 / p)
                newton_e = e - (F - 1.0) / (-(1.0 / p) * F / S * dS)
                cand = La * model
                use_model = xp.isfinite(model) & (b < 1.0) & (cand > loa) & (cand < hia)
                step = xp.where(use_model, cand, La * newton_e)
            else:
                step = La * (e - (S - 1.0) / dS)
            bad = ~xp.isfinite(step) | (step < loa) | (step > hia) | (step == da)
            geo = (loa > 0) & (hia > 4.0 * loa)
            mid = xp.where(geo, xp.sqrt(xp.abs(loa)) * xp.sqrt(xp.abs(hia)), 0.5 * (loa + hia))
            da = xp.where(done, da, xp.where(bad, mid, step))
            if active is None:
                d, lo, hi = da, loa, hia
            else:
                d[active], lo[active], hi[active] = da, loa, hia
            keep = ~done[:, 0]
            n_keep = int(xp.sum(xp.astype(keep, xp.int64)))
            if n_keep == 0:
                break
            if n_keep < 0.5 * keep.shape[0]:  # compact: iterate on the unconverged rows only
                active = xp.nonzero(keep)[0] if active is None else active[keep]
                ba, qa, da, loa, hia, La = (x[active, ...] for x in (base2, q2, d, lo, hi, L))
        else:
            S = spec.moments(xp, q2, d + base2, L)[0]
            if tiny is not None:
                S = xp.where(tiny2, 1.0, S)
            if da.shape[0] and not bool(xp.all(xp.abs(S - 1.0) <= 1e-10)):
                raise RuntimeError(
                    f"solve_normalizer({spec.name}) did not converge in {max_iter} steps "
                    f"(max |Σπ − 1| = {float(xp.max(xp.abs(S - 1.0))):.3g}); please report this input"
                )
        d = xp.reshape(d, shape)
        log_rows = None
        if tiny is not None:
            log_d = _solve_log_rows(spec, ref_logp, base, log_q_top, tiny)
            d = xp.where(tiny, xp.exp(log_d), d)
            log_rows = (tiny, log_d)
        return d, s_max, on, base, log_rows


#: π_ref of the top response below which a row is solved in log space (the normal range of
#: float64 ends at 2.2e-308; below 1e-300 the gap d loses digits or underflows)
_TINY = 1e-300


def _log_h_of_log_g(spec: FSpec, xp, log_g):
    """log h(g) from log g, exact where g underflows: h ~ g^(−p) at the pole
    (rkl 1/g, Hellinger 1/g², JS 1/(e^g − 1) = 1/g − 1/2 + …)."""
    small = log_g < -600.0
    g = xp.exp(xp.where(small, 0.0, log_g))
    return xp.where(small, -spec.pole_power * log_g, spec.log_h(xp, g))


def _solve_log_rows(spec: FSpec, ref_logp, base, log_q_top, rows, tol: float = 1e-15, max_iter: int = 400):
    r"""log d with Σ_y π_ref(y) h(d + base_y) = 1 in log space, for the ``rows`` whose top
    response has π_ref below 1e-300 (0 is returned on the other rows, which are not computed).

    F(t) = logsumexp_y(log π_ref(y) + log h(g_y)), log g_y = logaddexp(t, log base_y), is
    decreasing in t = log d.  F ≥ 0 at t = log π_ref(top)/p − 1 (the top's pole alone:
    h(d) ≥ d^(−p)(1 − o(1))) and F ≤ 0 at t = log g_one (every h ≤ 1); Illinois regula falsi
    keeps that bracket and stops when |F| ≤ ``tol`` or the bracket is below ``tol``·|t|.  Every
    quantity stays a logarithm, so π_ref(top) = e^−5000 still gives log π exactly; the top may
    even take most of the mass (reverse KL does not collapse onto π_ref's support).
    """
    xp = namespace(ref_logp, base)
    with quiet():
        ref_b, base_b = xp.broadcast_arrays(ref_logp, base)
        n = base_b.shape[-1]
        shape = rows.shape
        # only the flagged rows are iterated (a batch may hold a handful of them)
        idx = xp.nonzero(xp.reshape(xp.broadcast_to(rows, base_b.shape[:-1] + (1,)), (-1,)))[0]
        ref_r = xp.reshape(ref_b, (-1, n))[idx, ...]
        log_b = xp.log(xp.reshape(base_b, (-1, n))[idx, ...])  # −inf for the top response(s)

        def F(t):
            log_g = xp.logaddexp(t, log_b)
            return logsumexp(ref_r + _log_h_of_log_g(spec, xp, log_g), axis=-1, keepdims=True)

        a = xp.reshape(xp.broadcast_to(log_q_top, shape), (-1, 1))[idx, ...] / spec.pole_power - 1.0
        b = xp.zeros_like(a) + math.log(spec.g_one)
        fa, fb = F(a), F(b)
        t = b
        side = xp.zeros_like(a)  # Illinois: which end was kept last (−1 left, +1 right)
        for _ in range(max_iter):
            t = (a * fb - b * fa) / (fb - fa)  # the secant root inside [a, b] (fa > 0 > fb)
            t = xp.where(xp.isfinite(t) & (t > a) & (t < b), t, 0.5 * (a + b))
            ft = F(t)
            done = (xp.abs(ft) <= tol) | (b - a <= tol * xp.maximum(1.0, xp.abs(t)))
            if bool(xp.all(done)):
                break
            left = ft > 0  # root to the right of t
            fb = xp.where(left & (side > 0), 0.5 * fb, fb)  # Illinois halving of the stale end
            fa = xp.where(~left & (side < 0), 0.5 * fa, fa)
            a, fa = xp.where(left, t, a), xp.where(left, ft, fa)
            b, fb = xp.where(left, b, t), xp.where(left, fb, ft)
            side = xp.where(left, 1.0, -1.0)
        else:
            raise RuntimeError(f"solve_normalizer({spec.name}): the log-space rows did not converge; please report this input")
        out = xp.reshape(xp.zeros_like(xp.broadcast_to(log_q_top, shape)), (-1, 1))
        out[idx, ...] = t
        return xp.reshape(out, shape)


@dataclass(frozen=True, kw_only=True)
class FDivergence(Regularizer):
    r"""f-divergence RLHF: maximize E_π[r] − β D_f(π‖π_ref), D_f = Σ π_ref f(π/π_ref)
    (PM paper, Section 5.1).  ψ = −β (π_ref/π) f(π/π_ref).

    Stationarity gives π* = π_ref·(f')⁻¹((r − λ)/β) with λ fixed by Σ π* = 1.  The paper's
    (5.3) writes the pairwise preference with (f')⁻¹(r/β), i.e. without λ; that is exact only
    when (f')⁻¹ is an exponential (KL), for which λ factors out.  Here λ is solved for.

    Where π_ref(y) = 0 the term is the perspective limit −β π(y) f'(∞): with f'(∞) < ∞
    (reverse KL, Hellinger, JS) mass off the reference support is penalized only linearly, and
    the optimum puts the leftover mass on the best such response when its reward beats λ.
    """

    name: ClassVar[str] = "fdiv"
    f: str = "kl"
    beta: float = 1.0

    def __post_init__(self):
        if self.f not in F_DIVERGENCES:
            raise ValueError(f"f must be one of {sorted(F_DIVERGENCES)}, got {self.f!r}")
        object.__setattr__(self, "beta", check_positive("beta", self.beta))

    @property
    def spec(self) -> FSpec:
        return F_DIVERGENCES[self.f]

    @property
    def reward_gradient_exact(self) -> bool:
        return self.f == "kl"

    @property
    def token_additive(self):  # type: ignore[override]
        return self.f == "kl"

    def token_reward(self, logp_t, ref_logp_t, mask_t):
        if self.f == "kl":
            return KL(beta=self.beta).token_reward(logp_t, ref_logp_t, mask_t)
        return super().token_reward(logp_t, ref_logp_t, mask_t)

    def psi(self, logp, ref_logp=None):
        ref_logp = _require_ref(ref_logp, self.name)
        xp = namespace(logp)
        with quiet():
            return -self.beta * self.spec.f_over_u(xp, logp - ref_logp)

    def pi_psi(self, logp, ref_logp=None):
        ref_logp = _require_ref(ref_logp, self.name)
        xp = namespace(logp)
        sp = self.spec
        with quiet():
            p, q = xp.exp(logp), xp.exp(ref_logp)
            both = (p > 0) & (q > 0)
            inner = p * sp.f_over_u(xp, xp.where(both, logp - ref_logp, 0.0))
            out = xp.where(both, -self.beta * inner, 0.0)
            out = xp.where((p == 0) & (q > 0), -self.beta * sp.f_at_0 * q, out)
            off = (p > 0) & (q == 0)
            out = xp.where(off, -self.beta * sp.fprime_inf * p if math.isfinite(sp.fprime_inf) else -math.inf, out)
            return out

    def _solve(self, r, ref_logp, out=None, scratch=None):
        """(log π*, μ = λ/β, μ − max s on the support) for each row.

        ``out``/``scratch`` (numpy, from :meth:`_solve_blocked`): the log-policy buffer and four
        buffers of ``r``'s shape; the reward is then checked by the caller.
        """
        ref_logp = _require_ref(ref_logp, self.name)
        if out is None:
            if self.f != "kl" and blockable(r, ref_logp, ref_ndim=2):
                return self._solve_blocked(r, ref_logp)
            _check_reward(r)
        xp = namespace(r, ref_logp)
        sp = self.spec
        if scratch is None:
            s = r / self.beta
        else:
            s = np.multiply(r, 1.0 / self.beta, out=scratch[0])
        if self.f == "kl":
            with quiet():
                logp = log_softmax(ref_logp + s)
                mu = logsumexp(ref_logp + s, keepdims=True) - 1.0  # (f')⁻¹(v) = e^{v−1}
                s_max = xp.max(xp.where(ref_logp > -math.inf, s, -math.inf), axis=-1, keepdims=True)
            return logp, mu, mu - s_max
        d, s_max, on, base, log_rows = solve_normalizer(
            sp, s, ref_logp, scratch=None if scratch is None else scratch[1:]
        )
        full_support = on is None
        with quiet():
            if log_rows is not None:  # rows solved in log space: log g from log d, exactly
                tiny, log_d = log_rows
                log_g = xp.logaddexp(log_d, xp.log(base))
                logp_log = ref_logp + _log_h_of_log_g(sp, xp, log_g)
                if not full_support:
                    logp_log = xp.where(on, logp_log, -math.inf)
            if full_support and out is not None and log_rows is None:  # base is scratch[0] (s overwritten)
                g = np.add(d, base, out=base)
                logp = np.add(ref_logp, sp.log_h(xp, g, out=g), out=out)
            elif full_support:
                logp = ref_logp + sp.log_h(xp, d + base)
            else:
                g = d + base
                logp = xp.where(on, ref_logp + sp.log_h(xp, xp.where(on, g, 1.0)), -math.inf)
            mu = s_max - sp.anchor + d
            gap = d - sp.anchor  # μ − s_max without the rounding of μ (exact when v₀ = 0)
            if math.isfinite(sp.fprime_inf) and not full_support:
                # responses off the reference support: marginal value s − f'(∞) per unit mass
                off_val = xp.where(on, -math.inf, s - sp.fprime_inf)
                c = xp.max(off_val, axis=-1, keepdims=True)
                use = c > mu
                if bool(xp.any(use)):
                    d_c = c - s_max + sp.anchor
                    g_c = d_c + base
                    logp_c = xp.where(on, ref_logp + sp.log_h(xp, xp.where(on, g_c, 1.0)), -math.inf)
                    mass_on = xp.exp(logsumexp(logp_c, keepdims=True))
                    ties = (off_val == c)
                    n_ties = xp.sum(xp.astype(ties, s.dtype), axis=-1, keepdims=True)
                    rest = xp.log(xp.clip(1.0 - mass_on, 0.0, 1.0)) - xp.log(n_ties)
                    logp_c = xp.where(ties, rest + xp.zeros_like(s), logp_c)
                    logp = xp.where(use, logp_c, logp)
                    mu = xp.where(use, c, mu)
                    gap = xp.where(use, c - s_max, gap)
            if log_rows is not None:
                keep_log = tiny if not (math.isfinite(sp.fprime_inf) and not full_support) else tiny & ~use
                logp = xp.where(keep_log, logp_log, logp)
        if out is not None and logp is not out:
            out[...] = logp
            logp = out
        return logp, mu, gap

    def _solve_blocked(self, r, ref_logp, ref_block=None):
        """:meth:`_solve` over row blocks of about 1 MB (rows are independent problems) with
        four scratch buffers reused by every block: the root-finder's passes stay in cache and
        allocate nothing of the array's size.  ``ref_block(block, out, work)`` maps each block
        of ``ref_logp`` to the reference log-probabilities (the multi-reference mixture, formed
        block by block into two more buffers)."""
        n_rows, n = r.shape
        logp = np.empty(np.broadcast_shapes(r.shape, ref_logp.shape[-2:]))
        mu, gap = np.empty((n_rows, 1)), np.empty((n_rows, 1))
        blocks = row_blocks(n_rows, n)
        bufs = [np.empty((blocks[0].stop - blocks[0].start, n)) for _ in range(4 if ref_block is None else 6)]
        for sl in blocks:
            k = sl.stop - sl.start
            _check_reward(r[sl])
            ref = take_rows(ref_logp, sl, n_rows)
            if ref_block is not None:
                ref = ref_block(ref, bufs[4][:k], bufs[5][:k])
            _, mu[sl], gap[sl] = self._solve(r[sl], ref, out=logp[sl], scratch=[b[:k] for b in bufs[:4]])
        return logp, mu, gap

    def optimal_logp(self, r, ref_logp=None):
        return self._solve(r, ref_logp)[0]

    def lagrange_multiplier(self, r, ref_logp):
        """λ of the optimum, π* = π_ref (f')⁻¹((r − λ)/β) (shape [..., 1])."""
        return self.beta * self._solve(r, ref_logp)[1]

    def lagrange_gap(self, r, ref_logp):
        """λ − max_{y ∈ supp π_ref} r(y), computed without forming λ (which can round onto
        max r when the gap is below one ulp of λ, e.g. β = 1e-3 and a tiny π_ref(top))."""
        return self.beta * self._solve(r, ref_logp)[2]

    def cvx_objective(self, pi_var, r, ref):
        import cvxpy as cp

        r = np.asarray(r, float)
        ref = np.asarray(ref, float)
        on = ref > 0
        idx, off = np.flatnonzero(on), np.flatnonzero(~on)
        x, q = pi_var[idx], ref[idx]
        if self.f == "kl":
            div = cp.sum(cp.rel_entr(x, q))
        elif self.f == "reverse_kl":
            div = cp.sum(cp.rel_entr(q, x))
        elif self.f == "chi2":
            div = cp.sum(cp.multiply(1.0 / q, cp.square(x - q)))
        elif self.f == "hellinger":
            div = cp.sum(x) + float(q.sum()) - 2 * cp.sum(cp.multiply(np.sqrt(q), cp.sqrt(x)))
        elif self.f == "js":
            m = x + q
            div = cp.sum(cp.rel_entr(x, m)) + cp.sum(cp.rel_entr(q, m)) + (cp.sum(x) + float(q.sum())) * math.log(2.0)
        else:  # pragma: no cover
            raise ValueError(self.f)
        expr = r @ pi_var - self.beta * div
        if off.size and math.isfinite(self.spec.fprime_inf):
            expr = expr - self.beta * self.spec.fprime_inf * cp.sum(pi_var[off])
        return expr

    def cvx_constraints(self, pi_var, r, ref):
        off = np.flatnonzero(np.asarray(ref) <= 0)
        if off.size and not math.isfinite(self.spec.fprime_inf):
            return [pi_var[off] == 0]
        return []

    def psi_sympy(self, p, q):
        import sympy as sp

        return -sp.nsimplify(self.beta) * (q / p) * self.spec.f_sympy(p / q)


@dataclass(frozen=True, kw_only=True)
class MultiFKL(Regularizer):
    r"""Multi-reference forward KL: J = E_π[r] − β Σ_i α_i KL(π_ref,i ‖ π) (second paper, eq. 28).

    By Lemma 6.1, Σ α_i KL(P_i‖π) = KL(P̄_α‖π) + Σ α_i KL(P_i‖P̄_α) with P̄_α = Σ α_i P_i, so
    the optimum is the reverse-KL f-divergence optimum against the arithmetic mixture,
    π* = β P̄_α/(λ − r) (Theorem 6.2, package β), with λ > max r solved by
    :func:`solve_normalizer`.  ψ = −β Σ_i α_i (π_ref,i/π) log(π_ref,i/π) is not affine in
    log π: train with its exact gradient, not as a sampled reward.
    """

    name: ClassVar[str] = "multi_fkl"
    multi_reference: ClassVar[bool] = True
    token_additive: ClassVar[bool] = False
    weights: tuple = (0.5, 0.5)
    beta: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        object.__setattr__(self, "weights", _check_weights(self.weights))

    def _check_k(self, ref_logp):
        ref_logp = _require_ref(ref_logp, self.name)
        if ref_logp.shape[0] != len(self.weights):
            raise ValueError(
                f"ref_logp has {ref_logp.shape[0]} references on its leading axis but weights has {len(self.weights)}"
            )
        return ref_logp

    def mixture_logp(self, ref_logp, out=None, work=None):
        """log P̄_α = log Σ_i α_i π_ref,i (the arithmetic mixture, eq. 30); ``out``/``work``:
        numpy buffers of the row-blocked path (:func:`.distributions.arithmetic_mixture`)."""
        from prefmatch.theory.distributions import arithmetic_mixture

        return arithmetic_mixture(self._check_k(ref_logp), self.weights, out=out, work=work)

    @property
    def _single(self) -> FDivergence:
        return FDivergence(f="reverse_kl", beta=self.beta)

    def psi(self, logp, ref_logp=None):
        xp = namespace(logp)
        ref_logp = self._check_k(ref_logp)
        with quiet():
            terms = xp.exp(ref_logp - logp) * (ref_logp - logp)
            terms = xp.where(ref_logp > -math.inf, terms, 0.0)
            return -self.beta * weighted_sum(self.weights, terms)

    def pi_psi(self, logp, ref_logp=None):
        xp = namespace(logp)
        ref_logp = self._check_k(ref_logp)
        with quiet():
            q = xp.exp(ref_logp)
            terms = xp.where(q > 0, q * (ref_logp - logp), 0.0)
            return -self.beta * weighted_sum(self.weights, terms)

    def _solve(self, r, ref_logp):
        """The reverse-KL optimum against the mixture; for a large numpy batch the mixture is
        formed block by block inside the single-reference solver's row loop."""
        ref_logp = self._check_k(ref_logp)
        if blockable(r, ref_logp, ref_ndim=3):
            return self._single._solve_blocked(r, ref_logp, ref_block=self.mixture_logp)
        return self._single._solve(r, self.mixture_logp(ref_logp))

    def optimal_logp(self, r, ref_logp=None):
        return self._solve(r, ref_logp)[0]

    def lagrange_multiplier(self, r, ref_logp):
        """λ_x of Theorem 6.2 (package β): Σ_y β P̄_α(y)/(λ − r(y)) = 1."""
        return self.beta * self._solve(r, ref_logp)[1]

    def lagrange_gap(self, r, ref_logp):
        """λ_x − max r on the mixture's support, without the rounding of λ_x."""
        return self.beta * self._solve(r, ref_logp)[2]

    def cvx_objective(self, pi_var, r, ref):
        import cvxpy as cp

        ref = np.asarray(ref, float)
        div = 0
        for w, q in zip(self.weights, ref):
            on = np.flatnonzero(q > 0)
            div = div + w * cp.sum(cp.rel_entr(q[on], pi_var[on]))
        return np.asarray(r, float) @ pi_var - self.beta * div

    def psi_sympy(self, p, q):
        import sympy as sp

        return -sp.nsimplify(self.beta) * sum(
            sp.nsimplify(w) * (qi / p) * sp.log(qi / p) for w, qi in zip(self.weights, q)
        )


# --------------------------------------------------------------------------- generalized link
@dataclass(frozen=True, kw_only=True)
class GeneralizedPM(Regularizer):
    r"""PM regularizer for a generalized PL link g (PM paper Theorem 3, eq. 3.14):
    R(π) = −g⁻¹(π) + C1 + (G(g⁻¹(π)) + C2)/π, G' = g, and ψ = β·R(π) (the paper's β = 1).

    Then (π R(π))' = −g⁻¹(π) + C1, so the stationarity condition of Σ π (r + R(π)) reads
    g⁻¹(π_y) = r_y + C1 − λ, i.e. π* = g(r + c) with the shift c fixed by Σ π* = 1.  For
    g = exp this is softmax(r), the PL distribution.  For other links it differs in general
    from the generalized PL distribution g(r_y)/Σ g(r_y') (see ``pm.generalized_g``).

    With β the objective is β·Σ π (r/β + R(π)): everything below holds for r/β.
    Links: ``"exp"`` (g = e^r) and ``"power"`` (g(r) = r^k on r > 0, k = ``power``).
    """

    name: ClassVar[str] = "generalized_pm"
    token_additive: ClassVar[bool] = False
    link: str = "exp"
    power: float = 2.0
    c1: float = 0.0
    c2: float = 0.0
    beta: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        if self.link not in ("exp", "power"):
            raise ValueError(f"link must be 'exp' or 'power', got {self.link!r}")
        object.__setattr__(self, "power", check_positive("power", self.power))

    # g, g^{-1}, G on arrays
    def g(self, x):
        xp = namespace(x)
        return xp.exp(x) if self.link == "exp" else xp.where(x > 0, x, 0.0) ** self.power

    def g_inv(self, p):
        xp = namespace(p)
        return xp.log(p) if self.link == "exp" else p ** (1.0 / self.power)

    def G(self, x):
        xp = namespace(x)
        return xp.exp(x) if self.link == "exp" else x ** (self.power + 1.0) / (self.power + 1.0)

    def g_sympy(self, x):
        import sympy as sp

        return sp.exp(x) if self.link == "exp" else x ** sp.nsimplify(self.power)

    def psi(self, logp, ref_logp=None):
        xp = namespace(logp)
        with quiet():
            p = xp.exp(logp)
            gi = self.g_inv(p)
            return self.beta * (-gi + self.c1 + (self.G(gi) + self.c2) / p)

    def pi_psi(self, logp, ref_logp=None):
        xp = namespace(logp)
        with quiet():
            p = xp.exp(logp)
            gi = self.g_inv(xp.where(p > 0, p, 1.0))
            val = p * (-gi + self.c1) + self.G(gi) + self.c2
            lim0 = (self.G(xp.zeros_like(p)) if self.link == "power" else xp.zeros_like(p)) + self.c2
            return self.beta * xp.where(p > 0, val, lim0)

    def optimal_logp(self, r, ref_logp=None):
        _check_reward(r)
        xp = namespace(r)
        if self.beta != 1.0:
            r = r * (1.0 / self.beta)
        if self.link == "exp":
            return log_softmax(r)
        # π = (r + c)_+^k, Σ = 1: monotone in c, bisection + Newton on c
        k = self.power
        lo = -xp.max(r, axis=-1, keepdims=True)  # all mass 0
        hi = lo + 1.0 + (xp.max(r, axis=-1, keepdims=True) - xp.min(r, axis=-1, keepdims=True))
        # ensure Σ ≥ 1 at hi
        for _ in range(200):
            tot = xp.sum(self.g(r + hi), axis=-1, keepdims=True)
            if bool(xp.all(tot >= 1)):
                break
            hi = xp.where(tot >= 1, hi, hi + (hi - lo))
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            tot = xp.sum(self.g(r + mid), axis=-1, keepdims=True)
            lo = xp.where(tot < 1, mid, lo)
            hi = xp.where(tot < 1, hi, mid)
            if bool(xp.all(hi - lo <= 1e-15 * (1 + xp.abs(hi)))):
                break
        c = 0.5 * (lo + hi)
        with quiet():
            logp = k * xp.log(xp.where(r + c > 0, r + c, 0.0))
        return log_softmax(logp)  # remove the ≤1e-15 normalization residue

    def cvx_objective(self, pi_var, r, ref):
        if self.beta != 1.0:  # β·J_1(π; r/β)
            return self.beta * GeneralizedPM(link=self.link, power=self.power, c1=self.c1, c2=self.c2).cvx_objective(
                pi_var, np.asarray(r, float) / self.beta, ref)
        import cvxpy as cp

        if self.link == "exp":
            # π·ψ = −π log π + C1 π + π + C2 (G(g⁻¹(π)) = π for g = exp)
            return np.asarray(r, float) @ pi_var + cp.sum(cp.entr(pi_var)) + self.c1 + 1.0 + len(r) * self.c2
        k = self.power
        # Σ π(−π^{1/k}) + Σ G(π^{1/k}) = −Σ π^{1+1/k} + Σ π^{(k+1)/k}/(k+1) = −k/(k+1) Σ π^{1+1/k}
        return (
            np.asarray(r, float) @ pi_var
            - (k / (k + 1.0)) * cp.sum(cp.power(pi_var, 1.0 + 1.0 / k))
            + self.c1
            + len(r) * self.c2
        )

    def psi_sympy(self, p, q=None):
        import sympy as sp

        x = sp.Symbol("x")
        g = self.g_sympy(x)
        G = sp.integrate(g, x)
        ginv = sp.log(p) if self.link == "exp" else p ** (1 / sp.nsimplify(self.power))
        return sp.nsimplify(self.beta) * (-ginv + sp.nsimplify(self.c1) + (G.subs(x, ginv) + sp.nsimplify(self.c2)) / p)


# --------------------------------------------------------------------------- factories
def kl(beta: float = 1.0, estimator: str = "k1") -> KL:
    """KL-RLHF regularizer ψ = −β log(π/π_ref) (PM paper eq. 2.3)."""
    return KL(beta=beta, estimator=estimator)


def pm(c1=0.0, c2=0.0, beta: float = 1.0) -> PM:
    """PM regularizer β(−log π + C1 + C2/π) (Theorem 1 at β = 1; array constants: Theorem 2)."""
    return PM(c1=c1, c2=c2, beta=beta)


def cpm(alpha: float = 0.3, level: str = "sequence", beta: float = 1.0) -> ConditionalPM:
    """Conditional PM RLHF (Definition 4.1), ``level`` = ``"sequence"`` or ``"token"``."""
    return ConditionalPM(alpha=alpha, level=level, beta=beta)


def maxent(beta: float = 1.0) -> MaxEnt:
    """Maximum-entropy regularizer −β log π (the τ of max-entropy RL is this β)."""
    return MaxEnt(beta=beta)


def f_divergence(f: str = "kl", beta: float = 1.0) -> FDivergence:
    """f-divergence RLHF with f ∈ {kl, reverse_kl, chi2, hellinger, js} (Section 5.1)."""
    return FDivergence(f=f, beta=beta)


def multi_rkl(weights=(0.5, 0.5), beta: float = 1.0) -> MultiRKL:
    """Reverse KL to K references with weights α on the simplex (second paper, eq. 17)."""
    return MultiRKL(weights=weights, beta=beta)


def multi_fkl(weights=(0.5, 0.5), beta: float = 1.0) -> MultiFKL:
    """Forward KL to K references with weights α on the simplex (second paper, eq. 28)."""
    return MultiFKL(weights=weights, beta=beta)


def generalized_pm(link: str = "exp", power: float = 2.0, c1: float = 0.0, c2: float = 0.0,
                   beta: float = 1.0) -> GeneralizedPM:
    """PM regularizer for the generalized PL link g (Theorem 3, eq. 3.14), times β."""
    return GeneralizedPM(link=link, power=power, c1=c1, c2=c2, beta=beta)


def weighted(*terms: AffineLogRegularizer) -> Weighted:
    """Composition ψ = Σ ψ_k of affine regularizers, e.g. ``weighted(kl(0.5), maxent(0.1))``."""
    return Weighted(terms=tuple(terms))


#: regularizer name → factory (the names ``get``, ``prefmatch solve`` and the trainer accept)
FACTORIES: dict[str, Callable[..., Regularizer]] = {
    "kl": kl,
    "pm": pm,
    "cpm": cpm,
    "maxent": maxent,
    "fdiv": f_divergence,
    "multi_rkl": multi_rkl,
    "multi_fkl": multi_fkl,
    "generalized_pm": generalized_pm,
}


def get(name: str, **params) -> Regularizer:
    """The regularizer called ``name`` with ``params`` (ValueError naming what is allowed)."""
    if name not in FACTORIES:
        raise ValueError(f"regularizer must be one of {sorted(FACTORIES)}, got {name!r}")
    import inspect

    allowed = set(inspect.signature(FACTORIES[name]).parameters)
    extra = set(params) - allowed
    if extra:
        raise ValueError(f"regularizer {name!r} takes parameters {sorted(allowed)}, got unexpected {sorted(extra)}")
    return FACTORIES[name](**params)


#: one instance per objective with safe parameters (as scipy's ``distcont``): the shared
#: battery of tests in tests/theory/test_regularizer_battery.py runs over all of them
ALL_REGULARIZERS: dict[str, Regularizer] = {
    "kl": kl(beta=0.7),
    "kl_small_beta": kl(beta=0.05),
    "pm": pm(),
    "pm_c1": pm(c1=-0.4),
    "pm_c2": pm(c1=0.2, c2=0.3),
    "cpm_seq": cpm(alpha=0.2),
    "cpm_token": cpm(alpha=0.2, level="token"),
    "maxent": maxent(beta=0.5),
    "pm_beta": pm(c1=0.1, c2=0.2, beta=0.3),
    "cpm_seq_beta": cpm(alpha=0.2, beta=2.5),
    "fdiv_kl": f_divergence("kl", beta=0.8),
    "fdiv_reverse_kl": f_divergence("reverse_kl", beta=0.8),
    "fdiv_chi2": f_divergence("chi2", beta=0.8),
    "fdiv_hellinger": f_divergence("hellinger", beta=0.8),
    "fdiv_js": f_divergence("js", beta=0.8),
    "multi_rkl": multi_rkl(weights=(0.3, 0.7), beta=0.6),
    "multi_fkl": multi_fkl(weights=(0.3, 0.7), beta=0.6),
    "generalized_pm_exp": generalized_pm("exp"),
    "generalized_pm_power": generalized_pm("power", power=2.0),
    "kl_plus_maxent": weighted(kl(beta=0.5), maxent(beta=0.25)),
    "generalized_pm_power_beta": generalized_pm("power", power=2.0, beta=0.5),
}

