"""``prefmatch export``: a run's model loads with the standard Hugging Face classes, and a normalised
reward model gives its normalised score through ``AutoModelForSequenceClassification`` itself."""
from __future__ import annotations

import json

import pytest

from prefmatch.cli import main

TINY = dict(max_prompt_len=32, max_response_len=8)  # the session fixture's lengths (tiny['lens'])


def _pairs(tiny, n=6):
    from prefmatch.llm.train.reward_model import pair_batch
    from prefmatch.llm.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny["rm"])
    return pair_batch(tok, tiny["records"][:n], TINY["max_prompt_len"], TINY["max_response_len"])


@pytest.mark.parametrize("normalize_std", [False, True])
def test_exported_reward_model_scores_normalized_with_the_standard_class(tiny, tmp_path, capsys, normalize_std):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefmatch.llm.config import load_config
    from prefmatch.llm.models import load_reward_model, reward_scores
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model

    run = tmp_path / "rm"
    res = train_reward_model(load_config(RMConfig, overrides=dict(
        model=tiny["sft"], data=tiny["data"], out=str(run), lr=3e-3, epochs=1, batch_size=8, normalize=True,
        normalize_std=normalize_std, **TINY)), quiet=True)
    norm = res["reward_normalization"]
    assert abs(norm["mean"]) > 1e-3 and (norm["std"] != 1.0) == normalize_std  # something to fold

    # the run directory itself is not what HF loads; the export is
    with pytest.raises(Exception):  # noqa: B017 - what HF raises for a foreign folder differs across versions
        AutoModelForSequenceClassification.from_pretrained(str(run))
    assert main(["export", str(run), "--out", str(tmp_path / "hf"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["normalization_folded"] and out["class"] == "AutoModelForSequenceClassification"
    assert not (tmp_path / "hf" / "reward_normalization.json").exists()

    ids, mask = _pairs(tiny)
    std_model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    AutoTokenizer.from_pretrained(str(tmp_path / "hf"))  # the tokenizer travels with it
    with torch.no_grad():
        got = std_model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        original = load_reward_model(run)
        raw = reward_scores(original, ids, mask, normalize=False)
        want = (raw - norm["mean"]) / norm["std"]  # independent of the export: the sidecar's numbers
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    assert not torch.allclose(got, raw, atol=1e-2)  # the fold changed the scores
    # prefmatch's own loader reads the export as already normalised (no sidecar: no second shift)
    with torch.no_grad():
        again = reward_scores(load_reward_model(tmp_path / "hf"), ids, mask, normalize=True)
    assert torch.allclose(again, want, atol=1e-4)


def test_exported_policy_loads_with_automodel_and_refuses_a_second_write(tiny, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.models import load_causal_lm

    run = tiny["root"] / "sft"  # a `prefmatch train sft` run directory
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out
    ids = torch.tensor([[5, 9, 11, 40]])
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))(input_ids=ids).logits
        b = load_causal_lm(run)(input_ids=ids).logits
    assert torch.equal(a, b)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "hf"), "--overwrite"]) == 0
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "RUN: no model in" in capsys.readouterr().err


def test_eval_default_split_is_the_reward_models_held_out_pairs(tiny, capsys):
    """`eval`'s default prompts lie in no stage's training data: inside the RM part, outside the SFT
    and RL parts, and they are the reward model's held-out pairs (its reported accuracy recomputed
    on them)."""
    from prefmatch.cli import build_parser
    from prefmatch.llm.data import load_records, split_records
    from prefmatch.llm.metrics import eval_records
    from prefmatch.llm.models import load_reward_model
    from prefmatch.llm.train.reward_model import pairwise_accuracy, score_pairs
    from prefmatch.llm.tokenizer import load_tokenizer

    assert build_parser().parse_args(["eval", "--policy", "p"]).split == "heldout"
    keys = ("prompt", "chosen", "rejected")
    recs = eval_records(tiny["data"], "heldout", tiny["rm"], keys=keys)
    parts = split_records(load_records(tiny["data"], keys=keys))
    key = [json.dumps(r, sort_keys=True) for r in recs]
    inside = {p: {json.dumps(r, sort_keys=True) for r in v} for p, v in parts.items()}
    assert recs and set(key) <= inside["rm"] and not set(key) & (inside["sft"] | inside["rl"])
    metrics = [json.loads(line) for line in (tiny["root"] / "rm" / "metrics.jsonl").read_text().splitlines()]
    final = next(m for m in metrics if m.get("final"))
    assert len(recs) == final["eval_pairs"] < len(parts["rm"])
    rm, tok = load_reward_model(tiny["rm"]), load_tokenizer(tiny["rm"])
    rc, rr = score_pairs(rm, tok, recs, TINY["max_prompt_len"], TINY["max_response_len"])
    assert pairwise_accuracy(rc, rr) == pytest.approx(final["eval_accuracy"])


def test_dpo_example_accuracy_below_chance_is_the_answers_length(tiny):
    """The README's explanation of its DPO numbers, measured: the chosen answers are longer, so the
    summed log π(y|x) (pm's implicit reward) ranks most pairs the wrong way at the SFT model, while
    the per-token log-probability ranks them the right way."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dpo_length.py"
    spec = importlib.util.spec_from_file_location("dpo_length", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rep = mod.length_report(tiny["sft"], tiny["data"], "rm", **TINY)
    assert rep["tokens_chosen"] > 1.5 * rep["tokens_rejected"]
    assert rep["accuracy_sum_logp"] < 0.5 and rep["margin_sum_logp"] < 0
    assert rep["accuracy_per_token_logp"] > 0.5
