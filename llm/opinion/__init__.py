"""The opinion benchmark: preference collapse and PM divergence in a world with known ground truth,
measured as the PM paper's Section 6 measures it.

One concern per module:

* :mod:`.world` — the generated world (prompts, enumerable answers, ground truth, data, split);
* :mod:`.exact` — exact metrics over the answer sets;
* :mod:`.sampled` — the paper's §6.1 metrics by sampling (the sampler of :mod:`prefmatch.llm.metrics`);
* :mod:`.optimum` — the theory's optimum of each objective on the same answer sets;
* :mod:`.config` — the benchmark configuration and its grid of runs;
* :mod:`.pipeline` — SFT → reward model → PPO/DPO per run → evaluation, over seeds and biases;
* :mod:`.aggregate` — rows, intervals, the Table-3-shaped grid, the phase diagram, the claims;
* :mod:`.figures` and :mod:`.report` — the figures and the generated results page.

The names below are re-exported for convenience (``from prefmatch.llm.opinion import build_corpus``);
each is documented in its module.
"""
from prefmatch.llm.opinion.aggregate import (PAPER_TABLE3_PM_DIVERGENCE, ROW_KEYS, mean_ci, paper_reduction,  # noqa: F401
                                             bootstrap_reduction_ci, rm_eval_pairs, wilson_ci)
from prefmatch.llm.opinion.config import FULL, PAPER_ALPHAS, PAPER_BETAS, QUICK, BenchmarkConfig, Run, grid
from prefmatch.llm.opinion.exact import (answer_logprobs, answer_rewards, exact_evaluation, gt_rewards,
                                         majority_preference, pm_divergence_exact, pm_divergence_pairs,
                                         reward_model_error, tokens_in_m)
from prefmatch.llm.opinion.optimum import optimum_evaluation, phase_curve, theory_optimum
from prefmatch.llm.opinion.pipeline import (OpinionConfigError, configure, prepare_unit, run_benchmark, run_one,
                                            smollm2_base)
from prefmatch.llm.opinion.world import (TOPICS, OpinionCorpus, OpinionPrompt, WorldConfig, build_corpus,
                                         empirical_comparison_preference, sft_majority_share)
