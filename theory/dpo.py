r"""Multi-reference DPO losses (second paper, Appendix D, eqs. 75–76), written once.

A DPO loss is the Bradley–Terry negative log-likelihood of the *implicit reward* of a policy:
the reward whose regularized optimum (for the given regularizer) is that policy.  Inverting the
stationarity condition r + ∂(π ψ)/∂π = λ of the objective (⋆) gives, up to a prompt constant
that cancels in every BT difference,

* affine regularizers ψ = −a log π + b(y) (KL, multi-reference reverse KL, PM, cPM ...):
  r_π(y) = a log π(y) − b(y).  For :class:`~prefmatch.theory.regularizers.MultiRKL`
  (a = β, b = β Σ α_i log π_ref,i):  r_π = β [log π − Σ_i α_i log π_ref,i]
  (Theorem 5.2 inverted; F_α and Ẑ cancel);
* multi-reference forward KL (:class:`~prefmatch.theory.regularizers.MultiFKL`,
  π* = β P̄_α/(λ − r)): r_π(y) = −β P̄_α(y)/π(y) (Theorem 6.2 inverted; λ_x cancels);
  the single-reference reverse-KL f-divergence is the case K = 1.

and the loss is −log σ(r_π(y_w) − r_π(y_l)).  Both multi-reference losses of Appendix D are
this one function (:func:`dpo_loss`) applied to ``multi_rkl`` / ``multi_fkl`` objects.

**β convention.** Package β (objective E_π[r] − β·D): the DPO logit is
β[log π(y_w)/π(y_l) − Σ α_i log π_ref,i(y_w)/π_ref,i(y_l)] (RKL) and
β[P̄_α(y_l)/π(y_l) − P̄_α(y_w)/π(y_w)] (FKL).  The paper/spec write 1/β_s in front, i.e. the
usual DPO "β" is β_pkg = 1/β_spec.

**Arrays.** Works on numpy arrays and torch tensors (array API, ``theory/_array.namespace``).
Sequence log-probs: ``logp_w``, ``logp_l`` of shape [B]; reference log-probs with a *leading*
K axis, ``ref_logp_w``, ``ref_logp_l`` of shape [K, B] (as everywhere in the package).
Gradients flow through torch tensors (no in-place ops, no numpy round-trips).

**Assumptions (Appendix D).** D.1 (RKL): |β log(π_θ/π̂_α)| ≤ R̃_max; D.2 (FKL):
β P̄_α/π_θ ≤ R̃_max, i.e. P̄_α/π_θ bounded (FKL-DPO needs π_θ bounded away from 0 where P̄_α
is not).  Under them the RLHF gap bounds transfer with R_max → R̃_max.
"""
from __future__ import annotations



from prefmatch.theory import regularizers
from prefmatch.theory._array import asarray, namespace, quiet
from prefmatch.theory.distributions import log_sigmoid

__all__ = [
    "implicit_reward",
    "preference_logit",
    "dpo_loss",
    "rkl_dpo_loss",
    "fkl_dpo_loss",
    "population_dpo_loss",
    "sequence_dpo_loss",
    "dpo_regularizers",
]


def implicit_reward(reg: regularizers.Regularizer, logp, ref_logp):
    r"""r_π(y) (up to a prompt constant): the reward whose ``reg``-optimum is π — the regularizer
    object's own ``implicit_reward`` (affine ψ = −a log π + b: a·log π − b; f-divergences:
    β f′(π/π_ref); multi-reference forward KL: −β P̄_α/π).

    ``logp`` [..., n or B]; ``ref_logp`` as ``reg`` expects it ([K, ...] for multi-reference).
    """
    return reg.implicit_reward(logp, ref_logp)


def preference_logit(reg: regularizers.Regularizer, logp_w, logp_l, ref_logp_w, ref_logp_l):
    """r_π(y_w) − r_π(y_l): the DPO logit (BT log-odds that y_w ≻ y_l under the policy's reward)."""
    return implicit_reward(reg, logp_w, ref_logp_w) - implicit_reward(reg, logp_l, ref_logp_l)


def _reduce(x, reduction, sample_weight):
    xp = namespace(x)
    if sample_weight is not None:
        x = x * asarray(sample_weight, like=x)
    if reduction == "none":
        return x
    if reduction == "sum":
        return xp.sum(x)
    if reduction == "mean":
        if sample_weight is not None:
            return xp.sum(x) / xp.sum(asarray(sample_weight, like=x))
        return xp.mean(x)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dpo_loss(reg: regularizers.Regularizer, logp_w, logp_l, ref_logp_w, ref_logp_l, *, reduction: str = "mean",
             sample_weight=None):
    r"""−log σ(r_π(y_w) − r_π(y_l)) averaged over pairs: the DPO loss of regularizer ``reg``.

    For ``kl(β)`` this is DPO (Rafailov et al. 2023) with DPO-β = β_pkg; for ``multi_rkl`` it is
    eq. 75, for ``multi_fkl`` eq. 76 (and for ``f_divergence('reverse_kl')`` the forward-KL DPO
    of Wang et al. 2024).  ``sample_weight`` [B] weights pairs (e.g. pair counts); with
    ``reduction="mean"`` the result is the weighted mean.
    """
    z = preference_logit(reg, logp_w, logp_l, ref_logp_w, ref_logp_l)
    return _reduce(-log_sigmoid(z), reduction, sample_weight)


def sequence_dpo_loss(reg: regularizers.Regularizer, logp_t_w, logp_t_l, ref_logp_t_w, ref_logp_t_l, mask_w, mask_l,
                      *, reduction: str = "mean", sample_weight=None):
    r"""The DPO loss of ``reg`` on token log-probs: −log σ(h(y_w) − h(y_l)), h the regularizer's
    :meth:`~prefmatch.theory.regularizers.Regularizer.sequence_implicit_reward` (for an affine
    ψ = −a log π + b: h = a Σ_t log π(y_t|·) − b(y)).

    This is the loss the DPO trainer (:mod:`prefmatch.llm.train.dpo`) and its convergence battery
    minimize.  Its population minimizer under Bradley–Terry pairs is the optimum of the objective
    the PPO trainer's per-token terms define (``reg.sequence_optimal_logp``): Definition 4.1 for
    sequence-level cPM, its token-level variant for ``level="token"`` (``dpo.*`` checks).
    ``logp_t_*``, ``mask_*`` [B, T]; ``ref_logp_t_*`` [B, T] ([K, B, T] for multi-reference,
    ``None`` for a regularizer without reference).
    """
    z = reg.sequence_implicit_reward(logp_t_w, ref_logp_t_w, mask_w) - reg.sequence_implicit_reward(
        logp_t_l, ref_logp_t_l, mask_l)
    return _reduce(-log_sigmoid(z), reduction, sample_weight)


def dpo_regularizers() -> tuple[str, ...]:
    """The registered regularizers with a DPO loss of the form −log σ(β[(log π − b)(y_w) − (log π − b)(y_l)]):
    the affine ones (ψ = −β log π + β b) the trainers offer (``trainable``)."""
    return tuple(n for n, c in regularizers.REGISTRY.items()
                 if c.trainable and issubclass(c, regularizers.AffineLogRegularizer))


def rkl_dpo_loss(logp_w, logp_l, ref_logp_w, ref_logp_l, *, weights, beta, reduction: str = "mean",
                 sample_weight=None):
    r"""Multi-reference reverse-KL DPO (eq. 75), package β:

    −log σ(β[log π(y_w)/π(y_l) − Σ_i α_i log π_ref,i(y_w)/π_ref,i(y_l)]);
    spec: the same with 1/β_s in front.  ``ref_logp_*`` [K, B].
    """
    return dpo_loss(regularizers.multi_rkl(weights=weights, beta=beta), logp_w, logp_l, ref_logp_w, ref_logp_l,
                    reduction=reduction, sample_weight=sample_weight)


def fkl_dpo_loss(logp_w, logp_l, ref_logp_w, ref_logp_l, *, weights, beta, reduction: str = "mean",
                 sample_weight=None):
    r"""Multi-reference forward-KL DPO (eq. 76), package β:

    −log σ(β[P̄_α(y_l)/π(y_l) − P̄_α(y_w)/π(y_w)]), P̄_α = Σ_i α_i π_ref,i;
    spec: the same with 1/β_s in front.  ``ref_logp_*`` [K, B].
    """
    return dpo_loss(regularizers.multi_fkl(weights=weights, beta=beta), logp_w, logp_l, ref_logp_w, ref_logp_l,
                    reduction=reduction, sample_weight=sample_weight)


def population_dpo_loss(reg: regularizers.Regularizer, logp, ref_logp, r, data_logp=None):
    r"""Expected DPO loss on a tabular prompt under Bradley–Terry data (the n → ∞ limit).

    Pairs (y, y′) are drawn i.i.d. from the data distribution q (``data_logp``; default
    uniform), y ≻ y′ with probability σ(r(y) − r(y′)):
    L(π) = Σ_{y,y′} q(y) q(y′) · [−σ(r_y − r_y′) log σ(h_y − h_y′)], h = r_π.
    (Summing over ordered pairs counts both label outcomes.)  For fixed (y, y′) the summand is
    minimized iff h_y − h_y′ = r_y − r_y′, so on supp q the minimizers are exactly the policies
    whose implicit reward equals r up to a constant — the RLHF optimum of ``reg``.
    Shapes: ``logp``, ``r`` [..., n]; ``ref_logp`` as ``reg`` expects.
    """
    xp = namespace(logp)
    r = asarray(r, like=logp)
    n = logp.shape[-1]
    with quiet():
        q = xp.exp(asarray(data_logp, like=logp)) if data_logp is not None else xp.ones_like(logp) / n
        h = implicit_reward(reg, logp, ref_logp)
        w = q[..., :, None] * q[..., None, :]
        dz = h[..., :, None] - h[..., None, :]
        dr = r[..., :, None] - r[..., None, :]
        on = w > 0
        dz = xp.where(on, dz, xp.zeros_like(dz))
        terms = xp.where(on, -w * xp.exp(log_sigmoid(dr)) * log_sigmoid(dz), xp.zeros_like(dz))
    return xp.sum(xp.sum(terms, axis=-1), axis=-1)



