"""The OpenRLHF recipe (prefmatch.llm.integrations.openrlhf): its refusals and arithmetic everywhere, and against
OpenRLHF 0.11.2's own reward functions in the side environment ``make openrlhf-env`` builds."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.integrations import openrlhf as po  # noqa: E402
from prefmatch.theory import regularizers as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OPENRLHF_PYTHON = ROOT / ".cache" / "openrlhf" / "bin" / "python"


def test_refuses_what_the_reward_cannot_place_exactly():
    for name, params, match in (("fdiv", {"f": "chi2"}, "pathwise loss term"), ("kl", {"estimator": "k3"}, "pathwise"),
                                ("multi_rkl", {"weights": [0.5, 0.5]}, "K reference models")):
        with pytest.raises(ValueError, match=match) as e:
            po.regularizer_for_openrlhf(name, params, 0.1)
        assert "\n" not in str(e.value)


def test_kl_term_times_minus_beta_is_psi():
    torch.manual_seed(1)
    lp, ref = -3 * torch.rand(3, 4, dtype=torch.float64), -3 * torch.rand(3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    reg = R.cpm(alpha=0.2, level="sequence", beta=0.4)
    kl = po.kl_term(reg, lp, ref, mask)
    m = mask.double()
    psi = reg.psi((lp * m).sum(-1), (ref * m).sum(-1))  # Definition 4.1 on whole responses
    assert torch.allclose((-reg.beta * kl * m).sum(-1), psi, atol=1e-12)


@pytest.mark.skipif(not OPENRLHF_PYTHON.exists(), reason="no OpenRLHF environment (make openrlhf-env)")
def test_recipe_against_openrlhfs_own_reward_functions():
    proc = subprocess.run([str(OPENRLHF_PYTHON), str(Path(__file__).with_name("openrlhf_check.py"))],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["openrlhf"] == po.TESTED_OPENRLHF_VERSION
    assert out["kl_k1_err"] < 1e-6  # the recipe with kl (k1) is OpenRLHF's own k1 reward (it computes in float32)
    lp, ref, r = (torch.tensor(out[k], dtype=torch.float64) for k in ("lp", "ref", "r"))
    mask = torch.tensor(out["mask"])
    m = mask.double()
    d = ref - lp  # OpenRLHF's k3 is Schulman's e^(ref−lp) − 1 − (ref−lp): the registry's k3 term
    assert torch.allclose(torch.tensor(out["k3"], dtype=torch.float64), (d.exp() - 1 - d) * m, atol=1e-5)
    assert torch.allclose(-R.kl(beta=1.0, estimator="k3").token_reward(lp, ref, m), (d.exp() - 1 - d) * m, atol=1e-12)
    reg = R.cpm(alpha=0.2, level="token", beta=out["beta"])
    got = torch.tensor(out["cpm_reward"], dtype=torch.float64) * m
    last = torch.zeros_like(m)
    last[torch.arange(len(r)), m.sum(-1).long() - 1] = 1
    assert torch.allclose(got, r[:, None] * last + reg.token_reward(lp, ref, m), atol=1e-9)  # r at EOS + ψ_t
    assert torch.allclose(got.sum(-1), r + reg.token_reward(lp, ref, m).sum(-1), atol=1e-9)
