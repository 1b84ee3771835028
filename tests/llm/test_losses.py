"""Loss functions against independent computations (explicit loops / numpy formulas)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.train.losses import (  # noqa: E402
    bradley_terry_loss, clipped_policy_loss, clipped_value_loss, entropy_from_logits, explained_variance, gae,
    logprobs_from_logits, masked_whiten)


def naive_gae(rewards, values, length, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l} over the valid tokens of one sequence, written as a double loop."""
    deltas = []
    for t in range(length):
        v_next = values[t + 1] if t + 1 < length else 0.0
        deltas.append(rewards[t] + gamma * v_next - values[t])
    adv = [sum((gamma * lam) ** k * deltas[t + k] for k in range(length - t)) for t in range(length)]
    return np.array(adv), np.array(adv) + np.array(values[:length])


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0), (0.7, 0.5)])
def test_gae_matches_naive_loop(gamma, lam):
    rng = np.random.default_rng(0)
    B, T = 5, 7
    lengths = [7, 1, 4, 6, 3]
    rewards = rng.normal(size=(B, T))
    values = rng.normal(size=(B, T))
    mask = np.zeros((B, T))
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    adv, ret = gae(torch.tensor(rewards * mask), torch.tensor(values), torch.tensor(mask), gamma, lam)
    for b, n in enumerate(lengths):
        a_ref, r_ref = naive_gae(rewards[b], values[b], n, gamma, lam)
        np.testing.assert_allclose(adv[b, :n].numpy(), a_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ret[b, :n].numpy(), r_ref, rtol=1e-12, atol=1e-12)
        assert np.all(adv[b, n:].numpy() == 0)


def test_logprobs_and_entropy_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 5))
    tokens = rng.integers(0, 5, size=(2, 3))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    lp = logprobs_from_logits(torch.tensor(logits), torch.tensor(tokens)).numpy()
    np.testing.assert_allclose(lp, np.log(np.take_along_axis(p, tokens[..., None], -1))[..., 0], rtol=1e-6)
    np.testing.assert_allclose(entropy_from_logits(torch.tensor(logits)).numpy(), -(p * np.log(p)).sum(-1), rtol=1e-6)


def test_clipped_policy_loss_gradient_matches_finite_differences_inside_clip():
    """Inside the clip region the loss is −mean(A ρ): its gradient in log π is −A ρ / n."""
    rng = np.random.default_rng(2)
    old = torch.tensor(rng.normal(size=(2, 4)))
    new = (old + 0.01 * torch.tensor(rng.normal(size=(2, 4)))).requires_grad_(True)
    adv = torch.tensor(rng.normal(size=(2, 4)))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    loss, clipfrac, approx_kl = clipped_policy_loss(new, old, adv, mask, clip=0.2)
    loss.backward()
    expected = -(adv * torch.exp(new.detach() - old)) * mask / mask.sum()
    torch.testing.assert_close(new.grad, expected)
    assert float(clipfrac) == 0.0 and float(approx_kl) >= 0


def test_clipped_policy_loss_clips_large_ratios():
    old = torch.zeros(1, 2, dtype=torch.float64)
    new = torch.log(torch.tensor([[2.0, 0.1]], dtype=torch.float64))
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    loss, clipfrac, _ = clipped_policy_loss(new, old, adv, torch.ones(1, 2), clip=0.2)
    # token 1: A>0, ρ=2 → −1.2 ; token 2: A<0, ρ=0.1 → max(0.1, 0.8)=0.8
    assert float(loss) == pytest.approx((-1.2 + 0.8) / 2)
    assert float(clipfrac) == 1.0


def test_value_loss_and_explained_variance():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    old = torch.tensor([[1.0, 1.0, 1.0]])
    ret = torch.tensor([[1.5, 1.5, 0.0]])
    mask = torch.ones(1, 3)
    # v − old clipped to ±0.2: [1, 1.2, 1.2]; per-token max of squared errors: [.25, .25, 9]
    assert float(clipped_value_loss(v, old, ret, mask, clip=0.2)) == pytest.approx(0.5 * (0.25 + 0.25 + 9) / 3)
    assert float(explained_variance(ret, ret, mask)) == pytest.approx(1.0)
    w = masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 9.0]]), torch.tensor([[1, 1, 1, 0]]))
    assert float(w[0, :3].mean()) == pytest.approx(0, abs=1e-6) and float(w[0, 3]) == 0


def test_bradley_terry_loss_is_eq_2_2():
    rc, rr = np.array([0.3, -1.0, 2.0]), np.array([0.1, 0.5, -3.0])
    expected = np.mean(np.log1p(np.exp(-(rc - rr))))
    assert float(bradley_terry_loss(torch.tensor(rc), torch.tensor(rr))) == pytest.approx(expected, rel=1e-12)
