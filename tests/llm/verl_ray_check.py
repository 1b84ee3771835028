"""Run by tests/llm/test_trl_verl.py in the verl environment (.cache/verl, ``make verl-env``): prefmatch's
registration inside real Ray worker processes.  The driver sets ``PREFMATCH_VERL_REGULARIZER`` and starts a
local Ray cluster (as ``python -m verl.trainer.main_ppo`` does); a ``@ray.remote`` task, in a worker process,
imports verl (verl's plugin loading brings prefmatch in), then runs verl's own reward and advantage path as
verl's trainer calls it (``ray_trainer.apply_kl_penalty`` with ``use_kl_in_reward``, then
``ray_trainer.compute_advantage`` with ``adv_estimator=prefmatch_grpo``).  A second task starts without the
variable: there prefmatch_grpo must refuse to run rather than train with verl's own KL.  Prints one JSON line."""
import json
import os

import numpy as np

SPEC = {"name": "cpm", "params": {"alpha": 0.2, "level": "token"}, "beta": 0.3}


def verl_path(old, ref, mask, scores, uid, beta):
    """verl's reward and advantage path in this process; what it computed and where."""
    import os

    import torch

    import verl  # noqa: F401 - verl's plugin loading runs here
    import verl.trainer.ppo.core_algos as ca
    import verl.trainer.ppo.ray_trainer as rt
    from verl import DataProto
    from verl.trainer.config import AlgoConfig

    from prefmatch.llm.integrations import verl as pv

    data = DataProto.from_dict({"response_mask": torch.tensor(mask), "token_level_scores": torch.tensor(scores),
                                "old_log_probs": torch.tensor(old), "ref_log_prob": torch.tensor(ref)},
                               non_tensors={"uid": np.array(uid, dtype=object)})
    out = {"pid": os.getpid(), "apply_kl_penalty": f"{rt.apply_kl_penalty.__module__}.{rt.apply_kl_penalty.__name__}"}
    data, metrics = rt.apply_kl_penalty(data, ca.FixedKLController(beta), "kl")
    out["metrics"] = sorted(metrics)
    out["token_level_rewards"] = data.batch["token_level_rewards"].tolist()
    try:
        data = rt.compute_advantage(data, adv_estimator="prefmatch_grpo", num_repeat=1, norm_adv_by_std_in_grpo=False,
                                    config=AlgoConfig(norm_adv_by_std_in_grpo=False))
        out["advantages"] = data.batch["advantages"].tolist()
    except RuntimeError as e:
        out["error"] = str(e)
    out["estimator_calls"] = pv.STATE["estimator_calls"]
    return out


def main():
    import ray

    import verl

    torch_free = np.random.default_rng(0)
    B, T, beta = 6, 4, 0.1
    old, ref = -3 * torch_free.random((B, T)), -3 * torch_free.random((B, T))
    lengths = np.array([4, 2, 3, 1, 4, 2])
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float64)
    scores = np.zeros((B, T))
    scores[np.arange(B), lengths - 1] = torch_free.normal(size=B)
    uid = ["a", "a", "a", "b", "b", "b"]
    os.environ["PREFMATCH_VERL_REGULARIZER"] = json.dumps(SPEC)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(verl_path)
        with_reg = ray.get(task.remote(old, ref, mask, scores, uid, beta))
        without = ray.get(task.options(runtime_env={"env_vars": {"PREFMATCH_VERL_REGULARIZER": ""}}).remote(
            old, ref, mask, scores, uid, beta))
    finally:
        ray.shutdown()
    print(json.dumps({"verl": verl.__version__, "driver_pid": os.getpid(), "with": with_reg, "without": without,
                      "inputs": {"old": old.tolist(), "ref": ref.tolist(), "mask": mask.tolist(),
                                 "scores": scores.tolist(), "uid": uid, "beta": beta}, "spec": SPEC}))


if __name__ == "__main__":
    main()
