"""The adversarial suite: every case of cases.py exits 2 with one line that names the field and
the allowed range, never a traceback; extreme but valid `solve` input gives exact finite answers."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import cases as C  # noqa: E402

from prefmatch.cli import main  # noqa: E402

ALL = C.all_cases()


def run_cli(argv, stdin, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin if stdin is not None else ""))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", ALL, ids=[f"{c.cls}:{c.label}" for c in ALL])
def test_bad_input_gives_one_line(case, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if something were, it lands here
    for name, text in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run_cli(case.argv, case.stdin, capsys, monkeypatch)
    assert code == 2, (code, out, err)
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("prefmatch: error: "), lines[0]
    message = lines[0][len("prefmatch: error: "):]
    assert re.search(case.match, message), (case.match, message)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "a refused command wrote, changed or deleted files"
    if not case.files:
        assert not list(tmp_path.iterdir()), "a refused command created folders"


NUMERIC = C.numeric_problems()


@pytest.mark.parametrize("label,problem,check", NUMERIC, ids=[n[0] for n in NUMERIC])
def test_extreme_valid_input_is_exact_and_finite(label, problem, check, capsys, monkeypatch):
    code, out, err = run_cli(["solve"], json.dumps(problem), capsys, monkeypatch)
    assert code == 0 and err == "", err
    res = json.loads(out)  # allow_nan=False on output: a NaN would not even print
    assert all(math.isfinite(v) for v in (res["value"] if isinstance(res["value"], list) else [res["value"]]))
    check(res)


def test_every_numeric_config_field_declares_its_range():
    """One declared range per field: every int/float field of every stage's config has one."""
    from prefmatch.llm.config import field_range

    missing = []
    for stage, (cls, _, _) in C.config_stages().items():
        for f in dataclasses.fields(cls):
            tp = str(f.type)
            if ("int" in tp or "float" in tp) and "str" not in tp and field_range(f) is None:
                missing.append(f"{stage}.{f.name}")
    assert not missing, f"fields without a declared range: {missing}"


def test_suite_size_and_every_command_covered():
    counts = C.counts_by_class()
    assert sum(counts.values()) >= 150, counts
    assert all(counts[c] > 0 for c in C.CLASSES), counts
    commands = {" ".join(c.argv[:2]) if c.argv[0] == "train" else c.argv[0] for c in ALL}
    for cmd in ("solve", "verify", "bandit", "train sft", "train rm", "train ppo", "model", "eval", "opinion"):
        assert cmd in commands, cmd


def test_fault_cases_exist():
    """Every fault case the docs page counts is a test function in test_faults.py."""
    src = (Path(__file__).parents[1] / "llm" / "test_faults.py").read_text()
    for _, name in C.FAULT_CASES:
        assert f"def {name}(" in src, name


def test_help_shows_the_declared_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["train", "ppo", "--help"])
    out = capsys.readouterr().out
    assert "in (0, inf)" in out and "in [0, 1]" in out
