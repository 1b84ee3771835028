"""A small byte-level BPE tokenizer trained locally with ``tokenizers`` (no download).

Byte-level BPE starts from the 256 byte symbols, so every string can be encoded whatever the
training corpus was; the corpus only decides which merges exist.  The result is saved in
Hugging Face format (``tokenizer.json`` + ``tokenizer_config.json``) so that
``AutoTokenizer.from_pretrained(dir)`` loads it.

Special tokens: ``<|pad|>`` (id 0), ``<|bos|>`` (id 1), ``<|eos|>`` (id 2).  A distinct pad
token matters: the reward model reads its score at the last non-pad token.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = [PAD, BOS, EOS]

#: a few sentences in the hh-rlhf layout so that a tokenizer built without a corpus still has
#: useful merges for the tests and the examples
DEFAULT_CORPUS = [
    "\n\nHuman: What is your favourite colour?\n\nAssistant: I like blue, it is calm.",
    "\n\nHuman: Which season do you prefer?\n\nAssistant: I prefer autumn because of the colours.",
    "\n\nHuman: Should I drink tea or coffee?\n\nAssistant: Tea is a good choice in the afternoon.",
    "\n\nHuman: Can you recommend a book?\n\nAssistant: You could read a classic novel.",
    "\n\nHuman: How do I cook rice?\n\nAssistant: Rinse the rice, add water and simmer it.",
    "\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken cross the road? To get to the other side.",
    "The quick brown fox jumps over the lazy dog. A good answer is short, kind and helpful.",
    "I think that the best option is the first one. I would choose the second one. Yes. No. Maybe.",
]


#: the smallest vocabulary: 256 byte symbols, the special tokens and one merge
MIN_VOCAB = len(SPECIAL_TOKENS) + 256 + 1


def train_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512, min_frequency: int = 1,
                    added_tokens: Iterable[str] = ()):
    """Train a byte-level BPE on ``texts`` and return a ``PreTrainedTokenizerFast``.

    ``vocab_size`` counts the 256 byte symbols and the 3 special tokens; it must exceed 259.
    ``added_tokens``: strings that become one token each wherever they occur (matched on the raw
    text before the BPE, longest first; e.g. a task's answer words with their leading space), on
    top of ``vocab_size``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB}, got {vocab_size}")
    texts = list(texts) if texts is not None else []
    texts = texts + DEFAULT_CORPUS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    extra = [t for t in dict.fromkeys(added_tokens) if t]
    if extra:
        tok.add_tokens([AddedToken(t, normalized=False, single_word=False, lstrip=False, rstrip=False)
                        for t in extra])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=None,
        clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "right"
    return fast


def build_tokenizer(out_dir: str | os.PathLike, texts: Iterable[str] | None = None, vocab_size: int = 512,
                    added_tokens: Iterable[str] = ()):
    """Train (see :func:`train_tokenizer`) and save to ``out_dir``; returns the tokenizer."""
    tok = train_tokenizer(texts, vocab_size=vocab_size, added_tokens=added_tokens)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return tok


def require_folder(p: Path, what: str, error: type[Exception]) -> None:
    """Raise ``error`` naming ``what`` when ``p`` is a file or does not exist (the model and tokenizer checks)."""
    if p.is_file():
        raise error(f"{what}: {p} is a file, not a model directory (give the folder that holds "
                    "config.json, the weights and the tokenizer)")
    if not p.is_dir():
        raise error(f"{what}: directory not found: {p}")


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """``path``, or ``path/model`` when ``path`` is a run directory of ``prefmatch train``
    (which saves the model in its ``model/`` subfolder next to ``metrics.jsonl``)."""
    p = Path(path)
    if p.is_dir() and not (p / "config.json").is_file() and (p / "model" / "config.json").is_file():
        return p / "model"
    return p


#: files of which a model directory's tokenizer has at least one
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt",
                   "spiece.model", "merges.txt", "sentencepiece.bpe.model")


def load_tokenizer(path: str | os.PathLike, what: str = "model"):
    """``AutoTokenizer`` from a local directory; sets a pad token if missing.  Errors are one line
    that starts with ``what`` (the option or config field that named the directory): a file, a
    missing directory, a directory without a tokenizer (an empty vocabulary is refused too).

    Models whose tokenizer has no pad token (Llama, SmolLM2) get ``pad = eos``.
    """
    from transformers import AutoTokenizer

    p = resolve_model_dir(path)
    require_folder(p, what, FileNotFoundError)
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError with long messages
        raise FileNotFoundError(
            f"{what}: no usable tokenizer in {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "a model directory must hold its tokenizer"
        ) from None
    if not any((p / f).is_file() for f in TOKENIZER_FILES) or not tok("Hello", add_special_tokens=False)["input_ids"]:
        raise FileNotFoundError(f"{what}: {p} holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...; "
                                "transformers would build one that encodes text to nothing); a model directory must "
                                "hold its tokenizer")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def same_tokenizer(a, b) -> bool:
    """True when two tokenizers map every token to the same id (and agree on pad/eos)."""
    return (
        a.get_vocab() == b.get_vocab()
        and a.pad_token_id == b.pad_token_id
        and a.eos_token_id == b.eos_token_id
    )
