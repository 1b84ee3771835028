"""benchmarks/ppo_step.py runs and reports honestly when the TRL environment is missing."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ppo_step.py"


def test_benchmark_json_without_trl_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # its shared helpers (trl_timing) sit beside it
    spec = importlib.util.spec_from_file_location("ppo_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--json", "--steps", "1", "--batch", "4", "--mini-batch", "2", "--gen-len", "4", "--repeats", "1",
                     "--threads", "1", "--no-grpo", "--trl-python", str(tmp_path / "missing" / "python")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"ours_tokens_per_s", "baseline", "baseline_tokens_per_s", "ratio", "model_time_fraction"} <= set(out)
    assert out["ours_tokens_per_s"] > 0 and 0 < out["model_time_fraction"] <= 1
    assert out["ours_separate_critic_tokens_per_s"] > 0 and out["ratio_separate_critic"] is None
    assert "not available" in out["baseline"]
    assert out["baseline_tokens_per_s"] is None and out["ratio"] is None
