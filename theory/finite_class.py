r"""The sample-complexity theorems as stated: a finite reward class, the BT MLE in the loop, exact gaps.

Source: Aminian et al. (2025), Theorems 5.5, 5.6, 6.4, 6.5 and Lemma A.1 (spec §5); the bounds are
:mod:`prefmatch.theory.bounds` (derived [D] and, where recoverable, the paper's constants [R]).

**The experiment.**  A bandit with X prompts (x ∼ ρ), n responses, K references and weights α.  The
reward class is finite and realizable: R = {r_θ = r* + θ·d : θ ∈ Θ}, Θ a grid of M points in
[−1, 1] containing θ* = 0, with r* and d chosen so that every r_θ ∈ [0, R_max] (Ass. 4.1–4.2).
For each sample size N and trial: N triples (x, y, y′) with x ∼ ρ and y, y′ drawn independently
from the data reference (the escort π̂_α for reverse KL, the mixture P̄_α for forward KL), labelled by
Bradley–Terry with r*; r̂ = the class MLE argmax_θ Σ log σ(r_θ(y_w) − r_θ(y_l)) (eq. 3); then the
exact gaps of the regularized optima (:func:`prefmatch.theory.identities.rkl_gaps` / ``fkl_gaps``)
and Lemma A.1's quantity E_{x, y, y′}(Δ(y) − Δ(y′))², Δ = r* − r̂.  Because r̂ ranges over the
M class members, every gap is computed once per member and indexed by the fitted θ̂.

The grid is fine enough (spacing ≪ the MLE's standard deviation at the largest N) that the
estimator behaves like the continuous one over the N range used, so the measured rates are the
statistical ones, not the exponential concentration a coarse finite class shows at large N.

:func:`assess` turns quantiles of a gap into a falsifiable verdict: the bound (optionally with a
deliberately wrong constant or rate) must hold at every N, and the log–log slope of the
(1 − δ)-quantile must equal −rate within a tolerance — a claimed rate that is too slow fails as
surely as one that is too fast.
"""
from __future__ import annotations

import functools
from typing import Any
from dataclasses import dataclass

import numpy as np

from prefmatch.theory import identities
from prefmatch.theory.distributions import arithmetic_mixture, generalized_escort, log_sigmoid

__all__ = ["FiniteClassWorld", "make_world", "simulate", "shared_simulation", "quantiles", "loglog_slope", "assess"]


@dataclass(frozen=True)
class FiniteClassWorld:
    """A realizable finite reward class around r* and the references (see the module docstring)."""
    reward: np.ndarray      # r* [X, n]
    direction: np.ndarray   # d [X, n]
    thetas: np.ndarray      # Θ [M], contains 0
    ref_logp: np.ndarray    # [K, X, n]
    weights: tuple
    rho: np.ndarray         # [X]
    beta: float
    r_max: float

    @property
    def class_size(self) -> int:
        return int(self.thetas.size)

    def members(self) -> np.ndarray:
        """All class rewards r_θ [M, X, n]."""
        return self.reward[None] + self.thetas[:, None, None] * self.direction[None]

    def data_logp(self, objective: str) -> np.ndarray:
        """log π_data [X, n]: the escort for "rkl", the mixture for "fkl"."""
        if objective == "rkl":
            return generalized_escort(self.ref_logp, self.weights)[0]
        if objective == "fkl":
            return arithmetic_mixture(self.ref_logp, np.asarray(self.weights))
        raise ValueError(f"objective must be 'rkl' or 'fkl', got {objective!r}")

    def coverage(self, objective: str) -> float:
        """Global coverage constant 1/min π_data (Ass. 4.3; bounds every π/π_data)."""
        return float(np.max(np.exp(-self.data_logp(objective))))


def make_world(seed: int = 0, n_prompts: int = 2, n_responses: int = 4, class_size: int = 2001, beta: float = 1.0,
               r_max: float = 1.0, weights=(0.5, 0.5)) -> FiniteClassWorld:
    """A random world: references Dirichlet(2) floored at 0.05, r* ∈ [0.35, 0.65]·R_max, |d| ≤ 0.35·R_max."""
    if class_size < 3 or class_size % 2 == 0:
        raise ValueError(f"class_size must be an odd integer >= 3 (so that θ* = 0 is on the grid), got {class_size!r}")
    rng = np.random.default_rng([seed, 1202])
    k = len(weights)
    refs = rng.dirichlet(np.full(n_responses, 2.0), size=(k, n_prompts))
    refs = np.maximum(refs, 0.05)
    refs /= refs.sum(-1, keepdims=True)
    reward = rng.uniform(0.35, 0.65, (n_prompts, n_responses)) * r_max
    d = rng.normal(size=(n_prompts, n_responses))
    d *= 0.35 * r_max / np.max(np.abs(d))
    return FiniteClassWorld(reward, d, np.linspace(-1.0, 1.0, class_size), np.log(refs), tuple(float(w) for w in weights),
                            np.full(n_prompts, 1.0 / n_prompts), float(beta), float(r_max))


def _member_quantities(world: FiniteClassWorld, objective: str) -> dict:
    """Per class member: Lemma A.1's quantity and the exact gaps (signed) of its regularized optimum."""
    members = world.members()  # [M, X, n]
    p = np.exp(world.data_logp(objective))  # [X, n]
    delta = world.reward[None] - members
    mean = np.sum(p * delta, axis=-1, keepdims=True)
    e2 = 2.0 * np.sum(p * (delta - mean) ** 2, axis=-1) @ world.rho
    gap_fn = identities.rkl_gaps if objective == "rkl" else identities.fkl_gaps
    g = gap_fn(world.reward, members, world.ref_logp[:, None], world.weights, world.beta)
    sub = g.get("suboptimality_kl_form", g["suboptimality"])
    return {"lemma_a1": e2, "optimality": g["optimality"] @ world.rho, "suboptimality": sub @ world.rho}


def _mle_indices(world: FiniteClassWorld, objective: str, n: int, trials: int, rng) -> np.ndarray:
    """θ̂ indices [trials] of the class MLE from n BT comparisons with pairs from π_data."""
    X, m = world.reward.shape
    p = np.exp(world.data_logp(objective))
    cell_p = (world.rho[:, None, None] * p[:, :, None] * p[:, None, :]).ravel()  # (x, y, y′)
    counts = rng.multinomial(n, cell_p / cell_p.sum(), size=trials)  # [T, X·n·n]
    r = world.reward
    win_p = 1.0 / (1.0 + np.exp(-(r[:, :, None] - r[:, None, :]))).ravel()
    wins = rng.binomial(counts, win_p)
    members = world.members()
    diff = (members[:, :, :, None] - members[:, :, None, :]).reshape(world.class_size, -1)  # [M, cells]
    ll = wins @ log_sigmoid(diff).T + (counts - wins) @ log_sigmoid(-diff).T  # [T, M]
    return np.argmax(ll, axis=-1)


def simulate(world: FiniteClassWorld, n_list, trials: int, seed: int = 0) -> dict:
    """{objective: {"n": n_list, quantity: array [len(n_list), trials]}} for objective ∈ {rkl, fkl}."""
    if trials < 10:
        raise ValueError(f"trials must be >= 10, got {trials!r}")
    out = {}
    for j, objective in enumerate(("rkl", "fkl")):
        rng = np.random.default_rng([seed, 55, j])
        per_member = _member_quantities(world, objective)
        idx = np.stack([_mle_indices(world, objective, int(n), trials, rng) for n in n_list])  # [N, T]
        res = {key: val[idx] for key, val in per_member.items()}
        res["theta_hat"] = world.thetas[idx]
        res["n"] = np.asarray(n_list, dtype=np.int64)
        res["coverage"] = world.coverage(objective)
        out[objective] = res
    return out


#: the configuration the ``mref.sc.*`` checks share (one simulation per process)
SHARED: dict[str, Any] = dict(seed=0, n_list=(1000, 2154, 4642, 10000, 21544, 46416, 100000), trials=2000, delta=0.1)


@functools.lru_cache(maxsize=2)
def shared_simulation(seed: int = SHARED["seed"]):
    world = make_world(seed)
    return world, simulate(world, SHARED["n_list"], SHARED["trials"], seed)


def quantiles(values, delta: float) -> np.ndarray:
    """(1 − δ)-quantile of |values| over trials, per N: [len(n_list)]."""
    return np.quantile(np.abs(np.asarray(values)), 1.0 - delta, axis=-1)


def loglog_slope(n_list, vals) -> float:
    return float(np.polyfit(np.log(np.asarray(n_list, float)), np.log(np.asarray(vals, float)), 1)[0])


def assess(n_list, quant, bound, rate: float, *, tol: float = 0.1, constant_scale: float = 1.0, bound_rate=None) -> dict:
    r"""Verdict on one theorem: the bound holds at every N and the measured rate equals ``rate``.

    ``bound`` [len(n_list)] is the theorem's bound at each N; ``constant_scale`` multiplies it (a
    deliberately wrong constant), ``bound_rate`` (optional) replaces its N-dependence by
    bound(N₀)·(N₀/N)^{bound_rate} (a deliberately wrong rate of the bound).  ``rate``: the decay
    the gap is claimed to have, tested two-sided: |slope + rate| ≤ ``tol``.
    """
    n = np.asarray(n_list, float)
    b = np.asarray(bound, float) * float(constant_scale)
    if bound_rate is not None:
        b = b[0] * (n[0] / n) ** float(bound_rate)
    q = np.asarray(quant, float)
    slope = loglog_slope(n, q)
    holds = bool(np.all(q <= b))
    rate_ok = abs(slope + float(rate)) <= tol
    return {"holds": holds, "rate_ok": rate_ok, "ok": holds and rate_ok, "slope": slope,
            "min_slack": float(np.min(b / q)), "max_slack": float(np.max(b / q))}

