"""Solver speed: batched optima against the memory-bound floor, and against cvxpy.

    python benchmarks/solvers.py [--json] [--prompts 10000] [--responses 1000] [--repeat 5]

Figures (each the best of ``--repeat`` runs over the best of the ``np.exp`` floor timed
alternately with it, so that a change of the machine's load between the two does not enter):

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
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from output import emit  # noqa: E402  (beside this script)
from prefmatch.theory import regularizers  # noqa: E402
from prefmatch.tabular.solvers import closed_form, cvxpy_solve  # noqa: E402


def paired_ratio(fn, floor_fn, repeat: int) -> tuple[float, float]:
    """(best time of ``fn`` / best time of ``floor_fn``, best floor time), the two timed
    alternately so that both bests come from the same stretch of the machine's load."""
    best, best_floor = float("inf"), float("inf")
    for _ in range(repeat):
        best_floor = min(best_floor, best_time(floor_fn, 1))
        best = min(best, best_time(fn, 1))
    return best / best_floor, best_floor


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
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    B, n = args.prompts, args.responses
    r = rng.normal(0.0, 1.0, size=(B, n))
    ref_logp = np.log(rng.dirichlet(np.ones(n), size=B))
    refs4 = np.log(rng.dirichlet(np.ones(n), size=(4, B)))
    w4 = (0.4, 0.3, 0.2, 0.1)

    def floor():
        return np.exp(r)

    cases = {
        "kl": (regularizers.kl(beta=0.5), ref_logp),
        "pm": (regularizers.pm(), None),
        "multi_rkl_k4": (regularizers.multi_rkl(weights=w4, beta=0.5), refs4),
    }
    ratios, floors = {}, []
    for k, (reg, q) in cases.items():
        ratios[k], f = paired_ratio(lambda reg=reg, q=q: closed_form(reg, r, q), floor, args.repeat)
        floors.append(f)
    fkl = regularizers.f_divergence("reverse_kl", beta=0.5)
    fkl_ratio, f = paired_ratio(lambda: closed_form(fkl, r, ref_logp), floor, args.repeat)
    floors.append(f)
    mfkl = regularizers.multi_fkl(weights=w4, beta=0.5)
    mfkl_ratio, f = paired_ratio(lambda: closed_form(mfkl, r, refs4), floor, max(1, args.repeat - 2))
    floors.append(f)
    t_exp = min(floors)

    # one 1,000-response problem: closed form vs cvxpy
    r1, ref1 = r[0, :1000], np.exp(ref_logp[0, :1000])
    ref1 = ref1 / ref1.sum()
    reg = regularizers.kl(beta=0.5)
    ref1_logp = np.log(ref1)
    t_cf1 = best_time(lambda: closed_form(reg, r1, ref1_logp), 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        pi_cvx = cvxpy_solve(reg, r1, ref1)
        t_cvx = time.perf_counter() - t0
    diff = float(np.max(np.abs(pi_cvx - np.exp(closed_form(reg, r1, ref1_logp)))))

    out = {
        "closed_form_vs_exp": max(ratios.values()),
        "fkl_vs_exp": fkl_ratio,
        "cvxpy_speedup": t_cvx / t_cf1,
        "cvxpy_max_abs_diff": diff,
        "closed_form_vs_exp_each": ratios,
        "multi_fkl_k4_vs_exp": mfkl_ratio,
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
    return emit(out, args.json, [
        f"size {B} x {n}; np.exp floor {t_exp * 1e3:.1f} ms",
        *[f"  closed form {k:<14} {v:6.2f} x floor" for k, v in out["closed_form_vs_exp_each"].items()],
        f"  forward-KL lambda root   {out['fkl_vs_exp']:6.2f} x floor (multi_fkl K=4: {out['multi_fkl_k4_vs_exp']:.2f} x)",
        f"  cvxpy / closed form (n=1000): {out['cvxpy_speedup']:.0f} x, max |dpi| = {diff:.1e}",
        f"  goals met: {out['goals_met']}"])


if __name__ == "__main__":
    sys.exit(main())
