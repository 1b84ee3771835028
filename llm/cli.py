"""``prefmatch train {sft,rm,ppo,dpo}``, ``prefmatch model init``, ``prefmatch eval``.

Options of the ``train`` commands are generated from the config dataclasses (every field is a
``--field`` option with its help string); ``--config FILE.yaml`` gives the base values and
command-line options override them.  torch and transformers are imported inside the command
functions only, so ``prefmatch --help`` stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
from typing import Any
from collections.abc import Callable
from pathlib import Path

from prefmatch.llm.config import ConfigError, field_choices, field_help, field_range, load_config, read_yaml
from prefmatch.llm.data import DataError, load_records
from prefmatch.llm.train.dpo import DPOConfig, train_dpo
from prefmatch.llm.metrics import METRIC_NAMES, METRIC_UNITS, evaluate, run_defaults
from prefmatch.llm.models import ARCHS, ModelLoadError, SIZES, count_parameters, init_model, load_causal_lm
from prefmatch.llm.train.ppo import PPOConfig, resolve_checkpoint, train_ppo
from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
from prefmatch.llm.train.sft import SFTConfig, train_sft
from prefmatch.llm.train.rewards import RegularizerConfigError
from prefmatch.llm.tokenizer import MIN_VOCAB
from prefmatch.llm.train.loop import TrainingError, resume_config
from prefmatch.llm.rundir import check_output_dir, run_session
from prefmatch.theory.dpo import dpo_regularizers
from prefmatch.theory.validate import SEED, number
from prefmatch.theory.errors import UsageError as CLIError

#: stage → (config class, training function, help)
#: stage → (its config class, its train function, one line of help)
STAGES: dict[str, tuple[type, Callable[..., dict], str]] = {
    "sft": (SFTConfig, train_sft, "supervised fine-tuning on the response tokens"),
    "rm": (RMConfig, train_reward_model, "Bradley-Terry reward model (PM paper eq. 2.2) with pairwise accuracy"),
    "ppo": (PPOConfig, train_ppo, "PPO with a theory regularizer (--regularizer) placed where it is exact"),
    "dpo": (DPOConfig, train_dpo, "DPO: the Bradley-Terry loss of a regularizer's implicit reward beta*(log pi - b) "
            f"(--regularizer {', '.join(dpo_regularizers())})"),
}

#: stages that can continue from a checkpoint (``--resume``)
RESUMABLE = ("ppo", "dpo")


def user_errors():
    """Exception types that are the user's to fix (reported as one line, exit 2)."""
    return (ConfigError, DataError, ModelLoadError, RegularizerConfigError, TrainingError, FileNotFoundError)


def _guard(func):
    @functools.wraps(func)
    def run(args):

        try:
            return func(args)
        except user_errors() as e:
            raise CLIError(str(e)) from None

    return run


def _emit(args, result: dict, title: str) -> None:
    """The command's result, printed once: by rank 0 of a multi-process launch (the metrics in it
    are already averaged over processes)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if args.json:
        print(json.dumps(result, default=float))
        return
    print(title)
    for k, v in result.items():
        if isinstance(v, dict):
            print(f"  {k}:")
            for k2, v2 in v.items():
                print(f"    {k2:<22} {v2:.6g}" if isinstance(v2, float) else f"    {k2:<22} {v2}")
        elif isinstance(v, list):
            continue
        else:
            print(f"  {k:<24} {v:.6g}" if isinstance(v, float) else f"  {k:<24} {v}")


def _add_config_options(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field`` option per dataclass field (string values, coerced by the config loader)."""
    group = parser.add_argument_group("config fields (override the YAML file)")
    for f in dataclasses.fields(cls):
        choices = field_choices(f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        helptext = f"{field_help(f)} (default: {default!r})"
        if choices:
            helptext += f" {{{', '.join(map(str, choices))}}}"
        if field_range(f) is not None:
            helptext += f" in {field_range(f)}"
        names = [f"--{f.name.replace('_', '-')}"]  # --field_name is accepted too (prefmatch.cli.accept_underscores)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if f.type in (bool, "bool") else {}
        helptext = helptext.replace("%", "%%")  # argparse %-formats help strings
        group.add_argument(*names, dest=f"cfg__{f.name}", default=argparse.SUPPRESS, metavar="V", help=helptext,
                           **extra)
    for old in getattr(cls, "ALIASES", {}):  # an old spelling: hidden, renamed with a note by the config loader
        group.add_argument(f"--{old.replace('_', '-')}", dest=f"cfg__{old}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _overrides(args) -> dict:
    return {k[len("cfg__"):]: v for k, v in vars(args).items() if k.startswith("cfg__")}


def _stage_config(stage: str, args):
    data = read_yaml(args.config) if args.config else {}
    _check_stage_key(data, stage, args.config)
    return load_config(STAGES[stage][0], None, {**data, **_overrides(args)}, source=args.config)


@_guard
def _run_train(args) -> int:
    """Config → every input checked (:mod:`prefmatch.llm.preflight`) → the run directory claimed and
    locked (:func:`prefmatch.llm.rundir.run_session`; ``--overwrite`` keeps the old run until the
    new one has finished) → the stage's training function."""
    from prefmatch.llm.preflight import check_train_inputs

    stage = args.stage
    cls, fn = STAGES[stage][0], STAGES[stage][1]
    kwargs = {"quiet": args.json}
    resume = getattr(args, "resume", None)
    allow = getattr(args, "allow_changes", False)
    if allow and not resume:
        raise CLIError("--allow-changes: applies to --resume only")
    if resume:
        if args.overwrite:
            raise CLIError("--resume and --overwrite: give one (continue the run, or replace it)")
        ckpt = resolve_checkpoint(resume)
        explicit = {**(read_yaml(args.config) if args.config else {}), **_overrides(args)}
        _check_stage_key(explicit, stage, args.config)
        cfg = resume_config(cls, resume, explicit, ckpt / "config.yaml", allow_changes=allow)
        kwargs["resume"] = str(ckpt)
        kwargs["allow_changes"] = allow
    else:
        cfg = _stage_config(stage, args)
    check_train_inputs(stage, cfg, resume=bool(resume))
    with run_session(cfg.out, resume=bool(resume), overwrite=args.overwrite):
        result = fn(cfg, **kwargs)
    trend = reward_trend(Path(cfg.out) / "metrics.jsonl")
    if trend:
        result["reward_trend"] = trend
    _emit(args, result, f"prefmatch train {stage}: done")
    return 0


def _check_stage_key(data: dict, stage: str, source) -> None:
    """A config file may say which stage it is for (``stage: ppo``); another stage, or a value that
    is no stage, is refused.  The key is removed."""
    if "stage" not in data:
        return
    value = data.pop("stage")
    if value != stage:
        raise ConfigError(f"stage: {source or 'the config'} is for stage {value!r}, not {stage!r} (allowed here: "
                          f"{stage}; the stages: {', '.join(STAGES)})")


def reward_trend(metrics_file: Path) -> dict:
    """The mean batch reward of a run's first and last quarter of steps (one batch's reward is
    noisy; the trend is what shows that the policy learns): ``{"steps 1-5": r, "steps 16-20": r}``,
    ``{}`` when the run logged no reward or fewer than 4 steps."""
    if not metrics_file.is_file():
        return {}
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("reward"), (int, float)) and "step" in r and not r.get("final")]
    if len(rows) < 4:
        return {}
    k = len(rows) // 4
    first, last = rows[:k], rows[-k:]
    span = lambda rs: f"steps {rs[0]['step']}-{rs[-1]['step']}" if len(rs) > 1 else f"step {rs[0]['step']}"  # noqa: E731
    return {span(first): sum(r["reward"] for r in first) / k, span(last): sum(r["reward"] for r in last) / k}


def _check_args(args, ranges: dict) -> None:
    """Each named option within its declared range (the one number parser, theory/validate.py)."""
    for name, (interval, integer) in ranges.items():
        value = getattr(args, name)
        if value is None:
            continue
        try:
            number(f"--{name.replace('_', '-')}", value, interval, integer=integer)
        except ValueError as e:
            raise CLIError(str(e)) from None


@_guard
def _run_model_init(args) -> int:

    if args.size not in SIZES:
        raise CLIError(f"--size: must be one of {', '.join(SIZES)}, got {args.size!r}")
    if args.arch not in ARCHS:
        raise CLIError(f"--arch: must be one of {', '.join(ARCHS)}, got {args.arch!r}")
    _check_args(args, {"vocab_size": (f"[{MIN_VOCAB}, 1000000]", True), "seed": (SEED, True)})
    out = check_output_dir(args.out, "out")
    if (out / "config.json").exists() and not args.overwrite:
        raise CLIError(f"--out: {out} already holds a model; pass --overwrite to replace it or choose another --out")
    texts = None
    if args.corpus:

        recs = load_records(args.corpus, keys=("prompt",))
        texts = [" ".join(str(v) for v in r.values() if isinstance(v, str)) for r in recs]
    out = init_model(args.out, size=args.size, arch=args.arch, texts=texts, vocab_size=args.vocab_size,
                     seed=args.seed)
    n = count_parameters(load_causal_lm(out))
    _emit(args, {"out": str(out), "size": args.size, "arch": args.arch, "parameters": n},
          "prefmatch model init: done")
    return 0


@_guard
def _run_eval(args) -> int:
    from prefmatch.llm.preflight import check_eval_inputs

    _check_args(args, {"n_prompts": ("[1, inf)", True), "max_new_tokens": ("[1, inf)", True),
                       "max_prompt_len": ("[1, inf)", True), "seed": (SEED, True)})
    run = run_defaults(args.policy)
    opts: dict[str, Any] = {k: getattr(args, k) if getattr(args, k) is not None else run.get(k, fallback)
            for k, fallback in (("reward_model", None), ("ref", None), ("data", None), ("max_new_tokens", 64),
                                ("max_prompt_len", 256))}
    config = next((c for c in (Path(args.policy) / "config.yaml", Path(args.policy).parent / "config.yaml")
                   if c.is_file()), None)
    for k in ("reward_model", "ref", "data"):
        if not opts[k]:
            where = (f"the run's {config} names no {k}" + (" (a DPO run has no reward model: give one trained by "
                                                           "`prefmatch train rm`)" if k == "reward_model" else "")
                     if config is not None else
                     f"the policy {args.policy} is not inside a `prefmatch train` run directory whose config.yaml "
                     "names it")
            raise CLIError(f"--{k.replace('_', '-')}: required ({where})")
    check_eval_inputs(args.policy, opts["reward_model"], opts["ref"], opts["data"],
                      max_prompt_len=opts["max_prompt_len"], max_new_tokens=opts["max_new_tokens"], split=args.split,
                      split_fractions=run.get("split_fractions", (0.2, 0.4, 0.4)), split_seed=run.get("split_seed", 0))
    try:
        res = evaluate(args.policy, opts["reward_model"], opts["ref"], opts["data"], n_prompts=args.n_prompts,
                       max_new_tokens=opts["max_new_tokens"], max_prompt_len=opts["max_prompt_len"], seed=args.seed,
                       split=args.split, split_fractions=run.get("split_fractions", (0.2, 0.4, 0.4)),
                       split_seed=run.get("split_seed", 0))
    except ValueError as e:  # tokenizer mismatch, non-finite models
        raise CLIError(str(e)) from None
    res["settings"] = {"split": args.split, **{k: opts[k] for k in ("data", "max_new_tokens", "max_prompt_len")}}
    res["units"] = METRIC_UNITS
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{'metric':<16}{'value':>12}  unit")
    for k in METRIC_NAMES:
        print(f"{k:<16}{res[k]:>12.4f}  {METRIC_UNITS[k]}")
    print(f"{'prompts':<16}{res['n_prompts']:>12d}  split {args.split!r} of {opts['data']}, "
          f"{opts['max_new_tokens']} new tokens")
    return 0


@_guard
def _run_export(args) -> int:
    from prefmatch.llm.export import export_model

    res = export_model(args.run, args.out, overwrite=args.overwrite)
    _emit(args, res, f"prefmatch export: done; load it with {res['class']}.from_pretrained({res['out']!r})")
    return 0


@_guard
def _run_data_synth(args) -> int:
    from prefmatch.llm.data import synthetic_preferences, write_jsonl

    _check_args(args, {"n": ("[1, 10000000]", True), "seed": (SEED, True)})
    out = Path(args.out)
    if not str(args.out).strip():
        raise CLIError("--out: an empty path; give a file such as prefs.jsonl")
    if out.is_dir():
        raise CLIError(f"--out: {out} is a directory; give a file such as {out / 'prefs.jsonl'}")
    if out.exists() and not args.overwrite:
        raise CLIError(f"--out: {out} exists; pass --overwrite to replace it")
    check_output_dir(out.parent if str(out.parent) else ".", "out")
    recs = synthetic_preferences(args.n, seed=args.seed)
    write_jsonl(recs, out)
    _emit(args, {"out": str(out), "records": len(recs), "keys": "prompt, chosen, rejected"},
          "prefmatch data synth: done")
    return 0


def register(subparsers) -> None:
    """Add ``train``, ``model`` and ``eval`` to the top-level ``prefmatch`` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    # --- train {sft,rm,ppo}
    train = subparsers.add_parser("train", help="train a stage: sft, rm (reward model), ppo or dpo",
                                  description="Train one RLHF stage from a YAML config and --key value overrides.")
    stages = train.add_subparsers(dest="stage", metavar="STAGE", title="stages")
    stages.required = True
    for stage, (cls, _, helptext) in STAGES.items():
        p = stages.add_parser(stage, help=helptext, description=helptext, formatter_class=fmt)
        p.add_argument("--config", metavar="FILE.yaml", help="YAML file of config fields")
        p.add_argument("--json", action="store_true", help="print the result as JSON; no progress bar")
        if stage in RESUMABLE:
            p.add_argument("--resume", metavar="DIR", help="continue from a checkpoint (or a run directory: its "
                           "newest valid checkpoint) with the run's saved config; an option that conflicts with it, "
                           "or changed data, is an error; a finished run is left as it is")
            p.add_argument("--allow-changes", action="store_true", help="with --resume: continue although the data "
                           "file or a config field that defines the objective differs from the run's")
        p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (without it, "
                       "a directory holding a run is refused); the old run is kept aside until the new one has "
                       "finished and comes back if it fails")
        _add_config_options(p, cls)
        p.set_defaults(func=_run_train, stage=stage)

    # --- model init
    model = subparsers.add_parser("model", help="build models locally (no download)")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", title="actions")
    msub.required = True
    init = msub.add_parser("init", help="write a random GPT-2/Llama-style model + tokenizer in HF format",
                           description="Randomly initialised causal LM and a byte-level BPE tokenizer trained "
                           "locally, saved so that from_pretrained(DIR) loads them.")
    init.add_argument("--size", default="tiny", help="tiny (~0.2M parameters) or small (~4M)")
    init.add_argument("--arch", default="gpt2", help="gpt2 or llama")
    init.add_argument("--out", required=True, metavar="DIR", help="output directory")
    init.add_argument("--corpus", metavar="FILE", help="jsonl whose string fields train the tokenizer")
    init.add_argument("--vocab-size", type=int, default=None,
                      help=f"tokenizer vocabulary, at least {MIN_VOCAB} (256 bytes + 3 special tokens + 1; default by size)")
    init.add_argument("--seed", type=int, default=0, help="initialisation seed")
    init.add_argument("--json", action="store_true", help="print the result as JSON")
    init.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    init.set_defaults(func=_run_model_init)

    # --- data synth
    data = subparsers.add_parser("data", help="preference data: write a synthetic prefs.jsonl")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", title="actions")
    dsub.required = True
    synth = dsub.add_parser("synth", help="write a synthetic hh-rlhf-style prefs.jsonl (prompt, chosen, rejected)",
                            description="A small preference set where the chosen answer is a polite, on-topic "
                            "sentence and the rejected one a curt reply (what the tests and examples train on). "
                            "The trainers also read raw hh-rlhf lines, TRL's conversational format and "
                            "`datasets` directories.")
    synth.add_argument("--out", required=True, metavar="FILE", help="output .jsonl file")
    synth.add_argument("--n", type=int, default=200, help="number of records (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    synth.add_argument("--json", action="store_true", help="print the result as JSON")
    synth.set_defaults(func=_run_data_synth)

    # --- eval
    ev = subparsers.add_parser("eval", help="PM divergence, perplexity, entropy, length, KL (PM paper §6.1)",
                               description="Sample two responses per prompt from the policy and report the "
                               "PM paper's Section 6.1 metrics.")
    ev.add_argument("--policy", required=True, metavar="DIR",
                    help="policy model directory, or a `prefmatch train ppo`/`dpo` run directory (its config.yaml "
                    "gives the defaults of the options below)")
    ev.add_argument("--reward-model", metavar="DIR", help="reward model directory (default: the run's)")
    ev.add_argument("--ref", metavar="DIR", help="reference model directory for the KL (default: the run's "
                    "reference, else its initial policy)")
    ev.add_argument("--data", metavar="FILE", help="prompts: jsonl with 'prompt' or a datasets dir (default: the "
                    "run's data, with its seeded split)")
    ev.add_argument("--split", default="heldout", choices=("heldout", "all", "sft", "rm", "rl"),
                    help="prompts to evaluate on (default heldout: the reward model's held-out pairs, which no stage "
                    "trains on; DPO with the same seed and eval_fraction holds out the same pairs), or a part of the "
                    "seeded SFT/RM/RL split (SFT trains on sft, the reward model and DPO on rm, PPO on rl)")
    ev.add_argument("--n-prompts", type=int, default=64, help="number of prompts evaluated")
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="generation length (default: the run's max_response_len, else 64)")
    ev.add_argument("--max-prompt-len", type=int, default=None, help="prompt tokens kept (default: the run's, else 256)")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--json", action="store_true", help="print JSON (with instance PM divergences)")
    ev._option_string_actions["--reward"] = ev._option_string_actions["--reward-model"]  # the old spelling
    ev.set_defaults(func=_run_eval)

    # --- export
    ex = subparsers.add_parser("export", help="a run's model as a plain Hugging Face directory (from_pretrained)",
                               description="Copy the model of a `prefmatch train` run (RUN/model) to --out as a "
                               "folder that the standard classes load with from_pretrained(DIR): "
                               "AutoModelForCausalLM for sft, ppo and dpo runs, AutoModelForSequenceClassification "
                               "for a reward model, whose normalization (normalize: true) is folded into its weights "
                               "so that the standard class gives the normalized score.")
    ex.add_argument("run", metavar="RUN", help="a `prefmatch train` run directory (or its model folder)")
    ex.add_argument("--out", required=True, metavar="DIR", help="output directory")
    ex.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    ex.add_argument("--json", action="store_true", help="print the result as JSON")
    ex.set_defaults(func=_run_export)
    # the opinion benchmark registers its own command (prefmatch.llm.opinion_cli)
