"""The separate critic (``critic: reward_model``): initialised from the reward model, trained by the
unchanged PPO step, saved beside the policy, resumed to the uninterrupted run's weights."""
from __future__ import annotations

import math
import shutil

import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.config import ConfigError, load_config  # noqa: E402


def test_critic_starts_at_the_reward_model_and_trains(tiny, tmp_path, ppo_overrides):
    from prefmatch.llm.critic import CRITIC_DIR
    from prefmatch.llm.models import load_reward_model, reward_scores
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "c", critic="reward_model", steps=3))
    trainer = PPOTrainer(cfg, quiet=True)
    policy = trainer.policy
    assert not hasattr(policy, "value_head") and policy.critic is not trainer.rm
    # before any update the critic's value at the last token is the reward model's raw score
    rm = load_reward_model(tiny["rm"])
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        _, values = policy(ids, mask)
        expected = reward_scores(rm, ids, mask, normalize=False)
    assert torch.allclose(values[torch.arange(2), torch.tensor([3, 2])], expected, atol=1e-5)
    before = {k: v.clone() for k, v in policy.critic.state_dict().items()}
    for _ in range(3):
        m = trainer.step()
        assert all(math.isfinite(m[k]) for k in ("value_loss", "policy_loss", "reward"))
    assert any(not torch.equal(before[k], v) for k, v in policy.critic.state_dict().items())  # the critic trains
    out = trainer.save_final()
    assert (tmp_path / "c" / "model" / CRITIC_DIR / "config.json").is_file()
    saved = load_reward_model(f"{out}/{CRITIC_DIR}")
    assert all(torch.allclose(saved.state_dict()[k], v) for k, v in policy.critic.state_dict().items())


def test_critic_checkpoint_resume_gives_the_uninterrupted_weights(tiny, tmp_path, ppo_overrides):
    from prefmatch.llm.critic import CRITIC_DIR
    from prefmatch.llm.models import load_reward_model
    from prefmatch.llm.train.ppo import PPOConfig, train_ppo

    def cfg(out):
        return load_config(PPOConfig, overrides=ppo_overrides(out, critic="reward_model", steps=4, save_every=2))

    train_ppo(cfg(tmp_path / "full"), quiet=True)
    ckpt = tmp_path / "ckpt2"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "checkpoint-000002", ckpt)
    train_ppo(cfg(tmp_path / "resumed"), quiet=True, resume=str(ckpt))
    a = load_reward_model(tmp_path / "full" / "model" / CRITIC_DIR).state_dict()
    b = load_reward_model(tmp_path / "resumed" / "model" / CRITIC_DIR).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_critic_needs_a_reward_model(tiny, tmp_path, ppo_overrides):
    from prefmatch.llm.train.ppo import PPOConfig

    with pytest.raises(ConfigError, match="critic"):
        load_config(PPOConfig, overrides={**ppo_overrides(tmp_path / "x", critic="reward_model"),
                                          "reward_model": "", "reward_fn": "prefmatch.llm.battery.ppo:n_prefixes"}).check()
