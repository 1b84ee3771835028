"""One registry drives every entry point: a regularizer defined and registered here — with no
other edit anywhere — is in `prefmatch solve`, in `train ppo --help`, in the regularizer battery
and in the trainer's convergence battery."""
from __future__ import annotations

import importlib.util
import inspect
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from prefmatch.cli import main
from prefmatch.theory import regularizers as R


@dataclass(frozen=True, kw_only=True)
class PartialKL(R.AffineLogRegularizer):
    """ψ = −β log π + βγ log π_ref: max-ent at γ = 0, KL-RLHF at γ = 1 (a test regularizer)."""

    name: ClassVar[str] = "partial_kl"
    gamma: float = 0.5
    beta: float = 1.0
    params: ClassVar = (R.Param("gamma", 0.5, lo=0.0, hi=1.0, lo_open=False, help="weight of log pi_ref"),
                        R.beta_param())
    refs: ClassVar[str] = "one"
    examples: ClassVar = {"partial_kl": {"gamma": 0.4, "beta": 0.8}}
    battery_cases: ClassVar = ({"gamma": 0.4},)

    def coefficients(self, ref_logp=None, like=None):
        return self.beta, self.beta * self.gamma * ref_logp

    def psi_sympy(self, p, q):
        import sympy as sp

        return sp.nsimplify(self.beta) * (-sp.log(p) + sp.nsimplify(self.gamma) * sp.log(q))


@pytest.fixture
def registered():
    R.register(PartialKL)
    yield PartialKL
    R.REGISTRY.pop(PartialKL.name)


def test_registered_regularizer_is_solved_by_prefmatch_solve(registered, monkeypatch, capsys):
    from prefmatch.theory.cvx import cvx_optimum

    prob = {"regularizer": "partial_kl", "reward": [1.0, 2.0, 0.5], "ref": [0.2, 0.3, 0.5], "gamma": 0.4, "beta": 0.5}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(prob)))
    assert main(["solve"]) == 0
    policy = np.array(json.loads(capsys.readouterr().out)["policy"])
    want, _ = cvx_optimum(PartialKL(gamma=0.4, beta=0.5), prob["reward"], np.array(prob["ref"]))
    np.testing.assert_allclose(policy, want, atol=1e-6)
    # its declared range is enforced, with one line naming the field
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**prob, "gamma": 1.5})))
    assert main(["solve"]) == 2
    assert "gamma must be in [0, 1], got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    assert "partial_kl: gamma: in [0, 1]" in capsys.readouterr().out


def test_registered_regularizer_is_in_train_ppo_help(registered, capsys):
    with pytest.raises(SystemExit):
        main(["train", "ppo", "--help"])
    out = capsys.readouterr().out
    assert "partial_kl" in out and "gamma" in out


def _battery_tests():
    path = Path(__file__).parent / "theory" / "test_regularizer_battery.py"
    spec = importlib.util.spec_from_file_location("_regularizer_battery", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [f for n, f in vars(mod).items() if n.startswith("test_") and list(inspect.signature(f).parameters) == ["name"]]


def test_registered_regularizer_passes_the_regularizer_battery(registered):
    """The shared battery (optimum vs cvxpy, KKT, sympy, token rewards, numpy vs torch, extremes)
    runs over ALL_REGULARIZERS, which now holds the new class's examples."""
    assert "partial_kl" in R.ALL_REGULARIZERS
    tests = _battery_tests()
    assert len(tests) >= 5
    for test in tests:
        test("partial_kl")


def test_registered_regularizer_is_in_the_convergence_battery(registered):
    pytest.importorskip("torch")
    from prefmatch.llm.battery import ppo as B

    assert ("partial_kl", {"gamma": 0.4}) in B.regularizer_cases()
    assert any(c.regularizer == "partial_kl" for c in B.all_cases())
    row = B.run_case(B.Case("partial_kl", {"gamma": 0.4}, "auto", True, 2))
    assert row["accepted"] and row["placement"] == "reward" and row["tv"] <= B.TV_TOL, row
