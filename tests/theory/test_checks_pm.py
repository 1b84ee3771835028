"""Tests of theory/checks/pm.py: every id is registered and passes, and the comparisons catch
wrong formulas (each *_report is run with a perturbed closed form and must fail)."""
import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, logsumexp

from prefmatch.theory.checks import pm as C
from prefmatch.theory import regularizers as REG
from prefmatch.theory.checks import REGISTRY, run_check

#: the PM paper's contract, written out independently of CONTRACT_IDS (which it pins)
EXPECTED_IDS = set("""pm.ode.derivation pm.ode.general_solution pm.ode.uniqueness pm.sufficiency
pm.response_dependent pm.kl_rlhf_not_pm pm.generalized_g pm.examples pm.robust_dual pm.conditional
rlhf.kl_optimum rlhf.bias rlhf.collapse fdiv.optimum fdiv.only_kl_is_exp bt.mle_recovers_reward""".split())

def test_exactly_the_expected_ids_are_registered():
    mine = {cid for cid, c in REGISTRY.items() if c.func.__module__ == C.__name__}
    assert mine == EXPECTED_IDS


@pytest.mark.parametrize("cid", sorted(EXPECTED_IDS))
def test_check_passes(cid):
    res = run_check(REGISTRY[cid])
    assert res["method"] in ("sympy", "numeric")
    assert res["source"].startswith("PM paper")
    assert res["detail"] and any(ch.isdigit() for ch in res["detail"])
    assert res["passed"], res["detail"]


# ---------------------------------------------------------------- wrong formulas are caught
def test_kl_optimum_catches_missing_beta():
    ok, detail = C.kl_optimum_report(lambda r, ref_logp, beta: log_softmax(ref_logp + r))
    assert not ok


def test_kl_optimum_catches_missing_reference():
    ok, _ = C.kl_optimum_report(lambda r, ref_logp, beta: log_softmax(r / beta))
    assert not ok


def test_kl_optimum_catches_small_perturbation():
    ok, _ = C.kl_optimum_report(lambda r, ref_logp, beta: log_softmax(ref_logp + r / (1.01 * beta)))
    assert not ok


def test_fdiv_optimum_catches_kl_formula_for_every_f():
    def kl_everywhere(f, r, ref_logp, beta):
        return log_softmax(ref_logp + r / beta)

    ok, _ = C.fdiv_optimum_report(kl_everywhere)
    assert not ok


def test_generalized_g_catches_generalized_pl():
    def gen_pl(reg, r):
        if reg.link == "exp":
            return log_softmax(r)
        return reg.power * np.log(r) - logsumexp(reg.power * np.log(r))

    ok, detail = C.generalized_g_report(gen_pl)
    assert not ok


def test_conditional_catches_plain_pm_and_plain_kl():
    ok1, _ = C.conditional_report(lambda r, ref, a: np.exp(log_softmax(r)))
    with np.errstate(divide="ignore"):
        ok2, _ = C.conditional_report(lambda r, ref, a: np.exp(log_softmax(np.log(ref) + r)))
    assert not ok1 and not ok2


def test_sufficiency_catches_dropped_c2():
    def no_c2(reg, pi, r):
        return REG.pm(c1=reg.c1).objective(pi, r)

    ok, _ = C.sufficiency_report(no_c2, n_inst=8)
    assert not ok


def test_bias_catches_wrong_product_formula():
    ok, _ = C.bias_report(lambda pref, prew: pref**2 * prew / (pref**2 * prew + (1 - pref) ** 2 * (1 - prew)))
    assert not ok


def test_mle_catches_biased_estimator():
    ok, _ = C.mle_report(lambda W: 0.9 * C.bt_mle(W))
    assert not ok


def test_ode_report_catches_wrong_candidate():
    import sympy as sp

    from prefmatch.theory import derivations as D

    ok, _ = C.ode_solution_report(-sp.log(D.PI) + D.C1 + D.C2 / D.PI**2)
    assert not ok
    assert C.ode_solution_report()[0]


# ---------------------------------------------------------------- property tests
def _simplex(draw, k, allow_zero=True):
    w = draw(st.lists(st.floats(0.0, 1.0) if allow_zero else st.floats(1e-3, 1.0), min_size=k, max_size=k))
    w = np.asarray(w, dtype=float)
    if w.sum() <= 0:
        w = np.ones(k)
    return w / w.sum()


@st.composite
def kl_instance(draw):
    k = draw(st.integers(2, 6))
    r = np.asarray(draw(st.lists(st.one_of(st.floats(-1e4, 1e4), st.sampled_from([-1e4, 1e4, 0.0])), min_size=k, max_size=k)))
    ref = _simplex(draw, k)
    tiny = draw(st.booleans())
    if tiny:  # put a 1e-300 entry somewhere
        i = draw(st.integers(0, k - 1))
        ref[i] = 1e-300
        ref = ref / ref.sum()
    beta = draw(st.sampled_from([1e-4, 1e-2, 0.3, 1.0, 10.0]))
    return r, ref, beta


@settings(max_examples=60, deadline=None)
@given(kl_instance())
def test_kl_optimum_matches_mpmath(inst):
    """Prop. 5.1 in log space vs a 50-digit evaluation; exact zeros where π_ref = 0."""
    r, ref, beta = inst
    with np.errstate(divide="ignore"):
        logp = REG.kl(beta).optimal_logp(r, np.log(ref))
    assert not np.any(np.isnan(logp)) and not np.any(logp == np.inf)
    # x − logsumexp(x) loses |x|·eps of absolute accuracy (see test_log_softmax_large_logits_exact)
    with np.errstate(divide="ignore"):
        x = np.log(ref) + r / beta
    tol = 1e-12 + 8 * np.finfo(float).eps * float(np.max(np.abs(x[np.isfinite(x)])))
    assert abs(np.exp(logp).sum() - 1) < tol
    with mp.workdps(50):
        w = [mp.mpf(float(q)) * mp.e ** (mp.mpf(float(x)) / mp.mpf(beta)) for q, x in zip(ref, r)]
        Z = mp.fsum(w)
        for wi, lp in zip(w, logp):
            if wi == 0:
                assert lp == -np.inf
            else:
                ex = float(mp.log(wi / Z))
                assert abs(ex - lp) <= 1e-12 * (1 + abs(ex)) + tol


def test_log_softmax_large_logits_exact():
    """r = (1e4, 1e4), β = 1e-4, uniform π_ref: π* = (1/2, 1/2) exactly; log π* = −log 2 to 1 ulp."""
    logp = REG.kl(1e-4).optimal_logp(np.array([1e4, 1e4]), np.log([0.5, 0.5]))
    assert np.all(np.abs(logp + math.log(2.0)) <= 2e-16)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_pm_sufficiency_identity_random_simplex(data):
    k = data.draw(st.integers(2, 8))
    pi = _simplex(data.draw, k)
    r = np.asarray(data.draw(st.lists(st.floats(-1e4, 1e4), min_size=k, max_size=k)))
    c1 = data.draw(st.floats(-5, 5))
    c2 = data.draw(st.floats(-5, 5))
    J = float(REG.pm(c1=c1, c2=c2).objective(pi, r))
    lz = float(logsumexp(r))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = float(np.sum(np.where(pi > 0, pi * (np.log(np.where(pi > 0, pi, 1)) - (r - lz)), 0.0)))
    rhs = -kl + lz + c1 + k * c2
    assert abs(J - rhs) <= 1e-9 * (1 + abs(rhs))


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_cpm_closed_form_vs_cvxpy(data):
    k = data.draw(st.integers(2, 6))
    ref = _simplex(data.draw, k, allow_zero=False)
    r = np.asarray(data.draw(st.lists(st.floats(-5, 5), min_size=k, max_size=k)))
    alpha = data.draw(st.sampled_from([0.1, 0.2, 0.4]))
    reg = REG.cpm(alpha=alpha)
    p_cvx, _ = C.cvx_optimum(reg, r, ref)
    p = np.exp(reg.optimal_logp(r, np.log(ref)))
    assert np.abs(p - p_cvx).max() < 1e-5
    M = ref >= alpha
    if M.any():
        cond = p[M] / p[M].sum()
        assert np.allclose(cond, np.exp(log_softmax(r[M])), atol=1e-12)
