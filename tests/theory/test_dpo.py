"""theory/dpo.py: multi-reference DPO losses (eqs. 75–76) against hand-written formulas,
numpy vs torch, gradients, and the population minimizer."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefmatch.theory import dpo as D
from prefmatch.theory import regularizers as R


def softplus(x):
    return np.logaddexp(0.0, x)


@st.composite
def batches(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 8))
    b = draw(st.integers(1, 16))
    beta = draw(st.sampled_from([1e-3, 0.1, 1.0, 10.0]))
    lw = -rng.exponential(draw(st.sampled_from([0.1, 5.0, 50.0])), b)
    ll = -rng.exponential(5.0, b)
    rw = -rng.exponential(5.0, (k, b))
    rl = -rng.exponential(5.0, (k, b))
    return lw, ll, rw, rl, tuple(rng.dirichlet(np.ones(k))), beta


@settings(max_examples=60, deadline=None)
@given(batches())
def test_rkl_dpo_matches_eq75(bt):
    lw, ll, rw, rl, w, beta = bt
    z = beta * ((lw - ll) - np.tensordot(np.asarray(w), rw - rl, axes=1))
    expected = np.mean(softplus(-z))
    assert D.rkl_dpo_loss(lw, ll, rw, rl, weights=w, beta=beta) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_fkl_dpo_matches_eq76(bt):
    lw, ll, rw, rl, w, beta = bt
    wv = np.asarray(w)
    bar_w, bar_l = np.tensordot(wv, np.exp(rw), 1), np.tensordot(wv, np.exp(rl), 1)
    z = beta * (bar_l / np.exp(ll) - bar_w / np.exp(lw))
    expected = np.mean(softplus(-z))
    got = D.fkl_dpo_loss(lw, ll, rw, rl, weights=w, beta=beta)
    assert got == pytest.approx(expected, rel=1e-10)


def test_single_reference_reduces_to_dpo_and_fdpo():
    rng = np.random.default_rng(1)
    lw, ll = np.log(rng.uniform(0.01, 1, 8)), np.log(rng.uniform(0.01, 1, 8))
    rw, rl = np.log(rng.uniform(0.01, 1, 8)), np.log(rng.uniform(0.01, 1, 8))
    dpo = D.dpo_loss(R.kl(beta=0.3), lw, ll, rw, rl)
    assert D.rkl_dpo_loss(lw, ll, rw[None], rl[None], weights=(1.0,), beta=0.3) == pytest.approx(dpo, rel=1e-14)
    fd = D.dpo_loss(R.f_divergence("reverse_kl", beta=0.3), lw, ll, rw, rl)
    assert D.fkl_dpo_loss(lw, ll, rw[None], rl[None], weights=(1.0,), beta=0.3) == pytest.approx(fd, rel=1e-13)
    # standard DPO written out
    assert dpo == pytest.approx(np.mean(softplus(-0.3 * ((lw - rw) - (ll - rl)))), rel=1e-14)


def test_reductions_and_sample_weight():
    rng = np.random.default_rng(2)
    args = (np.log(rng.uniform(0.1, 1, 5)), np.log(rng.uniform(0.1, 1, 5)), np.log(rng.uniform(0.1, 1, (2, 5))), np.log(rng.uniform(0.1, 1, (2, 5))))
    none = D.rkl_dpo_loss(*args, weights=(0.5, 0.5), beta=1.0, reduction="none")
    assert none.shape == (5,)
    assert D.rkl_dpo_loss(*args, weights=(0.5, 0.5), beta=1.0, reduction="sum") == pytest.approx(none.sum())
    sw = np.array([1.0, 2.0, 0.0, 1.0, 3.0])
    assert D.rkl_dpo_loss(*args, weights=(0.5, 0.5), beta=1.0, sample_weight=sw) == pytest.approx(np.dot(sw, none) / sw.sum())
    with pytest.raises(ValueError):
        D.rkl_dpo_loss(*args, weights=(0.5, 0.5), beta=1.0, reduction="max")
    with pytest.raises(ValueError):
        D.rkl_dpo_loss(*args, weights=(0.2, 0.5), beta=1.0)  # weights off the simplex


@pytest.mark.parametrize("loss", [D.rkl_dpo_loss, D.fkl_dpo_loss])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_torch_agree_and_gradients(loss, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    lw, ll = np.log(rng.uniform(0.05, 1, 6)), np.log(rng.uniform(0.05, 1, 6))
    rw, rl = np.log(rng.uniform(0.05, 1, (3, 6))), np.log(rng.uniform(0.05, 1, (3, 6)))
    w = (0.2, 0.3, 0.5)
    ref = loss(lw, ll, rw, rl, weights=w, beta=0.7)
    tdt = getattr(torch, dtype)
    tw = torch.tensor(lw, dtype=tdt, requires_grad=True)
    tl = torch.tensor(ll, dtype=tdt, requires_grad=True)
    out = loss(tw, tl, torch.tensor(rw, dtype=tdt), torch.tensor(rl, dtype=tdt), weights=w, beta=0.7)
    assert out.dtype == tdt
    assert float(out.detach()) == pytest.approx(ref, rel=1e-12 if dtype == "float64" else 1e-5)
    out.backward()
    # gradient against central finite differences (float64 only)
    if dtype == "float64":
        h = 1e-6
        for i in range(6):
            e = np.zeros(6)
            e[i] = h
            fd = (loss(lw + e, ll, rw, rl, weights=w, beta=0.7) - loss(lw - e, ll, rw, rl, weights=w, beta=0.7)) / (2 * h)
            assert float(tw.grad[i]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_extreme_logits_stay_finite():
    lw = np.array([-1e4, 0.0, -50.0])
    ll = np.array([0.0, -1e4, -50.0])
    rw = np.array([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    rl = rw.copy()
    for loss in (D.rkl_dpo_loss, D.fkl_dpo_loss):
        v = loss(lw, ll, rw, rl, weights=(0.5, 0.5), beta=1e-4, reduction="none")
        assert np.all(np.isfinite(v)) or loss is D.fkl_dpo_loss  # FKL: P̄/π overflows at log π = −1e4 (Ass. D.2 violated)
        assert not np.any(np.isnan(v))


@pytest.mark.parametrize("make", [lambda w: R.multi_rkl(weights=w, beta=0.5), lambda w: R.multi_fkl(weights=w, beta=0.5)])
def test_population_loss_minimized_at_rlhf_optimum(make):
    rng = np.random.default_rng(9)
    n, k = 5, 3
    refs = rng.dirichlet(np.ones(n), size=k)
    w = tuple(rng.dirichlet(np.ones(k)))
    r = rng.uniform(0, 2, n)
    reg = make(w)
    L = np.log(refs)
    lp_star = reg.optimal_logp(r, L)
    l_star = float(D.population_dpo_loss(reg, lp_star, L, r))
    # any other policy has a larger population loss
    for _ in range(200):
        q = rng.dirichlet(np.ones(n))
        assert float(D.population_dpo_loss(reg, np.log(q), L, r)) >= l_star - 1e-12
    # and small perturbations too (local minimum, first-order condition)
    for eps in (1e-3, 1e-5):
        for _ in range(20):
            z = lp_star + eps * rng.normal(size=n)
            z = z - np.logaddexp.reduce(z)
            assert float(D.population_dpo_loss(reg, z, L, r)) >= l_star - 1e-14
    # non-uniform data distribution: same minimizer
    data = np.log(rng.dirichlet(np.ones(n)))
    l_star_d = float(D.population_dpo_loss(reg, lp_star, L, r, data_logp=data))
    q = rng.dirichlet(np.ones(n))
    assert float(D.population_dpo_loss(reg, np.log(q), L, r, data_logp=data)) >= l_star_d


def test_implicit_reward_rejects_a_regularizer_without_one():
    with pytest.raises(ValueError, match="no implicit reward"):
        D.implicit_reward(R.generalized_pm("power"), np.zeros(3), np.zeros(3))


@pytest.mark.parametrize("f", list(R.F_DIVERGENCES))
def test_fdiv_implicit_reward_recovers_the_reward_on_the_support(f):
    """β f'(π*/π_ref) = r − λ on the optimum's support, for every f (stationarity, §5.1)."""
    rng = np.random.default_rng(3)
    reg = R.f_divergence(f, beta=0.7)
    r, ref = rng.normal(size=7), np.log(rng.dirichlet(np.ones(7)))
    lp = reg.optimal_logp(r, ref)
    on = lp > np.log(1e-12)
    d = D.implicit_reward(reg, lp, ref)[on] - r[on]
    assert on.sum() >= 2 and np.ptp(d) < 1e-8


# --------------------------------------------------------------------------- every affine regularizer
def _affine(name):
    from prefmatch.llm.train.rewards import build_regularizer

    params = {"cpm": {"alpha": 0.3, "level": "sequence"}, "multi_rkl": {"weights": (0.3, 0.7)},
              "pm": {"c1": 0.4, "c2": 0.3}}.get(name, {})
    return build_regularizer(name, params, 0.7)


@pytest.mark.parametrize("name,level", [(n, "sequence") for n in D.dpo_regularizers()] + [("cpm", "token")])
def test_sequence_implicit_reward_inverts_the_trainers_optimum(name, level):
    """h(π*) − r is one constant over responses, with π* = sequence_optimal_logp from token
    reference log-probs (token-level cPM: its own optimum), numpy and torch alike."""
    torch = pytest.importorskip("torch")
    reg = _affine(name)
    if name == "cpm":
        reg = R.cpm(alpha=0.3, level=level, beta=0.7)
    rng = np.random.default_rng(3)
    n, T = 9, 2
    k = 2 if reg.multi_reference else 1
    ref_t = np.log(rng.uniform(0.05, 0.9, (k, n, T)))
    ref_t = ref_t if reg.multi_reference else ref_t[0]
    mask = np.ones((n, T))
    mask[0, 1] = 0.0  # a one-token response: its second position is padding
    r = rng.normal(size=n)
    star = reg.sequence_optimal_logp(r, ref_t, mask)
    # spread log π*(y) over the tokens of y in an arbitrary way: h depends on the sum only
    split = rng.uniform(0.2, 0.8, n)
    lp_t = np.stack([star * split, star * (1 - split)], -1)
    lp_t[0] = [star[0], 123.0]  # the padded position must not count
    h = reg.sequence_implicit_reward(lp_t, ref_t, mask)
    assert np.ptp(h - r) < 1e-12
    ht = reg.sequence_implicit_reward(torch.tensor(lp_t), torch.tensor(ref_t), torch.tensor(mask))
    np.testing.assert_allclose(ht.numpy(), h, rtol=1e-13, atol=1e-13)
    # sequence level: the implicit reward of the summed log-probs (Definition 4.1 on whole responses)
    seq = np.where(mask > 0, ref_t, 0.0).sum(-1)
    if level == "sequence":
        np.testing.assert_allclose(h, reg.implicit_reward(star, seq), atol=1e-12)
    else:  # the token-level indicator is another objective: its implicit reward differs
        assert np.ptp(reg.implicit_reward(star, seq) - r) > 0.1


def test_sequence_dpo_loss_written_out():
    rng = np.random.default_rng(5)
    lw, ll = np.log(rng.uniform(0.05, 1, (6, 3))), np.log(rng.uniform(0.05, 1, (6, 3)))
    rw, rl = np.log(rng.uniform(0.05, 1, (6, 3))), np.log(rng.uniform(0.05, 1, (6, 3)))
    mw, ml = np.ones((6, 3)), np.ones((6, 3))
    ml[:, 2] = 0
    beta = 0.4
    kl = D.sequence_dpo_loss(R.kl(beta=beta), lw, ll, rw, rl, mw, ml, reduction="none")
    z = beta * ((lw - rw).sum(-1) - ((ll - rl) * ml).sum(-1))
    np.testing.assert_allclose(kl, softplus(-z), rtol=1e-13)
    # PM and max-ent: reference-free, C1 and C2 drop out, the same loss at the same β
    pm = D.sequence_dpo_loss(R.pm(c1=0.7, c2=0.2, beta=beta), lw, ll, rw, rl, mw, ml, reduction="none")
    me = D.sequence_dpo_loss(R.maxent(beta=beta), lw, ll, None, None, mw, ml, reduction="none")
    np.testing.assert_allclose(pm, softplus(-beta * (lw.sum(-1) - (ll * ml).sum(-1))), rtol=1e-13)
    np.testing.assert_allclose(pm, me, rtol=1e-13)
