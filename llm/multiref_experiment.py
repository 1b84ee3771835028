r"""Two references with opposite biases: the trainers with the exact multi-reference objective against
the practical shortcuts, each trained policy compared with every objective's optimum.

``python -m prefmatch.llm.multiref_experiment [--quick] [--out DIR] [--page FILE]``

The world is the most direct one for the question: a tabular autoregressive language model
(:func:`prefmatch.llm.battery.ppo.tabular_modules`: one logit row per response prefix, so every
distribution over the V^T responses is representable and every optimum is computed exactly).  The
two references share random base logits and carry **opposite biases**: at every prefix reference 1
adds a bias to token 0 and reference 2 the same bias to token V−1, its size drawn uniformly in
[0, 2·``bias``] per prefix (so that the disagreement, and the per-token normalizer, vary with the prefix).  The reward is random per response.

Trained with the package's trainers through their public module API
(:meth:`prefmatch.llm.train.ppo.PPOTrainer.from_modules`, :meth:`prefmatch.llm.train.dpo.DPOTrainer.from_modules`):

* PPO with ``multi_rkl`` and both references (the exact objective, Theorem 5.2);
* PPO with ``kl`` and the **per-token geometric ensemble** as its one reference (what the public
  repository idanshen/multi_ref does; the ensemble's logits α log p₁ + (1−α) log p₂ are renormalized
  at every token by the trainer's log-softmax);
* PPO with ``kl`` and each reference alone;
* DPO with ``multi_rkl`` and both references (eq. 75), and DPO with ``kl`` and the geometric ensemble,
  on Bradley–Terry pairs drawn uniformly over responses.

Each trained policy (the Polyak average of the second half of its run, as in the convergence
battery) is compared, by total variation on the V^T responses, with the optimum of every objective:
the multi-reference optimum ∝ π̂_α e^{r/β}, the ensemble's ∝ q_geo e^{r/β} (= the multi-reference
optimum for r + βD, :mod:`prefmatch.theory.token_mixtures`), and each single-reference optimum.
The multi-reference objective each policy loses is reported too.  Intervals: 95 % t-intervals over
seeds (each seed redraws the world).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any
from pathlib import Path

import numpy as np

__all__ = ["MultirefConfig", "QUICK", "make_world", "run", "write_page", "main"]


@dataclass
class MultirefConfig:
    """Every setting of the experiment (defaults: the kept run)."""
    vocab: int = 3
    length: int = 3
    bias: float = 2.0
    beta: float = 0.5
    weights: tuple = (0.5, 0.5)
    seeds: int = 4
    ppo_steps: int = 150
    ppo_batch: int = 256
    ppo_lr: float = 0.05
    dpo_pairs: int = 8000
    dpo_epochs: int = 40
    dpo_batch: int = 512
    dpo_lr: float = 0.1
    variants: tuple = ("ppo_multi_rkl", "ppo_geometric", "ppo_ref1", "ppo_ref2", "dpo_multi_rkl", "dpo_geometric")

    def check(self) -> None:
        if self.vocab < 2 or self.length < 1:
            raise ValueError(f"vocab must be >= 2 and length >= 1, got vocab={self.vocab}, length={self.length}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        w = np.asarray(self.weights, float)
        if w.shape != (2,) or np.any(w < 0) or abs(w.sum() - 1) > 1e-9:
            raise ValueError(f"weights must be two non-negative numbers summing to 1, got {self.weights!r}")
        if self.seeds < 1 or self.ppo_steps < 2 or self.dpo_pairs < 2:
            raise ValueError("seeds must be >= 1, ppo_steps >= 2, dpo_pairs >= 2")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"variants: unknown {sorted(unknown)}; known: {', '.join(VARIANTS)}")


#: the fast configuration the default test suite runs
QUICK = dict(length=2, seeds=1, ppo_steps=60, ppo_batch=128, dpo_pairs=2000, dpo_epochs=20)

VARIANTS = {
    "ppo_multi_rkl": "PPO, multi_rkl with both references (exact)",
    "ppo_geometric": "PPO, kl to the per-token geometric ensemble",
    "ppo_ref1": "PPO, kl to reference 1 alone",
    "ppo_ref2": "PPO, kl to reference 2 alone",
    "dpo_multi_rkl": "DPO, multi_rkl with both references (eq. 75)",
    "dpo_geometric": "DPO, kl to the per-token geometric ensemble",
}
#: the objectives whose optima every policy is compared with
OPTIMA = {
    "multi_rkl": "multi-reference optimum ∝ π̂_α e^{r/β}",
    "geometric": "ensemble optimum ∝ q_geo e^{r/β}",
    "ref1": "reference 1 optimum ∝ p₁ e^{r/β}",
    "ref2": "reference 2 optimum ∝ p₂ e^{r/β}",
}
#: which optimum each variant targets
TARGET = {"ppo_multi_rkl": "multi_rkl", "ppo_geometric": "geometric", "ppo_ref1": "ref1", "ppo_ref2": "ref2",
          "dpo_multi_rkl": "multi_rkl", "dpo_geometric": "geometric"}


# --------------------------------------------------------------------------- the world
def make_world(cfg: MultirefConfig, seed: int) -> dict:
    """Reference logit tables (opposite biases), reward and the enumerated responses."""
    import itertools

    import torch

    from prefmatch.llm.battery.ppo import n_prefixes

    rng = np.random.default_rng([seed, 2929])
    rows = n_prefixes(cfg.vocab, cfg.length)
    base = rng.normal(size=(rows, cfg.vocab))
    strength = cfg.bias * rng.uniform(0.0, 2.0, size=(rows, 1))  # how strongly the references disagree at each prefix
    b1, b2 = np.zeros((rows, cfg.vocab)), np.zeros((rows, cfg.vocab))
    b1[:, :1], b2[:, -1:] = strength, strength
    responses = np.array(list(itertools.product(range(cfg.vocab), repeat=cfg.length)), dtype=np.int64)
    return {"tables": [torch.tensor(base + b1), torch.tensor(base + b2)],
            "reward": rng.normal(size=len(responses)), "responses": responses}


def _modules():
    import torch
    from torch import nn

    from prefmatch.llm.battery.ppo import tabular_modules

    TabularPolicy, _ = tabular_modules()

    class _Out:
        def __init__(self, logits):
            self.logits = logits

    class GeometricEnsemble(nn.Module):
        """The per-token geometric ensemble of two references, as one reference model: logits
        α log p₁(·|h) + (1−α) log p₂(·|h), renormalized per token by whoever takes their log-softmax."""

        def __init__(self, m1, m2, alpha: float):
            super().__init__()
            self.m1, self.m2, self.alpha = m1, m2, float(alpha)

        def forward(self, input_ids, attention_mask=None):
            l1 = torch.log_softmax(self.m1(input_ids=input_ids).logits, -1)
            l2 = torch.log_softmax(self.m2(input_ids=input_ids).logits, -1)
            return _Out(self.alpha * l1 + (1.0 - self.alpha) * l2)

    return TabularPolicy, GeometricEnsemble


def _token_logp(module, responses) -> np.ndarray:
    """log π(y) of every response under a module (sum of per-token log-softmax)."""
    import torch

    ids = torch.cat([torch.zeros(len(responses), 1, dtype=torch.long), torch.as_tensor(responses)], 1)
    with torch.no_grad():
        logits = module(input_ids=ids).logits[:, :-1].double()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return lp.sum(-1).numpy()


def optima(cfg: MultirefConfig, world: dict) -> dict:
    """log of every objective's optimum over the responses, and the references' sequence laws."""
    from prefmatch.theory import regularizers

    TabularPolicy, GeometricEnsemble = _modules()
    r1, r2 = (TabularPolicy(cfg.vocab, cfg.length, init=t) for t in world["tables"])
    L = np.stack([_token_logp(r1, world["responses"]), _token_logp(r2, world["responses"])])
    geo = _token_logp(GeometricEnsemble(r1, r2, cfg.weights[0]), world["responses"])
    r = world["reward"]
    single = regularizers.multi_rkl(weights=(1.0,), beta=cfg.beta)
    return {
        "ref_logp": L,
        "geo_logp": geo,
        "multi_rkl": regularizers.multi_rkl(weights=tuple(cfg.weights), beta=cfg.beta).optimal_logp(r, L),
        "geometric": single.optimal_logp(r, geo[None]),
        "ref1": single.optimal_logp(r, L[:1]),
        "ref2": single.optimal_logp(r, L[1:]),
    }


# --------------------------------------------------------------------------- training
def _polyak(trainer, steps: int, get_w):
    from prefmatch.llm.battery.ppo import polyak_sum

    avg, n = polyak_sum(trainer, steps, get_w)
    return avg / n


def train_variant(cfg: MultirefConfig, world: dict, variant: str, seed: int) -> np.ndarray:
    """The trained policy's log-probabilities over the responses."""
    from prefmatch.llm.train.dpo import DPOConfig, DPOTrainer
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    TabularPolicy, GeometricEnsemble = _modules()
    refs = [TabularPolicy(cfg.vocab, cfg.length, init=t) for t in world["tables"]]
    geo = GeometricEnsemble(refs[0], refs[1], cfg.weights[0])
    policy = TabularPolicy(cfg.vocab, cfg.length, init=(world["tables"][0] + world["tables"][1]) / 2)  # between both
    kind, target = variant.split("_", 1)
    if target == "multi_rkl":
        reg, params, reference = "multi_rkl", {"weights": list(cfg.weights)}, refs
    else:
        reg, params = "kl", {}
        reference = {"geometric": geo, "ref1": refs[0], "ref2": refs[1]}[target]
    if kind == "ppo":
        pcfg = PPOConfig(regularizer=reg, regularizer_params=params, beta=cfg.beta, steps=cfg.ppo_steps,
                         batch_size=cfg.ppo_batch, mini_batch_size=cfg.ppo_batch, ppo_epochs=1, lr=cfg.ppo_lr,
                         max_response_len=cfg.length, lam=1.0, cpu=True, seed=seed)
        trainer: Any = PPOTrainer.from_modules(pcfg, policy=policy, reference=reference, reward_fn=_reward_fn(world, cfg.vocab),
                                          prompts=[[0]])
        w = _polyak(trainer, cfg.ppo_steps, lambda t: t.policy.lm.W)
    else:
        pairs = _bt_pairs(world, cfg.dpo_pairs, seed)
        steps = cfg.dpo_epochs * max(1, len(pairs) // cfg.dpo_batch)
        dcfg = DPOConfig(regularizer=reg, regularizer_params=params, beta=cfg.beta, lr=cfg.dpo_lr, steps=steps,
                         batch_size=cfg.dpo_batch, eval_fraction=0.0, max_response_len=cfg.length, cpu=True, seed=seed,
                         max_grad_norm=0.0)
        trainer = DPOTrainer.from_modules(dcfg, policy=policy, reference=reference, pairs=pairs)
        w = _polyak(trainer, steps, lambda t: t.policy.W)
    return _token_logp(TabularPolicy(cfg.vocab, cfg.length, init=w), world["responses"])


def _reward_fn(world, vocab: int):
    """reward_fn(prompt_ids, response_ids, mask): the reward table read at each response's index."""
    import torch

    length = world["responses"].shape[1]
    base = vocab ** np.arange(length - 1, -1, -1)
    table = torch.as_tensor(world["reward"], dtype=torch.float32)

    def reward(prompt_ids, response_ids, response_mask):
        return table[torch.as_tensor((response_ids.cpu().numpy() * base).sum(-1))]

    return reward


def bt_mle(pairs, responses) -> np.ndarray:
    """The Bradley–Terry MLE reward per response from the pairs (scipy L-BFGS; mean 0: BT fixes only differences).

    The DPO loss over a policy table that can represent every distribution is the BT likelihood of its
    implicit reward, so the trained DPO policy's target is the regularized optimum for *this* reward:
    what the finite data identify.  A response never compared keeps reward 0."""
    from scipy.optimize import minimize

    index = {tuple(y): k for k, y in enumerate(np.asarray(responses).tolist())}
    w = np.array([index[tuple(c)] for _, c, _ in pairs])
    l = np.array([index[tuple(d)] for _, _, d in pairs])
    n = len(responses)

    def f(r):
        z = r[w] - r[l]
        nll = np.sum(np.logaddexp(0.0, -z))
        g = -1.0 / (1.0 + np.exp(z))
        grad = np.bincount(w, g, minlength=n) - np.bincount(l, g, minlength=n)
        return nll + 1e-9 * r @ r, grad + 2e-9 * r

    res = minimize(f, np.zeros(n), jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "maxiter": 10000})
    return res.x - res.x.mean()


def _bt_pairs(world, n: int, seed: int):
    """n Bradley–Terry pairs (prompt [0], chosen, rejected), responses drawn uniformly (full support)."""
    rng = np.random.default_rng([seed, 75])
    resp, r = world["responses"], world["reward"]
    i, j = rng.integers(len(resp), size=n), rng.integers(len(resp), size=n)
    keep = i != j
    i, j = i[keep], j[keep]
    win = rng.random(len(i)) < 1.0 / (1.0 + np.exp(-(r[i] - r[j])))
    chosen, rejected = np.where(win, i, j), np.where(win, j, i)
    return [([0], resp[c].tolist(), resp[d].tolist()) for c, d in zip(chosen, rejected)]


# --------------------------------------------------------------------------- evaluation
def _tv(a, b) -> float:
    return 0.5 * float(np.abs(np.exp(a) - np.exp(b)).sum())


def _t_interval(xs) -> tuple[float, list]:
    from scipy import stats

    xs = np.asarray(xs, float)
    m = float(xs.mean())
    if len(xs) < 2:
        return m, [m, m]
    h = float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))
    return m, [m - h, m + h]


def run(cfg: MultirefConfig | None = None, progress: bool = False) -> dict:
    """Train every variant for every seed; TVs to every optimum and the objective lost, with intervals."""
    from prefmatch.theory import regularizers

    cfg = cfg or MultirefConfig()
    cfg.check()
    t0 = time.perf_counter()
    per_seed = []
    for seed in range(cfg.seeds):
        world = make_world(cfg, seed)
        opt = optima(cfg, world)
        L, r = opt["ref_logp"], world["reward"]
        mrkl = regularizers.multi_rkl(weights=tuple(cfg.weights), beta=cfg.beta)
        v_star = float(mrkl.optimal_value(r, L))
        row: dict[str, Any] = {"seed": seed, "optima_tv": {f"{a}|{b}": _tv(opt[a], opt[b]) for a in OPTIMA for b in OPTIMA if a < b},
               "variants": {}}
        opt_mle: Any = None
        if any(v.startswith("dpo") for v in cfg.variants):
            r_hat = bt_mle(_bt_pairs(world, cfg.dpo_pairs, seed), world["responses"])
            opt_mle = optima(cfg, {**world, "reward": r_hat})
            row["reward_mle_error"] = float(np.std((r - r.mean()) - r_hat))
        for variant in cfg.variants:
            t1 = time.perf_counter()
            lp = train_variant(cfg, world, variant, seed)
            target_opt = opt_mle if variant.startswith("dpo") else opt
            row["variants"][variant] = {
                "tv": {o: _tv(lp, target_opt[o]) for o in OPTIMA},
                "tv_true_reward": {o: _tv(lp, opt[o]) for o in OPTIMA},
                "objective_lost": v_star - float(mrkl.objective(np.exp(lp), r, np.exp(L))),
                "seconds": time.perf_counter() - t1,
            }
            if progress:
                print(f"seed {seed} {variant}: TV to its optimum {row['variants'][variant]['tv'][TARGET[variant]]:.4f} "
                      f"({row['variants'][variant]['seconds']:.1f} s)", file=sys.stderr, flush=True)
        per_seed.append(row)
    summary: dict[str, Any] = {}
    for variant in cfg.variants:
        summary[variant] = {
            "tv": {o: dict(zip(("mean", "ci"), _t_interval([s["variants"][variant]["tv"][o] for s in per_seed]))) for o in OPTIMA},
            "objective_lost": dict(zip(("mean", "ci"), _t_interval([s["variants"][variant]["objective_lost"] for s in per_seed]))),
        }
    sep = {k: dict(zip(("mean", "ci"), _t_interval([s["optima_tv"][k] for s in per_seed]))) for k in per_seed[0]["optima_tv"]}
    checks = _checks(cfg, per_seed, summary, sep)
    return {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "per_seed": per_seed, "summary": summary, "optima_separation": sep, "checks": checks,
            "wall_time_s": time.perf_counter() - t0,
            "machine": f"{platform.machine()} CPU, torch {_torch_version()}"}


def _torch_version() -> str:
    import torch

    return torch.__version__


def _checks(cfg, per_seed, summary, sep) -> list[dict]:
    """Each trained policy is closer to its own objective's optimum than to every other one, in every seed."""
    out = []
    for variant, s in summary.items():
        own = TARGET[variant]
        wins = sum(all(p["variants"][variant]["tv"][own] < p["variants"][variant]["tv"][o] for o in OPTIMA if o != own)
                   for p in per_seed)
        out.append({"id": f"multiref.{variant}.nearest_own_optimum", "passed": wins == len(per_seed),
                    "detail": f"{VARIANTS[variant]}: closest to the {OPTIMA[own]} in {wins} of {len(per_seed)} seeds; "
                              f"mean TV to it {s['tv'][own]['mean']:.4f} [{s['tv'][own]['ci'][0]:.4f}, {s['tv'][own]['ci'][1]:.4f}]"})
    return out


# --------------------------------------------------------------------------- the results page
def write_page(result: dict, path: str | Path, command: str) -> str:
    """The generated results page (markdown) for ``result``."""
    cfg = result["config"]
    lines = [
        "# Multi-reference RLHF with two opposite references",
        "",
        f"<!-- generated by `{command}`; do not edit -->",
        "",
        f"Generated from the run `{command}` ({result['machine']}; wall time {result['wall_time_s'] / 60:.1f} min). "
        "Every number below is read from that run's JSON, kept beside this page "
        "(`docs/results/multiref/results.json`); the theory is on {doc}`/theory/multi_reference_practice`.",
        "",
        f"**World.** A tabular autoregressive model over V = {cfg['vocab']} tokens and responses of T = {cfg['length']} "
        f"tokens ({cfg['vocab'] ** cfg['length']} responses, every optimum exact). Two references share random base "
        f"logits; at every prefix reference 1 adds a bias to token 0 and reference 2 the same bias to token {cfg['vocab'] - 1} "
        f"(opposite biases), its size drawn uniformly in [0, {2 * cfg['bias']:g}] per prefix, so that how much they disagree depends on the prefix. Random N(0, 1) reward per response, β = {cfg['beta']:g} (package convention: E[r] − β·D), "
        f"weights α = ({cfg['weights'][0]:g}, {cfg['weights'][1]:g}). {cfg['seeds']} seeds, each a new world.",
        "",
        f"**Training.** PPO through `PPOTrainer.from_modules`: {cfg['ppo_steps']} iterations of {cfg['ppo_batch']} rollouts, "
        f"lr {cfg['ppo_lr']:g}, no value model (λ = 1, whitened return-to-go), the policy started halfway between the "
        f"references. DPO through `DPOTrainer.from_modules`: {cfg['dpo_pairs']} Bradley–Terry pairs drawn uniformly over "
        f"responses, {cfg['dpo_epochs']} epochs, batch {cfg['dpo_batch']}, lr {cfg['dpo_lr']:g}, no gradient clipping. Each "
        "trained policy is the Polyak average of the second half of its run. A DPO policy is compared with the optima for "
        "the Bradley–Terry MLE reward of its own pairs (a policy table minimizes the DPO loss exactly there: what the data "
        "identify); its distances to the optima for the true reward are in the JSON (`tv_true_reward`).",
        "",
        "## Total variation from each objective's optimum",
        "",
        "Mean over seeds with a 95 % t-interval (with few seeds it can reach below 0 for these non-negative "
        "quantities); the bold cell is the objective the run optimizes.",
        "",
        "| trained policy | " + " | ".join(OPTIMA.values()) + " | multi-reference objective lost |",
        "|---|" + "---|" * (len(OPTIMA) + 1),
    ]
    for variant, s in result["summary"].items():
        cells = []
        for o in OPTIMA:
            c = s["tv"][o]
            txt = f"{c['mean']:.4f} [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}]"
            cells.append(f"**{txt}**" if o == TARGET[variant] else txt)
        ol = s["objective_lost"]
        cells.append(f"{ol['mean']:.2e} [{ol['ci'][0]:.2e}, {ol['ci'][1]:.2e}]")
        lines.append(f"| {VARIANTS[variant]} | " + " | ".join(cells) + " |")
    lines += ["", *_reading(result), "", "## How far apart the optima are", "",
              "Total variation between the optima themselves (mean over seeds, 95 % t-interval): a trained policy can be "
              "told apart from another objective's optimum only where its own error is below this.", "",
              "| optima | TV |", "|---|---|"]
    for k, c in result["optima_separation"].items():
        a, b = k.split("|")
        lines.append(f"| {OPTIMA[a]} vs {OPTIMA[b]} | {c['mean']:.4f} [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}] |")
    lines += ["", "## Checks", "", "| check | result |", "|---|---|"]
    for c in result["checks"]:
        lines.append(f"| `{c['id']}` | {'pass' if c['passed'] else '**FAIL**'} — {c['detail']} |")
    lines.append("")
    text = "\n".join(lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text


def _reading(result: dict) -> list[str]:
    """What the table says, in numbers read from it."""
    s, sep = result["summary"], result["optima_separation"]
    out = []
    if "ppo_multi_rkl" in s and "ppo_geometric" in s:
        ex, geo = s["ppo_multi_rkl"], s["ppo_geometric"]
        out.append(
            f"Every trained policy is nearest its own objective's optimum (the checks below). The per-token geometric "
            f"ensemble's optimum is {sep['geometric|multi_rkl']['mean']:.3f} in total variation from the multi-reference one, "
            f"and PPO with the ensemble lands there: {geo['tv']['multi_rkl']['mean']:.3f} from the multi-reference optimum, "
            f"against {ex['tv']['multi_rkl']['mean']:.3f} for PPO with `multi_rkl`; it loses "
            f"{geo['objective_lost']['mean']:.2e} of the multi-reference objective, where the exact run loses "
            f"{ex['objective_lost']['mean']:.2e} (its training error).")
    if "dpo_multi_rkl" in s and "dpo_geometric" in s:
        out.append("")
        out.append(
            f"DPO behaves the same way: with both references (eq. 75) it is {s['dpo_multi_rkl']['tv']['multi_rkl']['mean']:.3f} "
            f"from the multi-reference optimum of its data, with the ensemble {s['dpo_geometric']['tv']['multi_rkl']['mean']:.3f}.")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prefmatch.llm.multiref_experiment",
                                 description="PPO/DPO with two opposite references: exact multi_rkl vs the per-token "
                                 "geometric ensemble vs each reference alone, against every objective's optimum")
    ap.add_argument("--quick", action="store_true", help="the fast configuration the tests run")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 4; 1 with --quick)")
    ap.add_argument("--out", default="out/multiref", help="directory for results.json")
    ap.add_argument("--page", default=None, help="also write the results page (markdown) here")
    ap.add_argument("--progress", action="store_true", help="one line per trained policy on stderr")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    try:
        cfg = MultirefConfig(**overrides)
        cfg.check()
    except ValueError as e:
        print(f"prefmatch: error: {e}", file=sys.stderr)
        return 2
    res = run(cfg, progress=args.progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    if args.page:
        cmd = "python -m prefmatch.llm.multiref_experiment" + (" --quick" if args.quick else "") + \
              (f" --seeds {args.seeds}" if args.seeds is not None else "") + f" --out {args.out} --page {args.page}"
        write_page(res, args.page, cmd)
    for c in res["checks"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['id']}: {c['detail']}")
    return 0 if all(c["passed"] for c in res["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
