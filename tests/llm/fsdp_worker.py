"""Worker of the sharded-training tests (FSDP2, DeepSpeed), launched by ``accelerate launch --config_file CONFIG``:

    fsdp_worker.py DATA BASE OUT [STAGES]

runs SFT (from BASE), the reward model (from BASE; ``rm_lora``: with LoRA) and PPO (SFT policy, that reward model) for a
few steps each under whatever the launcher configured (FSDP2 or plain data parallel), with
``log_every: 1`` so every SFT/RM step's losses land in its ``metrics.jsonl``, and writes what
the test checks to ``OUT/rank{R}.json``: the distributed type, whether the PPO parameters were
sharded (DTensor), how many elements this rank holds, and the PPO steps' metrics.
"""
import json
import sys
from pathlib import Path

SFT = dict(lr=3e-3, epochs=1, steps=3, batch_size=8, max_prompt_len=32, max_response_len=8, log_every=1, seed=0)
RM = dict(lr=3e-3, epochs=1, steps=3, batch_size=8, max_prompt_len=32, max_response_len=8, log_every=1, seed=0)
PPO = dict(steps=2, batch_size=4, mini_batch_size=2, max_prompt_len=24, max_response_len=6, lr=1e-3, seed=3,
           regularizer="kl", beta=0.1)
DPO = dict(batch_size=4, max_prompt_len=24, max_response_len=6, lr=1e-3, seed=0, split="all", eval_fraction=0.0,
           regularizer="kl", beta=0.1, save_every=2, lr_scheduler="linear", gradient_accumulation_steps=2)


class Killed(Exception):
    """The stand-in of a killed run (raised on every process at the same step)."""


_ORIGINAL = {}


def train_unsharded(data, base, single, rm_lora: bool = False):
    """The single-process SFT and reward-model runs (in ``single``/sft, /rm, /rm_lora) that the sharded
    runs of test_fsdp.py and test_deepspeed.py are compared with."""
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    train_sft(load_config(SFTConfig, overrides=dict(model=base, data=data, out=str(single / "sft"), **SFT)), quiet=True)
    reward_models = {"rm": {}, **({"rm_lora": {"lora": True}} if rm_lora else {})}
    for name, extra in reward_models.items():
        train_reward_model(load_config(RMConfig, overrides=dict(model=base, data=data, out=str(single / name), **extra,
                                                                **RM)), quiet=True)


def _kill_at_step(at):
    """Make PPOTrainer.step and DPOTrainer.step raise :class:`Killed` before step ``at`` (None: undo)."""
    from prefmatch.llm.train.dpo import DPOTrainer
    from prefmatch.llm.train.ppo import PPOTrainer

    for cls in (PPOTrainer, DPOTrainer):
        orig = _ORIGINAL.setdefault(cls, cls.step)
        if at is None:
            cls.step = orig
            continue

        def step(self, _orig=orig):
            if self.step_count + 1 == at:
                raise Killed
            return _orig(self)

        cls.step = step


def shard_info(acc, model):
    from torch.distributed.tensor import DTensor

    params = list(acc.unwrap_model(model).parameters())
    if any(hasattr(p, "ds_numel") for p in params):  # DeepSpeed ZeRO-3: each process holds a partition
        return {"dtensor": False, "zero3": True, "local_elements": sum(p.ds_tensor.numel() for p in params),
                "full_elements": sum(p.ds_numel for p in params)}
    return {"dtensor": any(isinstance(p, DTensor) for p in params),
            "local_elements": sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params),
            "full_elements": sum(p.numel() for p in params)}


def main(data, base, out, stages="sft,rm,ppo"):
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer
    from prefmatch.llm.train.reward_model import RMConfig, train_reward_model
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    out = Path(out)
    stages = stages.split(",")
    report = {}
    if "sft" in stages:
        train_sft(load_config(SFTConfig, overrides=dict(model=base, data=data, out=str(out / "sft"), **SFT)),
                  quiet=True)
    if "rm" in stages:
        train_reward_model(load_config(RMConfig, overrides=dict(model=base, data=data, out=str(out / "rm"), **RM)),
                           quiet=True)
    if "rm_lora" in stages:  # LoRA adapters (peft) on the sharded model, saved merged and as an adapter
        train_reward_model(load_config(RMConfig, overrides=dict(model=base, data=data, out=str(out / "rm_lora"),
                                                                lora=True, **RM)), quiet=True)
    for stage in stages:  # resume: "ppo_full"/"dpo_full" (4 steps, checkpoints at 2 and 4), "*_part" (2 steps),
        # "*_resume" (continue the part run from its step-2 checkpoint to step 4)
        algo, _, kind = stage.partition("_")
        if algo not in ("ppo", "dpo") or kind not in ("full", "part", "resume"):
            continue
        run_dir = out / f"{algo}_{'full' if kind == 'full' else 'part'}"
        resume = str(run_dir) if kind == "resume" else None
        steps = 4
        if kind == "part":  # killed after its step-2 checkpoint: step 3 never starts
            _kill_at_step(3)
        if algo == "ppo":
            from prefmatch.llm.train.ppo import train_ppo

            cfg = load_config(PPOConfig, overrides=dict(
                data=data, policy=str(out / "sft" / "model"), reward_model=str(out / "rm" / "model"),
                out=str(run_dir), **{**PPO, "steps": steps}, save_every=2, lr_scheduler="cosine", warmup_steps=1))
            try:
                train_ppo(cfg, quiet=True, resume=resume)
            except Killed:
                pass
        else:
            from prefmatch.llm.train.dpo import DPOConfig, train_dpo

            cfg = load_config(DPOConfig, overrides=dict(data=data, model=str(out / "sft" / "model"), out=str(run_dir),
                                                        **DPO, steps=steps))
            try:
                train_dpo(cfg, quiet=True, resume=resume)
            except Killed:
                pass
        _kill_at_step(None)
    if "ppo_critic" in stages:  # the separate critic (critic: reward_model) sharded like the policy
        cfg = load_config(PPOConfig, overrides=dict(data=data, policy=str(out / "sft" / "model"),
                                                    reward_model=str(out / "rm" / "model"),
                                                    out=str(out / "ppo_critic"), critic="reward_model", **PPO))
        trainer = PPOTrainer(cfg, quiet=True)
        report["ppo_critic_steps"] = [trainer.step() for _ in range(cfg.steps)]
        trainer.save_final()
    if "ppo" in stages:
        cfg = load_config(PPOConfig, overrides=dict(data=data, policy=str(out / "sft" / "model"),
                                                    reward_model=str(out / "rm" / "model"), out=str(out / "ppo"), **PPO))
        trainer = PPOTrainer(cfg, quiet=True)
        report.update(backend=str(trainer.acc.distributed_type), processes=trainer.acc.num_processes,
                      **shard_info(trainer.acc, trainer.model))
        report["ppo_steps"] = [trainer.step() for _ in range(cfg.steps)]
        trainer.save_final()
    from accelerate import PartialState

    rank = PartialState().process_index
    if report or not (out / f"rank{rank}.json").exists():  # a resume-only launch keeps the PPO report
        (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
