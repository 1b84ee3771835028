"""`solve` at every β down to the smallest subnormal: where r/β (or 1/β) leaves the float range,
the exact optimum of every regularizer is the one-hot policy on the best reward it may use (never
the reference by underflow, never a refusal), and the value is that reward.

Which responses a regularizer may use: the reference's support for KL, cPM, multi-reference
reverse KL and the f-divergences with f'(∞) = ∞ (KL, χ²); every response for PM, max-ent, the
generalized PM links and the f-divergences with a finite f'(∞) (reverse KL, Hellinger, JS), which
penalize mass off the support only linearly in β.  The test states the rule; the package's
solvers do not read it from here.
"""
from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prefmatch.theory.cli import solve_problem
from prefmatch.theory.regularizers import F_DIVERGENCES, REGISTRY

SMALLEST_SUBNORMAL = 5e-324

#: (name, extra fields, whether the optimum stays on the reference's support)
CASES = [("kl", {}, True), ("cpm", {"alpha": 0.3}, True), ("cpm", {"alpha": 0.3, "level": "token"}, True),
         ("pm", {}, False), ("maxent", {}, False), ("multi_rkl", {}, True), ("multi_fkl", {}, False),
         ("generalized_pm", {"link": "exp"}, False), ("generalized_pm", {"link": "power"}, False)]
CASES += [("fdiv", {"f": f}, math.isinf(spec.fprime_inf)) for f, spec in F_DIVERGENCES.items()]


def solve(problem: dict) -> dict:
    """``prefmatch solve``'s answer (its parsing, solver and finiteness check; JSON without NaN)."""
    return json.loads(json.dumps(solve_problem(json.dumps(problem)), allow_nan=False))


def problem(name: str, extra: dict, reward, ref, beta: float) -> dict:
    p = {"regularizer": name, "reward": reward, "beta": beta, **extra}
    if REGISTRY[name].refs == "one":
        p["ref"] = ref
    elif REGISTRY[name].refs == "K":
        p["refs"] = [ref, list(np.full(len(ref), 1.0 / len(ref)))]
        p["weights"] = [0.5, 0.5]
    return p


@st.composite
def instances(draw):
    n = draw(st.integers(2, 6))
    reward = draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n, unique=True))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e300]))
    weights = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n).filter(lambda w: sum(w) > 0))
    ref = [w / sum(weights) for w in weights]
    exponent = draw(st.floats(-323.3, -150.0))
    beta = draw(st.sampled_from([SMALLEST_SUBNORMAL, 10.0 ** exponent]))
    return [float(r) * scale for r in reward], ref, beta


@settings(max_examples=60, deadline=None)
@given(instances())
def test_the_optimum_is_one_hot_on_the_best_usable_reward(inst):
    reward, ref, beta = inst
    for name, extra, on_support in CASES:
        full = name in ("multi_rkl", "multi_fkl")  # their second reference is uniform: full support
        usable = [i for i in range(len(reward)) if ref[i] > 0 or not on_support or full and name == "multi_fkl"]
        if name == "multi_rkl":  # the geometric mixture's support: where both references are positive
            usable = [i for i in range(len(reward)) if ref[i] > 0]
        top = max(usable, key=lambda i: reward[i])
        res = solve(problem(name, extra, reward, ref, beta))
        pi = np.asarray(res["policy"])
        assert np.all(np.isfinite(pi)) and abs(pi.sum() - 1) <= 1e-12, (name, extra, pi)
        assert pi[top] >= 1 - 1e-12, (name, extra, beta, reward, ref, pi)
        assert math.isclose(res["value"], reward[top], rel_tol=1e-12, abs_tol=1e-12), (name, extra, res["value"])


def test_the_cases_of_the_issue():
    """The inputs the reliability issue found: the reference returned, or a refusal."""
    chi2 = solve({"regularizer": "fdiv", "f": "chi2", "reward": [5, 1, 0], "ref": [0, 0.5, 0.5], "beta": 1e-300})
    assert chi2["policy"] == [0.0, 1.0, 0.0]
    kl = solve({"regularizer": "fdiv", "f": "kl", "reward": [5, 1, 0], "ref": [0, 0.5, 0.5], "beta": 2e-300})
    assert kl["policy"] == [0.0, 1.0, 0.0]
    for p in ({"regularizer": "kl", "reward": [5, 1, 0], "ref": [0.2, 0.3, 0.5], "beta": SMALLEST_SUBNORMAL},
              {"regularizer": "pm", "reward": [5, 1, 0], "beta": 1e-310},
              {"regularizer": "maxent", "reward": [1e308, -1e308, 3], "beta": 1e-300}):
        assert solve(p)["policy"] == [1.0, 0.0, 0.0], p


def test_ties_at_the_top_split_as_the_exact_optimum():
    """Tied best rewards: the optimum ∝ exp(b/β) on them, e.g. ∝ π_ref for KL, at any β (b/β is read
    without multiplying by β, so no β·log π_ref underflows)."""
    for beta in (1e-3, 1e-300, SMALLEST_SUBNORMAL):
        kl = solve({"regularizer": "kl", "reward": [5, 5, 0], "ref": [0.2, 0.3, 0.5], "beta": beta})
        assert np.allclose(kl["policy"], [0.4, 0.6, 0.0], rtol=1e-12, atol=1e-300 if beta < 1e-3 else 1e-2)
        cpm = solve({"regularizer": "cpm", "alpha": 0.3, "reward": [5, 5, 0], "ref": [0.2, 0.3, 0.5], "beta": beta})
        # y0 lies off M = {π_ref ≥ 0.3}: weight π_ref(y0) = 0.2 against 1 for y1
        assert np.allclose(cpm["policy"][:2], [1 / 6, 5 / 6], rtol=1e-12), cpm
