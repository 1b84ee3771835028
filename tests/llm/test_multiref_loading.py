"""K reference directories: the mismatching or broken reference is named in one line (PPO and DPO)."""
from __future__ import annotations

import pytest
from cli_errors import one_line_error


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


def _argv(trainer, tiny, refs, out):
    """``prefmatch train ppo|dpo`` with multi_rkl on the references ``refs`` (PPO calls them --ref, DPO --reference)."""
    if trainer == "ppo":
        return ["train", "ppo", "--data", tiny["data"], "--policy", tiny["sft"], "--reward-model", tiny["rm"],
                "--regularizer", "multi_rkl", "--ref", f"[{', '.join(refs)}]", "--out", str(out)]
    return ["train", "dpo", "--data", tiny["data"], "--model", tiny["sft"], "--regularizer", "multi_rkl",
            "--reference", f"[{', '.join(refs)}]", "--out", str(out)]


@pytest.mark.parametrize("trainer, bad_first, option", [("ppo", False, "ref"), ("dpo", True, "reference")])
def test_names_the_reference_whose_tokenizer_differs(tmp_path, tiny, other_tokenizer_model, capsys, trainer, bad_first,
                                                     option):
    refs = [other_tokenizer_model, tiny["sft"]] if bad_first else [tiny["sft"], other_tokenizer_model]
    err = one_line_error(capsys, _argv(trainer, tiny, refs, tmp_path / "run"))
    assert f"{option} {1 if bad_first else 2} of 2" in err and other_tokenizer_model in err and "does not match" in err


@pytest.mark.parametrize("trainer, option", [("ppo", "ref"), ("dpo", "reference")])
def test_refuses_a_reference_with_non_finite_weights(tmp_path, tiny, nan_model, capsys, trainer, option):
    err = one_line_error(capsys, _argv(trainer, tiny, [tiny["sft"], nan_model], tmp_path / "run"))
    assert f"{option} 2 of 2" in err and nan_model in err and "non-finite weights" in err
