"""prefmatch.llm.train: the four trainers (SFT, reward model, PPO, DPO), the loop they share, and what
they compute with (losses, the regularizer's per-token rewards).  They stand on the plumbing one room
down (config, data, tokenizer, models, critic, sharding, rundir) and never import the batteries, the
integrations or the experiments above them.

* ``sft``           ``SFTConfig``, ``train_sft(cfg)``; the supervised loop the reward model reuses
* ``reward_model``  ``RMConfig``, ``train_reward_model(cfg)``
* ``ppo``           ``PPOConfig``, ``PPOTrainer(cfg).step()`` / ``PPOTrainer.from_modules``, ``train_ppo``
* ``dpo``           ``DPOConfig``, ``DPOTrainer``, ``train_dpo``
* ``loop``          what every trainer shares: accelerator, seeds, finite checks, metrics log, resume
* ``checkpoints``   ``CheckpointedTrainer``: how PPO and DPO write, keep, resume from and finish checkpoints
* ``common``        the config fields every trainer shares (``CommonConfig``)
* ``losses``        ``gae``, ``clipped_policy_loss``, ``clipped_value_loss``, ``bradley_terry_loss``, ...
* ``rewards``       ``build_regularizer``, ``ppo_token_rewards`` (ψ_t from the theory regularizer objects)
"""
