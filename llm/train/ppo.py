r"""PPO for RLHF with the theory layer's regularizers as per-token rewards.

One iteration (:meth:`PPOTrainer.step`) reads top to bottom like the algorithm:

1. **rollout**: sample a batch of prompts, generate responses with the policy;
2. **score**: per-token log-probs of the policy (and its values) and of the reference(s);
   the reward model's score of prompt + response;
3. **rewards**: r_t = ψ_t + 1[t = last]·r_θ, where ψ_t is the regularizer's per-token term
   (theory layer; see :mod:`prefmatch.llm.train.rewards`), β inside ψ (r_θ clipped to ±c only when
   ``reward_clip`` is set: the run then optimizes the clipped reward, and says so);
4. **advantages**: GAE(γ = 1, λ) on the value head's estimates, whitened with the mean and scale
   σ⁻¹ of the *earlier* rollouts (a running average: a scale drawn from the rollout itself is
   correlated with its large per-token terms and biases the update);
5. **update**: ``ppo_epochs`` passes of shuffled minibatches of the clipped policy loss plus
   ``vf_coef`` × the clipped value loss, plus — in ``loss`` placement — the pathwise regularizer
   term on the same scale (the same σ⁻¹).  Every loss is a sum over the minibatch's response
   tokens divided by one constant, ``mini_batch_size × max_response_len``: a token mean over the
   minibatch would weight each response by the lengths of the others that share its minibatch
   (Dr. GRPO's length bias) and move the fixed point off the optimum on responses of varying length.

Every configuration this trainer accepts reaches the theory's optimum on tabular policies: the
convergence battery (:mod:`prefmatch.llm.battery.ppo`) drives this same :meth:`PPOTrainer.step`
through :meth:`PPOTrainer.from_modules`; a configuration that cannot be made exact is refused
when the config is built (:meth:`PPOConfig.check_algorithm`).

Outputs in ``out``: ``metrics.jsonl`` (one line per step: reward, regularizer, KL to the
reference, entropy, clip fraction, approx KL, value loss, explained variance, tokens/s, …),
``config.yaml``, ``checkpoints/checkpoint-NNNNNN`` every ``save_every`` steps (written atomically)
and ``model`` (HF-format policy with ``value_head.safetensors``) at the end.
``resume`` continues from a checkpoint and gives the same weights as an uninterrupted run: all
randomness of step k is drawn from seeds derived from (seed, k, rank), and the optimizer state is
saved with the weights.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prefmatch.llm.train.common import ResumableConfig
from prefmatch.llm.config import (ConfigError, cfg_field, check_fields, check_trainer_regularizer_params,
                                  regularizer_params_help)
from prefmatch.llm.train.rewards import REGULARIZER_MODES
from prefmatch.llm.data import encode_prompt, load_split, pad_batch
from prefmatch.llm.train.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    logprobs_from_logits,
    masked_mean,
    batch_moments,
    fold_moments,
    whitening_from_moments,
)
from prefmatch.llm.models import (
    VALUE_HEAD_FILE,
    adapter_disabled_reference,
    check_finite_weights,
    disable_dropout,
    frozen_dtype,
    load_causal_lm,
    load_reward_model,
    model_inputs,
    policy_with_value_class,
    reward_scores,
)
from prefmatch.llm.train.rewards import (
    RegularizerConfigError,
    build_regularizer,
    pathwise_regularizer_loss,
    ppo_token_rewards,
    resolve_mode,
)
from prefmatch.llm.train.sft import (backward_accumulated, current_lr, make_optimizer, make_scheduler, setup_trainable)
from prefmatch.llm.tokenizer import load_tokenizer, same_tokenizer
from prefmatch.llm.train import loop
from prefmatch.llm.train.checkpoints import CheckpointedTrainer
from prefmatch.llm import sharding
from prefmatch.theory.regularizers import trainable_names

#: the β and sampling temperatures the trainers run with finite float32 numbers (tests/llm/test_faults.py
#: trains at both ends of each)
BETA_RANGE = "(0, 1e6]"
TEMPERATURE_RANGE = "[0.01, 1e6]"


def _regularizer_params_help() -> str:
    return regularizer_params_help(trainable_names(), "the trainer's cpm defaults to level: token")


@dataclass
class PPOConfig(ResumableConfig):
    policy: str = cfg_field("", help="initial policy directory (usually the SFT model)")
    reward_model: str = cfg_field("", help="reward model directory (from `prefmatch train rm`)")
    reward_fn: str = cfg_field("", help="instead of reward_model: a rule-based reward 'package.module:function' "
                               "called as f(prompt_ids [B,P] left-padded, response_ids [B,T], response_mask [B,T]) "
                               "-> scores [B]")
    ref: list[str] = cfg_field([], help="reference model directories (default: the initial policy); "
                               "several for multi_rkl/multi_fkl, in the order of regularizer_params.weights")
    split: str = cfg_field("rl", help="part of the SFT/RM/RL split whose prompts are used",
                           choices=("all", "sft", "rm", "rl"))
    out: str = cfg_field("out/ppo", help="output directory")
    regularizer: str = cfg_field("kl", help="regularizer ψ of the objective E[r + ψ] (the registry's trainable ones)",
                                 choices=trainable_names)
    regularizer_params: dict = cfg_field({}, help=_regularizer_params_help)
    regularizer_mode: str = cfg_field("auto", help="where ψ goes: reward (score-function part only; exact for ψ "
                                      "affine in log π), loss (also its pathwise gradient, where it is not zero in expectation; "
                                      "needed otherwise), "
                                      "auto (reward where exact, else loss)", choices=REGULARIZER_MODES)
    beta: float = cfg_field(0.1, help="β, the divergence's coefficient in E[r] − β·D for every regularizer "
                            "(PM: ψ = β(−log π + C1 + C2/π), optimum softmax(r/β)); at most 1e6: beyond, β times a "
                            "log-ratio squared in the value loss and the gradient norm leaves float32", range=BETA_RANGE)
    reward_clip: float = cfg_field(0.0, help="clip the task score to ±reward_clip (0 = off, the default: the theory's "
                                   "optimum is that of the reward given; the PM paper's authors use 5, and a run with "
                                   "a clip optimizes the clipped reward and says so)", range="[0, inf)")
    normalize_reward: bool = cfg_field(True, help="apply the reward model's saved normalisation, if any")
    steps: int = cfg_field(100, help="PPO iterations (rollout + update)", range="[1, inf)")
    mini_batch_size: int = cfg_field(4, help="minibatch size of the update (per process)", range="[1, inf)")
    gradient_accumulation_steps: int = cfg_field(1, help="micro-batches per minibatch (memory): their gradients add up "
                                                 "to the minibatch's exactly (every loss is over one constant "
                                                 "normalizer), one optimizer step per minibatch", range="[1, inf)")
    ppo_epochs: int = cfg_field(1, help="passes over each rollout batch", range="[1, inf)")
    gamma: float = cfg_field(1.0, help="discount γ; must be 1 (the RLHF objective is undiscounted: γ < 1 "
                             "discounts the last-token reward and changes the optimum)", range="(0, 1]")
    lam: float = cfg_field(0.95, help="GAE λ in [0, 1] (1 without a value model)", range="[0, 1]")
    cliprange: float = cfg_field(0.2, help="policy ratio clip ε", range="(0, inf)")
    cliprange_value: float = cfg_field(0.2, help="value clip", range="(0, inf)")
    vf_coef: float = cfg_field(0.1, help="weight of the value loss", range="[0, inf)")
    critic: str = cfg_field("shared", help="value model: shared (a value head on the policy's last hidden state, as "
                            "TRL's AutoModelForCausalLMWithValueHead) or reward_model (a separate critic network "
                            "initialised from the reward model, as DeepSpeed-Chat and the PM paper's scripts; "
                            "trained with the policy's optimizer and lr)", choices=("shared", "reward_model"))
    whiten_advantages: bool = cfg_field(True, help="normalise advantages to mean 0, std 1 with the running mean and "
                                        "std of the earlier rollouts (the first rollout: its own); the pathwise "
                                        "regularizer term is divided by the same std")
    whiten_decay: float = cfg_field(0.9, help="decay of the running advantage moments used for whitening",
                                    range="[0, 1)")
    temperature: float = cfg_field(1.0, help="sampling temperature: the trained policy is softmax(logits/T); the "
                                   "references are used at temperature 1; from 0.01 (below, logits/T and the gradients, which scale like "
                                   "1/T, leave float32 on ordinary logits) to 1e6", range=TEMPERATURE_RANGE)
    top_k: int = cfg_field(0, help="top-k sampling; must be 0 (PPO's ratio and ψ need samples from the policy)", range="[0, inf)")
    top_p: float = cfg_field(1.0, help="nucleus sampling; must be 1 (PPO's ratio and ψ need samples from the policy) "
                             "unless nucleus_ablation", range="(0, 1]")
    nucleus_ablation: bool = cfg_field(False, help="allow top_p < 1: responses are sampled from the nucleus while "
                                       "PPO's ratio and ψ use the full policy, as the PM paper's authors' PPO does "
                                       "(off-policy: an ablation, not the theory's algorithm)")
    min_new_tokens: int = cfg_field(0, help="minimum generated tokens; must be 0 (suppressing EOS samples from "
                                    "another distribution than the one in the ratio and ψ)", range="[0, inf)")

    def check(self) -> None:
        super().check()
        if not self.policy:
            raise ConfigError("policy: required (a local model directory, e.g. the SFT model)")
        if bool(self.reward_model) == bool(self.reward_fn):
            raise ConfigError("reward_model, reward_fn: give exactly one (a directory written by `prefmatch train rm`, "
                              "or a rule 'package.module:function')")
        if self.reward_fn:
            load_reward_fn(self.reward_fn)  # importable before any work starts
        if self.critic == "reward_model" and not self.reward_model:
            raise ConfigError("critic: reward_model needs a reward_model directory to initialise the critic from; "
                              "with reward_fn use critic: shared")
        self.check_algorithm()

    def check_algorithm(self, has_value: bool = True):
        """Refuse what cannot reach the theory's optimum; returns ``(regularizer, placement)``."""
        check_fields(self)  # declared ranges (also for a config built in Python, as from_modules takes)
        check_trainer_regularizer_params(self.regularizer, self.regularizer_params)
        full_policy = "PPO's ratio and ψ are those of the full policy"
        rules = [  # (field, holds, what it must be and why)
            ("gamma", self.gamma == 1, "1 (the RLHF objective is undiscounted)"),
            ("lam", 0 <= self.lam <= 1, "in [0, 1]"),
            ("lam", has_value or self.lam == 1, "1 without a value model (the advantage is then the return-to-go)"),
            ("top_k", self.top_k == 0, f"0 ({full_policy})"),
            ("top_p", self.top_p == 1 or self.nucleus_ablation, f"1 ({full_policy}; nucleus_ablation allows less)"),
            ("mini_batch_size", self.mini_batch_size <= self.batch_size,
             f"at most batch_size = {self.batch_size} (a minibatch is a part of the rollout batch)"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps <= self.mini_batch_size,
             f"at most mini_batch_size = {self.mini_batch_size} (a micro-batch holds at least one response)"),
            ("min_new_tokens", self.min_new_tokens == 0,
             "0 (suppressing EOS samples from another distribution than the one in PPO's ratio and ψ)"),
        ]
        for name, holds, must in rules:
            if not holds:
                raise ConfigError(f"{name}: must be {must}, got {getattr(self, name)!r}")
        try:
            reg = build_regularizer(self.regularizer, self.regularizer_params, self.beta)
            placement = resolve_mode(reg, self.regularizer_mode)
            if getattr(reg, "estimator", None) == "k3":
                raise RegularizerConfigError(
                    "regularizer_params.estimator: must be k1 for PPO, got 'k3' (k3's terms e^{log π_ref − log π} have "
                    "unbounded variance where the optimum is far from the reference, so PPO stalls short of it: see the "
                    "battery page; k1 optimizes the same objective exactly, as a reward)")
            # measured by the convergence battery: fixed points off the optimum that more steps or a smaller
            # lr did not move (see the battery page)
            if reg.name == "multi_fkl" and self.mini_batch_size < 8:
                raise ConfigError(
                    f"mini_batch_size: must be at least 8 with multi_fkl, got {self.mini_batch_size} (its pathwise "
                    "term weights each response by π̄/π, unbounded; with minibatches of 1 the convergence battery's "
                    "runs stalled off the optimum, at twice the steps or half the lr too)")
            if reg.name == "fdiv" and getattr(reg, "f", None) == "js" and not (has_value or self.whiten_advantages):
                raise ConfigError(
                    "whiten_advantages: must be true for fdiv with f=js when there is no value model, got False (with "
                    "no baseline at all the convergence battery's run stalled off the optimum, at four times the "
                    "steps too)")
            return reg, placement
        except RegularizerConfigError as e:
            raise ConfigError(str(e)) from None


# ----------------------------------------------------------------------------- the trainer

class PPOTrainer(CheckpointedTrainer):
    """Holds models, optimizer and data of a PPO run; :meth:`step` is one PPO iteration.

    ``PPOTrainer(cfg)`` loads local HF directories; :meth:`from_modules` runs the same
    :meth:`step` on any torch modules that follow the HF call convention.
    """
    def __init__(self, cfg: PPOConfig, quiet: bool = False):

        reg, placement = cfg.check_algorithm()
        if cfg.top_p != 1 and not quiet:  # allowed only with nucleus_ablation: say that it is outside the battery
            print(f"ppo: top_p={cfg.top_p:g} with nucleus_ablation samples off-policy; the convergence battery does "
                  "not cover it and the run is not expected to reach the theory's optimum", file=sys.stderr)
        n_refs = len(reg.weights) if reg.multi_reference else 1
        ref_dirs = list(cfg.ref) or [cfg.policy]
        if len(ref_dirs) != n_refs:
            raise ConfigError(f"ref: {cfg.regularizer} needs {n_refs} reference model(s) "
                              f"(one per weight), got {len(ref_dirs)}")
        records = load_split(cfg.data, cfg.split, cfg.split_fractions, cfg.split_seed, keys=("prompt",),
                             tokenizer=load_tokenizer(cfg.policy, what="policy"))
        reward_fn = load_reward_fn(cfg.reward_fn) if cfg.reward_fn else None

        acc = loop.make_accelerator(cfg.mixed_precision, cfg.cpu, cfg.report_to, cfg.out)
        loop.seed_everything(cfg.seed)
        tok = load_tokenizer(cfg.policy, what="policy")
        tok.padding_side = "left"
        ref_names = [f"ref {i + 1} of {len(ref_dirs)}" if len(ref_dirs) > 1 else "ref" for i in range(len(ref_dirs))]
        others = ([("reward_model", cfg.reward_model)] if cfg.reward_model else []) + list(zip(ref_names, ref_dirs))
        for what, d in others:
            if not same_tokenizer(tok, load_tokenizer(d, what=what)):
                raise ConfigError(f"{what}: the tokenizer in {d} does not match the policy's ({cfg.policy}); "
                                  "train all models from the same base model")
        frozen = frozen_dtype(acc.mixed_precision)  # the compute dtype; trainable weights load in float32
        if cfg.critic == "reward_model":  # a separate critic, initialised from the reward model
            from prefmatch.llm.critic import build_policy_with_critic

            policy = build_policy_with_critic(load_causal_lm(cfg.policy), cfg.reward_model)
        else:
            policy = policy_with_value_class().from_pretrained(cfg.policy)
        disable_dropout(policy)
        if cfg.lora or cfg.gradient_checkpointing:
            policy.lm = setup_trainable(policy.lm, cfg, "CAUSAL_LM")
        # with LoRA, a reference that is the initial policy is the policy with its adapter disabled
        # (no second copy of the weights); other references are loaded
        refs = [adapter_disabled_reference(policy.lm) if cfg.lora and Path(d).resolve() == Path(cfg.policy).resolve()
                else check_finite_weights(load_causal_lm(d, dtype=frozen, what="ref"), f"{name} ({d})").to(acc.device).eval()
                for name, d in zip(ref_names, ref_dirs)]
        self.rm = None
        if reward_fn is None:
            self.rm = load_reward_model(cfg.reward_model, dtype=frozen, what="reward_model").to(acc.device).eval()
        self.tok = tok
        prompts = [encode_prompt(tok, r["prompt"], cfg.max_prompt_len) for r in records]
        self._setup(cfg, quiet, acc, reg, placement, policy, refs, reward_fn, prompts,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    @classmethod
    def from_modules(cls, config: PPOConfig, *, policy, reference, reward_fn, prompts, value=None,
                     eos_token_id: int | None = None, pad_token_id: int = 0, quiet: bool = True) -> PPOTrainer:
        """The trainer on user modules, with the same :meth:`step`.

        ``policy``/``reference``: torch modules called as ``m(input_ids=..., attention_mask=...)``
        returning an object with ``.logits`` [B, T, V]; ``reference`` may be a list (one per
        weight of a multi-reference regularizer).  ``reward_fn(prompt_ids, response_ids,
        response_mask)`` returns scores [B] (prompt_ids left-padded with ``pad_token_id``).
        ``prompts``: token-id lists.  ``value`` (optional) returns [B, T]; without one the
        advantage is the return-to-go (``lam`` must be 1).  A policy without ``.generate`` is
        sampled token by token from its logits.  ``eos_token_id`` None: every response has
        ``max_response_len`` tokens.
        """
        from torch import nn

        reg, placement = config.check_algorithm(has_value=value is not None)
        refs = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        n_refs = len(reg.weights) if reg.multi_reference else 1
        if len(refs) != n_refs:
            raise ConfigError(f"reference: {config.regularizer} needs {n_refs} reference module(s), got {len(refs)}")
        if config.lora or config.gradient_checkpointing:
            raise ConfigError("lora, gradient_checkpointing: from_modules trains the modules as given")
        prompts = [[int(t) for t in p] for p in prompts]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ConfigError("prompts: a non-empty list of non-empty token-id lists")
        self = cls.__new__(cls)
        self.tok, self.rm = None, None
        acc = loop.make_accelerator(config.mixed_precision, config.cpu)
        loop.seed_everything(config.seed)
        model = _actor_critic(policy, value)
        for r in refs:
            if isinstance(r, nn.Module):
                r.requires_grad_(False)
        self._setup(config, quiet, acc, reg, placement, model, refs, reward_fn, prompts,
                    pad_token_id=pad_token_id, eos_token_id=eos_token_id)
        return self

    def _setup(self, cfg, quiet, acc, reg, placement, model, refs, reward_fn, prompts, *, pad_token_id, eos_token_id):

        self.cfg, self.quiet, self.acc = cfg, quiet, acc
        self.reg, self.placement = reg, placement
        self.prompts = prompts
        self.reward_fn = reward_fn
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id
        self.refs = refs
        for m in self.refs + ([self.rm] if self.rm is not None else []):
            m.requires_grad_(False)
        optimizer = make_optimizer(model, cfg)
        self.scheduler = make_scheduler(optimizer, cfg, cfg.steps)  # stepped once per PPO iteration
        sharding.configure_deepspeed(acc, micro_batch=cfg.mini_batch_size, max_grad_norm=cfg.max_grad_norm)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        if sharding.is_sharded(acc):  # FSDP initialises from the first forward: make it the root's
            sharding.initialize_root(self.model, acc.device)
        self.timer = loop.Timer(cuda=acc.device.type == "cuda")
        self.step_count = 0
        self.adv_moments = None  # running (mean, second moment, weight) of the advantages: losses.fold_moments
        self.last_checkpoint: str | None = None
        self.out = Path(cfg.out)
        if cfg.reward_clip and not quiet:
            print(f"reward_clip: {cfg.reward_clip:g} — this run optimizes the clipped reward clip(r, ±{cfg.reward_clip:g}), "
                  "whose optimum differs from r's wherever |r| exceeds it", file=sys.stderr)

    @property
    def policy(self):
        """The unwrapped actor-critic (no DDP wrapper)."""
        return self.acc.unwrap_model(self.model)

    # ------------------------------------------------------------------ helpers of one step
    def sample_prompts(self, step: int) -> list[list[int]]:
        """This process's prompt token ids of iteration ``step``: drawn from a seed of (seed, step) only."""
        import numpy as np

        rng = np.random.default_rng(loop.derived_seed(self.cfg.seed, step, 0))
        n = len(self.prompts)
        B = self.cfg.batch_size
        idx = rng.choice(n, size=B, replace=n < B).tolist()
        return [self.prompts[i] for i in loop.rank_slice(idx, self.acc)]

    def generate(self, prompts: list[list[int]]):
        """(query_ids, query_mask, response_ids, response_mask); response_mask covers tokens up to EOS.

        Samples from softmax(logits/temperature), the distribution PPO's ratio and ψ use: HF
        ``generate`` with an explicit generation config (no model defaults such as top-k 50), or,
        for a module without ``.generate``, token by token from its logits.
        """
        import torch

        cfg = self.cfg
        query, qmask = pad_batch(prompts, self.pad_token_id, side="left")
        query, qmask = query.to(self.acc.device), qmask.to(self.acc.device)
        lm = self.policy.lm
        with torch.no_grad(), self.acc.autocast():
            if hasattr(lm, "generate"):
                from transformers import GenerationConfig

                gen = GenerationConfig(do_sample=True, max_new_tokens=cfg.max_response_len, min_new_tokens=0,
                                       temperature=cfg.temperature, top_k=0, top_p=cfg.top_p,
                                       pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_id)
                seq = lm.generate(input_ids=query, attention_mask=qmask, generation_config=gen,
                                  synced_gpus=sharding.partitioned_parameters(self.acc))  # sharded: every rank steps together
                response = seq[:, query.shape[1]:]
            else:
                response = self._sample_tokens(lm, query, qmask)
        if response.shape[1] == 0:
            raise ConfigError("max_response_len: generation produced no tokens")
        if self.eos_token_id is None:
            rmask = torch.ones_like(response)
        else:
            is_eos = response == self.eos_token_id
            after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
            rmask = (~after_eos).long()
        response = torch.where(rmask.bool(), response, torch.full_like(response, self.pad_token_id))
        return query, qmask, response, rmask

    def _sample_tokens(self, lm, query, qmask):
        import torch

        if self.cfg.top_p != 1:
            raise ConfigError("top_p: nucleus sampling needs a transformers model (one with .generate)")
        ids, mask, out = query, qmask, []
        for _ in range(self.cfg.max_response_len):
            logits = lm(**model_inputs(lm, ids, mask)).logits[:, -1].float() / self.cfg.temperature
            nxt = torch.multinomial(torch.softmax(logits, -1), 1)
            out.append(nxt)
            ids = torch.cat([ids, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            if self.eos_token_id is not None and bool((torch.cat(out, 1) == self.eos_token_id).any(-1).all()):
                break
        return torch.cat(out, 1)

    def response_logprobs(self, model, input_ids, attn, P: int, with_values: bool = False):
        """log π(y_t|·) over the response positions (and the values before each token).

        ``with_values`` marks the policy (actor-critic): its logits are divided by the sampling
        temperature, since the trained policy is the one sampled from, softmax(logits/T).  A
        reference model is used as it is (temperature 1): π_ref is the reference model's own
        distribution, whatever temperature the policy samples at.
        """
        if with_values:
            logits, values = model(input_ids, attn)
        else:
            kw = model_inputs(model, input_ids, attn)
            if hasattr(model, "config"):  # a transformers model: no KV cache for teacher forcing
                kw["use_cache"] = False
            logits = model(**kw).logits
        logits = logits[:, P - 1:-1]
        if with_values and self.cfg.temperature != 1.0:
            logits = logits / self.cfg.temperature
        logp = logprobs_from_logits(logits, input_ids[:, P:])
        if with_values:
            return logp, values[:, P - 1:-1].float(), logits
        return logp

    def scores(self, query, qmask, response, rmask):
        """Task reward of each row [B]: the reward model's score, or the rule ``reward_fn``'s."""
        import torch

        if self.rm is not None:

            return reward_scores(self.rm, torch.cat([query, response], 1), torch.cat([qmask, rmask], 1),
                                 normalize=self.cfg.normalize_reward)
        s = torch.as_tensor(self.reward_fn(query, response, rmask), device=response.device).float()
        if s.shape != (response.shape[0],):
            raise ConfigError(f"reward_fn: must return one score per response, shape [{response.shape[0]}], "
                              f"got {list(s.shape)}")
        if not bool(torch.isfinite(s).all()):
            raise ConfigError("reward_fn: returned a non-finite score (NaN or inf)")
        return s

    def whiten(self, advantages, rmask):
        """``(whitened advantages, 1/σ)`` with the running moments of the earlier rollouts (the first
        rollout: its own); then this rollout's moments (averaged over processes) join them."""
        fresh = loop.mean_over_processes(self.acc, dict(zip("mvw", batch_moments(advantages, rmask))))
        fresh = (fresh["m"], fresh["v"], 1.0)
        mean, scale = whitening_from_moments(self.adv_moments or fresh)
        self.adv_moments = fold_moments(self.adv_moments, fresh, self.cfg.whiten_decay)
        return (advantages - mean) * scale * rmask.to(advantages.dtype), scale

    # ------------------------------------------------------------------ one PPO iteration
    def step(self) -> dict:
        """One PPO iteration: rollout → rewards (task + ψ) → GAE → clipped updates. Returns metrics."""
        import numpy as np
        import torch

        cfg, acc, timer = self.cfg, self.acc, self.timer
        step = self.step_count + 1
        t0 = time.perf_counter()
        torch.manual_seed(loop.derived_seed(cfg.seed, step, acc.process_index + 1))

        # 1. rollout
        prompts = self.sample_prompts(step)
        self.model.eval()
        with timer.section("generate"):
            query, qmask, response, rmask = self.generate(prompts)
        P = query.shape[1]
        input_ids = torch.cat([query, response], 1)
        attn = torch.cat([qmask, rmask], 1)

        # 2. score: policy/ref log-probs, values, task reward
        with torch.no_grad(), acc.autocast():
            with timer.section("forward"):
                old_logp, old_values, logits = self.response_logprobs(self.policy, input_ids, attn, P,
                                                                      with_values=True)
            entropy = masked_mean(entropy_from_logits(logits), rmask)
            del logits
            with timer.section("forward"):
                ref_logp = torch.stack([self.response_logprobs(r, input_ids, attn, P) for r in self.refs])
                score = self.scores(query, qmask, response, rmask)
        ref_for_reg = ref_logp if self.reg.multi_reference else ref_logp[0]
        for what, lp in (("policy", old_logp), ("reference", ref_logp)):
            if not loop.all_finite(acc, torch.where(rmask > 0, lp, 0.0)):
                raise loop.TrainingError(
                    f"non-finite {what} log-probabilities (logits) at step {step}; stopped before the update; "
                    + (f"last checkpoint {self.last_checkpoint} left untouched" if self.last_checkpoint
                       else "no checkpoint written"))

        # 3. rewards: task score at the last token + the regularizer's per-token ψ_t (theory layer)
        rewards, psi_t = ppo_token_rewards(self.reg, score, old_logp, ref_for_reg, rmask,
                                           reward_clip=cfg.reward_clip or None)

        # 4. advantages; whitening (moments of the earlier rollouts) divides the score-function part
        #    by σ, the pathwise part follows
        advantages, returns = gae(rewards, old_values, rmask, cfg.gamma, cfg.lam)
        adv_scale = 1.0
        if cfg.whiten_advantages:
            advantages, adv_scale = self.whiten(advantages, rmask)
        normalizer = cfg.mini_batch_size * cfg.max_response_len  # one constant: no length bias

        # 5. update: ppo_epochs × shuffled minibatches
        self.model.train()
        B = input_ids.shape[0]
        rng = np.random.default_rng(loop.derived_seed(cfg.seed, step, 10_000 + acc.process_index))
        stats: dict[str, list] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": []}
        for _ in range(cfg.ppo_epochs):
            perm = rng.permutation(B)
            for start in range(0, B, cfg.mini_batch_size):
                rows = perm[start:start + cfg.mini_batch_size]
                # gradient accumulation: the minibatch in micro-batches, each loss over the same constant
                # normalizer, so their gradients sum to the minibatch's exactly
                micro = [torch.as_tensor(r, device=input_ids.device)
                         for r in np.array_split(rows, min(cfg.gradient_accumulation_steps, len(rows)))]

                def micro_loss(mb):
                    with acc.autocast():
                        logp, values, _ = self.response_logprobs(self.model, input_ids[mb], attn[mb], P,
                                                                  with_values=True)
                        pg_loss, clipfrac, approx_kl = clipped_policy_loss(
                            logp, old_logp[mb], advantages[mb], rmask[mb], cfg.cliprange, normalizer=normalizer)
                        vf_loss = clipped_value_loss(values, old_values[mb], returns[mb], rmask[mb],
                                                     cfg.cliprange_value, normalizer=normalizer)
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        if self.placement == "loss":  # same normalizer as the PPO loss, same σ⁻¹
                            ref_mb = ref_for_reg[:, mb] if self.reg.multi_reference else ref_for_reg[mb]
                            loss = loss + pathwise_regularizer_loss(self.reg, logp, ref_mb, rmask[mb],
                                                                    normalizer=normalizer, scale=adv_scale)
                    loop.check_finite(acc, step, self.last_checkpoint, policy_loss=pg_loss, value_loss=vf_loss,
                                          loss=loss)
                    return loss, (pg_loss, vf_loss, clipfrac, approx_kl)

                with timer.section("update forward+backward"):
                    parts = backward_accumulated(acc, self.model, [(lambda mb=mb: micro_loss(mb), 1.0) for mb in micro])
                with timer.section("optimizer"):
                    loop.clip_and_check_grads(acc, self.model, cfg.max_grad_norm, step, self.last_checkpoint)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    loop.check_weights_finite(acc, self.model, step, self.last_checkpoint)
                # per minibatch: the losses add over micro-batches, the token means average
                for j, k in enumerate(stats):
                    vals = [float(m[j].detach()) for _, m in parts]
                    stats[k].append(sum(vals) if j < 2 else float(np.mean(vals)))

        self.step_count = step
        lr = current_lr(self.optimizer)  # the lr of this iteration's updates
        self.scheduler.step()  # lr_scheduler: once per iteration, after its optimizer steps
        elapsed = time.perf_counter() - t0
        times = timer.reset()
        n_tokens = float(rmask.sum())
        m = rmask.float()
        def seq_kl_k3(ref_lp):  # Σ_t e^{q−l} − 1 − (q − l): ≥ 0, unbiased for the sequence KL (metrics.token_kl_k3)
            d = ((ref_lp - old_logp) * m).clamp(max=50.0)
            return ((torch.expm1(d) - d) * m).sum(-1)

        seq_kl = seq_kl_k3(ref_logp[0])
        seq_kl_k1 = ((old_logp - ref_logp[0]) * m).sum(-1)
        metrics = {
            "reward": float(score.float().mean()),
            "regularizer": float((psi_t * m).sum(-1).mean()),
            "kl": float(seq_kl.mean()),
            "kl_k1": float(seq_kl_k1.mean()),
            "entropy": float(entropy),
            "response_length": float(m.sum(-1).mean()),
            "clipfrac": float(np.mean(stats["clipfrac"])),
            "approx_kl": float(np.mean(stats["approx_kl"])),
            "policy_loss": float(np.mean(stats["policy_loss"])),
            "value_loss": float(np.mean(stats["value_loss"])),
            "explained_variance": float(explained_variance(old_values, returns, rmask)),
            "return": float((rewards * m).sum(-1).mean()),
        }
        for i in range(1, len(self.refs)):
            metrics[f"kl_ref{i}"] = float(seq_kl_k3(ref_logp[i]).mean())

        metrics = loop.mean_over_processes(acc, metrics)
        metrics["tokens_per_s"] = n_tokens * acc.num_processes / elapsed
        metrics["step_time_s"] = elapsed
        metrics["model_time_fraction"] = sum(times.values()) / elapsed
        metrics["lr"] = lr
        return {"step": step, **metrics}

    def tok_for_saving(self):
        import copy

        tok = copy.copy(self.tok)
        tok.padding_side = "right"
        return tok

    # ------------------------------------------------------------------ checkpoints (CheckpointedTrainer)
    def _save_policy(self, model, folder: Path) -> None:
        model.save_pretrained(folder, self.tok_for_saving())  # the LM with its value head or critic

    def _load_full_policy(self, folder: Path) -> None:
        self.policy.lm.load_state_dict(load_causal_lm(folder, what="--resume checkpoint").state_dict())

    def _load_heads(self, folder: Path) -> None:
        from safetensors.torch import load_file

        if self.cfg.critic == "reward_model":
            from prefmatch.llm.critic import CRITIC_DIR

            self.policy.critic.load_state_dict(load_reward_model(folder / CRITIC_DIR, what="critic").state_dict())
        else:
            self.policy.value_head.load_state_dict(load_file(str(folder / VALUE_HEAD_FILE)))

    def _save_extra(self, folder: Path) -> None:
        (folder / "whitening.json").write_text(json.dumps({"adv_moments": self.adv_moments}))

    def _load_extra(self, folder: Path) -> None:
        """The running advantage moments saved with a checkpoint (none in checkpoints from before them)."""
        f = folder / "whitening.json"
        moments = json.loads(f.read_text())["adv_moments"] if f.is_file() else None
        self.adv_moments = tuple(moments) if moments is not None else None


def resolve_checkpoint(path: str | Path, report=None) -> Path:
    """A valid checkpoint directory from itself, a ``checkpoints`` directory or a run's ``out``
    directory (:func:`prefmatch.llm.train.loop.find_checkpoint`: a missing, dangling or damaged
    ``latest`` falls back to the newest valid checkpoint, said in one line)."""
    return loop.find_checkpoint(path, report=report)


def train_ppo(cfg: PPOConfig, quiet: bool = False, resume: str | None = None, allow_changes: bool = False) -> dict:
    """Run PPO (optionally resuming); returns ``{"out", "steps", "final_metrics", ...}``.

    A resume refuses changed data or objective fields (unless ``allow_changes``) and a ``steps``
    below the checkpoint's; resuming a finished run does nothing and says so."""
    import dataclasses

    ckpt = resolve_checkpoint(resume) if resume else None
    if ckpt is not None:
        loop.check_fingerprint(ckpt, dataclasses.asdict(cfg), allow_changes)
        step = loop.resume_step(ckpt)
        if loop.check_resume_steps(ckpt, step, cfg.steps, Path(cfg.out)):
            return loop.finished_run_result(ckpt, step, Path(cfg.out))
    trainer = PPOTrainer(cfg, quiet=quiet)
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
    log, last = trainer.run_steps(cfg, ckpt, total=cfg.steps, run_name=f"ppo[{cfg.regularizer}]", quiet=quiet,
                                  postfix=lambda m: {"reward": f"{m['reward']:.3f}", "kl": f"{m['kl']:.3f}",
                                                     "psi": f"{m['regularizer']:.3f}"})
    log.close()
    out = trainer.save_final()
    return {"out": out, "steps": trainer.step_count, "final_metrics": last,
            "last_checkpoint": trainer.last_checkpoint}


def load_reward_fn(spec: str):
    """The function named by ``'package.module:function'`` (ConfigError naming reward_fn otherwise)."""
    import importlib

    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"reward_fn: expected 'package.module:function', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"reward_fn: cannot import {mod_name!r} ({e})") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ConfigError(f"reward_fn: {mod_name!r} has no function {attr!r}")
    return fn


@functools.cache
def _actor_critic_class():
    import torch
    from torch import nn

    class ActorCritic(nn.Module):
        def __init__(self, lm, value):
            super().__init__()
            self.lm, self.value = lm, value

        def forward(self, input_ids, attention_mask):
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits
            if self.value is None:
                return logits, torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
            return logits, self.value(input_ids=input_ids, attention_mask=attention_mask)

    return ActorCritic


def _actor_critic(policy, value):
    """Actor-critic from user modules: ``forward(ids, mask) -> (logits, values)`` (values 0 without one)."""
    return _actor_critic_class()(policy, value)
