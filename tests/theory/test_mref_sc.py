"""The ``mref.sc.*`` sample-complexity checks pass as registered and fail for a wrong rate or constant.

One shared simulation (about 2 s) feeds every check; each falsification reruns only the verdict.
"""
from __future__ import annotations

import numpy as np
import pytest

from prefmatch.theory.checks import mref_sc as SC
from prefmatch.theory import finite_class as FC
from prefmatch.theory.checks import load_all

#: a constant this many times too small is below every measured quantile of the check's gap
#: somewhere (the measured slacks are ≈ 47, 130, 660, 2100 and 10500; printed in each check's detail)
WRONG_CONSTANT = {
    "mref.sc.lemma_a1": 1e-2,
    "mref.sc.rkl_suboptimality": 1e-3,
    "mref.sc.rkl_optimality": 1e-3,
    "mref.sc.fkl_suboptimality": 1e-4,
    "mref.sc.fkl_optimality": 1e-5,
}


def test_every_sc_check_is_registered_with_an_evaluator():
    registered = {cid for cid in load_all() if cid.startswith("mref.sc.")}
    assert registered == set(SC.EVALUATORS) == set(WRONG_CONSTANT)


@pytest.mark.parametrize("cid", sorted(SC.EVALUATORS))
def test_sc_check_passes_with_the_theorem_and_fails_when_falsified(cid):
    fn, rate = SC.EVALUATORS[cid]
    ok, detail = fn()
    assert ok, detail
    # a claimed rate that is too slow (too loose) and one that is too fast both fail: the slope test is two-sided
    assert not fn(rate=rate - 0.5)[0]
    assert not fn(rate=rate + 0.5)[0]
    # a bound constant that is too small fails
    assert not fn(constant_scale=WRONG_CONSTANT[cid])[0]


def test_theorem_6_4_rate_is_not_tight():
    # the paper's N^{-1/2} for the forward-KL sub-optimality gap, claimed as the rate, fails (finding 16)
    assert not SC.evaluate_fkl_suboptimality(rate=0.5)[0]


def test_lemma_a1_bound_with_a_wrong_rate_fails():
    # ε² claimed to decay like N^{-3} from the same value at N = 1e3: violated at large N even with the paper's loose constant
    assert not SC.evaluate_lemma_a1(bound_rate=3.0)[0]
    assert SC.evaluate_lemma_a1(bound_rate=1.0)[0]


def test_mle_is_consistent_and_the_class_realizable():
    world, sim = FC.shared_simulation()
    members = world.members()
    assert members.min() >= 0 and members.max() <= world.r_max
    assert 0.0 in world.thetas
    sd = sim["rkl"]["theta_hat"].std(axis=1)
    assert np.all(np.diff(sd) < 0)  # the MLE concentrates as N grows
    # the grid is much finer than the MLE's spread at the largest N: rates are statistical, not grid effects
    assert (world.thetas[1] - world.thetas[0]) < 0.1 * sd[-1]


def test_assess_is_two_sided_and_uses_the_constant():
    n = np.array([1e3, 1e4, 1e5])
    q = 1.0 / n
    a = FC.assess(n, q, 10.0 / n, 1.0)
    assert a["ok"] and abs(a["slope"] + 1) < 1e-12
    assert not FC.assess(n, q, 10.0 / n, 0.5)["ok"]
    assert not FC.assess(n, q, 10.0 / n, 1.0, constant_scale=0.05)["ok"]


def test_make_world_rejects_an_even_class():
    with pytest.raises(ValueError, match="class_size must be an odd integer"):
        FC.make_world(class_size=100)
    with pytest.raises(ValueError, match="trials must be"):
        FC.simulate(FC.make_world(class_size=11), (100,), trials=2)


# --------------------------------------------------------------------------- the deterministic-perturbation checks
def _run(cid):
    from prefmatch.theory.checks import REGISTRY, run_check

    load_all()
    return run_check(REGISTRY[cid])


def test_bounds_monotone_fails_for_a_bound_too_small_or_a_gap_of_another_order(monkeypatch):
    from prefmatch.theory import bounds as B
    from prefmatch.theory import identities

    assert _run("mref.bounds_monotone")["passed"]
    orig = B.rkl_suboptimality
    monkeypatch.setattr(B, "rkl_suboptimality", lambda *a, **k: orig(*a, **k) * 1e-3)
    assert not _run("mref.bounds_monotone")["passed"]  # a constant 1000 times too small
    monkeypatch.setattr(B, "rkl_suboptimality", orig)
    gaps = identities.rkl_gaps

    def first_order(*a, **k):  # a sub-optimality gap of first order in the reward error (rate n^-1/2, not n^-1)
        g = dict(gaps(*a, **k))
        g["suboptimality"] = np.sqrt(np.abs(g["suboptimality"]))
        return g

    monkeypatch.setattr(identities, "rkl_gaps", first_order)
    assert not _run("mref.bounds_monotone")["passed"]


def test_local_coverage_fails_with_a_coverage_constant_too_small(monkeypatch):
    from prefmatch.theory import bounds as B

    orig = B.kl_ball_coverage
    monkeypatch.setattr(B, "kl_ball_coverage", lambda *a, **k: orig(*a, **k) / 3)
    assert not _run("mref.local_coverage")["passed"]
