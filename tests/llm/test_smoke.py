"""End to end through the CLI: model init → SFT → RM → PPO (3 steps) → eval."""
from __future__ import annotations

import json
import math

import pytest

from prefmatch.cli import main

PPO_KEYS = {"reward", "regularizer", "kl", "entropy", "clipfrac", "approx_kl", "value_loss",
            "explained_variance", "tokens_per_s"}


def run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_smoke_pipeline_cli(tmp_path, tiny, capsys):
    data = tiny["data"]
    init = run_json(capsys, ["model", "init", "--size", "tiny", "--out", str(tmp_path / "base"), "--corpus", data,
                             "--json"])
    assert 1e5 < init["parameters"] < 1e6
    lens = ["--max-prompt-len", "32", "--max-response-len", "8"]
    sft = run_json(capsys, ["train", "sft", "--data", data, "--model", init["out"], "--out", str(tmp_path / "sft"),
                            "--epochs", "1", "--json", *lens])
    assert math.isfinite(sft["loss"]) and sft["steps"] > 0
    rm = run_json(capsys, ["train", "rm", "--data", data, "--model", sft["out"], "--out", str(tmp_path / "rm"),
                           "--json", "--normalize", "true", *lens])
    assert 0.0 <= rm["eval_accuracy"] <= 1.0
    ppo = run_json(capsys, ["train", "ppo", "--data", data, "--policy", sft["out"], "--reward-model", rm["out"],
                            "--out", str(tmp_path / "ppo"), "--steps", "3", "--batch-size", "4",
                            "--regularizer", "cpm", "--regularizer-params", "{alpha: 0.3}", "--beta", "0.5",
                            "--json", *lens])
    assert ppo["steps"] == 3
    lines = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    for rec in lines:
        assert PPO_KEYS <= set(rec)
        assert all(math.isfinite(rec[k]) for k in PPO_KEYS)
    ev = run_json(capsys, ["eval", "--policy", ppo["out"], "--reward", rm["out"], "--ref", sft["out"],
                           "--data", data, "--split", "rm", "--n-prompts", "6", "--max-new-tokens", "6", "--json"])
    for k in ("pm_divergence", "perplexity", "entropy", "length", "kl"):
        assert math.isfinite(ev[k]), k
    assert ev["pm_divergence"] >= 0 and ev["perplexity"] >= 1 and 1 <= ev["length"] <= 6
    assert len(ev["instance_pm_divergence"]) == 6
    # the same eval prints a table without --json
    assert main(["eval", "--policy", ppo["out"], "--reward", rm["out"], "--ref", sft["out"], "--data", data,
                 "--n-prompts", "2", "--max-new-tokens", "4"]) == 0
    assert "pm_divergence" in capsys.readouterr().out


def test_smoke_llama_arch_programmatic(tmp_path, tiny):
    """The Llama-style tiny model goes through SFT and PPO with the same code."""
    from prefmatch.llm.config import load_config
    from prefmatch.llm.models import init_model
    from prefmatch.llm.train.ppo import PPOConfig, train_ppo
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    TINY = tiny["lens"]

    base = init_model(tmp_path / "llama", "tiny", arch="llama")
    sft = train_sft(load_config(SFTConfig, overrides=dict(model=str(base), data=tiny["data"], out=str(tmp_path / "s"),
                                                          steps=2, **TINY)), quiet=True)
    rm = train_reward_model(load_config(RMConfig, overrides=dict(model=sft["out"], data=tiny["data"],
                                                                 out=str(tmp_path / "r"), steps=2, **TINY)),
                            quiet=True)
    res = train_ppo(load_config(PPOConfig, overrides=dict(policy=sft["out"], reward_model=rm["out"], data=tiny["data"],
                                                          out=str(tmp_path / "p"), steps=2, batch_size=4,
                                                          regularizer="pm", **TINY)), quiet=True)
    assert res["steps"] == 2 and math.isfinite(res["final_metrics"]["reward"])


@pytest.mark.parametrize("size,hidden,layers,heads", [("tiny", 64, 2, 2), ("medium", 128, 3, 4), ("small", 256, 4, 4)])
def test_init_model_sizes(tmp_path, size, hidden, layers, heads):
    """Each named size writes the model it documents (the opinion benchmark's `size` picks among them)."""
    from transformers import AutoConfig

    from prefmatch.llm.models import SIZES, init_model

    assert size in SIZES
    cfg = AutoConfig.from_pretrained(init_model(tmp_path / size, size, texts=["tea or coffee"] * 4, vocab_size=300))
    assert (cfg.n_embd, cfg.n_layer, cfg.n_head) == (hidden, layers, heads)
