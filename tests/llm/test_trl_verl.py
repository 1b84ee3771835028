"""The verl recipe (prefmatch.llm.integrations.verl): against verl's own module where verl imports
(the side environment ``make verl-env`` builds: verl 0.9.1 without its GPU dependencies), and its
refusals and arithmetic everywhere."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.integrations import verl as pv  # noqa: E402
from prefmatch.theory import regularizers as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VERL_PYTHON = ROOT / ".cache" / "verl" / "bin" / "python"


def test_refuses_what_verl_cannot_place_exactly():
    with pytest.raises(ValueError, match="pathwise loss term"):
        pv.regularizer_for_verl("fdiv", {"f": "chi2"}, 0.1)
    with pytest.raises(ValueError, match="pathwise loss term"):
        pv.regularizer_for_verl("kl", {"estimator": "k3"}, 0.1)
    with pytest.raises(ValueError, match="K reference models"):
        pv.regularizer_for_verl("multi_rkl", {"weights": [0.5, 0.5]}, 0.1)
    assert pv.regularizer_for_verl("cpm", {"alpha": 0.3}, 0.1).beta == 0.1


def test_token_level_rewards_sum_to_psi():
    torch.manual_seed(0)
    old, ref = -3 * torch.rand(3, 4, dtype=torch.float64), -3 * torch.rand(3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    scores = torch.zeros_like(old)
    reg = R.cpm(alpha=0.2, level="sequence", beta=0.4)
    rewards = pv.token_level_rewards(reg, scores, old, ref, mask)
    psi = reg.psi((old * mask).sum(-1), (ref * mask).sum(-1))  # Definition 4.1 on whole responses
    assert torch.allclose((rewards * mask).sum(-1), psi, atol=1e-12)


@pytest.mark.skipif(not VERL_PYTHON.exists(), reason="no verl environment (make verl-env)")
def test_recipe_against_verls_own_module():
    proc = subprocess.run([str(VERL_PYTHON), str(Path(__file__).with_name("verl_check.py"))], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["verl"] == pv.TESTED_VERL_VERSION
    assert out["k1_err"] < 1e-6 and out["k3_err"] < 1e-6  # verl's kl / low_var_kl are the registry's k1 / k3
    assert out["install_kl_err"] < 1e-6  # the installed kl regularizer = verl's own k1 reward penalty
    assert out["install_cpm_err"] < 1e-6 and out["cpm_differs_from_kl"] > 1e-2
    assert len(out["refused"]) == 2


@pytest.mark.slow  # a local Ray cluster: about a minute on idle cores (make test-verl runs it)
@pytest.mark.skipif(not VERL_PYTHON.exists(), reason="no verl environment (make verl-env)")
def test_registration_reaches_verls_ray_workers():
    """In a Ray worker process (not the driver), verl's own reward and advantage calls run prefmatch's: the rewards
    are the scores plus cPM's ψ_t (the theory layer's, computed here), the advantages verl's GRPO on them (group mean
    subtracted, written out here); without the regularizer in the worker's environment prefmatch_grpo refuses."""
    import numpy as np

    proc = subprocess.run([str(VERL_PYTHON), str(Path(__file__).with_name("verl_ray_check.py"))], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    w, x = out["with"], out["inputs"]
    assert w["pid"] != out["driver_pid"] and out["without"]["pid"] != out["driver_pid"]
    assert w["apply_kl_penalty"] == "prefmatch.llm.integrations.verl.apply_regularizer"
    assert "actor/regularizer_psi" in w["metrics"] and w["estimator_calls"] == 1
    old, ref, mask, scores = (torch.tensor(x[k], dtype=torch.float64) for k in ("old", "ref", "mask", "scores"))
    reg = pv.regularizer_for_verl(out["spec"]["name"], out["spec"]["params"], out["spec"]["beta"])
    want = scores + reg.token_reward(old, ref, mask)
    got = torch.tensor(w["token_level_rewards"], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-5)
    assert (want - scores).abs().max() > 1e-2  # ψ is not zero here: the check can fail
    seq = (want * mask).sum(-1).numpy()
    uid = np.array(x["uid"])
    centred = np.array([seq[i] - seq[uid == uid[i]].mean() for i in range(len(seq))])
    assert np.allclose(np.array(w["advantages"]), centred[:, None] * mask.numpy(), atol=1e-5)
    wo = out["without"]
    assert wo["apply_kl_penalty"] == "verl.trainer.ppo.ray_trainer.apply_kl_penalty"
    assert "no prefmatch regularizer in this process" in wo["error"] and "advantages" not in wo
