r"""The convergence battery through TRL: one-token completions on a tiny HF causal LM.

A GPT-2-style model (one layer, untied output layer) over a vocabulary of ``V`` word tokens,
one prompt, completions of exactly one token (so every response is a token and the optimum is a
distribution over the vocabulary), a known reward per token.  The reference is the model as
initialised (its output layer scaled so that π_ref is far from uniform); the policy starts at it.
:class:`~prefmatch.llm.integrations.trl.PMGRPOTrainer` or ``PMRLOOTrainer`` trains it with TRL's
own loop (generation, group normalization, clipped loss, AdamW with a linearly decaying learning
rate), and the trained policy's next-token distribution is compared in total variation with
``reg.optimal_logp(r, log π_ref)``.  TRL's own GRPO (k3 in the loss) runs on the same problem,
and its fixed point is compared with what the ``grad.*`` checks predict for it: with the
importance ratio (``use_bias_correction_kl``, TRL's default) the row "ρ·k3 as a loss" — the
reverse KL's optimum on one-token completions —, without it the row "k3 as a loss" — the
*forward* KL's, ``fdiv(f=reverse_kl)`` —, each at β·G/(G−1): TRL's group-mean baseline shrinks
the reward's part of the update by (G−1)/G (E[(R_i − mean_g R)∇log π(y_i)] = (1 − 1/G)·E[R∇log π])
while the KL loss keeps its full weight.

``python -m prefmatch.llm.battery.trl [--json]`` prints the table.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: the tolerance of the TRL battery (total variation over the vocabulary)
TV_TOL = 0.02
BETA = 0.5
VOCAB = 6


@dataclass(frozen=True)
class TRLCase:
    """One configuration: trainer (``grpo``, ``rloo``, or ``trl-grpo`` for TRL's own k3 loss)."""
    trainer: str
    regularizer: str = "kl"
    params: dict = field(default_factory=dict)
    scale_rewards: str = "none"  # GRPO's normalization (TRL's default "group" is refused)
    loss_type: str = "dapo"  # GRPO's aggregation: TRL's default
    bias_correction: bool = True  # trl-grpo only: TRL's use_bias_correction_kl
    steps: int = 150
    length: int = 1  # max_completion_length: completions end at EOS (lengths 1..length) or are cut there
    generations: int = 8  # the group size G

    @property
    def id(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        extra = f" G={self.generations}" + (f" T=1..{self.length}+EOS" if self.length > 1 else "")
        if self.trainer == "trl-grpo":
            return (f"trl GRPOTrainer (k3 loss, use_bias_correction_kl={self.bias_correction}) "
                    f"scale={self.scale_rewards}{extra}")
        if self.trainer == "grpo":
            extra = f" scale={self.scale_rewards} loss_type={self.loss_type}" + extra
        return f"{self.trainer} {self.regularizer}[{p}]{extra}"


def build_problem(work: Path, n_refs: int = 1, seed: int = 0):
    """Write the tiny model(s) and tokenizer under ``work``; (policy dir, [ref dirs], reward [V])."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=words[0], eos_token=words[-1], unk_token=words[0])
    rng = np.random.default_rng(seed)
    dirs = []
    for k in range(n_refs):
        torch.manual_seed(seed + k)
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=8, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False, pad_token_id=0,
                         bos_token_id=0, eos_token_id=VOCAB - 1)
        m = GPT2LMHeadModel(cfg)
        with torch.no_grad():  # a reference far from uniform: logits of order 1
            m.lm_head.weight.copy_(torch.tensor(rng.normal(scale=0.35, size=(VOCAB, 16)), dtype=torch.float32))
        d = work / f"model{k}"
        m.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    reward = rng.normal(size=VOCAB)
    return dirs, reward


def response_logp(model_or_dir, tokens: np.ndarray, mask: np.ndarray, prompt: str = "w1") -> np.ndarray:
    """log π(y_t | prompt, y_<t) of every enumerated completion [n, T] (0 past its end; temperature 1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = model_or_dir
    model = AutoModelForCausalLM.from_pretrained(d) if isinstance(d, (str, Path)) else d
    tok = AutoTokenizer.from_pretrained(Path(d) if isinstance(d, (str, Path)) else model.name_or_path)
    p = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    ids = torch.cat([p.expand(len(tokens), -1), torch.as_tensor(tokens)], 1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, len(p) - 1:-1].double()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, len(p):, None]).squeeze(-1).numpy()
    return lp * mask


def next_token_logp(model_or_dir, prompt: str = "w1") -> np.ndarray:
    """log π(· | prompt) over the vocabulary (temperature 1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = model_or_dir
    model = AutoModelForCausalLM.from_pretrained(d) if isinstance(d, (str, Path)) else d
    tok = AutoTokenizer.from_pretrained(Path(d) if isinstance(d, (str, Path)) else model.name_or_path)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].double()
    return torch.log_softmax(logits, -1).numpy()


def run_case(case: TRLCase, *, work: Path | None = None, seed: int = 0, batch: int = 64,
             lr: float = 0.03) -> dict:
    """Train one case; ``{"id", "tv", "tv_at_start", "target", ...}``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig

    from prefmatch.llm.integrations.trl import PMGRPOTrainer, PMRLOOTrainer, regularizer_from_config
    from prefmatch.theory import regularizers
    from prefmatch.theory.responses import enumerate_responses

    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory(prefix="trl_battery_") if work is None else None
    work = Path(tmp.name) if tmp is not None else Path(work)  # type: ignore[arg-type]  # one of the two is set
    n_refs = len(case.params.get("weights", ())) or 1
    dirs, token_reward = build_problem(work, n_refs=n_refs, seed=seed)
    tokens, mask = enumerate_responses(VOCAB, case.length, eos=VOCAB - 1)  # every completion TRL can sample
    # one-token completions: the reward of each token; longer ones: a reward per completion
    reward = token_reward[tokens[:, 0]] if case.length == 1 else np.random.default_rng(seed + 1).normal(
        size=len(tokens))
    tok = AutoTokenizer.from_pretrained(dirs[0])
    policy = AutoModelForCausalLM.from_pretrained(dirs[0])
    ref_logp = np.stack([response_logp(d, tokens, mask) for d in dirs]) if n_refs > 1 else response_logp(
        dirs[0], tokens, mask)
    table = {tuple(t[m > 0].tolist()): float(x) for t, m, x in zip(tokens, mask, reward)}

    def reward_fn(completions, completion_ids, **kw):
        return [table[tuple(c)] for c in completion_ids]

    generations = case.generations
    ds = Dataset.from_dict({"prompt": ["w1"] * (batch * case.steps // generations + batch)})
    common = dict(output_dir=str(work / "out"), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                  num_generations=generations, max_completion_length=case.length, max_steps=case.steps,
                  learning_rate=lr,
                  beta=BETA, report_to=[], save_strategy="no", logging_steps=10 ** 6, use_cpu=True, bf16=False,
                  seed=seed, disable_tqdm=True, temperature=1.0, warmup_steps=0, weight_decay=0.0,
                  lr_scheduler_type="linear", max_grad_norm=0.0)
    if case.trainer in ("rloo", "grpo"):
        if case.trainer == "rloo":
            cfg, trainer_cls = RLOOConfig(**common), PMRLOOTrainer
        else:
            cfg, trainer_cls = GRPOConfig(**common, scale_rewards=case.scale_rewards, loss_type=case.loss_type), PMGRPOTrainer
        reg, placement = regularizer_from_config(case.regularizer, case.params, BETA)
        refs = [AutoModelForCausalLM.from_pretrained(d) for d in dirs] if n_refs > 1 else None
        trainer = trainer_cls(model=policy, reward_funcs=reward_fn, args=cfg, train_dataset=ds,
                              processing_class=tok, regularizer=case.regularizer,
                              regularizer_params=case.params, ref_model=refs)
    elif case.trainer == "trl-grpo":
        cfg = GRPOConfig(**common, scale_rewards=case.scale_rewards, loss_type=case.loss_type,
                         use_bias_correction_kl=case.bias_correction)
        # what the grad.* checks predict: ρ·k3 as a loss → the reverse KL; k3 alone → the forward KL;
        # both at β·G/(G−1), the group-mean baseline shrinking the reward's part by (G−1)/G
        beta_eff = BETA * generations / (generations - 1)
        reg = (regularizers.kl(beta=beta_eff) if case.bias_correction
               else regularizers.f_divergence("reverse_kl", beta=beta_eff))
        placement = ("ρ·k3 loss: reverse KL" if case.bias_correction else "k3 loss: forward KL") + " at β·G/(G−1)"
        trainer = GRPOTrainer(model=policy, reward_funcs=reward_fn, args=cfg, train_dataset=ds, processing_class=tok)
    else:
        raise ValueError(f"trainer: must be grpo, rloo or trl-grpo, got {case.trainer!r}")
    with contextlib.redirect_stdout(sys.stderr):  # the HF Trainer prints its summary: keep stdout for the table
        trainer.train()
    trained = trainer.model.cpu().eval() if hasattr(trainer.model, "cpu") else trainer.model
    logp = response_logp(trained, tokens, mask).sum(-1)
    target = reg.sequence_optimal_logp(reward, ref_logp, mask)
    start_logp = (ref_logp[0] if n_refs > 1 else ref_logp).sum(-1)
    tv = 0.5 * float(np.abs(np.exp(logp) - np.exp(target)).sum())
    out = {"id": case.id, "placement": placement, "tv": tv,
           "tv_at_start": 0.5 * float(np.abs(np.exp(start_logp) - np.exp(target)).sum()),
           "policy": np.exp(logp).round(4).tolist(), "target": np.exp(target).round(4).tolist()}
    if case.trainer == "trl-grpo":  # how far TRL's fixed point is from the optimum of E[r] − β·KL(π‖π_ref)
        kl_opt = regularizers.kl(beta=BETA).sequence_optimal_logp(reward, ref_logp, mask)
        out["tv_to_kl_optimum"] = 0.5 * float(np.abs(np.exp(logp) - np.exp(kl_opt)).sum())
    if tmp:
        tmp.cleanup()
    return out


#: the battery: every affine family, TRL's loss types and group sizes 2-16, three references,
#: non-affine regularizers in loss placement (loss_type="dr_grpo"), both trainers, and TRL's own k3
#: loss beside them; scale_rewards="none" (the only scaling accepted).  One-token completions: on
#: longer ones the tiny GPT-2 samples rare prefixes too seldom to converge in budget (their
#: exactness is the ``grad.grpo_scaling_and_loss_type`` check's)
CASES = [
    TRLCase("grpo", "kl"),
    TRLCase("grpo", "pm", {"c1": 0.4}),
    TRLCase("grpo", "cpm", {"alpha": 0.2}),
    TRLCase("grpo", "maxent"),
    TRLCase("grpo", "multi_rkl", {"weights": [0.3, 0.7]}),
    TRLCase("grpo", "multi_rkl", {"weights": [0.2, 0.3, 0.5]}),
    TRLCase("grpo", "kl", loss_type="grpo"),
    TRLCase("grpo", "kl", loss_type="bnpo"),
    TRLCase("grpo", "kl", loss_type="dr_grpo"),
    TRLCase("grpo", "kl", generations=2),
    TRLCase("grpo", "kl", generations=16),
    TRLCase("grpo", "fdiv", {"f": "chi2"}, loss_type="dr_grpo"),
    TRLCase("grpo", "kl", {"estimator": "k3"}, loss_type="dr_grpo", steps=600),
    TRLCase("rloo", "kl"),
    TRLCase("rloo", "pm", {"c1": 0.4}),
    TRLCase("rloo", "cpm", {"alpha": 0.2}),
    TRLCase("rloo", "maxent"),
    TRLCase("rloo", "multi_rkl", {"weights": [0.3, 0.7]}),
    TRLCase("rloo", "fdiv", {"f": "chi2"}),
    TRLCase("trl-grpo", bias_correction=True, steps=600),
    TRLCase("trl-grpo", bias_correction=False, steps=600),
]


def format_table(rows: list[dict]) -> str:
    lines = ["| configuration | placement (optimum compared with) | TV to that optimum (start) | "
             "TV to the E[r] − β·KL optimum | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        ok = "pass" if r["tv"] <= TV_TOL else "FAIL"
        kl = f"{r['tv_to_kl_optimum']:.4f}" if "tv_to_kl_optimum" in r else "—"
        lines.append(f"| `{r['id']}` | {r['placement']} | {r['tv']:.4f} ({r['tv_at_start']:.3f}) | {kl} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from prefmatch.llm.battery.ppo import battery_parser

    ap = battery_parser("prefmatch.llm.battery.trl", "The convergence battery through TRL's GRPO and RLOO trainers.",
                        "trl_battery_table.md", quick=False)
    ap.add_argument("--only", default=None, help="run the cases whose id contains this text")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if a.only is None or a.only in c.id]
    rows = [run_case(c) for c in cases]
    print(json.dumps(rows, indent=1) if a.json else format_table(rows))
    if a.markdown:
        import trl

        from prefmatch.llm.battery.ppo import write_markdown

        n_ok = sum(r["tv"] <= TV_TOL for r in rows)
        write_markdown(a.markdown, f"python -m prefmatch.llm.battery.trl --markdown {a.markdown}",
                       f"{len(rows)} configurations, {n_ok} within TV {TV_TOL} of the optimum they are compared "
                       f"with; β = {BETA}, vocabulary {VOCAB}, 64 completions (8 prompts × G = 8) per step",
                       format_table(rows), versions=(f"trl {trl.__version__}",))
    return 1 if any(r["tv"] > TV_TOL for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
