"""A `prefmatch train` run directory works wherever a model directory is expected."""
from __future__ import annotations

from pathlib import Path

import pytest


def test_run_directory_resolves_to_its_model(tiny):
    from prefmatch.llm.models import ModelLoadError, load_causal_lm
    from prefmatch.llm.tokenizer import load_tokenizer, resolve_model_dir

    run_dir = Path(tiny["sft"]).parent  # .../sft, holding model/, metrics.jsonl, config.yaml
    assert (run_dir / "metrics.jsonl").is_file()
    assert resolve_model_dir(run_dir) == Path(tiny["sft"])
    assert resolve_model_dir(tiny["sft"]) == Path(tiny["sft"])  # a model directory is left alone
    a, b = load_causal_lm(run_dir), load_causal_lm(tiny["sft"])
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and bool((pa == pb).all())
    assert load_tokenizer(run_dir).get_vocab() == load_tokenizer(tiny["sft"]).get_vocab()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_causal_lm(run_dir.parent)  # neither a model nor a run directory


def _checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint as the trainers write one, with tiny tensors (no model is trained)."""
    import json

    import torch
    from safetensors.torch import save_file

    c = folder / f"checkpoint-{step:06d}"
    (c / "policy").mkdir(parents=True)
    (c / "trainer_state.json").write_text(json.dumps({"step": step, "log_history": []}))
    (c / "config.yaml").write_text("data: d.jsonl\nsteps: 9\n")
    torch.save({"state": {0: {"exp_avg": torch.ones(64)}}, "param_groups": []}, c / "optimizer.pt")
    (c / "policy" / "config.json").write_text("{}")
    save_file({"w": torch.arange(256, dtype=torch.float32)}, str(c / "policy" / "model.safetensors"))
    return c


def test_checkpoint_validation_names_what_is_damaged(tmp_path):
    """Each part of a checkpoint is checked without loading a model; the newest valid one is chosen."""
    from prefmatch.llm.config import ConfigError
    from prefmatch.llm.train.loop import checkpoint_problem, find_checkpoint

    ckpts = tmp_path / "run" / "checkpoints"
    c1, c2 = _checkpoint(ckpts, 1), _checkpoint(ckpts, 2)
    (ckpts / "latest").write_text(c2.name)
    assert checkpoint_problem(c1) is None and checkpoint_problem(c2) is None
    damages = [
        (lambda: (c2 / "trainer_state.json").write_text('{"step": "two"}'), "trainer_state.json is corrupt"),
        (lambda: (c2 / "trainer_state.json").write_text('{"step": 7}'), "says step 7"),
        (lambda: (c2 / "config.yaml").write_text("[unclosed"), "config.yaml is missing or corrupt"),
        (lambda: (c2 / "optimizer.pt").write_bytes((c2 / "optimizer.pt").read_bytes()[:-40]), "optimizer.pt: truncated"),
        (lambda: (c2 / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda: (c2 / "policy" / "model.safetensors").write_bytes(
            (c2 / "policy" / "model.safetensors").read_bytes()[:-4]), "model.safetensors: truncated"),
        (lambda: (c2 / "policy" / "model.safetensors").write_bytes(b"\xff" * 8), "truncated header"),
        (lambda: (c2 / "policy" / "config.json").write_text("{"), "policy/config.json is missing or corrupt"),
    ]
    for hurt, problem in damages:
        import shutil

        shutil.rmtree(c2)
        _checkpoint(ckpts, 2)
        hurt()
        assert problem in (checkpoint_problem(c2) or ""), (problem, checkpoint_problem(c2))
        said = []
        assert find_checkpoint(tmp_path / "run", report=said.append) == c1
        assert len(said) == 1 and "checkpoint-000002 is unusable" in said[0] and "checkpoint-000001" in said[0]
        with pytest.raises(ConfigError, match=f"checkpoint {c2} cannot be resumed"):
            find_checkpoint(c2, report=said.append)  # named explicitly: never replaced by another
    shutil.rmtree(c1)
    with pytest.raises(ConfigError, match="no usable checkpoint"):
        find_checkpoint(tmp_path / "run", report=said.append)
