r"""What the theory predicts on the same answer sets: the optimum of each run's objective.

For the reward model's scores r and the SFT reference's log-probs, the optimum over an answer
set is the regularizer object's own (:func:`prefmatch.llm.rewards.build_regularizer`, the same
object the trainer uses; β inside ψ): ``optimal_logp`` for sequence-level objectives and
``sequence_optimal_logp`` from the reference's per-token log-probs for token-level cPM (the
paper's code). :func:`phase_curve` evaluates cPM's optimum over a range of α against KL's.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefmatch.llm.opinion.exact import exact_evaluation
from prefmatch.llm.train.rewards import build_regularizer
from prefmatch.theory.regularizers import REGISTRY, trainable_names


def theory_optimum(method: str, r: np.ndarray, ref_logp: np.ndarray, *, beta: float = 1.0, alpha: float = 0.3,
                   level: str = "token", ref_token_logp: Sequence[np.ndarray] | None = None,
                   ref2_logp: np.ndarray | None = None, weights: Sequence[float] = (0.5, 0.5)) -> np.ndarray:
    """log π* over the answer set of ``method``'s objective for rewards ``r`` and reference ``ref_logp``."""
    r = np.asarray(r, dtype=np.float64)
    ref_logp = np.asarray(ref_logp, dtype=np.float64)
    if method not in trainable_names():
        raise ValueError(f"method must be one of {', '.join(trainable_names())}, got {method!r}")
    params: dict = {"alpha": alpha, "level": level} if method == "cpm" else {}
    if REGISTRY[method].refs == "K":
        params = {"weights": list(weights)}
    reg = build_regularizer(method, params, beta)
    if method == "cpm" and level == "token":
        if ref_token_logp is None:
            raise ValueError("ref_token_logp: token-level cPM needs the reference's per-token log-probs")
        T = max(len(q) for q in ref_token_logp)
        q = np.zeros((len(ref_token_logp), T))
        mask = np.zeros_like(q)
        for i, row in enumerate(ref_token_logp):
            q[i, :len(row)], mask[i, :len(row)] = row, 1.0
        return np.asarray(reg.sequence_optimal_logp(r, q, mask))
    if reg.refs == "K":
        if ref2_logp is None:
            raise ValueError(f"ref2_logp: {method} needs the second reference's log-probs")
        ref_logp = np.stack([ref_logp, np.asarray(ref2_logp, np.float64)])
    return np.asarray(reg.optimal_logp(r, ref_logp))


def optimum_evaluation(prompts, rm_r, ref_logp, ref_tok, gt, method: str, beta: float, alpha: float | None = None,
                       level: str = "token", ref2_logp=None, weights=(0.5, 0.5)) -> dict:
    """:func:`exact_evaluation` of the theory optimum of one run, prompt by prompt."""
    opt = [theory_optimum(method, r, q, beta=beta, alpha=alpha if alpha is not None else 0.3, level=level,
                          ref_token_logp=qt, ref2_logp=None if ref2_logp is None else ref2_logp[i], weights=weights)
           for i, (r, q, qt) in enumerate(zip(rm_r, ref_logp, ref_tok))]
    return exact_evaluation(prompts, opt, rm_r, gt, beta=beta)


METRICS = ("pm_divergence_exact", "pm_divergence_pairs", "majority_preference")


def phase_curve(prompts, rm_r, ref_logp, ref_tok, gt, alphas: Sequence[float], beta: float = 1.0) -> dict:
    """The theory optimum of cPM (token and sequence level) over ``alphas``, beside KL's and PM's."""
    def ev(method, **kw):
        e = optimum_evaluation(prompts, rm_r, ref_logp, ref_tok, gt, method, beta, **kw)
        return {k: e[k] for k in METRICS}

    out = {"alpha": [float(a) for a in alphas], "beta": beta, "kl": ev("kl"), "pm": ev("pm")}
    for level in ("token", "sequence"):
        rows = [ev("cpm", alpha=a, level=level) for a in alphas]
        out[f"cpm_{level}"] = {k: [row[k] for row in rows] for k in METRICS}
    return out
