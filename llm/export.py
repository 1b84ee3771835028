r"""``prefmatch export RUN --out DIR``: a run's model as a plain Hugging Face directory.

A ``prefmatch train`` run directory keeps its model in ``RUN/model`` beside ``config.yaml``,
``metrics.jsonl`` and ``checkpoints/``; the export is a folder that ``from_pretrained(DIR)`` of the
standard classes loads as it is (``AutoModelForCausalLM`` for SFT, PPO and DPO runs,
``AutoModelForSequenceClassification`` for a reward model), with the tokenizer beside it.

A reward model trained with ``normalize``/``normalize_std`` keeps its normalisation in a sidecar
file that only prefmatch reads; the export folds it into the weights so that the standard class
gives the normalised score (r − mean)/std itself.  The score is the linear head w·h on the final
hidden state h = LN(x)·γ + b, so

    b ← b − (mean / ‖w‖²)·w     (w·h drops by mean: w·w = ‖w‖²)
    w ← w / std

which is exact whenever the trunk's final norm has a bias (GPT-2, OPT, ...).  A final norm without
a bias (Llama's RMSNorm) cannot carry the offset: the export is refused for such a normalised
reward model, with one line.  Each export is checked: on random token ids the exported model's
standard-class score equals prefmatch's normalised score of the original.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prefmatch.llm.models import REWARD_NORM_FILE, VALUE_HEAD_FILE, ModelLoadError
from prefmatch.llm.tokenizer import resolve_model_dir

#: files of a run's model folder that only prefmatch reads (left out of the export)
PREFMATCH_ONLY = (REWARD_NORM_FILE, VALUE_HEAD_FILE)

#: where a trunk keeps its final norm, by attribute path from the trunk
FINAL_NORMS = ("ln_f", "final_layer_norm", "decoder.final_layer_norm", "norm", "final_layernorm")


def model_dir_of(run: str | os.PathLike) -> Path:
    """The model folder of a run directory (``RUN/model``) or a model folder itself."""
    p = resolve_model_dir(run)
    if not (p / "config.json").is_file():
        hint = (" (the run has not finished: its model is written at the end; a checkpoint's policy is in "
                "checkpoints/checkpoint-NNNNNN/policy)") if (Path(run) / "config.yaml").is_file() else ""
        raise ModelLoadError(f"RUN: no model in {run}{hint}")
    return p


def _is_reward_model(src: Path) -> bool:
    archs = json.loads((src / "config.json").read_text()).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in archs) or (src / REWARD_NORM_FILE).is_file()


def _final_norm(trunk):
    for path in FINAL_NORMS:
        mod = trunk
        for part in path.split("."):
            mod = getattr(mod, part, None)
        if mod is not None and hasattr(mod, "weight"):
            return mod
    return None


def fold_normalization(model, norm: dict) -> None:
    """Fold ``{"mean", "std"}`` into ``model``'s final-norm bias and score head (in place), so that
    its plain score is (r − mean)/std; :class:`ModelLoadError` when the final norm has no bias."""
    import torch

    from prefmatch.llm.models import _backbone_and_head

    trunk, head = _backbone_and_head(model)
    ln = _final_norm(trunk)
    mean, std = float(norm.get("mean", 0.0)), float(norm.get("std", 1.0))
    if mean and (ln is None or getattr(ln, "bias", None) is None):
        raise ModelLoadError(f"the reward model's final norm ({type(ln).__name__ if ln is not None else 'not found'}) "
                             f"has no bias to carry its mean {mean:.6g}; use prefmatch's loader "
                             "(prefmatch.llm.models.load_reward_model) or train it with normalize: false")
    with torch.no_grad():
        w = head.weight[0].double()
        if mean:
            ln.bias.copy_((ln.bias.double() - mean * w / w.dot(w)).to(ln.bias.dtype))
        head.weight.div_(std)
    model.config.prefmatch_reward_normalization = {"mean": mean, "std": std, "folded": True}


def _check_scores(src: Path, out: Path, reward: bool) -> float:
    """max |exported − original| over random token ids: the standard class's output against
    prefmatch's own (normalised) reward score or logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from prefmatch.llm.models import load_causal_lm, load_reward_model, reward_scores

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if reward:
            orig = load_reward_model(src).eval()
            new = AutoModelForSequenceClassification.from_pretrained(str(out), local_files_only=True).eval()
            pad = new.config.pad_token_id
            vocab = new.config.get_text_config().vocab_size
            ids = torch.randint(3, vocab, (4, 12), generator=gen)
            ids[ids == pad] = 3
            mask = torch.ones_like(ids)
            mask[:2, 8:] = 0
            ids[mask == 0] = pad
            want = reward_scores(orig, ids, mask, normalize=True)
            got = new(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()
        else:
            orig = load_causal_lm(src).eval()
            new = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
            ids = torch.randint(3, new.config.get_text_config().vocab_size, (2, 12), generator=gen)
            want, got = orig(input_ids=ids).logits, new(input_ids=ids).logits
    return float((want - got).abs().max())


def export_model(run: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write ``run``'s model to ``out`` as a plain HF directory; returns ``{"out", "kind", ...}``."""
    from prefmatch.llm.models import quiet_transformers
    from prefmatch.llm.rundir import atomic_dir, check_output_dir

    src = model_dir_of(run)
    dest = check_output_dir(out, "out")
    if dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents:
        raise ModelLoadError(f"--out: {dest} is inside the run's model folder {src}; choose another folder")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise ModelLoadError(f"--out: {dest} is not empty; pass --overwrite to replace it or choose another --out")
    quiet_transformers()
    reward = _is_reward_model(src)
    norm_file = src / REWARD_NORM_FILE
    norm = json.loads(norm_file.read_text()) if norm_file.is_file() else None
    with atomic_dir(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*PREFMATCH_ONLY))
        if norm:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(src), local_files_only=True)
            fold_normalization(model, norm)
            model.save_pretrained(str(tmp))
        err = _check_scores(src, tmp, reward)  # before the folder takes its place
        if not err <= 1e-4:
            raise ModelLoadError(f"export: the exported model differs from {src} by {err:.3g} (please report this)")
    kind = "reward model" if reward else "causal LM"
    return {"out": str(dest), "from": str(src), "kind": kind,
            "class": "AutoModelForSequenceClassification" if reward else "AutoModelForCausalLM",
            "normalization_folded": bool(norm), "max_abs_difference": err}
