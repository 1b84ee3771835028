"""Multi-reference KL-RLHF (second paper): identities, closed forms, root-finder, checks.

Each test compares against an independent computation: KKT/stationarity written out by hand,
random feasible policies (the optimum must beat them), brute-force sums, torch autograd,
mpmath, or the registered check.  Tolerances are stated inline.  Package β throughout
(objective E_π[r] − β·D; β = 1/β_spec).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prefmatch.theory import identities as I
from prefmatch.theory import regularizers as R
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort

SETTINGS = settings(max_examples=60, deadline=None)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=np.float64))


@st.composite
def instances(draw, max_k=8, max_n=8, zeros=False, batch=False):
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(2, max_n))
    beta = draw(st.sampled_from([1e-3, 0.05, 0.3, 1.0, 4.0, 50.0]))
    scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 10.0]))
    rng = np.random.default_rng(seed)
    shape = (3,) if batch else ()
    conc = draw(st.sampled_from([0.1, 1.0, 10.0]))
    refs = rng.dirichlet(np.full(n, conc), size=shape + (k,))
    refs = np.moveaxis(refs, -2, 0)
    if zeros:
        mask = rng.random(refs.shape) < 0.25
        mask[..., 0] = False  # keep a common support
        refs = np.where(mask, 0.0, refs)
        refs = refs / refs.sum(-1, keepdims=True)
    w = rng.dirichlet(np.ones(k))
    r = scale * rng.normal(size=shape + (n,))
    return refs, w, r, beta, rng


# --------------------------------------------------------------------------- Lemma 5.1 / 6.1
@SETTINGS
@given(instances(zeros=True))
def test_escort_identity(inst):
    refs, w, _, _, rng = inst
    L = _log(refs)
    common = np.all(refs > 0, axis=0)
    q = rng.dirichlet(np.ones(refs.shape[-1])) * common
    q /= q.sum()
    lhs, rhs = I.escort_identity_sides(_log(q), L, w)
    # independent: the left side summed by hand
    by_hand = sum(wi * sum(qy * math.log(qy / py) for qy, py in zip(q, P) if qy > 0) for wi, P in zip(w, refs))
    assert lhs == pytest.approx(by_hand, rel=1e-10, abs=1e-12)
    assert rhs == pytest.approx(lhs, rel=1e-10, abs=1e-12)
    log_hat, log_f = generalized_escort(L, w)
    assert log_f <= 1e-15  # Hölder
    assert np.exp(log_hat).sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.exp(log_hat)[~common] == 0)  # support = intersection


@SETTINGS
@given(instances(zeros=True))
def test_average_identity(inst):
    refs, w, _, _, rng = inst
    q = rng.dirichlet(np.ones(refs.shape[-1]))
    lhs, rhs = I.average_identity_sides(_log(refs), _log(q), w)
    assert rhs == pytest.approx(lhs, rel=1e-10, abs=1e-12)
    assert I.generalized_js(_log(refs), w) >= -1e-15


# --------------------------------------------------------------------------- Theorem 5.2
@SETTINGS
@given(instances(zeros=True, batch=True))
def test_rkl_optimum_kkt_and_dominance(inst):
    refs, w, r, beta, rng = inst
    reg = R.multi_rkl(weights=tuple(w), beta=beta)
    L = _log(refs)
    lp = reg.optimal_logp(r, L)
    p = np.exp(lp)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(-1), 1, atol=1e-12)
    on = np.all(refs > 0, axis=0)
    assert np.all(p[~on] == 0)
    # stationarity: log π − Σα log π_i − r/β is constant on the common support
    with np.errstate(invalid="ignore"):
        c = lp - np.tensordot(w, L, axes=1) - r / beta
    for b in range(r.shape[0]):
        cb = c[b][on[b]]
        assert np.ptp(cb) <= 1e-9 * max(1.0, np.max(np.abs(cb)))
    # value: closed form = objective at π* = escort route; beats random feasible policies
    v = reg.optimal_value(r, L)
    np.testing.assert_allclose(reg.objective(p, r, refs), v, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(I.rkl_optimum_via_escort(r, L, w, beta)[1], v, rtol=1e-12, atol=1e-12)
    q = rng.dirichlet(np.ones(r.shape[-1]), size=(20, r.shape[0])) * on
    q /= q.sum(-1, keepdims=True)
    assert np.all(reg.objective(q, r, refs) <= v + 1e-9 * (1 + np.abs(v)))


@SETTINGS
@given(instances(max_k=64, zeros=False))
def test_holder_and_mrpo(inst):
    refs, w, r, beta, rng = inst
    L = _log(refs)
    reg = R.multi_rkl(weights=tuple(w), beta=beta)
    v = float(reg.optimal_value(r, L))
    assert float(I.holder_upper_bound(r, L, w, beta)) >= v - 1e-10 * (1 + abs(v))
    lp_l, v_l = I.mrpo_surrogate_optimum(r, L, w, beta)
    assert float(v_l) <= v + 1e-10 * (1 + abs(v))
    # surrogate ≤ objective for random π and the surrogate's own optimum
    pis = np.vstack([rng.dirichlet(np.ones(r.size), size=10), np.exp(lp_l)])
    sur = I.mrpo_surrogate_objective(pis, r, L, w, beta)
    obj = reg.objective(pis, r, refs)
    assert np.all(sur <= obj + 1e-10 * (1 + np.abs(obj)))
    # the surrogate value is attained by π_L
    assert float(I.mrpo_surrogate_objective(np.exp(lp_l), r, L, w, beta)) == pytest.approx(float(v_l), rel=1e-9, abs=1e-9)


def test_holder_equality_for_identical_references():
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(5))
    refs = np.stack([ref] * 4)
    r = rng.normal(size=5)
    w = rng.dirichlet(np.ones(4))
    v = R.multi_rkl(weights=tuple(w), beta=0.4).optimal_value(r, _log(refs))
    assert float(I.holder_upper_bound(r, _log(refs), w, 0.4)) == pytest.approx(float(v), abs=1e-13)


# --------------------------------------------------------------------------- Lemma 5.4
@settings(max_examples=25, deadline=None)
@given(instances(max_k=4, max_n=6))
def test_softmax_jacobian_against_autograd(inst):
    torch = pytest.importorskip("torch")
    refs, w, r, beta, _ = inst
    assume(beta >= 0.05)
    reg = R.multi_rkl(weights=tuple(w), beta=beta)
    Lt = torch.tensor(_log(refs))
    jac = torch.autograd.functional.jacobian(lambda rr: torch.exp(reg.optimal_logp(rr, Lt)), torch.tensor(r))
    formula = I.softmax_jacobian(reg.optimal_logp(r, _log(refs)), beta)
    np.testing.assert_allclose(formula, jac.numpy(), atol=1e-12 / beta, rtol=1e-10)
    np.testing.assert_allclose(formula.sum(axis=0), 0, atol=1e-12 / beta)  # mass conservation


# --------------------------------------------------------------------------- Theorem 6.2
@SETTINGS
@given(instances(max_k=64, zeros=True, batch=True))
def test_fkl_optimum_kkt(inst):
    refs, w, r, beta, rng = inst
    reg = R.multi_fkl(weights=tuple(w), beta=beta)
    L = _log(refs)
    lp = reg.optimal_logp(r, L)
    lam = reg.lagrange_multiplier(r, L)
    p = np.exp(lp)
    bar = np.exp(arithmetic_mixture(L, w))
    assert np.all(np.isfinite(lp[bar > 0]))
    assert np.allclose(p.sum(-1), 1, atol=1e-12)
    on = bar > 0
    rmax = np.max(np.where(on, r, -np.inf), axis=-1, keepdims=True)
    offmax = np.max(np.where(on, -np.inf, r), axis=-1, keepdims=True)
    # the closed form applies unless an off-support reward reaches λ (spec §4 caveat; then λ = that reward)
    closed = (offmax < lam) & ~np.isclose(lam, offmax, rtol=1e-12, atol=1e-300)
    # λ > max r on the support (in float64 λ − max r can fall below one ulp of λ: then λ == max r;
    # the policy stays exact because the root-finder works in the gap variable)
    assert np.all(lam >= rmax)
    lo, hi = I.fkl_lambda_bounds(r, L, w, beta)
    tol = 1e-12 * (1 + np.abs(lam[..., 0]))
    assert np.all((lam[..., 0] <= hi + tol) | ~closed[..., 0])
    assert np.all((lam[..., 0] >= lo - tol) | ~closed[..., 0])
    # stationarity r + β P̄/π = λ on the support (relative to the gap λ − r)
    with np.errstate(divide="ignore", invalid="ignore"):
        pi_formula = beta * bar / (lam - r)
    # (only where λ − r is well conditioned in float64: the formula's own rounding is ulp(λ)/(λ − r))
    sel = on & closed & ((lam - r) > 1e-5 * (1 + np.abs(lam)))
    np.testing.assert_allclose(p[sel], pi_formula[sel], rtol=1e-10)
    # value formula and dominance over random full-support policies
    v = reg.optimal_value(r, L)
    for b in np.flatnonzero(closed[..., 0]):
        assert float(I.fkl_optimal_value(r[b], L[:, b], w, beta)) == pytest.approx(float(v[b]), rel=1e-9, abs=1e-9)
    for q in rng.dirichlet(np.ones(r.shape[-1]), size=(20, r.shape[0])):  # leading axis of refs is K
        assert np.all(reg.objective(q, r, refs) <= v + 1e-9 * (1 + np.abs(v)))


def test_fkl_normalizer_strictly_decreasing_and_unique():
    rng = np.random.default_rng(3)
    refs = rng.dirichlet(np.ones(7), size=3)
    w = np.array([0.2, 0.5, 0.3])
    r = rng.uniform(0, 1, 7)
    beta = 0.4
    bar = np.exp(arithmetic_mixture(_log(refs), w))
    lam = float(R.multi_fkl(weights=tuple(w), beta=beta).lagrange_multiplier(r, _log(refs))[0])
    grid = r.max() + np.geomspace(1e-8, 100, 2000)
    g = np.array([I.fkl_normalization_residual(t, r, bar, beta) for t in grid])
    assert np.all(np.diff(g) < 0)
    assert np.all(np.array([I.fkl_normalization_slope(t, r, bar, beta) for t in grid]) < 0)
    assert np.all(g[grid < lam] > 0) and np.all(g[grid > lam] < 0)
    assert abs(I.fkl_normalization_residual(lam, r, bar, beta)) <= 1e-13


EXTREME = [
    # (K, n, β, reward scale, zeros)
    (64, 20, 1e-4, 1e4, True),
    (2, 3, 1e-4, 1e4, False),
    (8, 50, 1e4, 1e-4, True),
    (3, 5, 1.0, 0.0, True),
    (1, 4, 1e-4, 1.0, False),
]



def _extreme_batch(rng, k, n, scale, p_zero):
    """A batch of 4 prompts: K references (entries after the first zeroed with probability
    ``p_zero``, renormalized), weights on the simplex, rewards uniform in ±scale."""
    refs = np.moveaxis(rng.dirichlet(np.ones(n) * 0.5, size=(4, k)), -2, 0)
    if p_zero:
        refs[..., 1:][rng.random(refs[..., 1:].shape) < p_zero] = 0.0
        refs /= refs.sum(-1, keepdims=True)
    return refs, rng.dirichlet(np.ones(k)), rng.uniform(-scale, scale, (4, n))

@pytest.mark.parametrize("k,n,beta,scale,zeros", EXTREME)
def test_fkl_lambda_matches_mpmath_on_extreme_batches(k, n, beta, scale, zeros):
    mp = pytest.importorskip("mpmath")
    refs, w, r = _extreme_batch(np.random.default_rng(k * 1000 + n), k, n, scale, 0.3 if zeros else 0.0)
    reg = R.multi_fkl(weights=tuple(w), beta=beta)
    L = _log(refs)
    lam = reg.lagrange_multiplier(r, L)[..., 0]
    lp = reg.optimal_logp(r, L)
    # batch = row by row
    for b in range(4):
        assert float(reg.lagrange_multiplier(r[b], L[:, b])[0]) == lam[b]
    with mp.workdps(50):
        for b in range(4):
            bar = [mp.fsum(mp.mpf(float(wi)) * mp.mpf(float(refs[i, b, y])) for i, wi in enumerate(w)) for y in range(n)]
            on = [y for y in range(n) if bar[y] > 0]
            rmax = max(mp.mpf(float(r[b, y])) for y in on)
            g = lambda d: mp.fsum(beta * bar[y] / (d + rmax - mp.mpf(float(r[b, y]))) for y in on) - 1
            lo, hi = mp.mpf(0), mp.mpf(beta)  # g(0+) = +inf, g(β) ≤ 0
            for _ in range(300):
                mid = mp.sqrt(lo * hi) if lo > 0 else hi / 1024
                lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
            d = (lo + hi) / 2
            lam_mp = rmax + d
            off = [float(r[b, y]) for y in range(n) if bar[y] == 0]
            if off and max(off) > lam_mp:
                lam_mp = mp.mpf(max(off))
            assert abs(mp.mpf(float(lam[b])) - lam_mp) <= 1e-12 * abs(lam_mp) + 1e-300
            for y in on:
                if not (off and max(off) > rmax + d):
                    p_mp = beta * bar[y] / (d + rmax - mp.mpf(float(r[b, y])))
                    assert abs(mp.exp(mp.mpf(float(lp[b, y]))) - p_mp) <= 1e-11 * p_mp


@pytest.mark.parametrize("k,n,beta,scale,zeros", EXTREME)
def test_rkl_extreme_inputs_finite_and_exact(k, n, beta, scale, zeros):
    refs, w, r = _extreme_batch(np.random.default_rng(7 + k + n), k, n, scale, 0.2 if zeros else 0.0)
    L = _log(refs)
    reg = R.multi_rkl(weights=tuple(w), beta=beta)
    lp = reg.optimal_logp(r, L)
    v = reg.optimal_value(r, L)
    assert np.all(np.isfinite(v))
    assert np.allclose(np.exp(lp).sum(-1), 1, atol=1e-12)
    # independent: exact log-space evaluation with python floats, row by row
    for b in range(4):
        s = [sum(wi * L[i, b, y] for i, wi in enumerate(w)) + r[b, y] / beta for y in range(n)]
        m = max(s)
        lse = m + math.log(sum(math.exp(x - m) for x in s if x > -math.inf))
        assert float(v[b]) == pytest.approx(beta * lse, rel=1e-12, abs=1e-12 * beta)


# --------------------------------------------------------------------------- coverage, gaps
@SETTINGS
@given(instances(max_k=6, zeros=False))
def test_coverage_transfer(inst):
    refs, w, _, _, rng = inst
    pi = rng.dirichlet(np.ones(refs.shape[-1]))
    c = np.max(pi / refs, axis=-1)  # tightest per-reference coverage of this π
    log_hat, log_f = generalized_escort(_log(refs), w)
    ratio_hat = np.max(pi / np.exp(log_hat))
    assert ratio_hat <= I.coverage_transfer_rkl(c, w, float(log_f)) * (1 + 1e-10)
    assert I.coverage_transfer_rkl(c, w, float(log_f)) <= I.coverage_transfer_rkl(c, w) * (1 + 1e-12)
    ratio_bar = np.max(pi / np.exp(arithmetic_mixture(_log(refs), w)))
    hm = I.coverage_transfer_fkl(c, w)
    assert ratio_bar <= hm * (1 + 1e-10)
    assert hm <= min(float(np.dot(w, c)), float(np.min(c / w))) * (1 + 1e-12)  # sharper than the spec


def test_rkl_suboptimality_gap_is_scaled_kl():
    rng = np.random.default_rng(5)
    refs = rng.dirichlet(np.ones(6), size=3)
    w = rng.dirichlet(np.ones(3))
    r_star = rng.uniform(0, 1, 6)
    r_hat = r_star + 0.2 * rng.normal(size=6)
    g = I.rkl_gaps(r_star, r_hat, _log(refs), w, 0.3)
    assert g["suboptimality"] == pytest.approx(g["suboptimality_kl_form"], rel=1e-10)
    assert g["suboptimality"] >= 0
    gf = I.fkl_gaps(r_star, r_hat, _log(refs), w, 0.3)
    assert gf["suboptimality"] >= 0


# --------------------------------------------------------------------------- registered checks
@pytest.mark.parametrize(
    "cid",
    [
        "mref.escort_identity", "mref.rkl_optimum", "mref.rkl_mrpo_lower_bound", "mref.rkl_holder_upper_bound",
        "mref.softmax_sensitivity", "mref.fkl_identity", "mref.fkl_optimum", "mref.bounds_monotone",
        "mref.dpo_objectives",
    ],
)
def test_registered_check_passes(cid):
    from prefmatch.theory import checks

    checks.load_all()
    res = checks.run_check(checks.REGISTRY[cid])
    assert res["passed"], res["detail"]


def test_exactly_the_mref_ids_are_registered():
    from prefmatch.theory import checks

    ids = {c for c, chk in checks.load_all().items() if chk.func.__module__.endswith(".checks.mref")}
    assert ids == {
        "mref.escort_identity", "mref.rkl_optimum", "mref.rkl_mrpo_lower_bound", "mref.rkl_holder_upper_bound",
        "mref.softmax_sensitivity", "mref.fkl_identity", "mref.fkl_optimum", "mref.bounds_monotone",
        "mref.dpo_objectives",
    }
