"""Per-token multi-reference ensembles and MRPO against the paper's sequence-level solutions."""
from __future__ import annotations

import numpy as np
import pytest

from prefmatch.theory import identities
from prefmatch.theory import token_mixtures as TM
from prefmatch.theory.checks import select, run_check
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort


def test_at_least_three_practice_checks_registered_and_pass():
    found = select("mref.practice.*")
    assert len(found) >= 3
    for c in found:
        assert c.statement and c.source and c.id.startswith("mref.practice.")
    res = run_check(next(c for c in found if c.id == "mref.practice.coincide"))
    assert res["passed"], res["detail"]


@pytest.mark.parametrize("differ_at, geo_equal, ari_equal", [([0], True, True), ([2], False, True), ([1], False, True), ([0, 2], False, False), (None, False, False)])
def test_where_the_references_differ_decides_which_ensemble_is_exact(differ_at, geo_equal, ari_equal):
    rng = np.random.default_rng(7)
    cond = TM.random_token_references(rng, 3, 3, 3, disagreement=1.5, differ_at=differ_at)
    c = TM.compare(cond, (0.2, 0.3, 0.5), rng.uniform(0, 1, 27), 0.5)
    assert (c["tv_geometric"] < 1e-12) == geo_equal
    assert (c["tv_arithmetic"] < 1e-12) == ari_equal
    assert (c["rkl_gap_kl_form"] < 1e-12) == geo_equal
    assert (abs(c["fkl_gap"]) < 1e-12) == ari_equal


def test_geometric_ensemble_is_escort_tilted_by_the_disagreement_bonus():
    rng = np.random.default_rng(8)
    cond = TM.random_token_references(rng, 2, 3, 3, disagreement=1.0)
    w = (0.4, 0.6)
    L = TM.sequence_logps(cond)
    log_hat, log_f = generalized_escort(L, w)
    geo, _ = TM.per_token_geometric(cond, w)
    d = TM.disagreement_bonus(cond, w)
    assert np.all(d >= 0) and np.ptp(d) > 1e-3  # the bonus is not a constant: the ensemble is not the escort
    np.testing.assert_allclose(TM.conditionals_to_sequence(geo), log_hat + float(log_f) + d, atol=1e-12)
    # identical references: no bonus
    same = [np.repeat(c[:1], 2, axis=0) for c in cond]
    assert np.max(np.abs(TM.disagreement_bonus(same, w))) < 1e-14


def test_mixture_conditionals_use_posterior_not_prior_weights():
    rng = np.random.default_rng(9)
    cond = TM.random_token_references(rng, 2, 2, 3, disagreement=2.0)
    w = np.array([0.3, 0.7])
    bar = arithmetic_mixture(TM.sequence_logps(cond), w)
    np.testing.assert_allclose(TM.conditionals_to_sequence(TM.mixture_conditionals(cond, w)), bar, atol=1e-12)
    assert np.max(np.abs(TM.conditionals_to_sequence(TM.per_token_arithmetic(cond, w)) - bar)) > 1e-3


def test_mrpo_alpha_weighs_the_second_reference():
    rng = np.random.default_rng(10)
    L = TM.sequence_logps(TM.random_token_references(rng, 2, 3, 2, disagreement=1.0))
    h = TM.mrpo_reference_logp(L[0], L[1], 0.2)
    np.testing.assert_allclose(h, identities.harmonic_reference_logp(L, (0.8, 0.2)), atol=1e-12)
    assert np.max(np.abs(h - identities.harmonic_reference_logp(L, (0.2, 0.8)))) > 1e-3


def test_mrpo_clip_interpolates_between_reference_one_and_the_unclipped_surrogate():
    rng = np.random.default_rng(11)
    L = TM.sequence_logps(TM.random_token_references(rng, 2, 3, 2, disagreement=1.0))
    np.testing.assert_allclose(TM.mrpo_reference_logp(L[0], L[1], 0.4, eta=0.0), L[0], atol=1e-12)
    big = float(np.max(np.abs(L[1] - L[0]) / np.abs(L[0]))) * 1.01
    np.testing.assert_allclose(TM.mrpo_reference_logp(L[0], L[1], 0.4, eta=big), TM.mrpo_reference_logp(L[0], L[1], 0.4), atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.0}, "alpha must be in"), ({"alpha": 0.0}, "alpha must be in"),
    ({"alpha": 0.5, "eta": -0.1}, "eta must be"), ({"alpha": 0.5, "eta": float("nan")}, "eta must be"),
])
def test_mrpo_bad_arguments(kwargs, match):
    l = np.log(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=match):
        TM.mrpo_reference_logp(l, l, **kwargs)
    with pytest.raises(ValueError, match="log-probabilities"):
        TM.mrpo_reference_logp(np.array([0.1, -1.0]), l, 0.5)


def test_token_world_validation():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="disagreement"):
        TM.random_token_references(rng, 2, 3, 2, disagreement=-1.0)
    with pytest.raises(ValueError, match="vocab >= 2"):
        TM.random_token_references(rng, 2, 1, 2)
    cond = TM.random_token_references(rng, 2, 3, 2)
    assert TM.check_token_references(cond) == (2, 3, 2)
    with pytest.raises(ValueError, match=r"cond\[1\] must have shape"):
        TM.check_token_references([cond[0], cond[1][:, :2]])
    with pytest.raises(ValueError, match="normalized"):
        TM.check_token_references([cond[0] + 0.1])
