"""Config fields shared by the trainers: every stage (:class:`CommonConfig`), and the ones that checkpoint and
resume (PPO, DPO: :class:`ResumableConfig`)."""
from __future__ import annotations

from dataclasses import dataclass

from prefmatch.llm.config import ConfigError, cfg_field
from prefmatch.theory.validate import SEED
from prefmatch.llm.data import SPLITS
from prefmatch.llm.train.loop import MIXED_PRECISION, REPORT_TO

#: learning-rate schedules (transformers' ``get_scheduler`` names, as DeepSpeed-Chat uses them)
LR_SCHEDULERS = ("constant", "linear", "cosine")


# Config fields are declarations, one line each (`name: type = cfg_field(default, help=..., range=...)`, as
# TRL's configs): the CLI option, its help, the range check and the YAML key all come from the line. The
# trainers' configs declare their own fields in the same shape on purpose.
@dataclass
class CommonConfig:
    data: str = cfg_field("", help="preference data: a .jsonl file of {prompt, chosen, rejected} or a "
                          "`datasets` directory written by save_to_disk")
    split: str = cfg_field("all", help="which part of the seeded SFT/RM/RL split to use (all = every record)",
                           choices=SPLITS)
    split_fractions: list[float] = cfg_field([0.2, 0.4, 0.4], help="SFT/RM/RL fractions of the split "
                                             "(PM paper Section 6: 20/40/40)", range="[0, 1]")
    split_seed: int = cfg_field(0, help="seed of the SFT/RM/RL split (the same in every stage)", range=SEED)
    out: str = cfg_field("out/run", help="output directory (model, metrics.jsonl, config.yaml)")
    seed: int = cfg_field(0, help="random seed (initialisation, data order, sampling)", range=SEED)
    lr: float = cfg_field(1e-5, help="learning rate (AdamW)", range="(0, 1000000]")
    lr_scheduler: str = cfg_field("constant", help="learning-rate schedule over the run's optimizer steps (PPO: its "
                                  "iterations), after warmup: constant, linear (to 0 at the last step) or cosine (to 0 "
                                  "at the last step; the PM paper's scripts)", choices=LR_SCHEDULERS)
    warmup_steps: int = cfg_field(0, help="steps of linear warmup from 0 to lr before the schedule (PPO: "
                                  "iterations)", range="[0, inf)")
    weight_decay: float = cfg_field(0.0, help="AdamW weight decay", range="[0, inf)")
    max_grad_norm: float = cfg_field(1.0, help="gradient clipping norm (0 = off)", range="[0, inf)")
    batch_size: int = cfg_field(8, help="global batch size per step (split evenly across processes)", range="[1, inf)")
    max_prompt_len: int = cfg_field(256, help="prompt tokens kept (truncated from the left)", range="[1, inf)")
    max_response_len: int = cfg_field(256, help="response tokens kept (SFT/RM) or generated (PPO max_new_tokens)", range="[1, inf)")
    lora: bool = cfg_field(False, help="train LoRA adapters (peft) instead of all weights; saved merged")
    lora_r: int = cfg_field(8, help="LoRA rank", range="[1, inf)")
    lora_alpha: int = cfg_field(16, help="LoRA alpha", range="(0, inf)")
    lora_target_modules: list[str] = cfg_field([], help="LoRA target modules (empty = all linear layers)")
    gradient_checkpointing: bool = cfg_field(False, help="recompute activations in backward (saves memory on "
                                             "large models, costs ~30% time)")
    mixed_precision: str = cfg_field("auto", help="auto = bf16 autocast on CUDA, fp32 on CPU",
                                     choices=MIXED_PRECISION)
    cpu: bool = cfg_field(False, help="force CPU even when CUDA is present")
    report_to: str = cfg_field("none", help="experiment trackers that receive every logged step: tensorboard (event "
                               "files in OUT/tensorboard), wandb, all (those installed), none",
                               choices=REPORT_TO)
    log_every: int = cfg_field(1, help="log metrics every N steps", range="[1, inf)")

    def check(self) -> None:
        if not self.data:
            raise ConfigError("data: required (a .jsonl file or a datasets directory)")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ConfigError(f"split_fractions: three fractions summing to 1, got {self.split_fractions}")


@dataclass
class ResumableConfig(CommonConfig):
    """The checkpoint fields of the trainers that resume (:mod:`prefmatch.llm.train.checkpoints`)."""

    save_every: int = cfg_field(0, help="checkpoint every N steps (0 = only the final model)", range="[0, inf)")
    keep_checkpoints: int = cfg_field(2, help="how many recent checkpoints to keep", range="[1, inf)")
