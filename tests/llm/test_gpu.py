"""A few PPO steps on CUDA with bf16 autocast (skipped without a CUDA device)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none found)")]


def test_gpu_ppo_steps_bf16(tmp_path, tiny, ppo_overrides):
    from prefmatch.llm.config import load_config
    from prefmatch.llm.ppo import PPOConfig, PPOTrainer

    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "gpu", steps=3, regularizer="cpm",
                                                         regularizer_params={"alpha": 0.3}))
    trainer = PPOTrainer(cfg, quiet=True)
    assert trainer.acc.device.type == "cuda"
    assert trainer.acc.mixed_precision == ("bf16" if torch.cuda.is_bf16_supported() else "no")
    for _ in range(3):
        m = trainer.step()
        assert all(math.isfinite(m[k]) for k in ("reward", "kl", "value_loss", "policy_loss"))
    assert next(trainer.policy.parameters()).device.type == "cuda"
