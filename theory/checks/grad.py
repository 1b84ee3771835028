r"""``grad.*`` checks: which objective does each (regularizer, estimator, placement) optimize?

For a tabular autoregressive policy π_θ(y_t | y_{t-1}, t) on two-token responses over three
tokens (nine responses, all enumerated: no sampling), the *expected* gradient of each way of
putting a regularizer's per-token terms ψ_t (``reg.token_reward``, the terms the PPO trainer pays)
into a policy-gradient update is computed exactly:

* **reward** — ψ_t (stop-gradient) in the return, return-to-go G_t = Σ_{t'≥t} ψ_{t'}:
  g = Σ_y π(y) Σ_t G_t(y) ∇log π(y_t|·)  (the score-function part);
* **loss** — ψ_t evaluated on π_θ as a loss, differentiated through log π (GRPO/verl's KL loss):
  g = Σ_y π(y) Σ_t ∇ψ_t(y)  (the pathwise part);
* **reward+loss** — both: the gradient of E_π[Σ_t ψ_t] (the trainer's ``regularizer_mode: loss``);
* **ratio-loss** — ρ_t·ψ_t as a loss with ρ_t = π_θ/π_old (TRL GRPO's ``use_bias_correction_kl``):
  at θ = θ_old its gradient is reward + loss.

Each is compared, to 1e-10 relative, with the gradient by autograd of the objective it is said to
optimize, written with the theory layer's sequence-level ``pi_psi`` (an independent path: the
exact expectation, no per-token terms, no return-to-go).  A biased placement is reported with
the fixed point it converges to: exact expected-gradient ascent of E_π[r] + (placement) from the
reference, and the total variation of that fixed point to the optimum.

torch is imported inside the checks (autograd in float64); ``import prefmatch.theory`` stays
torch-free.
"""
from __future__ import annotations

import itertools

import numpy as np

from prefmatch.theory import regularizers
from prefmatch.theory.checks import check

V, T = 3, 2
TOL = 1e-10


# --------------------------------------------------------------------------- the tabular problem
class _Problem:
    def __init__(self, seed: int = 0, n_refs: int = 1, length: int = T):
        import torch

        rng = np.random.default_rng(seed)
        self.torch, self.T = torch, length
        self.responses = torch.tensor(list(itertools.product(range(V), repeat=length)))  # [n, T]
        self.theta0 = torch.tensor(rng.normal(size=(length, V, V)))  # where gradients are taken
        self.ref_W = [torch.tensor(rng.normal(size=(length, V, V))) for _ in range(n_refs)]
        self.r = torch.tensor(rng.normal(size=len(self.responses)))
        self.mask = torch.ones(len(self.responses), length, dtype=torch.float64)
        ref_t = [self.token_logp(w) for w in self.ref_W]
        self.ref_t = torch.stack(ref_t) if n_refs > 1 else ref_t[0]  # [n, T] or [K, n, T]
        self.ref_seq = self.ref_t.sum(-1)

    def next_token_logp(self, W):
        """log π(· | y_{t-1}, t) over the vocabulary at every prefix of every response [n, T, V]."""
        torch = self.torch
        prev = torch.cat([torch.zeros(len(self.responses), 1, dtype=torch.long), self.responses[:, :-1]], 1)
        return torch.log_softmax(W[torch.arange(self.T)[None, :].expand_as(prev), prev], -1)

    def token_logp(self, W):
        """log π(y_t | y_{t-1}, t) of every response [n, T] (the prompt's last token is 0)."""
        return self.next_token_logp(W).gather(-1, self.responses[..., None]).squeeze(-1)

    def frozen_prefix_kl_gradient(self, forward: bool, beta: float | None = None):
        """∇ of −β Σ_t E_{y_<t∼π}[KL_t] with the prefix distribution held fixed (stop-gradient):
        KL_t = KL(π_θ(·|y_<t) ‖ π_ref(·|y_<t)), or the forward KL(π_ref(·|y_<t) ‖ π_θ(·|y_<t))."""
        torch = self.torch
        beta = BETA if beta is None else beta
        theta = self.theta0.clone().requires_grad_(True)
        lq, lr = self.next_token_logp(theta), self.next_token_logp(self.ref_W[0])
        kl_t = (lr.exp() * (lr - lq)).sum(-1) if forward else (lq.exp() * (lq - lr)).sum(-1)
        pi = self.token_logp(theta).sum(-1).exp().detach()
        (g,) = torch.autograd.grad(-beta * (pi[:, None] * kl_t).sum(), theta)
        return g

    # the expected update of a placement, exactly (by enumeration)
    def surrogate(self, reg, theta, placement: str, with_task: bool = False):
        torch = self.torch
        lp = self.token_logp(theta)
        pi = lp.sum(-1).exp().detach()
        psi_old = reg.token_reward(lp.detach(), self.ref_t, self.mask)
        rewards = psi_old.clone() if "reward" in placement else torch.zeros_like(psi_old)
        if with_task:
            rewards[:, -1] = rewards[:, -1] + self.r
        G = rewards.flip(-1).cumsum(-1).flip(-1)  # return-to-go
        S = (pi[:, None] * lp * G).sum()
        if placement in ("loss", "reward+loss"):
            S = S + (pi[:, None] * reg.token_reward(lp, self.ref_t, self.mask)).sum()
        if placement == "ratio-loss":  # ρ·ψ_t(θ) as a loss, ρ = π_θ/π_old (= 1 in value, not in gradient)
            ratio = (lp - lp.detach()).exp()
            S = S + (pi[:, None] * ratio * reg.token_reward(lp, self.ref_t, self.mask)).sum()
        return S

    def placement_gradient(self, reg, placement: str, theta=None):
        theta = (self.theta0 if theta is None else theta).clone().requires_grad_(True)
        (g,) = self.torch.autograd.grad(self.surrogate(reg, theta, placement), theta)
        return g

    def objective(self, reg, theta, *, tokens: bool = False):
        """Σ_y π_θ(y) ψ(y): sequence-level ``pi_psi`` (or Σ_t token terms for token-level objectives)."""
        lp = self.token_logp(theta)
        if tokens:
            return (lp.sum(-1).exp()[:, None] * reg.token_reward(lp, self.ref_t, self.mask)).sum()
        return reg.pi_psi(lp.sum(-1), self.ref_seq).sum()

    def objective_gradient(self, reg, *, tokens: bool = False, theta=None):
        theta = (self.theta0 if theta is None else theta).clone().requires_grad_(True)
        (g,) = self.torch.autograd.grad(self.objective(reg, theta, tokens=tokens), theta)
        return g

    def fixed_point(self, reg, placement: str, iters: int = 1500, lr: float = 2.0):
        """Expected-gradient ascent of E_π[r] + (placement) from the first reference."""
        theta = self.ref_W[0].clone()
        for _ in range(iters):
            th = theta.clone().requires_grad_(True)
            (g,) = self.torch.autograd.grad(self.surrogate(reg, th, placement, with_task=True), th)
            if not bool(self.torch.isfinite(g).all()):  # a collapsing placement overflows: keep the last iterate
                break
            theta = theta + lr * g
        return self.token_logp(theta).sum(-1).detach().numpy()

    def tv_to(self, logp, target_logp) -> float:
        return 0.5 * float(np.abs(np.exp(logp) - np.exp(target_logp)).sum())

    def optimum(self, reg):
        ref = self.ref_t.numpy()
        return reg.sequence_optimal_logp(self.r.numpy(), ref, np.ones(ref.shape[-2:]))


def _rel(a, b) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def _exact(reg, placement: str, *, n_refs: int = 1, tokens: bool = False, target=None, seed: int = 0,
           length: int = T):
    prob = _Problem(seed, n_refs, length)
    g = prob.placement_gradient(reg, placement)
    want = prob.objective_gradient(target or reg, tokens=tokens)
    err = _rel(g, want)
    return err < TOL, f"{placement}: ‖g − ∇J‖/‖∇J‖ = {err:.2e} (tolerance {TOL:g}); ‖∇J‖ = {float(want.norm()):.3f}"


def _biased(reg, placement: str, *, exact_placement: str, n_refs: int = 1, tokens: bool = False,
            min_rel: float = 1e-2, seed: int = 0, length: int = T):
    prob = _Problem(seed, n_refs, length)
    g = prob.placement_gradient(reg, placement)
    want = prob.objective_gradient(reg, tokens=tokens)
    err = _rel(g, want)
    fp = prob.fixed_point(reg, placement)
    fp_exact = prob.fixed_point(reg, exact_placement)
    opt = prob.optimum(reg)
    tv, tv_exact = prob.tv_to(fp, opt), prob.tv_to(fp_exact, opt)
    ok = err > min_rel and tv > 10 * max(tv_exact, 1e-3)
    return ok, (f"{placement}: biased, ‖g − ∇J‖/‖∇J‖ = {err:.3f} (> {min_rel:g}); its fixed point is at TV "
                f"{tv:.3f} from the optimum (the exact placement {exact_placement!r}: TV {tv_exact:.1e})")


BETA = 0.7


# --------------------------------------------------------------------------- KL estimators
def _kl(est):
    return regularizers.kl(beta=BETA, estimator=est)


@check("grad.kl_k1_reward")
def _k1_reward():
    return _exact(_kl("k1"), "reward")


@check("grad.kl_k1_loss")
def _k1_loss():
    prob = _Problem()
    g = prob.placement_gradient(_kl("k1"), "loss")
    fp = prob.fixed_point(_kl("k1"), "loss")
    tv = prob.tv_to(fp, prob.optimum(_kl("k1")))
    return float(g.norm()) < 1e-12, (f"loss: ‖g‖ = {float(g.norm()):.1e} (E_π[∇log π] = 0); the fixed point is the "
                                     f"unregularized maximizer, TV {tv:.3f} from the KL optimum")


@check("grad.kl_k2_reward")
def _k2_reward():
    return _biased(_kl("k2"), "reward", exact_placement="loss", length=1)


def _per_token_identity(reg, placement: str, *, target_one, forward: bool):
    """Exact on one-token responses (against ``target_one``); on two-token responses equal to the
    frozen-prefix per-token KL gradient and off the sequence-level one (by how much: reported)."""
    ok1, d1 = _exact(reg, placement, target=target_one, length=1)
    prob = _Problem(0, 1, 2)
    g = prob.placement_gradient(reg, placement)
    err_frozen = _rel(g, prob.frozen_prefix_kl_gradient(forward))
    err_seq = _rel(g, prob.objective_gradient(target_one))
    tv = prob.tv_to(prob.fixed_point(reg, placement), prob.optimum(target_one))
    ok = ok1 and err_frozen < TOL and err_seq > 1e-3
    return ok, (f"T=1: {d1.split(': ', 1)[1].split(' (')[0]}; T=2: equals the frozen-prefix per-token "
                f"{'forward' if forward else 'reverse'} KL gradient to {err_frozen:.1e}, off the sequence-level "
                f"gradient by {err_seq:.3f} (relative); its fixed point is at TV {tv:.3f} from the sequence-level optimum")


@check("grad.kl_k2_loss")
def _k2_loss():
    return _per_token_identity(_kl("k2"), "loss", target_one=_kl("k1"), forward=False)


@check("grad.kl_k2_reward_plus_loss")
def _k2_both():
    return _biased(_kl("k2"), "reward+loss", exact_placement="loss", length=1)


@check("grad.kl_k3_reward")
def _k3_reward():
    prob = _Problem(0, 1, 1)
    g = prob.placement_gradient(_kl("k3"), "reward")
    rkl = prob.objective_gradient(_kl("k1"))
    fkl = prob.objective_gradient(regularizers.f_divergence("reverse_kl", beta=BETA))  # −β KL(π_ref‖π)
    err = _rel(g, rkl - fkl)
    ok, detail = _biased(_kl("k3"), "reward", exact_placement="reward+loss")
    return ok and err < TOL, f"T=1: g = ∇(−β RKL) − ∇(−β FKL) to {err:.1e}; T=2: {detail}"


@check("grad.kl_k3_loss")
def _k3_loss():
    return _per_token_identity(_kl("k3"), "loss", target_one=regularizers.f_divergence("reverse_kl", beta=BETA), forward=True)


@check("grad.kl_k3_reward_plus_loss")
def _k3_both():
    return _exact(_kl("k3"), "reward+loss", target=_kl("k1"))


@check("grad.kl_k3_ratio_loss")
def _k3_ratio():
    return _per_token_identity(_kl("k3"), "ratio-loss", target_one=_kl("k1"), forward=False)


# --------------------------------------------------------------------------- affine regularizers as rewards
@check("grad.pm_reward")
def _pm_reward():
    return _exact(regularizers.pm(c1=0.4, c2=0.3, beta=BETA), "reward")


@check("grad.pm_c2_as_reward")
def _pm_c2():
    prob = _Problem()
    reg = regularizers.pm(c1=0.4, c2=0.3, beta=BETA)
    theta = prob.theta0.clone().requires_grad_(True)
    lp = prob.token_logp(theta)
    pi = lp.sum(-1).exp().detach()
    paid = reg.psi(lp.sum(-1).detach())  # β(−log π + C1 + C2/π) as the response's reward
    (g,) = prob.torch.autograd.grad((pi * lp.sum(-1) * paid).sum(), theta)
    want = prob.objective_gradient(reg)
    err = _rel(g, want)
    return err > 1e-2, f"C2/π as reward: ‖g − ∇J‖/‖∇J‖ = {err:.3f} (> 0.01); without it (grad.pm_reward): exact"


@check("grad.cpm_sequence_last_token")
def _cpm_seq():
    return _exact(_cpm_seq_reg(), "reward")


def _cpm_seq_reg():
    # α between the smallest and largest π_ref(y) of the problem, so that M and its complement are both non-empty
    prob = _Problem()
    q = np.sort(np.exp(prob.ref_seq.numpy()))
    return regularizers.cpm(alpha=float(np.sqrt(q[len(q) // 2] * q[len(q) // 2 + 1])), level="sequence", beta=BETA)


@check("grad.cpm_sequence_per_token")
def _cpm_per_token():
    import torch

    prob = _Problem()
    reg = _cpm_seq_reg()
    theta = prob.theta0.clone().requires_grad_(True)
    lp = prob.token_logp(theta)
    pi = lp.sum(-1).exp().detach()
    off = (prob.ref_seq < np.log(reg.alpha)).double()[:, None]
    psi_t = reg.beta * (-lp.detach() + off * prob.ref_t)  # per-token share of b(y)
    G = psi_t.flip(-1).cumsum(-1).flip(-1)
    (g,) = torch.autograd.grad((pi[:, None] * lp * G).sum(), theta)
    want = prob.objective_gradient(reg)
    err = _rel(g, want)
    ok_last, _ = _exact(reg, "reward")
    return err > 1e-2 and ok_last, (f"per-token share: ‖g − ∇J‖/‖∇J‖ = {err:.3f} (> 0.01); at the last token "
                                    "(grad.cpm_sequence_last_token): exact")


@check("grad.cpm_token_reward")
def _cpm_tok():
    return _exact(regularizers.cpm(alpha=0.3, level="token", beta=BETA), "reward", tokens=True)


@check("grad.maxent_reward")
def _maxent():
    return _exact(regularizers.maxent(beta=BETA), "reward")


@check("grad.multi_rkl_reward")
def _mrkl():
    return _exact(regularizers.multi_rkl(weights=(0.3, 0.7), beta=BETA), "reward", n_refs=2)


# --------------------------------------------------------------------------- non-affine: reward + pathwise
FS = ("reverse_kl", "chi2", "hellinger", "js")


@check("grad.fdiv_reward_plus_loss")
def _fdiv_both():
    res = [(_f, *_exact(regularizers.f_divergence(_f, beta=BETA), "reward+loss")) for _f in FS]
    return all(ok for _, ok, _ in res), "; ".join(f"{f}: {d.split(': ', 1)[1].split(' (')[0]}" for f, _, d in res)


@check("grad.fdiv_reward_only")
def _fdiv_reward():
    prob = _Problem()
    errs = {}
    for f in FS:
        reg = regularizers.f_divergence(f, beta=BETA)
        errs[f] = _rel(prob.placement_gradient(reg, "reward"), prob.objective_gradient(reg))
    return min(errs.values()) > 1e-2, "reward only: ‖g − ∇J‖/‖∇J‖ = " + ", ".join(f"{f} {e:.3f}" for f, e in errs.items())


@check("grad.multi_fkl_reward_plus_loss")
def _mfkl():
    reg = regularizers.multi_fkl(weights=(0.3, 0.7), beta=BETA)
    ok, detail = _exact(reg, "reward+loss", n_refs=2)
    prob = _Problem(0, 2)
    err = _rel(prob.placement_gradient(reg, "reward"), prob.objective_gradient(reg))
    return ok and err > 1e-2, f"{detail}; reward only: {err:.3f}"
