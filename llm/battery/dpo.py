r"""The DPO trainer's convergence battery: the real :meth:`DPOTrainer.step` on tabular policies.

A case is (regularizer, parameters, response length T).  Responses of exactly T tokens over a
vocabulary of 3 (every one of the 3^T enumerable) get a random reward r; ``n_pairs`` = 200 000
preference pairs are sampled: two distinct responses drawn uniformly, the first preferred with
the Bradley–Terry probability σ(r(y) − r(y′)) (uniform pairs compare every response equally
often; pairs drawn from the reference compare its rare responses rarely, and their sampling error
then dominates).  A
tabular autoregressive policy (the PPO battery's :func:`~prefmatch.llm.battery.ppo.tabular_modules`,
one logit row per response prefix, so every distribution over responses is representable),
started at the reference, is trained by :meth:`DPOTrainer.from_modules` — the trainer's own
step and loss — and its Polyak average (parameters averaged over the second half of the run)
(Adam, batch 1024, lr 0.035/β; :func:`budget`) is compared in total variation with the regularizer's RLHF
optimum over whole responses, ``reg.sequence_optimal_logp`` (token-level cPM: its own optimum),
and held to :data:`TV_TOL` = 0.01, the PPO battery's tolerance.  Beside it the table states the
sampling floor: the TV of the *empirical* loss's exact minimizer (scipy L-BFGS on the response
logits, an independent optimizer) from the optimum, which must itself be within the tolerance
(the pairs pin the optimum down).  The optimum's logits scale like r/β, and so does the effect of
a pair's noise on them: below β = 0.7 the pairs and the steps grow like 0.7/β.

``python -m prefmatch.llm.battery.dpo [--quick] [--json] [--markdown FILE]`` prints the table.
Tests: tests/llm/test_dpo_convergence.py (the quick subset in ``make test``, the full sweep
marked slow: ``make test-dpo-battery``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefmatch.llm.battery.ppo import Problem, battery_parser, polyak_sum, tabular_modules
from prefmatch.llm.train.dpo import DPOConfig, DPOTrainer
from prefmatch.theory.dpo import dpo_regularizers
from prefmatch.theory.regularizers import REGISTRY
from prefmatch.theory.responses import enumerate_responses

#: the tolerance every case is held to (total variation to the RLHF optimum), and its sampling floor
TV_TOL = 0.01
VOCAB = 3
BETA = 0.7


@dataclass(frozen=True)
class Case:
    """One DPO configuration of the battery."""
    regularizer: str
    params: dict = field(default_factory=dict)
    length: int = 1
    beta: float = BETA
    eos: bool = False  # responses end at EOS (token VOCAB − 1): lengths 1..length, shared prefixes

    @property
    def id(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.regularizer}[{p}] beta={self.beta:g} " + (f"T=1..{self.length}+EOS" if self.eos else f"T={self.length}")


def sample_pairs(prob: Problem, data_logp: np.ndarray, n_pairs: int, seed: int):
    """``n_pairs`` (winner, loser) response indices: y ≠ y′ i.i.d. from exp(``data_logp``)
    (normalized), y ≻ y′ with probability σ(r(y) − r(y′))."""
    rng = np.random.default_rng(seed)
    p = np.exp(data_logp - data_logp.max())
    p /= p.sum()
    n = len(p)
    i = rng.choice(n, size=3 * n_pairs, p=p)
    j = rng.choice(n, size=3 * n_pairs, p=p)
    keep = np.flatnonzero(i != j)[:n_pairs]
    i, j = i[keep], j[keep]
    win = rng.random(len(i)) < 1.0 / (1.0 + np.exp(-(prob.reward[i] - prob.reward[j])))
    return np.where(win, i, j), np.where(win, j, i)


def empirical_minimizer(reg, winners, losers, ref_t, mask: np.ndarray) -> np.ndarray:
    """log π of the exact minimizer of the empirical DPO loss over all distributions on the n
    responses (scipy L-BFGS on response logits with the analytic gradient): the sampling floor."""
    from scipy.optimize import minimize

    n = mask.shape[0]
    b = -reg.sequence_implicit_reward(np.zeros(mask.shape), ref_t, mask)  # h = a log π − b
    a = reg.sequence_implicit_reward(mask / mask.sum(-1, keepdims=True), ref_t, mask) + b
    counts = np.zeros((n, n))
    np.add.at(counts, (winners, losers), 1.0)
    counts /= counts.sum()

    def f(z):
        h = a * z - b  # the prompt constant −a·logsumexp(z) cancels in every difference
        d = h[:, None] - h[None, :]
        loss = np.sum(counts * np.logaddexp(0.0, -d))
        g_d = -counts / (1.0 + np.exp(d))  # ∂/∂d of softplus(−d)
        grad = a * (g_d.sum(1) - g_d.sum(0))
        return loss, grad

    z0 = np.zeros(n)
    res = minimize(f, z0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})
    z = res.x - res.x.max()
    return z - np.log(np.exp(z).sum())


def budget(case: Case) -> tuple[int, int]:
    """(pairs, steps) of a case: 200 000 pairs and 600 steps; on EOS-terminated responses 400 000
    pairs per 15 responses (the sampling floor grows with their number: 15 of lengths 1–3, 31 of
    lengths 1–4) and 1200 steps per 15 responses (at 600 the trained policy's own noise left the
    rows at TV 0.008–0.0096); both times 0.7/β below β = 0.7 (a pair's
    noise moves the optimum's logits, which scale like r/β, in proportion; more steps average the
    minibatch noise down as far)."""
    scale = max(1.0, BETA / case.beta)
    if not case.eos:
        return int(round(200_000 * scale)), int(round(600 * scale))
    per = len(enumerate_responses(VOCAB, case.length, VOCAB - 1)[0]) / 15
    return int(round(400_000 * per * scale, -3)), int(round(1200 * max(1.0, per) * scale))


def run_case(case: Case, *, n_pairs: int | None = None, steps: int | None = None, batch_size: int = 1024,
             lr: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Train one case; ``{"id", "tv", "tv_at_start", "tv_sampling", ...}``.  ``lr`` (Adam) defaults to
    0.035/β: the optimal logits scale like r/β, and so does the distance the parameters travel;
    ``n_pairs`` and ``steps``: :func:`budget`."""
    lr = lr or 0.035 / case.beta
    default_pairs, default_steps = budget(case)
    n_pairs, steps = n_pairs or default_pairs, steps or default_steps
    from prefmatch.llm.train.rewards import build_regularizer

    TabularPolicy, _ = tabular_modules()
    reg = build_regularizer(case.regularizer, dict(case.params), case.beta)
    n_refs = len(reg.weights) if reg.multi_reference else 1
    eos = VOCAB - 1 if case.eos else None
    prob = Problem.make(vocab=VOCAB, length=case.length, n_refs=n_refs, seed=2000 + seed, eos=eos)
    refs = [TabularPolicy(VOCAB, case.length, init=w) for w in prob.ref_weights]
    policy = TabularPolicy(VOCAB, case.length, init=prob.ref_weights[0])
    ref_t = np.stack([prob.token_logp(r) for r in refs]) if n_refs > 1 else prob.token_logp(refs[0])
    start_logp = prob.token_logp(refs[0]).sum(-1)  # the policy starts at the (first) reference
    winners, losers = sample_pairs(prob, np.zeros(len(start_logp)), n_pairs, seed=3000 + seed)
    resp = [r[m > 0].tolist() for r, m in zip(prob.responses, prob.mask)]
    pairs = [([0], resp[w], resp[l]) for w, l in zip(winners, losers)]
    cfg = DPOConfig(regularizer=case.regularizer, regularizer_params=dict(case.params), beta=case.beta,
                    batch_size=batch_size, steps=steps, lr=lr, max_grad_norm=0.0, cpu=True, seed=seed,
                    max_response_len=case.length)
    trainer = DPOTrainer.from_modules(cfg, policy=policy, reference=refs if n_refs > 1 else refs[0], pairs=pairs,
                                      eos_token_id=eos)
    avg, n_avg = polyak_sum(trainer, steps, lambda t: t.policy.W)
    logp = prob.token_logp(TabularPolicy(VOCAB, case.length, init=avg / n_avg)).sum(-1)
    target = reg.sequence_optimal_logp(prob.reward, ref_t, prob.mask)

    def tv(lp):
        return 0.5 * float(np.abs(np.exp(lp) - np.exp(target)).sum())

    floor = empirical_minimizer(reg, winners, losers, ref_t, prob.mask)
    return {"id": case.id, "regularizer": case.regularizer, "length": case.length, "tv": tv(logp),
            "tv_at_start": tv(start_logp), "tv_sampling": tv(floor), "pairs": len(pairs), "steps": steps}


# --------------------------------------------------------------------------- the sweep
def regularizer_cases() -> list[tuple[str, dict]]:
    """(name, parameters) of every regularizer with a DPO loss, from each class's ``battery_cases``
    in the registry; parameters that do not change the implicit reward (KL's PPO estimator) are
    dropped and duplicates removed."""
    out: list[tuple[str, dict]] = []
    for name in dpo_regularizers():
        for p in REGISTRY[name].battery_cases or ({},):
            p = {k: v for k, v in p.items() if k != "estimator"}
            if (name, p) not in out:
                out.append((name, p))
    return out


def all_cases(lengths=(1, 2, 3)) -> list[Case]:
    """Every regularizer case at response lengths 1–3, each at a small β on two-token responses, and
    each on responses ending at EOS (lengths 1–3), KL also at β = 0.2 and 2 there, KL and token-level
    cPM on lengths 1–4;
    sequence-level cPM also at α = 0.05, where M = {π_ref(y) ≥ α} holds some of the 9 and 27 longer
    responses (at α = 0.3 it holds none of them on these instances, and cPM is KL there)."""
    cases = [Case(name, params, T) for name, params in regularizer_cases() for T in lengths]
    cases += [Case("cpm", {"alpha": 0.05, "level": "sequence"}, T) for T in lengths[1:]]
    cases += [Case(name, params, 2, beta=0.2) for name, params in regularizer_cases()]
    # responses that end at EOS (lengths 1-3, shared prefixes: 15 responses), as text does
    cases += [Case(name, params, 3, eos=True) for name, params in regularizer_cases()]
    cases += [Case("kl", {}, 3, beta=0.2, eos=True), Case("kl", {}, 3, beta=2.0, eos=True)]
    # lengths 1-4 (31 responses, optima spread over four lengths)
    cases += [Case("kl", {}, 4, eos=True), Case("cpm", {"alpha": 0.3, "level": "token"}, 4, eos=True)]
    return cases


#: the fast subset run by `make test`
QUICK = [
    Case("kl", {}, 2),
    Case("pm", {"c1": 0.4, "c2": 0.3}, 1),
    Case("cpm", {"alpha": 0.3, "level": "token"}, 2),
    Case("multi_rkl", {"weights": [0.3, 0.7]}, 1),
    Case("kl", {}, 3, eos=True),
]


def run_battery(cases, progress: bool = True, **kw) -> list[dict]:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    return [run_case(c, **kw) for c in tqdm(cases, desc="dpo battery", disable=not progress)]


def passes(row: dict) -> bool:
    """Within the tolerance of the optimum, on pairs that pin the optimum down within it too."""
    return row["tv"] <= TV_TOL and row["tv_sampling"] <= TV_TOL


def format_table(rows: list[dict]) -> str:
    lines = ["| configuration | pairs, steps | TV to the optimum | at the start | empirical minimizer (sampling floor) "
             "| verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        ok = "pass" if passes(r) else "FAIL"
        lines.append(f"| `{r['id']}` | {r['pairs']:,}, {r['steps']} | {r['tv']:.4f} | {r['tv_at_start']:.3f} | "
                     f"{r['tv_sampling']:.4f} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = battery_parser("prefmatch.llm.battery.dpo", "The DPO trainer's convergence battery on tabular policies.",
                        "dpo_battery_table.md")
    a = ap.parse_args(argv)
    import time

    t0 = time.perf_counter()
    rows = run_battery(QUICK if a.quick else all_cases(), progress=not a.json and sys.stderr.isatty())
    minutes = (time.perf_counter() - t0) / 60
    print(json.dumps(rows, indent=1) if a.json else format_table(rows))
    bad = [r for r in rows if not passes(r)]
    if a.markdown:
        from prefmatch.llm.battery.ppo import write_markdown

        write_markdown(a.markdown, f"python -m prefmatch.llm.battery.dpo{' --quick' if a.quick else ''} --markdown "
                       f"{a.markdown}", f"{len(rows)} configurations, "
                       f"{min(r['pairs'] for r in rows):,} to {max(r['pairs'] for r in rows):,} pairs and "
                       f"{min(r['steps'] for r in rows)} to {max(r['steps'] for r in rows)} steps (by β and response "
                       f"set); {len(rows) - len(bad)} within TV {TV_TOL} of the optimum with a sampling floor within "
                       f"it too; worst TV "
                       f"{max(r['tv'] for r in rows):.4f}, worst sampling floor {max(r['tv_sampling'] for r in rows):.4f}",
                       format_table(rows), versions=(f"{minutes:.1f} minutes",))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
