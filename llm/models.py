"""Policy (causal LM + value head) and reward model (LM + scalar head) on any transformers model.

* :func:`init_model` writes a randomly initialised GPT-2- or Llama-style model and a locally
  trained tokenizer in Hugging Face format (``prefmatch model init``); ``from_pretrained``
  loads the directory.  Sizes: ``tiny`` (≈ 0.2 M parameters, for tests) and ``small`` (≈ 4 M).
* :func:`load_causal_lm`, :func:`load_reward_model` load from local directories only and turn
  transformers' long errors into one line naming the directory.
* :class:`PolicyWithValue` is the PPO actor-critic: the LM and a linear value head on its last
  hidden state (shared trunk, as in TRL's ``AutoModelForCausalLMWithValueHead``).
* The reward model is ``AutoModelForSequenceClassification`` with one label; its score is read
  at the last attended token (:func:`reward_scores`), whatever the pad token is.

Everything torch is imported lazily: ``import prefmatch.llm.models`` is cheap.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from prefmatch.llm.tokenizer import build_tokenizer, require_folder, resolve_model_dir

SIZES = ("tiny", "medium", "small")
ARCHS = ("gpt2", "llama")
VALUE_HEAD_FILE = "value_head.safetensors"
REWARD_NORM_FILE = "reward_normalization.json"


class ModelLoadError(FileNotFoundError):
    """A model directory that is missing or cannot be loaded by transformers."""

def _size_params(size: str) -> dict[str, int]:
    if size == "tiny":
        return dict(hidden=64, layers=2, heads=2, positions=512, vocab=512)
    if size == "medium":
        return dict(hidden=128, layers=3, heads=4, positions=512, vocab=1024)
    if size == "small":
        return dict(hidden=256, layers=4, heads=4, positions=1024, vocab=2048)
    raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")


def model_config(size: str = "tiny", arch: str = "gpt2", vocab_size: int = 512, pad_token_id: int = 0,
                 bos_token_id: int = 1, eos_token_id: int = 2):
    """A transformers config for a GPT-2- or Llama-style model of the given size (no dropout)."""
    from transformers import GPT2Config, LlamaConfig

    s = _size_params(size)
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=s["positions"], n_embd=s["hidden"], n_layer=s["layers"],
            n_head=s["heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            tie_word_embeddings=True,
        )
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=s["hidden"], intermediate_size=2 * s["hidden"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
            max_position_embeddings=s["positions"], pad_token_id=pad_token_id, bos_token_id=bos_token_id,
            eos_token_id=eos_token_id, tie_word_embeddings=True, attention_dropout=0.0,
        )
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")


def init_model(out_dir: str | os.PathLike, size: str = "tiny", arch: str = "gpt2", texts=None,
               vocab_size: int | None = None, seed: int = 0, added_tokens=()) -> Path:
    """Write a randomly initialised causal LM and a locally trained tokenizer to ``out_dir``.

    ``texts`` (optional) is the tokenizer's training corpus (e.g. the prompts and responses of
    the data the model will see); ``added_tokens`` become one token each
    (:func:`prefmatch.llm.tokenizer.train_tokenizer`); the model's vocabulary is the tokenizer's.
    """
    import torch
    from transformers import AutoModelForCausalLM

    s = _size_params(size)
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, texts=texts, vocab_size=vocab_size or s["vocab"], added_tokens=added_tokens)
    cfg = model_config(size, arch, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    quiet_transformers()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(out))
    return out


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def quiet_transformers() -> None:
    """Silence transformers' load reports and weight-loading progress bars (we print our own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _check_dir(path, what: str) -> Path:

    p = resolve_model_dir(path)
    if not p.is_dir():
        raise ModelLoadError(f"{what} directory not found: {p}")
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise ModelLoadError(f"{what} directory {p} has no config.json (not a Hugging Face model directory)")
    return p


#: config.json keys that bound the positions a model can read (learned position embeddings; the
#: declared context of rotary models)
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")


def max_positions(config: dict) -> int | None:
    """The most tokens a model reads (prompt + response), from its ``config.json`` mapping; None
    when it declares none."""
    for cfg in (config, config.get("text_config") or {}):
        for k in POSITION_KEYS:
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def check_model_dir(path, option: str, *, tokenizer: bool = True) -> tuple[Path, dict]:
    """The checks of a model directory before any work, each a one-line :class:`ModelLoadError`
    that starts with ``option`` (``model``, ``--policy``, ``reward_model``...): an empty path, a
    file, a missing directory, a run directory without its final model, a missing or invalid
    ``config.json``, no weights, no tokenizer (with ``tokenizer``).  Returns ``(directory,
    config.json as a mapping)`` (an empty mapping for a peft adapter directory)."""
    if not str(path).strip():
        raise ModelLoadError(f"{option}: an empty path; give a model directory")
    raw = Path(path)
    require_folder(raw, option, ModelLoadError)
    p = resolve_model_dir(raw)
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        if (p / "config.yaml").is_file() or (p / "metrics.jsonl").is_file():
            raise ModelLoadError(f"{option}: the run directory {p} holds no final model (model/ is missing: the run "
                                 "has not finished); finish it with --resume, or give a checkpoint's policy folder")
        raise ModelLoadError(f"{option}: {p} has no config.json (not a Hugging Face model directory)")
    config: dict = {}
    if (p / "config.json").is_file():
        try:
            config = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ModelLoadError(f"{option}: {p / 'config.json'} cannot be read as JSON ({_one_line(e)})") from None
        if not isinstance(config, dict):
            raise ModelLoadError(f"{option}: {p / 'config.json'} must hold a JSON object")
        weights = [f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt") and f.name != VALUE_HEAD_FILE
                   or f.name.endswith(".index.json")]
        if not weights:
            raise ModelLoadError(f"{option}: {p} holds no weights (model.safetensors or pytorch_model.bin)")
    if tokenizer:
        from prefmatch.llm.tokenizer import load_tokenizer

        try:
            tok = load_tokenizer(p, what=option)
        except FileNotFoundError as e:
            raise ModelLoadError(str(e)) from None
        vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
        if isinstance(vocab, int) and len(tok) > vocab:
            raise ModelLoadError(f"{option}: the tokenizer in {p} has {len(tok)} tokens but the model only {vocab} "
                                 "embeddings (vocab_size in config.json); they do not belong together")
    return p, config


def _one_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


def load_dtype(dtype=None):
    """The dtype a model is loaded in: ``dtype`` itself, or float32 for ``None``.

    Never the checkpoint's own dtype: transformers 5 reads ``dtype=None`` as ``"auto"``, so an
    fp16-saved checkpoint (facebook/opt-1.3b, Llama-2) would train in fp16 and AdamW's first update
    overflows it.  Trainable models are loaded in float32 (the master weights; the forward runs in
    bf16 under autocast on GPUs), frozen ones (reference, reward model) in the compute dtype
    (:func:`frozen_dtype`)."""
    import torch

    if dtype is None or dtype == "float32":
        return torch.float32
    if isinstance(dtype, str):
        return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                "fp16": torch.float16}[dtype]
    return dtype


def frozen_dtype(mixed_precision: str):
    """The dtype of frozen models (reference, reward model) for accelerate's ``mixed_precision``:
    the compute dtype, bf16 / fp16 under autocast, float32 otherwise."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(mixed_precision), torch.float32)


def load_causal_lm(path: str | os.PathLike, dtype=None, what: str = "policy"):
    """``AutoModelForCausalLM`` from a local directory (a peft adapter dir is merged on load),
    in ``dtype`` (None: float32 whatever the checkpoint's dtype, see :func:`load_dtype`)."""
    p = _check_dir(path, what)
    dtype = load_dtype(dtype)
    quiet_transformers()
    from prefmatch.llm.sharding import without_zero3_init

    try:
        with without_zero3_init():  # whole weights: ZeRO-3 partitions the trained model when it is prepared
            return _load_causal_lm(p, dtype)
    except Exception as e:
        raise ModelLoadError(f"cannot load {what} model from {p} ({_one_line(e)})") from None


def _load_causal_lm(p: Path, dtype):
    from transformers import AutoModelForCausalLM

    if (p / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(p), dtype=dtype).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype, local_files_only=True)


def check_finite_weights(model, what: str):
    """``model`` unchanged if every parameter is finite; else :class:`ModelLoadError` naming ``what``.

    A reference with a NaN or inf weight would otherwise surface only as non-finite
    log-probabilities at the first step, without saying which of K references it was."""
    import torch

    for name, t in model.named_parameters():  # not buffers: some architectures keep −inf masks there
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelLoadError(f"{what}: non-finite weights (NaN or inf) in {name}")
    return model


def load_reward_model(path: str | os.PathLike, dtype=None, what: str = "reward", trained: bool = True):
    """A one-label ``AutoModelForSequenceClassification`` from a local directory.

    With ``trained=False`` a plain causal-LM directory (e.g. the SFT model) gets a freshly
    initialised scalar head: that is how the reward model stage starts.  Otherwise (PPO, eval,
    benchmarks) a directory without a trained head is a :class:`ModelLoadError`: a random head
    would give PPO noise to optimise.  A saved reward model keeps its head and its
    normalisation (``reward_normalization.json``, see :func:`reward_scores`).
    """
    p = _check_dir(path, what)
    dtype = load_dtype(dtype)  # None: float32, never the checkpoint's dtype
    quiet_transformers()
    from prefmatch.llm.sharding import without_zero3_init

    try:
        with without_zero3_init():  # whole weights (see load_causal_lm)
            return _load_reward_model(p, dtype, what, trained)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load {what} model from {p} ({_one_line(e)})") from None


def _load_reward_model(p: Path, dtype, what: str, trained: bool):
    from transformers import AutoModelForSequenceClassification

    if (p / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=dtype)
        model = model.merge_and_unload()
    else:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(p), num_labels=1, dtype=dtype, local_files_only=True, output_loading_info=True)
        if trained and info.get("missing_keys"):
            raise ModelLoadError(
                f"{what}: {p} has no trained reward head (missing {', '.join(sorted(info['missing_keys'])[:3])}); "
                "give a directory written by `prefmatch train rm`")
    norm = p / REWARD_NORM_FILE
    model.reward_normalization = json.loads(norm.read_text()) if norm.is_file() else None
    return model


def _backbone_and_head(model):
    """(transformer trunk, scalar head) of a (possibly peft-wrapped) sequence-classification model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(inner, inner.base_model_prefix)
    head = getattr(inner, "score", None)
    if head is None:
        raise TypeError(f"{type(inner).__name__} has no `score` head; use a model with a "
                        "ForSequenceClassification class (GPT-2, OPT, Llama, ...)")
    return trunk, head


def last_index(attention_mask):
    """Index of the last attended position in each row (right or left padding)."""
    import torch

    T = attention_mask.shape[-1]
    pos = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return (pos * attention_mask.long()).argmax(-1)


def _is_fsdp(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reward_scores(model, input_ids, attention_mask, normalize: bool = True):
    """Scalar reward r(x, y) of each row: the head at the last attended token, shape [B].

    With ``normalize`` and a saved normalisation ``{"mean", "std"}`` it returns (r − mean)/std.
    """
    import torch

    trunk, head = _backbone_and_head(model)
    if _is_fsdp(model):  # sharded: the root's own forward gathers its parameters (the head's among them)
        hidden = model(**model_inputs(model, input_ids, attention_mask), output_hidden_states=True).hidden_states[-1]
    else:
        hidden = trunk(**model_inputs(trunk, input_ids, attention_mask)).last_hidden_state
    idx = last_index(attention_mask)
    h_last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    r = head(h_last).squeeze(-1).float()
    norm = getattr(model, "reward_normalization", None)
    if normalize and norm:
        r = (r - norm["mean"]) / norm["std"]
    return r


def disable_dropout(model) -> None:
    """Set every dropout probability to 0 (PPO's ratio must be 1 before the first update)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def lora_wrap(model, task_type: str, r: int = 8, alpha: int = 16, dropout: float = 0.0,
              target_modules: list[str] | None = None):
    """Wrap ``model`` with peft LoRA adapters (``task_type`` ``CAUSAL_LM`` or ``SEQ_CLS``)."""
    from peft import LoraConfig, get_peft_model

    import warnings

    cfg = LoraConfig(task_type=task_type, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=target_modules or "all-linear")
    with warnings.catch_warnings():  # peft ↔ transformers 5 deprecation noise; GPT-2 Conv1D note
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*", category=UserWarning)
        return get_peft_model(model, cfg)


#: where :func:`save_model` puts a LoRA run's adapter (peft format) beside the merged model
ADAPTER_DIR = "adapter"


def save_model(model, out_dir: str | os.PathLike, tokenizer=None, merge_lora: bool = True) -> None:
    """Save in HF format; a peft model is merged into full weights first (loadable without peft),
    and its adapter is saved too, in peft's format, in ``out_dir/adapter`` (load it on the base
    model with ``PeftModel.from_pretrained(base, out_dir / "adapter")``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if merge_lora and hasattr(model, "merge_and_unload"):
        import copy

        model.save_pretrained(str(out / ADAPTER_DIR))
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    norm = getattr(model, "reward_normalization", None)
    if norm:
        (out / REWARD_NORM_FILE).write_text(json.dumps(norm))




def adapter_disabled_reference(peft_model):
    """The reference π_ref = the base model under a LoRA policy, without a second copy of its
    weights: calls run ``peft_model`` with its adapter disabled (TRL's approach).  Exact when the
    reference is the policy's initial model (LoRA starts at B = 0, so base = initial policy)."""
    import torch

    class AdapterDisabled(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            object.__setattr__(self, "_lm", lm)  # not a submodule: no parameters of its own

        @property
        def config(self):
            return self._lm.config

        def get_base_model(self):
            return self._lm.get_base_model()

        def forward(self, **kw):
            with torch.no_grad(), self._lm.disable_adapter():
                return self._lm(**kw)

    return AdapterDisabled(peft_model)


@functools.cache
def policy_with_value_class():
    """The :class:`PolicyWithValue` class (built on first use so that this module imports without torch)."""
    from torch import nn

    class PolicyWithValue(nn.Module):
        """Actor-critic for PPO: causal LM ``lm`` and a linear ``value_head`` on its last hidden state.

        ``forward(input_ids, attention_mask)`` returns ``(logits [B,T,V], values [B,T])``, where
        ``values[:, t]`` estimates the return after the token at position t has been read.
        """
        def __init__(self, lm, value_head=None):
            super().__init__()
            self.lm = lm
            hidden = lm.config.get_text_config().hidden_size
            self.value_head = value_head if value_head is not None else nn.Linear(hidden, 1)
            if value_head is None:
                nn.init.zeros_(self.value_head.weight)
                nn.init.zeros_(self.value_head.bias)

        def forward(self, input_ids, attention_mask):
            out = self.lm(**model_inputs(self.lm, input_ids, attention_mask), output_hidden_states=True,
                          use_cache=False)
            h = out.hidden_states[-1]
            values = self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1)
            return out.logits, values

        def generate(self, *args, **kwargs):
            return self.lm.generate(*args, **kwargs)

        @property
        def _no_split_modules(self):
            # FSDP's transformer auto-wrap: the LM's blocks and the LM itself are sharding units, so
            # that ``lm.generate`` gathers the LM's own parameters (embeddings, final norm)
            return [*(getattr(self.lm, "_no_split_modules", None) or []), type(self.lm).__name__]

        def save_pretrained(self, out_dir, tokenizer=None):
            from safetensors.torch import save_file

            save_model(self.lm, out_dir, tokenizer)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                      str(Path(out_dir) / VALUE_HEAD_FILE))

        @classmethod
        def from_pretrained(cls, path, dtype=None):
            from safetensors.torch import load_file

            lm = load_causal_lm(path, dtype=dtype)
            model = cls(lm)
            vh = Path(path) / VALUE_HEAD_FILE
            if vh.is_file():
                model.value_head.load_state_dict(load_file(str(vh)))
            return model

    return PolicyWithValue


def __getattr__(name: str) -> Any:  # PEP 562: `from prefmatch.llm.models import PolicyWithValue`
    if name == "PolicyWithValue":
        return policy_with_value_class()
    raise AttributeError(name)


def model_inputs(model, input_ids, attention_mask) -> dict:
    """Keyword inputs with position ids that skip left padding (when the model accepts them)."""
    kw = {"input_ids": input_ids, "attention_mask": attention_mask}
    if accepts_position_ids(model):
        kw["position_ids"] = position_ids_from_mask(attention_mask)
    return kw


def token_logprobs(model, input_ids, attention_mask):
    """log π(x_t | x_<t) for t = 1..T−1 (teacher forcing), shape [B, T−1], float32."""
    logits = model(**model_inputs(model, input_ids, attention_mask), use_cache=False).logits
    return logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])


def convert_gguf(src_dir: str | os.PathLike, gguf_file: str, out_dir: str | os.PathLike) -> Path:
    """A GGUF causal LM (``src_dir/gguf_file``) as a Hugging Face directory ``out_dir`` (fp32).

    transformers (with the ``gguf`` package) dequantizes the weights; the model is rebuilt from
    its config without the quantization entry and saved with ``save_pretrained`` once: a later
    call with the same ``out_dir`` returns it without converting again.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    src = Path(src_dir)
    if not (src / gguf_file).is_file():
        raise ModelLoadError(f"GGUF file not found: {src / gguf_file}")
    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # the dequantized weights are plain fp32
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def position_ids_from_mask(attention_mask):
    """Positions that skip left padding: cumsum(mask) − 1, clamped at 0 (as ``generate`` uses)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def accepts_position_ids(model) -> bool:
    import inspect

    inner = model
    for attr in ("module", "lm"):
        inner = getattr(inner, attr, inner)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    try:
        return "position_ids" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def logprobs_from_logits(logits, tokens):
    """log π(y_t | ·) = log_softmax(logits)[y_t], shape [B, T] (at least float32; float64 logits stay float64,
    so that a threshold on the log-probs, as cPM's, is decided at the precision the model computed them)."""
    import torch

    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return torch.gather(logp, -1, tokens[..., None]).squeeze(-1)
