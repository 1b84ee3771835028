r"""A prefmatch regularizer where OpenRLHF 0.11.2 puts its KL: a recipe, tested against OpenRLHF's functions.

OpenRLHF regularizes in one of two places (``openrlhf/trainer/ppo_utils/experience_maker.py``,
``openrlhf/models/utils.py``):

* ``algo.kl.use_loss`` off (the reward): ``make_experience`` computes per token
  ``kl_t = compute_approx_kl(log π_old, log π_ref, kl_estimator)`` and ``compute_advantages_and_returns``
  pays ``compute_reward(r, kl_coef, kl, action_mask)`` = r at the last token − kl_coef·kl_t, after
  the task reward's baseline (``rloo``, ``reinforce_baseline``, ``group_norm``, ...).  With
  ``kl_estimator k1`` this is the row "k1 as a reward": exact; k2 and k3 in the reward are not.
* ``algo.kl.use_loss`` on (the actor loss): k2 as a pure loss is exact, k3 without the importance
  ratio optimizes the forward KL, and ``unbiased_gradient`` gives the reverse KL's gradient (the
  ``grad.*`` table of the estimators page).

The recipe puts the regularizer's ψ_t in the reward, through OpenRLHF's own ``compute_reward``:
replace the ``compute_approx_kl(...)`` call of ``make_experience`` by :func:`kl_term` (which needs the
action mask, so it is a one-line edit of that call or of a subclass, not a patch of the function)
and run with ``--init_kl_coef β`` and no KL target (a fixed controller): then −kl_coef·kl_t = ψ_t, and
the shaped reward is r + ψ_t — the reward placement, exact for the regularizers affine in log π
(kl with k1, pm, cpm, maxent).  Refused like verl's: the regularizers that need a pathwise loss term
(f-divergences, k3) and multi-reference ones (OpenRLHF scores one reference).
"""
from __future__ import annotations

from prefmatch.llm.integrations.verl import regularizer_for_verl

#: the OpenRLHF version the recipe is tested against (``make test-openrlhf``)
TESTED_OPENRLHF_VERSION = "0.11.2"

__all__ = ["TESTED_OPENRLHF_VERSION", "kl_term", "regularizer_for_openrlhf"]


def regularizer_for_openrlhf(name: str, params: dict | None = None, beta: float | None = None):
    """The regularizer object, refused (ValueError, one line) unless its reward placement is exact and it
    needs at most one reference (the same rule as verl's: both put ψ where they put a KL reward)."""
    return regularizer_for_verl(name, params, beta)


def kl_term(reg, action_log_probs, base_action_log_probs, action_mask):
    """What ``make_experience`` stores as ``experience.kl`` in place of ``compute_approx_kl``'s result:
    kl_t = −ψ_t/β, so that OpenRLHF's ``compute_reward(r, kl_coef=β, kl, action_mask)`` pays r + ψ_t."""
    lp = action_log_probs.double()
    mask = action_mask.to(lp.dtype)
    ref = None if reg.refs == "none" else base_action_log_probs.double()
    return (-reg.token_reward(lp, ref, mask) / reg.beta).to(action_log_probs.dtype)
