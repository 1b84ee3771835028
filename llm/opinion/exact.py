r"""Exact metrics over the enumerable answer sets.

The policy's log π(y|x) of every answer is computed by teacher forcing (the trainer's
tokenisation, EOS included), so every expectation over answers is a finite sum:

* ``pm_divergence_exact``: the expectation of the PM paper's §6.1 estimator, y1, y2 drawn
  independently from the policy restricted to the answer set, p_reward tempered by β as in the
  paper's Table 5 (σ((r(y1) − r(y2))/β));
* ``pm_divergence_pairs``: the same instance divergence averaged uniformly over every pair of
  different answers (not weighted by the policy: a collapsed policy cannot hide mismatched pairs
  by never sampling them);
* ``majority_preference``: the policy's preference π(y1)/(π(y1)+π(y2)) of an answer over one
  that differs from it in one topic only, y1 holding that topic's majority option (eq. 5.2), beside
  the reward model's (tempered) and the ground truth's.

No formula is written here: pairwise preference, Bradley–Terry and the instance PM divergence
are :mod:`prefmatch.theory.distributions`'.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prefmatch.llm.data import encode_prompt, encode_response
from prefmatch.llm.metrics import score_responses_ids, sequence_logprobs
from prefmatch.llm.opinion.world import MALFORMED_KINDS, TOPICS, OpinionPrompt, malformed, malformed_kinds
from prefmatch.theory.distributions import bradley_terry, pairwise_preference, pm_divergence, pm_squared_error


def _flatten(prompts: Sequence[OpinionPrompt]):
    flat_p, flat_a, bounds = [], [], [0]
    for p in prompts:
        flat_p += [p.prompt] * len(p.answers)
        flat_a += list(p.answers)
        bounds.append(len(flat_a))
    return flat_p, flat_a, bounds


def answer_logprobs(model, tokenizer, prompts: Sequence[OpinionPrompt], per_token: bool = False,
                    batch_size: int = 128, max_prompt_len: int = 64, max_response_len: int = 16):
    """Teacher-forced log π(y|x) of every answer of every prompt (EOS included).

    Returns a list (one per prompt) of float64 arrays over the answer set; with ``per_token`` also
    the per-token log-probs (per prompt, a list of arrays per answer).
    """
    flat_p, flat_a, bounds = _flatten(prompts)
    res = sequence_logprobs(model, tokenizer, flat_p, flat_a, batch_size=batch_size, max_prompt_len=max_prompt_len,
                            max_response_len=max_response_len, per_token=per_token)
    seq, toks = res if per_token else (res, None)
    seq = seq.numpy()
    out = [seq[bounds[i]:bounds[i + 1]] for i in range(len(prompts))]
    if not per_token:
        return out
    assert toks is not None
    return out, [[t.numpy() for t in toks[bounds[i]:bounds[i + 1]]] for i in range(len(prompts))]


def answer_rewards(reward_model, tokenizer, prompts: Sequence[OpinionPrompt], batch_size: int = 128,
                   max_prompt_len: int = 64, max_response_len: int = 16) -> list[np.ndarray]:
    """Raw reward-model scores r(x, y) of every answer (Bradley–Terry uses raw differences)."""
    flat_p, flat_a, bounds = _flatten(prompts)
    p_ids = [encode_prompt(tokenizer, p, max_prompt_len) for p in flat_p]
    r_ids = [encode_response(tokenizer, a, max_response_len) for a in flat_a]
    r = score_responses_ids(reward_model, p_ids, r_ids, tokenizer.pad_token_id, batch_size=batch_size,
                            normalize=False).numpy()
    return [r[bounds[i]:bounds[i + 1]] for i in range(len(prompts))]


def gt_rewards(prompts: Sequence[OpinionPrompt]) -> list[np.ndarray]:
    return [np.asarray(p.gt_reward, dtype=np.float64) for p in prompts]


def pair_matrix(logp: np.ndarray, r: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """[n, n] instance PM divergence KL(p_llm ‖ p_reward) of every answer pair, p_reward = σ(Δr/β)."""
    lp = np.asarray(logp, np.float64)
    rr = np.asarray(r, np.float64) / beta
    return np.asarray(pm_divergence(lp[:, None], lp[None, :], rr[:, None], rr[None, :]))


def pm_divergence_exact(logp: np.ndarray, r: np.ndarray, beta: float = 1.0) -> float:
    """The expectation over y1, y2 drawn from π restricted to the answer set of the §6.1 instance PM divergence (tempered by β)."""
    lp = np.asarray(logp, np.float64)
    w = np.exp(lp - np.logaddexp.reduce(lp))
    return float(w @ pair_matrix(lp, r, beta) @ w)


def pm_squared_error_exact(logp: np.ndarray, r: np.ndarray) -> float:
    """The expectation over y1, y2 drawn from π restricted to the answer set of the authors' squared
    error ((r(y1) − r(y2)) − (log π(y1) − log π(y2)))² (no β)."""
    lp = np.asarray(logp, np.float64)
    rr = np.asarray(r, np.float64)
    w = np.exp(lp - np.logaddexp.reduce(lp))
    return float(w @ np.asarray(pm_squared_error(lp[:, None], lp[None, :], rr[:, None], rr[None, :])) @ w)


def pm_divergence_pairs(logp: np.ndarray, r: np.ndarray, beta: float = 1.0) -> float:
    """Mean over every pair of different answers of the instance PM divergence (tempered by β)."""
    m = pair_matrix(logp, r, beta)
    i, j = np.triu_indices(m.shape[0], k=1)
    return float(m[i, j].mean())


def majority_preference(prompt: OpinionPrompt, logp: np.ndarray) -> float:
    """Mean of π(y1)/(π(y1)+π(y2)) over the prompt's majority pairs (eq. 5.2)."""
    i, j = np.asarray(prompt.majority_pairs()).T
    return float(np.mean(pairwise_preference(logp[i], logp[j])))


def majority_reward_preference(prompt: OpinionPrompt, r: np.ndarray, beta: float = 1.0) -> float:
    """Mean of σ((r(y1) − r(y2))/β) over the prompt's majority pairs."""
    i, j = np.asarray(prompt.majority_pairs()).T
    return float(np.mean(bradley_terry(r[i] / beta, r[j] / beta)))


def tokens_in_m(ref_token_logp: Sequence[np.ndarray], weights: np.ndarray, alpha: float, level: str) -> float:
    """Share of response tokens (token level) or responses (sequence level) in M = {π_ref ≥ α},
    responses weighted by ``weights`` (tokens: each response's tokens share its weight)."""
    la = np.log(alpha)
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    if level == "sequence":
        return float(sum(wi * (t.sum() >= la) for wi, t in zip(w, ref_token_logp)))
    n = sum(wi * len(t) for wi, t in zip(w, ref_token_logp))
    return float(sum(wi * (t >= la).sum() for wi, t in zip(w, ref_token_logp)) / n)


def exact_evaluation(prompts: Sequence[OpinionPrompt], logp: Sequence[np.ndarray], rm: Sequence[np.ndarray],
                     gt: Sequence[np.ndarray] | None = None, beta: float = 1.0) -> dict[str, Any]:
    """The exact answer-set metrics of one policy (log-probs ``logp``), means over prompts.

    ``*_gt`` compares with the ground truth r* (untempered: the annotators' own preference);
    ``answer_set_mass`` = the sum of π(y|x) over the answer set (1: the policy emits only valid answers);
    ``majority_mass``: the policy's marginal probability of each topic's majority option, within
    the answer set, mean over topics; ``instance_pm_divergence``: per prompt, the exact §6.1 value.
    """
    gt = gt if gt is not None else gt_rewards(prompts)
    rows = []
    for p, lp, r, g in zip(prompts, logp, rm, gt):
        lp = np.asarray(lp, np.float64)
        z = np.logaddexp.reduce(lp)
        w = np.exp(lp - z)
        rows.append({
            "pm_divergence_exact": pm_divergence_exact(lp, r, beta),
            "pm_divergence_pairs": pm_divergence_pairs(lp, r, beta),
            "pm_squared_error_exact": pm_squared_error_exact(lp, r),
            "pm_divergence_pairs_gt": pm_divergence_pairs(lp, g),
            "majority_preference": majority_preference(p, lp),
            "rm_majority_preference": majority_reward_preference(p, r, beta),
            "gt_majority_preference": majority_reward_preference(p, g),
            "answer_set_mass": float(np.exp(z)),
            "majority_mass": float((w[:, None] * p.is_majority()).sum(0).mean()),
        })
    out: dict[str, Any] = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    out["collapsed_fraction"] = float(np.mean([row["majority_preference"] >= 0.95 for row in rows]))
    out["instance_pm_divergence"] = [row["pm_divergence_exact"] for row in rows]
    return out


def malformed_ranking(reward_model, tokenizer, prompts: Sequence[OpinionPrompt], seed: int = 0,
                      n_topics: int = len(TOPICS), max_prompt_len: int = 64, max_response_len: int = 16,
                      rm: Sequence[np.ndarray] | None = None) -> dict:
    """How the reward model ranks malformed answers (:func:`prefmatch.llm.opinion.world.malformed`)
    against the valid ones on ``prompts`` (the held-out prompts: strings it never saw), one malformed
    variant of every answer of each kind of :data:`MALFORMED_KINDS` the prompt allows: ``below_own``, the
    share scored below the answer it was made from; ``below_worst``, the share scored below every answer
    of the set; both over all kinds, and ``by_kind``: each kind's ``below_own`` (the content errors, a
    foreign or repeated option, are the ones a reward model must read the prompt to catch)."""
    rng = np.random.default_rng(seed)
    rm = rm if rm is not None else answer_rewards(reward_model, tokenizer, prompts, max_prompt_len=max_prompt_len,
                                                  max_response_len=max_response_len)
    own, worst, by_kind = [], [], {}
    for k, name in enumerate(MALFORMED_KINDS):
        idx = [j for j, p in enumerate(prompts) if k in malformed_kinds(p, n_topics)]
        if not idx:
            continue
        bad_p = [OpinionPrompt(prompts[j].prompt, prompts[j].topics,
                               tuple(malformed(prompts[j], i, rng, n_topics, kind=k)
                                     for i in range(len(prompts[j].answers))),
                               prompts[j].choice, prompts[j].gt_reward, prompts[j].shares, prompts[j].majority,
                               prompts[j].alt_majority) for j in idx]
        rb = answer_rewards(reward_model, tokenizer, bad_p, max_prompt_len=max_prompt_len,
                            max_response_len=max_response_len)
        o = np.concatenate([b < rm[j] for j, b in zip(idx, rb)])
        own.append(o)
        worst.append(np.concatenate([b < rm[j].min() for j, b in zip(idx, rb)]))
        by_kind[name] = float(o.mean())
    own_all, worst_all = np.concatenate(own), np.concatenate(worst)
    return {"below_own": float(own_all.mean()), "below_worst": float(worst_all.mean()), "n": int(own_all.size),
            "by_kind": by_kind}


def reward_model_error(prompts: Sequence[OpinionPrompt], rm: Sequence[np.ndarray],
                       gt: Sequence[np.ndarray]) -> float:
    """Mean over prompts and pairs of different answers of |σ(r(y1) − r(y2)) − σ(r*(y1) − r*(y2))|."""
    errs = []
    for p, r, g in zip(prompts, rm, gt):
        i, j = np.asarray(p.answer_pairs()).T
        errs.append(np.mean(np.abs(np.asarray(bradley_terry(r[i], r[j])) - np.asarray(bradley_terry(g[i], g[j])))))
    return float(np.mean(errs))


def ranking_accuracy(prompts: Sequence[OpinionPrompt], rm: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> float:
    """Share of pairs of different answers (ground-truth rewards apart by more than 0.05) that the
    reward model orders as the ground truth does: 0.5 is chance."""
    hits = []
    for p, r, g in zip(prompts, rm, gt):
        i, j = np.asarray(p.answer_pairs()).T
        keep = np.abs(g[i] - g[j]) > 0.05
        hits += list((np.sign(r[i] - r[j]) == np.sign(g[i] - g[j]))[keep])
    return float(np.mean(hits))


def pair_preferences(prompt: OpinionPrompt, v: np.ndarray, reward: bool = False, beta: float = 1.0) -> np.ndarray:
    """Preference of the majority side on each majority pair: policy (log-probs) or reward (σ(Δr/β))."""
    i, j = np.asarray(prompt.majority_pairs()).T
    v = np.asarray(v, np.float64)
    if reward:
        return np.asarray(bradley_terry(v[i] / beta, v[j] / beta))
    return np.asarray(pairwise_preference(v[i], v[j]))
