"""Solver speed: batched optima against the memory-bound floor, and against cvxpy.

    python benchmarks/solvers.py [--json] [--prompts 10000] [--responses 1000] [--repeat 3]

Figures (each the best of ``--repeat`` runs):

* ``closed_form_vs_exp`` — batched closed-form optimum (KL, PM, multi-reference RKL with K = 4;
  the worst of the three) for prompts × responses, over the time of one ``np.exp`` of the same
  [prompts, responses] array (the memory-bound floor).  Goal ≤ 4.
* ``fkl_vs_exp`` — batched forward-KL λ root-finding (``f_divergence("reverse_kl")``, the
  single-reference forward KL of Theorem 6.2) on the same size over the same floor.  Goal ≤ 15.
* ``cvxpy_speedup`` — one 1,000-response KL problem: cvxpy (Clarabel, compile + solve) time over
  the closed-form time.  Goal ≥ 1000, with ``cvxpy_max_abs_diff`` = max |Δπ| ≤ 1e-7.

The machine's OPENBLAS_* variables do not matter here (no BLAS call is timed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from prefmatch.theory import regularizers as R  # noqa: E402
from prefmatch.tabular.solvers import closed_form, cvxpy_solve  # noqa: E402


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--responses", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    B, n = args.prompts, args.responses
    r = rng.normal(0.0, 1.0, size=(B, n))
    ref_logp = np.log(rng.dirichlet(np.ones(n), size=B))
    refs4 = np.log(rng.dirichlet(np.ones(n), size=(4, B)))
    w4 = (0.4, 0.3, 0.2, 0.1)

    t_exp = best_time(lambda: np.exp(r), args.repeat)
    cases = {
        "kl": (R.kl(beta=0.5), ref_logp),
        "pm": (R.pm(), None),
        "multi_rkl_k4": (R.multi_rkl(weights=w4, beta=0.5), refs4),
    }
    times = {k: best_time(lambda reg=reg, q=q: closed_form(reg, r, q), args.repeat) for k, (reg, q) in cases.items()}
    fkl = R.f_divergence("reverse_kl", beta=0.5)
    t_fkl = best_time(lambda: closed_form(fkl, r, ref_logp), args.repeat)
    mfkl = R.multi_fkl(weights=w4, beta=0.5)
    t_mfkl = best_time(lambda: closed_form(mfkl, r, refs4), max(1, args.repeat - 1))

    # one 1,000-response problem: closed form vs cvxpy
    r1, ref1 = r[0, :1000], np.exp(ref_logp[0, :1000])
    ref1 = ref1 / ref1.sum()
    reg = R.kl(beta=0.5)
    ref1_logp = np.log(ref1)
    t_cf1 = best_time(lambda: closed_form(reg, r1, ref1_logp), 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        pi_cvx = cvxpy_solve(reg, r1, ref1)
        t_cvx = time.perf_counter() - t0
    diff = float(np.max(np.abs(pi_cvx - np.exp(closed_form(reg, r1, ref1_logp)))))

    out = {
        "closed_form_vs_exp": max(times.values()) / t_exp,
        "fkl_vs_exp": t_fkl / t_exp,
        "cvxpy_speedup": t_cvx / t_cf1,
        "cvxpy_max_abs_diff": diff,
        "closed_form_vs_exp_each": {k: v / t_exp for k, v in times.items()},
        "multi_fkl_k4_vs_exp": t_mfkl / t_exp,
        "exp_floor_s": t_exp,
        "size": [B, n],
        "goals": {"closed_form_vs_exp": "<= 4", "fkl_vs_exp": "<= 15", "cvxpy_speedup": ">= 1000",
                  "cvxpy_max_abs_diff": "<= 1e-7"},
    }
    out["goals_met"] = {
        "closed_form_vs_exp": out["closed_form_vs_exp"] <= 4,
        "fkl_vs_exp": out["fkl_vs_exp"] <= 15,
        "cvxpy_speedup": out["cvxpy_speedup"] >= 1000,
        "cvxpy_max_abs_diff": diff <= 1e-7,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"size {B} x {n}; np.exp floor {t_exp * 1e3:.1f} ms")
        for k, v in out["closed_form_vs_exp_each"].items():
            print(f"  closed form {k:<14} {v:6.2f} x floor")
        print(f"  forward-KL lambda root   {out['fkl_vs_exp']:6.2f} x floor (multi_fkl K=4: {out['multi_fkl_k4_vs_exp']:.2f} x)")
        print(f"  cvxpy / closed form (n=1000): {out['cvxpy_speedup']:.0f} x, max |dpi| = {diff:.1e}")
        print(f"  goals met: {out['goals_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
