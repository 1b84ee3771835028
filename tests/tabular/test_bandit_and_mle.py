"""Sampling from counts and BT maximum likelihood."""
import numpy as np
from scipy.optimize import minimize

from prefmatch.tabular.bandit import (
    counts_from_comparisons,
    pair_probabilities,
    pl_log_likelihood,
    random_bandit,
    sample_comparisons,
    sample_counts,
    sample_pl_rankings,
    two_response_bandit,
)
from prefmatch.tabular.reward_learning import (
    bt_gradient_hessian,
    bt_log_likelihood,
    bt_mle_finite_class,
    bt_mle_tabular,
    mle_error_sq,
)


def test_counts_have_the_right_law():
    """Counts from the vectorized sampler and from individual comparisons agree in mean (5σ)."""
    rng = np.random.default_rng(0)
    b = random_bandit(rng, 2, 3, r_max=2.0)
    n, trials = 4000, 400
    w = sample_counts(rng, b.reward, b.ref_logp, b.rho, n, trials)
    assert w.shape == (trials, 2, 3, 3) and np.all(w.sum(axis=(1, 2, 3)) == n)
    joint = pair_probabilities(b.ref_logp, b.rho)
    p_win = 1 / (1 + np.exp(-(b.reward[:, :, None] - b.reward[:, None, :])))
    expected = n * (joint * p_win + np.swapaxes(joint * (1 - p_win), -1, -2))
    se = np.sqrt(expected / trials) + 1e-9
    assert np.all(np.abs(w.mean(0) - expected) <= 5 * se + 1e-9)
    x, yw, yl = sample_comparisons(rng, b.reward, b.ref_logp, b.rho, n * 50)
    c = counts_from_comparisons(x, yw, yl, 2, 3) / 50
    assert np.all(np.abs(c - expected) <= 5 * np.sqrt(expected / 50) + 1e-9)


def test_gradient_and_hessian_by_finite_differences():
    rng = np.random.default_rng(1)
    w = rng.integers(0, 20, size=(5, 5)).astype(float)
    r = rng.normal(size=5)
    g, h = bt_gradient_hessian(r, w)
    eps = 1e-6
    for i in range(5):
        e = np.zeros(5)
        e[i] = eps
        fd = -(bt_log_likelihood(r + e, w) - bt_log_likelihood(r - e, w)) / (2 * eps)
        assert abs(fd - g[i]) <= 1e-6 * max(1, abs(g[i]))
        gp, _ = bt_gradient_hessian(r + e, w)
        gm, _ = bt_gradient_hessian(r - e, w)
        np.testing.assert_allclose((gp - gm) / (2 * eps), h[i], atol=1e-5)


def test_tabular_mle_matches_scipy_box_optimum():
    """Projected Newton = L-BFGS-B on the same box problem (likelihood to 1e-9)."""
    rng = np.random.default_rng(2)
    b = random_bandit(rng, 3, 5, r_max=1.0)
    w = sample_counts(rng, b.reward, b.ref_logp, b.rho, 150, trials=4)  # small n: boundary MLEs occur
    r_hat = bt_mle_tabular(w, 1.0)
    assert np.all((r_hat >= 0) & (r_hat <= 1))
    for t in range(4):
        for x in range(3):
            res = minimize(lambda r: -bt_log_likelihood(r, w[t, x]), np.full(5, 0.5),
                           jac=lambda r: bt_gradient_hessian(r, w[t, x])[0], bounds=[(0, 1)] * 5,
                           method="L-BFGS-B", options=dict(ftol=1e-15, gtol=1e-12, maxiter=2000))
            assert -bt_log_likelihood(r_hat[t, x], w[t, x]) <= res.fun + 1e-9


def test_mle_is_consistent_and_population_exact():
    rng = np.random.default_rng(3)
    b = random_bandit(rng, 2, 4, r_max=2.0)
    # population counts (Proposition A.2): exact up to a shift
    joint = pair_probabilities(b.ref_logp, b.rho)
    p_win = 1 / (1 + np.exp(-(b.reward[:, :, None] - b.reward[:, None, :])))
    r_pop = bt_mle_tabular(1e5 * joint * p_win, 2.0, tol=1e-13)
    assert np.max(np.ptp(r_pop - b.reward, axis=-1)) <= 1e-8
    errs = []
    for n in (200, 20000):
        w = sample_counts(rng, b.reward, b.ref_logp, b.rho, n, trials=100)
        errs.append(np.sqrt(np.mean(mle_error_sq(bt_mle_tabular(w, 2.0), b.reward, b.ref_logp, b.rho))))
    # 100× more data: error shrinks by about 10× (1/√n); accept 5×..20×
    assert 5 <= errs[0] / errs[1] <= 20, errs


def test_finite_class_mle_picks_truth_with_enough_data():
    rng = np.random.default_rng(4)
    b = random_bandit(rng, 2, 4, r_max=2.0)
    cands = np.stack([b.reward + 0.5, np.clip(b.reward[:, ::-1], 0, 2), b.reward * 0.2])  # index 0 = shift of r*
    w = sample_counts(rng, b.reward, b.ref_logp, b.rho, 5000, trials=50)
    assert np.all(bt_mle_finite_class(w, cands) == 0)


def test_pl_sampling_first_place_is_softmax():
    rng = np.random.default_rng(5)
    r = np.array([1.0, 0.0, -0.5, 0.3])
    rk = sample_pl_rankings(rng, r, 40000)
    freq = np.bincount(rk[:, 0], minlength=4) / 40000
    p = np.exp(r) / np.exp(r).sum()
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / 40000))
    # PL likelihood sums to 1 over all 24 rankings
    import itertools

    perms = np.array(list(itertools.permutations(range(4))))
    assert abs(np.exp(pl_log_likelihood(r, perms)).sum() - 1) <= 1e-12


def test_two_response_bandit_extremes():
    r, ref_logp = two_response_bandit([0.0, 1.0], 0.7)
    assert ref_logp[0, 0] == -np.inf and ref_logp[1, 1] == -np.inf
    assert abs(1 / (1 + np.exp(-(r[0, 0] - r[0, 1]))) - 0.7) <= 1e-15
