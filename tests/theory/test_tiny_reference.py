"""f-divergence optima when π_ref of the best response is below float64's normal range.

With log π_ref(top) < −690 (a long sequence's probability, say) the gap d = (λ − max r)/β and
π_ref(top) itself underflow; those rows are solved in log space.  The reference here is an
independent 60-digit mpmath root of Σ_y π_ref(y) h(d + base_y) = 1 from the definitions of h.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest

from prefmatch.theory import regularizers as R

H = {  # h = (f')⁻¹ in the gap variable g
    "reverse_kl": lambda g: 1 / g,
    "hellinger": lambda g: 1 / g**2,
    "js": lambda g: 1 / mp.expm1(g),
}


def mp_log_policy(f, r, ref_logp, beta):
    """log π* from a bisection in log d at 60 digits (no underflow in mpmath)."""
    mp.mp.dps = 60
    s = [mp.mpf(x) / beta for x in r]
    smax = max(s)
    base = [smax - x for x in s]
    q = [mp.exp(mp.mpf(x)) for x in ref_logp]
    h = H[f]

    def S(logd):
        d = mp.exp(logd)
        return mp.fsum(qi * h(d + bi) for qi, bi in zip(q, base)) - 1

    lo, hi = mp.mpf(-20000), mp.log(R.F_DIVERGENCES[f].g_one)
    for _ in range(400):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if S(mid) > 0 else (lo, mid)
    d = mp.exp((lo + hi) / 2)
    return np.array([float(mp.log(qi * h(d + bi))) for qi, bi in zip(q, base)])


@pytest.mark.parametrize("f", ["reverse_kl", "hellinger", "js"])
@pytest.mark.parametrize("log_top", [-700.0, -745.0, -800.0, -5000.0])
@pytest.mark.parametrize("regime", ["top takes the mass", "rest absorbs it"])
def test_tiny_top_reference_is_exact(f, log_top, regime):
    n = 5
    rng = np.random.default_rng(abs(int(log_top)))
    rest = np.log(rng.dirichlet(np.ones(n - 1)))
    ref_logp = np.concatenate([[log_top], rest])  # the rest sums to 1; the top adds e^log_top
    if regime == "top takes the mass":
        r = np.array([3.0, 0.0, -0.5, 0.2, -1.0])  # far above the rest: S_rest(0) < 1
        beta = 0.5
    else:
        r = np.array([0.3, 0.25, 0.1, 0.0, 0.28])  # close rewards, small β: S_rest(0) > 1
        beta = 0.01
    reg = R.f_divergence(f, beta=beta)
    got = reg.optimal_logp(r, ref_logp)
    want = mp_log_policy(f, r, ref_logp, beta)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(np.exp(got).sum(), 1.0, atol=1e-12)
    # batched with ordinary rows, and the multiplier's gap is ≥ 0 and finite
    batch_r = np.stack([r, r[::-1], r])
    batch_ref = np.stack([ref_logp, np.log(np.full(n, 1 / n)), ref_logp])
    lp = reg.optimal_logp(batch_r, batch_ref)
    np.testing.assert_allclose(lp[0], got, atol=1e-13)
    np.testing.assert_allclose(lp[2], got, atol=1e-13)
    np.testing.assert_allclose(lp[1], reg.optimal_logp(r[::-1], batch_ref[1]), atol=1e-13)
    gap = reg.lagrange_gap(batch_r, batch_ref)
    assert np.all(np.isfinite(gap)) and np.all(gap >= -R.F_DIVERGENCES[f].anchor * beta - 1e-12)


def test_tiny_top_with_partial_support_and_multi_fkl():
    """The log-space rows keep −inf off the support, and the multi-reference forward KL (whose
    mixture is a reverse-KL reference) takes the same path."""
    ref_logp = np.array([-900.0, math.log(0.5), -np.inf, math.log(0.5)])
    r = np.array([2.0, 0.0, 5.0, 0.1])
    reg = R.f_divergence("reverse_kl", beta=0.5)  # f'(∞) = 0: mass may leave the support
    lp = reg.optimal_logp(r, ref_logp)
    assert np.isfinite(lp[0]) and np.isclose(np.exp(lp).sum(), 1.0, atol=1e-12)
    reg2 = R.f_divergence("hellinger", beta=0.5)
    lp2 = reg2.optimal_logp(r, ref_logp)
    assert np.isfinite(lp2[0]) and np.isclose(np.exp(lp2).sum(), 1.0, atol=1e-12)
    refs = np.stack([np.array([-900.0, math.log(0.3), math.log(0.3), math.log(0.4)]),
                     np.array([-950.0, math.log(0.2), math.log(0.5), math.log(0.3)])])
    m = R.multi_fkl(weights=(0.5, 0.5), beta=0.5)
    mix = m.mixture_logp(refs)
    np.testing.assert_allclose(m.optimal_logp(r, refs), reg.optimal_logp(r, mix), atol=1e-13)
    np.testing.assert_allclose(mp_log_policy("reverse_kl", r, mix, 0.5), reg.optimal_logp(r, mix), atol=1e-11)
