"""PPO trainer: every regularizer runs, logged quantities are consistent, learning happens (slow)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.config import load_config  # noqa: E402
from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer, train_ppo  # noqa: E402


@pytest.mark.parametrize("reg,params,mode,n_refs", [
    ("pm", {}, "reward", 1),
    ("cpm", {"alpha": 0.3, "level": "sequence"}, "reward", 1),
    ("maxent", {}, "reward", 1),
    ("multi_rkl", {"weights": [0.4, 0.6]}, "reward", 2),
    ("fdiv", {"f": "chi2"}, "auto", 1),
])
def test_each_regularizer_runs_a_ppo_step(tmp_path, tiny, ppo_overrides, reg, params, mode, n_refs):
    refs = [tiny["sft"], tiny["base"]][:n_refs]
    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / reg, regularizer=reg, regularizer_params=params,
                                                         regularizer_mode=mode, ref=refs, steps=1))
    m = PPOTrainer(cfg, quiet=True).step()
    for k in ("reward", "regularizer", "kl", "entropy", "value_loss", "policy_loss", "tokens_per_s"):
        assert math.isfinite(m[k]), k
    if n_refs == 2:
        assert "kl_ref1" in m


def test_kl_regularizer_metric_is_minus_beta_times_kl(tmp_path, tiny, ppo_overrides):
    """With k1 and the reference = initial policy, Σ_t ψ_t = −β Σ_t (log π − log π_ref) per sequence."""
    beta = 0.37
    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "k1", regularizer="kl", beta=beta, steps=2))
    trainer = PPOTrainer(cfg, quiet=True)
    first = trainer.step()
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)  # policy = reference before any update
    second = trainer.step()
    assert abs(second["kl_k1"]) > 0 and second["kl"] >= 0  # kl is Σ_t k3 (never negative), kl_k1 is Σ_t (l − q)
    assert second["regularizer"] == pytest.approx(-beta * second["kl_k1"], rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_ppo_increases_reward_slow(tmp_path, tiny, ppo_overrides):
    """Start from a policy fine-tuned on the *rejected* answers: PPO must raise the reward."""
    import json

    from prefmatch.llm.train.sft import SFTConfig, train_sft

    bad = train_sft(load_config(SFTConfig, overrides=dict(model=tiny["base"], data=tiny["data"], split="all",
                                                          out=str(tmp_path / "bad"), response_key="rejected",
                                                          epochs=4, lr=3e-3, **tiny["lens"])), quiet=True)
    res = train_ppo(load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "learn", policy=bad["out"], steps=40,
                                                                   batch_size=8, mini_batch_size=4, ppo_epochs=2,
                                                                   lr=1e-3, beta=0.05)), quiet=True)
    rewards = [json.loads(x)["reward"] for x in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    assert res["steps"] == 40
    assert sum(rewards[-8:]) / 8 > rewards[0] + 0.5, rewards  # rewards[0]: rollout of the initial policy


def test_rule_based_reward_fn_from_the_cli(tmp_path, tiny, monkeypatch, capsys):
    """`prefmatch train ppo --reward-fn module:function` instead of a reward model; the rule sees
    prompt ids, response ids and the response mask, and its score is what PPO logs as the reward."""
    import json

    from prefmatch.cli import main

    (tmp_path / "prefmatch_test_rules.py").write_text(
        "import torch\n"
        "def length(prompt_ids, response_ids, response_mask):\n"
        "    assert prompt_ids.shape[0] == response_ids.shape[0] == response_mask.shape[0]\n"
        "    return response_mask.sum(-1).float() / response_mask.shape[1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "rule"
    argv = ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"], "--reward-fn",
            "prefmatch_test_rules:length", "--out", str(out), "--steps", "1", "--batch_size", "4",
            "--mini_batch_size", "2", "--max_response_len", "8", "--max_prompt_len", "32", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < rec["reward"] <= 1 and rec["reward"] == pytest.approx(rec["response_length"] / 8)
    capsys.readouterr()
    for spec, msg in [("nocolon", "expected 'package.module:function'"), ("no_such_mod_xyz:f", "cannot import"),
                      ("prefmatch_test_rules:missing", "has no function 'missing'")]:
        assert main(argv[:7] + [spec] + argv[8:]) == 2
        err = capsys.readouterr().err
        assert msg in err and "reward_fn" in err and "Traceback" not in err
