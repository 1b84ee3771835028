"""Precision, learning-rate schedules and gradient accumulation of the four trainers.

* An fp16-saved checkpoint (as facebook/opt-1.3b and Llama-2 ship) trains in float32 master
  weights: SFT, the reward model, PPO and DPO run 5 finite steps from it and match the run from
  the same weights saved in float32 to 1e-5 relative (the fp16 weights are exactly representable in
  float32, so the two runs see identical numbers; only the file's dtype differs).
* The lr logged at each step equals an independent closed form of the schedule (constant, linear,
  cosine, with warmup), and a resumed DPO run continues it.
* The gradient of ``gradient_accumulation_steps`` micro-batches equals the large batch's gradient.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.config import load_config  # noqa: E402


def _steps(out):
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()
            if x.strip() and '"final"' not in x]


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """The tiny base, SFT and reward models saved in fp16 and, rounded the same way, in fp32."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("precision")
    dirs = {}
    for name, cls in (("base", AutoModelForCausalLM), ("sft", AutoModelForCausalLM),
                      ("rm", AutoModelForSequenceClassification)):
        kw = {"num_labels": 1} if name == "rm" else {}
        m = cls.from_pretrained(tiny[name], dtype=torch.float32, **kw)
        tok = AutoTokenizer.from_pretrained(tiny[name])
        for dt, tag in ((torch.float16, "16"), (torch.float32, "32")):
            d = root / f"{name}{tag}"
            m.half().to(dt).save_pretrained(d)  # fp16-rounded weights, stored as fp16 or fp32
            tok.save_pretrained(d)
            dirs[name + tag] = str(d)
        src = Path(tiny[name]) / "reward_normalization.json"
        if src.is_file():
            for tag in ("16", "32"):
                shutil.copy(src, Path(dirs[name + tag]) / src.name)
    return dirs


def test_fp16_checkpoint_loads_in_float32_and_frozen_models_in_the_compute_dtype(saved):
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.models import frozen_dtype, load_causal_lm, load_reward_model

    # transformers 5 reads dtype=None as "auto": the checkpoint's fp16 (what used to be trained)
    assert AutoModelForCausalLM.from_pretrained(saved["sft16"]).dtype == torch.float16
    assert load_causal_lm(saved["sft16"]).dtype == torch.float32
    assert load_reward_model(saved["rm16"]).dtype == torch.float32
    assert load_causal_lm(saved["sft16"], dtype=frozen_dtype("bf16")).dtype == torch.bfloat16
    assert frozen_dtype("no") == torch.float32 and frozen_dtype("fp16") == torch.float16


def test_fp16_weights_in_the_optimizer_are_refused_naming_the_dtype(saved):
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.train.common import CommonConfig
    from prefmatch.llm.train.sft import make_optimizer
    from prefmatch.llm.train.loop import TrainingError, low_precision_hint

    m = AutoModelForCausalLM.from_pretrained(saved["sft16"])
    with pytest.raises(TrainingError, match="float16.*float32"):
        make_optimizer(m, CommonConfig(data="x"))
    assert "float16" in low_precision_hint(list(m.parameters()))
    assert low_precision_hint([torch.nn.Parameter(torch.zeros(2))]) is None


def _run(stage, saved, tiny, out, tag):
    from prefmatch.llm.train.dpo import DPOConfig, train_dpo
    from prefmatch.llm.train.ppo import PPOConfig, train_ppo
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    common = dict(data=tiny["data"], out=str(out), lr=3e-3, seed=0, log_every=1, **tiny["lens"])
    if stage == "sft":
        return train_sft(load_config(SFTConfig, overrides=dict(model=saved["base" + tag], split="all",
                                                               batch_size=8, steps=5, **common)), quiet=True)
    if stage == "rm":
        return train_reward_model(load_config(RMConfig, overrides=dict(model=saved["sft" + tag], split="all",
                                                                       batch_size=8, steps=5, **common)), quiet=True)
    if stage == "dpo":
        return train_dpo(load_config(DPOConfig, overrides=dict(model=saved["sft" + tag], split="all", batch_size=4,
                                                               steps=5, eval_fraction=0.0, **common)), quiet=True)
    return train_ppo(load_config(PPOConfig, overrides=dict(policy=saved["sft" + tag], reward_model=saved["rm" + tag],
                                                           steps=5, batch_size=4, mini_batch_size=2,
                                                           **{**common, "lr": 1e-3})), quiet=True)


@pytest.mark.parametrize("stage", ["sft", "rm", "ppo", "dpo"])
def test_fp16_checkpoint_trains_finite_and_matches_the_fp32_checkpoint(stage, saved, tiny, tmp_path):
    _run(stage, saved, tiny, tmp_path / "fp16", "16")
    _run(stage, saved, tiny, tmp_path / "fp32", "32")
    a, b = _steps(tmp_path / "fp16"), _steps(tmp_path / "fp32")
    assert len(a) == len(b) == 5
    keys = ("loss",) if stage != "ppo" else ("policy_loss", "value_loss", "reward", "kl", "entropy")
    for ra, rb in zip(a, b):
        for k in keys:
            assert math.isfinite(ra[k]), (stage, ra)
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (stage, k, ra, rb)
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "fp16" / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())


# ------------------------------------------------------------------ schedules
def _lr_closed_form(kind, k, total, warmup, lr):
    """lr of the (k+1)-th optimizer step, written from the definitions (not transformers' code)."""
    if k < warmup:
        return lr * k / warmup
    if kind == "constant":
        return lr
    frac = (k - warmup) / (total - warmup)
    if kind == "linear":
        return lr * (1 - frac)
    return lr * 0.5 * (1 + math.cos(math.pi * frac))


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_dpo_lr_at_each_step_and_after_resume(kind, tiny, tmp_path):
    from prefmatch.llm.train.dpo import DPOConfig, train_dpo

    def cfg(out, **kw):
        return load_config(DPOConfig, overrides=dict(
            data=tiny["data"], model=tiny["sft"], out=str(out), batch_size=4, lr=1e-3, seed=0, split="all",
            eval_fraction=0.0, steps=6, lr_scheduler=kind, warmup_steps=2, save_every=3, **tiny["lens"], **kw))

    train_dpo(cfg(tmp_path / "full"), quiet=True)
    lrs = [r["lr"] for r in _steps(tmp_path / "full")]
    assert lrs == pytest.approx([_lr_closed_form(kind, k, 6, 2, 1e-3) for k in range(6)], rel=1e-9, abs=1e-15)
    ckpt = tmp_path / "ckpt3"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "checkpoint-000003", ckpt)
    train_dpo(cfg(tmp_path / "resumed"), quiet=True, resume=str(ckpt))
    resumed = _steps(tmp_path / "resumed")
    assert [r["step"] for r in resumed][-3:] == [4, 5, 6]
    assert [r["lr"] for r in resumed][-3:] == pytest.approx(lrs[3:], rel=1e-9)
    assert [r["loss"] for r in resumed][-3:] == pytest.approx([r["loss"] for r in _steps(tmp_path / "full")][3:],
                                                              rel=1e-6)


def test_sft_and_ppo_follow_the_cosine_schedule(tiny, tmp_path, ppo_overrides):
    from prefmatch.llm.train.ppo import PPOConfig, train_ppo
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    train_sft(load_config(SFTConfig, overrides=dict(model=tiny["base"], data=tiny["data"], out=str(tmp_path / "sft"),
                                                    split="all", batch_size=8, steps=5, lr=1e-3,
                                                    lr_scheduler="cosine", warmup_steps=1, **tiny["lens"])), quiet=True)
    assert [r["lr"] for r in _steps(tmp_path / "sft")] == pytest.approx(
        [_lr_closed_form("cosine", k, 5, 1, 1e-3) for k in range(5)], rel=1e-9, abs=1e-15)
    train_ppo(load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "ppo", steps=4, lr_scheduler="linear",
                                                             warmup_steps=1)), quiet=True)
    assert [r["lr"] for r in _steps(tmp_path / "ppo")] == pytest.approx(
        [_lr_closed_form("linear", k, 4, 1, 1e-3) for k in range(4)], rel=1e-9, abs=1e-15)


def test_warmup_longer_than_the_run_is_a_config_error(tiny, tmp_path):
    from prefmatch.llm.config import ConfigError
    from prefmatch.llm.train.dpo import DPOConfig, train_dpo

    with pytest.raises(ConfigError, match="warmup_steps"):
        train_dpo(load_config(DPOConfig, overrides=dict(
            data=tiny["data"], model=tiny["sft"], out=str(tmp_path / "x"), steps=2, warmup_steps=2,
            lr_scheduler="cosine", **tiny["lens"])), quiet=True)


# ------------------------------------------------------------------ gradient accumulation
class _Recorder:
    """An AdamW that records the gradients it is stepped with."""

    grads: list = []

    @classmethod
    def make(cls, model, cfg):
        class Rec(torch.optim.AdamW):
            def step(self, closure=None):
                cls.grads.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
                return super().step(closure)

        return Rec([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)


def _first_grads(monkeypatch, module, run):
    _Recorder.grads = []
    monkeypatch.setattr(module, "make_optimizer", _Recorder.make)
    run()
    return _Recorder.grads[0]


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_accumulated_gradient_equals_the_large_batch_gradient(stage, tiny, tmp_path, monkeypatch):
    import prefmatch.llm.train.dpo as dpo
    import prefmatch.llm.train.sft as sft
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model

    def run(bs, k, out):
        common = dict(data=tiny["data"], out=str(tmp_path / out), split="all", batch_size=bs, lr=1e-3, seed=0,
                      max_grad_norm=0.0, gradient_accumulation_steps=k, **tiny["lens"])
        if stage == "sft":
            return lambda: sft.train_sft(load_config(sft.SFTConfig, overrides=dict(model=tiny["base"], steps=1,
                                                                                   **common)), quiet=True)
        if stage == "rm":
            return lambda: train_reward_model(load_config(RMConfig, overrides=dict(
                model=tiny["sft"], steps=1, eval_fraction=0.0, **common)), quiet=True)
        return lambda: dpo.train_dpo(load_config(dpo.DPOConfig, overrides=dict(
            model=tiny["sft"], steps=1, eval_fraction=0.0, **common)), quiet=True)

    module = dpo if stage == "dpo" else sft
    big = _first_grads(monkeypatch, module, run(8, 1, "big"))
    acc = _first_grads(monkeypatch, module, run(4, 2, "acc"))
    small = _first_grads(monkeypatch, module, run(4, 1, "small"))
    assert len(big) == len(acc)
    scale = max(float(g.abs().max()) for g in big)
    assert scale > 0
    for a, b in zip(acc, big):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * scale)
    # and one micro-batch alone is not the large batch (the comparison can fail)
    assert max(float((a - b).abs().max()) for a, b in zip(small, big)) > 1e-3 * scale
