"""Sample-complexity sweep: vectorized engine vs a per-sample Python loop.

    python benchmarks/sample_complexity.py [--json] [--subset-trials 3]

* ``sweep_s`` — the full default ``sample-complexity`` experiment (``prefmatch bandit run
  sample-complexity``: 7 values of n from 1e2 to 1e5, 400 trials each, both objectives, bootstrap
  CIs included).
* ``loop_per_sample_s`` / ``loop_per_trial_s`` — a straightforward baseline measured on a small
  subset (n ∈ {100, 1000}, ``--subset-trials`` trials): every comparison drawn and counted in a
  Python loop (``rng.choice`` per draw), then per trial a per-prompt L-BFGS-B MLE (scipy) and the
  gaps.  Its cost is a per-sample part c_s and a per-trial part c_t, fitted on the subset.
* ``loop_sweep_estimate_s`` = Σ_n trials·2·(n·c_s + c_t): the baseline's time for the full sweep.
* ``ratio`` = loop_sweep_estimate_s / sweep_s (goal ≥ 50).  ``ratio_same_subset`` times the
  vectorized engine on exactly the subset the loop ran (small, so overhead-dominated).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from output import emit  # noqa: E402  (beside this script)
from prefmatch.theory import identities  # noqa: E402
from prefmatch.theory.distributions import bradley_terry  # noqa: E402
from prefmatch.tabular.bandit import random_bandit  # noqa: E402
from prefmatch.tabular.experiments import run_sample_complexity, sample_complexity_sweep  # noqa: E402
from prefmatch.tabular.reward_learning import bt_gradient_hessian, bt_log_likelihood  # noqa: E402


def loop_counts(rng, bandit, data_logp, n):
    """n comparisons drawn and counted one at a time (the per-sample Python loop)."""
    X, m = bandit.reward.shape
    p = np.exp(data_logp)
    wins = np.zeros((X, m, m))
    for _ in range(n):
        x = rng.choice(X, p=bandit.rho)
        y1 = rng.choice(m, p=p[x])
        y2 = rng.choice(m, p=p[x])
        if rng.random() < bradley_terry(bandit.reward[x, y1], bandit.reward[x, y2]):
            wins[x, y1, y2] += 1
        else:
            wins[x, y2, y1] += 1
    return wins


def loop_fit_and_gaps(bandit, wins, beta, gaps_fn):
    """Per-prompt L-BFGS-B MLE (scipy) and the gaps of one trial."""
    from scipy.optimize import minimize

    X, m = bandit.reward.shape
    r_hat = np.empty_like(bandit.reward)
    for x in range(X):
        res = minimize(lambda r: -bt_log_likelihood(r, wins[x]), np.full(m, 0.5 * bandit.r_max),
                       jac=lambda r: bt_gradient_hessian(r, wins[x])[0],
                       bounds=[(0.0, bandit.r_max)] * m, method="L-BFGS-B")
        r_hat[x] = res.x
    g = gaps_fn(bandit.reward, r_hat, bandit.ref_logp, bandit.weights, beta)
    return g["optimality"] @ bandit.rho, g.get("suboptimality_kl_form", g["suboptimality"]) @ bandit.rho


def loop_trial(rng, bandit, beta, n):
    """One trial, both objectives, the slow way; returns (sampling seconds, fitting seconds)."""
    t_s = t_f = 0.0
    for data_logp, gaps_fn in ((bandit.escort_logp(), identities.rkl_gaps), (bandit.mixture_logp(), identities.fkl_gaps)):
        t0 = time.perf_counter()
        wins = loop_counts(rng, bandit, data_logp, n)
        t1 = time.perf_counter()
        loop_fit_and_gaps(bandit, wins, beta, gaps_fn)
        t_s, t_f = t_s + t1 - t0, t_f + time.perf_counter() - t1
    return t_s, t_f


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--subset-trials", type=int, default=3)
    args = ap.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = run_sample_complexity(seed=0)
        sweep_s = time.perf_counter() - t0
    n_list, trials = res["params"]["n"], res["params"]["trials"]

    rng = np.random.default_rng(1)
    bandit = random_bandit(rng, 3, 5, r_max=1.0, n_refs=2, weights=(0.5, 0.5), concentration=2.0, min_prob=0.05)
    subset = (100, 1000)
    loop_trial(rng, bandit, 1.0, 10)  # warm-up: imports and first-call costs out of the timing
    t_samp = t_fit = 0.0
    n_samp = n_fit = 0
    loop_subset = 0.0
    for n in subset:
        for _ in range(args.subset_trials):
            ts, tf = loop_trial(rng, bandit, 1.0, n)
            t_samp, t_fit, loop_subset = t_samp + ts, t_fit + tf, loop_subset + ts + tf
            n_samp, n_fit = n_samp + 2 * n, n_fit + 2
    c_s, c_t = t_samp / n_samp, t_fit / n_fit  # per sample; per trial and objective
    loop_est = sum(trials * 2 * (n * c_s + c_t) for n in n_list)

    t0 = time.perf_counter()
    sample_complexity_sweep(rng, bandit, 1.0, subset, args.subset_trials)
    vec_subset = time.perf_counter() - t0

    out = {
        "sweep_s": sweep_s,
        "loop_sweep_estimate_s": loop_est,
        "ratio": loop_est / sweep_s,
        "ratio_same_subset": loop_subset / vec_subset,
        "loop_per_sample_s": c_s,
        "loop_per_trial_s": c_t,
        "sweep": {"n": n_list, "trials": trials},
        "subset": {"n": list(subset), "trials": args.subset_trials},
        "goal": {"ratio": ">= 50"},
        "goal_met": loop_est / sweep_s >= 50,
    }
    return emit(out, args.json, [
        f"full sweep (n = {n_list[0]}..{n_list[-1]}, {trials} trials/n): {sweep_s:.2f} s",
        f"per-sample loop baseline: {c_s * 1e6:.1f} us/sample + {c_t * 1e3:.1f} ms/trial per objective",
        f"  estimated full-sweep time: {loop_est:.0f} s  ->  ratio {out['ratio']:.0f}x (goal >= 50)",
        f"  same subset ({list(subset)}, {args.subset_trials} trials): ratio {out['ratio_same_subset']:.1f}x"])


if __name__ == "__main__":
    sys.exit(main())
