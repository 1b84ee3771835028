"""Worker for the distributed test: `torchrun --nproc_per_node 2 ddp_worker.py RUN_DIR BASE OUT`.

Runs a couple of PPO steps and writes this rank's weights to OUT/rank{R}.pt.
"""
import sys

import torch


def main(data, policy, reward, out):
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    cfg = load_config(PPOConfig, overrides=dict(
        data=data, policy=policy, reward_model=reward, out=out, steps=2, batch_size=4, mini_batch_size=2,
        max_prompt_len=24, max_response_len=6, lr=1e-3, seed=3, regularizer="kl", beta=0.1))
    trainer = PPOTrainer(cfg, quiet=True)
    assert trainer.acc.num_processes == 2, trainer.acc.num_processes
    prompts = trainer.sample_prompts(1)
    for _ in range(cfg.steps):
        trainer.step()
    import os

    os.makedirs(out, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in trainer.policy.state_dict().items()}
    torch.save({"state": state, "prompts": prompts, "rank": trainer.acc.process_index,
                "backend": str(trainer.acc.distributed_type)}, f"{out}/rank{trainer.acc.process_index}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:5])
