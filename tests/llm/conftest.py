"""Shared fixtures: one tiny model, data file, SFT model and reward model per test session."""
from __future__ import annotations

import functools

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = dict(max_prompt_len=32, max_response_len=8)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of a tiny GPT-2 (≈0.17 M parameters), its data, an SFT model and a reward model."""
    from prefmatch.llm.config import load_config
    from prefmatch.llm.data import synthetic_preferences, write_jsonl
    from prefmatch.llm.models import init_model
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    root = tmp_path_factory.mktemp("tiny")
    recs = synthetic_preferences(60, seed=1)
    data = write_jsonl(recs, root / "data.jsonl")
    base = init_model(root / "base", "tiny", texts=[r["prompt"] + r["chosen"] + r["rejected"] for r in recs])
    sft = train_sft(load_config(SFTConfig, overrides=dict(model=str(base), data=str(data), out=str(root / "sft"),
                                                          lr=3e-3, epochs=2, batch_size=8, **TINY)), quiet=True)
    rm = train_reward_model(load_config(RMConfig, overrides=dict(
        model=sft["out"], data=str(data), out=str(root / "rm"), lr=3e-3, epochs=2, batch_size=8, **TINY)), quiet=True)
    return {"root": root, "data": str(data), "base": str(base), "sft": sft["out"], "rm": rm["out"],
            "records": recs, "lens": dict(TINY)}


@pytest.fixture
def ppo_overrides(tiny):
    """``ppo_overrides(out, **kw)``: PPO config overrides for the tiny models."""
    return functools.partial(_ppo_overrides, tiny)


def _ppo_overrides(tiny, out, **kw):
    base = dict(data=tiny["data"], policy=tiny["sft"], reward_model=tiny["rm"], out=str(out), steps=2,
                batch_size=4, mini_batch_size=2, lr=1e-3, seed=0, **TINY)
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread per process for a module of tiny tabular tensors (the convergence batteries,
    as their tables' runs use), so that pytest-xdist's workers do not oversubscribe the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
