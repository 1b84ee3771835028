r"""Optimal policies of J(π) = Σ_y π(y)[r(y) + ψ(π(y), y)] (docs/architecture.md, eq. ⋆) three ways.

* :func:`closed_form` — the regularizer's own optimum (closed form, or the theory layer's
  vectorized root-finder); batched over any leading axes.  This is the fast path.
* :func:`mirror_ascent` — a generic solver for *any* regularizer that uses nothing but
  ``psi`` (its derivatives in log π by finite differences) and ``objective`` (for the line
  search).  It knows no closed form, so it cross-checks regularizers that have none.
* :func:`cvxpy_solve` — the independent reference: the regularizer's ``cvx_objective`` and
  ``cvx_constraints`` on the simplex, solved by a conic solver (one 1-D problem at a time).

No ψ, optimum or objective is re-derived here: every formula is the regularizer's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefmatch.theory._array import log_softmax, quiet
from prefmatch.theory.cvx import cvx_optimum

__all__ = [
    "closed_form",
    "MirrorAscentResult",
    "mirror_ascent",
    "stationarity_residual",
    "cvxpy_solve",
]


def _ref_prob(ref_logp):
    if ref_logp is None:
        return None
    with quiet():
        return np.exp(ref_logp)


def closed_form(reg, r, ref_logp=None) -> np.ndarray:
    """log π* from the regularizer (``reg.optimal_logp``), batched along leading axes."""
    return reg.optimal_logp(np.asarray(r, dtype=np.float64), ref_logp)


# --------------------------------------------------------------------------- mirror ascent
def _psi_derivatives(reg, logp, ref_logp, h: float):
    """ψ, ∂ψ/∂u and ∂²ψ/∂u² in u = log π(y), per response (ψ depends on π(y) alone).

    Fourth-order central differences (error O(h⁴) + O(ε/h)); one vectorized call of ``psi``
    per stencil point.
    """
    f = {k: reg.psi(logp + k * h, ref_logp) for k in (-2, -1, 0, 1, 2)}
    d1 = (-f[2] + 8 * f[1] - 8 * f[-1] + f[-2]) / (12 * h)
    d2 = (-f[2] + 16 * f[1] - 30 * f[0] + 16 * f[-1] - f[-2]) / (12 * h * h)
    return f[0], d1, d2


@dataclass(frozen=True)
class MirrorAscentResult:
    """Output of :func:`mirror_ascent`: log π, iterations used, final KKT residual per row."""
    logp: np.ndarray
    iterations: int
    residual: np.ndarray
    converged: bool


def stationarity_residual(reg, r, logp, ref_logp=None, h: float = 1e-3) -> np.ndarray:
    r"""KKT residual of π for max J on the simplex, per row.

    With g = ∂J/∂π = r + ψ + ∂ψ/∂log π and ḡ = ⟨π, g⟩: the larger of max_y π(y)·|g(y) − ḡ|
    (g is constant — the Lagrange multiplier — on the support) and, over responses with
    π(y) < 1e-6, max(g(y) − ḡ, 0) (raising a near-zero response must not pay: this catches a
    response pushed to a false boundary).  Differences below the rounding noise of the
    finite-difference derivative (1e-13·|ψ|/h) are not counted.
    """
    with quiet():
        psi, d1, _ = _psi_derivatives(reg, logp, ref_logp, h)
        # rounding noise of the difference quotient: ~ ε·|ψ|/h (large where ψ ~ 1/π)
        noise = 1e-13 * (np.abs(psi) + np.abs(d1)) / h
        p = np.exp(logp)
        live = p > 0
        g = np.where(live, r + psi + d1, 0.0)
        gbar = np.sum(np.where(live, p * g, 0.0), axis=-1, keepdims=True)
        inner = np.max(np.where(live, p * np.maximum(np.abs(g - gbar) - noise, 0.0), 0.0), axis=-1)
        small = live & (p < 1e-6) & np.isfinite(g)
        edge = np.max(np.where(small, np.maximum(g - gbar - noise, 0.0), 0.0), axis=-1)
        return np.maximum(inner, edge)


def mirror_ascent(
    reg,
    r,
    ref_logp=None,
    *,
    max_iter: int = 5000,
    tol: float = 1e-11,
    h: float = 1e-3,
    init_logp=None,
) -> MirrorAscentResult:
    r"""Maximize J(π) = Σ π (r + ψ(π)) over the simplex by preconditioned mirror ascent.

    The generic solver: it asks the regularizer only for ``psi`` and ``objective``.  In the
    mirror (entropy) geometry, u = log π, the gradient is g = ∂J/∂π = r + ψ + ∂ψ/∂u and the
    curvature of the π·ψ term is c = |∂ψ/∂u + ∂²ψ/∂u²| (both from finite differences of ψ).
    One step is

        u ← log_softmax(u + t·(g − ḡ)/c),

    an ascent direction (the first-order change of J is t·Σ π (g − ḡ)²/c ≥ 0) that is exact in
    one step for ψ = −a log π + b (c = a); ḡ is the centre Σ π g/c / Σ π/c, which makes the
    step the diagonal Newton step in u (quadratic convergence at interior optima).  The scalar t per row starts at 1 and is halved until
    J does not decrease (and doubled back after a success).  Responses where ψ of the uniform
    policy is not finite (e.g. π_ref = 0 for KL) keep probability 0.

    Stops when the KKT residual :func:`stationarity_residual` is ≤ ``tol``·max(1, max|r|) for
    every row.
    """
    r = np.asarray(r, dtype=np.float64)
    n = r.shape[-1]
    ref = _ref_prob(ref_logp)
    with quiet():
        if init_logp is None:
            u0 = np.full(r.shape, -np.log(n))
            feasible = np.isfinite(reg.psi(u0, ref_logp)) & np.isfinite(reg.pi_psi(u0, ref_logp))
            u = log_softmax(np.where(feasible, 0.0, -np.inf))
        else:
            u = np.array(init_logp, dtype=np.float64, copy=True)
            feasible = np.isfinite(u)
        obj = reg.objective(np.exp(u), r, ref)
        t = np.ones(r.shape[:-1] + (1,))
        it = 0
        res = stationarity_residual(reg, r, u, ref_logp, h)
        tol_row = tol * np.maximum(1.0, np.max(np.abs(r), axis=-1))
        stalls = np.zeros(res.shape, dtype=int)

        def finished():
            # converged, or J stalled at machine precision with a residual within 1e3·tol (the
            # finite-difference noise floor when ψ is large, e.g. C2/π or χ² at tiny π)
            return (res <= tol_row) | ((stalls >= 3) & (res <= 1e3 * tol_row))

        for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
            if np.all(finished()):
                break
            obj_before = obj.copy()
            psi, d1, d2 = _psi_derivatives(reg, u, ref_logp, h)
            p = np.exp(u)
            live = feasible & (p > 0)
            g = np.where(live, r + psi + d1, 0.0)
            curv = np.abs(d1 + d2)
            curv = np.where(np.isfinite(curv) & (curv > 1e-12), curv, 1.0)
            # centre g in the preconditioned metric: Σ π (g − ḡ)/c = 0, so the step keeps
            # Σ π δu = 0 and is the diagonal Newton step of the constrained problem
            w = np.where(live, p / curv, 0.0)
            gbar = np.sum(w * g, axis=-1, keepdims=True) / np.sum(w, axis=-1, keepdims=True)
            # trust region: the whole step is scaled (not clipped, which would lose the ascent
            # property) to move no log-probability by more than 5 nats
            step = np.where(live, (g - gbar) / curv, 0.0)
            big = np.max(np.abs(step), axis=-1, keepdims=True)
            step = step * np.minimum(1.0, 5.0 / np.where(big > 0, big, 1.0))
            # backtracking on J, row-wise (a few halvings at most)
            accepted = np.zeros(t.shape, dtype=bool)
            u_new = u
            for _ in range(60):
                cand = log_softmax(np.where(feasible, u + t * step, -np.inf))
                cand_obj = reg.objective(np.exp(cand), r, ref)
                ok = (cand_obj >= obj - 1e-15 * np.maximum(1.0, np.abs(obj)))[..., None] & ~accepted
                u_new = np.where(ok, cand, u_new)
                obj = np.where(ok[..., 0], cand_obj, obj)
                accepted |= ok
                if np.all(accepted):
                    break
                t = np.where(accepted, t, 0.5 * t)
            u = u_new
            t = np.minimum(np.where(accepted, 2.0 * t, t), 1.0)
            res = stationarity_residual(reg, r, u, ref_logp, h)
            stalled = np.abs(obj - obj_before) <= 4e-16 * np.maximum(1.0, np.abs(obj))
            stalls = np.where(stalled, stalls + 1, 0)
    return MirrorAscentResult(logp=u, iterations=it, residual=res, converged=bool(np.all(finished())))


# --------------------------------------------------------------------------- cvxpy reference
def cvxpy_solve(reg, r, ref=None) -> np.ndarray:
    """π* of one 1-D problem by cvxpy from ``reg.cvx_objective`` + ``reg.cvx_constraints``
    (:func:`prefmatch.theory.cvx.cvx_optimum`; ``ref`` [n], or [K, n] for multi-reference)."""
    return cvx_optimum(reg, r, ref)[0]
