r"""Finite contextual bandits and Bradley–Terry / Plackett–Luce preference sampling.

A bandit is a table: prompts x ∈ {0..X−1} drawn from ρ, responses y ∈ {0..n−1}, a true reward
r*(x, y) and one or K reference policies π_ref(·|x) (stored as log-probabilities; K references
sit on a *leading* axis, ``ref_logp[k, x, y]``, as the multi-reference regularizers expect).

Preference data are sampled as *counts* — the sufficient statistics of the BT likelihood:
``wins[..., x, i, j]`` is the number of comparisons in which response i beat response j on
prompt x.  With pairs (x, y, y') ~ ρ(x) π_data(y|x) π_data(y'|x) and BT labels
P(y ≻ y') = σ(r*(x,y) − r*(x,y')) (PM paper eq. 2.1), the counts of n comparisons are exactly

    N ~ Multinomial(n, ρ(x) π_data(y|x) π_data(y'|x)),   wins_{x,y,y'} ~ Binomial(N_{x,y,y'}, σ(Δr)),

so a whole sweep over trials is one multinomial and one binomial draw: there is no Python loop
over samples.  :func:`sample_comparisons` draws the individual (x, y_w, y_l) triples (also
vectorized) and :func:`counts_from_comparisons` reduces them to the same counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prefmatch.theory._array import log_softmax, quiet
from prefmatch.theory.distributions import (
    arithmetic_mixture,
    bradley_terry,
    generalized_escort,
)

__all__ = [
    "Bandit",
    "random_bandit",
    "two_response_bandit",
    "pair_probabilities",
    "sample_counts",
    "sample_comparisons",
    "counts_from_comparisons",
    "sample_pl_rankings",
    "pl_log_likelihood",
]


@dataclass(frozen=True)
class Bandit:
    """A finite prompt × response bandit.

    ``reward`` [X, n] is r*; ``ref_logp`` is [X, n] (one reference) or [K, X, n] (K references,
    then ``weights`` [K] on the simplex); ``rho`` [X] is the prompt distribution.
    """

    reward: np.ndarray
    ref_logp: np.ndarray
    rho: np.ndarray
    weights: tuple | None = None
    r_max: float = field(default=1.0)

    @property
    def n_prompts(self) -> int:
        return self.reward.shape[0]

    @property
    def n_responses(self) -> int:
        return self.reward.shape[-1]

    @property
    def multi_reference(self) -> bool:
        return self.ref_logp.ndim == 3

    @property
    def ref(self) -> np.ndarray:
        """Reference probabilities (same shape as ``ref_logp``)."""
        return np.exp(self.ref_logp)

    def escort_logp(self) -> np.ndarray:
        """log π̂_α, the generalized escort of the references (second paper, eq. 21–22)."""
        return generalized_escort(self.ref_logp, self.weights)[0]

    def mixture_logp(self) -> np.ndarray:
        """log π̄_α, the arithmetic mixture of the references (second paper, eq. 30)."""
        return arithmetic_mixture(self.ref_logp, self.weights)


def _dirichlet_logp(rng, conc: float, shape) -> np.ndarray:
    """log of Dirichlet(conc) rows, computed from log-Gamma draws (no underflow to 0)."""
    g = rng.standard_gamma(conc, size=shape)
    with quiet():
        return log_softmax(np.log(g))


def random_bandit(
    rng: np.random.Generator,
    n_prompts: int = 4,
    n_responses: int = 6,
    *,
    r_max: float = 1.0,
    n_refs: int | None = None,
    weights=None,
    concentration: float = 2.0,
    min_prob: float = 0.0,
) -> Bandit:
    """A random bandit: r* ~ U[0, r_max], references ~ Dirichlet(concentration).

    ``min_prob`` mixes each reference with the uniform distribution so that π_ref ≥ min_prob
    (a global-coverage constant ≤ 1/min_prob, Assumption 4.3 of the second paper).
    ``n_refs`` = None gives one reference [X, n]; an integer K gives [K, X, n] with ``weights``
    (default uniform).
    """
    reward = rng.uniform(0.0, r_max, size=(n_prompts, n_responses))
    shape = (n_prompts, n_responses) if n_refs is None else (n_refs, n_prompts, n_responses)
    ref_logp = _dirichlet_logp(rng, concentration, shape)
    if min_prob > 0:
        if min_prob * n_responses >= 1:
            raise ValueError(f"min_prob must be < 1/n_responses = {1 / n_responses:g}, got {min_prob!r}")
        eps = min_prob * n_responses
        ref_logp = np.logaddexp(np.log1p(-eps) + ref_logp, np.log(eps / n_responses))
    if n_refs is not None and weights is None:
        weights = tuple([1.0 / n_refs] * n_refs)
    rho = np.full(n_prompts, 1.0 / n_prompts)
    return Bandit(reward=reward, ref_logp=ref_logp, rho=rho,
                  weights=None if weights is None else tuple(float(w) for w in weights), r_max=r_max)


def two_response_bandit(p_ref, p_reward) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and reference log-probs for the binary setting of Section 5.1 (eq. 5.2).

    Broadcasts ``p_ref`` against ``p_reward``; returns (r [..., 2], ref_logp [..., 2]) with
    r = (logit p_reward, 0), so σ(r1 − r2) = p_reward, and π_ref = (p_ref, 1 − p_ref).
    p_ref of exactly 0 or 1 gives a reference log-probability of −inf (exact).
    """
    p_ref, p_reward = np.broadcast_arrays(np.asarray(p_ref, float), np.asarray(p_reward, float))
    with quiet():
        r1 = np.log(p_reward) - np.log1p(-p_reward)
        r = np.stack([r1, np.zeros_like(r1)], axis=-1)
        ref_logp = np.stack([np.log(p_ref), np.log1p(-p_ref)], axis=-1)
    return r, ref_logp


def pair_probabilities(data_logp: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(x, y, y') = ρ(x) π_data(y|x) π_data(y'|x), shape [X, n, n] (sums to 1)."""
    p = np.exp(data_logp)
    joint = rho[:, None, None] * p[:, :, None] * p[:, None, :]
    return joint / joint.sum()


def _win_probability(reward: np.ndarray) -> np.ndarray:
    """σ(r*(x, i) − r*(x, j)), shape [X, n, n] (BT, eq. 2.1)."""
    return bradley_terry(reward[..., :, None], reward[..., None, :])


def sample_counts(
    rng: np.random.Generator,
    reward: np.ndarray,
    data_logp: np.ndarray,
    rho: np.ndarray,
    n_samples: int,
    trials: int = 1,
) -> np.ndarray:
    """BT comparison counts ``wins[t, x, i, j]`` of ``n_samples`` comparisons, per trial.

    Pairs (x, y, y') ~ ρ(x) π_data(y|x) π_data(y'|x) (independent draws, ties y = y' allowed
    and uninformative); y beats y' with probability σ(r*(x,y) − r*(x,y')).  One multinomial
    and one binomial draw for all ``trials`` at once.
    """
    joint = pair_probabilities(data_logp, rho)
    X, n = reward.shape
    pairs = rng.multinomial(int(n_samples), joint.reshape(-1), size=int(trials)).reshape(trials, X, n, n)
    # unordered presentation: (y, y') and (y', y) are the same comparison; wins of i over j
    # come from draws of (i, j) and (j, i) alike
    p_win = _win_probability(reward)
    wins_ij = rng.binomial(pairs, p_win)              # among draws (i, j): i won
    losses_ij = pairs - wins_ij                        # among draws (i, j): j won
    return wins_ij + np.swapaxes(losses_ij, -1, -2)


def sample_comparisons(
    rng: np.random.Generator,
    reward: np.ndarray,
    data_logp: np.ndarray,
    rho: np.ndarray,
    n_samples: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_samples`` individual comparisons (x, y_w, y_l), drawn by inverse-CDF, vectorized."""
    X, n = reward.shape
    x = rng.choice(X, size=n_samples, p=rho / rho.sum())
    cdf = np.cumsum(np.exp(data_logp), axis=-1)
    cdf[:, -1] = 1.0
    u = rng.random((2, n_samples))
    y1 = np.minimum((u[0][:, None] > cdf[x]).sum(axis=-1), n - 1)
    y2 = np.minimum((u[1][:, None] > cdf[x]).sum(axis=-1), n - 1)
    p1 = bradley_terry(reward[x, y1], reward[x, y2])
    first_wins = rng.random(n_samples) < p1
    yw = np.where(first_wins, y1, y2)
    yl = np.where(first_wins, y2, y1)
    return x, yw, yl


def counts_from_comparisons(x, yw, yl, n_prompts: int, n_responses: int) -> np.ndarray:
    """Reduce comparisons (x, y_w, y_l) to counts ``wins[x, i, j]`` (one ``bincount``)."""
    flat = (np.asarray(x) * n_responses + np.asarray(yw)) * n_responses + np.asarray(yl)
    return np.bincount(flat, minlength=n_prompts * n_responses * n_responses).reshape(
        n_prompts, n_responses, n_responses
    )


def sample_pl_rankings(rng: np.random.Generator, reward: np.ndarray, size: int) -> np.ndarray:
    """Full rankings from the Plackett–Luce model of ``reward`` [..., n] (PM paper Def. 3.2).

    Gumbel-max: sorting r + Gumbel noise in decreasing order is a PL ranking.  Returns indices
    [size, ..., n], best first.
    """
    g = rng.gumbel(size=(size,) + np.shape(reward))
    return np.argsort(-(np.asarray(reward) + g), axis=-1)


def pl_log_likelihood(reward: np.ndarray, rankings: np.ndarray) -> np.ndarray:
    """log P_PL(ranking) = Σ_k [r(σ_k) − log Σ_{j ≥ k} e^{r(σ_j)}], per ranking (last axis)."""
    r = np.take_along_axis(np.broadcast_to(reward, rankings.shape), rankings, axis=-1)
    # log Σ_{j ≥ k} e^{r_j}: reverse cumulative logsumexp
    rev = np.logaddexp.accumulate(r[..., ::-1], axis=-1)[..., ::-1]
    return np.sum(r - rev, axis=-1)
