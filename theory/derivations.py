r"""Symbolic derivations of the PM paper, step by step, in sympy.

Every function returns sympy objects (expressions, ``Eq``\ s, or an ordered list of named
steps) so that the checks of :mod:`prefmatch.theory.checks.pm` and the documentation show the
*same* derivation.  Notation: ``pi`` is the probability π = π(y|x) ∈ (0, 1], ``R`` the
regularizer as a function of π, ``r`` a reward, ``lam`` the Lagrange multiplier of Σ π = 1.

Sources (PM paper = "On the Algorithmic Bias of Aligning LLMs with RLHF: Preference Collapse
and Matching Regularization"):

* Theorem 1, eqs. (3.5)–(3.8): the PM differential equation π R'' + 2R' + 1/π = 0 and its
  solution R = −log π + C1 + C2/π;  :func:`pm_ode_derivation`, :func:`pm_general_solution`,
  :func:`pm_uniqueness`.
* Theorem 2, eq. (3.13): response-dependent constants; :func:`response_dependent_solution`.
* Theorem 3, eq. (3.14) and Appendix B.1: a generalized link g;
  :func:`generalized_ode`, :func:`generalized_solution`, :func:`generalized_stationarity`,
  :func:`generalized_necessity_gap`.
* Proposition 3.7: KL-RLHF is not PM; :func:`kl_rlhf_ode_residual`, :func:`kl_rlhf_pm_conditions`.
* Section 5.1, (5.3): (f')⁻¹ of the usual f-divergences and the fact that (f')⁻¹(u) = e^{u+c}
  only for f = u log u + c'(u − 1); :func:`fdiv_inverse_derivative`, :func:`exp_inverse_f`.
* Example 1 (robust reading): the Fenchel conjugate of log-sum-exp; :func:`lse_conjugate_binary`.
"""
from __future__ import annotations

import sympy as sp

__all__ = [
    "PI",
    "R",
    "pm_ode",
    "pm_ode_derivation",
    "pm_closed_form",
    "pm_general_solution",
    "pm_double_integration",
    "ode_residual",
    "pm_uniqueness",
    "response_dependent_solution",
    "LINKS",
    "generalized_ode",
    "generalized_ode_lhs",
    "pm_ode_lhs",
    "generalized_solution",
    "generalized_dsolve",
    "generalized_stationarity",
    "generalized_necessity_gap",
    "kl_rlhf_ode_residual",
    "kl_rlhf_pm_conditions",
    "F_FUNCTIONS",
    "fdiv_inverse_derivative",
    "exp_inverse_f",
    "is_exponential_inverse",
    "lse_conjugate_binary",
]

#: the probability π as a positive symbol, and the unknown regularizer R(π)
PI = sp.Symbol("pi", positive=True)
R = sp.Function("R")
C1, C2 = sp.symbols("C1 C2")


# --------------------------------------------------------------------------- Theorem 1
def pm_ode_lhs(Rf):
    r"""π R''(π) + 2R'(π) + 1/π for an expression ``Rf`` in ``PI`` (0 iff Rf solves the PM ODE)."""
    return PI * sp.diff(Rf, PI, 2) + 2 * sp.diff(Rf, PI) + 1 / PI


def pm_ode():
    r"""The PM differential equation π R''(π) + 2R'(π) + 1/π = 0 (PM paper, Section 3.1)."""
    return sp.Eq(pm_ode_lhs(R(PI)), 0)


def pm_ode_derivation(k: int = 3) -> list[tuple[str, sp.Basic]]:
    r"""The proof of Theorem 1 (necessity), eqs. (3.5)–(3.8), one sympy object per step.

    1. Lagrangian of (3.5) for k responses: L = Σ π_i (r_i + R(π_i)) + λ(Σ π_i − 1).
    2. First-order condition ∂L/∂π_1 = r_1 + R(π_1) + π_1 R'(π_1) + λ = 0.
    3. The PM policy π_i = e^{r_i}/Σ_j e^{r_j} gives r_i = log π_i + c with c = log Σ_j e^{r_j}.
    4. Substituting: R(π) + π R'(π) = −log π + c' with c' = −c − λ (eq. 3.7), the same for all i.
    5. The left side is (π R)'; the condition reads (π R)' + log π − c' = 0.
    6. π_i ranges over (0, 1]; differentiating in π gives π R'' + 2R' + 1/π = 0.
    7. Since π R'' + 2R' = (π R)'', the ODE is (π R)'' = −1/π (Section 3.2).

    Each step is a sympy ``Eq`` or expression; the checks verify every transition.
    """
    pis = sp.symbols(f"pi1:{k + 1}", positive=True)
    rs = sp.symbols(f"r1:{k + 1}", real=True)
    lam, c, cp_ = sp.symbols("lambda c c'", real=True)
    lagrangian = sum(p * (r + R(p)) for p, r in zip(pis, rs)) + lam * (sum(pis) - 1)
    foc = sp.Eq(sp.diff(lagrangian, pis[0]), 0)
    # PM policy: log π_i = r_i − log Z  ⇒  r_i = log π_i + c
    Z = sum(sp.exp(r) for r in rs)
    pm_policy = sp.Eq(pis[0], sp.exp(rs[0]) / Z)
    r_of_pi = sp.Eq(rs[0], sp.log(pis[0]) + c)
    foc_sub = foc.lhs.subs(rs[0], sp.log(pis[0]) + c).subs(pis[0], PI)
    # R(π) + πR'(π) = −log π − c − λ = −log π + c'
    eq37 = sp.Eq(R(PI) + PI * sp.diff(R(PI), PI), -sp.log(PI) + cp_)
    total_derivative = sp.Eq(sp.Derivative(PI * R(PI), PI), R(PI) + PI * sp.diff(R(PI), PI), evaluate=False)
    differentiated = sp.Eq(sp.diff(eq37.lhs - eq37.rhs, PI), 0)
    ode = pm_ode()
    second = sp.Eq(sp.Derivative(PI * R(PI), (PI, 2)), -1 / PI, evaluate=False)
    return [
        ("lagrangian", lagrangian),
        ("first_order_condition", foc),
        ("pm_policy", pm_policy),
        ("reward_from_policy", r_of_pi),
        ("foc_after_substitution", sp.Eq(foc_sub, 0)),
        ("eq_3_7", eq37),
        ("product_rule", total_derivative),
        ("differentiated_3_7", differentiated),
        ("pm_ode", ode),
        ("pm_ode_as_second_derivative", second),
    ]


def pm_closed_form(c1=C1, c2=C2, p=PI):
    r"""R(π) = −log π + C1 + C2/π (Theorem 1, eq. 3.8)."""
    return -sp.log(p) + c1 + c2 / p


def pm_general_solution():
    r"""``dsolve`` of the PM ODE: the general solution R = C1 + C2/π − log π (eq. 3.8)."""
    return sp.dsolve(pm_ode(), R(PI))


def pm_double_integration():
    r"""The paper's route to (3.8): integrate (πR)'' = −1/π twice, then divide by π.

    (πR)' = −log π + a,  πR = −π log π + π + aπ + b,  R = −log π + (1 + a) + b/π.
    """
    a, b = sp.symbols("a b")
    first = sp.integrate(-1 / PI, PI) + a
    second = sp.integrate(first, PI) + b
    return sp.expand(second / PI)


def ode_residual(expr, ode_lhs_of=None):
    r"""π R'' + 2R' + 1/π evaluated at R = ``expr`` (simplified; 0 iff ``expr`` solves the ODE).

    ``ode_lhs_of`` replaces the left side (default :func:`pm_ode_lhs`), e.g.
    ``lambda e: generalized_ode_lhs("power", e)``.
    """
    lhs = (ode_lhs_of or pm_ode_lhs)(expr)
    return sp.simplify(lhs)


def pm_uniqueness() -> dict:
    r"""Why (3.8) is *every* solution (the "only if" direction of Theorem 1).

    The PM ODE is linear of second order, π R'' + 2R' = −1/π, with leading coefficient π ≠ 0 on
    (0, 1].  By the existence–uniqueness theorem for linear ODEs its solution set on (0, 1] is
    one particular solution plus the 2-dimensional span of the homogeneous solutions.

    Returns the homogeneous solutions {1, 1/π} with their residuals, their Wronskian −1/π²
    (nonzero, so they are a fundamental system), the residual of the particular solution
    −log π, and the constants (C1, C2) solving an arbitrary initial-value problem
    R(π0) = a, R'(π0) = b (a unique solution because the Wronskian is nonzero there), so every
    solution of the ODE is a member of the family −log π + C1 + C2/π.
    """
    homog = [sp.Integer(1), 1 / PI]
    hom_lhs = [sp.simplify(PI * sp.diff(h, PI, 2) + 2 * sp.diff(h, PI)) for h in homog]
    W = sp.simplify(sp.wronskian(homog, PI))
    particular = -sp.log(PI)
    part_res = ode_residual(particular)
    p0 = sp.Symbol("pi0", positive=True)
    a, b = sp.symbols("a b")
    fam = pm_closed_form()
    ivp = sp.solve(
        [sp.Eq(fam.subs(PI, p0), a), sp.Eq(sp.diff(fam, PI).subs(PI, p0), b)], [C1, C2], dict=True
    )
    return {
        "homogeneous": homog,
        "homogeneous_residuals": hom_lhs,
        "wronskian": W,
        "particular": particular,
        "particular_residual": part_res,
        "ivp_solution": ivp,
        "ivp_symbols": (p0, a, b),
    }


# --------------------------------------------------------------------------- Theorem 2
def response_dependent_solution():
    r"""Theorem 2, eq. (3.13): solve R_i(π) + π R_i'(π) + log π = c' for R_i.

    ``dsolve`` gives R_i = −log π + (c' + 1) + C_{2,i}/π: the constant C1 = c' + 1 is shared by
    all responses (c' = −c − λ does not depend on i), while the integration constant C_{2,i}
    is free for each response.  (The paper prints C1 = c' − 1; the sign is immaterial for the
    theorem since c' is arbitrary, but (c' + 1) is what the integration gives.)

    Returns (dsolve solution, c' symbol, C1 in terms of c').
    """
    c = sp.Symbol("c'", real=True)
    sol = sp.dsolve(sp.Eq(R(PI) + PI * sp.diff(R(PI), PI) + sp.log(PI), c), R(PI))
    # the part of R_i + log π that is constant in π: drop the integration constant's C/π term
    c_int = [s for s in sol.rhs.free_symbols if s.name.startswith("C")]
    const = sp.expand(sol.rhs + sp.log(PI)).subs(dict.fromkeys(c_int, 0))
    return sol, c, sp.simplify(const)


# --------------------------------------------------------------------------- Theorem 3
K = sp.Symbol("k", positive=True)
X = sp.Symbol("x", real=True)


def LINKS(name: str, k=K):
    r"""(g(x), g⁻¹(π), G(x) = ∫g) for the links of Theorem 3: ``"exp"``, ``"power"`` (x^k, x > 0)."""
    if name == "exp":
        return sp.exp(X), sp.log(PI), sp.exp(X)
    if name == "power":
        k = sp.nsimplify(k)  # exact exponents: 1/k stays rational for an int or float k
        xp = sp.Symbol("x", positive=True)
        return xp**k, PI ** (1 / k), xp ** (k + 1) / (k + 1)
    raise ValueError(f"link must be 'exp' or 'power', got {name!r}")


def _x_of(g):
    return next(iter(g.free_symbols - {K}))


def generalized_ode_lhs(link: str, Rf, k=K):
    r"""π R'' + 2R' + 1/g'(g⁻¹(π)) for an expression ``Rf`` in ``PI``."""
    g, ginv, _ = LINKS(link, k)
    x = _x_of(g)
    forcing = sp.simplify(1 / sp.diff(g, x).subs(x, ginv))
    return PI * sp.diff(Rf, PI, 2) + 2 * sp.diff(Rf, PI) + forcing


def generalized_ode(link: str = "power", k=K):
    r"""The generalized PM ODE π R'' + 2R' + 1/g'(g⁻¹(π)) = 0 (Section 3.4, Appendix B.1).

    Derived as for Theorem 1 from R(π) + πR'(π) = −g⁻¹(π) + c' by differentiating in π;
    (g⁻¹)'(π) = 1/g'(g⁻¹(π)) (inverse function rule).
    """
    return sp.Eq(generalized_ode_lhs(link, R(PI), k), 0)


def generalized_solution(link: str = "power", k=K, c1=C1, c2=C2):
    r"""R(π) = −g⁻¹(π) + C1 + (G(g⁻¹(π)) + C2)/π (Theorem 3, eq. 3.14)."""
    g, ginv, G = LINKS(link, k)
    x = _x_of(g)
    return -ginv + c1 + (G.subs(x, ginv) + c2) / PI


def generalized_dsolve(link: str = "power", k=K):
    """``dsolve`` of :func:`generalized_ode` (compare with :func:`generalized_solution`)."""
    return sp.dsolve(generalized_ode(link, k), R(PI))


def generalized_stationarity(link: str = "power", k=K):
    r"""d/dπ [π R(π)] for R of (3.14): equals −g⁻¹(π) + C1.

    Hence the first-order condition of Σ π_i (r_i + R(π_i)) + λ(Σ π_i − 1) reads
    r_i − g⁻¹(π_i) + C1 + λ = 0, i.e. π_i = g(r_i + c) with one shift c fixed by Σ π_i = 1.
    """
    return sp.simplify(sp.diff(PI * generalized_solution(link, k), PI))


def generalized_necessity_gap(link: str = "power", k=K):
    r"""g⁻¹(g(r)/S) − r for a normalizer S > 0 (the step "r_i = g⁻¹(π_i*) + c" of Appendix B.1).

    For the step to hold, this must not depend on r.  For g = exp it is −log S (constant);
    for the power link it is r(S^{−1/k} − 1), which depends on r unless S = 1.  So the
    generalized-PL policy g(r_i)/Σ g(r_j) satisfies the first-order condition of (3.14) only
    for exponential-type links (or when Σ_j g(r_j) happens to be 1).
    """
    g, ginv, _ = LINKS(link, k)
    x = _x_of(g)
    S = sp.Symbol("S", positive=True)
    return sp.simplify(sp.powsimp(ginv.subs(PI, g / S), force=True) - x, force=True), x, S


# --------------------------------------------------------------------------- Proposition 3.7
def kl_rlhf_ode_residual():
    r"""π R'' + 2R' + 1/π at the KL regularizer R = −β log(π/π_ref(y)): equals (1 − β)/π.

    Nonzero unless β = 1 (Proposition 3.7).
    """
    beta, q = sp.symbols("beta q", positive=True)
    Rkl = -beta * sp.log(PI / q)
    return ode_residual(Rkl), beta, q


def kl_rlhf_pm_conditions():
    r"""When is −β log(π/q_y) ≡ −log π + C1 + C2,y/π (Theorem 2's form) for all π ∈ (0, 1]?

    Matching the coefficients of the functions {log π, 1/π, 1} (linearly independent):
    β = 1, C2,y = 0 and C1 = log q_y.  Since C1 must not depend on y, q_y is the same for every
    response: KL-RLHF is PM iff β = 1 and π_ref is uniform (Example 3); otherwise not
    (Proposition 3.7).  Returns the solution dict for (β, C2, C1).
    """
    beta, q = sp.symbols("beta q", positive=True)
    c1, c2 = sp.symbols("C1 C2y", real=True)
    L = sp.Symbol("L", real=True)  # log π as an independent function
    t = sp.Symbol("t", positive=True)  # 1/π
    diff = (-beta * L + beta * sp.log(q)) - (-L + c1 + c2 * t)
    poly = sp.Poly(sp.expand(diff), L, t)
    eqs = [sp.Eq(cf, 0) for cf in poly.coeffs()]
    return sp.solve(eqs, [beta, c2, c1], dict=True), eqs


# --------------------------------------------------------------------------- f-divergences
U = sp.Symbol("u", positive=True)
V = sp.Symbol("v", real=True)

#: the generators f of Section 5.1 (f(1) = 0, convex); "js" is twice the Jensen–Shannon f
F_FUNCTIONS = {
    "kl": U * sp.log(U),
    "reverse_kl": -sp.log(U),
    "chi2": (U - 1) ** 2,
    "hellinger": (sp.sqrt(U) - 1) ** 2,
    "js": U * sp.log(U) - (1 + U) * sp.log((1 + U) / 2),
}


def fdiv_inverse_derivative(f) -> sp.Expr:
    r"""(f')⁻¹(v) as a sympy expression in ``V`` (solve f'(u) = v for u > 0).

    ``f`` is a key of :data:`F_FUNCTIONS` or a sympy expression in ``U``.
    kl: e^{v−1}; reverse_kl: −1/v (v < 0); chi2: 1 + v/2; hellinger: 1/(1 − v)² (v < 1);
    js: e^v/(2 − e^v) (v < log 2).
    """
    fe = F_FUNCTIONS[f] if isinstance(f, str) else f
    sols = sp.solve(sp.Eq(sp.diff(fe, U), V), U)
    if len(sols) != 1:
        raise ValueError(f"(f')^-1 is not unique for f = {fe}: {sols}")
    return sp.simplify(sols[0])


def exp_inverse_f():
    r"""The f whose (f')⁻¹ is exp(u + c) (Section 5.1, after (5.3)).

    (f')⁻¹(v) = e^{v+c}  ⇔  f'(u) = log u − c  ⇔  f(u) = u log u − (1 + c)u + C (``dsolve``);
    f(1) = 0 fixes C = 1 + c, so f(u) = u log u + c'(u − 1) with c' = −(1 + c): the KL
    generator plus a term c'(u − 1) whose divergence Σ π_ref c'(π/π_ref − 1) is 0 on the simplex.
    (The paper writes f = u log u + c'u; with f(1) = 0 the affine part must be c'(u − 1).)

    Returns (general f from dsolve, f with f(1) = 0, and the converse (f')⁻¹ of u log u + c'u).
    """
    c, cprime = sp.symbols("c c'", real=True)
    f = sp.Function("f")
    general = sp.dsolve(sp.Eq(sp.diff(f(U), U), sp.log(U) - c), f(U)).rhs
    Cs = [s for s in general.free_symbols if s.name.startswith("C")]
    fixed = general.subs(Cs[0], sp.solve(sp.Eq(general.subs(U, 1), 0), Cs[0])[0]) if Cs else general
    converse = fdiv_inverse_derivative(U * sp.log(U) + cprime * U)
    return general, sp.simplify(fixed), converse, (c, cprime)


def is_exponential_inverse(f) -> tuple[bool, sp.Expr]:
    r"""Whether h = (f')⁻¹ has the form exp(v + c): iff d/dv log h(v) ≡ 1 (h' = h, ``dsolve``
    gives h = C e^v).  Returns (answer, d/dv log h − 1 simplified)."""
    h = fdiv_inverse_derivative(f)
    gap = sp.simplify(sp.diff(sp.log(h), V) - 1)
    return bool(gap == 0), gap


# --------------------------------------------------------------------------- Example 1 (robust)
def lse_conjugate_binary():
    r"""Fenchel conjugate of log-sum-exp on two responses, by stationarity (Example 1).

    sup_Δ [p Δ − log(1 + e^Δ)] (fixing Δ2 = 0 by shift invariance) is attained at
    Δ = log(p/(1 − p)); the value is p log p + (1 − p) log(1 − p), the negative entropy
    (log(1 + p/q) = −log q uses p + q = 1).  Returns (argmax, value, negative entropy,
    (p, q)); value − negative entropy = (1 − p − q) log q = 0.
    """
    p, q = sp.symbols("p q", positive=True)  # q = 1 − p, both in (0, 1)
    d = sp.Symbol("Delta", real=True)
    obj = p * d - sp.log(1 + sp.exp(d))
    crit = sp.solve(sp.Eq(sp.diff(obj, d), 0), d)
    dstar = sp.log(p / q)
    # the critical point found by solve is log(p/(1 − p)) = log(p/q)
    assert any(sp.simplify(c.subs(p, 1 - q) - dstar.subs(p, 1 - q)) == 0 for c in crit)
    # value at Δ*: p log(p/q) − log(1 + p/q), and 1 + p/q = (q + p)/q = 1/q on the simplex
    one_plus = sp.simplify((1 + p / q).subs(p, 1 - q))
    val = p * (sp.log(p) - sp.log(q)) - sp.expand_log(sp.log(one_plus), force=True)
    negent = p * sp.log(p) + q * sp.log(q)
    return dstar, val, negent, (p, q)
