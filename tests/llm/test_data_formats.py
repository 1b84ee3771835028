"""The data layouts people have: raw hh-rlhf lines, TRL's conversational formats (with and without
a chat template), `datasets` directories, and `prefmatch data synth`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefmatch.cli import main
from prefmatch.llm.data import DataError, load_records, normalize_record

FIX = Path(__file__).parent / "fixtures"


def test_raw_hh_rlhf_lines_split_at_the_last_assistant_turn():
    recs = load_records(FIX / "hh_rlhf_raw.jsonl")
    assert recs[0]["prompt"] == ("\n\nHuman: What is a good tea?\n\nAssistant: Green tea is light and fresh."
                                 "\n\nHuman: And in the evening?\n\nAssistant:")
    assert recs[0]["chosen"] == " Chamomile, it has no caffeine." and recs[0]["rejected"] == " Coffee."
    for r, raw in zip(recs, (json.loads(line) for line in (FIX / "hh_rlhf_raw.jsonl").read_text().splitlines())):
        assert r["prompt"] + r["chosen"] == raw["chosen"] and r["prompt"] + r["rejected"] == raw["rejected"]


def test_hh_rlhf_lines_that_do_not_share_a_prompt_name_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}) + "\n"
                 + json.dumps({"chosen": "no separator", "rejected": "here"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: .*differ before their last"):
        load_records(p)
    p.write_text(json.dumps({"chosen": "no separator", "rejected": "here"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: no prompt key"):
        load_records(p)


def test_trl_conversational_without_chat_template_uses_the_hh_layout():
    recs = load_records(FIX / "trl_conversational.jsonl")
    assert recs[0] == {"prompt": "\n\nHuman: Name a calm colour.\n\nAssistant:", "chosen": "Blue.", "rejected": "No."}
    assert recs[1] == {"prompt": "\n\nHuman: What is a good tea?\n\nAssistant:", "chosen": "Green tea.",
                       "rejected": "Whatever."}
    sft = load_records(FIX / "trl_messages.jsonl", keys=("prompt", "chosen"))
    assert sft[0]["prompt"] == "\n\nSystem: Be kind.\n\nHuman: Hi\n\nAssistant:" and sft[0]["chosen"] == "Hello!"


class TemplateTokenizer:
    """A tokenizer stand-in with a chat template (transformers' apply_chat_template contract)."""
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


def test_trl_conversational_with_a_chat_template():
    recs = load_records(FIX / "trl_conversational.jsonl", tokenizer=TemplateTokenizer())
    assert recs[0]["prompt"] == "<|user|>Name a calm colour.<|end|><|assistant|>"
    assert recs[1]["prompt"] == "<|user|>What is a good tea?<|end|><|assistant|>" and recs[1]["rejected"] == "Whatever."


def test_real_tokenizer_chat_template(tmp_path, tiny):
    """The chat template of a saved HF tokenizer is what renders the conversation."""
    from prefmatch.llm.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny["base"])
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}")
    tok.save_pretrained(tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    rec = normalize_record(json.loads((FIX / "trl_conversational.jsonl").read_text().splitlines()[0]), tok)
    assert rec["prompt"] == "[user] Name a calm colour.\n[assistant]"


def test_conversations_that_do_not_end_with_the_assistant(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match="line 1: messages: the last message must be the assistant's"):
        load_records(p, keys=("prompt", "chosen"))


def test_datasets_directory_in_conversational_format(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in (FIX / "trl_conversational.jsonl").read_text().splitlines()][:1]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert load_records(tmp_path / "ds") == load_records(FIX / "trl_conversational.jsonl")[:1]


def test_data_synth_writes_what_the_trainers_read(tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    assert main(["data", "synth", "--out", str(out), "--n", "12", "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 12
    recs = load_records(out)
    assert len(recs) == 12 and all(r["prompt"].endswith("\n\nAssistant:") for r in recs)
    assert main(["data", "synth", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
