"""`prefmatch solve` contract: JSON in/out, exit 2 with one line on stderr for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from prefmatch.cli import main
from prefmatch.theory import regularizers as R


def run(problem, capsys):
    text = problem if isinstance(problem, str) else json.dumps(problem)
    import io

    old = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        code = main(["solve"])
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def test_entry_point_subprocess():
    prob = {"regularizer": "kl", "reward": [1, 2, 3], "ref": [0.2, 0.3, 0.5], "beta": 0.5}
    res = subprocess.run(
        [sys.executable, "-m", "prefmatch", "solve"], input=json.dumps(prob), capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    expect = np.array([0.2, 0.3, 0.5]) * np.exp(np.array([1, 2, 3]) / 0.5)
    np.testing.assert_allclose(out["policy"], expect / expect.sum(), rtol=1e-12)
    # value = β log Σ π_ref e^{r/β} (Gibbs variational principle), computed independently
    assert abs(out["value"] - 0.5 * np.log(expect.sum())) < 1e-12


@pytest.mark.parametrize(
    "problem",
    [
        {"regularizer": "kl", "reward": [[1, 2], [0, 5]], "ref": [[0.5, 0.5], [0.1, 0.9]], "beta": 2.0},
        {"regularizer": "pm", "reward": [0.3, -1.0, 2.0], "c1": 0.5, "c2": [0.1, 0.2, 0.3]},
        {"regularizer": "cpm", "reward": [1, 2, 3], "ref": [0.05, 0.15, 0.8], "alpha": 0.1},
        {"regularizer": "maxent", "reward": [1, 2, 3], "beta": 0.3},
        {"regularizer": "pm", "reward": [0.3, -1.0, 2.0], "c1": 0.5, "c2": 0.2, "beta": 0.25},
        {"regularizer": "cpm", "reward": [1, 2, 3], "ref": [0.05, 0.15, 0.8], "alpha": 0.1, "beta": 3.0},
        {"regularizer": "fdiv", "f": "chi2", "reward": [1, 2, 3], "ref": [0.2, 0.3, 0.5], "beta": 0.7},
        {"regularizer": "multi_rkl", "reward": [1, 2, 3], "refs": [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], "weights": [0.3, 0.7], "beta": 1.5},
        {"regularizer": "multi_fkl", "reward": [[1, 2, 3]], "refs": [[[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]], "weights": [0.3, 0.7], "beta": 1.5},
    ],
)
def test_solve_matches_library_and_beats_random(problem, capsys):
    code, out, err = run(problem, capsys)
    assert code == 0, err
    res = json.loads(out)
    pol = np.array(res["policy"])
    assert np.allclose(pol.sum(-1), 1.0)
    # the reported value is J at the reported policy, and no random policy does better
    params = {k: (tuple(v) if k == "weights" else v) for k, v in problem.items() if k not in ("regularizer", "reward", "ref", "refs")}
    reg = R.get(problem["regularizer"], **params)
    r = np.array(problem["reward"], float)
    if "refs" in problem:
        ref = np.array(problem["refs"], float)
        ref = ref if r.ndim == 1 else np.moveaxis(ref, 1, 0)
    else:
        ref = np.array(problem["ref"], float) if "ref" in problem else None
    v = reg.objective(pol, r, ref)
    np.testing.assert_allclose(v, res["value"], rtol=1e-9, atol=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.dirichlet(np.ones(r.shape[-1]), size=r.shape[:-1])
        assert np.all(reg.objective(q, r, ref) <= np.asarray(res["value"]) + 1e-9)


def test_zero_probability_is_null_logp(capsys):
    code, out, _ = run({"regularizer": "kl", "reward": [1e4, -1e4, 0], "ref": [0.0, 0.5, 0.5], "beta": 1e-4}, capsys)
    assert code == 0
    res = json.loads(out)
    assert res["policy"][0] == 0.0 and res["logp"][0] is None
    assert "NaN" not in out and "Infinity" not in out


BAD = [
    ("not json", "{regularizer: kl", "not valid JSON"),
    ("not an object", "[1, 2]", "JSON object"),
    ("unknown regularizer", {"regularizer": "tv", "reward": [1]}, "regularizer must be one of"),
    ("missing regularizer", {"reward": [1]}, "missing field 'regularizer'"),
    ("missing reward", {"regularizer": "pm"}, "missing field 'reward'"),
    ("missing weights", {"regularizer": "multi_rkl", "reward": [1, 2], "refs": [[0.5, 0.5], [0.2, 0.8]]}, "missing field 'weights'"),
    ("missing ref", {"regularizer": "kl", "reward": [1, 2], "beta": 1}, "missing field 'ref'"),
    ("negative prob", {"regularizer": "kl", "reward": [1, 2], "ref": [-0.5, 1.5], "beta": 1}, "ref must hold probabilities >= 0"),
    ("not summing", {"regularizer": "kl", "reward": [1, 2], "ref": [0.5, 0.6], "beta": 1}, "ref rows must sum to 1"),
    ("nan reward", '{"regularizer": "kl", "reward": [1, NaN], "ref": [0.5, 0.5], "beta": 1}', r"reward\[1\] must be a finite number"),
    ("inf reward", '{"regularizer": "pm", "reward": [1, Infinity]}', r"reward\[1\] must be a finite number"),
    ("beta zero", {"regularizer": "kl", "reward": [1, 2], "ref": [0.5, 0.5], "beta": 0}, "beta must be > 0"),
    ("beta negative", {"regularizer": "fdiv", "f": "js", "reward": [1, 2], "ref": [0.5, 0.5], "beta": -1}, "beta must be > 0"),
    ("alpha zero", {"regularizer": "cpm", "reward": [1, 2], "ref": [0.5, 0.5], "alpha": 0}, r"alpha must be in \(0, 1\]"),
    ("alpha big", {"regularizer": "cpm", "reward": [1, 2], "ref": [0.5, 0.5], "alpha": 1.01}, r"alpha must be in \(0, 1\]"),
    ("length mismatch", {"regularizer": "kl", "reward": [1, 2, 3], "ref": [0.5, 0.5], "beta": 1}, "must match"),
    ("ragged", {"regularizer": "pm", "reward": [[1, 2], [3]]}, "rectangular"),
    ("unknown f", {"regularizer": "fdiv", "f": "tv", "reward": [1, 2], "ref": [0.5, 0.5], "beta": 1}, "f must be one of"),
    ("weights off simplex", {"regularizer": "multi_rkl", "reward": [1, 2], "refs": [[0.5, 0.5], [0.5, 0.5]], "weights": [0.5, 0.6], "beta": 1}, "weights must be non-negative and sum to 1"),
    ("K zero", {"regularizer": "multi_rkl", "reward": [1, 2], "refs": [], "weights": [], "beta": 1}, "refs must be a non-empty"),
    ("refs unequal", {"regularizer": "multi_fkl", "reward": [1, 2], "refs": [[0.5, 0.5], [1.0]], "weights": [0.5, 0.5], "beta": 1}, "rectangular"),
    ("weights count", {"regularizer": "multi_fkl", "reward": [1, 2], "refs": [[0.5, 0.5], [0.2, 0.8]], "weights": [1.0], "beta": 1}, "one entry per reference"),
    ("disjoint supports", {"regularizer": "multi_rkl", "reward": [1, 2], "refs": [[1.0, 0.0], [0.0, 1.0]], "weights": [0.5, 0.5], "beta": 1}, "supports do not intersect"),
    ("beta string", {"regularizer": "maxent", "reward": [1, 2], "beta": "big"}, "beta must be a finite number"),
    ("tau is not a field", {"regularizer": "maxent", "reward": [1, 2], "tau": 0.3}, "unknown field 'tau'"),
    ("field does not apply", {"regularizer": "pm", "reward": [1, 2], "ref": [0.5, 0.5]}, "field 'ref' does not apply to regularizer 'pm'"),
    ("alpha for kl", {"regularizer": "kl", "reward": [1, 2], "ref": [0.5, 0.5], "beta": 1, "alpha": 0.3}, "field 'alpha' does not apply"),
    ("typo field", {"regularizer": "kl", "reward": [1, 2], "ref": [0.5, 0.5], "bta": 1}, "unknown field 'bta'"),
]


@pytest.mark.parametrize("label, problem, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line(label, problem, message, capsys):
    code, out, err = run(problem, capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    import re

    assert re.search(message, lines[0]), lines[0]


def test_beta_defaults_to_the_registry_default(capsys):
    """An omitted β is the class's declared default (1), the same as ``kl()`` in Python."""
    code, out, err = run({"regularizer": "kl", "reward": [1, 2], "ref": [0.5, 0.5]}, capsys)
    assert code == 0, err
    np.testing.assert_allclose(json.loads(out)["policy"], np.exp(R.kl().optimal_logp(np.array([1.0, 2.0]), np.log([0.5, 0.5]))))


def test_pm_beta_is_the_divergence_coefficient(capsys):
    """{"regularizer": "pm", "reward": [1, 2], "beta": 0.1} is softmax(r/β), not softmax(r)."""
    code, out, err = run({"regularizer": "pm", "reward": [1, 2], "beta": 0.1}, capsys)
    assert code == 0, err
    z = np.array([1.0, 2.0]) / 0.1
    np.testing.assert_allclose(json.loads(out)["policy"], np.exp(z - np.logaddexp.reduce(z)), rtol=1e-12)


def test_missing_input_file(capsys):
    code = main(["solve", "--input", "/nonexistent/problem.json"])
    err = capsys.readouterr().err
    assert code == 2 and "--input" in err and "cannot read" in err
