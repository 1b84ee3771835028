"""Every input of a command checked before its output directory is created, cleared or written.

:func:`check_train_inputs` is what ``prefmatch train`` runs after its config is built and before
:func:`prefmatch.llm.rundir.run_session` touches ``--out``; :func:`check_eval_inputs` the same
for ``prefmatch eval``.  Each problem is one line that names the option or config field: a model
directory that is a file, missing, without ``config.json``, weights or tokenizer; data that cannot
be read or used; lengths beyond the models' positions; an ``--out`` that contains an input.
Only configs and tokenizers are read (no weights): the checks take a fraction of a second.
"""
from __future__ import annotations

import os
from pathlib import Path

from prefmatch.llm.config import ConfigError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_holds_no_input(out, inputs: list[tuple[str, str]]) -> None:
    """``out`` must not be, or contain, an input (``--overwrite`` would move it aside, a run would
    write over it)."""
    o = Path(out).resolve()
    for name, path in inputs:
        if path and _inside(Path(path).resolve(), o):
            raise ConfigError(f"out: {out} contains the input {name} ({path}); write the run elsewhere "
                              "(another --out)")


def check_lengths(option: str, config: dict, directory, need: int, what: str) -> None:
    """``need`` tokens (prompt + response) fit the positions the model at ``directory`` declares."""
    from prefmatch.llm.models import max_positions

    n = max_positions(config)
    if n is not None and need > n:
        raise ConfigError(f"{what} = {need} exceeds the {n} positions of {option} {directory} (its config.json); "
                          f"lower them to a total of at most {n}")


def check_data(path: str, split: str, fractions, seed: int, keys, tokenizer, option: str = "data") -> int:
    """The records a stage will train on load (one line naming ``option`` otherwise); their number."""
    from prefmatch.llm.data import DataError, load_split

    p = Path(path)
    if p.is_file() and not os.access(p, os.R_OK):
        raise DataError(f"{option}: cannot read {p} (permission denied)")
    try:
        return len(load_split(path, split, fractions, seed, keys=keys, tokenizer=tokenizer))
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(f"{option}:") else f"{option}: {msg}") from None
    except OSError as e:
        raise DataError(f"{option}: cannot read {path} ({e.strerror or e})") from None


def stage_models(stage: str, cfg) -> list[tuple[str, str]]:
    """(config field, directory) of every model a stage loads, the trained one first."""
    if stage in ("sft", "rm"):
        return [("model", cfg.model)]
    if stage == "ppo":
        refs = list(cfg.ref) if not isinstance(cfg.ref, str) else [cfg.ref]
        return [("policy", cfg.policy)] + ([("reward_model", cfg.reward_model)] if cfg.reward_model else []) \
            + [("ref", r) for r in refs]
    if stage == "dpo":
        refs = list(cfg.reference) if not isinstance(cfg.reference, str) else [cfg.reference]
        return [("model", cfg.model)] + [("reference", r) for r in refs]
    raise ValueError(stage)


def check_train_inputs(stage: str, cfg, resume: bool = False) -> None:
    """All of a ``train`` stage's inputs, before any output is touched (see the module docstring)."""
    from prefmatch.llm.data import PREFERENCE_KEYS
    from prefmatch.llm.models import check_model_dir

    from prefmatch.llm.rundir import check_output_path

    models = stage_models(stage, cfg)
    check_output_path(cfg.out)
    if not resume:
        check_out_holds_no_input(cfg.out, models + [("data", cfg.data)])
    tok = None
    for name, path in models:
        d, config = check_model_dir(path, name)
        check_lengths(name, config, d, cfg.max_prompt_len + cfg.max_response_len,
                      f"max_prompt_len + max_response_len = {cfg.max_prompt_len} + {cfg.max_response_len}")
        if tok is None:
            from prefmatch.llm.tokenizer import load_tokenizer

            tok = load_tokenizer(d, what=name)
    keys = {"sft": ("prompt", getattr(cfg, "response_key", "chosen")), "ppo": ("prompt",)}.get(stage, PREFERENCE_KEYS)
    check_data(cfg.data, cfg.split, cfg.split_fractions, cfg.split_seed, keys, tok)


def check_eval_inputs(policy: str, reward_model: str, ref: str, data: str, *, max_prompt_len: int,
                      max_new_tokens: int, split: str, split_fractions, split_seed: int) -> None:
    """``prefmatch eval``'s models, data and lengths (options named as on its command line)."""
    from prefmatch.llm.models import check_model_dir
    from prefmatch.llm.tokenizer import load_tokenizer

    tok = None
    for option, path in (("--policy", policy), ("--ref", ref), ("--reward-model", reward_model)):
        d, config = check_model_dir(path, option)
        check_lengths(option, config, d, max_prompt_len + max_new_tokens,
                      f"--max-prompt-len + --max-new-tokens = {max_prompt_len} + {max_new_tokens}")
        if tok is None:
            tok = load_tokenizer(d, what=option)
    # heldout: the reward model's held-out pairs, drawn from the rm part
    check_data(data, "rm" if split == "heldout" else split, split_fractions, split_seed, ("prompt",), tok,
               option="--data")
