"""Every experiment runs with passing checks; JSON schema; figures."""
import json
import math

import pytest

from prefmatch.tabular.experiments import EXPERIMENTS, bootstrap_slope, loglog_slope, run_experiment

SMALL = {
    "bt-mle": dict(trials=60, n_list=(100, 1000, 10000, 100000)),
    "sample-complexity": dict(quick=True, trials=200, n_boot=100),
}


def _no_nan(obj):
    if isinstance(obj, float):
        assert math.isfinite(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _no_nan(v)
    elif isinstance(obj, list):
        for v in obj:
            _no_nan(v)


@pytest.fixture(scope="module")
def results():
    return {name: run_experiment(name, seed=0, **SMALL.get(name, {})) for name in EXPERIMENTS}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_checks_pass_and_schema(results, name):
    res = results[name]
    assert list(res) == ["experiment", "params", "series", "checks"]
    assert res["experiment"] == name
    assert res["checks"], "every experiment has checks"
    for c in res["checks"]:
        assert set(c) == {"id", "passed", "detail"}
        assert c["passed"], c
    json.loads(json.dumps(res, allow_nan=False))
    _no_nan({k: v for k, v in res["series"].items() if k != "pm_divergence_on_M"})


def test_sample_complexity_slopes_and_bounds(results):
    s = results["sample-complexity"]["series"]
    assert set(s["slopes"]) == {"rkl_optimality", "rkl_suboptimality", "fkl_optimality", "fkl_suboptimality"}
    assert s["bound_holds"] is True
    for v in s["slopes"].values():
        assert set(v) == {"slope", "ci"} and v["ci"][0] <= v["slope"] <= v["ci"][1]
    # predicted rates: RKL optimality ≈ −1/2, RKL sub-optimality ≈ −1 (tolerance ±0.25 at quick sizes)
    assert abs(s["slopes"]["rkl_optimality"]["slope"] + 0.5) <= 0.25
    assert abs(s["slopes"]["rkl_suboptimality"]["slope"] + 1.0) <= 0.25


def test_slope_helpers():
    import numpy as np

    n = np.array([10, 100, 1000])
    assert abs(loglog_slope(n, 3.0 / n) + 1) <= 1e-12
    rng = np.random.default_rng(0)
    samples = (1 / np.sqrt(n))[:, None] * rng.uniform(0.5, 1.5, size=(3, 500))
    slope, ci = bootstrap_slope(rng, n, samples, lambda x, axis: np.quantile(x, 0.9, axis=axis), n_boot=200)
    assert ci[0] <= -0.5 <= ci[1] and abs(slope + 0.5) < 0.05


def test_figures(tmp_path, results):
    from prefmatch.tabular.plots import plot

    for name, res in results.items():
        path = plot(res, str(tmp_path / f"{name}.png"))
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
