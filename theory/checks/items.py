r"""``prefmatch verify`` checks for numbered items of both papers that the other modules leave out.

PM paper: Proposition 3.1 (the unregularized maximizer), Assumption A.1 / (A.1) (the
Plackett–Luce subset property), the two-response exception to the PM differential equation,
and the off-$\mathcal M$ behaviour of Definition 4.1 over the whole range of $\pi_{\mathrm{ref}}$.
Multi-reference paper: the plain escort of Definition 3.1, the functional derivative of
Definition 3.2 (eqs. 50 and 69), Propositions 5.3 and 6.3, Remark B.3, Hoeffding's lemma (Lemma
A.3) with its consequence for (61)–(62), and the local KL-ball coverage assumptions 4.4–4.5.

Every check compares with a computation that does not use the formula under test: an LP by
HiGHS, cvxpy/CLARABEL, sympy, mpmath at 50 digits, torch autograd, quadrature of a path
integral, or Monte Carlo with a stated failure probability.  All formulas use the package β
(objective E_π[r] − β·D; β = 1/β_spec of the multi-reference paper).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from prefmatch.theory import bounds as B
from prefmatch.theory import identities, regularizers
from prefmatch.theory.checks import check
from prefmatch.theory.cvx import cvx_optimum
from prefmatch.theory.distributions import arithmetic_mixture, escort, generalized_escort, plackett_luce_logp


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=np.float64))


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - np.max(z))
    return e / e.sum()


def _rel_entr_sum(p, q) -> float:
    """Σ p log(p/q) with 0 log 0 = 0, written independently of the package (scipy)."""
    from scipy.special import rel_entr

    return float(np.sum(rel_entr(np.asarray(p, float), np.asarray(q, float))))


def _solve(prob, **kw):
    """Solve a cvxpy problem with CLARABEL at tight tolerances; accuracy is measured by the caller."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "solution may be inaccurate": measured, not assumed
        prob.solve(solver="CLARABEL", **kw)
    return prob


# =========================================================================== PM paper
@check("pm.prop_3_1")
def check_prop_3_1():
    import cvxpy as cp
    from scipy.optimize import linprog

    rng = np.random.default_rng(31)
    worst_lp, worst_ip, worst_tie, cases = 0.0, 0.0, 0.0, 0
    for n in (2, 3, 7, 50):
        for _ in range(3):
            r = rng.normal(size=n)
            best = int(np.argmax(r))
            # HiGHS simplex: an exact vertex
            res = linprog(-r, A_eq=np.ones((1, n)), b_eq=[1.0], bounds=[(0, None)] * n, method="highs")
            worst_lp = max(worst_lp, abs(1.0 - res.x[best]))
            # an interior-point method (CLARABEL) approaches the same vertex
            x = cp.Variable(n, nonneg=True)
            _solve(cp.Problem(cp.Maximize(r @ x), [cp.sum(x) == 1]))
            worst_ip = max(worst_ip, abs(1.0 - float(x.value[best])))
            cases += 1
    # the paper's 51% vs 49% example: r1 − r2 = logit(0.51), and a gap of 1e-9
    tiny = []
    for gap in (math.log(0.51 / 0.49), 1e-9):
        r = np.array([gap, 0.0])
        res = linprog(-r, A_eq=np.ones((1, 2)), b_eq=[1.0], bounds=[(0, None)] * 2, method="highs")
        tiny.append(float(res.x[0]))
    # ties: an interior-point optimum (analytic centre of the optimal face) is supported on the argmax set
    for _ in range(3):
        r = rng.normal(size=6)
        r[[1, 4]] = r.max() + 0.5
        x = cp.Variable(6, nonneg=True)
        _solve(cp.Problem(cp.Maximize(r @ x), [cp.sum(x) == 1]))
        worst_tie = max(worst_tie, float(np.sum(np.delete(x.value, [1, 4]))))
    # contrast: the PM-regularized optimum keeps every response (Proposition 3.1 is why a regularizer is needed)
    pm_mass = float(np.exp(regularizers.pm().optimal_logp(np.array([math.log(0.51 / 0.49), 0.0])))[0])
    ok = worst_lp <= 1e-12 and worst_ip <= 1e-6 and min(tiny) >= 1 - 1e-12 and worst_tie <= 1e-6 and abs(pm_mass - 0.51) <= 1e-12
    return ok, (
        f"{cases} random rewards (n up to 50): HiGHS vertex |1 − π(argmax)| = {worst_lp:.1e} (tol 1e-12), "
        f"CLARABEL {worst_ip:.1e} (tol 1e-6); 51%/49% reward gap and gap 1e-9: π(y1) = {tiny[0]:.12f}, {tiny[1]:.12f}; "
        f"two tied maxima: mass off the argmax set {worst_tie:.1e} (tol 1e-6); PM optimum for the 51/49 pair keeps "
        f"π(y1) = {pm_mass:.6f} (= 0.51)"
    )


def _pl_ranking_prob(r, tau) -> float:
    """Assumption A.1: P(τ) = Π_i e^{r_τ(i)} / Σ_{j ≥ i} e^{r_τ(j)} (written out, no package code)."""
    p = 1.0
    for i in range(len(tau)):
        rest = [r[t] for t in tau[i:]]
        m = max(rest)
        p *= math.exp(r[tau[i]] - m) / sum(math.exp(v - m) for v in rest)
    return p


@check("pm.pl_subset")
def check_pl_subset():
    import sympy as sp

    rng = np.random.default_rng(11)
    k = 5
    r = rng.normal(0, 1.5, size=k)
    perms = list(itertools.permutations(range(k)))
    probs = {tau: _pl_ranking_prob(r, tau) for tau in perms}
    total_err = abs(sum(probs.values()) - 1.0)
    first = np.zeros(k)
    for tau, p in probs.items():
        first[tau[0]] += p
    marg_err = float(np.max(np.abs(first - np.exp(plackett_luce_logp(r)))))
    sub_err, order_err, n_sub = 0.0, 0.0, 0
    for size in range(2, k + 1):
        for C in itertools.combinations(range(k), size):
            pc = np.exp(plackett_luce_logp(r[list(C)]))
            got = dict.fromkeys(C, 0.0)
            orders: dict = {}
            for tau, p in probs.items():
                induced = tuple(t for t in tau if t in C)
                got[induced[0]] += p
                orders[induced] = orders.get(induced, 0.0) + p
            sub_err = max(sub_err, max(abs(got[y] - pc[i]) for i, y in enumerate(C)))
            rc = {y: r[y] for y in C}
            order_err = max(order_err, max(abs(v - _pl_ranking_prob(rc, o)) for o, v in orders.items()))
            n_sub += 1
    # Monte Carlo, independent of every formula above: the PL ranking is the order of r + Gumbel noise
    N, fail_prob = 400_000, 1e-6
    g = rng.gumbel(size=(N, k)) + r
    rank = np.argsort(-g, axis=1)
    events, mc_worst = 0, 0.0
    pos = np.argsort(rank, axis=1)  # pos[s, y] = place of y in sample s
    for size in (2, 3, 4):
        for C in itertools.combinations(range(k), size):
            winner = np.array(C)[np.argmin(pos[:, list(C)], axis=1)]
            pc = np.exp(plackett_luce_logp(r[list(C)]))
            for i, y in enumerate(C):
                mc_worst = max(mc_worst, abs(float(np.mean(winner == y)) - pc[i]))
                events += 1
    # Hoeffding + union bound over all events: P(any |freq − p| > t) ≤ 2·events·e^{−2Nt²} = fail_prob
    t_mc = math.sqrt(math.log(2 * events / fail_prob) / (2 * N))
    # sympy, k = 3 symbolic: P(y1 before y2 in the ranking) = e^{r1}/(e^{r1}+e^{r2}) (BTL, eq. 2.1)
    a, b, c = sp.symbols("r1 r2 r3", real=True)
    sym = [a, b, c]

    def sym_prob(tau):
        p = sp.Integer(1)
        for i in range(3):
            p *= sp.exp(sym[tau[i]]) / sum(sp.exp(sym[t]) for t in tau[i:])
        return p

    pair = sum(sym_prob(tau) for tau in itertools.permutations(range(3)) if tau.index(0) < tau.index(1))
    btl_sym = sp.simplify(pair - sp.exp(a) / (sp.exp(a) + sp.exp(b))) == 0
    ok = total_err <= 1e-13 and marg_err <= 1e-13 and sub_err <= 1e-13 and order_err <= 1e-13 and mc_worst <= t_mc and btl_sym
    return ok, (
        f"k = {k}, all {len(perms)} rankings enumerated: |ΣP(τ) − 1| = {total_err:.1e}; first place vs softmax(r) "
        f"{marg_err:.1e}; first among C vs softmax on C over {n_sub} subsets {sub_err:.1e}; induced order on C vs PL on C "
        f"{order_err:.1e} (tol 1e-13). Monte Carlo (r + Gumbel, N = {N}, {events} events): max |freq − softmax_C| = "
        f"{mc_worst:.2e} ≤ {t_mc:.2e} (Hoeffding + union bound, failure probability {fail_prob:g}). sympy k = 3: "
        f"P(y1 ≻ y2) = σ(r1 − r2): {btl_sym}"
    )


def _two_response_phi(gamma):
    """φ(π) = π R(π) with (πR)' = −log π + γ(π − ½)²: a regularizer outside the PM family."""
    import sympy as sp

    p = sp.Symbol("pi", positive=True)
    phi = -p * sp.log(p) + p + gamma * (p - sp.Rational(1, 2)) ** 3 / 3
    return p, phi


@check("pm.ode.two_responses")
def check_ode_two_responses():
    import sympy as sp
    from scipy.optimize import brentq, minimize, minimize_scalar

    gamma = sp.Rational(9, 10)
    p, phi = _two_response_phi(gamma)
    R = phi / p
    ode = sp.simplify(p * sp.diff(R, p, 2) + 2 * sp.diff(R, p) + 1 / p)
    ode_nonzero = ode != 0
    # k = 2: d/dp [p r1 + (1−p) r2 + φ(p) + φ(1−p)] vanishes at p = σ(r1 − r2) (symbolically)
    d = sp.Symbol("d", real=True)
    J2 = p * d + phi + phi.subs(p, 1 - p)  # r2 = 0, r1 = d
    s = 1 / (1 + sp.exp(-d))
    stationary = sp.simplify(sp.diff(J2, p).subs(p, s)) == 0
    # concavity: φ'' = −1/π + 2γ(π − ½) ≤ γ − 1 < 0 on (0, 1)
    phi2 = sp.diff(phi, p, 2)
    phi2_max = sp.maximum(phi2, p, sp.Interval(0, 1))
    concave = bool(phi2_max < 0)
    f_phi = sp.lambdify(p, phi, "math")
    g = float(gamma)
    rng = np.random.default_rng(2)
    dphi = sp.lambdify(p, sp.diff(phi, p), "math")
    worst2, worst_search = 0.0, 0.0
    for _ in range(20):
        r1, r2 = rng.normal(0, 3, size=2)
        sig = 1 / (1 + math.exp(-(r1 - r2)))
        # the stationary point by a root of dJ/dp (to 1e-15) and the maximum by a bounded search (~1e-8)
        root = brentq(lambda q: r1 - r2 + dphi(q) - dphi(1 - q), 1e-15, 1 - 1e-15, xtol=1e-15)
        res = minimize_scalar(lambda q: -(q * r1 + (1 - q) * r2 + f_phi(q) + f_phi(1 - q)),
                              bounds=(1e-12, 1 - 1e-12), method="bounded", options={"xatol": 1e-13})
        worst2 = max(worst2, abs(root - sig))
        worst_search = max(worst_search, abs(res.x - sig))
    # k = 3: scipy L-BFGS on logits; the optimum misses softmax(r)
    miss = 0.0
    for _ in range(5):
        r = rng.normal(0, 1, size=3)
        obj = lambda z: -float(np.sum(_softmax(z) * r) + sum(f_phi(q) for q in _softmax(z)))
        best = min((minimize(obj, rng.normal(size=3), method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
                    for _ in range(3)), key=lambda res: res.fun)
        miss = max(miss, float(np.max(np.abs(_softmax(best.x) - _softmax(r)))))
    ok = ode_nonzero and stationary and concave and worst2 <= 1e-12 and worst_search <= 1e-6 and miss >= 1e-3
    return ok, (
        f"γ = {g}: π R'' + 2R' + 1/π = {sp.simplify(ode)} ≠ 0; k = 2 stationarity at σ(r1 − r2) (sympy): {stationary}; "
        f"max φ'' on [0, 1] = {phi2_max} < 0 (concave, so the stationary point is the maximum): {concave}; "
        f"20 random pairs: root of dJ/dπ1 vs σ(r1 − r2) {worst2:.1e} (tol 1e-12), bounded search for the maximum {worst_search:.1e} (tol 1e-6); "
        f"k = 3, 5 random rewards, L-BFGS: max |π − softmax(r)|∞ = {miss:.2e} (≥ 1e-3: not preference matching)"
    )


@check("pm.cpm_off_M")
def check_cpm_off_m():
    alpha = 0.3
    reg = regularizers.cpm(alpha=alpha)
    worst_cf, worst_cvx, n_cvx = 0.0, 0.0, 0
    grid = np.concatenate([np.geomspace(1e-300, 1e-3, 30), np.linspace(1e-3, alpha * 0.999, 30)])
    for d in (-2.0, 0.0, 1.5):
        for j, p1 in enumerate(grid):
            ref = np.array([p1, 1.0 - p1])
            r = np.array([d, 0.0])
            lp = reg.optimal_logp(r, _log(ref))
            pref = float(np.exp(lp[0] - np.logaddexp(lp[0], lp[1])))
            z = d + math.log(p1)
            expect = 1.0 / (1.0 + math.exp(-z)) if z > -700 else math.exp(z)
            worst_cf = max(worst_cf, abs(pref - expect) / max(expect, 1e-300))
            if p1 >= 1e-4 and j % 3 == 0:  # cvxpy (interior point, ~1e-6 accurate) on every third point
                x, _ = cvx_optimum(reg, r, ref)
                worst_cvx = max(worst_cvx, abs(x[0] / x.sum() - expect))
                n_cvx += 1
    ok = worst_cf <= 1e-12 and worst_cvx <= 1e-5
    return ok, (
        f"α = {alpha}, π_ref(y1) from 1e-300 to 0.9997α, r1 − r2 ∈ {{−2, 0, 1.5}}: max relative |p − σ(r1 − r2 + log π_ref(y1))| "
        f"= {worst_cf:.1e} (tol 1e-12); cvxpy on the objective of Definition 4.1 ({n_cvx} cases, π_ref(y1) ≥ 1e-4): "
        f"{worst_cvx:.1e} (tol 1e-5, interior-point accuracy)"
    )


# =========================================================================== multi-reference paper
@check("mref.escort")
def check_escort():
    import cvxpy as cp
    import mpmath as mp

    rng = np.random.default_rng(31)
    worst_cvx, worst_uni, worst_one, mono_ok = 0.0, 0.0, 0.0, True
    for n in (3, 6, 10):
        P = rng.dirichlet(np.ones(n))
        Q = rng.dirichlet(np.ones(n))
        for lam in (0.1, 0.5, 0.9):
            lp, _ = generalized_escort(_log(np.stack([P, Q])), (lam, 1 - lam))
            x = cp.Variable(n, nonneg=True)
            obj = lam * cp.sum(cp.rel_entr(x, P)) + (1 - lam) * cp.sum(cp.rel_entr(x, Q))
            _solve(cp.Problem(cp.Minimize(obj), [cp.sum(x) == 1]), tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
            worst_cvx = max(worst_cvx, float(np.max(np.abs(np.exp(lp) - x.value))))
            lu, _ = generalized_escort(_log(np.stack([P, np.full(n, 1.0 / n)])), (lam, 1 - lam))
            worst_uni = max(worst_uni, float(np.max(np.abs(lu - escort(_log(P), lam)))))
        worst_one = max(worst_one, float(np.max(np.abs(escort(_log(P), 1.0) - _log(P)))))
        lams = np.linspace(0.05, 1.0, 40)
        ent = [-float(np.sum(np.exp(escort(_log(P), l)) * escort(_log(P), l))) for l in lams]
        mono_ok &= bool(np.all(np.diff(ent) < 0))
    # extreme: probabilities down to 1e-300, λ = 1e-3 and 0.5, against mpmath at 50 digits
    worst_mp = 0.0
    logP = np.array([math.log(1e-300), math.log(1e-200), math.log(1e-5), 0.0])
    logP -= np.logaddexp.reduce(logP)
    for lam in (1e-3, 0.5):
        got = escort(logP, lam)
        with mp.workdps(50):
            terms = [mp.e ** (mp.mpf(lam) * mp.mpf(float(v))) for v in logP]
            z = mp.fsum(terms)
            ref = [mp.log(t / z) for t in terms]
        worst_mp = max(worst_mp, max(abs(float(mp.mpf(float(g)) - rr)) / max(1.0, abs(float(rr))) for g, rr in zip(got, ref)))
    ok = worst_cvx <= 1e-7 and worst_uni <= 1e-13 and worst_one <= 1e-14 and mono_ok and worst_mp <= 1e-14
    return ok, (
        f"(P,Q)_λ vs cvxpy argmin λKL(·‖P)+(1−λ)KL(·‖Q): {worst_cvx:.1e} (tol 1e-7); P_λ vs (P,U)_λ in log space "
        f"{worst_uni:.1e}; P_1 − P {worst_one:.1e}; entropy strictly decreasing in λ on a 40-point grid: {mono_ok}; "
        f"P with entries 1e-300, λ ∈ {{1e-3, 0.5}} vs mpmath (50 digits): max rel log error {worst_mp:.1e} (tol 1e-14)"
    )


def _u_rkl(pi, r, refs, w, beta) -> float:
    return float(pi @ r) - beta * sum(wi * _rel_entr_sum(pi, ri) for wi, ri in zip(w, refs))


def _u_fkl(pi, r, refs, w, beta) -> float:
    return float(pi @ r) - beta * sum(wi * _rel_entr_sum(ri, pi) for wi, ri in zip(w, refs))


@check("mref.functional_derivative")
def check_functional_derivative():
    import torch
    from scipy.integrate import quad

    rng = np.random.default_rng(32)
    worst_int, worst_grad, rows = 0.0, 0.0, 0
    for k, n, beta in [(2, 4, 0.5), (3, 6, 1.3), (4, 5, 0.2)]:
        refs = rng.dirichlet(np.ones(n), size=k)
        w = rng.dirichlet(np.ones(k))
        r = rng.uniform(0, 1, n)
        log_hat = generalized_escort(_log(refs), w)[0]
        bar = np.exp(arithmetic_mixture(_log(refs), w))
        derivs = {
            "rkl": (_u_rkl, lambda pi: r - beta * (np.log(pi) - log_hat + 1.0)),
            "fkl": (_u_fkl, lambda pi: r + beta * bar / pi),
        }
        for name, (U, dU) in derivs.items():
            for _ in range(3):
                m, m2 = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
                lhs = U(m2, r, refs, w, beta) - U(m, r, refs, w, beta)
                rhs, _err = quad(lambda lam: float(dU(m + lam * (m2 - m)) @ (m2 - m)), 0.0, 1.0, epsabs=1e-14, epsrel=1e-13)
                worst_int = max(worst_int, abs(lhs - rhs))
                pt = torch.tensor(m, dtype=torch.float64, requires_grad=True)
                rt, Rt, wt = (torch.tensor(v, dtype=torch.float64) for v in (r, refs, w))
                if name == "rkl":
                    val = pt @ rt - beta * torch.sum(wt[:, None] * pt * (torch.log(pt) - torch.log(Rt)))
                else:
                    val = pt @ rt - beta * torch.sum(wt[:, None] * Rt * (torch.log(Rt) - torch.log(pt)))
                (grad,) = torch.autograd.grad(val, pt)
                diff = grad.numpy() - dU(m)
                worst_grad = max(worst_grad, float(np.ptp(diff)))  # equal up to a constant
                rows += 1
    ok = worst_int <= 1e-10 and worst_grad <= 1e-12
    return ok, (
        f"{rows} (m, m′) pairs, reverse and forward KL, K up to 4: |U(m′) − U(m) − path integral (scipy quad)| = "
        f"{worst_int:.1e} (tol 1e-10); spread of autograd gradient − δU/δm over y = {worst_grad:.1e} (tol 1e-12: a constant)"
    )


@check("mref.prop_5_3_6_3")
def check_prop_6_3():
    rng = np.random.default_rng(63)
    worst_lo, worst_hi, ratios, cases = np.inf, np.inf, [], 0
    for k, n, beta in [(2, 4, 0.5), (3, 6, 1.0), (2, 5, 0.3)]:
        refs = rng.dirichlet(np.ones(n), size=k)
        w = rng.dirichlet(np.ones(k))
        r_star = rng.uniform(0, 1, n)
        for _name, fac, U in (("rkl", regularizers.multi_rkl, _u_rkl), ("fkl", regularizers.multi_fkl, _u_fkl)):
            reg = fac(weights=tuple(w), beta=beta)
            p_star, _ = cvx_optimum(reg, r_star, refs)
            for scale in (0.5, 0.2):
                r_hat = np.clip(r_star + rng.normal(0, scale, n), 0, 1)
                p_hat, _ = cvx_optimum(reg, r_hat, refs)
                gap = U(p_star, r_star, refs, w, beta) - U(p_hat, r_star, refs, w, beta)
                bound = float((r_star - r_hat) @ (p_star - p_hat))
                worst_lo = min(worst_lo, gap)
                worst_hi = min(worst_hi, bound - gap)
                cases += 1
            # small perturbation, package closed forms (accurate to 1e-15): ratio gap/bound → ½
            d = rng.normal(0, 1, n)
            for t in (1e-3,):
                r_hat = r_star + t * d
                ps, ph = np.exp(reg.optimal_logp(r_star, _log(refs))), np.exp(reg.optimal_logp(r_hat, _log(refs)))
                gap = U(ps, r_star, refs, w, beta) - U(ph, r_star, refs, w, beta)
                ratios.append(gap / float((r_star - r_hat) @ (ps - ph)))
    ok = worst_lo >= -1e-8 and worst_hi >= -1e-8 and all(abs(q - 0.5) <= 5e-3 for q in ratios)
    return ok, (
        f"{cases} (r*, r̂) pairs, RKL and FKL, cvxpy optima: min gap = {worst_lo:.2e} (≥ −1e-8), min(bound − gap) = "
        f"{worst_hi:.2e} (≥ −1e-8); at |r̂ − r*| ~ 1e-3 gap/bound = {', '.join(f'{q:.4f}' for q in ratios)} (½ ± 5e-3)"
    )


@check("mref.remark_b3")
def check_remark_b3():
    import torch

    rng = np.random.default_rng(49)
    min_eig, worst_mid, vertex_ok = np.inf, np.inf, True
    for k, n, beta in [(2, 5, 0.5), (3, 6, 1.0), (4, 8, 0.3)]:
        refs = rng.dirichlet(np.ones(n), size=k)
        L = torch.tensor(_log(refs))
        r = torch.tensor(rng.uniform(0, 1, n))

        def V(a):
            return beta * torch.logsumexp(a @ L + r / beta, dim=-1)

        for _ in range(5):
            a0 = torch.tensor(rng.dirichlet(np.ones(k)))
            H = torch.autograd.functional.hessian(V, a0).numpy()
            min_eig = min(min_eig, float(np.min(np.linalg.eigvalsh(H))))
            a1 = torch.tensor(rng.dirichlet(np.ones(k)))
            worst_mid = min(worst_mid, float(0.5 * (V(a0) + V(a1)) - V(0.5 * (a0 + a1))))
        # the package's optimal value on a simplex grid: its maximum is at a vertex
        grid = [np.array(c, float) / 12 for c in itertools.product(range(13), repeat=k) if sum(c) == 12]
        vals = [float(regularizers.multi_rkl(weights=tuple(g), beta=beta).optimal_value(r.numpy(), L.numpy())) for g in grid]
        best = grid[int(np.argmax(vals))]
        vertex_ok &= bool(np.max(best) == 1.0)
    ok = min_eig >= -1e-12 and worst_mid >= -1e-14 and vertex_ok
    return ok, (
        f"autograd Hessian of α ↦ V_α: min eigenvalue {min_eig:.2e} (≥ −1e-12, PSD); midpoint convexity slack "
        f"{worst_mid:.2e} (≥ 0); the maximum of the package's optimal value over a simplex grid (step 1/12) is at a vertex: {vertex_ok}"
    )


@check("mref.hoeffding")
def check_hoeffding():
    import mpmath as mp

    rng = np.random.default_rng(38)
    worst, tight = -np.inf, 0.0
    with mp.workdps(50):
        for _ in range(30):
            n = int(rng.integers(2, 8))
            P = rng.dirichlet(np.ones(n))
            a, b = sorted(rng.uniform(-3, 3, 2))
            f = rng.uniform(a, b, n)
            f[0], f[-1] = a, b
            Pm = [mp.mpf(float(v)) for v in P]
            fm = [mp.mpf(float(v)) for v in f]
            mean = mp.fsum(p * v for p, v in zip(Pm, fm))
            for lam in np.concatenate([-np.geomspace(1e-3, 30, 8), np.geomspace(1e-3, 30, 8)]):
                lm = mp.mpf(float(lam))
                lhs = mp.log(mp.fsum(p * mp.e ** (lm * (v - mean)) for p, v in zip(Pm, fm)))
                rhs = lm ** 2 * (mp.mpf(float(b)) - mp.mpf(float(a))) ** 2 / 8
                worst = max(worst, float((lhs - rhs) / rhs))
        # tightness: P = (½, ½) on {a, b}: lhs/rhs = 1 − O(λ²)
        lm = mp.mpf("1e-4")
        lhs = mp.log((mp.e ** (lm / 2) + mp.e ** (-lm / 2)) / 2)
        tight = float(lhs / (lm ** 2 / 8))
    # the consequence on multi-reference instances (package β; rewards in [0, R_max])
    worst_lo, worst_hi = np.inf, np.inf
    for k, n, beta, rmax in [(2, 5, 0.5, 1.0), (3, 6, 0.1, 2.0), (4, 8, 2.0, 1.0)]:
        refs = rng.dirichlet(np.ones(n), size=k)
        w = rng.dirichlet(np.ones(k))
        r = rng.uniform(0, rmax, n)
        L = _log(refs)
        log_hat, log_f = generalized_escort(L, w)
        v = float(regularizers.multi_rkl(weights=tuple(w), beta=beta).optimal_value(r, L)) - beta * float(log_f)
        e_r = float(np.exp(log_hat) @ r)
        worst_lo = min(worst_lo, v - e_r)
        worst_hi = min(worst_hi, e_r + rmax ** 2 / (8 * beta) - v)
    ok = worst <= 1e-30 and tight >= 1 - 1e-8 and worst_lo >= -1e-12 and worst_hi >= -1e-12
    return ok, (
        f"30 random laws, λ ∈ ±[1e-3, 30], mpmath 50 digits: max (lhs − rhs)/rhs = {worst:.3e} (≤ 0); two-point law at "
        f"λ = 1e-4: lhs/rhs = {tight:.10f} (→ 1, the constant 1/8 is sharp); consequence: min(β log Ẑ − E_π̂ r) = "
        f"{worst_lo:.2e}, min(E_π̂ r + R²/(8β) − β log Ẑ) = {worst_hi:.2e} (both ≥ 0)"
    )


@check("mref.local_coverage")
def check_local_coverage():
    import cvxpy as cp

    rng = np.random.default_rng(44)
    n, beta, rmax = 6, 1.0, 1.0
    refs = rng.dirichlet(np.ones(n), size=2)
    refs[0, 5] = 0.0  # reference 1 never says y5, reference 2 never says y4: π̂_α lives on y0..y3
    refs[1, 4] = 0.0
    refs /= refs.sum(-1, keepdims=True)
    w = (0.5, 0.5)
    L = _log(refs)
    log_hat, _ = generalized_escort(L, w)
    hat = np.exp(log_hat)
    eps = rmax / beta
    c_root = B.kl_ball_coverage(hat, eps, "reverse")
    c_cvx = []
    on = hat > 0
    for y in np.flatnonzero(on):
        x = cp.Variable(int(on.sum()), nonneg=True)
        iy = int(np.sum(on[:y]))
        _solve(cp.Problem(cp.Maximize(x[iy]), [cp.sum(x) == 1, cp.sum(cp.rel_entr(x, hat[on])) <= eps]), tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        c_cvx.append(float(x.value[iy]) / hat[y])
    c_eps = float(np.max(c_root))
    root_vs_cvx = float(np.max(np.abs(c_root[on] - np.array(c_cvx)) / c_root[on]))
    # the proofs visit Gibbs policies π ∝ π̂ e^{r/β}, r ∈ [0, R_max]: all inside the ball (box vertices are the worst case)
    reg = regularizers.multi_rkl(weights=w, beta=beta)
    max_kl, max_ratio = 0.0, 0.0
    for bits in itertools.product((0.0, rmax), repeat=n):
        lp = reg.optimal_logp(np.array(bits), L)
        max_kl = max(max_kl, _rel_entr_sum(np.exp(lp), hat))
        max_ratio = max(max_ratio, float(np.max(np.exp(lp[on] - log_hat[on]))))
    # exact gaps of fitted rewards vs the derived bounds with the local constant
    r_star = rng.uniform(0, rmax, n)
    worst_sub, worst_opt = np.inf, np.inf
    for _ in range(200):
        r_hat = np.clip(r_star + rng.normal(0, rng.choice([0.03, 0.1, 0.3]), n), 0, rmax)
        delta = r_star - r_hat
        eps2 = 2.0 * float(hat @ (delta - hat @ delta) ** 2)  # E_{y,y′∼π̂}(Δ(y) − Δ(y′))²
        gaps = identities.rkl_gaps(r_star, r_hat, L, w, beta)
        b_sub = B.rkl_suboptimality(1.0, beta=beta, r_max=rmax, coverage=c_eps, eps2=eps2)
        b_opt = B.rkl_optimality(1.0, beta=beta, r_max=rmax, coverage=c_eps, eps2=eps2)
        b_sub_local = c_eps * eps2 / (4 * beta)  # the bound with C_ε itself (not capped)
        worst_sub = min(worst_sub, min(b_sub, b_sub_local) - float(gaps["suboptimality"]))
        worst_opt = min(worst_opt, b_opt - float(gaps["optimality"]))
    # forward KL: radius of the Theorem 6.2 policies, and the FKL-ball constant (π̄ has full support here)
    bar = np.exp(arithmetic_mixture(L, w))
    fkl = regularizers.multi_fkl(weights=w, beta=beta)
    max_fkl = max(_rel_entr_sum(bar, np.exp(fkl.optimal_logp(np.array(bits), L)))
                  for bits in itertools.product((0.0, rmax), repeat=n))
    eps_f = math.log(1 + rmax / beta)
    cf_root = B.kl_ball_coverage(bar, eps_f, "forward")
    cf_cvx = []
    for y in range(n):
        x = cp.Variable(n, nonneg=True)
        _solve(cp.Problem(cp.Maximize(x[y]), [cp.sum(x) == 1, -cp.sum(cp.multiply(bar, cp.log(x))) <= eps_f - float(bar @ np.log(bar))]), tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        cf_cvx.append(float(x.value[y]) / bar[y])
    froot_vs_cvx = float(np.max(np.abs(cf_root - np.array(cf_cvx)) / cf_root))
    global_cov = math.inf if np.any(hat == 0) else float(1 / hat.min())
    ok = (math.isinf(global_cov) and root_vs_cvx <= 1e-6 and max_kl <= eps + 1e-12 and max_ratio <= c_eps * (1 + 1e-12)
          and worst_sub >= -1e-12 and worst_opt >= -1e-12 and max_fkl <= eps_f + 1e-12 and froot_vs_cvx <= 1e-6)
    return ok, (
        f"π̂_α = {np.round(hat, 4).tolist()} (zero on y4, y5): global coverage sup π/π̂ = {global_cov}; reverse-KL ball ε = R_max/β = {eps}: "
        f"C_ε = {c_eps:.4f} (root vs cvxpy rel {root_vs_cvx:.1e}, tol 1e-6); Gibbs policies over the 2^{n} box vertices: "
        f"max KL(π‖π̂) = {max_kl:.4f} ≤ ε, max π/π̂ = {max_ratio:.4f} ≤ C_ε; 200 perturbed rewards: min(bound − gap) "
        f"sub-optimality {worst_sub:.2e}, optimality {worst_opt:.2e} (≥ 0); forward KL: max KL(π̄‖π̃) = {max_fkl:.4f} ≤ "
        f"log(1 + R_max/β) = {eps_f:.4f}, FKL-ball C = {float(np.max(cf_root)):.4f} (root vs cvxpy rel {froot_vs_cvx:.1e})"
    )


@check("mref.coverage_transfer")
def check_coverage_transfer():
    from scipy.optimize import linprog

    rng = np.random.default_rng(34)
    worst_hat, worst_bar, cases = np.inf, np.inf, 0
    for k, n in [(2, 4), (3, 6), (5, 8)]:
        for _ in range(20):
            refs = rng.dirichlet(np.ones(n), size=k)
            w = rng.dirichlet(np.ones(k))
            pi = rng.dirichlet(np.ones(n))
            C = np.max(pi / refs, axis=1)  # the smallest constants with π ≤ C_i π_ref,i
            log_hat, log_f = generalized_escort(_log(refs), w)
            bar = np.exp(arithmetic_mixture(_log(refs), w))
            worst_hat = min(worst_hat, identities.coverage_transfer_rkl(C, w, float(log_f)) - float(np.max(pi / np.exp(log_hat))))
            worst_bar = min(worst_bar, identities.coverage_transfer_fkl(C, w) - float(np.max(pi / bar)))
            cases += 1
    # attained: C = (2, 10), α = (½, ½); references built so that both constraints bind at y0
    C = np.array([2.0, 10.0])
    w = np.array([0.5, 0.5])
    refs = np.array([[0.25, 0.375, 0.375], [0.05, 0.475, 0.475]])
    bar = w @ refs
    res = linprog(-np.eye(3)[0], A_ub=np.eye(3), b_ub=np.min(C[:, None] * refs, axis=0),
                  A_eq=np.ones((1, 3)), b_eq=[1.0], bounds=[(0, None)] * 3, method="highs")
    sup = float(res.x[0] / bar[0])
    harmonic = identities.coverage_transfer_fkl(C, w)
    spec = min(float(w @ C), float(np.min(C / w)))
    ok = worst_hat >= -1e-12 and worst_bar >= -1e-12 and abs(sup - harmonic) <= 1e-9 and spec - harmonic > 0.5
    return ok, (
        f"{cases} random (π, references): min(bound − max π/π̂_α) = {worst_hat:.2e}, min(bound − max π/π̄_α) = {worst_bar:.2e} "
        f"(≥ −1e-12: equality up to rounding, the C_i are each instance's exact constants); C = (2, 10), α = (½, ½): the LP supremum of π(y0)/π̄(y0) = {sup:.6f} = harmonic bound {harmonic:.6f}, "
        f"below the spec's {spec:g}"
    )


@check("mref.corollary_c1")
def check_corollary_c1():
    rng = np.random.default_rng(68)
    worst, worst_pkg, rows = np.inf, 0.0, 0
    for k, n, beta in [(2, 4, 0.5), (3, 6, 1.0), (4, 5, 0.2)]:
        for _ in range(2):
            refs = rng.dirichlet(np.ones(n), size=k)
            w = rng.dirichlet(np.ones(k))
            r = rng.uniform(0, 1, n)
            multi = regularizers.multi_fkl(weights=tuple(w), beta=beta)
            _, v_multi = cvx_optimum(multi, r, refs)
            single = regularizers.multi_fkl(weights=(1.0,), beta=beta)
            v_single = [cvx_optimum(single, r, refs[i:i + 1])[1] for i in range(k)]
            worst = min(worst, float(w @ np.array(v_single)) - v_multi)
            worst_pkg = max(worst_pkg, abs(float(multi.optimal_value(r, _log(refs))) - v_multi))
            rows += 1
    ok = worst >= -1e-8 and worst_pkg <= 1e-7
    return ok, (f"{rows} instances, K up to 4: min(Σ α_i V_i − V_multi) = {worst:.3e} (≥ −1e-8, cvxpy values); "
                f"the package's multi-reference value vs cvxpy {worst_pkg:.1e}")


@check("mref.assumptions_d1_d2")
def check_assumptions_d1_d2():
    rng = np.random.default_rng(77)
    d1_max, d2_max, d2_min, rows = 0.0, 0.0, np.inf, 0
    for k, n, beta, rmax in [(2, 4, 0.5, 1.0), (3, 6, 1.0, 2.0), (2, 5, 0.2, 1.0)]:
        for _ in range(3):
            refs = rng.dirichlet(np.ones(n), size=k)
            w = rng.dirichlet(np.ones(k))
            r = rng.uniform(0, rmax, n)
            log_hat, _ = generalized_escort(_log(refs), w)
            bar = np.exp(arithmetic_mixture(_log(refs), w))
            p_r, _ = cvx_optimum(regularizers.multi_rkl(weights=tuple(w), beta=beta), r, refs)
            p_f, _ = cvx_optimum(regularizers.multi_fkl(weights=tuple(w), beta=beta), r, refs)
            d1_max = max(d1_max, float(np.max(np.abs(beta * (np.log(p_r) - log_hat)))) / rmax)
            d2 = beta * bar / p_f
            d2_max = max(d2_max, float(np.max(d2)) / (rmax + beta))
            d2_min = min(d2_min, float(np.min(d2)))
            rows += 1
    # a policy that is not an optimum: mass 1e-8 on a response both references like
    pi = np.array([1e-8, 0.5 - 5e-9, 0.5 - 5e-9])
    refs = np.array([[0.6, 0.2, 0.2], [0.5, 0.25, 0.25]])
    w = (0.5, 0.5)
    beta = 0.5
    d1_bad = float(np.max(np.abs(beta * (np.log(pi) - generalized_escort(_log(refs), w)[0]))))
    d2_bad = float(np.max(beta * np.exp(arithmetic_mixture(_log(refs), w)) / pi))
    ok = d1_max <= 1 + 1e-6 and d2_max <= 1 + 1e-6 and d2_min > 0 and d1_bad > 5 and d2_bad > 1e6
    return ok, (
        f"{rows} instances (cvxpy optima): max |β log(π*/π̂)|/R_max = {d1_max:.4f} (≤ 1), max β π̄/π̃*/(R_max + β) = "
        f"{d2_max:.4f} (≤ 1), min β π̄/π̃* = {d2_min:.3f} (> 0); a policy with mass 1e-8 on a well-covered response: "
        f"|β log(π/π̂)| = {d1_bad:.2f}, β π̄/π = {d2_bad:.2e} (no R̃ of the order of R_max bounds them)"
    )
