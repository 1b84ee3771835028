"""theory/bounds.py: rates, input validation, and the deterministic inequalities behind the [D] bounds.

The [D] bounds chain exact identities (gap = β KL, covariance path integrals) with
inequalities in Var_{π_data}(Δ).  Here each chain is tested with the *population* quantity
E_{y,y′∼π_data}(Δ(y) − Δ(y′))² in place of ε²_MLE, so the bound must hold deterministically for
every r*, r̂ (no probability involved).  Package β throughout.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefmatch.theory import bounds as B
from prefmatch.theory import identities as I
from prefmatch.theory import regularizers as R
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort

P = dict(r_max=1.0, delta=0.05, log_class_size=math.log(100.0), coverage=2.0)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=np.float64))


def test_registry_keys_and_rates():
    assert set(B.BOUNDS) == {"rkl_optimality", "rkl_suboptimality", "fkl_optimality", "fkl_suboptimality"}
    assert B.BOUNDS["rkl_suboptimality"].rate == 1.0
    assert all(B.BOUNDS[k].rate == 0.5 for k in ("rkl_optimality", "fkl_optimality", "fkl_suboptimality"))


@pytest.mark.parametrize("key", sorted(B.ALL_BOUNDS))
def test_log_log_slope_equals_rate(key):
    spec = B.ALL_BOUNDS[key]
    kw = dict(P) if spec.beta_schedule is not None else dict(P, beta=0.5)
    n = np.array([1e6, 1e8])
    vals = np.array([spec.func(float(m), **kw) for m in n])
    slope = np.diff(np.log(vals)) / np.diff(np.log(n))
    assert slope[0] == pytest.approx(-spec.rate, abs=2e-3)
    # numpy arrays of n are accepted and decreasing
    arr = spec.func(np.geomspace(10, 1e6, 7), **kw)
    assert np.all(np.diff(arr) < 0)


def test_beta_conversion_of_rkl_bounds():
    # package β multiplies the divergence: the RKL bounds scale like 1/β_pkg (= β_spec)
    a = B.rkl_suboptimality(1000, beta=0.5, **P)
    b = B.rkl_suboptimality(1000, beta=0.25, **P)
    assert b == pytest.approx(2 * a, rel=1e-12)
    eps2 = B.mle_error_sq(1000, r_max=1.0, delta=0.05, log_class_size=math.log(100.0))
    assert a == pytest.approx(2.0 * eps2 / (4 * 0.5))
    assert B.rkl_optimality(1000, beta=0.5, **P) == pytest.approx(1.0 / (2 * 0.5) * math.sqrt(2.0 * eps2 / 2))
    paper = B.rkl_suboptimality(1000, beta=0.5, form="paper", **P)
    assert paper == pytest.approx(2.0 * 128 * math.e**4 * math.log(100 / 0.05) / 1000 / 0.5)


def test_fkl_suboptimality_is_beta_free_and_optimality_schedule():
    assert B.fkl_suboptimality(500, beta=0.1, **P) == B.fkl_suboptimality(500, beta=10.0, **P)
    n = 10_000
    assert B.fkl_optimality(n, **P) == pytest.approx(B.fkl_suboptimality(n, **P) + math.log(1 + n) / n)
    # at fixed β the extra term does not vanish
    assert B.fkl_optimality(1e12, beta=0.1, **P) > 0.1 * math.log(1 + 10) * 0.999


def test_kappa_and_class_size_forms():
    assert B.kappa(0.5) == pytest.approx(1 / (1 / (1 + math.exp(-0.5)) * (1 - 1 / (1 + math.exp(-0.5)))))
    assert B.log_class_term(0.1, class_size=20) == pytest.approx(math.log(200))
    assert B.tabular_log_class_size(3, 4, 1.0, n=100) == pytest.approx(9 * math.log(1 + 50))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(delta=0.0), dict(delta=1.0), dict(log_class_size=None), dict(class_size=0.5), dict(r_max=-1.0),
        dict(form="nope"),
    ],
)
def test_bad_input_raises_value_error(kwargs):
    kw = dict(P, beta=0.5)
    kw.update(kwargs)
    with pytest.raises(ValueError):
        B.rkl_suboptimality(100, **kw)


def test_rkl_optimality_paper_form_unavailable():
    with pytest.raises(ValueError):
        B.rkl_optimality(100, beta=0.5, form="paper", **P)


def test_rkl_coverage_default_and_transfer():
    assert B.rkl_coverage(beta=0.5, r_max=1.0) == pytest.approx(math.e**2)
    c = B.rkl_coverage(beta=0.5, r_max=1.0, ref_coverages=[2.0, 8.0], weights=[0.5, 0.5])
    assert c == pytest.approx(4.0)
    assert B.fkl_coverage(ref_coverages=[2.0, 8.0], weights=[0.5, 0.5]) == pytest.approx(3.2)
    with pytest.raises(ValueError):
        B.fkl_coverage()


# --------------------------------------------------------------------------- the derivations
@st.composite
def gap_instances(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 4))
    n = draw(st.integers(2, 8))
    beta = draw(st.sampled_from([0.05, 0.2, 1.0, 5.0]))
    r_max = draw(st.sampled_from([0.1, 1.0, 3.0]))
    refs = rng.dirichlet(np.ones(n), size=k)
    w = rng.dirichlet(np.ones(k))
    r_star = rng.uniform(0, r_max, n)
    r_hat = np.clip(r_star + draw(st.sampled_from([0.01, 0.3, 3.0])) * rng.normal(size=n), 0, r_max)
    return refs, w, r_star, r_hat, beta, r_max


def _pair_sq(q, delta):
    return float(np.sum(q[:, None] * q[None, :] * (delta[:, None] - delta[None, :]) ** 2))


@settings(max_examples=80, deadline=None)
@given(gap_instances())
def test_rkl_derived_bounds_hold_with_population_error(inst):
    refs, w, r_star, r_hat, beta, r_max = inst
    L = _log(refs)
    log_hat, _ = generalized_escort(L, w)
    q = np.exp(log_hat)
    delta = r_star - r_hat
    eps2 = _pair_sq(q, delta)
    # coverage over the Gibbs path between π̂ and π* (what the proof visits), and the automatic cap
    reg = R.multi_rkl(weights=tuple(w), beta=beta)
    path = [np.exp(reg.optimal_logp(r_hat + t * delta, L)) for t in np.linspace(0, 1, 41)]
    c_path = max(float(np.max(p / q)) for p in path)
    assert c_path <= math.exp(r_max / beta) * (1 + 1e-9)
    g = I.rkl_gaps(r_star, r_hat, L, w, beta)
    c = c_path * 1.05  # sampled path: small margin for the sup between grid points
    assert g["suboptimality"] <= c * eps2 / (4 * beta) + 1e-12
    assert g["optimality"] <= r_max / (2 * beta) * math.sqrt(c * eps2 / 2) + 1e-12


def _fkl_gap_setup(inst):
    """(log refs, mixture P̄, r* − r̂, its P̄-pair squared error, the multi-FKL regularizer)."""
    refs, w, r_star, r_hat, beta, _ = inst
    L = _log(refs)
    bar = np.exp(arithmetic_mixture(L, w))
    delta = r_star - r_hat
    return L, bar, delta, _pair_sq(bar, delta), R.multi_fkl(weights=tuple(w), beta=beta)


@settings(max_examples=80, deadline=None)
@given(gap_instances())
def test_fkl_derived_bounds_hold_with_population_error(inst):
    refs, w, r_star, r_hat, beta, r_max = inst
    L, bar, delta, eps2, reg = _fkl_gap_setup(inst)
    p_star, p_hat = np.exp(reg.optimal_logp(r_star, L)), np.exp(reg.optimal_logp(r_hat, L))
    c = max(float(np.max(p_star / bar)), float(np.max(p_hat / bar)))
    g = I.fkl_gaps(r_star, r_hat, L, w, beta)
    sub = math.sqrt(2 * c * eps2)
    assert 0 <= g["suboptimality"] + 1e-12
    assert g["suboptimality"] <= sub + 1e-12
    assert g["optimality"] <= sub + beta * math.log(1 + r_max / beta) + 1e-12
    # KL(P̄‖π̃) ≤ log(1 + R_max/β) (spec: log(1 + β_s R_max)), the radius ε_fkl
    assert float(np.sum(bar * np.log(bar / p_star))) <= math.log(1 + r_max / beta) + 1e-12


def test_derived_constants_are_tight_in_the_weak_regularization_limit():
    """At β ≫ R_max the Gibbs path stays at the data distribution (C → 1) and the [D] bounds are
    attained to first order: a wrong constant (e.g. 1/16 for 1/4) fails here."""
    beta, r_max, a = 1e3, 1.0, 1e-2
    refs = np.full((2, 2), 0.5)
    w = np.array([0.5, 0.5])
    r_star = np.array([0.0, r_max])
    delta = np.array([-a, a])
    r_hat = r_star - delta
    q = np.full(2, 0.5)
    eps2 = _pair_sq(q, delta)
    L = _log(refs)
    g = I.rkl_gaps(r_star, r_hat, L, w, beta)
    reg = R.multi_rkl(weights=tuple(w), beta=beta)
    c = max(float(np.max(np.exp(reg.optimal_logp(r_hat + t * delta, L)) / q)) for t in np.linspace(0, 1, 11))
    assert g["suboptimality"] / (c * eps2 / (4 * beta)) == pytest.approx(1.0, abs=2e-3)
    assert g["optimality"] / (r_max / (2 * beta) * math.sqrt(c * eps2 / 2)) == pytest.approx(1.0, abs=2e-3)
    # the same through theory/bounds.py with the population ε² plugged in
    kw = dict(beta=beta, r_max=r_max, coverage=c, eps2=eps2)
    assert g["suboptimality"] / B.rkl_suboptimality(1, **kw) == pytest.approx(1.0, abs=2e-3)
    assert g["optimality"] / B.rkl_optimality(1, **kw) == pytest.approx(1.0, abs=2e-3)


def _two_point_fkl_gaps(beta, a):
    """Gaps of a two-response, one-reference instance with reward error Δ = (−a, a), and ε²."""
    refs = np.full((1, 2), 0.5)
    r_star = np.array([0.0, 1.0])
    delta = np.array([-a, a])
    return I.fkl_gaps(r_star, r_star - delta, _log(refs), np.array([1.0]), beta), _pair_sq(np.full(2, 0.5), delta)


def test_fkl_derived_constant_is_tight():
    """FKL sub-optimality: E_π|Δ − c| ≤ √(C Var) is tight for two-point Δ, and both policies add
    up at β → ∞ only to first order; here we check gap ≤ bound and bound/gap = O(1)."""
    g, eps2 = _two_point_fkl_gaps(beta=1e3, a=1e-2)
    bound = B.fkl_suboptimality(1, r_max=1.0, coverage=1.0 + 1e-3, eps2=eps2)
    assert 0 <= g["suboptimality"] <= bound


@settings(max_examples=80, deadline=None)
@given(gap_instances())
def test_fixed_beta_fkl_bounds_hold_with_population_error(inst):
    refs, w, r_star, r_hat, beta, r_max = inst
    L, bar, delta, eps2, reg = _fkl_gap_setup(inst)
    c = 1.02 * max(float(np.max(np.exp(reg.optimal_logp(r_hat + t * delta, L)) / bar)) for t in np.linspace(0, 1, 41))
    g = I.fkl_gaps(r_star, r_hat, L, w, beta)
    kw = dict(beta=beta, r_max=r_max, coverage=c, eps2=eps2)
    assert g["suboptimality"] <= B.fkl_suboptimality_fast(1, **kw) + 1e-12
    assert g["optimality"] <= B.fkl_optimality_fixed_beta(1, **kw) + 1e-12


def test_fkl_fast_bound_is_tight_at_weak_regularization():
    beta = 1e3
    g, eps2 = _two_point_fkl_gaps(beta=beta, a=1e-2)
    ratio = g["suboptimality"] / B.fkl_suboptimality_fast(1, beta=beta, r_max=1.0, coverage=1.0, eps2=eps2)
    assert ratio == pytest.approx(1.0, abs=5e-3)
