"""The prepared GPU check runs on CPU through the same code path (tiny model, float32): SFT → reward
model → PPO (KL, cPM) → TRL's GRPO, and writes the table the docs' GPU page reads."""
from __future__ import annotations

import importlib.util
import json
import sys
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def _module():
    if str(ROOT / "benchmarks") not in sys.path:  # its shared helpers (trl_timing) sit beside it
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_runs_on_cpu_and_writes_the_docs_table(tmp_path):
    pytest.importorskip("trl")
    gc = _module()
    md, js = tmp_path / "gpu_check.md", tmp_path / "gpu_check.json"
    assert gc.main(["--cpu", "--size", "tiny", "--steps", "1", "--batch", "4", "--gen-len", "4",
                    "--markdown", str(md), "--json", str(js), "--work", str(tmp_path / "w")]) == 0
    r = json.loads(js.read_text())
    assert [row["stage"] for row in r["rows"]] == ["sft", "rm", "ppo (kl)", "ppo (cpm)", "trl grpo"]
    for row in r["rows"]:
        assert row["finite"] and row["throughput"] > 0 and row["peak_mib"] > 0 and row["steps"] >= 1
    for row in r["rows"][2:4]:
        assert 0 < row["model_time_fraction"] <= 1
    assert math.isclose(r["grpo_ratio"], r["rows"][2]["throughput"] / r["rows"][4]["throughput"])
    table = [line for line in md.read_text().splitlines() if line.startswith("| ")]
    assert md.read_text().startswith("<!-- written by `python benchmarks/gpu_check.py")
    assert table[0].startswith("| stage | steps | s / step | throughput |") and len(table) == 6
    assert "TRL GRPO tokens/s: **" in md.read_text()
    # the base model was saved in bf16 and trained in float32 master weights
    from safetensors.torch import load_file

    assert {str(v.dtype) for v in load_file(str(tmp_path / "w" / "base" / "model.safetensors")).values()} == {"torch.bfloat16"}
    assert {str(v.dtype) for v in load_file(str(tmp_path / "w" / "sft" / "model" / "model.safetensors")).values()} \
        == {"torch.float32"}


def test_gpu_check_rejects_bad_sizes(capsys):
    gc = _module()
    with pytest.raises(SystemExit) as e:
        gc.main(["--cpu", "--steps", "-1"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err
