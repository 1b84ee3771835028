"""Preference data: local jsonl or ``datasets`` directories, the 20/40/40 split, tokenisation.

Records are dicts with ``prompt``, ``chosen``, ``rejected`` (the hh-rlhf layout: the prompt ends
with ``"\\n\\nAssistant:"`` and the responses continue it).  RL and evaluation need ``prompt`` only.
Raw hh-rlhf lines (``chosen``/``rejected`` only) and TRL's conversational layouts (lists of
messages, rendered with the tokenizer's chat template when it has one) are converted on load
(:func:`normalize_record`).

Sources:

* ``*.jsonl``: one JSON object per line (blank lines skipped);
* a directory written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose
  ``train`` split — or its only split — is used).

:func:`split_records` is the PM paper's Section 6 partition: a seeded permutation cut into
SFT / reward-model / RL parts (20 % / 40 % / 40 % by default).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any
from collections.abc import Sequence

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")
SPLITS = ("all", "sft", "rm", "rl")


class DataError(ValueError):
    """A data file that is missing, ill-formed or empty; the message names file and line."""


def load_records(path: str | os.PathLike, keys: Sequence[str] = PREFERENCE_KEYS, tokenizer=None) -> list[dict]:
    """Read records from a jsonl file or a ``save_to_disk`` directory; each must hold ``keys`` as strings
    after :func:`normalize_record` (raw hh-rlhf and TRL conversational records are converted; with a
    ``tokenizer`` that has a chat template, conversations are rendered with it)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if p.is_dir():
        records = _load_datasets_dir(p)
        where = lambda i: f"{p} row {i}"  # noqa: E731
    else:
        records = []
        raw = p.read_bytes()
        lines = []
        for n, b in enumerate(raw.splitlines(), 1):
            try:
                line = b.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p} line {n}: not UTF-8 text (byte {b[e.start]:#04x} at column {e.start + 1}); "
                                "save the file as UTF-8") from None
            if line.strip():
                lines.append((n, line))
        for n, line in lines:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p} line {n}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise DataError(f"{p} line {n}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p} line {n}: expected a JSON object with keys {', '.join(keys)}")
            obj["_line"] = n
            records.append(obj)
        where = lambda i: f"{p} line {records[i]['_line']}"  # noqa: E731
    if not records:
        raise DataError(f"{p}: no records (the dataset is empty)")
    out = []
    for i, rec in enumerate(records):
        try:
            rec = normalize_record(rec, tokenizer)
        except ValueError as e:
            raise DataError(f"{where(i)}: {e}") from None
        missing = [k for k in keys if k not in rec]
        if missing:
            raise DataError(f"{where(i)}: missing key(s) {', '.join(missing)}; each record needs {', '.join(keys)}")
        bad = [k for k in keys if not isinstance(rec[k], str)]
        if bad:
            raise DataError(f"{where(i)}: key(s) {', '.join(bad)} must be strings")
        if "prompt" in keys and not rec["prompt"].strip():
            raise DataError(f"{where(i)}: empty prompt")
        out.append({k: rec[k] for k in rec if k != "_line"})
    return out


HH_SEPARATOR = "\n\nAssistant:"


def _is_messages(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, dict) and "role" in m and "content" in m for m in v)


def render_prompt(messages: list[dict], tokenizer=None) -> str:
    r"""The text a model continues after ``messages``: the tokenizer's chat template with the
    generation prompt when it has one, else the hh-rlhf layout (``\n\nHuman: …\n\nAssistant:``)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "".join(f"\n\n{names.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages) + HH_SEPARATOR


def _split_conversation(msgs: list[dict], what: str) -> tuple[list[dict], str]:
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"{what}: the last message must be the assistant's response, got role {msgs[-1]['role']!r}")
    return msgs[:-1], msgs[-1]["content"]


def normalize_record(rec: dict[str, Any], tokenizer=None) -> dict:
    r"""One record in the package's layout ``{prompt, chosen, rejected}`` (strings) from the layouts
    people have:

    * already ``{prompt, chosen, rejected}`` strings: unchanged;
    * raw Anthropic hh-rlhf ``{chosen, rejected}``: the prompt is the shared text up to the last
      ``"\n\nAssistant:"``, the responses what follows it;
    * TRL conversational preference ``{prompt: [messages], chosen: [messages], rejected: [messages]}``,
      or without ``prompt`` (the shared leading messages are the prompt);
    * TRL conversational language modelling ``{messages: [...]}`` (SFT: the last assistant message
      is ``chosen``).

    Conversations are rendered by :func:`render_prompt` (the chat template when the tokenizer has one)."""
    rec = dict(rec)
    if "messages" in rec and _is_messages(rec["messages"]) and "chosen" not in rec:
        prompt, resp = _split_conversation(rec.pop("messages"), "messages")
        rec["prompt"], rec["chosen"] = render_prompt(prompt, tokenizer), resp
        return rec
    if _is_messages(rec.get("chosen")) or _is_messages(rec.get("rejected")):
        chosen: Any = rec.get("chosen")  # message lists (checked by _is_messages where it matters)
        rejected: Any = rec.get("rejected")
        if _is_messages(rec.get("prompt")):
            prompt = rec["prompt"]
            conv = {k: v for k, v in (("chosen", chosen), ("rejected", rejected)) if _is_messages(v)}
            for k, v in conv.items():
                rec[k] = v[-1]["content"] if v[-1]["role"] == "assistant" else _split_conversation(v, k)[1]
        else:
            p_c, rec["chosen"] = _split_conversation(chosen, "chosen")
            if _is_messages(rejected):
                p_r, rec["rejected"] = _split_conversation(rejected, "rejected")
                if p_r != p_c:
                    raise ValueError("chosen and rejected conversations do not share their leading messages")
            prompt = p_c
        rec["prompt"] = render_prompt(prompt, tokenizer)
        return rec
    if _is_messages(rec.get("prompt")):
        rec["prompt"] = render_prompt(rec["prompt"], tokenizer)
        return rec
    if "prompt" not in rec and isinstance(rec.get("chosen"), str) and isinstance(rec.get("rejected"), str):
        c, r = rec["chosen"], rec["rejected"]
        i, j = c.rfind(HH_SEPARATOR), r.rfind(HH_SEPARATOR)
        if i < 0 or j < 0:
            raise ValueError(f"no prompt key, and the responses hold no {HH_SEPARATOR!r} to split an hh-rlhf "
                             "prompt from")
        cut = i + len(HH_SEPARATOR)
        if c[:cut] != r[: j + len(HH_SEPARATOR)]:
            raise ValueError("no prompt key, and chosen and rejected differ before their last "
                             f"{HH_SEPARATOR!r} (raw hh-rlhf lines share the prompt)")
        rec["prompt"], rec["chosen"], rec["rejected"] = c[:cut], c[cut:], r[cut:]
    return rec


def _load_datasets_dir(p: Path) -> list[dict]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError as e:  # pragma: no cover
        raise DataError("reading a dataset directory needs the `datasets` package") from e
    try:
        ds = load_from_disk(str(p))
    except Exception as e:
        raise DataError(f"{p}: not a dataset saved with save_to_disk ({type(e).__name__})") from None
    if isinstance(ds, DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise DataError(f"{p}: DatasetDict with splits {list(ds)}; save the split to use or name it 'train'")
    assert isinstance(ds, Dataset)
    return [dict(r) for r in ds]


def write_jsonl(records: Sequence[dict], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return p


def split_records(records: Sequence[dict], fractions: Sequence[float] = (0.2, 0.4, 0.4),
                  seed: int = 0) -> dict[str, list[dict]]:
    """Seeded random partition into ``{"sft", "rm", "rl"}`` with the given fractions (PM paper §6)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n = len(idx)
    a = round(fractions[0] * n)
    b = a + round(fractions[1] * n)
    parts = {"sft": idx[:a], "rm": idx[a:b], "rl": idx[b:]}
    return {k: [records[i] for i in v] for k, v in parts.items()}


def held_out(records: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training, held-out) records of a stage that holds out ``fraction`` of its part for evaluation:
    a ``seed``-shuffled order whose first round(fraction·n) records are held out (the reward model's
    and DPO's rule; ``eval --split heldout`` evaluates on the reward model's held-out prompts)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(fraction * len(records)))
    return [records[i] for i in order[n_eval:]], [records[i] for i in order[:n_eval]]


def load_split(path, split: str = "all", fractions: Sequence[float] = (0.2, 0.4, 0.4), seed: int = 0,
               keys: Sequence[str] = PREFERENCE_KEYS, tokenizer=None) -> list[dict]:
    """Records of one part (``all``, ``sft``, ``rm``, ``rl``); an empty part is an error."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    records = load_records(path, keys=keys, tokenizer=tokenizer)
    if split != "all":
        records = split_records(records, fractions, seed)[split]
    if not records:
        raise DataError(f"{path}: the {split!r} part of the split is empty ({len(load_records(path, keys))} records "
                        f"with fractions {list(fractions)}); use more data or split: all")
    return records


def synthetic_preferences(n: int = 64, seed: int = 0) -> list[dict]:
    """A small hh-rlhf-style preference set where the chosen answer is a polite, on-topic sentence
    and the rejected one a curt reply; for tests, examples and the benchmark."""
    rng = random.Random(seed)
    topics = ["colour", "season", "drink", "book", "city", "animal", "food", "sport"]
    good = {
        "colour": ["I like blue, it is calm.", "Green, like a forest."],
        "season": ["I prefer autumn because of the colours.", "Spring, when everything grows."],
        "drink": ["Tea is a good choice in the afternoon.", "Coffee in the morning."],
        "book": ["You could read a classic novel.", "A short story collection is nice."],
        "city": ["Paris is lovely in spring.", "Kyoto has beautiful temples."],
        "animal": ["Dogs are loyal friends.", "Cats are calm and clever."],
        "food": ["Fresh pasta with tomato sauce.", "A warm bowl of soup."],
        "sport": ["Swimming is good for the body.", "I enjoy watching football."],
    }
    bad = ["No.", "I do not know.", "Whatever.", "Why do you ask?"]
    out = []
    for _ in range(n):
        t = rng.choice(topics)
        q = rng.choice(["What is your favourite {}?", "Which {} do you like?", "Can you suggest a {}?"]).format(t)
        out.append({"prompt": f"\n\nHuman: {q}\n\nAssistant:", "chosen": " " + rng.choice(good[t]),
                    "rejected": " " + rng.choice(bad)})
    return out


# ----------------------------------------------------------------------------- tokenisation

def encode_prompt(tokenizer, prompt: str, max_len: int) -> list[int]:
    """Prompt token ids, truncated from the left (the end of a dialogue matters most)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids[-max_len:] if max_len > 0 else ids


def encode_response(tokenizer, response: str, max_len: int) -> list[int]:
    """Response token ids followed by EOS, truncated from the right to ``max_len`` tokens."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:max_len]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right"):
    """Pad lists of ids to a ``[B, T]`` LongTensor and its 0/1 attention mask."""
    import torch

    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        if side == "right":
            ids[i, : len(s)] = torch.as_tensor(s)
            mask[i, : len(s)] = 1
        else:
            ids[i, T - len(s):] = torch.as_tensor(s)
            mask[i, T - len(s):] = 1
    return ids, mask


def prompt_response_batch(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_prompt: int,
                          max_response: int):
    """Teacher-forcing batch: ``(input_ids, attention_mask, response_mask)``, right-padded.

    ``response_mask[b, t] = 1`` where token t belongs to the response (EOS included).
    """
    import torch

    seqs, resp_masks = [], []
    for p, r in zip(prompts, responses):
        pi = encode_prompt(tokenizer, p, max_prompt)
        ri = encode_response(tokenizer, r, max_response)
        seqs.append(pi + ri)
        resp_masks.append([0] * len(pi) + [1] * len(ri))
    ids, mask = pad_batch(seqs, tokenizer.pad_token_id)
    rmask, _ = pad_batch(resp_masks, 0)
    return ids, mask, rmask.to(torch.long)
