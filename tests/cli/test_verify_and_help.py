"""`prefmatch verify` JSON contract, `--help` listing, and the import-layering rules."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prefmatch.cli import build_parser, main
from prefmatch.theory import checks

REQUIRED_IDS = [
    "pm.ode.derivation", "pm.ode.general_solution", "pm.ode.uniqueness", "pm.sufficiency",
    "pm.response_dependent", "pm.kl_rlhf_not_pm", "pm.generalized_g", "pm.examples",
    "pm.robust_dual", "pm.conditional", "rlhf.kl_optimum", "rlhf.bias", "rlhf.collapse",
    "fdiv.optimum", "fdiv.only_kl_is_exp", "bt.mle_recovers_reward",
    "mref.escort_identity", "mref.rkl_optimum", "mref.rkl_mrpo_lower_bound",
    "mref.rkl_holder_upper_bound", "mref.softmax_sensitivity", "mref.fkl_identity",
    "mref.fkl_optimum", "mref.bounds_monotone", "mref.dpo_objectives",
    "dpo.implicit_reward", "dpo.population_minimizer", "dpo.gradient_at_optimum", "dpo.partial_coverage",
    "dpo.simpo_relation",
]


def test_every_required_check_is_registered():
    assert set(REQUIRED_IDS) == set(checks.CONTRACT_IDS)
    registered = set(checks.load_all())
    missing = [i for i in REQUIRED_IDS if i not in registered]
    assert not missing, f"checks not registered: {missing}"


def test_verify_json_contract_and_all_pass(capsys):
    code = main(["verify", "--json"])
    out = capsys.readouterr().out
    results = json.loads(out)
    assert isinstance(results, list) and results
    for r in results:
        assert set(r) == {"id", "statement", "source", "method", "passed", "detail"}
        assert r["method"] in ("sympy", "numeric")
        assert isinstance(r["passed"], bool) and r["statement"] and r["source"]
    failed = [r["id"] + ": " + r["detail"][:200] for r in results if not r["passed"]]
    assert not failed, failed
    assert code == 0


def test_verify_exit_1_on_failure(capsys, monkeypatch):
    monkeypatch.setitem(
        checks.REGISTRY,
        "zz.always_fails",
        checks.Check("zz.always_fails", "a failing check", "test", "numeric", lambda: (False, "forced")),
    )
    code = main(["verify", "--only", "zz.*", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 1 and res[0]["passed"] is False


def test_verify_crashing_check_is_a_failure_not_a_traceback(capsys, monkeypatch):
    def boom():
        raise RuntimeError("kaboom")

    monkeypatch.setitem(checks.REGISTRY, "zz.crash", checks.Check("zz.crash", "s", "t", "numeric", boom))
    code = main(["verify", "--only", "zz.crash"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out and "kaboom" in out


def test_verify_only_matching_nothing_exit_2(capsys):
    assert main(["verify", "--only", "no.such.check"]) == 2
    assert "matches no check" in capsys.readouterr().err


def test_help_lists_subcommands_one_line_each():
    res = subprocess.run([sys.executable, "-m", "prefmatch", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("verify", "solve"):
        assert f"    {cmd} " in res.stdout
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, _choice in sub.choices.items():
        helps = [a.help for a in sub._choices_actions if a.dest == name]
        assert helps and helps[0] and "\n" not in helps[0], name


def test_theory_import_is_torch_free_and_layered():
    code = (
        "import sys, prefmatch.theory.regularizers, prefmatch.theory.distributions, prefmatch.theory.checks;"
        "bad = [m for m in ('torch', 'transformers', 'cvxpy', 'prefmatch.tabular', 'prefmatch.llm') if m in sys.modules];"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


@pytest.mark.parametrize("mod", ["prefmatch.tabular", "prefmatch.tabular.solvers"])
def test_tabular_never_imports_llm(mod):
    code = f"import sys, importlib; importlib.import_module('{mod}'); print('prefmatch.llm' in sys.modules or 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def _walk(parser, path=()):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_subcommand_help_renders(capsys):
    """`prefmatch ... --help` renders for every (nested) subcommand (e.g. no stray % in help)."""
    paths = [p for p, _ in _walk(build_parser())]
    assert len(paths) > 5
    for path in paths:
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0, path
    capsys.readouterr()
