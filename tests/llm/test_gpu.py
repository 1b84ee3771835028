"""A few PPO steps on CUDA with bf16 autocast (skipped without a CUDA device)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none found)")]


def test_gpu_ppo_steps_bf16(tmp_path, tiny, ppo_overrides):
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "gpu", steps=3, regularizer="cpm",
                                                         regularizer_params={"alpha": 0.3}))
    trainer = PPOTrainer(cfg, quiet=True)
    assert trainer.acc.device.type == "cuda"
    assert trainer.acc.mixed_precision == ("bf16" if torch.cuda.is_bf16_supported() else "no")
    for _ in range(3):
        m = trainer.step()
        assert all(math.isfinite(m[k]) for k in ("reward", "kl", "value_loss", "policy_loss"))
    assert next(trainer.policy.parameters()).device.type == "cuda"


def test_gpu_check_on_cuda_trains_in_fp32_master_weights_with_bf16_frozen_models(tmp_path):
    """The prepared GPU check (benchmarks/gpu_check.py) at a reduced size: every stage finite."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "gpu_check", Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    assert gc.main(["--size", "gpu", "--steps", "2", "--batch", "8", "--gen-len", "16", "--no-grpo",
                    "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["setup"]["cuda"] and 1e8 < r["setup"]["parameters"] < 1e9
    assert all(row["finite"] for row in r["rows"])
