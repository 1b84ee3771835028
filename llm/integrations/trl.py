r"""TRL's GRPO and RLOO trainers with their KL term replaced by any prefmatch regularizer.

``pip install prefmatch[trl]`` (TRL in :data:`SUPPORTED_TRL`; other versions are refused in one line).
A TRL user changes one class and one argument::

    from prefmatch.llm.integrations.trl import PMGRPOTrainer
    trainer = PMGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(beta=0.1, ...),
                            train_dataset=..., regularizer="cpm", regularizer_params={"alpha": 0.3})

Both trainers maximise, for each prompt x,

.. math::  J(\pi) = \E_{y\sim\pi(\cdot|x)}\Bigl[\sum_i w_i\, r_i(x, y) + \psi(\pi(y|x), y)\Bigr]
           = \E_\pi[r] - \beta\,D(\pi, \pi_{\mathrm{ref}}),

with ψ the regularizer's own (:mod:`prefmatch.theory.regularizers`; β is the config's ``beta``,
the coefficient of the divergence, for every regularizer), r the weighted sum of the reward
functions, and π the policy TRL samples from (at its ``temperature``; the references are scored
at temperature 1).  The optimum is ``reg.optimal_logp(r, log π_ref)`` (``sequence_optimal_logp``
over whole completions).  Nothing is re-derived here: ψ per token is ``reg.token_reward`` and its
placement is :func:`prefmatch.llm.train.rewards.resolve_mode`, the table the ``grad.*`` checks prove:

* **reward placement** (ψ affine in log π: kl with k1, pm, cpm, maxent, multi_rkl): ψ(y) =
  Σ_t ψ_t, computed on the sampling policy, is added to the task reward *before* TRL's group
  normalization, so the score-function update is the exact gradient of J up to the positive scale
  the normalization applies to the task reward too.
* **loss placement** (the others: f-divergences, multi_fkl, kl with k3): the reward placement
  plus the pathwise part ∂(Σ_t ψ_t)/∂log π(y_t|·), put on the same scale as the task reward's
  advantages — divided by the same group (or batch) standard deviation, multiplied by (G−1)/G for
  GRPO's group-mean baseline (which shrinks the score part by that factor), and aggregated by
  TRL's own loss (GRPO: as a per-token advantage; RLOO: a per-sequence term averaged like its
  per-sequence loss).
* refused: kl with k2 (the wrong objective in every placement).

TRL's built-in KL is switched off (the trainer's ``beta`` attribute is 0 once TRL has built the
reference); K reference models are passed as ``ref_model=[m1, ..., mK]`` for the multi-reference
regularizers (each with the policy's output vocabulary: otherwise a ValueError naming
``ref_model[i]``); a regularizer that needs one reference and gets none uses the reference TRL's
trainer builds (a PEFT policy with its adapter disabled — no second copy —, otherwise a copy loaded
with the policy's ``model_init_kwargs``), and ``sync_ref_model`` works as in TRL.  References given as
paths load with the policy's ``model_init_kwargs``, dtype and attention implementation.  TRL's ``kl``
metric is logged with TRL's meaning (GRPO: per-token k3, RLOO: k1, to the reference).  The sampling
policy's log-probs come from ``generate`` (GRPO; no second forward pass).
Settings under which training would not reach that optimum (truncated or penalized sampling, an
entropy bonus, a pathwise term divided by a sampled std or by token counts, ...) are refused
when the trainer is built, with one line naming the field and the exact value
(:func:`check_trl_config`).  Text-only models.  Two pieces of TRL's ``_generate_and_score_completions`` are replicated,
because ψ must join the reward before them: GRPO's group normalization (``sum_then_normalize``;
``normalize_then_sum`` is refused) and RLOO's leave-one-out baseline with its optional
normalization; each is compared with TRL's own result on the task reward at every step.
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import torch
import trl
from accelerate.utils import gather
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import nanstd

try:  # TRL >= 1.15 scores log-probs through a fused LM head, at a temperature set per model
    from trl.trainer.utils import add_fused_lm_head
except ImportError:  # TRL < 1.15 divides every model's logits by the sampling temperature
    add_fused_lm_head = None

from prefmatch.llm.train.rewards import RegularizerConfigError, build_regularizer, resolve_mode

#: the TRL versions these trainers support (``prefmatch[trl]`` requires this range); the lowest and the
#: highest are tested (``make test-trl`` with the project's TRL, ``make test-trl-range`` in a side environment)
SUPPORTED_TRL = ">=1.12.0,<1.17"
TESTED_TRL_VERSIONS = ("1.12.0", "1.16.0")
#: the newest tested version (the battery's)
TESTED_TRL_VERSION = TESTED_TRL_VERSIONS[-1]

__all__ = ["PMGRPOTrainer", "PMRLOOTrainer", "SUPPORTED_TRL", "TESTED_TRL_VERSION", "TESTED_TRL_VERSIONS",
           "check_trl_config", "check_trl_version", "regularizer_from_config"]


def check_trl_version(version: str | None = None, supported: str = SUPPORTED_TRL,
                      tested: tuple = TESTED_TRL_VERSIONS, what: str = "prefmatch's TRL trainers") -> None:
    """ValueError (one line) unless ``version`` (default: the installed TRL's) is in ``supported``."""
    from packaging.specifiers import SpecifierSet

    v = trl.__version__ if version is None else version
    if v not in SpecifierSet(supported):
        raise ValueError(f"trl: {what} support trl{supported} (tested: {', '.join(tested)}); this is trl {v}")


def regularizer_from_config(regularizer: str, regularizer_params: dict | None, beta: float):
    """``(reg, placement)`` for a TRL config's ``beta`` and the chosen regularizer.

    β is the config's ``beta`` (TRL's KL coefficient, here the coefficient of any divergence);
    with ``beta=0`` it may be given as ``regularizer_params["beta"]`` instead, and the two may not
    disagree.  ValueError (one line naming the argument) for anything the placement table refuses.
    """
    params = dict(regularizer_params or {})
    if not beta:
        if "beta" not in params:
            raise ValueError("beta: the regularizer's coefficient (E_π[r] − β·D) must be > 0; set it with the "
                             "config's beta (or regularizer_params['beta'])")
        beta = params.pop("beta")
    try:
        reg = build_regularizer(regularizer, params, beta=float(beta))
        placement = resolve_mode(reg, "auto")
    except RegularizerConfigError as e:
        raise ValueError(str(e)) from None
    if not reg.trainable:
        raise ValueError(f"regularizer: {regularizer!r} is not offered to trainers")
    return reg, placement


#: GRPO loss types whose fixed point the battery shows is the optimum: with ψ affine in log π (reward
#: placement) r + ψ is constant on the optimum, every advantage is 0 there, and a per-completion weight
#: (``dapo``/``bnpo``: the batch's tokens; ``grpo``: 1/|y|) keeps it the fixed point; a pathwise term
#: (loss placement) needs one constant normalizer, ``dr_grpo`` (the ``grad.grpo_scaling_and_loss_type`` check)
GRPO_LOSS_TYPES = {"reward": ("dapo", "bnpo", "grpo", "dr_grpo"), "loss": ("dr_grpo",)}


def check_trl_config(args, placement: str) -> None:
    """ValueError naming the field and the value that is exact, for every GRPOConfig/RLOOConfig setting
    under which training would not reach the optimum of E_π[r] − β·D (or that no battery row shows
    reaching it).  ``placement``: the regularizer's (``reward`` or ``loss``)."""
    grpo = hasattr(args, "scale_rewards")
    sampled = "the samples must come from the policy whose log-probs ψ and the ratio use"
    rules = [  # (field, holds, the exact value and why)
        ("top_p", args.top_p == 1.0, f"1.0 ({sampled})"),
        ("top_k", args.top_k in (0, None), f"0 ({sampled})"),
        ("min_p", args.min_p in (None, 0, 0.0), f"None ({sampled})"),
        ("repetition_penalty", args.repetition_penalty == 1.0, f"1.0 ({sampled})"),
        ("generation_kwargs", not args.generation_kwargs, f"None ({sampled}; sampling options cannot be checked)"),
        ("use_vllm", not getattr(args, "use_vllm", False), "False (generation in vLLM is not covered by the battery)"),
        ("num_iterations", args.num_iterations == 1, "1 (several updates per generation are not covered by the battery)"),
        ("mask_truncated_completions", not args.mask_truncated_completions,
         "False (a completion cut at max_completion_length is an outcome of the policy; dropping it from the loss "
         "is not covered by the battery)"),
        ("use_liger_kernel", not getattr(args, "use_liger_kernel", False),
         "False (Liger's fused loss bypasses the regularizer's advantages)"),
    ]
    if grpo:
        types = GRPO_LOSS_TYPES[placement]
        rules += [
            ("loss_type", args.loss_type in types,
             "'dr_grpo' (one constant normalizer" + (
                 "; with a pathwise term every other aggregation depends on the sampled lengths)" if placement == "loss"
                 else f"; {', '.join(map(repr, types))} are exact with this regularizer)")),
            ("scale_rewards", args.scale_rewards in ("none", False),
             "'none' (a sampled std scales each group's update: with a pathwise term it moves the fixed point off "
             "the optimum, and with cPM the battery's run stalled far from it)"),
            ("importance_sampling_level", args.importance_sampling_level == "token",
             "'token' (sequence-level ratios are not covered by the battery)"),
            ("top_entropy_quantile", args.top_entropy_quantile == 1.0,
             "1.0 (masking low-entropy tokens is not covered by the battery)"),
            ("entropy_coef", args.entropy_coef == 0.0 and not args.use_adaptive_entropy,
             "0.0 with use_adaptive_entropy False (an entropy bonus is another regularizer: use regularizer "
             "'maxent' or weighted terms)"),
            ("off_policy_mask_threshold", args.off_policy_mask_threshold is None,
             "None (dropping sequences by a sampled statistic is not covered by the battery)"),
        ]
    else:
        rules += [
            ("reward_clip_range", args.reward_clip_range is None,
             "None (clipping the task reward changes the objective)"),
            ("normalize_advantages", placement == "reward" or not args.normalize_advantages,
             "False (the pathwise term divided by the batch's std moves the fixed point off the optimum)"),
        ]
    for name, holds, must in rules:
        if not holds:
            raise ValueError(f"{name}: must be {must}; got {getattr(args, name)!r}")


class _SampledTokenLogps:
    """A transformers logits processor that keeps the log-probability of each sampled token under the
    distribution it was sampled from (the model's softmax at the sampling temperature), so that the
    sampling policy's log-probs come out of ``generate`` instead of a second forward pass.

    Called at every decoding step with the scores of the next column; the token chosen at step t is
    ``input_ids[:, -1]`` at step t + 1, so each call gathers the previous step's log-probs.  transformers
    applies the temperature warper after the processors a caller passes (``_get_logits_processor``), so
    the temperature is applied here."""

    def __init__(self, temperature: float):
        self.temperature = float(temperature)
        self.cols: list = []      # log π(y_t|·) of the tokens of columns 0..n-2, each [B, 1]
        self.tokens: list = []    # those tokens [B, 1], to check the alignment with the returned completions
        self.prev = None          # the last step's log-probs [B, V]

    def __call__(self, input_ids, scores):
        # this runs at every decoding step, so it is kept to two kernels (the log-softmax, one fused kernel, is
        # faster on CPU than a logsumexp and a gather of the logits) and skips the cast and division it can
        if self.prev is not None:
            tok = input_ids[:, -1:]
            self.cols.append(self.prev.gather(-1, tok))
            self.tokens.append(tok)
        z = scores if scores.dtype == torch.float32 else scores.float()
        self.prev = torch.log_softmax(z if self.temperature == 1.0 else z / self.temperature, dim=-1)
        return scores

    def per_completion(self, completion_ids) -> list[list[float]] | None:
        """Per-completion log-probs aligned with TRL's ``completion_ids`` lists (truncated after EOS);
        None when they do not line up (then the caller scores the policy with a forward pass)."""
        if self.prev is None or self.prev.size(0) != len(completion_ids):
            return None
        n = len(self.cols) + 1
        if any(len(ids) > n for ids in completion_ids):
            return None
        dev = self.prev.device
        last_tok = torch.tensor([[ids[n - 1] if len(ids) == n else 0] for ids in completion_ids], device=dev)
        cols = self.cols + [self.prev.gather(-1, last_tok)]
        toks = self.tokens + [last_tok]
        lp, tk = torch.cat(cols, 1).cpu(), torch.cat(toks, 1).cpu()
        for i, ids in enumerate(completion_ids):
            if ids and tk[i, :len(ids)].tolist() != list(ids):
                return None
        return [lp[i, :len(ids)].tolist() for i, ids in enumerate(completion_ids)]



# transformers' LogitsProcessorList calls inspect.signature(processor.__call__) at every decoding step; a
# precomputed signature makes that lookup a constant (about 10 µs a step less on CPU)
_SampledTokenLogps.__call__.__signature__ = inspect.signature(_SampledTokenLogps.__call__)  # type: ignore[attr-defined]

class _Regularized:
    """What the GRPO and RLOO variants share: the construction, the regularizer, its references, ψ per completion."""

    #: the TRL config class the trainer takes
    _pm_config_class: type
    # what the TRL trainer this mixes into provides (declared for the type checker)
    model: Any
    ref_model: Any
    accelerator: Any
    args: Any
    num_generations: int
    num_generations_eval: int

    def _pm_advantages(self, rewards, g) -> tuple[Any, Any]:
        """TRL's advantages of ``rewards`` in groups of ``g`` and their scale (each trainer's replica)."""
        raise NotImplementedError

    def __init__(self, model, reward_funcs, args=None, *, regularizer: str = "kl",
                 regularizer_params: dict | None = None, ref_model=None, **kwargs):
        name = self._pm_config_class.__name__
        if args is None:
            raise ValueError(f"args: pass a trl.{name} with beta > 0 (the regularizer's coefficient)")
        if not isinstance(args, self._pm_config_class):
            raise ValueError(f"args: must be a trl.{name}, got {type(args).__name__}")
        self._pm_check_args(args)
        args = self._pm_before_init(model, args, regularizer, regularizer_params, ref_model, kwargs)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)  # type: ignore[call-arg]
        self._pm_after_init()

    def _pm_check_args(self, args) -> None:
        """What the trainer's TRL config must hold beyond :func:`check_trl_config` (none by default)."""

    def _pm_before_init(self, model, args, regularizer, regularizer_params, ref_model, kwargs):
        check_trl_version()
        self.reg, self.placement = regularizer_from_config(regularizer, regularizer_params, args.beta)
        check_trl_config(args, self.placement)
        from accelerate.utils import is_peft_model

        peft = kwargs.get("peft_config") is not None or (not isinstance(model, str) and is_peft_model(model))
        refs = self.reg.refs
        self._pm_trl_ref = False  # the reference is the one TRL builds (the policy with its adapter off, or a copy)
        if refs == "none":
            if ref_model is not None:
                raise ValueError(f"ref_model: regularizer {self.reg.name!r} uses no reference model; leave it None")
            ref_list = []
        elif refs == "one":
            if isinstance(ref_model, (list, tuple)):
                raise ValueError(f"ref_model: regularizer {self.reg.name!r} takes one reference model, "
                                 f"got a list of {len(ref_model)}")
            self._pm_trl_ref = ref_model is None
            ref_list = [] if ref_model is None else [ref_model]
        else:
            k = len(self.reg.weights)
            if not isinstance(ref_model, (list, tuple)) or len(ref_model) != k:
                raise ValueError(f"ref_model: regularizer {self.reg.name!r} with {k} weights needs a list of {k} "
                                 "reference models (or model ids)")
            ref_list = list(ref_model)
        if add_fused_lm_head is None and refs != "none" and args.temperature != 1.0:
            raise ValueError(f"temperature: must be 1.0 with trl {trl.__version__} (before 1.15 TRL scores every model at "
                             f"the sampling temperature; ψ needs the references' own distributions); got {args.temperature!r}")
        if self._pm_trl_ref and args.temperature != 1.0:
            raise ValueError("temperature: must be 1.0 when the reference is TRL's own (TRL scores it at the sampling "
                             f"temperature; ψ needs the reference's own distribution): pass ref_model; got {args.temperature!r}")
        if args.sync_ref_model:
            if refs != "one":
                raise ValueError(f"sync_ref_model: must be False with regularizer {self.reg.name!r} (it does not use "
                                 "one reference model); got True")
            if peft and ref_model is None:
                raise ValueError("sync_ref_model: must be False with a PEFT policy (its reference is the policy with the "
                                 "adapter disabled, as in TRL, which refuses it too); got True")
        self._pm_refs = [self._pm_load(r, args, model, kwargs.get("quantization_config")) for r in ref_list]
        self._pm_check_vocabularies(model, self._pm_refs)
        self._pm_stash = None
        self._pm_task_rewards = None
        # TRL builds its reference (when it is the regularizer's) as GRPOTrainer/RLOOTrainer would: it needs its beta
        # > 0 for that; _pm_after_init then sets the trainer's beta to 0 (TRL's own KL term off: the regularizer
        # replaces it).  With a reference of the caller's, TRL builds none and prefmatch syncs it (sync_ref_model).
        self._pm_sync = bool(args.sync_ref_model) and not self._pm_trl_ref
        args = copy.copy(args)
        args.beta = float(self.reg.beta) if self._pm_trl_ref else 0.0
        if not self._pm_trl_ref:
            args.sync_ref_model = False
        return args

    @staticmethod
    def _pm_check_vocabularies(model, refs):
        """ValueError naming the first reference whose output vocabulary differs from the policy's."""
        def size(m):
            emb = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
            return None if emb is None else int(emb.weight.shape[0])

        want = None if isinstance(model, str) else size(model)
        for i, ref in enumerate(refs):
            got = size(ref)
            if want is not None and got is not None and got != want:
                raise ValueError(f"ref_model[{i}]: its vocabulary has {got} tokens, the policy's {want}; every reference "
                                 "must use the policy's tokenizer")

    @staticmethod
    def _pm_load(ref, args, policy, quantization_config=None):
        """A reference given as a path or model id, loaded as TRL loads its own reference: the policy's
        ``model_init_kwargs`` (and ``quantization_config``), the policy's dtype and attention
        implementation when the policy is an instance (TRL's ``GRPOTrainer.__init__``, "Reference model")."""
        if not isinstance(ref, str):
            return ref
        from trl.trainer.utils import create_model_from_path

        kw = dict(args.model_init_kwargs or {})
        if quantization_config is not None:
            kw["quantization_config"] = quantization_config
        kw.setdefault("trust_remote_code", args.trust_remote_code)
        if not isinstance(policy, str):
            from accelerate.utils import is_peft_model

            base = policy.get_base_model() if is_peft_model(policy) else policy
            kw.setdefault("dtype", base.dtype)
            kw.setdefault("attn_implementation", base.config._attn_implementation)
        return create_model_from_path(ref, **kw)

    def _pm_after_init(self):
        self.beta = 0.0  # TRL's own KL term (GRPO: k3 in the loss; RLOO: k1 in the reward) off
        prepared = []
        for ref in self._pm_refs:
            ref.eval()
            ref.requires_grad_(False)
            if add_fused_lm_head is not None:
                add_fused_lm_head(ref, temperature=1.0)  # the reference's own distribution
            if self.is_deepspeed_enabled:
                ref = prepare_deepspeed(ref, self.accelerator)
            elif self.is_fsdp_enabled:
                ref = prepare_fsdp(ref, self.accelerator)
            else:
                ref = self.accelerator.prepare_model(ref, evaluation_mode=True)
            prepared.append(ref)
        self._pm_refs = prepared
        if self._pm_sync:
            from trl.trainer.callbacks import SyncRefModelCallback

            self.add_callback(SyncRefModelCallback(ref_model=self._pm_refs[0], accelerator=self.accelerator))

    # ---- hooks into TRL (the policy's log-probs and the task rewards it computes anyway)
    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        if self._pm_stash is not None:
            self._pm_stash.append(out[0])
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._pm_task_rewards = rewards_per_func
        return rewards_per_func

    def _pm_super_generate(self, inputs) -> tuple[dict, Any]:
        """TRL's generation and scoring, with the first policy log-prob call it makes kept (or None)."""
        self._pm_stash = []
        try:
            out = super()._generate_and_score_completions(inputs)  # type: ignore[misc]  # the TRL trainer's
            old = self._pm_stash[0] if self._pm_stash else None
        finally:
            self._pm_stash = None
        return out, old

    def _pm_reference_logps(self, ids, attn, keep, bs) -> list:
        """Each reference's per-token log-probs.  With TRL's own reference this is TRL's
        ``_generate_and_score_completions`` ("Compute the per-token log probabilities for the reference
        model"): ``self.ref_model``, or for a PEFT policy the policy under ``use_adapter(model, "ref" if
        TRL made a frozen copy of a pretrained adapter else None)``, i.e. with its adapter disabled."""
        fwd = self._get_per_token_logps_and_entropies
        if self._pm_refs:
            return [fwd(r, ids, attn, keep, batch_size=bs)[0] for r in self._pm_refs]
        if not self._pm_trl_ref:
            return []
        if self.ref_model is not None:
            return [fwd(self.ref_model, ids, attn, keep, batch_size=bs)[0]]
        from trl.trainer.utils import use_adapter

        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            return [fwd(self.model, ids, attn, keep, batch_size=bs)[0]]

    def _pm_terms(self, out: dict, old):
        """(ψ per completion [B], ∂Σ_tψ_t/∂log π(y_t|·) [B, T] or None, reference log-probs) on the
        local completions; log-probs of the policy that sampled them (``old``) and of each reference."""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        keep = out["completion_ids"].size(1)
        mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        bs = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        with torch.no_grad():
            if old is None:
                old = self._get_per_token_logps_and_entropies(self.model, ids, attn, keep, batch_size=bs)[0]
            refs = [r.double() for r in self._pm_reference_logps(ids, attn, keep, bs)]
        ref_t = None if not refs else (torch.stack(refs) if self.reg.multi_reference else refs[0])
        m = mask.double()
        with torch.enable_grad():
            lp = old.detach().double().requires_grad_(self.placement == "loss")
            psi_t = self.reg.token_reward(lp, ref_t, m)
            psi = psi_t.sum(-1)
            dpsi = torch.autograd.grad(psi.sum(), lp)[0] * m if self.placement == "loss" else None
        if ref_t is not None and not self.reg.multi_reference:
            self._pm_log_kl(old.detach().double(), ref_t, m)
        return psi.detach(), dpsi, ref_t

    #: the estimator of TRL's ``kl`` metric: GRPO logs k3 (its loss term), RLOO k1 (its reward term)
    _pm_kl_estimator = "k3"

    def _pm_log_kl(self, lp, ref, m):
        """TRL's ``kl`` metric, with TRL's meaning: the per-token mean, over the batch's completion tokens,
        of TRL's KL estimate between the policy and the reference (the theory layer's k3 / k1 terms)."""
        from prefmatch.theory.regularizers import kl

        k = -kl(beta=1.0, estimator=self._pm_kl_estimator).token_reward(lp, ref, m)
        totals = self.accelerator.reduce(torch.stack([k.sum(), m.sum()]).float(), reduction="sum")
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["kl"].append((totals[0] / totals[1].clamp(min=1.0)).item())

    def _pm_task_reward(self):
        rpf = self._pm_task_rewards
        unscorable = torch.isnan(rpf).all(dim=1)
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        return rewards, unscorable

    def _pm_check_mirror(self, trl_advantages, ours_on_task):
        """The replica of TRL's advantage computation (what ψ must join before) against TRL's own result on
        the task reward alone, at every step: a TRL release that changes it stops training here."""
        a, b = trl_advantages.to(ours_on_task.dtype), ours_on_task
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"trl {trl.__version__} computes {type(self).__mro__[2].__name__}'s advantages differently "
                               "from the replica prefmatch adds ψ through; this TRL version is not supported "
                               f"(supported: {SUPPORTED_TRL})")

    def _pm_local(self, x, out: dict):
        """This process's rows of a tensor gathered over the processes (``out``: its local batch)."""
        n_local, i = out["prompt_ids"].size(0), self.accelerator.process_index
        return x[i * n_local:(i + 1) * n_local]

    def _pm_regularized_advantages(self, out: dict, old):
        """ψ on the local completions (:meth:`_pm_terms`); the replica of TRL's advantages checked on the task
        reward; the advantages and their scale on task + ψ, over every process's completions.  Returns
        (advantages, scale, ∂ψ or None, reference log-probs, unscorable, G)."""
        psi, dpsi, ref_t = self._pm_terms(out, old)
        g = self.num_generations if self.model.training else self.num_generations_eval
        task, unscorable = self._pm_task_reward()
        self._pm_check_mirror(out["advantages"], self._pm_local(self._pm_advantages(task, g)[0], out))
        psi_all = gather(psi.to(task.dtype))
        adv, scale = self._pm_advantages(task + psi_all, g)
        self._pm_log(psi_all)
        return adv, scale, dpsi, ref_t, unscorable, g

    def _pm_log(self, psi_all):
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["regularizer/psi_mean"].append(torch.nanmean(psi_all.float()).item())


class PMGRPOTrainer(_Regularized, GRPOTrainer):
    r"""TRL's ``GRPOTrainer`` with its k3 KL loss replaced by a prefmatch regularizer.

    Objective: max_π E_x E_{y∼π}[Σ_i w_i r_i(x, y) + ψ(π(y|x), y)] = E_π[r] − β·D(π, π_ref) with
    ψ the regularizer's (β = ``args.beta``); its maximiser is ``reg.optimal_logp``.  Each
    completion's ψ(y) = Σ_t ψ_t (``reg.token_reward`` on the sampling policy's log-probs) is added
    to its task reward before the group normalization (A = (R − mean_g R)/s, s the group's or the
    batch's standard deviation + 1e-4 per ``scale_rewards``, 1 for ``"none"``); for the
    regularizers the ``grad.*`` checks require it of (f-divergences, multi_fkl, kl with k3) the
    pathwise part (G−1)/G · ∂(Σ_tψ_t)/∂log π(y_t|·) / s is added to token t's advantage, so TRL's
    clipped ratio loss and its ``loss_type`` aggregation carry both parts alike.

    Exact where :func:`check_trl_config` accepts the config, and refused with one line elsewhere:
    with ψ affine in log π (reward placement) r + ψ is constant on the optimum, so every advantage is
    0 there whatever ``scale_rewards`` divides by and whichever ``loss_type`` aggregates; but a group
    std keeps the update from shrinking near the optimum (the battery's cPM run stalled), so only
    ``scale_rewards="none"`` is accepted (TRL's default ``"group"`` is refused); with a pathwise term
    (loss placement) only ``loss_type="dr_grpo"`` (one constant normalizer) keeps the optimum the
    fixed point (the ``grad.grpo_scaling_and_loss_type`` check; the TRL battery).

    Arguments as ``GRPOTrainer``, plus ``regularizer`` (a registry name: kl, pm, cpm, maxent,
    fdiv, multi_rkl, multi_fkl, ...), ``regularizer_params`` (its parameters but β) and
    ``ref_model`` (one model or model id; a list of K for multi-reference regularizers; default: a
    frozen copy of the initial policy where one is needed).
    """

    _pm_config_class = GRPOConfig

    def _pm_check_args(self, args):
        if args.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("multi_objective_aggregation: must be 'sum_then_normalize' (ψ joins the summed reward "
                             "before the group normalization)")

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        """TRL's ``_generate_single_turn`` (its transformers ``generate`` path), with the sampled tokens'
        log-probs read from ``generate`` by a logits processor (:class:`_SampledTokenLogps`) and returned as
        the ``logprobs`` TRL's vLLM path returns: TRL pads them into ``sampling_per_token_logps``, which
        ψ is computed from (no second forward of the sampling policy).  The processor is passed to the
        model's ``generate`` for the duration of the call; without it (vLLM, continuous batching, a
        wrapper that hides the model) ψ falls back to a forward pass."""
        if self.use_vllm or getattr(self, "use_transformers_continuous_batching", False):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        from transformers import LogitsProcessorList

        model = self.accelerator.unwrap_model(self.model_wrapped)
        capture = _SampledTokenLogps(self.temperature)
        own = model.__dict__.get("generate")
        model.generate = functools.partial(model.generate, logits_processor=LogitsProcessorList([capture]))
        try:
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own
        if logprobs is None:
            logprobs = capture.per_completion(completion_ids)
        return completion_ids, logprobs

    def _pm_advantages(self, rewards, g):
        """TRL's GRPO advantages (``_generate_and_score_completions``, ``multi_objective_aggregation=
        "sum_then_normalize"``): A = (R − mean_g R)/s, s per ``scale_rewards`` (group or batch std + 1e-4; 1 for
        "none"), NaN (unscorable) → 0.  Checked against TRL's own result at every step (``_pm_check_mirror``)."""
        mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g)
        if self.scale_rewards == "none":
            scale = torch.ones_like(rewards)
        elif self.scale_rewards == "batch":
            scale = (nanstd(rewards) if rewards.numel() > 1 else torch.zeros(())).expand_as(rewards) + 1e-4
        elif g > 1:
            scale = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g) + 1e-4
        else:
            scale = torch.full_like(rewards, 1e-4)
        return torch.nan_to_num((rewards - mean) / scale, nan=0.0), scale

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        # the sampling policy's log-probs: from generation, else TRL's own (when it computes them), else a forward
        old = out.get("sampling_per_token_logps", out.get("old_per_token_logps"))
        adv, scale, dpsi, _, unscorable, g = self._pm_regularized_advantages(out, old)
        adv, scale = self._pm_local(adv, out), self._pm_local(scale, out)
        if dpsi is not None:
            keep = (~self._pm_local(unscorable, out)).to(adv.dtype)
            path = ((g - 1) / g) * dpsi.to(adv.dtype) / scale[:, None] * keep[:, None]
            adv = adv[:, None] + path
        out["advantages"] = adv
        return out


class PMRLOOTrainer(_Regularized, RLOOTrainer):
    r"""TRL's ``RLOOTrainer`` with its k1 KL reward replaced by a prefmatch regularizer.

    Objective: max_π E_x E_{y∼π}[Σ_i w_i r_i(x, y) + ψ(π(y|x), y)] = E_π[r] − β·D(π, π_ref)
    (β = ``args.beta``; maximiser ``reg.optimal_logp``).  ψ(y) = Σ_t ψ_t (``reg.token_reward``
    on the sampling policy) is added to the (clipped, per ``reward_clip_range``) task reward where
    TRL subtracts β·Σ_t(log π_old − log π_ref); the leave-one-out baseline and the optional
    ``normalize_advantages`` are TRL's.  For the regularizers that need it (f-divergences,
    multi_fkl, kl with k3) the pathwise part −Σ_tψ_t(log π_θ)/s, averaged over the batch like
    RLOO's per-sequence loss (s the advantages' normalization, 1 without it), is added to the
    loss.  The leave-one-out baseline is unbiased, so the expected update is a positive multiple
    of ∇J without normalization and with it up to the sample standard deviation.

    Arguments as ``RLOOTrainer``, plus ``regularizer``, ``regularizer_params`` and ``ref_model``
    as in :class:`PMGRPOTrainer`.
    """

    _pm_config_class = RLOOConfig

    _pm_kl_estimator = "k1"

    def _pm_advantages(self, rewards, g):
        """TRL's RLOO advantages (``_generate_and_score_completions``): the leave-one-out baseline over the
        scorable siblings, then the optional ``normalize_advantages``, NaN → 0.  Checked against TRL's own
        result at every step (``_pm_check_mirror``).  ``reward_clip_range`` is refused by check_trl_config."""
        grouped = rewards.view(-1, g)
        if g > 1:
            count = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
            baseline = (torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (count - 1)
            adv = rewards - baseline.view(-1)
        else:
            adv = torch.zeros_like(rewards)
        scale = torch.ones(())
        if self.normalize_advantages:
            scale = nanstd(adv) + 1e-4
            adv = (adv - torch.nanmean(adv)) / scale
        return torch.nan_to_num(adv, nan=0.0), scale

    def _generate_and_score_completions(self, inputs):
        out, old = self._pm_super_generate(inputs)  # RLOO always scores the sampling policy
        adv, scale, _, ref_t, _, _ = self._pm_regularized_advantages(out, old)
        out["advantages"] = self._pm_local(adv, out)
        if self.placement == "loss":
            b = out["prompt_ids"].size(0)
            if ref_t is not None:  # batch first, so that TRL's shuffling and splitting keep it aligned
                out["pm_ref_logps"] = ref_t.transpose(0, 1).contiguous() if self.reg.multi_reference else ref_t
            out["pm_inv_scale"] = torch.full((b,), 1.0 / float(scale), device=out["prompt_ids"].device)
        return out

    def _compute_loss(self, model, inputs):
        if self.placement != "loss":
            return super()._compute_loss(model, inputs)
        self._pm_stash = []
        try:
            loss = super()._compute_loss(model, inputs)
            lp = self._pm_stash[0]  # the policy's log-probs, with gradient
        finally:
            self._pm_stash = None
        ref = inputs.get("pm_ref_logps")
        if ref is not None and self.reg.multi_reference:
            ref = ref.transpose(0, 1)
        m = inputs["completion_mask"].to(lp.dtype)
        psi_t = self.reg.token_reward(lp, None if ref is None else ref.to(lp.dtype), m)
        return loss - (psi_t.sum(-1) * inputs["pm_inv_scale"].to(lp.dtype)).mean()
