"""`prefmatch verify` JSON contract, `--help` listing, and the import-layering rules."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
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


# The rooms and which rooms each may import (lazy imports inside functions included), read from the source.
# Imports flow one way: theory <- tabular <- llm plumbing <- llm.train <- llm.integrations <- llm.battery
# <- the experiments and the command lines.  Within theory, the objects never import their checks.
ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"theory": "prefmatch.theory", "tabular": "prefmatch.tabular", "llm": "prefmatch.llm", "prefmatch": "prefmatch"}
LLM_PLUMBING = tuple(f"prefmatch.llm.{m}" for m in ("config", "data", "tokenizer", "models", "critic", "metrics",
                                                     "sharding", "rundir", "preflight", "export"))
TOP = ("prefmatch.cli", "prefmatch.demo", "prefmatch.__main__", "prefmatch.llm.cli", "prefmatch.llm.opinion_cli")
ROOMS = [  # (room: module prefixes, what it may not import), first match wins
    (("prefmatch.theory.checks", "prefmatch.theory.cli"), ("prefmatch.tabular", "prefmatch.llm", *TOP)),
    (("prefmatch.theory",), ("prefmatch.theory.checks", "prefmatch.theory.cli", "prefmatch.tabular", "prefmatch.llm", *TOP)),
    (("prefmatch.tabular",), ("prefmatch.llm", *TOP)),
    (LLM_PLUMBING, ("prefmatch.llm.train", "prefmatch.llm.battery", "prefmatch.llm.integrations", "prefmatch.llm.opinion",
                    "prefmatch.llm.multiref_experiment", *TOP)),
    (("prefmatch.llm.train",), ("prefmatch.llm.battery", "prefmatch.llm.integrations", "prefmatch.llm.opinion",
                                "prefmatch.llm.multiref_experiment", *TOP)),
    (("prefmatch.llm.integrations",), ("prefmatch.llm.battery", "prefmatch.llm.opinion", "prefmatch.llm.multiref_experiment", *TOP)),
    (("prefmatch.llm.battery",), ("prefmatch.llm.opinion", "prefmatch.llm.multiref_experiment", *TOP)),
    (("prefmatch.llm.opinion", "prefmatch.llm.multiref_experiment"), TOP),
]


def _module_imports():
    import ast

    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mod = ".".join([package, *parts])
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                yield mod, f"{path.relative_to(ROOT)}:{node.lineno}", [n for n in names if n.startswith("prefmatch")]


def _under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_rooms_import_one_way():
    bad, rooms_seen = [], set()
    for mod, where, names in _module_imports():
        room = next(((prefixes, banned) for prefixes, banned in ROOMS if _under(mod, prefixes)), None)
        if room is None:
            continue
        rooms_seen.add(room[0])
        # `from prefmatch.llm import rundir` names the package and the module: judge the module
        target = [n for n in names if not any(o != n and o.startswith(n + ".") for o in names)]
        bad += [f"{where}: {mod} imports {n}" for n in target if _under(n, room[1]) and not _under(n, room[0])]
    assert not bad, "imports against the direction of the rooms:\n" + "\n".join(bad)
    assert rooms_seen == {prefixes for prefixes, _ in ROOMS}  # every room has modules (a renamed one would vanish)


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
