"""prefmatch.llm: SFT, Bradley–Terry reward model and PPO for causal LMs, with the theory layer's
regularizers as per-token rewards.  Nothing here imports torch at import time.

Public API (all importable from their modules):

* models     ``init_model(out_dir, size="tiny"|"medium"|"small", arch="gpt2"|"llama", texts=None)``,
             ``load_causal_lm(dir)``, ``load_reward_model(dir)``, ``reward_scores(rm, ids, mask)``,
             ``policy_with_value_class()`` (PolicyWithValue), ``token_logprobs(model, ids, mask)``
* tokenizer  ``build_tokenizer(out_dir, texts)``, ``load_tokenizer(dir)``, ``same_tokenizer(a, b)``
* data       ``load_records``, ``load_split`` (20/40/40 seeded split), ``write_jsonl``,
             ``synthetic_preferences``, ``prompt_response_batch``
* config     ``load_config(Cls, yaml_path_or_packaged_name, overrides)``, ``save_config``
* train        the trainers and the loop they share (:mod:`prefmatch.llm.train`):
  train.sft      ``SFTConfig``, ``train_sft(cfg)``
  train.reward_model ``RMConfig``, ``train_reward_model(cfg)``, ``score_pairs``, ``pairwise_accuracy``
  train.ppo      ``PPOConfig``, ``PPOTrainer(cfg).step()``, ``train_ppo(cfg, resume=None)``
  train.dpo      ``DPOConfig``, ``DPOTrainer``, ``train_dpo(cfg, resume=None)``
  train.rewards  ``build_regularizer``, ``ppo_token_rewards`` (ψ_t from the theory regularizer objects)
  train.losses   ``gae``, ``clipped_policy_loss``, ``clipped_value_loss``, ``bradley_terry_loss``, ...
* metrics    ``sequence_logprobs`` / ``sequence_logprobs_ids`` (teacher forced), ``sample_responses``,
             ``score_responses_ids``, ``summarize``, ``evaluate`` (PM paper §6.1)
* battery    the trainers' convergence batteries (``battery.ppo``, ``battery.dpo``, ``battery.trl``)
* critic     PPO's separate critic (``build_policy_with_critic``), initialised from the reward model
* rundir     output directories: checked before any work, one lock per run, atomic writes (``run_session``)
* sharding   FSDP2 through accelerate, on CPU processes too (``enable_cpu_fsdp``, ``savable_model``)
* integrations.trl   ``PMGRPOTrainer``, ``PMRLOOTrainer`` (TRL's trainers with a prefmatch regularizer)
* integrations.verl  ``install(name, params, beta)`` (the regularizer in verl's reward)
"""
