r"""``dpo.*`` checks: the DPO counterpart of every affine regularizer (PM-RLHF's DPO among them).

Every affine regularizer ψ = −β log π(y) + β b(y) has the RLHF optimum log π*(y) = r(y)/β + b(y)
− log Z, so the reward is identified up to a prompt constant by the implicit reward
h(y) = β(log π(y) − b(y)) (``reg.sequence_implicit_reward``), and the Bradley–Terry likelihood
in terms of h is the DPO loss −log σ(h(y_w) − h(y_l)) (:func:`prefmatch.theory.dpo.sequence_dpo_loss`).

The checks work on one prompt with the 9 responses of two tokens over a vocabulary of 3 (so
that the token-level cPM variant differs from Definition 4.1), an autoregressive reference
(K = 2 of them for multi-reference reverse KL), a random reward r and pairs drawn from the
reference, y ≠ y′, y ≻ y′ with probability σ(r(y) − r(y′)).  The *population* DPO loss is then

.. math::  L(\pi) = \sum_{y \ne y'} q(y) q(y')\,\sigma(r_y - r_{y'})\,\mathrm{softplus}(-(h_y - h_{y'})),

a convex function of the response logits z (log π = z − logsumexp z).  It is minimized by an
independent optimizer (scipy L-BFGS on z, gradient by torch autograd in float64), and compared
with the closed form ``reg.sequence_optimal_logp``.  torch and scipy are imported inside the
checks.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from prefmatch.theory import regularizers
from prefmatch.theory.checks import check
from prefmatch.theory.dpo import dpo_regularizers

V, T = 3, 2
BETA = 0.7


def dpo_cases() -> list[tuple[str, regularizers.Regularizer]]:
    """(label, regularizer at β = 0.7) for every regularizer with a DPO loss, each parameter set of
    its ``battery_cases`` (KL's PPO estimator dropped: it does not change ψ on whole responses)."""
    out, seen = [], set()
    for name in dpo_regularizers():
        cls = regularizers.REGISTRY[name]
        for p in cls.battery_cases or ({},):
            p = {k: v for k, v in p.items() if k != "estimator"}
            key = (name, tuple(sorted((k, str(v)) for k, v in p.items())))
            if key in seen:
                continue
            seen.add(key)
            label = name + ("[" + ",".join(f"{k}={v}" for k, v in sorted(p.items())) + "]" if p else "")
            out.append((label, regularizers.get(name, **p, beta=BETA)))
    return out


class _Problem:
    """Responses of T tokens, K autoregressive references (token log-probs [K, n, T]), a reward,
    and the data distribution q (the first reference) of the pairs."""

    def __init__(self, seed: int = 0, k: int = 1):
        rng = np.random.default_rng(seed)
        self.responses = np.array(list(itertools.product(range(V), repeat=T)))
        n = len(self.responses)
        refs = []
        for _ in range(k):
            first = np.log(rng.dirichlet(np.ones(V)))  # π_ref(y_1)
            second = np.log(rng.dirichlet(np.ones(V), size=V))  # π_ref(y_2 | y_1)
            refs.append(np.stack([first[self.responses[:, 0]], second[self.responses[:, 0], self.responses[:, 1]]], -1))
        self.ref_t = np.stack(refs)  # [K, n, T]
        self.r = rng.normal(size=n)
        self.mask = np.ones((n, T))
        self.q_logp = self.ref_t[0].sum(-1)

    def ref_for(self, reg):
        if reg.refs == "none":
            return None
        return self.ref_t if reg.multi_reference else self.ref_t[0]


def _population_loss(reg, z, ref_t, mask, r, q, margin: float = 0.0, edges=None):
    """L(z) (torch, differentiable in the response logits z): Σ_{y≠y′} w(y, y′) σ(r_y − r_y′)
    softplus(γ − (h_y − h_y′)), with w = q q′ (or the 0/1 ``edges`` matrix) and margin γ."""
    import torch

    logp = torch.log_softmax(z, -1)
    lp_t = torch.cat([logp[:, None], torch.zeros(len(z), mask.shape[-1] - 1, dtype=z.dtype)], -1)  # Σ_t = log π(y)
    h = reg.sequence_implicit_reward(lp_t, ref_t, mask)
    d = h[:, None] - h[None, :]
    w = q[:, None] * q[None, :] if edges is None else edges
    w = w * (1 - torch.eye(len(z), dtype=z.dtype))
    p = torch.sigmoid(r[:, None] - r[None, :])
    return (w * p * torch.nn.functional.softplus(margin - d)).sum()


def _minimize(fun, z0):
    """scipy L-BFGS on ``fun(z) -> torch scalar`` with autograd gradients; returns log π."""
    import torch
    from scipy.optimize import minimize

    def f(x):
        z = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        val = fun(z)
        (g,) = torch.autograd.grad(val, z)
        return float(val.detach()), g.numpy()

    res = minimize(f, np.asarray(z0, float), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 20_000, "maxcor": 30})
    z = res.x - res.x.max()
    return z - np.log(np.exp(z).sum())


def _tv(a, b):
    return 0.5 * float(np.abs(np.exp(a) - np.exp(b)).sum())


def _torch_problem(prob, reg):
    import torch

    ref = prob.ref_for(reg)
    return (None if ref is None else torch.tensor(ref)), torch.tensor(prob.mask), torch.tensor(prob.r), \
        torch.tensor(np.exp(prob.q_logp))


@check("dpo.implicit_reward")
def check_implicit_reward():
    worst, rows, ok = 0.0, [], True
    for label, reg in dpo_cases():
        prob = _Problem(seed=1, k=2 if reg.multi_reference else 1)
        ref = prob.ref_for(reg)
        star = reg.sequence_optimal_logp(prob.r, ref, prob.mask)
        lp_t = np.stack([star, np.zeros_like(star)], -1)
        spread = float(np.ptp(reg.sequence_implicit_reward(lp_t, ref, prob.mask) - prob.r))
        worst = max(worst, spread)
        if ref is not None:  # does h change with the reference?
            other = _Problem(seed=2, k=2 if reg.multi_reference else 1).ref_for(reg)
            moved = float(np.max(np.abs(reg.sequence_implicit_reward(lp_t, ref, prob.mask)
                                        - reg.sequence_implicit_reward(lp_t, other, prob.mask))))
            uses_ref = moved > 1e-9
        else:
            uses_ref = False
        ok &= uses_ref == (reg.refs != "none")
        rows.append(f"{label}: ptp(h − r) = {spread:.1e}{', reference-free' if not uses_ref else ''}")
    ok &= worst < 1e-12
    return ok, f"max over regularizers of max_y (h − r) − min_y (h − r) = {worst:.2e} (tol 1e-12); " + "; ".join(rows)


@check("dpo.population_minimizer")
def check_population_minimizer():
    worst, rows = 0.0, []
    for label, reg in dpo_cases():
        prob = _Problem(seed=3, k=2 if reg.multi_reference else 1)
        ref, mask, r, q = _torch_problem(prob, reg)
        got = _minimize(lambda z: _population_loss(reg, z, ref, mask, r, q), prob.q_logp)  # start at the reference
        star = reg.sequence_optimal_logp(prob.r, prob.ref_for(reg), prob.mask)
        tv = _tv(got, star)
        worst = max(worst, tv)
        rows.append(f"{label}: TV {tv:.1e} (start {_tv(prob.q_logp, star):.2f})")
    return worst < 1e-6, f"max TV(scipy minimizer, closed form) = {worst:.2e} (tol 1e-6); " + "; ".join(rows)


@check("dpo.gradient_at_optimum")
def check_gradient_at_optimum():
    import torch

    worst, smallest_start, rows = 0.0, math.inf, []
    for label, reg in dpo_cases():
        prob = _Problem(seed=4, k=2 if reg.multi_reference else 1)
        ref, mask, r, q = _torch_problem(prob, reg)

        def grad(logp):
            z = torch.tensor(logp, requires_grad=True)
            (g,) = torch.autograd.grad(_population_loss(reg, z, ref, mask, r, q), z)
            return float(g.abs().max())

        g_star = grad(reg.sequence_optimal_logp(prob.r, prob.ref_for(reg), prob.mask))
        g_ref = grad(prob.q_logp)
        worst, smallest_start = max(worst, g_star), min(smallest_start, g_ref)
        rows.append(f"{label}: {g_star:.1e} (reference {g_ref:.2f})")
    return worst < 1e-13 and smallest_start > 1e-3, (
        f"max |∇L(π*)| = {worst:.2e} (tol 1e-13), min |∇L(π_ref)| = {smallest_start:.3f} (> 1e-3); " + "; ".join(rows))


@check("dpo.partial_coverage")
def check_partial_coverage():
    import torch

    rng = np.random.default_rng(6)
    n = 7
    comps, uncovered = [[0, 1, 2], [3, 4]], [5, 6]
    edges = torch.zeros(n, n, dtype=torch.float64)
    for a, b in [(0, 1), (1, 2), (3, 4)]:  # a path on {0,1,2}, an edge {3,4}; 5 and 6 never compared
        edges[a, b] = edges[b, a] = 1.0
    ref_logp = np.log(rng.dirichlet(np.ones(n)))
    r = rng.normal(size=n)
    details, ok = [], True
    for reg in (regularizers.kl(beta=BETA), regularizers.pm(beta=BETA)):
        ref1 = torch.tensor(ref_logp[:, None]) if reg.refs != "none" else None
        mask = torch.ones(n, 1, dtype=torch.float64)
        rt = torch.tensor(r)

        def loss(z):
            return _population_loss(reg, z, ref1, mask, rt, None, edges=edges)

        star = reg.optimal_logp(r, ref_logp if reg.refs != "none" else None)
        # (a) the Hessian at π* (in logits) has a null space of dimension #components + #uncovered
        hess = torch.autograd.functional.hessian(loss, torch.tensor(star)).numpy()
        eig = np.linalg.eigvalsh(hess)
        null = int(np.sum(np.abs(eig) < 1e-10 * max(1.0, np.abs(eig).max())))
        # (b) two random starts: the same loss, different policies, the same conditionals on each component
        mins = [_minimize(loss, rng.normal(scale=2.0, size=n)) for _ in range(2)]
        vals = [float(loss(torch.tensor(m))) for m in mins]
        cond_err = max(float(np.max(np.abs((m[c] - np.logaddexp.reduce(m[c])) - (star[c] - np.logaddexp.reduce(star[c])))))
                       for m in mins for c in comps)
        spread = _tv(mins[0], mins[1])
        # (c) gradient descent from the reference logits: the predicted limit
        z = torch.tensor(ref_logp, requires_grad=True)
        opt = torch.optim.SGD([z], lr=2.0)
        for _ in range(4000):
            opt.zero_grad()
            loss(z).backward()
            opt.step()
        pred = ref_logp.copy()
        for c in comps:
            pred[c] = star[c] - star[c].mean() + ref_logp[c].mean()
        pred = pred - np.logaddexp.reduce(pred)
        got = torch.log_softmax(z.detach(), -1).numpy()
        gd_err = float(np.max(np.abs(got - pred)))
        mass = float(np.exp(got[uncovered]).sum()), float(np.exp(ref_logp[uncovered]).sum())
        this = (null == len(comps) + len(uncovered) and abs(vals[0] - vals[1]) < 1e-10 and cond_err < 1e-6
                and spread > 0.1 and gd_err < 1e-6)
        ok &= this
        details.append(f"{reg.name}: Hessian null space {null} (expected {len(comps) + len(uncovered)}); two minimizers "
                       f"with loss gap {abs(vals[0] - vals[1]):.1e}, TV {spread:.2f} apart, conditional error "
                       f"{cond_err:.1e}; from the reference: limit error {gd_err:.1e}, uncovered mass "
                       f"{mass[1]:.3f} → {mass[0]:.3f}")
    return ok, "; ".join(details)


@check("dpo.simpo_relation")
def check_simpo_relation():
    import torch
    from scipy.optimize import brentq

    rng = np.random.default_rng(8)
    n = 6
    r = rng.normal(size=n)
    q = np.exp(np.log(rng.dirichlet(np.ones(n))))
    rt, qt = torch.tensor(r), torch.tensor(q)
    beta = 0.5

    def simpo_pop(z, lengths, margin):
        logp = torch.log_softmax(z, -1)
        h = beta * logp / torch.tensor(lengths, dtype=torch.float64)
        d = h[:, None] - h[None, :]
        w = qt[:, None] * qt[None, :] * (1 - torch.eye(n, dtype=torch.float64))
        return (w * torch.sigmoid(rt[:, None] - rt[None, :]) * torch.nn.functional.softplus(margin - d)).sum()

    # (a) equal lengths L, γ = 0: the identity with PM DPO at β/L, pair by pair
    L = 4.0
    lw, ll = np.log(rng.uniform(0.01, 1, 20)), np.log(rng.uniform(0.01, 1, 20))
    from prefmatch.theory.dpo import dpo_loss

    simpo = np.logaddexp(0.0, -(beta / L * lw - beta / L * ll))
    pm = dpo_loss(regularizers.pm(beta=beta / L), lw, ll, None, None, reduction="none")
    ident = float(np.max(np.abs(simpo - pm)))
    got_eq = _minimize(lambda z: simpo_pop(z, [L] * n, 0.0), np.zeros(n))
    tv_eq = _tv(got_eq, regularizers.pm(beta=beta / L).optimal_logp(r))
    # (b) unequal lengths, γ = 0: log π = |y| (r − c)/β with c fixed by Σ π = 1
    lengths = rng.integers(1, 6, size=n).astype(float)
    got = _minimize(lambda z: simpo_pop(z, lengths, 0.0), np.zeros(n))
    c = brentq(lambda c: np.sum(np.exp(lengths * (r - c) / beta)) - 1.0, r.min() - 50, r.max() + 50, xtol=1e-15)
    closed = lengths * (r - c) / beta
    tv_len = _tv(got, closed)
    tv_vs_pm = _tv(got, regularizers.pm(beta=beta).optimal_logp(r))
    # (c) margin γ > 0 (one length, so only the margin differs from PM DPO at β/L)
    got_m = _minimize(lambda z: simpo_pop(z, [L] * n, 1.0), np.zeros(n))
    pair = lambda lp: lp[:, None] - lp[None, :]  # noqa: E731  log-odds of the policy's pairwise preference
    off = ~np.eye(n, dtype=bool)
    sharper = float(np.min(np.abs(pair(got_m))[off] / np.abs(pair(got_eq))[off]))
    ok = ident < 1e-12 and tv_eq < 1e-6 and tv_len < 1e-6 and tv_vs_pm > 0.05 and sharper > 1.0
    return ok, (f"(a) |SimPO(γ=0, |y|={L:g}) − PM-DPO(β/{L:g})| = {ident:.1e} per pair, its minimizer at TV {tv_eq:.1e} "
                f"from softmax({L:g}r/β); (b) lengths {lengths.astype(int).tolist()}: minimizer at TV {tv_len:.1e} from "
                f"|y|(r − c)/β and TV {tv_vs_pm:.3f} from the PM optimum softmax(r/β); (c) margin γ = 1: every pairwise "
                f"log-odds of the minimizer ≥ {sharper:.2f}× the BT-consistent one (> 1: sharper than preference matching)")
