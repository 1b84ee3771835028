"""A separate critic for PPO, initialised from the reward model (DeepSpeed-Chat's, the PM paper's).

:class:`PolicyWithCritic` has the call convention of :class:`prefmatch.llm.models.PolicyWithValue`
— ``forward(input_ids, attention_mask) -> (logits [B,T,V], values [B,T])`` — so that
:meth:`prefmatch.llm.train.ppo.PPOTrainer.step` trains it unchanged: ``values[:, t]`` is the critic's
scalar head on its own last hidden state at position t, where the shared-trunk actor-critic reads
a value head on the policy's.  The critic is a trainable copy of the reward model
(``AutoModelForSequenceClassification``, backbone and score head), so its value at the last token
starts at the reward model's score.  ``prefmatch train ppo --critic reward_model`` selects it.

The per-position head outputs are captured by a forward hook on the score head during the
critic's own forward (transformers' sequence classifiers return only the pooled score), so the
critic runs as one module, as FSDP2 wraps it.  Saved as the policy's HF directory plus the critic
in ``critic/`` (a reward-model directory).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

#: where the critic is saved inside the policy directory
CRITIC_DIR = "critic"


@functools.cache
def policy_with_critic_class():
    """The :class:`PolicyWithCritic` class (built on first use: this module imports without torch)."""
    from torch import nn

    from prefmatch.llm.models import _backbone_and_head, model_inputs, save_model

    class ValueNet(nn.Module):
        """The critic network's per-position values [B, T]: the reward model's forward, with its score
        head's output at every position captured by a hook.  A module of its own, so that under FSDP2
        it is a sharding unit whose output carries the values (FSDP unshards a unit for backward
        from its outputs' gradients)."""

        def __init__(self, critic):
            super().__init__()
            self.critic = critic
            self._captured = None
            self._hook = None

        def _capture(self, module, inputs, output):
            self._captured = output

        def forward(self, input_ids, attention_mask):
            if self._hook is None:
                # registered at the first call, after an engine's own hooks (DeepSpeed ZeRO-3 wraps a
                # module's output so that backward gathers its parameters): the last hook sees that output
                self._hook = _backbone_and_head(self.critic)[1].register_forward_hook(self._capture)
            self._captured = None
            self.critic(**model_inputs(self.critic, input_ids, attention_mask), use_cache=False)
            values, self._captured = self._captured, None
            if values is None or values.dim() != 3:
                raise TypeError(f"{type(self.critic).__name__}: its score head did not run on every position")
            return values.squeeze(-1).float()

    class PolicyWithCritic(nn.Module):
        """Actor ``lm`` (causal LM) and a separate ``critic`` (a reward-model-shaped network)."""

        def __init__(self, lm, critic):
            super().__init__()
            self.lm = lm
            self.value_net = ValueNet(critic)

        @property
        def critic(self):
            return self.value_net.critic

        def forward(self, input_ids, attention_mask):
            out = self.lm(**model_inputs(self.lm, input_ids, attention_mask), use_cache=False)
            return out.logits, self.value_net(input_ids, attention_mask)

        def generate(self, *args, **kwargs):
            return self.lm.generate(*args, **kwargs)

        @property
        def _no_split_modules(self):  # FSDP's auto-wrap units: both networks' blocks, the LM, the value net
            return [*(getattr(self.lm, "_no_split_modules", None) or []), type(self.lm).__name__,
                    *(getattr(self.critic, "_no_split_modules", None) or []), "ValueNet"]

        def save_pretrained(self, out_dir, tokenizer=None):
            save_model(self.lm, out_dir, tokenizer)
            save_model(self.critic, Path(out_dir) / CRITIC_DIR, tokenizer)

    return PolicyWithCritic


def build_policy_with_critic(lm, reward_model_dir, what: str = "critic"):
    """The actor ``lm`` with a trainable critic loaded (float32) from ``reward_model_dir``."""
    from prefmatch.llm.models import disable_dropout, load_reward_model

    critic = load_reward_model(reward_model_dir, what=what)
    critic.reward_normalization = None  # values are learned: no score normalisation applies
    disable_dropout(critic)
    return policy_with_critic_class()(lm, critic)


def __getattr__(name: str) -> Any:  # PEP 562
    if name == "PolicyWithCritic":
        return policy_with_critic_class()
    raise AttributeError(name)
