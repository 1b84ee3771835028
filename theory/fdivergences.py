r"""The f-divergence numerics of Section 5.1 (PM paper): what each f needs, and the root-finder.

With v = (r − λ)/β the stationarity condition of E_π[r] − β Σ π_ref f(π/π_ref) is f'(π/π_ref) = v,
so the optimum is π = π_ref·(f')⁻¹((r − λ)/β) with λ fixed by normalization.  :class:`FSpec`
carries each f (its value, derivative, inverse derivative in a gap variable, cvxpy form) and
:func:`solve_normalizer` finds λ for a batch of prompts at once: a vectorized, safeguarded Newton
iteration, with rows whose reference probability underflows solved in log space.  The regularizer
object that uses them is :class:`prefmatch.theory.regularizers.FDivergence`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np

from prefmatch.theory._array import check_reward, log_softmax, logsumexp, namespace, quiet, row_blocks, take_rows

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
    fprime: Callable  # (xp, L=log u) -> f'(u): the implicit reward β f'(π/π_ref) (DPO)
    cvx_divergence: Callable  # (cp, x, q) -> Σ q f(x/q) as a convex cvxpy expression (x a variable, q > 0)


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
        fprime=lambda xp, L: L + 1.0, cvx_divergence=lambda cp, x, q: cp.sum(cp.rel_entr(x, q)),
    ),
    "reverse_kl": FSpec(
        "reverse_kl", lambda xp, L: -L * xp.exp(-L), lambda u: -_sympy().log(u), math.inf, 0.0,
        anchor=0.0, pole_power=1.0, g_one=1.0,
        moments=_rkl_moments, log_h=_rkl_log_h, h_inv=lambda xp, y: 1.0 / y,
        fprime=lambda xp, L: -xp.exp(-L), cvx_divergence=lambda cp, x, q: cp.sum(cp.rel_entr(q, x)),
    ),
    "chi2": FSpec(
        "chi2", lambda xp, L: xp.exp(L) - 2.0 + xp.exp(-L), lambda u: (u - 1) ** 2, 1.0, math.inf,
        anchor=0.0, pole_power=0.0, g_one=0.0,
        moments=_chi2_moments, log_h=_log_chi2_h, h_inv=lambda xp, y: 2.0 * (1.0 - y),
        fprime=lambda xp, L: 2.0 * xp.expm1(L),
        cvx_divergence=lambda cp, x, q: cp.sum(cp.multiply(1.0 / q, cp.square(x - q))),
    ),
    "hellinger": FSpec(
        "hellinger", lambda xp, L: (1.0 - xp.exp(-L / 2.0)) ** 2, lambda u: (_sympy().sqrt(u) - 1) ** 2,
        1.0, 1.0, anchor=1.0, pole_power=2.0, g_one=1.0,
        moments=_hel_moments, log_h=lambda xp, g, out=None: _into(-2.0 * xp.log(g), out), h_inv=lambda xp, y: 1.0 / xp.sqrt(y),
        fprime=lambda xp, L: -xp.expm1(-L / 2.0),
        cvx_divergence=lambda cp, x, q: cp.sum(x) + float(q.sum()) - 2 * cp.sum(cp.multiply(np.sqrt(q), cp.sqrt(x))),
    ),
    "js": FSpec(
        "js",
        lambda xp, L: L - (1.0 + xp.exp(-L)) * (xp.logaddexp(xp.zeros_like(L), L) - math.log(2.0)),
        lambda u: u * _sympy().log(u) - (1 + u) * _sympy().log((1 + u) / 2),
        math.log(2.0), math.log(2.0), anchor=math.log(2.0), pole_power=1.0, g_one=math.log(2.0),
        moments=_js_moments, log_h=lambda xp, g, out=None: _into(-xp.log(xp.expm1(g)), out), h_inv=lambda xp, y: xp.log1p(1.0 / y),
        fprime=lambda xp, L: math.log(2.0) + L - xp.logaddexp(xp.zeros_like(L), L),
        cvx_divergence=lambda cp, x, q: (cp.sum(cp.rel_entr(x, x + q)) + cp.sum(cp.rel_entr(q, x + q))
                                         + (cp.sum(x) + float(q.sum())) * math.log(2.0)),
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
            tiny: Any = q_top < _TINY  # None where no row's top response underflows
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


def log_h_of_log_g(spec: FSpec, xp, log_g):
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
            return logsumexp(ref_r + log_h_of_log_g(spec, xp, log_g), axis=-1, keepdims=True)

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

def fdiv_optimum(spec: FSpec, beta: float, r, ref_logp, out=None, scratch=None):
    """(log π*, μ = λ/β, μ − max s on the support), s = r/β, of max_π E_π[r] − β D_f(π‖π_ref) per row.

    ``out``/``scratch`` (numpy, from :func:`fdiv_optimum_blocked`): the log-policy buffer and four
    buffers of ``r``'s shape; the caller checks the reward.
    """
    xp = namespace(r, ref_logp)
    sp = spec
    if scratch is None:
        s = r / beta
    else:
        s = np.multiply(r, 1.0 / beta, out=scratch[0])
    if spec.name == "kl":
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
            logp_log = ref_logp + log_h_of_log_g(sp, xp, log_g)
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


def fdiv_optimum_blocked(spec: FSpec, beta: float, r, ref_logp, ref_block=None):
    """:func:`fdiv_optimum` over row blocks of about 1 MB (rows are independent problems) with
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
        check_reward(r[sl])
        ref = take_rows(ref_logp, sl, n_rows)
        if ref_block is not None:
            ref = ref_block(ref, bufs[4][:k], bufs[5][:k])
        _, mu[sl], gap[sl] = fdiv_optimum(spec, beta, r[sl], ref, out=logp[sl], scratch=[b[:k] for b in bufs[:4]])
    return logp, mu, gap
