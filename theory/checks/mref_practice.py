r"""``mref.practice.*``: what public multi-reference code optimizes, against the paper's exact solutions.

Enumerable token worlds (:mod:`prefmatch.theory.token_mixtures`): every sequence of T tokens over
a vocabulary of V is a response, so the sequence-level generalized escort (Theorem 5.2), the
arithmetic mixture (Theorem 6.2) and every optimum are exact.  Each check compares two routes
that share no formula: sequence-level normalization against a backward recursion over prefixes,
closed-form optima against scipy L-BFGS on sequence logits, the objective value against the
Gibbs KL form.  Package β (objective E_π[r] − β·D).
"""
from __future__ import annotations

import numpy as np

from prefmatch.theory import dpo as DPO
from prefmatch.theory import identities, regularizers
from prefmatch.theory import token_mixtures as TM
from prefmatch.theory.checks import check
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort


def _lbfgs_max(f, n, x0=None):
    """max of f over the simplex by scipy L-BFGS on logits (an optimizer that knows no closed form)."""
    from scipy.optimize import minimize

    def negf(z):
        return -float(f(z - np.logaddexp.reduce(z)))

    res = minimize(negf, np.zeros(n) if x0 is None else x0, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000, "maxfun": 200000})
    return res.x - np.logaddexp.reduce(res.x), -res.fun


# --------------------------------------------------------------------------- when they coincide
#: (K, vocabulary, length, β, disagreement s) of the per-token reference instances of the gap checks
GAP_CASES = [(2, 3, 2, 0.5, 1.0), (3, 3, 3, 0.5, 1.0), (2, 2, 4, 1.0, 1.5), (4, 3, 3, 0.2, 0.7)]


def _token_reference_instances(rng):
    """For each of :data:`GAP_CASES`: the case, weights w, per-token references ``cond``, their sequence
    log-probabilities L and rewards r in [0, 1) (drawn from ``rng`` in that order, one case at a time)."""
    for k, vocab, length, beta, s in GAP_CASES:
        w = rng.dirichlet(np.ones(k))
        cond = TM.random_token_references(rng, k, vocab, length, disagreement=s)
        yield k, vocab, length, beta, s, w, cond, TM.sequence_logps(cond), rng.uniform(0, 1, vocab ** length)


def _disagreement_slopes(rng, gap: str) -> list[float]:
    """The slope of log ``gap`` (a key of :func:`TM.compare`) in log s over s ∈ [3e-3, 3e-2], for K = 2, T = 2 and
    K = 3, T = 3 (one seed each drawn from ``rng``): 4 when the gap is of order s⁴."""
    ss = np.geomspace(3e-3, 3e-2, 5)
    slopes = []
    for k, length in ((2, 2), (3, 3)):
        seed = int(rng.integers(2**31))
        w = np.ones(k) / k
        r = np.random.default_rng(seed + 1).uniform(0, 1, 3 ** length)
        gaps = [TM.compare(TM.random_token_references(np.random.default_rng(seed), k, 3, length, s), w, r, 0.5)[gap] for s in ss]
        slopes.append(float(np.polyfit(np.log(ss), np.log(gaps), 1)[0]))
    return slopes


@check("mref.practice.coincide")
def check_coincide():
    rng = np.random.default_rng(291)
    zero_keys = ("tv_geometric", "tv_arithmetic", "rkl_gap_kl_form", "fkl_gap", "tv_policy_rkl", "tv_policy_fkl")
    worst_len1, worst_first, worst_last_ari, min_last_geo, n = 0.0, 0.0, 0.0, np.inf, 0
    for k in (2, 3, 5):
        w = rng.dirichlet(np.ones(k))
        beta = float(rng.choice([0.2, 0.5, 2.0]))
        for vocab in (2, 5):
            cond = TM.random_token_references(rng, k, vocab, 1, disagreement=2.0)
            c = TM.compare(cond, w, rng.uniform(0, 1, vocab), beta)
            worst_len1 = max(worst_len1, max(abs(c[key]) for key in zero_keys))
            n += 1
        cond = TM.random_token_references(rng, k, 3, 3, disagreement=2.0, differ_at=[0])
        c = TM.compare(cond, w, rng.uniform(0, 1, 27), beta)
        worst_first = max(worst_first, max(abs(c[key]) for key in zero_keys))
        for pos in (1, 2):
            cond = TM.random_token_references(rng, k, 3, 3, disagreement=2.0, differ_at=[pos])
            c = TM.compare(cond, w, rng.uniform(0, 1, 27), beta)
            worst_last_ari = max(worst_last_ari, abs(c["tv_arithmetic"]), abs(c["fkl_gap"]), abs(c["tv_policy_fkl"]))
            min_last_geo = min(min_last_geo, c["tv_geometric"])
    ok = worst_len1 <= 1e-12 and worst_first <= 1e-12 and worst_last_ari <= 1e-12 and min_last_geo >= 1e-3
    return ok, (
        f"length 1 ({n} instances, K ∈ {{2,3,5}}, V ∈ {{2,5}}): max of TV(q_geo, π̂), TV(q_ari, P̄), the trained policies' TVs "
        f"and both objective gaps = {worst_len1:.1e} (tol 1e-12); references differing only at the first token (T = 3, V = 3): "
        f"{worst_first:.1e} (tol 1e-12); differing only at position 2 or 3: arithmetic {worst_last_ari:.1e} (tol 1e-12), "
        f"geometric min TV(q_geo, π̂) = {min_last_geo:.3f} (≥ 1e-3: the per-token normalizer Z_t(y_<t) varies with the prefix)"
    )


# --------------------------------------------------------------------------- geometric ensemble
@check("mref.practice.geometric_gap")
def check_geometric_gap():
    rng = np.random.default_rng(292)
    worst_id, worst_rec, worst_obj, worst_argmax, worst_gibbs, min_d = 0.0, 0.0, 0.0, 0.0, 0.0, np.inf
    rows = []
    for k, vocab, length, beta, s, w, cond, L, r in _token_reference_instances(rng):
        n = vocab ** length
        log_hat, log_f = generalized_escort(L, w)
        geo_c, _ = TM.per_token_geometric(cond, w)
        log_geo = TM.conditionals_to_sequence(geo_c)
        d = TM.disagreement_bonus(cond, w)
        min_d = min(min_d, float(d.min()))
        # identity log q_geo = log π̂ + log F + D (sequence-level normalization vs per-token normalizers)
        worst_id = max(worst_id, float(np.max(np.abs(log_geo - (log_hat + float(log_f) + d)))))
        # the escort's conditionals by backward recursion reproduce the sequence-level escort
        esc_c, w0 = TM.escort_conditionals(cond, w)
        worst_rec = max(worst_rec, float(np.max(np.abs(TM.conditionals_to_sequence(esc_c) - log_hat))), abs(w0 - float(log_f)))
        # objective identity on random policies: E r − β KL(π‖q_geo) = E[r + βD] − β Σ α KL(π‖p_i)
        single = regularizers.multi_rkl(weights=(1.0,), beta=beta)
        multi = regularizers.multi_rkl(weights=tuple(w), beta=beta)
        pis = rng.dirichlet(np.ones(n), size=10)
        lhs = single.objective(pis, r, np.exp(log_geo)[None])
        rhs = multi.objective(pis, r + beta * d, np.exp(L))
        worst_obj = max(worst_obj, float(np.max(np.abs(lhs - rhs))))
        # what the trainer reaches: the argmax of its objective (L-BFGS) = the multi-reference optimum for r + βD
        lp_fit, _ = _lbfgs_max(lambda lp: single.objective(np.exp(lp), r, np.exp(log_geo)[None]), n)
        lp_geo = TM.single_reference_optimum(r, log_geo, beta, "rkl")
        worst_argmax = max(worst_argmax, float(np.max(np.abs(np.exp(lp_fit) - np.exp(multi.optimal_logp(r + beta * d, L))))),
                           float(np.max(np.abs(np.exp(lp_geo) - np.exp(multi.optimal_logp(r + beta * d, L))))))
        c = TM.compare(cond, w, r, beta)
        worst_gibbs = max(worst_gibbs, abs(c["rkl_gap"] - c["rkl_gap_kl_form"]))
        rows.append(f"K={k} V={vocab} T={length} β={beta} s={s}: TV(q_geo, π̂)={c['tv_geometric']:.4f}, KL={c['kl_geometric']:.2e}, "
                    f"D ∈ [{d.min():.3f}, {d.max():.3f}], objective gap={c['rkl_gap']:.3e}, TV(π_geo, π*)={c['tv_policy_rkl']:.4f}")
    # order in the disagreement s: gap = β KL(π_geo‖π*) ∝ s⁴ (D − E D = O(s²))
    slopes = _disagreement_slopes(rng, "rkl_gap_kl_form")
    # the gap grows with length (same per-token disagreement), positive for every T ≥ 2
    by_len = []
    for length in (2, 3, 4, 5):
        g = [TM.compare(TM.random_token_references(np.random.default_rng([293, length, j]), 2, 2, length, 1.0), (0.5, 0.5),
                        np.random.default_rng([294, length, j]).uniform(0, 1, 2 ** length), 0.5)["rkl_gap_kl_form"] for j in range(20)]
        by_len.append(float(np.mean(g)))
    ok = (worst_id <= 1e-12 and worst_rec <= 1e-12 and worst_obj <= 1e-12 and worst_argmax <= 1e-5 and worst_gibbs <= 1e-10
          and min_d >= -1e-15 and all(abs(sl - 4.0) <= 0.2 for sl in slopes) and all(b > 0 for b in by_len)
          and all(a < b for a, b in zip(by_len, by_len[1:])))
    return ok, (
        f"|log q_geo − (log π̂ + log F + D)|∞ = {worst_id:.1e} (tol 1e-12); escort by backward recursion vs sequence-level "
        f"{worst_rec:.1e} (tol 1e-12); min D = {min_d:.2e} (≥ 0, Hölder); objective identity on 40 random policies "
        f"{worst_obj:.1e} (tol 1e-12); L-BFGS argmax of the single-reference objective and its closed form vs the multi-reference "
        f"optimum for r + βD: {worst_argmax:.1e} (tol 1e-5, L-BFGS with finite-difference gradients); V* − J(π_geo) vs β KL(π_geo‖π*): {worst_gibbs:.1e} (tol 1e-10)\n"
        + "\n".join(rows)
        + f"\nslope of log gap in log s (s ∈ [3e-3, 3e-2]): {', '.join(f'{x:.3f}' for x in slopes)} (4 ± 0.2)"
        + f"\nmean gap over 20 instances (K = 2, V = 2, s = 1, β = 0.5) for T = 2..5: {', '.join(f'{x:.2e}' for x in by_len)} (increasing)"
    )


# --------------------------------------------------------------------------- arithmetic ensemble
@check("mref.practice.arithmetic_gap")
def check_arithmetic_gap():
    rng = np.random.default_rng(295)
    worst_post, worst_fit, min_gap, rows = 0.0, 0.0, np.inf, []
    for k, vocab, length, beta, s, w, cond, L, r in _token_reference_instances(rng):
        n = vocab ** length
        log_bar = arithmetic_mixture(L, w)
        worst_post = max(worst_post, float(np.max(np.abs(TM.conditionals_to_sequence(TM.mixture_conditionals(cond, w)) - log_bar))))
        log_ari = TM.conditionals_to_sequence(TM.per_token_arithmetic(cond, w))
        # the forward-KL optimum with the per-token reference: closed form vs L-BFGS on its objective
        single = regularizers.multi_fkl(weights=(1.0,), beta=beta)
        lp_fit, _ = _lbfgs_max(lambda lp: single.objective(np.exp(lp), r, np.exp(log_ari)[None]), n, x0=log_ari.copy())
        lp_ari = TM.single_reference_optimum(r, log_ari, beta, "fkl")
        worst_fit = max(worst_fit, float(np.max(np.abs(np.exp(lp_fit) - np.exp(lp_ari)))))
        c = TM.compare(cond, w, r, beta)
        min_gap = min(min_gap, c["fkl_gap"])
        # what idanshen's PPO does with the arithmetic ensemble: reverse KL to it — not one of the paper's objectives
        lp_rkl_ari = TM.single_reference_optimum(r, log_ari, beta, "rkl")
        fkl = regularizers.multi_fkl(weights=tuple(w), beta=beta)
        gap_rkl_ari = float(fkl.optimal_value(r, L)) - float(fkl.objective(np.exp(lp_rkl_ari), r, np.exp(L)))
        rows.append(f"K={k} V={vocab} T={length} β={beta} s={s}: TV(q_ari, P̄)={c['tv_arithmetic']:.4f}, KL={c['kl_arithmetic']:.2e}, "
                    f"forward-KL objective gap of Algorithm 2 with q_ari = {c['fkl_gap']:.3e} (TV of policies {c['tv_policy_fkl']:.4f}); "
                    f"reverse KL to q_ari (PPO with the ensemble) loses {gap_rkl_ari:.3e} of it")
    slopes = _disagreement_slopes(rng, "fkl_gap")
    ok = worst_post <= 1e-12 and worst_fit <= 1e-5 and min_gap > 1e-6 and all(abs(sl - 4.0) <= 0.2 for sl in slopes)
    return ok, (
        f"posterior-weighted next-token laws vs the sequence-level mixture: {worst_post:.1e} (tol 1e-12); forward-KL optimum with "
        f"the per-token reference, closed form vs L-BFGS: {worst_fit:.1e} (tol 1e-5); min objective gap {min_gap:.2e} (> 1e-6)\n"
        + "\n".join(rows)
        + f"\nslope of log gap in log s (s ∈ [3e-3, 3e-2]): {', '.join(f'{x:.3f}' for x in slopes)} (4 ± 0.2)"
    )


# --------------------------------------------------------------------------- MRPO
@check("mref.practice.mrpo")
def check_mrpo():
    import torch
    from scipy.optimize import minimize

    rng = np.random.default_rng(296)
    worst_h, worst_le, worst_dpo, worst_sur, worst_eta0, worst_big, min_gap, rows = 0.0, -np.inf, 0.0, 0.0, 0.0, 0.0, np.inf, []
    above_found = False
    for _k_case, (vocab, length, alpha, beta, s) in enumerate([(3, 2, 0.3, 0.5, 1.0), (3, 3, 0.5, 1.0, 1.0), (2, 4, 0.7, 0.3, 1.5)]):
        cond = TM.random_token_references(rng, 2, vocab, length, disagreement=s)
        L = TM.sequence_logps(cond)
        n = vocab ** length
        r = rng.uniform(0, 1, n)
        w = (1.0 - alpha, alpha)
        log_h = TM.mrpo_reference_logp(L[0], L[1], alpha)
        worst_h = max(worst_h, float(np.max(np.abs(log_h - identities.harmonic_reference_logp(L, w)))))
        worst_le = max(worst_le, float(np.max(log_h - np.tensordot(np.asarray(w), L, axes=1))))
        # the population DPO loss with MRPO's reference, minimized by L-BFGS (torch gradients): π ∝ H e^{r/β}
        reg = regularizers.multi_rkl(weights=(1.0,), beta=beta)
        Lt, rt = torch.tensor(log_h[None]), torch.tensor(r)

        def fg(z):
            zt = torch.tensor(z, requires_grad=True)
            loss = DPO.population_dpo_loss(reg, torch.log_softmax(zt, -1), Lt, rt)
            loss.backward()
            return float(loss.detach()), zt.grad.numpy().copy()

        res = minimize(fg, np.zeros(n), jac=True, method="L-BFGS-B", options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 5000})
        lp_fit = res.x - np.logaddexp.reduce(res.x)
        m = TM.mrpo_compare(L[0], L[1], alpha, r, beta)
        worst_dpo = max(worst_dpo, float(np.max(np.abs(np.exp(lp_fit) - np.exp(m["logp"])))))
        lp_sur, _ = identities.mrpo_surrogate_optimum(r, L, w, beta)
        worst_sur = max(worst_sur, float(np.max(np.abs(lp_sur - m["logp"]))))
        min_gap = min(min_gap, m["gap"])
        # clipping
        m0 = TM.mrpo_compare(L[0], L[1], alpha, r, beta, eta=0.0)
        worst_eta0 = max(worst_eta0, float(np.max(np.abs(m0["logp"] - TM.single_reference_optimum(r, L[0], beta, "rkl")))))
        eta_max = float(np.max(np.abs(L[1] - L[0]) / np.abs(L[0])))
        mb = TM.mrpo_compare(L[0], L[1], alpha, r, beta, eta=eta_max * 1.01)
        worst_big = max(worst_big, float(np.max(np.abs(mb["logp"] - m["logp"]))))
        gaps_eta = []
        for eta in (0.0, 0.1, 0.3, 0.6):
            me = TM.mrpo_compare(L[0], L[1], alpha, r, beta, eta=eta)
            gaps_eta.append(me["gap"])
            above_found |= bool(np.any(me["log_h"] > np.tensordot(np.asarray(w), L, axes=1) + 1e-12))
        rows.append(f"V={vocab} T={length} α={alpha} β={beta}: unclipped gap {m['gap']:.3e} (TV to π* {m['tv_policy']:.4f}); "
                    f"clipped gap at η = 0, 0.1, 0.3, 0.6: {', '.join(f'{g:.3e}' for g in gaps_eta)}; clip inactive from η = {eta_max:.3f}")
    ok = (worst_h <= 1e-12 and worst_le <= 1e-12 and worst_dpo <= 1e-5 and worst_sur <= 1e-12 and min_gap > 1e-6
          and worst_eta0 <= 1e-12 and worst_big <= 1e-12 and above_found)
    return ok, (
        f"combined reference vs the weighted harmonic mean (weights (1−α, α)): {worst_h:.1e} (tol 1e-12); max(log H − Σ w_i log p_i) = "
        f"{worst_le:.1e} (≤ 0: a lower bound); population DPO minimizer (L-BFGS) vs ∝ H e^{{r/β}}: {worst_dpo:.1e} (tol 1e-5); "
        f"= the eq. (18) surrogate's maximizer {worst_sur:.1e}; min gap on the multi-reference objective {min_gap:.2e} (> 1e-6); "
        f"η = 0 vs the single-reference p₁ optimum {worst_eta0:.1e}; η past the largest |log p₂/log p₁ − 1| vs unclipped {worst_big:.1e}; "
        f"an active clip lifts H above Π p_i^{{w_i}} somewhere: {above_found}\n" + "\n".join(rows)
    )
