"""One battery of checks over every entry of ALL_REGULARIZERS (as scipy runs one battery over
every distribution): simplex, KKT/stationarity, cvxpy optimum, sympy ψ, token sums, numpy vs
torch, extreme inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from prefmatch.theory import regularizers as R

NAMES = sorted(R.ALL_REGULARIZERS)


def instance(reg, rng, n=6, batch=None, scale=1.0):
    shape = (n,) if batch is None else (batch, n)
    r = scale * rng.normal(size=shape)
    if reg.multi_reference:
        k = len(reg.weights)
        ref = rng.dirichlet(np.ones(n), size=(k,) + shape[:-1])
    else:
        ref = rng.dirichlet(np.ones(n), size=shape[:-1])
    return r, ref


def cvx_solve(reg, r, ref):
    import cvxpy as cp

    x = cp.Variable(len(r), nonneg=True)
    cons = [cp.sum(x) == 1] + reg.cvx_constraints(x, r, ref)
    prob = cp.Problem(cp.Maximize(reg.cvx_objective(x, r, ref)), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return np.asarray(x.value), prob.value


@pytest.mark.parametrize("name", NAMES)
def test_optimum_on_simplex_and_batched(name):
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(1)
    r, ref = instance(reg, rng, batch=7)
    logp = reg.optimal_logp(r, np.log(ref))
    p = np.exp(logp)
    assert p.shape == r.shape
    assert np.all(p >= 0) and np.allclose(p.sum(-1), 1.0, atol=1e-12)
    # row-wise solution equals batched solution
    for i in range(3):
        refi = ref[:, i] if reg.multi_reference else ref[i]
        np.testing.assert_allclose(reg.optimal_logp(r[i], np.log(refi)), logp[i], atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_optimum_matches_cvxpy(name):
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(2)
    for _ in range(3):
        r, ref = instance(reg, rng)
        p = np.exp(reg.optimal_logp(r, np.log(ref)))
        x, val = cvx_solve(reg, r, ref)
        assert np.max(np.abs(p - x)) < 2e-5, (p, x)  # interior-point accuracy on exp cones
        # value: closed form / objective at π* vs the cvxpy optimum
        v = float(reg.optimal_value(r, np.log(ref)))
        assert abs(v - val) < 1e-6 * (1 + abs(val))
        # and π* is no worse than the solver's point under our own objective
        assert float(reg.objective(p, r, ref)) >= float(reg.objective(np.clip(x, 0, None) / np.clip(x, 0, None).sum(), r, ref)) - 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_stationarity_kkt(name):
    """∂/∂π_y Σ π(r+ψ) is constant (= the multiplier) on the support of π*."""
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(3)
    r, ref = instance(reg, rng)
    p = np.exp(reg.optimal_logp(r, np.log(ref)))
    grads = []
    for y in range(len(r)):
        h = 1e-6 if p[y] < 1e-8 else min(1e-6, 1e-3 * p[y])  # stay inside the simplex
        e = np.zeros_like(p)
        e[y] = h
        jp = float(reg.objective(p + e, r, ref))
        jm = float(reg.objective(p - e, r, ref))
        grads.append((jp - jm) / (2 * h))
    grads = np.array(grads)
    sup = p > 1e-8
    assert np.ptp(grads[sup]) < 1e-5, grads
    if (~sup).any():  # KKT: off the support the marginal value is no larger
        assert np.all(grads[~sup] <= grads[sup].mean() + 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_psi_sympy_equals_psi(name):
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(4)
    p, q = sp.Symbol("p", positive=True), sp.Symbol("q", positive=True)
    if reg.multi_reference:
        qs = sp.symbols(f"q0:{len(reg.weights)}", positive=True)
        expr = reg.psi_sympy(p, list(qs))
        f = sp.lambdify((p, *qs), expr, "numpy")
    else:
        expr = reg.psi_sympy(p, q)
        f = sp.lambdify((p, q), expr, "numpy")
    for _ in range(5):
        pv = rng.uniform(0.01, 0.99)
        if reg.multi_reference:
            qv = rng.uniform(0.01, 0.99, size=len(reg.weights))
            num = reg.psi(np.log(np.array([pv])), np.log(qv)[:, None])[0]
            sym = f(pv, *qv)
        else:
            qv = rng.uniform(0.01, 0.99)
            num = reg.psi(np.log(np.array([pv])), np.log(np.array([qv])))[0]
            sym = f(pv, qv)
        assert abs(float(num) - float(sym)) < 1e-10 * (1 + abs(float(sym)))


@pytest.mark.parametrize("name", NAMES)
def test_token_rewards_sum_to_psi(name):
    """Σ_t token_reward = ψ of the sequence (PM: without its constant C2/π term; token-level cPM:
    ψ applied token by token); non-additive regularizers pay ψ once, at the last token."""
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(5)
    B, T = 4, 5
    logp_t = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    if reg.multi_reference:
        ref_t = np.log(rng.uniform(0.05, 0.95, size=(len(reg.weights), B, T)))
    else:
        ref_t = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    mask = (np.arange(T)[None, :] < rng.integers(1, T + 1, size=(B, 1))).astype(float)
    tok = reg.token_reward(logp_t, ref_t, mask)
    assert np.all(tok[mask == 0] == 0)
    seq_logp = (logp_t * mask).sum(-1)
    seq_ref = (ref_t * mask).sum(-1)
    if getattr(reg, "level", "sequence") == "token":
        per_tok = np.where(mask > 0, reg.psi(logp_t, ref_t), 0.0)
        np.testing.assert_allclose(tok, per_tok, atol=1e-12)
        return
    expected = reg.psi(seq_logp, seq_ref)
    if isinstance(reg, R.PM):
        expected = expected - reg.beta * reg.c2 * np.exp(-seq_logp)
    np.testing.assert_allclose(tok.sum(-1), expected, atol=1e-10)
    if not reg.token_additive:
        assert np.all((tok != 0).sum(-1) <= 1)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_and_torch_agree(name):
    torch = pytest.importorskip("torch")
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(6)
    r, ref = instance(reg, rng, batch=3)
    lr = np.log(ref)
    a = reg.psi(np.log(ref[..., ::-1].copy() if not reg.multi_reference else ref[0]), lr)
    b = reg.psi(torch.tensor(np.log(ref[..., ::-1].copy() if not reg.multi_reference else ref[0])), torch.tensor(lr))
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12)
    a = reg.optimal_logp(r, lr)
    b = reg.optimal_logp(torch.tensor(r), torch.tensor(lr))
    np.testing.assert_allclose(a, b.numpy(), atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1e4])
def test_extreme_rewards_finite(name, scale):
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(7)
    r, ref = instance(reg, rng, batch=4, scale=scale)
    logp = reg.optimal_logp(r, np.log(ref))
    assert not np.any(np.isnan(logp))
    p = np.exp(logp)
    assert np.allclose(p.sum(-1), 1, atol=1e-10)
    assert np.all(np.isfinite(reg.optimal_value(r, np.log(ref))))


def test_kl_tiny_beta_and_zero_reference():
    reg = R.kl(beta=1e-4)
    r = np.array([1e4, -1e4, 3.0, 2.9999])
    ref = np.array([0.0, 0.5, 1e-300, 0.5 - 1e-300])
    p = reg.optimal_policy(r, ref)
    assert p[0] == 0.0  # probability 0 where the reference is 0
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-15
    # r/β differences: 3.0 vs 2.9999 over β = 1e-4 → log-odds 1 + log(1e-300/0.5)
    expected = np.log(1e-300) - np.log(0.5) + (3.0 - 2.9999) / 1e-4
    got = np.log(p[2]) - np.log(p[3])
    assert abs(got - expected) < 1e-6 * abs(expected)


def test_cpm_closed_form_theorem4():
    rng = np.random.default_rng(8)
    r = rng.normal(size=8)
    ref = rng.dirichlet(np.ones(8) * 0.5)
    reg = R.cpm(alpha=0.1)
    p = reg.optimal_policy(r, ref)
    on = ref >= 0.1
    expect = np.where(on, np.exp(r), ref * np.exp(r))
    np.testing.assert_allclose(p, expect / expect.sum(), rtol=1e-12)
    cond = p[on] / p[on].sum()
    np.testing.assert_allclose(cond, np.exp(r[on]) / np.exp(r[on]).sum(), rtol=1e-12)


def test_multi_fkl_lambda_form():
    rng = np.random.default_rng(9)
    reg = R.multi_fkl(weights=(0.2, 0.5, 0.3), beta=0.4)
    r = rng.uniform(0, 1, size=(5, 7))
    refs = rng.dirichlet(np.ones(7), size=(3, 5))
    p = np.exp(reg.optimal_logp(r, np.log(refs)))
    lam = reg.lagrange_multiplier(r, np.log(refs))
    mix = np.einsum("k,kbn->bn", np.array(reg.weights), refs)
    np.testing.assert_allclose(p, 0.4 * mix / (lam - r), rtol=1e-11)
    assert np.all(lam[:, 0] > r.max(-1))
    assert np.all(np.abs(p.sum(-1) - 1) < 1e-12)


def test_f_divergence_off_support_mass():
    """reverse KL has f'(∞) = 0: a response outside supp(π_ref) with a high reward takes mass."""
    reg = R.f_divergence("reverse_kl", beta=1.0)
    r = np.array([0.0, 0.0, 5.0])
    ref = np.array([0.5, 0.5, 0.0])
    p = reg.optimal_policy(r, ref)
    x, _ = cvx_solve(reg, r, ref)
    np.testing.assert_allclose(p, x, atol=2e-5)
    # exact: λ = 5 (the off-support reward), π = 0.5/(5 − 0) on the support, the rest off it
    np.testing.assert_allclose(p, [0.1, 0.1, 0.8], rtol=1e-14)
    assert float(reg.objective(p, r, ref)) >= float(reg.objective(x / x.sum(), r, ref))


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (R.kl, {"beta": 0.0}, "beta"),
        (R.kl, {"beta": -1}, "beta"),
        (R.kl, {"beta": float("nan")}, "beta"),
        (R.cpm, {"alpha": 0.0}, r"alpha must be in \(0, 1\]"),
        (R.cpm, {"alpha": 1.5}, "alpha"),
        (R.maxent, {"beta": 0}, "beta"),
        (R.pm, {"beta": -1.0}, "beta"),
        (R.multi_rkl, {"weights": (0.5, 0.6)}, "weights"),
        (R.multi_rkl, {"weights": ()}, "weights"),
        (R.f_divergence, {"f": "tv"}, "f must be one of"),
    ],
)
def test_bad_parameters_name_the_argument(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_nan_reward_rejected():
    with pytest.raises(ValueError, match="reward must be finite"):
        R.kl(1.0).optimal_logp(np.array([0.0, np.nan]), np.log(np.array([0.5, 0.5])))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 2**31 - 1),
    log_beta=st.floats(-4, 2),
    name=st.sampled_from(NAMES),
)
def test_property_optimum_beats_random_policies(n, seed, log_beta, name):
    """J(π*) ≥ J(π) for random π on the simplex (hypothesis sweep incl. small β)."""
    reg = R.ALL_REGULARIZERS[name]
    if hasattr(reg, "beta"):
        import dataclasses

        reg = dataclasses.replace(reg, beta=10.0**log_beta)
    rng = np.random.default_rng(seed)
    r, ref = instance(reg, rng, n=n)
    logp = reg.optimal_logp(r, np.log(ref))
    v = float(reg.objective(np.exp(logp), r, ref))
    assert math.isfinite(v)
    for pi in rng.dirichlet(np.ones(n), size=20):
        assert float(reg.objective(pi, r, ref)) <= v + 1e-9 * (1 + abs(v))


@pytest.mark.parametrize("f", ["reverse_kl", "hellinger", "js", "chi2"])
def test_f_divergence_tiny_reference_on_top_reward(f):
    """π_ref(top) = 1e-300: the normalizer root sits at a gap of ~1e-300 (no overflow, no NaN)."""
    reg = R.f_divergence(f, beta=0.5)
    r, ref = np.array([3.0, 0.5, -0.3, 0.0]), np.array([1e-300, 0.3, 0.3, 0.4])
    p = reg.optimal_policy(r, ref)
    assert abs(p.sum() - 1) < 1e-12
    lam = float(reg.lagrange_multiplier(r, np.log(ref))[0])
    import sympy as sp

    u, v = sp.symbols("u v", positive=True)
    fprime = sp.diff(R.F_DIVERGENCES[f].f_sympy(u), u)
    # check stationarity directly: f'(π/π_ref) = (r − λ)/β wherever π > 0
    fp = sp.lambdify(u, fprime, "mpmath")
    import mpmath as mp

    mp.mp.dps = 50
    for y in range(4):
        if p[y] > 0 and ref[y] > 0:
            ratio = mp.mpf(p[y]) / mp.mpf(ref[y])
            assert abs(float(fp(ratio)) - (r[y] - lam) / 0.5) < 1e-8 * (1 + abs((r[y] - lam) / 0.5))


def test_lagrange_gap_survives_rounding_of_lambda():
    """β = 1e-3 and π̄(top) ~ 1e-13: λ − max r is below one ulp of λ, the gap is still exact."""
    reg = R.multi_fkl(weights=(1.0,), beta=1e-3)
    refs = np.array([[[0.0799, 9.69e-14, 0.9201 - 9.69e-14]]])
    r = np.array([[-1.59, 5.408, 2.147]])
    gap = reg.lagrange_gap(r, np.log(refs))
    p = np.exp(reg.optimal_logp(r, np.log(refs)))
    assert np.all(gap > 0)
    # top response: π = β P̄/(λ − r) = β P̄/gap  ⇒  gap = β P̄(top)/π(top)
    np.testing.assert_allclose(gap[0, 0], 1e-3 * refs[0, 0, 1] / p[0, 1], rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_reward_and_reference_broadcast(name):
    """A batch of reward tables against one reference per prompt (trials × prompts × responses)."""
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(11)
    r = rng.normal(size=(4, 3, 5))
    ref = rng.dirichlet(np.ones(5), size=(len(reg.weights), 3) if reg.multi_reference else 3)
    lp = reg.optimal_logp(r, np.log(ref))
    assert lp.shape == (4, 3, 5)
    for t in range(4):
        np.testing.assert_allclose(lp[t], reg.optimal_logp(r[t], np.log(ref)), atol=1e-12)


@pytest.mark.parametrize("name", [n for n in NAMES if isinstance(R.ALL_REGULARIZERS[n], R.AffineLogRegularizer)])
def test_torch_autograd_through_optimum(name):
    """∂ log π*/∂r by autograd equals (1/a)(I − π*) (Gibbs Jacobian) — no in-place op breaks autograd."""
    torch = pytest.importorskip("torch")
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(12)
    r, ref = instance(reg, rng, n=5)
    rt = torch.tensor(r, requires_grad=True)
    lp = reg.optimal_logp(rt, torch.tensor(np.log(ref)))
    jac = np.stack([torch.autograd.grad(lp[i], rt, retain_graph=True)[0].numpy() for i in range(5)])
    a = reg.coefficients(np.log(ref), like=r)[0]
    p = np.exp(lp.detach().numpy())
    np.testing.assert_allclose(jac, (np.eye(5) - p[None, :]) / a, atol=1e-12)


def test_token_level_cpm_optimum_against_cvxpy():
    """Token-level cPM (indicator per token on π_ref(y_t|·)) is its own objective,
    Σ_y π(y)[r(y) − β log π(y) + β Σ_t 1[π_ref(y_t|·) < α] log π_ref(y_t|·)]; its
    ``sequence_optimal_logp`` is that objective's maximizer (cvxpy on the simplex, b by a loop)."""
    import cvxpy as cp

    rng = np.random.default_rng(11)
    n, T, alpha, beta = 6, 3, 0.3, 0.6
    ref_t = np.log(rng.uniform(0.05, 0.9, size=(n, T)))
    mask = (np.arange(T)[None, :] < rng.integers(1, T + 1, size=(n, 1))).astype(float)
    r = rng.normal(size=n)
    b = np.array([sum(q for q, m in zip(row, mrow) if m and np.exp(q) < alpha) for row, mrow in zip(ref_t, mask)])
    pi = cp.Variable(n, nonneg=True)
    cp.Problem(cp.Maximize((r + beta * b) @ pi + beta * cp.sum(cp.entr(pi))), [cp.sum(pi) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    got = np.exp(R.cpm(alpha=alpha, level="token", beta=beta).sequence_optimal_logp(r, ref_t, mask))
    np.testing.assert_allclose(got, pi.value, atol=1e-6)
    # the sequence level (Definition 4.1) is a different optimum on the same data
    seq = np.exp(R.cpm(alpha=alpha, level="sequence", beta=beta).sequence_optimal_logp(r, ref_t, mask))
    assert np.abs(seq - got).max() > 1e-3
