"""Data loading, the seeded split, configs, and clear errors on bad input."""
from __future__ import annotations

import json

import pytest
from cli_errors import one_line_error

from prefmatch.llm.config import ConfigError, load_config, parse_overrides
from prefmatch.llm.data import DataError, load_records, load_split, split_records, synthetic_preferences, write_jsonl


def test_jsonl_and_datasets_dir_give_the_same_records(tmp_path):
    datasets = pytest.importorskip("datasets")
    recs = synthetic_preferences(10, seed=4)
    write_jsonl(recs, tmp_path / "d.jsonl")
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(recs)}).save_to_disk(str(tmp_path / "dd"))
    assert load_records(tmp_path / "d.jsonl") == recs
    assert load_records(tmp_path / "ds") == recs
    assert load_records(tmp_path / "dd") == recs


def test_split_is_seeded_disjoint_and_20_40_40():
    recs = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(50)]
    a = split_records(recs, seed=7)
    b = split_records(recs, seed=7)
    c = split_records(recs, seed=8)
    assert a == b and a != c
    assert [len(a[k]) for k in ("sft", "rm", "rl")] == [10, 20, 20]
    ids = [r["prompt"] for k in a for r in a[k]]
    assert sorted(ids) == sorted(r["prompt"] for r in recs)


@pytest.mark.parametrize("content,match", [
    ('{"prompt": "a", "chosen": "b"}\n', "line 1: missing key"),
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json\n', "line 2: not valid JSON"),
    ('[1, 2]\n', "expected a JSON object"),
    ('{"prompt": "a", "chosen": 3, "rejected": "c"}\n', "must be strings"),
    ("\n\n", "empty"),
])
def test_bad_data_files_raise_clear_errors(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        load_records(p)


def test_missing_file_and_empty_split(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_records(tmp_path / "nope.jsonl")
    write_jsonl(synthetic_preferences(2), tmp_path / "two.jsonl")
    with pytest.raises(DataError, match="part of the split is empty"):
        load_split(tmp_path / "two.jsonl", "sft")


def test_config_yaml_overrides_and_errors(tmp_path):
    from prefmatch.llm.train.ppo import PPOConfig

    y = tmp_path / "c.yaml"
    y.write_text("data: d.jsonl\npolicy: p\nreward_model: r\nbeta: 0.5\nregularizer: cpm\nregularizer_params: {alpha: 0.1}\n")
    cfg = load_config(PPOConfig, y, ["--beta", "0.25", "--steps=7", "--ref", "a,b", "--lora"])
    assert (cfg.beta, cfg.steps, cfg.ref, cfg.lora, cfg.regularizer_params) == (0.25, 7, ["a", "b"], True,
                                                                                {"alpha": 0.1})
    assert parse_overrides(["--max-new-tokens", "3"]) == {"max_new_tokens": "3"}
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(PPOConfig, y, {"bogus": 1})
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(PPOConfig, y, {"steps": "many"})
    with pytest.raises(ConfigError, match="regularizer: 'xx' is not allowed"):
        load_config(PPOConfig, y, {"regularizer": "xx"})
    with pytest.raises(ConfigError, match="policy: required"):
        load_config(PPOConfig, None, {"data": "d", "reward_model": "r"})


@pytest.mark.parametrize("overrides, message", [
    ({"regularizer": "kl", "regularizer_params": {"estimator": "k3"}, "regularizer_mode": "reward"},
     "regularizer_mode: kl with estimator k3 as a reward only gives a biased policy gradient"),
    ({"regularizer": "kl", "regularizer_params": {"estimator": "k2"}}, "k2 reaches the wrong optimum"),
    ({"regularizer": "kl", "regularizer_params": {"estimator": "k3"}},
     "regularizer_params.estimator: must be k1 for PPO, got 'k3'"),
    ({"regularizer": "fdiv", "regularizer_params": {"f": "js"}, "regularizer_mode": "reward"}, "use regularizer_mode: loss"),
    ({"regularizer": "pm", "regularizer_params": {"beta": 0.5}}, "regularizer_params.beta: 0.5 conflicts with beta: 0.1"),
    ({"regularizer": "maxent", "regularizer_params": {"tau": 0.5}}, "unexpected.*tau"),
    ({"top_p": 0.9}, "top_p: must be 1"),
    ({"top_k": 50}, "top_k: must be 0"),
    ({"min_new_tokens": 3}, "min_new_tokens: must be 0"),
    ({"gamma": 0.99}, "gamma: must be 1"),
    ({"lam": 1.5}, r"lam must be a number in \[0, 1\]"),
    ({"reward_fn": "mod:fn"}, "reward_model, reward_fn: give exactly one"),
])
def test_ppo_config_refuses_what_cannot_reach_the_optimum(overrides, message):
    """Refused when the config is built, with one line naming the field and what works."""
    from prefmatch.llm.train.ppo import PPOConfig

    with pytest.raises(ConfigError, match=message):
        load_config(PPOConfig, None, {"data": "d", "policy": "p", "reward_model": "r", **overrides})


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out (out/ppo) lands here
    err = one_line_error(capsys, ["train", "sft", "--data", str(tmp_path / "none.jsonl"), "--model", tiny["base"]])
    assert "not found" in err
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    assert "not valid YAML" in one_line_error(capsys, ["train", "rm", "--config", str(tmp_path / "bad.yaml")])
    assert "must be one of" in one_line_error(capsys, ["model", "init", "--size", "huge", "--out", str(tmp_path)])
    err = one_line_error(capsys, ["train", "ppo", "--data", tiny["data"], "--policy", str(tmp_path / "nomodel"),
                                  "--reward-model", tiny["rm"]])
    assert "nomodel" in err
    err = one_line_error(capsys, ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"],
                                  "--reward-model", tiny["rm"], "--regularizer", "fdiv",
                                  "--regularizer-params", "{f: chi2}", "--regularizer-mode", "reward"])
    assert "regularizer_mode: loss" in err
    err = one_line_error(capsys, ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"],
                                  "--reward-model", tiny["rm"], "--regularizer", "multi_rkl"])
    assert "needs 2 reference" in err


def test_reward_model_with_other_tokenizer_is_refused(tmp_path, tiny, capsys):
    from prefmatch.llm.models import init_model

    other = init_model(tmp_path / "other", "tiny", texts=["completely different corpus " * 20], vocab_size=300)
    err = one_line_error(capsys, ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"],
                                  "--reward-model", str(other), "--out", str(tmp_path / "run")])
    assert "tokenizer" in err and "does not match" in err
    err = one_line_error(capsys, ["eval", "--policy", tiny["sft"], "--reward", str(other), "--ref", tiny["sft"],
                                  "--data", tiny["data"]])
    assert "does not match" in err


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path, tiny, ppo_overrides, monkeypatch):
    import hashlib

    import torch

    from prefmatch.llm.train import ppo
    from prefmatch.llm.train.loop import TrainingError

    cfg = load_config(ppo.PPOConfig, overrides=ppo_overrides(tmp_path / "run", steps=3, save_every=1))
    trainer = ppo.PPOTrainer(cfg, quiet=True)
    trainer.step()
    ckpt = trainer.save_checkpoint()

    def digest(d):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / "run").rglob("*"))
                if p.is_file()}

    before = digest(ckpt)
    weights = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    monkeypatch.setattr(ppo, "clipped_value_loss", lambda *a, **k: torch.tensor(float("nan")))  # fault injection
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 .*checkpoint-000001 left untouched"):
        trainer.step()
    assert digest(ckpt) == before
    after = trainer.policy.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # no optimizer step with the NaN loss


def test_metrics_jsonl_and_resolved_config_written(tmp_path, tiny, ppo_overrides):
    from prefmatch.llm.train.ppo import PPOConfig, train_ppo

    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "r", steps=2, regularizer="fdiv",
                                                         regularizer_params={"f": "chi2"}))
    train_ppo(cfg, quiet=True)
    recs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    again = load_config(PPOConfig, tmp_path / "r" / "config.yaml")
    assert again == cfg
    from prefmatch.llm.models import policy_with_value_class

    assert policy_with_value_class().from_pretrained(tmp_path / "r" / "model") is not None


@pytest.mark.parametrize("name", ["tiny_sft", "tiny_rm", "tiny_ppo"])
def test_packaged_configs_load_by_name(name):
    import importlib

    stage = read_yaml_stage(name)
    mod, cls = {"sft": ("sft", "SFTConfig"), "rm": ("reward_model", "RMConfig"), "ppo": ("ppo", "PPOConfig")}[stage]
    cls = getattr(importlib.import_module(f"prefmatch.llm.train.{mod}"), cls)
    req = {"data": "d.jsonl", "model": "m"} if stage != "ppo" else {"data": "d", "policy": "p", "reward_model": "r"}
    cfg = load_config(cls, name, req)
    assert cfg.data == "d.jsonl" or cfg.data == "d"


def read_yaml_stage(name):
    from prefmatch.llm.config import read_yaml

    return read_yaml(name)["stage"]
