"""The prepared GPU check: SFT → reward model → PPO (KL and conditional PM) on one device, timed.

On a CUDA device it builds a Llama-style model of about 160 M parameters (``--size gpu``: hidden 1024,
12 layers, a tokenizer trained on the synthetic data), saves it in **bf16** (so the run also checks
that a low-precision checkpoint trains in float32 master weights), and runs each stage for
``--steps`` optimizer steps / PPO iterations with ``mixed_precision: auto`` (bf16 autocast on CUDA,
frozen reference and reward model in bf16).  Without CUDA (CI) the same code runs on the tiny model
(``--size tiny``) in float32.  Then TRL's GRPO (the ``trl`` extra) on the same model, batch
(completions per step) and completion length, for the ratio of tokens/s.

Printed (and written with ``--markdown``/``--json``), one row per stage: optimizer steps, seconds
per step, throughput (SFT: trained response tokens/s; reward model: pairs/s; PPO and GRPO:
generated tokens/s), peak memory (CUDA: ``max_memory_allocated`` per stage; CPU: the process's peak
RSS so far) and, for PPO, the share of the iteration spent inside model calls (generate, forward,
backward, optimizer step).  The PPO rows are timed after one warm-up iteration.

    python benchmarks/gpu_check.py [--size gpu|tiny] [--steps 10] [--batch 64] [--gen-len 128] \\
        [--markdown FILE] [--json FILE] [--no-grpo]

``make gpu-check`` runs it with the defaults (about 3 minutes on one H100, estimated; not yet
measured: no GPU was available when it was written) and writes ``out/gpu_check.{md,json}``;
``tests/llm/test_gpu_check.py`` runs it on CPU with the tiny model.  The docs' GPU table
(``docs/results/gpu_check.md``) is this script's ``--markdown`` output.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

GPU_SIZE = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
                num_key_value_heads=16, max_position_embeddings=1024)


def build_model(work: Path, size: str, n_records: int, seed: int) -> dict:
    """Synthetic preference data and a base model saved in bf16 (``tiny``: the test model; ``gpu``: ~160 M)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from prefmatch.llm.data import synthetic_preferences, write_jsonl
    from prefmatch.llm.models import init_model, quiet_transformers
    from prefmatch.llm.tokenizer import build_tokenizer

    recs = synthetic_preferences(n_records, seed=seed)
    data = write_jsonl(recs, work / "data.jsonl")
    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in recs]
    base = work / "base"
    if size == "tiny":
        init_model(base, "tiny", texts=texts, seed=seed)
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    else:
        quiet_transformers()
        tok = build_tokenizer(base, texts=texts, vocab_size=8192)
        cfg = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, tie_word_embeddings=True, attention_dropout=0.0, **GPU_SIZE)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
    model.to(torch.bfloat16).save_pretrained(str(base))  # a bf16 checkpoint: trained in fp32 master weights
    return {"data": str(data), "base": str(base), "parameters": sum(p.numel() for p in model.parameters())}


class Peak:
    """Peak memory of a stage: CUDA's max allocated (reset per stage), else the process's peak RSS."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def start(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def mib(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def supervised_row(stage: str, setup: dict, a, peak: Peak) -> dict:
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    common = dict(data=setup["data"], split="all", batch_size=a.batch, steps=a.steps, lr=1e-5,
                  max_prompt_len=a.prompt_len, max_response_len=a.gen_len, seed=a.seed, cpu=a.cpu,
                  lr_scheduler="cosine")
    peak.start()
    t0 = time.perf_counter()
    if stage == "sft":
        res = train_sft(load_config(SFTConfig, overrides=dict(model=setup["base"], out=str(Path(a.work) / "sft"),
                                                              **common)), quiet=True)
        setup["sft"] = res["out"]
        amount, unit = res["tokens"], "response tokens/s"
    else:
        res = train_reward_model(load_config(RMConfig, overrides=dict(model=setup["sft"], out=str(Path(a.work) / "rm"),
                                                                      eval_fraction=0.0, **common)), quiet=True)
        setup["rm"] = res["out"]
        amount, unit = res["steps"] * a.batch, "pairs/s"
    secs = time.perf_counter() - t0  # includes loading and saving: an upper bound of the step time
    return {"stage": stage, "steps": res["steps"], "step_time_s": secs / max(1, res["steps"]),
            "throughput": amount / secs, "unit": unit, "peak_mib": peak.mib(), "model_time_fraction": None,
            "finite": res["loss"] == res["loss"]}


def ppo_row(regularizer: str, setup: dict, a, peak: Peak) -> dict:
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    params = {"alpha": 0.3, "level": "token"} if regularizer == "cpm" else {}
    cfg = load_config(PPOConfig, overrides=dict(
        data=setup["data"], policy=setup["sft"], reward_model=setup["rm"], out=str(Path(a.work) / f"ppo_{regularizer}"),
        split="all", steps=a.steps + 1, batch_size=a.batch, mini_batch_size=max(1, a.batch // 4), max_prompt_len=a.prompt_len,
        max_response_len=a.gen_len, lr=1e-6, beta=0.1, regularizer=regularizer, regularizer_params=params,
        cpu=a.cpu, seed=a.seed, lr_scheduler="cosine"))
    peak.start()
    trainer = PPOTrainer(cfg, quiet=True)
    trainer.step()  # warm-up (kernels, allocator)
    tokens = seconds = model_seconds = 0.0
    finite = True
    for _ in range(a.steps):
        m = trainer.step()
        tokens += m["tokens_per_s"] * m["step_time_s"]
        seconds += m["step_time_s"]
        model_seconds += m["model_time_fraction"] * m["step_time_s"]
        finite &= all(v == v for v in (m["policy_loss"], m["value_loss"], m["reward"], m["kl"]))
    return {"stage": f"ppo ({regularizer})", "steps": a.steps, "step_time_s": seconds / a.steps,
            "throughput": tokens / seconds, "unit": "generated tokens/s", "peak_mib": peak.mib(),
            "model_time_fraction": model_seconds / seconds, "finite": finite}


def grpo_row(setup: dict, a, peak: Peak) -> dict | str:
    """TRL's GRPOTrainer on the SFT model: same completions per step and completion length."""
    try:
        import trl  # noqa: F401
    except ImportError:
        return "TRL not installed (pip install -e '.[trl]')"
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from trl_timing import read_prompts, reward_len, step_timer, timed_train

    tok = AutoTokenizer.from_pretrained(setup["sft"])
    prompts = read_prompts(setup["data"])
    stamp, stamps = step_timer()
    cuda = not a.cpu and torch.cuda.is_available()
    n_gen = 4 if a.batch % 4 == 0 else 1
    cfg = GRPOConfig(output_dir=str(Path(a.work) / "grpo"), per_device_train_batch_size=a.batch,
                     gradient_accumulation_steps=1, num_generations=n_gen, max_completion_length=a.gen_len,
                     max_steps=a.steps + 1, learning_rate=1e-6, report_to=[], save_strategy="no", logging_steps=1,
                     use_cpu=not cuda, bf16=cuda, seed=a.seed, disable_tqdm=True, beta=0.1)
    peak.start()
    model = AutoModelForCausalLM.from_pretrained(setup["sft"], dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_len, args=cfg,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                          callbacks=[stamp])
    per_step = timed_train(trainer, stamps, quiet=True)
    lengths = [r["completions/mean_length"] for r in trainer.state.log_history if "completions/mean_length" in r][1:]
    mean_len = sum(lengths) / len(lengths) if lengths else float(a.gen_len)
    secs = sum(per_step)
    return {"stage": "trl grpo", "steps": len(per_step), "step_time_s": secs / len(per_step),
            "throughput": a.batch * mean_len * len(per_step) / secs, "unit": "generated tokens/s",
            "peak_mib": peak.mib(), "model_time_fraction": None, "finite": True}


def markdown(result: dict) -> str:
    """The docs' GPU table (``docs/results/gpu_check.md`` is this function's output)."""
    s = result["setup"]
    lines = [f"<!-- written by `{result['command']}`; do not edit -->",
             f"Run on {s['date']}, {s['device']}, torch {s['torch']}; load average {s['load']:.1f} at the end.", "",
             f"Model: {s['size']} ({s['parameters'] / 1e6:.1f} M parameters, saved in bf16, "
             f"trained in float32 master weights{', bf16 autocast' if s['cuda'] else ''}); batch {s['batch']}, "
             f"prompt ≤ {s['prompt_len']} and response ≤ {s['gen_len']} tokens, {s['steps']} timed steps per stage.",
             "", "| stage | steps | s / step | throughput | unit | peak memory (MiB) | model-time share |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        share = "—" if r["model_time_fraction"] is None else f"{100 * r['model_time_fraction']:.0f} %"
        lines.append(f"| {r['stage']} | {r['steps']} | {r['step_time_s']:.3f} | {r['throughput']:.1f} | {r['unit']} | "
                     f"{r['peak_mib']:.0f} | {share} |")
    lines.append("")
    if result.get("grpo_ratio") is not None:
        lines.append(f"PPO (KL) tokens/s ÷ TRL GRPO tokens/s: **{result['grpo_ratio']:.2f}** "
                     "(same model, completions per step and completion length; GRPO samples 4 completions per prompt "
                     "and has no value model).")
    else:
        lines.append(f"TRL GRPO: {result.get('grpo_note', 'not run')}.")
    lines += ["", "Peak memory: "
              + ("CUDA max_memory_allocated per stage." if s["cuda"] else
                 "the process's peak RSS so far (CPU; it only grows from stage to stage)."), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("gpu", "tiny"), default=None,
                   help="gpu: ~160 M Llama-style model (default on CUDA); tiny: the test model (default on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per stage (default 10 on CUDA, 2 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size: sequences per step (default 64 / 8)")
    p.add_argument("--gen-len", type=int, default=None, help="response tokens (default 128 / 8)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens kept (default 128 / 24)")
    p.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is present")
    p.add_argument("--no-grpo", action="store_true", help="skip TRL's GRPO")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--markdown", metavar="FILE", help="write the table (the docs' GPU table format)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    a = p.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not a.cpu
    a.cpu = not cuda
    a.size = a.size or ("gpu" if cuda else "tiny")
    big = a.size == "gpu"
    a.steps = a.steps or (10 if big else 2)
    a.batch = a.batch or (64 if big else 8)
    a.gen_len = a.gen_len or (128 if big else 8)
    a.prompt_len = a.prompt_len or (128 if big else 24)
    for name in ("steps", "batch", "gen_len", "prompt_len"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(a, name)}")
    with tempfile.TemporaryDirectory() as tmp:
        a.work = a.work or tmp
        Path(a.work).mkdir(parents=True, exist_ok=True)
        setup = build_model(Path(a.work), a.size, n_records=max(64, 4 * a.batch), seed=a.seed)
        peak = Peak(cuda)
        rows = [supervised_row("sft", setup, a, peak), supervised_row("rm", setup, a, peak),
                ppo_row("kl", setup, a, peak), ppo_row("cpm", setup, a, peak)]
        grpo = None if a.no_grpo else grpo_row(setup, a, peak)
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                         f"{torch.get_num_threads()} threads)"
    result = {"setup": {"device": device, "cuda": cuda, "size": a.size, "parameters": setup["parameters"],
                        "batch": a.batch, "gen_len": a.gen_len, "prompt_len": a.prompt_len, "steps": a.steps,
                        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                        "load": os.getloadavg()[0]},
              "rows": rows, "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if isinstance(grpo, dict):
        result["rows"].append(grpo)
        result["grpo_ratio"] = rows[2]["throughput"] / grpo["throughput"]
    else:
        result["grpo_note"] = grpo or "skipped (--no-grpo)"
    text = markdown(result)
    print(text)
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    ok = all(r["finite"] for r in rows)
    if not ok:
        print("gpu_check: a stage produced a non-finite loss", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
