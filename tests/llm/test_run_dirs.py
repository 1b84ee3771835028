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
