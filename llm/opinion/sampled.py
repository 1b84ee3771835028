r"""The PM paper's Section 6.1 metrics by sampling, on the held-out prompts.

The sampler and the per-pair scoring are :mod:`prefmatch.llm.metrics`' (those of ``prefmatch
eval``). Per held-out prompt ``eval_samples`` responses are drawn from the policy at temperature
1 and paired (first half with second half):

* ``pm_divergence``: the mean instance KL(p_llm ‖ p_reward) on the sampled pairs, with
  p_reward = σ((r(y1) − r(y2))/β) tempered by β as in the paper's Table 5;
* ``perplexity_heldout``: exp of the mean token negative log-likelihood of the held-out
  human-written responses (the held-out prompts' demonstrations), as the authors' code computes
  it; ``perplexity_sample_mean`` is the paper's per-sample formula E[π(y|x)^(−1/len(y))] on the
  policy's own samples, reported with its median and ``perplexity_outliers``, the number of
  samples whose per-sample perplexity exceeds ten times the median;
* ``entropy``: E_y[−log π(y|x)] in nats per response; ``length``: tokens per response, EOS
  included; ``kl``: KL(π ‖ π_ref) in nats per response, estimated by Σ_t k3 on the samples
  (:func:`prefmatch.llm.metrics.token_kl_k3`: non-negative, unbiased), ``kl_k1`` the plain
  mean of log π(y|x) − log π_ref(y|x) beside it;
* ``pm_squared_error``: the authors' own metric, the mean over the sampled pairs of
  ((r(y1) − r(y2)) − (log π(y1) − log π(y2)))² (no β);
* ``valid_rate``: the share of samples that are an answer of the set; the pairs are split by
  validity (:func:`pair_validity`); ``tokens_in_M``: for a cPM
  run, the share of sampled response tokens (token level) or responses (sequence level) in
  M = {π_ref ≥ α}.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from prefmatch.llm.data import encode_response
from prefmatch.llm.metrics import pair_scores, sample_responses, sequence_logprobs, summarize, token_kl_k3
from prefmatch.llm.opinion.world import OpinionPrompt

#: a sample is a perplexity outlier when its per-sample perplexity exceeds this multiple of the median
OUTLIER_FACTOR = 10.0


def heldout_perplexity(model, tokenizer, records: Sequence[dict], max_prompt_len: int, max_response_len: int) -> float:
    """exp(−Σ log π(y_t|·) / Σ |y|) over held-out demonstrations ``{"prompt", "chosen"}`` (EOS included)."""
    lp, toks = sequence_logprobs(model, tokenizer, [r["prompt"] for r in records], [r["chosen"] for r in records],
                                 batch_size=128, max_prompt_len=max_prompt_len, max_response_len=max_response_len,
                                 per_token=True)
    n = sum(len(t) for t in toks)
    return float(math.exp(-float(lp.sum()) / n))


def sampled_metrics(model, ref_model, reward_model, tokenizer, prompts: Sequence[OpinionPrompt], *, n_samples: int,
                    seed: int, beta: float, max_prompt_len: int, max_response_len: int,
                    alpha: float | None = None, level: str | None = None) -> dict[str, Any]:
    """§6.1 metrics of ``model`` on ``prompts`` (see the module docstring)."""
    texts = [p.prompt for p in prompts]
    pad = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        p_ids, samples = sample_responses(model, tokenizer, texts, n=n_samples, max_new_tokens=max_response_len,
                                          max_prompt_len=max_prompt_len, seed=seed, batch_size=128)
    finally:
        tokenizer.padding_side = pad
    h = n_samples // 2
    P = [p_ids[i] for i in range(len(prompts)) for _ in range(h)]
    y1 = [s for ss in samples for s in ss[:h]]
    y2 = [s for ss in samples for s in ss[h:]]
    s = pair_scores(model, ref_model, reward_model, P, y1, y2, tokenizer.pad_token_id, batch_size=128)
    lens1, lens2 = [len(y) for y in y1], [len(y) for y in y2]
    out = summarize(s["lp1"], s["lp2"], s["rf1"], s["rf2"], s["r1"], s["r2"], lens1, lens2, beta=beta,
                    kl1=token_kl_k3(s["lt1"], s["qt1"]), kl2=token_kl_k3(s["lt2"], s["qt2"]))
    out["kl_k1"] = float(np.mean(np.concatenate([(s["lp1"] - s["rf1"]).numpy(), (s["lp2"] - s["rf2"]).numpy()])))
    lp = np.concatenate([s["lp1"].numpy(), s["lp2"].numpy()])
    ln = np.maximum(np.asarray(lens1 + lens2, np.float64), 1)
    per_sample = np.exp(-lp / ln)
    med = float(np.median(per_sample))
    out["perplexity_sample_mean"] = out.pop("perplexity")
    out["perplexity_sample_median"] = med
    out["perplexity_outliers"] = int((per_sample > OUTLIER_FACTOR * med).sum())
    out["n_samples"] = int(per_sample.size)
    ok = []  # per sample, whether it is an answer of the set
    for p, ss in zip(prompts, samples):
        ids = {tuple(encode_response(tokenizer, a, max_response_len)) for a in p.answers}
        ok.append([tuple(x) in ids for x in ss])
    out["valid_rate"] = float(np.mean(ok))
    out.update(pair_validity(np.array([o[:h] for o in ok]).ravel(), np.array([o[h:] for o in ok]).ravel(),
                             out["instance_pm_divergence"], out["instance_pm_squared_error"],
                             s["r1"].numpy(), s["r2"].numpy()))
    out["tokens_in_M"] = None
    if alpha is not None:
        la = math.log(alpha)
        if level == "sequence":
            rf = np.concatenate([s["rf1"].numpy(), s["rf2"].numpy()])
            out["tokens_in_M"] = float(np.mean(rf >= la))
        else:
            t = np.concatenate([x.numpy() for x in s["qt1"] + s["qt2"]]) if s["qt1"] else np.zeros(0)
            out["tokens_in_M"] = float(np.mean(t >= la)) if t.size else None
    out["instance_pm_divergence_sampled"] = [round(x, 6) for x in out.pop("instance_pm_divergence")]
    out["instance_pm_squared_error_sampled"] = [round(x, 6) for x in out.pop("instance_pm_squared_error")]
    out["n_pairs"] = len(y1)
    return out


def pair_validity(ok1, ok2, inst_pm, inst_sq, r1, r2) -> dict[str, Any]:
    """The sampled pairs split by validity: the §6.1 PM divergence and the authors' squared error on
    the pairs of two answers of the set (``*_valid_pairs``) and on the pairs holding a malformed
    answer (``*_invalid_pairs``), their numbers, and, on the pairs with exactly one malformed
    answer, the share the reward model scores below the valid one (``rm_prefers_valid``)."""
    ok1, ok2 = np.asarray(ok1, bool), np.asarray(ok2, bool)
    both = ok1 & ok2
    pm, sq = np.asarray(inst_pm, np.float64), np.asarray(inst_sq, np.float64)
    one = ok1 ^ ok2
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    good = np.where(ok1, r1, r2)[one]
    bad = np.where(ok1, r2, r1)[one]
    mean = lambda x: float(x.mean()) if x.size else None  # noqa: E731
    return {"n_valid_pairs": int(both.sum()), "n_invalid_pairs": int((~both).sum()),
            "pm_divergence_valid_pairs": mean(pm[both]), "pm_divergence_invalid_pairs": mean(pm[~both]),
            "pm_squared_error_valid_pairs": mean(sq[both]), "pm_squared_error_invalid_pairs": mean(sq[~both]),
            "rm_prefers_valid": mean((good > bad).astype(np.float64)), "n_mixed_pairs": int(one.sum())}
