r"""The PPO trainer's convergence battery: the real :meth:`PPOTrainer.step` on tabular policies.

The regularizer battery (tests/theory) checks each closed-form optimum against cvxpy; this one
checks that the *trainer* reaches it.  A case is a trainer configuration (regularizer,
parameters, placement, estimator, whitening, response length): a tabular autoregressive policy
over a vocabulary of ``V`` tokens (one logit row per response prefix) and responses of exactly
``T`` tokens (every one of the V^T responses enumerable), started at the reference, is trained by
:meth:`PPOTrainer.from_modules` against a known reward per response; its Polyak average (the
parameters averaged over the second half of the run) is compared with the theory's optimum over
whole responses, ``reg.sequence_optimal_logp`` (for token-level cPM its own token-level
optimum), in total variation.

``python -m prefmatch.llm.battery.ppo [--quick] [--json]`` prints the table (combination → TV, or
refused with the reason).  Tests: tests/llm/test_convergence.py (a fast subset in ``make test``,
the full sweep marked slow: ``make test-battery``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefmatch.llm.config import ConfigError
from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer
from prefmatch.theory.regularizers import REGISTRY
from prefmatch.theory.responses import enumerate_responses

#: the tolerance the battery holds every accepted configuration to (total variation)
TV_TOL = 0.01


@dataclass(frozen=True)
class Case:
    """One trainer configuration of the battery."""
    regularizer: str
    params: dict = field(default_factory=dict)
    mode: str = "auto"
    whiten: bool = True
    length: int = 1
    value: bool = False  # a tabular value model (GAE with lam = 0.95) instead of none (lam = 1)
    critic_init: str = "zero"  # the value model's start: zero, or "reward_model" (a separate critic copied
    # from the reward model, DeepSpeed-Chat's and the PM paper's: its score read at every prefix)
    ppo_epochs: int = 1
    mini_batches: int = 1
    max_grad_norm: float = 0.0  # the trainer's default clips at 1.0
    temperature: float = 1.0
    eos: bool = False  # responses end at EOS (token vocab − 1): lengths 1..length
    batch_size: int = 256
    reward_scale: float = 1.0  # rewards ~ N(0, reward_scale²): beyond any clip when large
    reward_clip: float = 0.0  # the trainer's reward_clip; the optimum is then the clipped reward's

    @property
    def beta(self) -> float:
        return float(self.params.get("beta", BASE_BETA))

    @property
    def id(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()) if k != "weights")
        if len(self.params.get("weights", ())) > 2:
            p += ("," if p else "") + "weights=" + "/".join(f"{w:g}" for w in self.params["weights"])
        critic = " critic=reward_model" if self.critic_init == "reward_model" else ""
        extra = (f" value+gae0.95{critic}" if self.value else "") + (
            f" epochs={self.ppo_epochs}x{self.mini_batches}mb" if self.ppo_epochs > 1 or self.mini_batches > 1 else "") + (
            f" clip-grad={self.max_grad_norm:g}" if self.max_grad_norm else "") + (
            f" temperature={self.temperature:g}" if self.temperature != 1 else "") + (
            f" batch={self.batch_size}" if self.batch_size != 256 else "") + (
            f" |r|~{self.reward_scale:g}" if self.reward_scale != 1 else "") + (
            f" reward_clip={self.reward_clip:g}" if self.reward_clip else "")
        length = f"T=1..{self.length}+EOS" if self.eos else f"T={self.length}"
        return f"{self.regularizer}[{p}] {self.mode} whiten={'on' if self.whiten else 'off'} {length}{extra}"


# --------------------------------------------------------------------------- tabular modules
def n_prefixes(vocab: int, length: int) -> int:
    """Number of response prefixes of 0..length tokens: Σ_m vocab^m (one table row each)."""
    return sum(vocab ** m for m in range(length + 1))


def prefix_rows(input_ids, prompt_len: int, vocab: int, length: int):
    """[B, L]: the table row of the response prefix read at each position of ``input_ids`` (the
    prompt is fixed; at position i the prefix is the response tokens up to i, m of them; rows are
    numbered by length, then by the prefix read as a base-``vocab`` number)."""
    import torch

    B, L = input_ids.shape
    resp = input_ids[:, prompt_len:]
    offsets = [sum(vocab ** j for j in range(m)) for m in range(length + 1)]
    code = torch.zeros(B, dtype=torch.long, device=input_ids.device)
    codes = [code]
    for m in range(1, min(length, resp.shape[1]) + 1):
        code = code * vocab + resp[:, m - 1]
        codes.append(code)
    cols = []
    for i in range(L):
        m = min(max(i - prompt_len + 1, 0), len(codes) - 1)
        cols.append(offsets[m] + codes[m])
    return torch.stack(cols, 1)


def polyak_sum(trainer, steps: int, weights) -> tuple[Any, int]:
    """Run ``trainer.step()`` ``steps`` times; the sum of ``weights(trainer)`` over the second half of the
    run and how many were summed (the Polyak–Ruppert average is their ratio, taken by the caller).  The PPO
    and DPO batteries and the multi-reference experiment all average this way."""
    total: Any = None
    n = 0
    for k in range(steps):
        trainer.step()
        if k >= steps // 2:
            w = weights(trainer).detach().clone()
            total = w if total is None else total + w
            n += 1
    return total, n


def tabular_modules():
    """(TabularPolicy, TabularValue) classes (built lazily: this module imports without torch)."""
    import torch
    from torch import nn

    class _Out:
        def __init__(self, logits):
            self.logits = logits

    class TabularPolicy(nn.Module):
        """π(y_t | y_<t) = softmax(W[prefix]) with one row per response prefix: every
        distribution over responses of up to ``length`` tokens is representable (a table indexed
        by the previous token only would not be, from three tokens on).  Called like an HF causal LM."""

        def __init__(self, vocab: int, length: int, prompt_len: int = 1, init=None):
            super().__init__()
            self.vocab, self.length, self.prompt_len = vocab, length, prompt_len
            w = torch.zeros(n_prefixes(vocab, length), vocab, dtype=torch.float64) if init is None else init.clone()
            self.W = nn.Parameter(w)

        def forward(self, input_ids, attention_mask=None):
            return _Out(self.W[prefix_rows(input_ids, self.prompt_len, self.vocab, self.length)])  # [B, L, V]

    class TabularValue(nn.Module):
        """V(y_≤t): one value per response prefix, shape [B, L]."""

        def __init__(self, vocab: int, length: int, prompt_len: int = 1, init=None):
            super().__init__()
            self.vocab, self.length, self.prompt_len = vocab, length, prompt_len
            v = torch.zeros(n_prefixes(vocab, length), dtype=torch.float64) if init is None else torch.as_tensor(init).double()
            self.V = nn.Parameter(v.clone())

        def forward(self, input_ids, attention_mask=None):
            return self.V[prefix_rows(input_ids, self.prompt_len, self.vocab, self.length)].float()

    return TabularPolicy, TabularValue


# --------------------------------------------------------------------------- one problem
@dataclass
class Problem:
    """A random tabular instance: references' weights, reward per response, all responses.

    ``eos`` (a token id) makes responses end at EOS, lengths 1..``length``, as real text does."""
    vocab: int
    length: int
    ref_weights: list  # one [n_prefixes, V] logit table per reference
    reward: np.ndarray  # [n]
    responses: np.ndarray  # [n, T] token ids, right-padded with 0
    mask: np.ndarray  # [n, T]: 1 on each response's tokens
    eos: int | None = None

    @classmethod
    def make(cls, vocab: int = 3, length: int = 1, n_refs: int = 1, seed: int = 0, eos: int | None = None,
             reward_scale: float = 1.0):
        import torch

        rng = np.random.default_rng(seed)
        refs = [torch.tensor(rng.normal(scale=1.0, size=(n_prefixes(vocab, length), vocab))) for _ in range(n_refs)]
        responses, mask = enumerate_responses(vocab, length, eos)
        reward = reward_scale * rng.normal(size=len(responses))
        return cls(vocab, length, refs, reward, responses, mask, eos)

    def token_logp(self, module) -> np.ndarray:
        """log π(y_t | ·) of every enumerated response [n, T] under a tabular module (0 past its end)."""
        import torch

        ids = torch.cat([torch.zeros(len(self.responses), 1, dtype=torch.long), torch.as_tensor(self.responses)], 1)
        with torch.no_grad():
            logits = module(input_ids=ids).logits[:, :-1].double()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return lp.numpy() * self.mask

    def reward_model_values(self) -> np.ndarray:
        """[n_prefixes]: what a critic copied from the reward model predicts at the start — the reward
        model's score read at each response prefix, here the reward of the first complete response
        that extends it (the response's own reward at its last token); 0 for prefixes no response extends."""
        import torch

        ids = torch.cat([torch.zeros(len(self.responses), 1, dtype=torch.long), torch.as_tensor(self.responses)], 1)
        rows = prefix_rows(ids, 1, self.vocab, self.length).numpy()  # position t reads the first t tokens
        values = np.zeros(n_prefixes(self.vocab, self.length))
        for i in reversed(range(len(rows))):  # the first response extending a prefix sets its value
            n = int(self.mask[i].sum())
            values[rows[i, :n + 1]] = self.reward[i]
        return values

    def reward_fn(self):
        """The task reward of a sampled batch: each row's tokens up to its mask, looked up by value."""
        import torch

        table = {tuple(r[m > 0].tolist()): float(x) for r, m, x in zip(self.responses, self.mask, self.reward)}

        def reward(prompt_ids, response_ids, response_mask):
            rows = zip(response_ids.cpu().numpy(), response_mask.cpu().numpy())
            return torch.tensor([table[tuple(r[m > 0].tolist())] for r, m in rows], dtype=torch.float32)

        return reward


def budget(case: Case) -> tuple[int, float]:
    """(steps, lr) of a case.  Without a baseline (no whitening, no value model) the advantage is the
    raw return, whose variance makes the Polyak average converge slowly (1000 steps instead of 300);
    several updates per rollout take a proportionally smaller step; responses ending at EOS (15 of
    them) and three-token responses (27) take twice the steps (four times without a baseline).  The optimum's logits grow like
    |r|/β, and so does the way there: beyond |r| ~ 1 at β = 0.7 the steps grow like |r|·0.7/β and the
    lr like its fourth root (a larger lr diverges with the f-divergences' π_ref/π terms at β = 0.05)."""
    if case.whiten or case.value:
        steps = 600 if (case.eos or case.length >= 3) else 300
    else:
        steps = 4000 if case.eos else 1000
    lr = 0.05 / (case.ppo_epochs * case.mini_batches) ** 0.5
    ratio = max(1.0, case.reward_scale * BASE_BETA / case.beta)
    return int(round(steps * ratio)), lr * ratio ** 0.25


BASE_BETA = 0.7  # the β of every case that does not set one


def run_case(case: Case, *, steps: int | None = None, lr: float | None = None,
             seed: int = 0, vocab: int = 3) -> dict[str, Any]:
    """Train one case; ``{"id", "accepted", "tv", "reason", ...}`` (steps and lr: :func:`budget`)."""
    default_steps, default_lr = budget(case)
    steps, lr = steps or default_steps, lr or default_lr
    started = time.perf_counter()

    TabularPolicy, TabularValue = tabular_modules()
    n_refs = len(case.params.get("weights", ())) or 1
    eos = vocab - 1 if case.eos else None
    prob = Problem.make(vocab=vocab, length=case.length, n_refs=n_refs, seed=1000 + seed, eos=eos,
                        reward_scale=case.reward_scale)
    refs = [TabularPolicy(vocab, case.length, init=w) for w in prob.ref_weights]
    policy = TabularPolicy(vocab, case.length, init=prob.ref_weights[0])
    value = None
    if case.value:
        value = TabularValue(vocab, case.length,
                             init=prob.reward_model_values() if case.critic_init == "reward_model" else None)
    params = dict(case.params)
    if params.get("alpha") == "near-ref":  # α 1e-9 above a first-token π_ref: float32 cannot tell them apart
        first = np.exp(prob.token_logp(refs[0])[:, 0])
        params["alpha"] = float(first[np.argmin(np.abs(first - 0.3))]) * (1 + 1e-9)
    cfg = PPOConfig(
        regularizer=case.regularizer, regularizer_params=params, regularizer_mode=case.mode,
        beta=case.beta, whiten_advantages=case.whiten, steps=steps, batch_size=case.batch_size,
        mini_batch_size=max(1, case.batch_size // case.mini_batches), ppo_epochs=case.ppo_epochs, lr=lr,
        max_response_len=case.length, lam=0.95 if case.value else 1.0, vf_coef=0.5, cpu=True, seed=seed,
        max_grad_norm=case.max_grad_norm, temperature=case.temperature, reward_clip=case.reward_clip)
    cfg.regularizer_params.pop("beta", None)
    try:
        trainer = PPOTrainer.from_modules(cfg, policy=policy, reference=refs if n_refs > 1 else refs[0],
                                          reward_fn=prob.reward_fn(), prompts=[[0]], value=value,
                                          eos_token_id=eos)
    except ConfigError as e:
        return {"id": case.id, "accepted": False, "tv": None, "reason": str(e)}
    avg, n_avg = polyak_sum(trainer, steps, lambda t: t.policy.lm.W)
    averaged = TabularPolicy(vocab, case.length, init=avg / (n_avg * case.temperature))  # the trained policy
    logp = prob.token_logp(averaged).sum(-1)
    ref_t = np.stack([prob.token_logp(r) for r in refs]) if n_refs > 1 else prob.token_logp(refs[0])
    reward = np.clip(prob.reward, -case.reward_clip, case.reward_clip) if case.reward_clip else prob.reward
    target = trainer.reg.sequence_optimal_logp(reward, ref_t, prob.mask)
    tv = 0.5 * float(np.abs(np.exp(logp) - np.exp(target)).sum())
    start = 0.5 * float(np.abs(np.exp(prob.token_logp(refs[0]).sum(-1)) - np.exp(target)).sum())
    row = {"id": case.id, "accepted": True, "placement": trainer.placement, "tv": tv, "tv_at_start": start,
           "steps": steps, "lr": lr, "reason": "", "seconds": round(time.perf_counter() - started, 1)}
    if case.reward_clip:  # how far the clipped objective's optimum is from the unclipped one's
        unclipped = trainer.reg.sequence_optimal_logp(prob.reward, ref_t, prob.mask)
        row["tv_to_unclipped_optimum"] = 0.5 * float(np.abs(np.exp(logp) - np.exp(unclipped)).sum())
    return row


# --------------------------------------------------------------------------- the sweep
def regularizer_cases() -> list[tuple[str, dict]]:
    """(name, parameters) of every trainable regularizer, from each class's ``battery_cases``
    in the registry (a newly registered regularizer is in the battery with no other edit)."""
    return [(name, dict(p)) for name, cls in REGISTRY.items() if cls.trainable for p in cls.battery_cases]


def all_cases(lengths=(1, 2)) -> list[Case]:
    """The accepted configurations, in the regime users train in.

    Fixed-length responses: regularizer × mode (reward, loss) × whitening × length 1 and 2, length 3
    with whitening.  Responses ending at EOS (lengths 1–3, shared prefixes, optima spread over
    several lengths): every regularizer and placement, with whitening on and off; minibatches of 1
    (batch 64), 8 and the whole batch, ``ppo_epochs`` = 2, value model on (zero-initialised, and a
    separate critic initialised from the reward model), gradient clipping,
    temperature; rewards far beyond ±5 with and without ``reward_clip``; β ∈ {0.05, 0.3, 1, 5}
    (budgets scale with β, :func:`budget`); K = 3 references with unequal weights; cPM with
    π_ref within float32 rounding of α; lengths 1–4 for every regularizer."""
    cases = [Case(name, params, mode, whiten, T)
             for name, params in regularizer_cases() for mode in ("reward", "loss")
             for whiten in (True, False) for T in lengths]
    # three-token responses (27 of them) where cheap: with whitening, every regularizer and placement
    cases += [Case(name, params, mode, True, 3) for name, params in regularizer_cases() for mode in ("reward", "loss")]
    variants: list[tuple[str, dict]] = [("kl", {"estimator": "k1"}), ("cpm", {"alpha": 0.3, "level": "sequence"}),
                                        ("fdiv", {"f": "chi2"})]
    for name, params in variants:
        cases.append(Case(name, params, "auto", True, 2, value=True))
        cases.append(Case(name, params, "auto", True, 2, ppo_epochs=2, mini_batches=4))
        cases.append(Case(name, params, "auto", True, 2, max_grad_norm=1.0))  # the trainer's default clipping
        cases.append(Case(name, params, "auto", True, 2, temperature=0.7))
    # --- responses that end at EOS
    cases += [Case(name, params, mode, whiten, 3, eos=True) for name, params in regularizer_cases()
              for mode in ("reward", "loss") for whiten in (True, False)]
    variants = [("kl", {"estimator": "k1"}), ("fdiv", {"f": "chi2"}), ("multi_fkl", {"weights": [0.3, 0.7]}),
                ("cpm", {"alpha": 0.3, "level": "token"})]
    for name, params in variants:
        cases.append(Case(name, params, "auto", True, 3, eos=True, batch_size=64, mini_batches=64))  # minibatch 1
        cases.append(Case(name, params, "auto", True, 3, eos=True, mini_batches=32))  # minibatch 8
        cases.append(Case(name, params, "auto", True, 3, eos=True, ppo_epochs=2, mini_batches=4))
        cases.append(Case(name, params, "auto", True, 3, eos=True, value=True))
        cases.append(Case(name, params, "auto", False, 3, eos=True, value=True))
        for whiten in (True, False):  # a separate critic initialised from the reward model
            cases.append(Case(name, params, "auto", whiten, 3, eos=True, value=True, critic_init="reward_model"))
        cases.append(Case(name, params, "auto", True, 3, eos=True, max_grad_norm=1.0))
        cases.append(Case(name, params, "auto", True, 3, eos=True, temperature=0.7))
        cases.append(Case(name, params, "auto", True, 3, eos=True, reward_scale=8.0))
        cases.append(Case(name, params, "auto", True, 3, eos=True, reward_scale=8.0, reward_clip=5.0))
    for beta in BETAS:
        variants = [("kl", {"estimator": "k1"}), ("pm", {}), ("cpm", {"alpha": 0.3, "level": "sequence"}), ("maxent", {})]
        for name, params in variants + [("fdiv", {"f": f}) for f in ("reverse_kl", "js", "hellinger", "chi2")]:
            cases.append(Case(name, {**params, "beta": beta}, "auto", True, 3, eos=True, reward_scale=max(1.0, beta)))
    for name in ("multi_rkl", "multi_fkl"):
        cases.append(Case(name, {"weights": [0.2, 0.3, 0.5]}, "auto", True, 3, eos=True))
    cases.append(Case("cpm", {"alpha": "near-ref", "level": "token"}, "auto", True, 3, eos=True))
    # lengths 1-4 (31 responses, 121 prefixes): every regularizer with whitening, and minibatches of 8
    cases += [Case(name, params, "auto", True, 4, eos=True) for name, params in regularizer_cases()]
    cases += [Case(name, params, "auto", True, 4, eos=True, mini_batches=32)
              for name, params in [("kl", {"estimator": "k1"}), ("fdiv", {"f": "chi2"})]]
    return cases


#: the βs of the battery's β sweep (the other cases use :data:`BASE_BETA`)
BETAS = (0.05, 0.3, 1.0, 5.0)

#: the fast subset run by `make test`: one case per placement family and each fixed defect
QUICK = [
    Case("kl", {"estimator": "k1"}, "reward", True, 2),
    Case("pm", {"c1": 0.4, "c2": 0.3}, "reward", True, 1),
    Case("cpm", {"alpha": 0.3, "level": "sequence"}, "reward", False, 2),
    Case("cpm", {"alpha": 0.3, "level": "token"}, "reward", True, 2),
    Case("fdiv", {"f": "chi2"}, "loss", True, 2),
    Case("multi_fkl", {"weights": [0.3, 0.7]}, "loss", True, 1),
    Case("multi_rkl", {"weights": [0.3, 0.7]}, "reward", True, 1),
    # the users' regime: EOS-terminated responses of lengths 1-3
    Case("kl", {"estimator": "k1"}, "auto", True, 3, eos=True, batch_size=64, mini_batches=8),  # minibatches of 8
    Case("fdiv", {"f": "chi2"}, "auto", True, 3, eos=True),  # whitening from earlier rollouts, a pathwise term
    Case("kl", {"estimator": "k1"}, "auto", True, 3, eos=True, reward_scale=8.0, reward_clip=5.0),
    Case("fdiv", {"f": "js", "beta": 5.0}, "auto", True, 3, eos=True, reward_scale=5.0),
    Case("cpm", {"alpha": "near-ref", "level": "token"}, "auto", True, 3, eos=True),  # indicator in float64
]


def _run_quiet(args):
    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    case, kw = args
    return run_case(case, **kw)


def run_battery(cases, progress: bool = True, jobs: int = 1, **kw) -> list[dict]:
    """Every case's row, in order; ``jobs`` processes (cases are independent and seeded)."""
    from tqdm import tqdm

    if jobs <= 1:
        return [_run_quiet((c, kw)) for c in tqdm(cases, desc="battery", disable=not progress)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(tqdm(pool.map(_run_quiet, [(c, kw) for c in cases]), total=len(cases), desc="battery",
                         disable=not progress))


def format_table(rows: list[dict]) -> str:
    lines = ["| configuration | placement | TV to the optimum (start) | verdict |", "|---|---|---|---|"]
    for r in rows:
        if r["accepted"]:
            ok = "pass" if r["tv"] <= TV_TOL else "FAIL"
            lines.append(f"| `{r['id']}` | {r['placement']} | {r['tv']:.4f} ({r['tv_at_start']:.3f}) | {ok} |")
        else:
            lines.append(f"| `{r['id']}` | refused | — | {r['reason']} |")
    return "\n".join(lines)


def write_markdown(path: str, command: str, summary: str, table: str, versions: tuple[str, ...] = ()) -> None:
    """A battery's table as a results page fragment: the command that wrote it, the date, the machine
    and the library versions (``versions``: further ``"name version"`` items), then ``summary`` and the table."""
    import platform
    import time

    import torch

    run_on = ", ".join([f"Run on {time.strftime('%Y-%m-%d')}", f"{platform.machine()} CPU",
                        f"torch {torch.__version__}", *versions])
    Path(path).write_text(f"<!-- written by `{command}`; do not edit -->\n{run_on}: {summary}.\n\n{table}\n")


def battery_parser(module: str, description: str, table: str, quick: bool = True) -> argparse.ArgumentParser:
    """The command line every battery shares (``python -m module``): --quick (when it has a fast subset),
    --json, and --markdown FILE for the kept ``table`` in docs/results/."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    if quick:
        ap.add_argument("--quick", action="store_true", help="only the fast subset that `make test` runs")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table, with the command and the machine, "
                    f"to FILE (docs/results/{table} is written this way)")
    return ap


def main(argv=None) -> int:
    ap = battery_parser("prefmatch.llm.battery.ppo", "The PPO trainer's convergence battery on tabular policies.",
                        "battery_table.md")
    ap.add_argument("--steps", type=int, default=None, help="PPO steps per case (default: budget())")
    ap.add_argument("--jobs", type=int, default=1, help="cases run in this many processes at once")
    a = ap.parse_args(argv)
    rows = run_battery(QUICK if a.quick else all_cases(), progress=not a.json and sys.stderr.isatty(),
                       jobs=a.jobs, steps=a.steps)
    print(json.dumps(rows, indent=1) if a.json else format_table(rows))
    bad = [r for r in rows if r["accepted"] and r["tv"] > TV_TOL]
    if a.markdown:
        n_acc = sum(r["accepted"] for r in rows)
        write_markdown(a.markdown, f"python -m prefmatch.llm.battery.ppo{' --quick' if a.quick else ''} --markdown "
                       f"{a.markdown}", f"{len(rows)} configurations, {n_acc} accepted, {n_acc - len(bad)} of them "
                       f"within TV {TV_TOL} of the optimum, {len(rows) - n_acc} refused; worst accepted TV "
                       f"{max((r['tv'] for r in rows if r['accepted']), default=float('nan')):.4f}", format_table(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
