r"""``grad.*`` checks of the estimators *as trainers compute them*: responses that end at EOS,
batches, the loss normalizer, advantage whitening and GRPO's group scaling.

:mod:`prefmatch.theory.checks.grad` proves which objective each (regularizer, estimator,
placement) optimizes for one response at a time.  A trainer also divides its loss by a
normalizer, whitens advantages with batch statistics and (GRPO) scales them per group; whatever
depends on which responses share a batch changes the fixed point.  Here a tabular
autoregressive policy (one logit row per prefix) over three tokens, token 2 = EOS, responses of
one or two tokens (seven of them: each ends at EOS or is cut at two tokens), is updated by the
*exact expectation* of a trainer's update over every batch of B responses drawn from the policy
(all 7^B batches enumerated, no sampling).  The fixed point of that expected update is compared
with the theory's optimum ``reg.sequence_optimal_logp`` in total variation: an exact
configuration reaches it to 1e-6, a biased one stays away from it by more than 1e-3.

The trainers take their choices from these rows: the PPO trainer divides by the constant
``mini_batch_size × max_response_len`` and whitens with the moments of earlier rollouts; the
TRL integration refuses ``scale_rewards`` other than ``"none"`` and ``loss_type`` other than
``"dr_grpo"``.  torch is imported inside the checks (float64 autograd).
"""
from __future__ import annotations

import itertools

import numpy as np

from prefmatch.theory import regularizers
from prefmatch.theory.checks import check
from prefmatch.theory.responses import enumerate_responses, prefix_rows

V, EOS, LENGTH = 3, 2, 2
BETA = 0.7
EXACT_TV, BIASED_TV = 1e-6, 1e-3


class _EOSProblem:
    """The tabular world: policy θ [rows, V], responses ending at EOS, a reward per response."""

    def __init__(self, seed: int = 0, reward_scale: float = 1.5):
        import torch

        self.torch = torch
        tokens, mask = enumerate_responses(V, LENGTH, EOS)
        rows, n_rows = prefix_rows(tokens, mask)
        rng = np.random.default_rng(seed)
        self.tokens, self.rows = torch.as_tensor(tokens), torch.as_tensor(rows)
        self.mask = torch.as_tensor(mask)
        self.lengths = self.mask.sum(-1)
        self.theta_ref = torch.tensor(rng.normal(size=(n_rows, V)))
        self.r = torch.tensor(reward_scale * rng.normal(size=len(tokens)))
        self.ref_t = self.token_logp(self.theta_ref)

    def token_logp(self, theta):
        """log π(y_t | y_<t) of every response [n, LENGTH], 0 past its end."""
        lp = self.torch.log_softmax(theta[self.rows], -1).gather(-1, self.tokens[..., None]).squeeze(-1)
        return lp * self.mask

    def optimum(self, reg) -> np.ndarray:
        return reg.sequence_optimal_logp(self.r.numpy(), self.ref_t.numpy(), self.mask.numpy())

    def tv(self, theta, reg) -> float:
        p = np.exp(self.token_logp(theta).sum(-1).detach().numpy())
        return 0.5 * float(np.abs(p - np.exp(self.optimum(reg))).sum())

    def batches(self, size: int):
        """Every batch of ``size`` responses drawn independently: indices [n^size, size]."""
        return self.torch.tensor(list(itertools.product(range(len(self.tokens)), repeat=size)))

    def returns(self, reg, lp):
        """Per-token return-to-go of ψ_t (stop-gradient) plus the task reward at the last token [n, T]."""
        torch = self.torch
        psi = reg.token_reward(lp.detach(), self.ref_t, self.mask)
        last = (torch.arange(LENGTH)[None, :] == (self.lengths[:, None] - 1)).double()
        rewards = psi + self.r[:, None] * last
        return rewards.flip(-1).cumsum(-1).flip(-1) * self.mask

    def logits_of(self, seq_logp: np.ndarray):
        """θ whose policy is the distribution ``seq_logp`` over the responses: row (prefix) p, token v
        holds log Σ π(y ⊒ p·v) − log Σ π(y ⊒ p), the conditional of the prefix tree."""
        from scipy.special import logsumexp

        tokens, mask, rows = self.tokens.numpy(), self.mask.numpy(), self.rows.numpy()
        theta = np.full(tuple(self.theta_ref.shape), -np.inf)
        for i in range(len(tokens)):
            for t in range(int(mask[i].sum())):
                prefix = tokens[i, :t]
                ext = [j for j in range(len(tokens)) if mask[j].sum() > t and (tokens[j, :t] == prefix).all()
                       and tokens[j, t] == tokens[i, t]]
                theta[rows[i, t], tokens[i, t]] = logsumexp(seq_logp[ext])
        theta = theta - logsumexp(theta, axis=1, keepdims=True)
        return self.torch.as_tensor(theta)

    def fixed_point(self, update, start):
        """The root of the expected update E[update(θ)] = 0 next to ``start`` (scipy's Powell hybrid
        method; logits gauge-fixed by a last logit of 0 per row, along which every update is 0):
        where expected-update ascent comes to rest near the optimum."""
        from scipy.optimize import root

        torch = self.torch
        shape = self.theta_ref.shape

        def full(phi):
            zeros = torch.zeros(shape[0], 1, dtype=torch.float64)
            return torch.cat([torch.as_tensor(phi).reshape(shape[0], shape[1] - 1), zeros], 1)

        def F(phi):
            return update(full(phi))[:, :-1].reshape(-1).numpy()

        sol = root(F, (start - start[:, -1:])[:, :-1].reshape(-1).numpy(), method="hybr", options={"xtol": 1e-14})
        return full(sol.x)

    def at_optimum(self, update, reg):
        """``(‖E[update(θ*)]‖ / ‖E[update(θ_ref)]‖, TV of the nearby fixed point to the optimum)``: an exact
        update vanishes at the optimum θ*; a biased one does not, and rests elsewhere."""
        theta_star = self.logits_of(self.optimum(reg))
        rel = float(update(theta_star).norm() / update(self.theta_ref).norm())
        return rel, self.tv(self.fixed_point(update, theta_star), reg)


def _ppo_update(prob: _EOSProblem, reg, placement: str, *, batch: int, normalizer: str, whiten: str):
    """E over batches of the PPO trainer's update (one minibatch = the batch, no value model, λ = 1)."""
    torch = prob.torch
    idx = prob.batches(batch)

    def update(theta):
        th = theta.clone().requires_grad_(True)
        lp = prob.token_logp(th)
        with torch.no_grad():
            p_batch = lp.sum(-1).exp()[idx].prod(-1)  # [nB]
            adv = prob.returns(reg, lp)[idx]  # [nB, B, T]
            m = prob.mask[idx]
            n_tok = m.sum((-1, -2))
            if whiten == "batch":  # moments of the batch itself (what the trainer did before)
                mu = (adv * m).sum((-1, -2)) / n_tok
                var = (((adv - mu[:, None, None]) ** 2) * m).sum((-1, -2)) / n_tok
                scale = (var + 1e-8).rsqrt()
            else:  # "none", or "earlier": moments fixed before the batch is drawn (a step size)
                mu, scale = torch.zeros(len(idx), dtype=adv.dtype), torch.ones(len(idx), dtype=adv.dtype)
            norm = n_tok if normalizer == "tokens" else torch.full_like(n_tok, float(batch * LENGTH))
            w = p_batch * scale / norm  # the batch's weight in the expected update
        lpb = lp[idx]  # [nB, B, T]
        surrogate = (((adv - mu[:, None, None]) * lpb * m).sum((-1, -2)) * p_batch / norm).sum()
        if placement == "loss":
            surrogate = surrogate + (w[:, None, None] * reg.token_reward(lpb, prob.ref_t[idx], m)).sum()
        (g,) = torch.autograd.grad(surrogate, th)
        return g

    return update


def _ppo_case(reg, placement, *, batch, normalizer, whiten, seed=0):
    """(relative update at the optimum, TV of the fixed point to the optimum)."""
    prob = _EOSProblem(seed)
    return prob.at_optimum(_ppo_update(prob, reg, placement, batch=batch, normalizer=normalizer, whiten=whiten), reg)


def _verdict(exact, biased) -> bool:
    """Exact: no update at the optimum; biased: an update there and a fixed point away from it."""
    return exact[0] < 1e-10 and exact[1] < EXACT_TV and biased[0] > 1e-3 and biased[1] > BIASED_TV


def _fmt(res) -> str:
    return f"update at the optimum {res[0]:.1e} (relative), fixed point at TV {res[1]:.1e}"


@check("grad.eos_constant_normalizer")
def _normalizer():
    kl = regularizers.kl(beta=BETA, estimator="k1")
    const = _ppo_case(kl, "reward", batch=2, normalizer="constant", whiten="none")
    tokens = _ppo_case(kl, "reward", batch=2, normalizer="tokens", whiten="none")
    return _verdict(const, tokens), (f"batch 2, KL k1 as reward: constant normalizer: {_fmt(const)}; "
                                     f"token count: {_fmt(tokens)}")


@check("grad.eos_whitening_scale")
def _whitening():
    res = {}
    for est, placement in (("k3", "loss"), ("k1", "reward")):
        kl = regularizers.kl(beta=BETA, estimator=est)
        res[est] = (_ppo_case(kl, placement, batch=3, normalizer="constant", whiten="earlier"),
                    _ppo_case(kl, placement, batch=3, normalizer="constant", whiten="batch"))
    ok = all(_verdict(fixed, own) for fixed, own in res.values())
    return ok, "batch 3: " + "; ".join(f"{est}: earlier moments: {_fmt(fixed)}; the batch's own: {_fmt(own)}"
                                       for est, (fixed, own) in res.items())


# --------------------------------------------------------------------------- GRPO (TRL)
def _grpo_update(prob: _EOSProblem, reg, placement: str, *, group: int, scale_rewards: str, loss_type: str):
    """E over groups of G completions of TRL GRPO's update as the integration builds it: ψ joined to
    the reward, A_i = (R_i − mean_g R)/s (s the group's std + 1e-4, or 1), in loss placement the
    pathwise part (G−1)/G·∂(Σ_tψ_t)/∂log π(y_t|·)/s added to each token's advantage; aggregated by
    ``loss_type``; one prompt, one update per generation (ratio 1)."""
    torch = prob.torch
    idx = prob.batches(group)

    def update(theta):
        th = theta.clone().requires_grad_(True)
        lp = prob.token_logp(th)
        lpd = lp.detach().requires_grad_(True)
        psi_t = reg.token_reward(lpd, prob.ref_t, prob.mask)
        (dpsi,) = torch.autograd.grad(psi_t.sum(), lpd)
        with torch.no_grad():
            p_group = lp.sum(-1).exp()[idx].prod(-1)
            R = (psi_t.sum(-1) + prob.r)[idx]  # [nG, G]
            s = R.std(-1, keepdim=True) + 1e-4 if scale_rewards in ("group", "batch") else torch.ones(len(idx), 1)
            m = prob.mask[idx]  # [nG, G, T]
            adv = ((R - R.mean(-1, keepdim=True)) / s)[..., None] * m
            if placement == "loss":
                adv = adv + (group - 1) / group * dpsi[idx] * m / s[..., None]
            L = m.sum(-1)  # [nG, G]
            if loss_type == "dr_grpo":  # one constant
                w = torch.full_like(L, 1.0 / (group * LENGTH))
            elif loss_type in ("dapo", "bnpo"):  # the tokens of the batch (one prompt: the group)
                w = (1.0 / L.sum(-1, keepdim=True)).expand_as(L)
            else:  # "grpo": the mean over completions of each completion's token mean
                w = 1.0 / (group * L)
        surrogate = ((w * p_group[:, None])[..., None] * adv * lp[idx]).sum()
        (g,) = torch.autograd.grad(surrogate, th)
        return g

    return update


@check("grad.grpo_scaling_and_loss_type")
def _grpo():
    settings = (("none", "dr_grpo"), ("group", "dr_grpo"), ("none", "dapo"), ("none", "grpo"))
    out, ok = [], True
    for reg, placement in ((regularizers.kl(beta=BETA, estimator="k1"), "reward"),
                           (regularizers.f_divergence("reverse_kl", beta=BETA), "loss")):
        res = {}
        for scale, loss_type in settings:
            prob = _EOSProblem(0)
            res[(scale, loss_type)] = prob.at_optimum(
                _grpo_update(prob, reg, placement, group=3, scale_rewards=scale, loss_type=loss_type), reg)
        exact = res[settings[0]]
        if placement == "reward":
            ok = ok and all(_verdict(v, (1.0, 1.0)) for v in res.values())
        else:
            ok = ok and all(_verdict(exact, v) for k, v in res.items() if k != settings[0])
        out.append(f"{reg.name} ({placement}): " + "; ".join(f"{s}/{lt}: {_fmt(v)}" for (s, lt), v in res.items()))
    return ok, "G = 3. " + " | ".join(out)


# --------------------------------------------------------------------------- verl's k3+
class _StraightThroughK3:
    """verl's ``k3+`` (``low_var_kl+``): the value of k3 with the gradient of k2, as a loss."""

    def __init__(self, beta: float):
        self.k3 = regularizers.kl(beta=beta, estimator="k3")
        self.k2 = regularizers.kl(beta=beta, estimator="k2")

    def token_reward(self, logp_t, ref_logp_t, mask_t):
        k3 = self.k3.token_reward(logp_t, ref_logp_t, mask_t)
        k2 = self.k2.token_reward(logp_t, ref_logp_t, mask_t)
        return k3.detach() + (k2 - k2.detach())


@check("grad.kl_k3plus_loss")
def _k3plus():
    from prefmatch.theory.checks.grad import BETA as GRAD_BETA, _per_token_identity

    return _per_token_identity(_StraightThroughK3(GRAD_BETA), "loss", target_one=regularizers.kl(beta=GRAD_BETA),
                               forward=False)
