"""The trainer's convergence battery: the real PPOTrainer.step on tabular policies reaches the
theory's optimum (TV ≤ 0.01) for every configuration it accepts, and refuses the others."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm import battery as B  # noqa: E402
from prefmatch.llm.config import ConfigError  # noqa: E402
from prefmatch.llm.ppo import REGULARIZERS, PPOConfig, PPOTrainer  # noqa: E402
from prefmatch.llm.rewards import REGULARIZER_MODES, RegularizerConfigError, build_regularizer, resolve_mode  # noqa: E402


@pytest.mark.parametrize("case", B.QUICK, ids=lambda c: c.id)
def test_quick_battery_reaches_the_optimum(case):
    row = B.run_case(case)
    assert row["accepted"], row["reason"]
    assert row["tv"] <= B.TV_TOL, row
    assert row["tv_at_start"] > 3 * B.TV_TOL  # the start is far from the optimum: the test can fail


@pytest.mark.slow
@pytest.mark.parametrize("case", B.all_cases(), ids=lambda c: c.id)
def test_full_battery(case):
    row = B.run_case(case)
    if row["accepted"]:
        assert row["tv"] <= B.TV_TOL, row
    else:  # refused with one line naming the field and what works
        assert "\n" not in row["reason"] and row["reason"].split(":")[0] in ("regularizer_mode", "regularizer_params.estimator")


def _variants():
    """Every (regularizer, params) the trainer can be given, by its discrete parameters."""
    for name in REGULARIZERS:
        if name == "kl":
            yield from ((name, {"estimator": e}) for e in ("k1", "k2", "k3"))
        elif name == "fdiv":
            from prefmatch.theory.regularizers import F_DIVERGENCES

            yield from ((name, {"f": f}) for f in F_DIVERGENCES)
        elif name == "cpm":
            yield from ((name, {"level": lv}) for lv in ("token", "sequence"))
        elif name == "pm":
            yield from ((name, {}), (name, {"c2": 0.3}))
        else:
            yield name, {}


def test_every_accepted_configuration_is_in_the_battery():
    """An accepted (regularizer, parameters, placement) that the battery does not cover is a defect."""
    covered = {(c.regularizer, tuple(sorted((k, v) for k, v in c.params.items() if k in ("estimator", "f", "level"))),
                c.mode, c.whiten, c.length) for c in B.all_cases()}
    c2_covered = {c.mode for c in B.all_cases() if c.regularizer == "pm" and c.params.get("c2")}
    missing = []
    for (name, params), mode in itertools.product(_variants(), REGULARIZER_MODES):
        try:
            placement = resolve_mode(build_regularizer(name, params, 0.7), mode)
        except RegularizerConfigError:
            continue
        key = tuple(sorted(params.items())) if name != "pm" else ()
        for whiten, T in itertools.product((True, False), (1, 2)):
            if (name, key, placement, whiten, T) not in covered:
                missing.append((name, params, mode, placement, whiten, T))
        if name == "pm" and params.get("c2") and placement not in c2_covered:
            missing.append((name, params, mode, placement))
    assert not missing, missing


def test_refused_configurations_name_the_field_in_one_line():
    for case in [B.Case("kl", {"estimator": "k3"}, "reward"), B.Case("kl", {"estimator": "k2"}, "loss"),
                 B.Case("fdiv", {"f": "hellinger"}, "reward"), B.Case("multi_fkl", {"weights": [0.5, 0.5]}, "reward")]:
        row = B.run_case(case, steps=1)
        assert not row["accepted"] and "\n" not in row["reason"]
        assert row["reason"].startswith(("regularizer_mode:", "regularizer_params.estimator:"))


def _tabular(length=1):
    TabularPolicy, TabularValue = B.tabular_modules()
    prob = B.Problem.make(vocab=3, length=length, seed=5)
    return prob, TabularPolicy(3, length, init=prob.ref_weights[0]), TabularPolicy(3, length, init=prob.ref_weights[0])


def test_from_modules_runs_the_users_step_and_samples_from_the_policy():
    """The tabular module has no .generate: it is sampled token by token from its logits, and the
    empirical distribution of the first rollout is the policy's."""
    prob, policy, ref = _tabular(1)
    cfg = PPOConfig(steps=1, batch_size=4000, mini_batch_size=4000, max_response_len=1, lam=1.0, cpu=True, lr=1e-9)
    seen = []

    def reward(prompt_ids, response_ids, mask):
        seen.append(response_ids.clone())
        return prob.reward_fn()(prompt_ids, response_ids, mask)

    trainer = PPOTrainer.from_modules(cfg, policy=policy, reference=ref, reward_fn=reward, prompts=[[0]])
    m = trainer.step()
    assert m["kl"] == pytest.approx(0.0, abs=1e-6) and m["response_length"] == 1.0
    freq = np.bincount(seen[0][:, 0].numpy(), minlength=3) / 4000
    want = np.exp(prob.token_logp(ref)[:, 0])
    assert np.abs(freq - want).max() < 0.03  # 4 standard errors at n = 4000


def test_from_modules_refuses_bad_seams():
    prob, policy, ref = _tabular(1)
    cfg = PPOConfig(max_response_len=1, cpu=True)  # lam 0.95 without a value model
    with pytest.raises(ConfigError, match="lam: must be 1 without a value model"):
        PPOTrainer.from_modules(cfg, policy=policy, reference=ref, reward_fn=prob.reward_fn(), prompts=[[0]])
    cfg = PPOConfig(max_response_len=1, cpu=True, lam=1.0, regularizer="multi_rkl")
    with pytest.raises(ConfigError, match="reference: multi_rkl needs 2 reference module"):
        PPOTrainer.from_modules(cfg, policy=policy, reference=ref, reward_fn=prob.reward_fn(), prompts=[[0]])
    cfg = PPOConfig(max_response_len=1, cpu=True, lam=1.0, batch_size=2, mini_batch_size=2)
    bad = PPOTrainer.from_modules(cfg, policy=policy, reference=ref, reward_fn=lambda *a: torch.zeros(3), prompts=[[0]])
    with pytest.raises(ConfigError, match=r"reward_fn: must return one score per response, shape \[2\]"):
        bad.step()
