"""The documentation builds warning-free (``sphinx-build -W``) and covers every check id.

The full build runs the check registry and the fast figures (cached in docs/_generated/ by a
digest of the sources), so a cold build takes about a minute: it is marked ``slow``.  The other
tests are fast and run by default.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

needs_sphinx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None
        for m in ("sphinx", "myst_parser", "sphinx_proof", "sphinxcontrib.bibtex", "furo")),
    reason="docs extra not installed (pip install -e .[docs])",
)


def _ext(name):
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _doc_sources() -> str:
    return "\n".join(p.read_text() for p in DOCS.rglob("*.md") if "_generated" not in p.parts
                     and "_build" not in p.parts)


@needs_sphinx
def test_every_contract_check_id_is_documented_with_its_live_result():
    ids = _ext("prefmatch_checks").CONTRACT_IDS
    text = _doc_sources()
    shown = set(re.findall(r"```\{check-result\}\s+(\S+)", text))
    assert not set(ids) - shown, f"check ids without a {{check-result}} on any page: {set(ids) - shown}"
    assert not shown - set(ids) - _registered_ids(), f"unknown ids in the docs: {shown - set(ids)}"


def _registered_ids() -> set[str]:
    try:
        from prefmatch.theory.checks import load_all
    except Exception:  # noqa: BLE001 - the registry is tested elsewhere
        return set()
    return set(load_all())


@needs_sphinx
def test_every_figure_directive_names_a_known_figure():
    known = {f.name for f in _ext("figures").FIGURES}
    used = set(re.findall(r"```\{prefmatch-figure\}\s+(\S+)", _doc_sources()))
    assert used <= known, used - known
    assert {f.name for f in _ext("figures").FIGURES} <= used, "a figure is made but never shown"


@needs_sphinx
def test_tabular_check_tables_are_generated_from_the_builds_runs(tmp_path):
    """The tabular results page includes every experiment's generated check table; the generator
    writes each check's report as the run gave it, a failing one as FAIL, and counts them."""
    gen, figs = _ext("prefmatch_generate"), _ext("figures")
    page = (DOCS / "results" / "tabular.md").read_text()
    for f in figs.FIGURES:
        assert f"```{{include}} ../_generated/checks/{f.name}.md" in page, f.name
    assert "| check | result |" not in page, "a hand-copied check table on the tabular results page"

    class App:
        confdir = str(tmp_path)
        prefmatch_figures = {
            "bias": {"variant": "full", "args": [], "seconds": 0.5, "result": {"checks": [
                {"id": "bias.a", "passed": True, "detail": "max |Δ| = 1e-16"},
                {"id": "bias.b", "passed": False, "detail": "off by 0.2"}]}},
            "sample-complexity": {"variant": "quick", "args": ["--quick"], "seconds": 2.0,
                                  "result": {"checks": [{"id": "sc.x", "passed": True, "detail": "ok"}]}},
        }

    gen.generate_checks(App())
    bias = (tmp_path / "_generated" / "checks" / "bias.md").read_text()
    assert "| `bias.a` | pass | max \\|Δ\\| = 1e-16 |" in bias and "| `bias.b` | **FAIL** | off by 0.2 |" in bias
    summary = (tmp_path / "_generated" / "checks" / "summary.md").read_text()
    assert "**2 of 3** checks passed; failing: `bias.b`" in summary
    assert "| 1/2 | 0.50 |" in summary and "quick variant (`--quick`" in summary
    assert "No checks in this build: not run." in (tmp_path / "_generated" / "checks" / "collapse.md").read_text()


@needs_sphinx
def test_docstring_pipes_are_escaped_outside_math_and_literals():
    esc = _ext("prefmatch_generate").escape_docstring_pipes
    lines = ["log(|R|/δ) with ``|x|`` and :math:`|z|`", "", ".. math::", "", "   |a - b|", "",
             "after |y|"]
    esc(None, "function", "f", None, {}, lines)
    assert lines[0] == r"log(\|R\|/δ) with ``|x|`` and :math:`|z|`"
    assert lines[4] == "   |a - b|"
    assert lines[6] == r"after \|y\|"


@pytest.mark.slow
@needs_sphinx
def test_docs_build_warning_free(tmp_path):
    """``sphinx-build -W -b html``: exit 0; every internal reference resolves (an unresolved
    {doc}, {ref}, {prf:ref} or {cite} is a warning, hence an error)."""
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    for page in ("index", "checks", "cli", "architecture", "theory/pm_ode",
                 "theory/multi_reference", "tutorials/tabular", "_generated/api/index"):
        assert (out / f"{page}.html").exists(), page
    checks = (out / "checks.html").read_text()
    assert "checks registered" in checks
    assert "prefmatch verify" in (out / "cli.html").read_text()


def _documented_commands():
    """Every `prefmatch ...` command line in the README and the docs (continuations joined)."""
    import shlex

    files = [ROOT / "README.md", ROOT / "examples" / "README.md"] + [
        p for p in DOCS.rglob("*.md") if "_generated" not in p.parts and "_build" not in p.parts]
    cmds = []
    for path in files:
        if not path.is_file():
            continue
        blocks, in_code = [], False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                in_code = not in_code
                blocks.append([])
            elif in_code:
                blocks[-1].append(line)
        for block in blocks:
            for text in _joined(block):
                text = text.removeprefix("$ ").split("  #")[0].split(" # ")[0].strip()
                if text.startswith("prefmatch ") and "|" not in text:
                    cmds.append((path.name, shlex.split(text)[1:]))
    return cmds


def _joined(lines):
    """Shell lines, stripped, with backslash continuations joined into one."""
    buf = ""
    for line in lines:
        text = buf + line.strip()
        if text.endswith("\\"):
            buf = text[:-1] + " "
            continue
        buf = ""
        yield text


def test_documented_commands_parse():
    """The README's and the docs' `prefmatch` commands are accepted by the real parser."""
    from prefmatch.cli import build_parser
    from prefmatch.theory.errors import UsageError

    cmds = _documented_commands()
    assert len(cmds) >= 15
    parser = build_parser()
    bad = []
    for where, argv in cmds:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            if e.code not in (0, None):
                bad.append(f"{where}: prefmatch {' '.join(argv)}")
        except UsageError as e:  # the parser reports usage errors as one line
            bad.append(f"{where}: prefmatch {' '.join(argv)} ({e})")
    assert not bad, "documented commands the CLI rejects:\n" + "\n".join(bad)


def readme_llm_block() -> list[list[str]]:
    """The README's LLM block: the `prefmatch` lines after "# the LLM trainer", up to the blank line."""
    import shlex

    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# the LLM trainer"))
    block = itertools.takewhile(str.strip, lines[start:])  # up to the blank line
    return [shlex.split(text.split("  #")[0])[1:] for text in _joined(x for x in block if not x.startswith("#"))]


@pytest.mark.slow
def test_readme_llm_block_runs_top_to_bottom(tmp_path, monkeypatch, capsys):
    """Every line of the README's LLM block, as written, in a fresh directory: exit code 0."""
    from prefmatch.cli import main

    cmds = readme_llm_block()
    assert [c[:2] for c in cmds][:3] == [["data", "synth"], ["model", "init"], ["train", "sft"]]
    monkeypatch.chdir(tmp_path)
    for argv in cmds:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, (argv, err)
    assert (tmp_path / "runs" / "ppo" / "model" / "config.json").is_file()
    assert (tmp_path / "runs" / "dpo" / "model" / "config.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf" / "ppo"))  # the exported run loads as HF's own
    from prefmatch.llm.cli import reward_trend

    first, last = reward_trend(tmp_path / "runs" / "ppo" / "metrics.jsonl").values()
    assert last > first + 0.5, f"the README's PPO example does not visibly learn: {first:.2f} -> {last:.2f}"


def test_benchmark_tables_are_written_from_the_kept_runs(tmp_path):
    """docs/results/benchmarks_tables.md is what benchmarks/report.py writes from the runs kept
    beside it, and its verdicts follow the goals the scripts printed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_report", DOCS.parent / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    runs = DOCS / "results" / "benchmarks_runs.json"
    page = DOCS / "results" / "benchmarks_tables.md"
    out = tmp_path / "tables.md"
    assert report.main(["--from", str(runs), "--markdown", str(out)]) == 0
    written, kept = out.read_text().splitlines(), page.read_text().splitlines()
    assert written[1:] == kept[1:], "benchmarks_tables.md differs from its runs: rerun benchmarks/report.py"
    data = json.loads(runs.read_text())
    met = all(r["result"]["goals_met"]["cvxpy_speedup"] for r in data["runs"]["solvers.py"])
    row = next(line for line in kept if line.startswith("| cvxpy time"))
    assert row.endswith("| **yes** |") == met


def readme_first_block() -> str:
    """The README's Examples block before the LLM trainer's lines, as a bash script (its
    `. .venv/bin/activate` line left out: the test puts the venv's bin first on PATH)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("```bash\n. .venv/bin/activate") + len("```bash\n"):]
    block = block[:block.index("# the LLM trainer")]
    return "\n".join(line for line in block.splitlines() if not line.startswith(". .venv/bin/activate"))


@pytest.mark.slow
def test_readme_first_block_runs_in_a_fresh_directory(tmp_path):
    """Every line of the README's first Examples block, as written, in an empty directory: exit 0
    (verify, solve through a pipe, the bandit run writing its figure into a folder that is not there)."""
    import os

    script = readme_first_block()
    assert "prefmatch verify" in script and "prefmatch solve" in script and "--plot" in script
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    plots = list(re.findall(r"--plot (\S+)", script))
    assert plots and all((tmp_path / p).is_file() for p in plots), plots
