"""Tests of theory/derivations.py: every closed form against dsolve or substitution."""
import math

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from prefmatch.theory import derivations as D

PI = D.PI


def test_pm_general_solution_is_dsolve_family():
    sol = D.pm_general_solution()
    assert D.ode_residual(sol.rhs) == 0
    consts = sorted((s for s in sol.rhs.free_symbols if s.name.startswith("C")), key=str)
    assert len(consts) == 2
    # dsolve's solution is −log π + C1 + C2/π up to naming of the constants
    assert sp.simplify(sol.rhs - D.pm_closed_form(consts[0], consts[1])) == 0 or sp.simplify(
        sol.rhs - D.pm_closed_form(consts[1], consts[0])
    ) == 0


@pytest.mark.parametrize(
    "wrong",
    [-2 * sp.log(PI), -sp.log(PI) + D.C2 / PI**2, -sp.log(PI) + D.C1 * PI, sp.log(PI)],
)
def test_wrong_solutions_have_nonzero_residual(wrong):
    assert D.ode_residual(wrong) != 0


def test_derivation_steps_chain():
    steps = dict(D.pm_ode_derivation())
    assert set(steps) >= {"lagrangian", "first_order_condition", "eq_3_7", "pm_ode", "pm_ode_as_second_derivative"}
    # (πR)'' = πR'' + 2R'
    lhs = steps["pm_ode_as_second_derivative"].lhs.doit()
    assert sp.simplify(lhs - (steps["pm_ode"].lhs - 1 / PI)) == 0
    # differentiating (3.7) gives the ODE
    assert sp.simplify(steps["differentiated_3_7"].lhs - steps["pm_ode"].lhs) == 0


def test_double_integration_matches_family():
    expr = D.pm_double_integration()
    assert D.ode_residual(expr) == 0


def test_uniqueness_wronskian():
    u = D.pm_uniqueness()
    assert sp.simplify(u["wronskian"] + 1 / PI**2) == 0
    assert u["homogeneous_residuals"] == [0, 0]
    assert u["particular_residual"] == 0
    assert len(u["ivp_solution"]) == 1


def test_response_dependent_constant():
    sol, cprime, const = D.response_dependent_solution()
    assert sp.simplify(const - (cprime + 1)) == 0  # the paper prints c' − 1
    assert D.ode_residual(sol.rhs) == 0


@pytest.mark.parametrize("link", ["exp", "power"])
def test_generalized_solution_solves_ode(link):
    Rg = D.generalized_solution(link)
    assert D.ode_residual(Rg, lambda e: D.generalized_ode_lhs(link, e)) == 0
    # (πR)' = −g⁻¹(π) + C1
    _, ginv, _ = D.LINKS(link)
    assert sp.simplify(D.generalized_stationarity(link) + ginv - D.C1) == 0


@pytest.mark.parametrize("k", [2, 3, sp.Rational(1, 2)])
def test_generalized_power_dsolve_concrete_k(k):
    ds = D.generalized_dsolve("power", k=k).rhs
    Rg = D.generalized_solution("power", k=k)
    consts = sorted((s for s in ds.free_symbols if s.name.startswith("C")), key=str)
    a, b = sp.symbols("a b")
    diff = sp.simplify(Rg - ds.subs({consts[0]: a, consts[1]: b}))
    m = sp.solve([diff.subs(PI, sp.Rational(1, 2)), diff.subs(PI, sp.Rational(1, 3))], [a, b], dict=True)
    assert m and sp.simplify(diff.subs(m[0])) == 0


def test_generalized_wrong_solution_fails():
    # the PM solution of Theorem 1 does not solve the power-link ODE
    assert D.ode_residual(D.pm_closed_form(), lambda e: D.generalized_ode_lhs("power", e, k=2)) != 0


def test_necessity_gap():
    gap_e, x_e, _ = D.generalized_necessity_gap("exp")
    gap_p, x_p, _ = D.generalized_necessity_gap("power")
    assert not gap_e.has(x_e)
    assert gap_p.has(x_p)


def test_kl_rlhf_not_pm_symbolic():
    res, beta, q = D.kl_rlhf_ode_residual()
    assert sp.simplify(res - (1 - beta) / PI) == 0
    assert res.subs(beta, 1) == 0
    sols, _ = D.kl_rlhf_pm_conditions()
    assert len(sols) == 1 and sols[0][beta] == 1


@pytest.mark.parametrize(
    "f,expected",
    [
        ("kl", sp.exp(D.V - 1)),
        ("reverse_kl", -1 / D.V),
        ("chi2", 1 + D.V / 2),
        ("hellinger", 1 / (1 - D.V) ** 2),
        ("js", sp.exp(D.V) / (2 - sp.exp(D.V))),
    ],
)
def test_fdiv_inverse_derivative(f, expected):
    h = D.fdiv_inverse_derivative(f)
    assert sp.simplify(h - expected) == 0
    # and f'(h(v)) = v, checked numerically at a point inside every domain
    fp = sp.diff(D.F_FUNCTIONS[f], D.U)
    v0 = sp.Rational(-1, 3)
    assert abs(float(fp.subs(D.U, h.subs(D.V, v0))) - float(v0)) < 1e-12


def test_only_kl_is_exponential():
    assert [f for f in D.F_FUNCTIONS if D.is_exponential_inverse(f)[0]] == ["kl"]
    general, fixed, converse, (c, cprime) = D.exp_inverse_f()
    assert fixed.subs(D.U, 1) == 0
    assert sp.simplify(converse - sp.exp(D.V - 1 - cprime)) == 0


def test_lse_conjugate_binary():
    d, val, negent, (p, q) = D.lse_conjugate_binary()
    for pv in (0.1, 0.5, 0.93):
        assert abs(float(val.subs({p: pv, q: 1 - pv})) - float(negent.subs({p: pv, q: 1 - pv}))) < 1e-14


@settings(max_examples=25, deadline=None)
@given(
    pi0=st.floats(1e-6, 1.0),
    c1=st.floats(-10, 10),
    c2=st.floats(-10, 10),
)
def test_pm_solution_numeric_residual(pi0, c1, c2):
    """Finite-difference residual of π R'' + 2R' + 1/π at random points (independent of sympy's diff)."""
    R = lambda x: -math.log(x) + c1 + c2 / x  # noqa: E731
    h = pi0 * 1e-3
    d1 = (R(pi0 + h) - R(pi0 - h)) / (2 * h)
    d2 = (R(pi0 + h) - 2 * R(pi0) + R(pi0 - h)) / h**2
    res = pi0 * d2 + 2 * d1 + 1 / pi0
    scale = abs(pi0 * d2) + abs(2 * d1) + 1 / pi0
    assert abs(res) <= 1e-4 * scale


@settings(max_examples=20, deadline=None)
@given(k=st.sampled_from([0.5, 1.5, 2.0, 3.0]), pi0=st.floats(1e-3, 1.0))
def test_generalized_power_numeric_residual(k, pi0):
    Rg = sp.lambdify(PI, D.generalized_solution("power", k=sp.nsimplify(k)).subs({D.C1: 0.3, D.C2: -0.2}))
    lhs = sp.lambdify(PI, D.generalized_ode_lhs("power", D.generalized_solution("power", k=sp.nsimplify(k)).subs({D.C1: 0.3, D.C2: -0.2}), k=sp.nsimplify(k)))
    assert abs(lhs(pi0)) < 1e-9 * (1 + abs(Rg(pi0)) / pi0)
