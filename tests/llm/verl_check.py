"""Run by tests/llm/test_trl_verl.py in the verl environment (.cache/verl, ``make verl-env``):
prefmatch's verl recipe against verl's own ``core_algos`` and ``ray_trainer.apply_kl_penalty``.
Prints one JSON line of what it checked."""
import json

import torch


def main():
    import verl
    import verl.trainer.ppo.core_algos as ca
    import verl.trainer.ppo.ray_trainer as rt
    from verl import DataProto

    from prefmatch.llm.integrations import verl as pv
    from prefmatch.theory import regularizers as R

    torch.manual_seed(0)
    B, T, beta = 4, 5, 0.3
    old, ref = -3 * torch.rand(B, T), -3 * torch.rand(B, T)
    lengths = torch.tensor([5, 3, 4, 1])
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    scores = torch.zeros(B, T)
    scores[torch.arange(B), lengths - 1] = torch.randn(B)

    def batch():
        return DataProto.from_dict({"response_mask": mask.clone(), "token_level_scores": scores.clone(),
                                    "old_log_probs": old.clone(), "ref_log_prob": ref.clone()})

    out = {"verl": verl.__version__}
    # verl's KL estimators are the registry's KL token terms: ψ_t = −β·k_t
    k1 = ca.kl_penalty(old, ref, "kl") * mask
    out["k1_err"] = float((-beta * k1 - R.kl(beta=beta).token_reward(old, ref, mask)).abs().max())
    k3 = ca.kl_penalty(old, ref, "low_var_kl") * mask  # clamped to ±10; these values are inside
    out["k3_err"] = float((-beta * k3 - R.kl(beta=beta, estimator="k3").token_reward(old, ref, mask)).abs().max())
    # verl's own apply_kl_penalty (k1, fixed β) and the installed kl regularizer give the same rewards
    theirs, _ = rt.apply_kl_penalty(batch(), ca.FixedKLController(beta), "kl")
    pv.install("kl", {}, beta)
    ours, metrics = rt.apply_kl_penalty(batch(), ca.FixedKLController(beta), "kl")
    out["install_kl_err"] = float((theirs.batch["token_level_rewards"] - ours.batch["token_level_rewards"]).abs().max())
    # cPM: the scores plus its per-token terms, through the same verl call
    reg = pv.install("cpm", {"alpha": 0.2, "level": "token"}, beta)
    got, _ = rt.apply_kl_penalty(batch(), ca.FixedKLController(beta), "kl")
    want = scores + reg.token_reward(old, ref, mask)
    out["install_cpm_err"] = float((got.batch["token_level_rewards"] - want).abs().max())
    out["cpm_differs_from_kl"] = float((got.batch["token_level_rewards"] - theirs.batch["token_level_rewards"]).abs().max())
    refused = []
    for name, params in (("fdiv", {"f": "chi2"}), ("multi_rkl", {"weights": [0.5, 0.5]})):
        try:
            pv.install(name, params, beta)
        except ValueError as e:
            refused.append(str(e))
    out["refused"] = refused
    out["metrics_keys"] = sorted(metrics)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
