"""The independent cross-check of every closed form: maximize J on the simplex with cvxpy.

:func:`cvx_optimum` sees only ``reg.cvx_objective`` and ``reg.cvx_constraints`` (the objective
written as a concave cvxpy expression), never ``reg.optimal_logp``; the checks, the tabular
solvers and the tests all call it, with one set of tolerances.  cvxpy is imported inside.
"""
from __future__ import annotations

import warnings

import numpy as np

#: Clarabel tolerances tried in turn (its defaults stop at ~1e-5 on entropy problems; at 1e-12 it
#: sometimes ends "optimal_inaccurate", still ~1e-9 accurate: callers compare with their own tolerance)
TOLERANCES = (1e-12, 1e-10, None)


def cvx_optimum(reg, r, ref=None, *, extra_constraints=None, solver: str = "CLARABEL"):
    """``(π, J(π))`` maximizing ``reg.cvx_objective`` over the simplex for one problem.

    ``r`` [n]; ``ref`` probabilities ([n], or [K, n] for multi-reference regularizers);
    ``extra_constraints(x)`` returns more cvxpy constraints on the variable.
    """
    import cvxpy as cp

    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"cvx_optimum takes one problem (1-D reward), got shape {r.shape}")
    x = cp.Variable(r.shape[0], nonneg=True)
    cons = [cp.sum(x) == 1] + list(reg.cvx_constraints(x, r, ref))
    if extra_constraints:
        cons += list(extra_constraints(x))
    prob = cp.Problem(cp.Maximize(reg.cvx_objective(x, r, ref)), cons)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "optimal_inaccurate": accuracy is measured, not assumed
        for eps in TOLERANCES if solver == "CLARABEL" else (None,):
            kw = {} if eps is None else dict(tol_gap_abs=eps, tol_gap_rel=eps, tol_feas=eps, max_iter=500)
            try:
                prob.solve(solver=solver, **kw)
            except cp.error.SolverError:
                continue
            if prob.status in ("optimal", "optimal_inaccurate") and x.value is not None:
                break
    if prob.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        raise RuntimeError(f"cvxpy status {prob.status}")
    p = np.clip(np.asarray(x.value, dtype=np.float64), 0.0, None)
    return p / p.sum(), float(prob.value)
