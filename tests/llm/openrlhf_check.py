"""Run by tests/llm/test_openrlhf.py in the OpenRLHF environment (.cache/openrlhf, ``make openrlhf-env``):
the recipe against OpenRLHF's own ``compute_approx_kl`` and ``compute_reward`` (``openrlhf/models/utils.py``,
loaded from the installed package; its module-level ``import deepspeed`` serves only ZeRO-3 helpers, so a stub
stands in for DeepSpeed, which would pull a CUDA build).  Prints one JSON line of what it computed."""
import importlib.metadata
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch


def openrlhf_utils():
    sys.modules.setdefault("deepspeed", types.ModuleType("deepspeed"))
    dist = importlib.metadata.distribution("openrlhf")
    path = Path(dist.locate_file("openrlhf/models/utils.py"))
    spec = importlib.util.spec_from_file_location("openrlhf_models_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dist.version, mod


def main():
    from prefmatch.llm.integrations import openrlhf as po

    version, ou = openrlhf_utils()
    torch.manual_seed(0)
    B, T, beta = 4, 5, 0.3
    lp, ref = -3 * torch.rand(B, T, dtype=torch.float64), -3 * torch.rand(B, T, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 4, 1])
    mask = torch.arange(T)[None] < lengths[:, None]
    r = torch.randn(B, dtype=torch.float64)
    out = {"openrlhf": version, "lp": lp.tolist(), "ref": ref.tolist(), "mask": mask.tolist(), "r": r.tolist(),
           "beta": beta}
    theirs_k1 = ou.compute_reward(r, beta, ou.compute_approx_kl(lp, ref, kl_estimator="k1") * mask, action_mask=mask)
    ours_k1 = ou.compute_reward(r, beta, po.kl_term(po.regularizer_for_openrlhf("kl", {}, beta), lp, ref, mask),
                                action_mask=mask)
    out["kl_k1_err"] = float(((theirs_k1 - ours_k1) * mask).abs().max())
    out["k3"] = (ou.compute_approx_kl(lp, ref, kl_estimator="k3") * mask).tolist()
    reg = po.regularizer_for_openrlhf("cpm", {"alpha": 0.2, "level": "token"}, beta)
    out["cpm_reward"] = ou.compute_reward(r, beta, po.kl_term(reg, lp, ref, mask), action_mask=mask).tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
