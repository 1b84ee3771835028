"""The built wheel, installed into a fresh virtual environment, works outside the repository.

``make test-wheel`` (slow: about a minute).  The wheel is built with pip from the repository (the
build must print no setuptools warning), installed with ``--no-deps`` into a new venv that sees the
project venv's third-party packages through a plain path line (torch is not downloaded again; the
project venv's editable hook is *not* processed, so ``import prefmatch`` can only find the wheel),
then ``verify``, ``solve`` and a tiny ``train sft`` run from a directory outside the repository.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what setuptools prints when the configuration is wrong or outdated (pip's own notes about its index are not)
BUILD_WARNINGS = re.compile(r"(would be ignored|Setuptools\w*Warning|BuildBackendWarning|_DeprecatedConfig|"
                            r"is absent from the .packages. configuration)")


def _run(cmd, cwd, env=None, stdin=None, timeout=600):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} -> {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    # built from a copy of the sources: no build/ or egg-info left by an earlier build can enter the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "_build", "_generated", ".cache", "out", "*.egg-info", "__pycache__",
        ".pytest_cache", ".hypothesis"))
    dist = tmp_path / "dist"
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", dist, src], cwd=tmp_path)
    log = build.stdout + build.stderr
    assert not BUILD_WARNINGS.findall(log), "the build warns:\n" + "\n".join(
        line for line in log.splitlines() if BUILD_WARNINGS.search(line))
    (wheel,) = dist.glob("prefmatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("prefmatch/llm/configs/tiny_sft.yaml", "prefmatch/theory/paper_items.toml",
                 "prefmatch/llm/integrations/trl.py", "prefmatch/llm/opinion/pipeline.py"):
        assert want in names, want
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "LICENSE not in the wheel"
    assert not any(n.startswith(("tests/", "docs/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    fresh_site = Path(_run([py, "-c", "import site; print(site.getsitepackages()[0])"], cwd=tmp_path).stdout.strip())
    # a plain path line: the project venv's packages become importable, its .pth files (the editable
    # install of this repository among them) are not run
    (fresh_site / "_project_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = _run([py, "-c", "import prefmatch; print(prefmatch.__file__)"], cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where
    cli = venv / "bin" / "prefmatch"

    checks = json.loads(_run([cli, "verify", "--only", "pm.*", "--json"], cwd=work, env=env).stdout)
    assert checks and all(c["passed"] for c in checks), [c["id"] for c in checks if not c["passed"]]
    sol = json.loads(_run([cli, "solve", "--json"], cwd=work, env=env,
                          stdin='{"regularizer": "pm", "reward": [1, 2, 3], "beta": 1}').stdout)
    assert sol, "solve printed nothing"

    _run([cli, "data", "synth", "--n", "48", "--out", "prefs.jsonl"], cwd=work, env=env)
    _run([cli, "model", "init", "--size", "tiny", "--out", "base", "--corpus", "prefs.jsonl"], cwd=work, env=env)
    res = json.loads(_run([cli, "train", "sft", "--config", "tiny_sft", "--model", "base", "--data", "prefs.jsonl",
                           "--steps", "2", "--out", "runs/sft", "--json"], cwd=work, env=env).stdout)
    assert res["steps"] == 2
    assert (work / "runs" / "sft" / "model" / "config.json").is_file()
