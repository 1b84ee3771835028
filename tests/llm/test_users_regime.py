"""The trainers in the users' regime, mechanism by mechanism: the PPO loss normalizer does not
depend on which responses share a minibatch, whitening takes its scale from earlier rollouts,
reward clipping is off by default and announced when on, cPM decides its indicator in float64,
and DPO refuses responses that are not complete outcomes."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.battery import ppo as B  # noqa: E402
from prefmatch.llm.config import ConfigError  # noqa: E402
from prefmatch.llm.train.dpo import DPOConfig, DPOTrainer  # noqa: E402
from prefmatch.llm.train.losses import (  # noqa: E402
    batch_moments, clipped_policy_loss, fold_moments, whitening_from_moments)
from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer  # noqa: E402


def _response_gradient(lengths_of_company, normalizer):
    """d loss / d log π of the first response's tokens when it shares a minibatch with others."""
    T = 4
    L = len(lengths_of_company) + 1
    mask = torch.zeros(L, T)
    mask[0, :2] = 1  # the response of interest: 2 tokens
    for i, n in enumerate(lengths_of_company, start=1):
        mask[i, :n] = 1
    logp = torch.zeros(L, T, requires_grad=True)
    adv = torch.ones(L, T)
    loss, _, _ = clipped_policy_loss(logp, logp.detach(), adv, mask, clip=0.2, normalizer=normalizer)
    (g,) = torch.autograd.grad(loss, logp)
    return g[0, :2]


def test_constant_normalizer_weights_a_response_independently_of_its_minibatch():
    short, long = _response_gradient([1], normalizer=8.0), _response_gradient([4], normalizer=8.0)
    assert torch.equal(short, long)
    # the token mean (normalizer None) weights it by 1/(tokens in the minibatch): 1/3 against 1/6
    short, long = _response_gradient([1], normalizer=None), _response_gradient([4], normalizer=None)
    assert float(short[0]) == pytest.approx(-1 / 3) and float(long[0]) == pytest.approx(-1 / 6)


def test_running_moments_average_the_rollouts_with_bias_correction():
    rng = np.random.default_rng(0)
    batches = [torch.tensor(rng.normal(loc=k, size=(4, 3))) for k in range(3)]
    mask = torch.ones(4, 3)
    m = None
    for b in batches:
        m = fold_moments(m, batch_moments(b, mask), decay=0.5)
    w = np.array([0.25, 0.5, 1.0])
    means = np.array([float(b.mean()) for b in batches])
    seconds = np.array([float((b ** 2).mean()) for b in batches])
    mean, inv_std = whitening_from_moments(m)
    want_mean = (w * means).sum() / w.sum()
    assert mean == pytest.approx(want_mean)
    assert inv_std == pytest.approx(((w * seconds).sum() / w.sum() - want_mean ** 2 + 1e-8) ** -0.5)


def _tabular_trainer(quiet=True, **kw):
    TabularPolicy, _ = B.tabular_modules()
    prob = B.Problem.make(vocab=3, length=2, seed=5, eos=2)
    policy, ref = (TabularPolicy(3, 2, init=prob.ref_weights[0]) for _ in range(2))
    cfg = PPOConfig(**{**dict(steps=2, batch_size=16, mini_batch_size=16, max_response_len=2, lam=1.0, cpu=True), **kw})
    return PPOTrainer.from_modules(cfg, policy=policy, reference=ref, reward_fn=prob.reward_fn(), prompts=[[0]],
                                   eos_token_id=2, quiet=quiet), prob


def test_whitening_uses_the_earlier_rollouts_moments():
    trainer, _ = _tabular_trainer()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    first = torch.tensor([[1.0, 3.0], [5.0, 0.0]])
    out, scale = trainer.whiten(first, mask)  # the first rollout: its own moments
    assert float(out[mask > 0].mean()) == pytest.approx(0.0, abs=1e-6)
    second = torch.tensor([[100.0, -50.0], [7.0, 0.0]])
    out2, scale2 = trainer.whiten(second, mask)  # then the first rollout's, not its own
    m, s = 3.0, 1 / math.sqrt(np.var([1.0, 3.0, 5.0]) + 1e-8)
    assert scale2 == pytest.approx(s) and float(out2[0, 0]) == pytest.approx((100.0 - m) * s)


def test_reward_clip_is_off_by_default_and_announced_when_on(capsys):
    assert PPOConfig().reward_clip == 0.0
    _tabular_trainer(reward_clip=5.0, quiet=False)
    err = capsys.readouterr().err
    assert "reward_clip: 5 — this run optimizes the clipped reward" in err


def test_cpm_indicator_is_decided_in_float64():
    from prefmatch.theory import regularizers

    alpha = 0.3
    reg = regularizers.cpm(alpha=alpha, level="token")
    below = np.nextafter(np.float32(math.log(alpha)), np.float32(-1))  # the float32 just below log α ...
    equal = np.float32(math.log(alpha))  # ... and log α rounded to float32, which lies below log α in float64
    for x in (below, equal):
        want = float(x) if float(x) < math.log(alpha) else 0.0  # the float64 decision
        assert float(reg._b(torch.tensor([x]))[0]) == pytest.approx(want)
        assert float(reg._b(np.array([x]))[0]) == pytest.approx(want)


def test_dpo_refuses_a_response_without_eos_that_is_a_prefix_of_another():
    TabularPolicy, _ = B.tabular_modules()
    policy, ref = TabularPolicy(3, 2), TabularPolicy(3, 2)
    cfg = DPOConfig(batch_size=2, steps=1, cpu=True, max_response_len=2)
    pairs = [([0], [1], [1, 0]), ([0], [0, 2], [1, 2])]
    with pytest.raises(ConfigError, match=r"pairs: response \[1\] to prompt \[0\] is a proper prefix of \[1, 0\]"):
        DPOTrainer.from_modules(cfg, policy=policy, reference=ref, pairs=pairs, eos_token_id=2)
    with pytest.raises(ConfigError, match="eos_token_id=None"):
        DPOTrainer.from_modules(cfg, policy=policy, reference=ref, pairs=pairs)
    ok = [([0], [1, 2], [1, 0]), ([0], [2], [1, 1])]  # [1, 0] is cut at max length: complete
    DPOTrainer.from_modules(cfg, policy=policy, reference=ref, pairs=ok, eos_token_id=2)
    # the same prefix under another prompt is another distribution: accepted
    DPOTrainer.from_modules(cfg, policy=policy, reference=ref, pairs=[([0], [1], [0]), ([1], [1, 0], [0, 0])])


def test_ppo_gradient_accumulation_gives_the_minibatch_update():
    """Micro-batches over one constant normalizer add up to the minibatch's gradient: the same
    weights after a step with 1 and with 4 micro-batches per minibatch."""
    weights = []
    for k in (1, 4):
        trainer, _ = _tabular_trainer(steps=1, batch_size=16, mini_batch_size=8, gradient_accumulation_steps=k,
                                      regularizer="fdiv", regularizer_params={"f": "chi2"}, max_grad_norm=0.0)
        trainer.step()
        weights.append(trainer.policy.lm.W.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=1e-10, rtol=0)
    assert not torch.allclose(weights[0], _tabular_trainer()[0].policy.lm.W)  # the step moved the weights
    with pytest.raises(ConfigError, match="gradient_accumulation_steps: must be at most mini_batch_size = 2"):
        _tabular_trainer(mini_batch_size=2, gradient_accumulation_steps=3)
