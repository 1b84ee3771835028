"""Per-token rewards of the LLM trainer against the theory layer's sequence-level ψ and optima."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.train.rewards import (  # noqa: E402
    RegularizerConfigError, build_regularizer, pathwise_regularizer_loss, ppo_token_rewards,
    renormalized_mixture_token_reward, resolve_mode, sequence_psi)
from prefmatch.theory import regularizers as R  # noqa: E402


def random_batch(seed=0, B=4, T=6, K=None):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(B, T, 5, generator=g, dtype=torch.float64), -1)[..., 0]
    shape = (B, T) if K is None else (K, B, T)
    ref = torch.log_softmax(torch.randn(*shape, 5, generator=g, dtype=torch.float64), -1)[..., 0]
    lengths = torch.tensor([T, 1, 3, T - 1])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return logp, ref, mask


AFFINE = [R.kl(beta=0.3), R.pm(), R.pm(c1=-0.7), R.pm(c1=0.2, beta=0.4), R.cpm(alpha=0.05, level="sequence"), R.maxent(beta=0.4),
          R.multi_rkl(weights=(0.25, 0.75), beta=0.6)]


@pytest.mark.parametrize("reg", AFFINE, ids=lambda r: f"{r.name}")
def test_token_rewards_sum_to_sequence_psi(reg):
    """Σ_t ψ_t over the response = theory ψ(log π(y|x), log π_ref(y|x)) (sequence log-probs)."""
    K = len(reg.weights) if reg.multi_reference else None
    logp, ref, mask = random_batch(K=K)
    psi_t = reg.token_reward(logp, ref, mask)
    m = mask.double()
    seq_ref = (ref * m).sum(-1)
    expected = reg.psi((logp * m).sum(-1), seq_ref)
    torch.testing.assert_close(psi_t.sum(-1), expected)
    assert torch.all(psi_t[mask == 0] == 0)
    torch.testing.assert_close(sequence_psi(reg, logp, ref, mask), expected)


def test_ppo_rewards_add_clipped_score_at_last_token():
    reg = build_regularizer("cpm", {"alpha": 0.3}, beta=0.5)
    assert reg.level == "token" and reg.beta == 0.5
    logp, ref, mask = random_batch()
    score = torch.tensor([7.0, -0.5, 1.0, -9.0], dtype=torch.float64)
    rewards, psi_t = ppo_token_rewards(reg, score, logp, ref, mask, reward_clip=5.0)
    torch.testing.assert_close(rewards.sum(-1) - psi_t.sum(-1), score.clamp(-5, 5))
    last = mask.sum(-1) - 1
    for b in range(4):
        extra = rewards[b] - psi_t[b]
        assert torch.count_nonzero(extra) <= 1 and extra[last[b]] == pytest.approx(float(score[b].clamp(-5, 5)))


def test_one_beta_goes_into_every_regularizer():
    for name, params in [("kl", {}), ("pm", {}), ("cpm", {}), ("maxent", {}), ("fdiv", {"f": "chi2"}),
                         ("multi_rkl", {}), ("multi_fkl", {})]:
        assert build_regularizer(name, params, beta=0.2).beta == 0.2
    # PM's optimum is softmax(r/β): the β is inside ψ, no hidden reward scale
    r = np.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(build_regularizer("pm", {}, beta=0.2).optimal_logp(r), r / 0.2 - np.logaddexp.reduce(r / 0.2))
    with pytest.raises(RegularizerConfigError, match=r"regularizer_params.beta: 0.5 conflicts with beta: 0.1"):
        build_regularizer("kl", {"beta": 0.5}, beta=0.1)
    assert build_regularizer("kl", {"beta": 0.1}, beta=0.1).beta == 0.1  # the same value twice is not a conflict
    with pytest.raises(RegularizerConfigError, match="unexpected.*tau"):
        build_regularizer("maxent", {"tau": 0.5}, beta=0.1)
    with pytest.raises(RegularizerConfigError, match="regularizer_params"):
        build_regularizer("cpm", {"alpha": 3.0}, beta=1.0)
    with pytest.raises(RegularizerConfigError, match="must be one of"):
        build_regularizer("nope", {}, beta=1.0)


def test_cpm_token_level_indicator_per_token():
    """Token-level cPM: ψ_t = −log π_t where π_ref,t ≥ α, −log(π_t/π_ref,t) elsewhere (per token)."""
    alpha = 0.3
    reg = R.cpm(alpha=alpha, level="token")
    ref = torch.log(torch.tensor([[0.9, 0.1, 0.5, 0.2]], dtype=torch.float64))
    logp = torch.log(torch.tensor([[0.8, 0.3, 0.4, 0.6]], dtype=torch.float64))
    mask = torch.tensor([[1, 1, 1, 0]])
    psi_t = reg.token_reward(logp, ref, mask)
    expected = []
    for lp, lq, m in zip(logp[0].tolist(), ref[0].tolist(), mask[0].tolist()):
        on = math.exp(lq) >= alpha
        expected.append(0.0 if not m else (-lp if on else -(lp - lq)))
    torch.testing.assert_close(psi_t[0], torch.tensor(expected, dtype=torch.float64))
    # sequence-level (Definition 4.1): π_ref(y|x) = 0.9·0.1·0.5 = 0.045 < α → the whole response is off M
    seq = R.cpm(alpha=alpha, level="sequence").token_reward(logp, ref, mask)
    torch.testing.assert_close(seq.sum(), -((logp - ref) * mask).sum())
    # ... and b(y) = log π_ref(y|x) is paid once, at the last response token (it depends on the whole response)
    torch.testing.assert_close(seq[0, :2], -logp[0, :2])
    torch.testing.assert_close(seq[0, 2], -logp[0, 2] + (ref[0] * mask[0]).sum())
    # on one-token responses the two levels coincide
    one = torch.tensor([[1, 0, 0, 0]])
    torch.testing.assert_close(reg.token_reward(logp, ref, one),
                               R.cpm(alpha=alpha, level="sequence").token_reward(logp, ref, one))


def test_placement_is_refused_where_it_is_not_exact():
    chi2 = build_regularizer("fdiv", {"f": "chi2"}, beta=0.5)
    with pytest.raises(RegularizerConfigError, match="regularizer_mode: loss"):
        resolve_mode(chi2, "reward")
    assert resolve_mode(chi2, "loss") == "loss" and resolve_mode(chi2, "auto") == "loss"
    # PM with C2 != 0 is exact as a reward now: the constant C2 term is not paid
    assert resolve_mode(build_regularizer("pm", {"c2": 0.5}, beta=1.0), "reward") == "reward"
    assert resolve_mode(R.kl(beta=1.0), "auto") == "reward"
    # affine ψ: the pathwise part is zero in expectation, so loss is the reward placement
    for reg in (R.kl(beta=1.0), R.pm(c2=0.3), R.cpm(), R.maxent(), R.multi_rkl()):
        assert resolve_mode(reg, "loss") == "reward"
    k3 = R.kl(beta=1.0, estimator="k3")
    with pytest.raises(RegularizerConfigError, match="k3 as a reward only"):
        resolve_mode(k3, "reward")
    assert resolve_mode(k3, "auto") == "loss"
    for mode in ("reward", "loss", "auto"):
        with pytest.raises(RegularizerConfigError, match="k2 reaches the wrong optimum"):
            resolve_mode(R.kl(beta=1.0, estimator="k2"), mode)
    with pytest.raises(RegularizerConfigError, match="regularizer_mode: must be one of"):
        resolve_mode(k3, "sometimes")


def test_pathwise_loss_shares_the_ppo_normalizer_and_whitening_scale():
    """The pathwise term is −scale·Σ ψ_t / (number of response tokens), like the token-mean PPO loss."""
    reg = R.f_divergence("chi2", beta=0.5)
    logp, ref, mask = random_batch()
    psi = reg.token_reward(logp, ref, mask)
    loss = pathwise_regularizer_loss(reg, logp, ref, mask, scale=0.25)
    torch.testing.assert_close(loss, -0.25 * psi.sum() / mask.sum())
    # ψ of a non-additive regularizer is paid once, at the last response token
    assert torch.all((psi != 0).sum(-1) == 1)
    torch.testing.assert_close(psi.sum(-1), sequence_psi(reg, logp, ref, mask))


# ------------------------------------------------------------------ multi-reference, two tokens
def soft_optimal_sequence_logp(token_b, r, beta):
    """Exact optimum of E_π[r(y) + Σ_t (−β log π(y_t|y_<t) + b_t(y_<t, y_t))] over autoregressive
    policies on two-token responses, by backward induction (soft Bellman):
    Q(y1, y2) = b_2(y1, y2) + r(y1, y2), V(y1) = β logsumexp(Q/β), Q(y1) = b_1(y1) + V(y1)."""
    V = len(token_b[0])
    logp = np.zeros((V, V))
    q1 = np.zeros(V)
    for y1 in range(V):
        q2 = token_b[1][y1] + r[y1]
        v1 = beta * np.logaddexp.reduce(q2 / beta)
        logp[y1] = q2 / beta - v1 / beta
        q1[y1] = token_b[0][y1] + v1
    l1 = q1 / beta - np.logaddexp.reduce(q1 / beta)
    return (l1[:, None] + logp).reshape(-1)


def test_multi_rkl_unnormalized_token_rewards_reach_the_tabular_optimum_renormalized_do_not():
    """Two-token vocabulary-2 instance: per-token Σ_i α_i log π_ref,i (unnormalized) makes PPO's
    objective the paper's sequence-level Σ_i α_i KL(π‖π_ref,i), whose optimum (tabular/, the
    generalized-escort tilt) the exact token-level optimum reproduces; the per-token
    renormalized geometric mixture optimizes a different objective."""
    from prefmatch.tabular.solvers import closed_form

    rng = np.random.default_rng(3)
    Vocab, K, beta, weights = 2, 2, 0.5, (0.3, 0.7)
    # two autoregressive references: π_ref,i(y1) and π_ref,i(y2 | y1), deliberately different
    p1 = np.array([[0.9, 0.1], [0.2, 0.8]])                      # [K, V]
    p2 = np.array([[[0.7, 0.3], [0.05, 0.95]], [[0.4, 0.6], [0.9, 0.1]]])  # [K, y1, V]
    r = rng.normal(size=(Vocab, Vocab))                          # reward of (y1, y2)
    seqs = list(itertools.product(range(Vocab), repeat=2))
    ref_seq = np.array([[np.log(p1[k, a]) + np.log(p2[k, a, b]) for a, b in seqs] for k in range(K)])
    reg = R.multi_rkl(weights=weights, beta=beta)
    target = closed_form(reg, r.reshape(-1), ref_seq)          # tabular optimum (log-probs over 4 sequences)

    # per-token b_t from the LLM wiring: ψ_t(log π = 0) = b_t for each (prefix, token)
    tokens = torch.tensor([[a, b] for a, b in seqs])            # [4, 2]
    ref_t = torch.tensor(np.stack([[[np.log(p1[k, a]), np.log(p2[k, a, b])] for a, b in seqs] for k in range(K)]))
    mask = torch.ones(4, 2, dtype=torch.long)
    zeros = torch.zeros(4, 2, dtype=torch.float64)
    b_unnorm = reg.token_reward(zeros, ref_t, mask).numpy()        # [4 seqs, 2 steps]
    # renormalized: reference log-probs over the whole vocabulary at each step, [K, 4, 2, V]
    full = torch.tensor(np.stack([[[np.log(p1[k]), np.log(p2[k, a])] for a, b in seqs] for k in range(K)]))
    b_renorm = renormalized_mixture_token_reward(weights, beta, zeros, full, tokens, mask).numpy()

    def table(b):  # b_1(y1) and b_2(y1, y2) from the per-sequence rows
        b1 = np.array([b[seqs.index((a, 0)), 0] for a in range(Vocab)])
        b2 = np.array([[b[seqs.index((a, c)), 1] for c in range(Vocab)] for a in range(Vocab)])
        return [b1, b2]

    exact_unnorm = soft_optimal_sequence_logp(table(b_unnorm), r, beta)
    exact_renorm = soft_optimal_sequence_logp(table(b_renorm), r, beta)
    np.testing.assert_allclose(exact_unnorm, target, atol=1e-10)
    assert np.max(np.abs(np.exp(exact_renorm) - np.exp(target))) > 1e-2
    # the renormalized optimum is KL-RLHF against the product of per-step normalized mixtures
    q_log = np.array([b_renorm[i].sum() / beta for i in range(4)])
    np.testing.assert_allclose(exact_renorm, closed_form(R.kl(beta=beta), r.reshape(-1), q_log), atol=1e-10)
