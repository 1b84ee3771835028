r"""The regularizer objects: the single source of every ψ in the package.

Every objective of both papers has the shape (docs/architecture.md, equation ⋆)

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
import reprlib
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from prefmatch.theory._array import (
    check_reward as _check_reward,
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
from prefmatch.theory.fdivergences import (  # noqa: F401  (FSpec, F_DIVERGENCES, solve_normalizer are re-exported)
    F_DIVERGENCES,
    FSpec,
    fdiv_optimum,
    fdiv_optimum_blocked,
    solve_normalizer,
)
from prefmatch.theory.distributions import arithmetic_mixture
from prefmatch.theory import validate

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
    "Param",
    "REGISTRY",
    "register",
    "trainable_names",
    "describe_params",
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


_SPREAD = 1e300
#: above |r|/β = 1e8 the affine optimum is computed from shifted logits (r − max r)/β + b/β
_PLAIN_LOGITS = 1e8
#: χ²'s root-finder brackets the spread of r/β: beyond this the rewards are shifted and clipped
_CHI2_SPREAD = 1e12


def _tame_spread(r, beta, ref_logp=None, limit: float = _SPREAD):
    """For rewards whose spread r/β overflows the root-finders (e.g. ±1e308, or β = 1e-300): (r −
    top clipped to [−1e300·β, 0], the shift top/β of μ); None for every other input (left untouched).

    ``top`` is the best reward among the responses the optimum may use: those of the reference's
    support when ``ref_logp`` is given (an f with f'(∞) = ∞, such as KL and χ², puts no mass
    off it), every response otherwise.  Rewards off the support are irrelevant then, and clipped
    to 0 like the rest.  The clip changes nothing representable: a response 1e300 below the best
    in units of β gets probability 0 under these f, in floating point as in exact arithmetic."""
    xp = namespace(r)
    _check_reward(r)
    with quiet():
        if bool(xp.all(xp.abs(r) <= limit * beta)):
            return None
        usable = r if ref_logp is None else xp.where(ref_logp > -math.inf, r, -math.inf)
        top = xp.max(usable, axis=-1, keepdims=True)
        return xp.clip(r - top, -_SPREAD * beta, 0.0), top / beta


# --------------------------------------------------------------------------- parameters
_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a regularizer, declared once next to its class.

    Validation, ``prefmatch solve``'s schema and help, and the trainers' help all come from it.
    ``kind``: ``"number"`` (a real in the range ``lo``/``hi``), ``"array"`` (finite numbers: a
    scalar, or an array for response-dependent constants; ``per_response`` says that ``solve``
    accepts a list of n), ``"choice"`` (one of ``choices``), ``"weights"`` (K numbers on the simplex).
    """
    name: str
    default: Any = _REQUIRED
    kind: str = "number"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = True
    hi_closed: bool = True
    choices: tuple = ()
    per_response: bool = False
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    @property
    def allowed(self) -> str:
        """The allowed values in words: ``> 0``, ``in (0, 1]``, ``one of k1, k2``, ..."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "weights":
            return "non-negative and sum to 1 (one weight per reference)"
        if self.kind == "array":
            return "finite" + (" (a number, or one per response)" if self.per_response else "")
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{']' if self.hi_closed else ')'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<=' if self.hi_closed else '<'} {self.hi:g}"
        return "finite"

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name}: {self.allowed} ({default}){' — ' + self.help if self.help else ''}"

    def check(self, value):
        """``value`` validated (numbers as float); ValueError naming the parameter and its range."""
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.name} must be {self.allowed}, got {value!r}")
            return value
        if self.kind == "weights":
            return _check_weights(value)
        if self.kind == "array":
            if isinstance(value, np.ndarray):
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"{self.name} must be finite, got {reprlib.repr(value)}")
                return value
            if isinstance(value, (list, tuple)):
                validate.numbers(self.name, value, (1, 2))
                return value
            return validate.number(self.name, value)
        try:
            v = validate.number(self.name, value)
        except ValueError:
            raise ValueError(f"{self.name} must be a finite number {self.allowed}, got {reprlib.repr(value)}") from None
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            raise ValueError(f"{self.name} must be {self.allowed}, got {value!r}")
        if self.hi is not None and (v > self.hi if self.hi_closed else v >= self.hi):
            raise ValueError(f"{self.name} must be {self.allowed}, got {value!r}")
        return v


def beta_param(default: float = 1.0) -> Param:
    """β, the divergence's coefficient in E_π[r] − β·D (every regularizer has one)."""
    return Param("beta", default, lo=0.0, help="the divergence's coefficient in E[r] - beta*D")


#: regularizer name → class: every entry point (``get``, ``prefmatch solve``, the trainers, the
#: batteries) reads its list of regularizers and their parameters from here
REGISTRY: dict[str, type[Regularizer]] = {}


def register(cls):
    """Class decorator adding a regularizer to :data:`REGISTRY` under ``cls.name``."""
    if not cls.name or cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"regularizer name {cls.name!r} is empty or registered twice")
    REGISTRY[cls.name] = cls
    return cls


# --------------------------------------------------------------------------- base class
@dataclass(frozen=True, kw_only=True)
class Regularizer(abc.ABC):
    """ψ of the objective (⋆) and everything the layers ask of it (see module docstring)."""
    name: ClassVar[str] = "regularizer"
    #: True when ``ref_logp`` has a leading axis of K references
    multi_reference: ClassVar[bool] = False
    #: True when ψ(Σ_t l_t, Σ_t q_t) = Σ_t token_reward_t, so ψ can be paid per token
    token_additive: ClassVar[bool] = True
    #: the parameters, declared once (validation, ``solve``'s schema, the trainers' help)
    params: ClassVar[tuple[Param, ...]] = ()
    #: which reference log-probabilities it needs: ``"none"``, ``"one"`` or ``"K"`` (leading axis)
    refs: ClassVar[str] = "none"
    #: named instances with safe parameters: the regularizer battery runs over all of them
    examples: ClassVar[dict[str, dict]] = {}
    #: parameter sets the trainer's convergence battery trains (``trainable`` ones)
    battery_cases: ClassVar[tuple[dict, ...]] = ()
    #: whether the PPO trainer offers it (``--regularizer``)
    trainable: ClassVar[bool] = True

    def __post_init__(self):
        for p in self.params:
            object.__setattr__(self, p.name, p.check(getattr(self, p.name)))

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

    def implicit_reward(self, logp, ref_logp=None):
        """r_π(y) up to a prompt constant: the reward whose optimum under this regularizer is π
        (the stationarity condition solved for r; DPO's implicit reward)."""
        raise ValueError(f"regularizer {self.name!r} has no implicit reward")

    def sequence_implicit_reward(self, logp_t, ref_logp_t, mask_t):
        """The implicit reward of whole responses from their *token* log-probs ``logp_t`` [..., T]
        (reference ``ref_logp_t`` like :meth:`sequence_optimal_logp`'s, mask [..., T]): the reward,
        up to a prompt constant, whose optimum of the objective the per-token terms define
        (:meth:`sequence_optimal_logp`) is π.  The DPO loss of this regularizer is the
        Bradley–Terry loss of it (:func:`prefmatch.theory.dpo.sequence_dpo_loss`).  For every
        regularizer but token-level cPM it is :meth:`implicit_reward` of the summed log-probs."""
        xp = namespace(logp_t)
        seq = xp.sum(xp.where(mask_t > 0, logp_t, 0.0), axis=-1)
        seq_ref = None if ref_logp_t is None else xp.sum(xp.where(mask_t > 0, ref_logp_t, 0.0), axis=-1)
        return self.implicit_reward(seq, seq_ref)

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

    def implicit_reward(self, logp, ref_logp=None):
        """a·log π − b (log π* = (r + b)/a − log Z solved for r)."""
        a, b = self.coefficients(ref_logp, like=logp)
        return a * logp - b

    def sequence_implicit_reward(self, logp_t, ref_logp_t, mask_t):
        """a·Σ_t log π(y_t|·) − b(y) with b(y) = Σ_t b_t + b_seq read from :meth:`token_terms`
        (the terms :meth:`token_reward` pays, ψ(y) = −a log π(y) + b(y)): the implicit reward of
        the objective the trainers optimize, token-level cPM's Σ_t 𝟙[π_ref(y_t|·) < α] log
        π_ref(y_t|·) included.  Gradients flow through ``logp_t``."""
        xp = namespace(logp_t)
        mask = xp.astype(mask_t, logp_t.dtype)
        a, b_tok, b_seq = self.token_terms(ref_logp_t, mask)
        on = mask > 0
        h = a * xp.sum(xp.where(on, logp_t, 0.0), axis=-1)
        if not (isinstance(b_tok, float) and b_tok == 0.0):
            h = h - xp.sum(xp.where(on, b_tok + xp.zeros_like(logp_t), 0.0), axis=-1)
        if not (isinstance(b_seq, float) and b_seq == 0.0):
            h = h - (b_seq[..., 0] if getattr(b_seq, "ndim", 0) else b_seq)
        return h

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
        if self._needs_shift(r):
            shifted = self._shifted_logits(r, ref_logp)
            if shifted is not None:
                with quiet():
                    return log_softmax(shifted[0])
        with quiet():
            z = self.gibbs_logits(r, ref_logp)
            return log_softmax(z, overwrite=z is not r)  # z is a fresh temporary unless it is r

    def _needs_shift(self, r) -> bool:
        """Whether the plain logits r/β + b/β lose b/β (|r|/β above 1e8: an absolute error above
        1e-8, which decides the split between tied best responses) or overflow (|r|/β or 1/β
        beyond the float range, β down to the smallest subnormal): then :meth:`_shifted_logits`."""
        xp = namespace(r)
        beta = getattr(self, "beta", None)
        if beta is None or r.shape[-1] == 0:
            return False
        with quiet():
            return bool(xp.max(xp.abs(r)) > _PLAIN_LOGITS * beta) or not math.isfinite(1.0 / beta)

    def _shifted_logits(self, r, ref_logp):
        """``(z, M)`` with z = (r − M)/a + b/a and M = max r over b's support, for the β where r/β or
        1/β overflow: log_softmax(z) is log π* and a·LSE(z) + M its value, exactly (the overflowing
        M/a cancels).  b/a is read at β = 1 (b is β times it), so that no β·log π_ref underflows;
        only the first-order terms differ from the plain form.  None for a regularizer whose a is
        not its ``beta`` (a weighted sum)."""
        import dataclasses

        if "beta" not in {f.name for f in dataclasses.fields(self)}:
            return None
        xp = namespace(r)
        _, b1 = dataclasses.replace(self, beta=1.0).coefficients(ref_logp, like=r)
        with quiet():
            b1 = b1 + xp.zeros_like(r)
            support = b1 > -math.inf
            m = xp.max(xp.where(support, r, -math.inf), axis=-1, keepdims=True)
            z = xp.where(support, (r - m) / self.beta + b1, -math.inf)
        return z, m

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
            ref_b = take_rows(ref_logp, sl, n_rows)
            z = self.gibbs_logits(rb, ref_b, out=o, work=w)
            if not math.isfinite(rb.sum()):  # after the logits: this read comes from cache
                _check_reward(rb)  # raises unless the sum overflowed
            if self._needs_shift(rb) and (shifted := self._shifted_logits(rb, ref_b)) is not None:
                o[...] = log_softmax(shifted[0])  # β near the float limits (see _needs_shift)
                continue
            log_softmax_into(z, w)
        return out

    def optimal_value(self, r, ref_logp=None):
        r"""J(π*) = a·log Σ_y exp((r + b)/a) + Σ constants, computed without cancellation.

        With q = softmax(b/a) (for KL, q = π_ref) and c = E_q r, the value is
        a·LSE(b/a) + c + a·log1p(E_q[expm1((r − c)/a)]).  Where |r − c| ≤ a (large β), this form
        keeps the Var_q(r)/(2a) that a direct a·logsumexp rounds away (at β = 1e20 the direct form
        returns 0 for rewards [1, 2]); elsewhere the direct form is exact and is used."""
        _check_reward(r)
        xp = namespace(r)
        a, b = self.coefficients(ref_logp, like=r)
        with quiet():
            direct = a * logsumexp(self.gibbs_logits(r, ref_logp))
            u = b / a + xp.zeros_like(r)
            l0 = logsumexp(u, keepdims=True)
            q = xp.exp(u - l0)
            support = q > 0
            c = xp.sum(xp.where(support, q * r, 0.0), axis=-1, keepdims=True)
            x = xp.where(support, (r - c) / a, 0.0)
            small = xp.max(xp.abs(x), axis=-1) <= 1.0
            near = a * xp.squeeze(l0, axis=-1) + xp.squeeze(c, axis=-1) + a * xp.log1p(
                xp.sum(xp.where(support, q * xp.expm1(x), 0.0), axis=-1))
            value = xp.where(small, near, direct)
            if self._needs_shift(r):  # M + a·LSE((r − M)/a + b/a): no overflow, b/a kept
                shifted = self._shifted_logits(r, ref_logp)
                if shifted is not None:
                    z, m = shifted
                    value = xp.where(small, near, xp.squeeze(m, axis=-1) + a * logsumexp(z))
            return value + self.constant_sum(r)

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


@register
@dataclass(frozen=True, kw_only=True)
class KL(AffineLogRegularizer):
    r"""KL-RLHF: ψ = −β log(π/π_ref) (PM paper eq. 2.3); π* ∝ π_ref e^{r/β} (Prop. 5.1, eq. 5.1).

    ``estimator`` selects the per-token KL estimate k_t that :meth:`token_reward` pays as
    ψ_t = −β k_t, with l_t = log π(y_t|·) − log π_ref(y_t|·) and ρ_t = e^{−l_t}:
    ``"k1"`` = l_t, ``"k2"`` = l_t²/2, ``"k3"`` = (ρ_t − 1) + l_t (Schulman's estimators).
    Which gradient each gives, as a reward or as a loss, is the ``grad.*`` table
    (:mod:`prefmatch.theory.checks.grad`): as a reward only k1 is exact; with its pathwise
    term (``regularizer_mode: loss``) k1 and k3 are exact (E_π[k3_t] = E_π[l_t]); k2 is exact
    only as a pure loss (E_π[∇k2] = ∇KL), which no trainer mode here uses.
    """
    name: ClassVar[str] = "kl"
    beta: float = 1.0
    estimator: str = "k1"

    params: ClassVar = (beta_param(), Param("estimator", "k1", kind="choice", choices=("k1", "k2", "k3"),
                                            help="per-token KL estimate paid by token_reward"))
    refs: ClassVar[str] = "one"
    examples: ClassVar = {"kl": {"beta": 0.7}, "kl_small_beta": {"beta": 0.05}}
    battery_cases: ClassVar = ({"estimator": "k1"}, {"estimator": "k2"}, {"estimator": "k3"})

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


@register
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

    params: ClassVar = (Param("c1", 0.0, kind="array", help="C1 (may depend on the prompt)"),
                        Param("c2", 0.0, kind="array", per_response=True, help="C2 (may depend on the response)"),
                        beta_param())
    examples: ClassVar = {"pm": {}, "pm_c1": {"c1": -0.4}, "pm_c2": {"c1": 0.2, "c2": 0.3},
                          "pm_beta": {"c1": 0.1, "c2": 0.2, "beta": 0.3}}
    battery_cases: ClassVar = ({}, {"c1": 0.4, "c2": 0.3})

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


@register
@dataclass(frozen=True, kw_only=True)
class MaxEnt(AffineLogRegularizer):
    r"""Maximum-entropy RL: ψ = −β log π; π* ∝ e^{r/β} (PM paper Table 1, where the
    coefficient is called τ; β = 1 is PM with C1 = C2 = 0)."""
    name: ClassVar[str] = "maxent"
    beta: float = 1.0

    params: ClassVar = (beta_param(),)
    examples: ClassVar = {"maxent": {"beta": 0.5}}
    battery_cases: ClassVar = ({},)

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, 0.0

    def psi_sympy(self, p, q=None):
        import sympy as sp

        return -sp.nsimplify(self.beta) * sp.log(p)


@register
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

    params: ClassVar = (Param("alpha", 0.3, lo=0.0, hi=1.0, help="threshold of M = {pi_ref >= alpha}"),
                        Param("level", "sequence", kind="choice", choices=("sequence", "token"),
                              help="indicator on pi_ref(y|x) (Definition 4.1) or per token (the paper's code)"),
                        beta_param())
    refs: ClassVar[str] = "one"
    examples: ClassVar = {"cpm_seq": {"alpha": 0.2}, "cpm_token": {"alpha": 0.2, "level": "token"},
                          "cpm_seq_beta": {"alpha": 0.2, "beta": 2.5}}
    battery_cases: ClassVar = ({"alpha": 0.3, "level": "token"}, {"alpha": 0.3, "level": "sequence"})

    def _b(self, ref_logp, decide=None):
        """b = 𝟙[π_ref < α] log π_ref.  The indicator is decided in float64 (from ``decide``, the same
        log-probs at higher precision where the caller has them): comparing float32 log-probs with
        log α rounded to float32 flips it for π_ref within rounding of α."""
        xp = namespace(ref_logp)
        decide = ref_logp if decide is None else decide
        off = xp.astype(decide, xp.float64) < math.log(self.alpha)
        return xp.where(off, ref_logp, xp.zeros_like(ref_logp))

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, self.beta * self._b(_require_ref(ref_logp, self.name))

    def token_terms(self, ref_logp_t, mask_t):
        xp = namespace(ref_logp_t)
        if self.level == "token":
            return self.beta, self.beta * self._b(ref_logp_t), 0.0
        masked = xp.where(mask_t > 0, ref_logp_t, 0.0)
        seq = xp.sum(masked, axis=-1, keepdims=True)
        seq64 = xp.sum(xp.astype(masked, xp.float64), axis=-1, keepdims=True)  # the sum decided in float64
        return self.beta, 0.0, self.beta * self._b(seq, seq64)  # b(y) once, at the last token

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
class _KReferences:
    """What the multi-reference regularizers share: weights α on the simplex, β, a leading K axis."""
    multi_reference: ClassVar[bool] = True
    refs: ClassVar[str] = "K"
    weights: tuple = (0.5, 0.5)
    beta: float = 1.0
    params: ClassVar[tuple[Param, ...]] = (Param("weights", (0.5, 0.5), kind="weights", help="alpha_i, one per reference"),
                                           beta_param())
    battery_cases: ClassVar[tuple[dict, ...]] = ({"weights": [0.3, 0.7]},)

    def _check_k(self, ref_logp):
        ref_logp = _require_ref(ref_logp, self.name)
        if ref_logp.shape[0] != len(self.weights):
            raise ValueError(
                f"ref_logp has {ref_logp.shape[0]} references on its leading axis but weights has {len(self.weights)}"
            )
        return ref_logp


@register
@dataclass(frozen=True, kw_only=True)
class MultiRKL(_KReferences, AffineLogRegularizer):
    r"""Multi-reference reverse KL: ψ = −β Σ_i α_i log(π/π_ref,i) (second paper, eq. 17).

    ``ref_logp`` has a leading axis of K references.  b = β Σ_i α_i log π_ref,i is the
    log of the *unnormalized* geometric mixture, so π* ∝ π̂_α e^{r/β} with π̂_α the generalized
    escort distribution (Theorem 5.2) and J(π*) = β log Σ_y Π_i π_ref,i^{α_i} e^{r/β}.
    """
    name: ClassVar[str] = "multi_rkl"
    examples: ClassVar = {"multi_rkl": {"weights": (0.3, 0.7), "beta": 0.6}}

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
    def multi_reference(self):
        return self.terms[0].multi_reference

    @property
    def refs(self):
        kinds = {t.refs for t in self.terms} - {"none"}
        return kinds.pop() if kinds else "none"

    @property
    def reward_gradient_exact(self) -> bool:
        return all(t.reward_gradient_exact for t in self.terms)

    @property
    def loss_gradient_exact(self) -> bool:
        return all(t.loss_gradient_exact for t in self.terms)

    def coefficients(self, ref_logp=None, like=None):
        a, b = 0.0, 0.0
        for t in self.terms:
            at, bt = t.coefficients(ref_logp if t.refs != "none" else None, like=like)
            a, b = a + at, b + bt
        return a, b

    def _blockable_params(self) -> bool:
        return all(t._blockable_params() for t in self.terms)

    def constant_sum(self, like):
        return sum(t.constant_sum(like) for t in self.terms)

    def psi(self, logp, ref_logp=None):
        return sum(t.psi(logp, ref_logp if t.refs != "none" else None) for t in self.terms)

    def pi_psi(self, logp, ref_logp=None):
        return sum(t.pi_psi(logp, ref_logp if t.refs != "none" else None) for t in self.terms)

    def token_terms(self, ref_logp_t, mask_t):
        a, b, c = 0.0, 0.0, 0.0
        for t in self.terms:
            at, bt, ct = t.token_terms(ref_logp_t if t.refs != "none" else None, mask_t)
            a, b, c = a + at, b + bt, c + ct
        return a, b, c

    def psi_sympy(self, p, q):
        return sum(t.psi_sympy(p, q) for t in self.terms)


# --------------------------------------------------------------------------- f-divergences
@register
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

    params: ClassVar = (Param("f", "kl", kind="choice", choices=tuple(F_DIVERGENCES), help="the convex f"),
                        beta_param())
    refs: ClassVar[str] = "one"
    examples: ClassVar = {f"fdiv_{f}": {"f": f, "beta": 0.8} for f in F_DIVERGENCES}
    battery_cases: ClassVar = tuple({"f": f} for f in F_DIVERGENCES)

    @property
    def spec(self) -> FSpec:
        return F_DIVERGENCES[self.f]

    @property
    def reward_gradient_exact(self) -> bool:
        return self.f == "kl"

    @property
    def token_additive(self):
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

    def implicit_reward(self, logp, ref_logp=None):
        """β f'(π/π_ref): exact on π's support; where an f with finite f'(0) (χ², Hellinger, JS)
        clips π to 0, the reward is only bounded by it (r − λ ≤ β f'(0))."""
        ref_logp = _require_ref(ref_logp, self.name)
        with quiet():
            return self.beta * self.spec.fprime(namespace(logp), logp - ref_logp)

    def pi_psi(self, logp, ref_logp=None):
        ref_logp = _require_ref(ref_logp, self.name)
        xp = namespace(logp)
        sp = self.spec
        with quiet():
            p, q = xp.exp(logp), xp.exp(ref_logp)
            both = (p > 0) & (q > 0)
            inner = p * sp.f_over_u(xp, xp.where(both, logp - ref_logp, 0.0))
            if math.isfinite(sp.f_at_0):  # π/π_ref below 1e-308 (β near the float limits): f(u)/u overflows,
                # and π_ref f(π/π_ref) is π_ref f(0) to within u
                inner = xp.where(xp.isfinite(inner) | ~both, inner, q * sp.f_at_0)
            out = xp.where(both, -self.beta * inner, 0.0)
            out = xp.where((p == 0) & (q > 0), -self.beta * sp.f_at_0 * q, out)
            off = (p > 0) & (q == 0)
            out = xp.where(off, -self.beta * sp.fprime_inf * p if math.isfinite(sp.fprime_inf) else -math.inf, out)
            return out

    def _solve(self, r, ref_logp):
        """(log π*, μ = λ/β, μ − max s on the support) for each row (:mod:`.fdivergences`)."""
        ref_logp = _require_ref(ref_logp, self.name)
        with quiet():  # χ²: h(g) = 1 − g/2 reaches 0 at a finite gap (h⁻¹(0) finite)
            linear = bool(np.isfinite(self.spec.h_inv(np, np.float64(0.0))))
        tamed = _tame_spread(r, self.beta, ref_logp if math.isinf(self.spec.fprime_inf) else None,
                             limit=_CHI2_SPREAD if linear else _SPREAD)
        if tamed is not None:
            r, shift = tamed
            if linear:  # bisection needs a bracket of a few units of β: a response more than 2/π_ref(top)
                # units below the best has no mass (the best's h ≤ 1/π_ref(top)), so the clip there is exact
                xp = namespace(r)
                with quiet():
                    q_top = xp.sum(xp.where(r == 0.0, xp.exp(ref_logp), 0.0), axis=-1, keepdims=True)
                    r = xp.maximum(r, -(4.0 / q_top + 4.0) * self.beta)
            logp, mu, gap = self._solve(r, ref_logp)
            return logp, mu + shift, gap
        if self.f != "kl" and blockable(r, ref_logp, ref_ndim=2):
            return fdiv_optimum_blocked(self.spec, self.beta, r, ref_logp)
        _check_reward(r)
        return fdiv_optimum(self.spec, self.beta, r, ref_logp)

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
        div = self.spec.cvx_divergence(cp, pi_var[idx], ref[idx])
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


@register
@dataclass(frozen=True, kw_only=True)
class MultiFKL(_KReferences, Regularizer):
    r"""Multi-reference forward KL: J = E_π[r] − β Σ_i α_i KL(π_ref,i ‖ π) (second paper, eq. 28).

    By Lemma 6.1, Σ α_i KL(P_i‖π) = KL(P̄_α‖π) + Σ α_i KL(P_i‖P̄_α) with P̄_α = Σ α_i P_i, so
    the optimum is the reverse-KL f-divergence optimum against the arithmetic mixture,
    π* = β P̄_α/(λ − r) (Theorem 6.2, package β), with λ > max r solved by
    :func:`solve_normalizer`.  ψ = −β Σ_i α_i (π_ref,i/π) log(π_ref,i/π) is not affine in
    log π: train with its exact gradient, not as a sampled reward.
    """
    name: ClassVar[str] = "multi_fkl"
    token_additive: ClassVar[bool] = False
    examples: ClassVar = {"multi_fkl": {"weights": (0.3, 0.7), "beta": 0.6}}

    def mixture_logp(self, ref_logp, out=None, work=None):
        """log P̄_α = log Σ_i α_i π_ref,i (the arithmetic mixture, eq. 30); ``out``/``work``:
        numpy buffers of the row-blocked path (:func:`.distributions.arithmetic_mixture`)."""
        return arithmetic_mixture(self._check_k(ref_logp), self.weights, out=out, work=work)

    @property
    def _single(self) -> FDivergence:
        return FDivergence(f="reverse_kl", beta=self.beta)

    def implicit_reward(self, logp, ref_logp=None):
        """−β P̄_α/π (the reverse-KL implicit reward against the arithmetic mixture)."""
        return self._single.implicit_reward(logp, self.mixture_logp(ref_logp))

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
        tamed = _tame_spread(r, self.beta)
        if tamed is not None:
            r, shift = tamed
            logp, mu, gap = self._solve(r, ref_logp)
            return logp, mu + shift, gap
        if blockable(r, ref_logp, ref_ndim=3):
            return fdiv_optimum_blocked(self._single.spec, self.beta, r, ref_logp, ref_block=self.mixture_logp)
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
@register
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

    params: ClassVar = (Param("link", "exp", kind="choice", choices=("exp", "power"), help="the PL link g"),
                        Param("power", 2.0, lo=0.0, help="k of the power link g(r) = r^k"),
                        Param("c1", 0.0, kind="array"), Param("c2", 0.0, kind="array"), beta_param())
    examples: ClassVar = {"generalized_pm_exp": {"link": "exp"}, "generalized_pm_power": {"link": "power", "power": 2.0},
                          "generalized_pm_power_beta": {"link": "power", "power": 2.0, "beta": 0.5}}
    trainable: ClassVar[bool] = False  # ψ not token-additive and the power link's support is clipped

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
            with quiet():
                z = r * (1.0 / self.beta)
                if not bool(xp.all(xp.isfinite(z))):  # r/β or 1/β overflow: the shifted rewards (r − max r)/β,
                    # the same optimum (a shift moves only c); for the power link a response more than one
                    # unit below the best has no mass (c ≤ 1, since the best's (0 + c)^k ≤ 1): clipped at −2
                    z = (r - xp.max(r, axis=-1, keepdims=True)) / self.beta
                    if self.link == "power":
                        z = xp.maximum(z, -2.0)
            r = z
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


#: the registry under its historical name (the same dict: a later registration shows here too)
FACTORIES = REGISTRY


def get(name: str, **params) -> Regularizer:
    """The registered regularizer called ``name`` with ``params`` (ValueError naming what is allowed)."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"regularizer must be one of {sorted(REGISTRY)}, got {name!r}")
    allowed = [p.name for p in cls.params]
    extra = set(params) - set(allowed)
    if extra:
        raise ValueError(f"regularizer {name!r} takes parameters {sorted(allowed)}, got unexpected {sorted(extra)}")
    missing = [p.name for p in cls.params if p.required and p.name not in params]
    if missing:
        raise ValueError(f"regularizer {name!r} needs parameter {missing[0]!r}")
    return cls(**params)


def trainable_names() -> tuple[str, ...]:
    """The registered regularizers the trainers offer."""
    return tuple(n for n, c in REGISTRY.items() if c.trainable)


def describe_params(name: str, exclude: tuple[str, ...] = ()) -> str:
    """``name``'s parameters (but ``exclude``) in one line, for help texts."""
    cls = REGISTRY[name]
    ref = {"none": "", "one": "; one reference", "K": "; K references"}[cls.refs]
    params = [p.describe() for p in cls.params if p.name not in exclude]
    return f"{name}: " + ("; ".join(params) or "no parameters") + ref


class _Examples(Mapping):
    """name → instance of every registered regularizer's ``examples`` (plus compositions), read
    from :data:`REGISTRY` on each access, like scipy's ``distcont``: the shared battery of
    tests/theory/test_regularizer_battery.py runs over all of them."""
    def _all(self) -> dict[str, Regularizer]:
        out = {key: cls(**kw) for cls in REGISTRY.values() for key, kw in cls.examples.items()}
        out["kl_plus_maxent"] = weighted(KL(beta=0.5), MaxEnt(beta=0.25))
        return out

    def __getitem__(self, key):
        return self._all()[key]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())


ALL_REGULARIZERS: Mapping[str, Regularizer] = _Examples()
