"""K reference directories: the mismatching or broken reference is named in one line (PPO and DPO)."""
from __future__ import annotations

import pytest

from prefmatch.cli import main


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prefmatch: error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    from prefmatch.llm.models import init_model

    return str(init_model(tmp_path_factory.mktemp("other") / "m", "tiny",
                          texts=["completely different corpus " * 20], vocab_size=300))


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory, tiny):
    import torch

    from prefmatch.llm.models import load_causal_lm, save_model
    from prefmatch.llm.tokenizer import load_tokenizer

    m = load_causal_lm(tiny["sft"])
    with torch.no_grad():
        next(m.parameters()).view(-1)[0] = float("nan")
    out = tmp_path_factory.mktemp("nan") / "m"
    save_model(m, out, tokenizer=load_tokenizer(tiny["sft"]))
    return str(out)


def test_ppo_names_the_reference_whose_tokenizer_differs(tmp_path, tiny, other_tokenizer_model, capsys):
    err = _one_line_error(capsys, ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"],
                                   "--reward-model", tiny["rm"], "--regularizer", "multi_rkl",
                                   "--ref", f"[{tiny['sft']}, {other_tokenizer_model}]", "--out", str(tmp_path / "run")])
    assert "ref 2 of 2" in err and other_tokenizer_model in err and "does not match" in err


def test_dpo_names_the_reference_whose_tokenizer_differs(tmp_path, tiny, other_tokenizer_model, capsys):
    err = _one_line_error(capsys, ["train", "dpo", "--data", tiny["data"], "--model", tiny["sft"],
                                   "--regularizer", "multi_rkl", "--reference", f"[{other_tokenizer_model}, {tiny['sft']}]",
                                   "--out", str(tmp_path / "run")])
    assert "reference 1 of 2" in err and other_tokenizer_model in err and "does not match" in err


def test_ppo_refuses_a_reference_with_non_finite_weights(tmp_path, tiny, nan_model, capsys):
    err = _one_line_error(capsys, ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"],
                                   "--reward-model", tiny["rm"], "--regularizer", "multi_rkl",
                                   "--ref", f"[{tiny['sft']}, {nan_model}]", "--out", str(tmp_path / "run")])
    assert "ref 2 of 2" in err and nan_model in err and "non-finite weights" in err


def test_dpo_refuses_a_reference_with_non_finite_weights(tmp_path, tiny, nan_model, capsys):
    err = _one_line_error(capsys, ["train", "dpo", "--data", tiny["data"], "--model", tiny["sft"],
                                   "--regularizer", "multi_rkl", "--reference", f"[{tiny['sft']}, {nan_model}]",
                                   "--out", str(tmp_path / "run")])
    assert "reference 2 of 2" in err and "non-finite weights" in err
