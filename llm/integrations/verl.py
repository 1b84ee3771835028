r"""A prefmatch regularizer in verl's reward, in place of its KL penalty (verl 0.9.1), inside verl's Ray
processes.

verl has two KL hooks (``verl/trainer/ppo/core_algos.py``, ``ray_trainer.py``):
``algorithm.use_kl_in_reward`` subtracts β·``kl_penalty(old_log_prob, ref_log_prob)`` from the
token-level scores in ``ray_trainer.apply_kl_penalty``, and ``actor.use_kl_loss`` adds
``kl_penalty(log_prob, ref_log_prob, kl_loss_type)`` to the actor's loss.  The ``grad.*`` checks
say the first, with ``kl_penalty: kl`` (k1), is exact; the actor-loss default ``low_var_kl`` (k3
without the importance ratio) optimizes the forward KL on one-token responses.

verl 0.9.1 runs its trainer inside a ``@ray.remote`` TaskRunner, so a change made in the driver
does not reach it.  prefmatch therefore registers itself through verl's own extension points, in
every process that imports verl:

* **loading** — prefmatch declares the entry point ``prefmatch`` in verl's ``verl.plugins`` group
  (``import verl`` loads it in the driver, the TaskRunner and every worker;
  ``VERL_USE_EXTERNAL_MODULES=prefmatch.llm.integrations.verl_plugin`` does the same where entry
  points are switched off).  It does nothing unless :data:`ENV` holds a regularizer, as JSON:
  ``PREFMATCH_VERL_REGULARIZER='{"name": "cpm", "params": {"alpha": 0.3}, "beta": 0.05}'``.
* **the reward** — the regularizer's per-token rewards replace ``apply_kl_penalty`` (the function
  verl's trainers call with ``algorithm.use_kl_in_reward=True``; verl has no registry for it):
  token_level_rewards = token_level_scores + ψ_t, ψ_t = ``reg.token_reward(old_log_probs,
  ref_log_prob, response_mask)`` (the regularizer's β, not verl's ``kl_ctrl``).
* **the advantage** — ``register_adv_est`` registers ``prefmatch_grpo``, ``prefmatch_rloo`` and
  ``prefmatch_reinforce_plus_plus``: verl's own estimators, called after checking that the rewards
  they read carry ψ in this process.  Choosing one (``algorithm.adv_estimator=prefmatch_grpo``) is
  what makes the set-up fail loudly instead of training with verl's own KL: a process where the
  plugin did not load does not know the name (verl raises), and one where the regularizer is
  missing or ψ was not applied raises a one-line error.

This is the reward placement, exact for the regularizers affine in log π (kl with k1, pm, cpm,
maxent); the others (f-divergences, k3) need a pathwise loss term on the advantages' scale, which
verl's policy-loss registry (``register_policy_loss``) cannot build — its functions are not given
the reference log-probs — so they are refused, and multi-reference regularizers too (verl scores
one reference).  GRPO's group standard deviation is refused as in the TRL integration
(``algorithm.norm_adv_by_std_in_grpo=False``).  Use it with ``algorithm.use_kl_in_reward=True`` and
``actor_rollout_ref.actor.use_kl_loss=False``.
"""
from __future__ import annotations

import json
import os
import sys

from prefmatch.llm.train.rewards import RegularizerConfigError, build_regularizer, resolve_mode

#: the verl version this recipe is tested against (where it imports; see the docs)
TESTED_VERL_VERSION = "0.9.1"
#: the environment variable that carries the regularizer to verl's processes (JSON: name, params, beta)
ENV = "PREFMATCH_VERL_REGULARIZER"
#: verl's advantage estimators offered as ``prefmatch_<name>`` (score-function estimators with a baseline)
ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus")
#: this process's state: the installed regularizer, an error to report, how often ψ was applied / read
STATE: dict = {"reg": None, "error": None, "applied": 0, "estimator_calls": 0}


def regularizer_for_verl(name: str, params: dict | None = None, beta: float | None = None):
    """The regularizer object, refused (ValueError, one line) unless its reward placement is exact
    and it needs at most one reference."""
    try:
        reg = build_regularizer(name, params, beta=beta)
        placement = resolve_mode(reg, "auto")
    except RegularizerConfigError as e:
        raise ValueError(str(e)) from None
    if placement != "reward":
        raise ValueError(f"regularizer: {name!r} needs a pathwise loss term (placement {placement!r}), which verl's "
                         "policy-loss hooks cannot build; use one that is exact as a reward (kl, pm, cpm, maxent)")
    if reg.multi_reference:
        raise ValueError(f"regularizer: {name!r} needs K reference models; verl scores one reference")
    return reg


def token_level_rewards(reg, token_level_scores, old_log_probs, ref_log_prob, response_mask):
    """token_level_scores + ψ_t: the regularized per-token rewards verl's advantage estimators read."""
    mask = response_mask.to(old_log_probs.dtype)
    ref = None if reg.refs == "none" else ref_log_prob
    return token_level_scores + reg.token_reward(old_log_probs, ref, mask)


def make_apply_regularizer(reg):
    """A drop-in for ``verl.trainer.ppo.ray_trainer.apply_kl_penalty(data, kl_ctrl, kl_penalty)``."""

    def apply_regularizer(data, kl_ctrl=None, kl_penalty=None):
        b = data.batch
        mask = b["response_mask"]
        rewards = token_level_rewards(reg, b["token_level_scores"], b["old_log_probs"], b.get("ref_log_prob"), mask)
        psi = ((rewards - b["token_level_scores"]) * mask).sum(-1)
        b["token_level_rewards"] = rewards
        STATE["applied"] += 1
        return data, {"actor/regularizer_psi": float(psi.mean()), "actor/regularizer_beta": reg.beta}

    apply_regularizer.regularizer = reg
    return apply_regularizer


def install(name: str, params: dict | None = None, beta: float | None = None):
    """Replace verl's ``apply_kl_penalty`` by the regularizer's reward (every loaded verl module that
    bound it, and ``ray_trainer`` for later imports); returns the regularizer."""
    import verl.trainer.ppo.ray_trainer as ray_trainer

    reg = regularizer_for_verl(name, params, beta)
    original = getattr(ray_trainer.apply_kl_penalty, "__wrapped_verl__", ray_trainer.apply_kl_penalty)
    fn = make_apply_regularizer(reg)
    fn.__wrapped_verl__ = original
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("verl") and getattr(mod, "apply_kl_penalty", None) is not None:
            current = mod.apply_kl_penalty
            if current is original or getattr(current, "__wrapped_verl__", None) is original:
                mod.apply_kl_penalty = fn  # type: ignore[attr-defined]  # a verl module, found at run time
    STATE.update(reg=reg, error=None)
    return reg


def _estimator(base: str):
    """verl's ``base`` estimator, called once ψ is in the rewards it reads (see the module docstring)."""
    name = f"prefmatch_{base}"

    def estimator(token_level_rewards, response_mask, config=None, **kwargs):
        from verl.trainer.ppo import core_algos

        if STATE["error"]:
            raise RuntimeError(f"adv_estimator {name}: {STATE['error']}")
        if STATE["reg"] is None:
            raise RuntimeError(f"adv_estimator {name}: no prefmatch regularizer in this process; set {ENV} (JSON: name, "
                               "params, beta) in the environment verl's Ray processes start with")
        if not STATE["applied"]:
            raise RuntimeError(f"adv_estimator {name}: the rewards do not carry ψ; set algorithm.use_kl_in_reward=True "
                               "(prefmatch's reward takes the place of verl's KL penalty there)")
        STATE["applied"] = 0
        if base == "grpo":
            norm = True if config is None else config.get("norm_adv_by_std_in_grpo", True)
            if norm:
                raise ValueError("algorithm.norm_adv_by_std_in_grpo: must be False with prefmatch_grpo (a sampled std "
                                 "scales each group's update; the TRL battery's cPM run stalled under it); got True")
            kwargs["norm_adv_by_std_in_grpo"] = False
        STATE["estimator_calls"] += 1
        fn = core_algos.get_adv_estimator_fn(base)
        return fn(token_level_rewards=token_level_rewards, response_mask=response_mask, config=config, **kwargs)

    estimator.__name__ = name
    return estimator


def register() -> None:
    """What verl's plugin loading runs in each process (:mod:`prefmatch.llm.integrations.verl_plugin`): the
    ``prefmatch_*`` advantage estimators (``register_adv_est``) and, when :data:`ENV` holds a regularizer, its
    reward in place of ``apply_kl_penalty``.  A bad :data:`ENV` is kept as the error the estimators raise (verl
    swallows a plugin's exceptions)."""
    from verl.trainer.ppo import core_algos

    for base in ESTIMATORS:
        if f"prefmatch_{base}" not in core_algos.ADV_ESTIMATOR_REGISTRY:
            core_algos.register_adv_est(f"prefmatch_{base}")(_estimator(base))
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return
    try:
        cfg = json.loads(spec)
        if not isinstance(cfg, dict) or "name" not in cfg:
            raise ValueError(f"{ENV}: must be a JSON object with name, params and beta; got {spec!r}")
        install(cfg["name"], cfg.get("params"), cfg.get("beta"))
    except (ValueError, TypeError) as e:
        STATE.update(reg=None, error=str(e).splitlines()[0] if str(e) else repr(e))
