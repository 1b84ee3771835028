"""Sharded training (FSDP2 through accelerate) on 2 CPU processes (gloo) against unsharded runs.

Five launches of tests/llm/fsdp_worker.py: ``accelerate launch --config_file
examples/accelerate/fsdp.yaml`` for SFT + reward model, the same for PPO with the shared value head
and with the separate critic (``critic: reward_model``), ``torchrun`` without the FSDP config
(plain data parallel, DDP) for both PPOs, and two FSDP launches for checkpoints: PPO and DPO run
4 steps uninterrupted and 4 steps killed after the step-2 checkpoint, then a new launch resumes
the killed runs.  SFT, the reward model and DPO (gradient accumulation on) are compared with
single-process runs of the same config; PPO with the 2-process DDP run, because each process
samples its own responses (a single process draws different ones), so only a 2-process run sees
the same tokens; resumed runs with the uninterrupted ones.  About 3 minutes on 2 idle cores:
``make test-fsdp`` (marked slow and fsdp).

Tolerances: reward model and PPO 1e-5 relative (the runs differ only in the order of float
reductions); SFT 1e-2 relative, because its loss is a mean over each process's response tokens
and the 2-process loss is the mean of the two processes' means (the batches' token counts differ),
the same with DDP.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.fsdp]

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fsdp_worker.py")
CONFIG = ROOT / "examples" / "accelerate" / "fsdp.yaml"


def _bin(name):
    return shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)


def _launch(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _steps(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip() and '"final"' not in x]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny):
    accelerate, torchrun = _bin("accelerate"), _bin("torchrun")
    if accelerate is None or torchrun is None:
        pytest.skip("accelerate / torchrun not found")
    import fsdp_worker  # tests/llm, on sys.path as the test's folder (like cli_errors)
    root = tmp_path_factory.mktemp("fsdp")
    data, base = tiny["data"], tiny["base"]
    fsdp, ddp, single = root / "fsdp", root / "ddp", root / "single"
    launch = [accelerate, "launch", "--config_file", str(CONFIG), str(WORKER), data, base, str(fsdp)]
    _launch(launch + ["sft,rm,rm_lora"], root)
    _launch(launch + ["ppo,ppo_critic"], root)
    ddp.mkdir()
    for stage in ("sft", "rm"):  # the same SFT policy and reward model for both PPO runs
        shutil.copytree(fsdp / stage, ddp / stage)
    _launch([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), data, base, str(ddp), "ppo,ppo_critic"], root)
    fsdp_worker.train_unsharded(data, base, single, rm_lora=True)
    return {"fsdp": fsdp, "ddp": ddp, "single": single, "base": base, "data": data}


def test_sft_and_reward_model_losses_equal_the_single_process_run(runs):
    for stage, rel in (("sft", 1e-2), ("rm", 1e-5)):
        sharded, one = _steps(runs["fsdp"] / stage / "metrics.jsonl"), _steps(runs["single"] / stage / "metrics.jsonl")
        assert len(sharded) == len(one) >= 2, stage
        for a, b in zip(sharded, one):
            assert a["loss"] == pytest.approx(b["loss"], rel=rel), (stage, a, b)
    acc = [r["accuracy"] for r in _steps(runs["fsdp"] / "rm" / "metrics.jsonl")]
    assert acc == pytest.approx([r["accuracy"] for r in _steps(runs["single"] / "rm" / "metrics.jsonl")], rel=1e-6)


def test_ppo_is_sharded_and_its_losses_equal_the_unsharded_run(runs):
    r0 = json.loads((runs["fsdp"] / "rank0.json").read_text())
    r1 = json.loads((runs["fsdp"] / "rank1.json").read_text())
    d0 = json.loads((runs["ddp"] / "rank0.json").read_text())
    assert r0["backend"] == "DistributedType.FSDP" and r0["processes"] == 2
    assert d0["backend"] == "DistributedType.MULTI_CPU"
    assert r0["dtensor"]  # split in two (each shard padded to equal size)
    assert 0 <= r0["local_elements"] + r1["local_elements"] - r0["full_elements"] < 0.01 * r0["full_elements"]
    assert 0.45 < r0["local_elements"] / r0["full_elements"] < 0.55
    assert d0["local_elements"] == d0["full_elements"]
    for a, b in zip(r0["ppo_steps"], d0["ppo_steps"], strict=True):
        for k in ("value_loss", "reward", "return", "entropy", "kl", "response_length"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k, a[k], b[k])
        assert a["policy_loss"] == pytest.approx(b["policy_loss"], abs=1e-6)


def test_separate_critic_is_sharded_and_equals_the_unsharded_run(runs):
    """critic: reward_model under FSDP2: the critic (a unit of its own) trains as under DDP."""
    from prefmatch.llm.critic import CRITIC_DIR
    from prefmatch.llm.models import load_reward_model

    a = json.loads((runs["fsdp"] / "rank0.json").read_text())["ppo_critic_steps"]
    b = json.loads((runs["ddp"] / "rank0.json").read_text())["ppo_critic_steps"]
    for ra, rb in zip(a, b, strict=True):
        for k in ("value_loss", "reward", "return", "kl"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (ra["step"], k)
    assert a[0]["value_loss"] > 0
    ca = load_reward_model(runs["fsdp"] / "ppo_critic" / "model" / CRITIC_DIR).state_dict()
    cb = load_reward_model(runs["ddp"] / "ppo_critic" / "model" / CRITIC_DIR).state_dict()
    assert max(float((ca[k] - cb[k]).abs().max()) for k in cb) < 1e-5


def test_sharded_runs_save_plain_hf_model_directories(runs):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    base = AutoModelForCausalLM.from_pretrained(runs["base"]).state_dict()
    sft = AutoModelForCausalLM.from_pretrained(runs["fsdp"] / "sft" / "model").state_dict()
    assert sft.keys() == base.keys() and all(sft[k].shape == base[k].shape for k in base)
    assert any(not torch.equal(sft[k], base[k]) for k in base)  # trained
    one = AutoModelForCausalLM.from_pretrained(runs["single"] / "sft" / "model").state_dict()

    def norm(d):
        return float(sum((v.double() ** 2).sum() for v in d.values()) ** 0.5)

    # the same training up to SFT's per-process token weighting (Adam magnifies small gradient
    # differences on near-zero gradients): measured 0.11 of the single-process run's update
    assert norm({k: sft[k] - one[k] for k in one}) < 0.25 * norm({k: one[k] - base[k] for k in one})
    rm = AutoModelForSequenceClassification.from_pretrained(runs["fsdp"] / "rm" / "model").state_dict()
    rm1 = AutoModelForSequenceClassification.from_pretrained(runs["single"] / "rm" / "model").state_dict()
    # losses equal to 1e-6, but Adam's first steps magnify float-order differences of near-zero
    # gradients: measured 1.3e-4, against the 9e-3 (3 steps × lr) an Adam update can move a weight
    assert max(float((rm[k] - rm1[k]).abs().max()) for k in rm1) < 1e-3
    ppo = AutoModelForCausalLM.from_pretrained(runs["fsdp"] / "ppo" / "model").state_dict()
    ppo_ddp = AutoModelForCausalLM.from_pretrained(runs["ddp"] / "ppo" / "model").state_dict()
    assert ppo.keys() == ppo_ddp.keys()
    assert max(float((ppo[k] - ppo_ddp[k]).abs().max()) for k in ppo) < 1e-5


def test_lora_reward_model_under_fsdp_saves_the_single_process_weights(runs):
    """LoRA (peft) on the FSDP2-sharded model: the saved merged model equals the single-process
    LoRA run's (the reward-model loss is a mean over equal-sized pair shares), and the adapter is
    saved beside it in peft's format."""
    from prefmatch.llm.models import ADAPTER_DIR, load_reward_model

    sharded, single = runs["fsdp"] / "rm_lora" / "model", runs["single"] / "rm_lora" / "model"
    assert (sharded / ADAPTER_DIR / "adapter_config.json").is_file()
    a, b, base = load_reward_model(sharded), load_reward_model(single), load_reward_model(runs["base"], trained=False)
    moved = False
    for (name, pa), (_, pb), (_, p0) in zip(a.named_parameters(), b.named_parameters(), base.named_parameters()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6), name
        moved |= not torch.equal(pa, p0) and "score" not in name
    assert moved, "LoRA training left every backbone weight unchanged"


@pytest.fixture(scope="module")
def resumed(runs):
    """PPO and DPO under FSDP2 on 2 processes: 4 steps uninterrupted, and 4 steps killed after the
    step-2 checkpoint then resumed by a new launch (schedules and, for DPO, accumulation on)."""
    accelerate = _bin("accelerate")
    fsdp = runs["fsdp"]
    launch = [accelerate, "launch", "--config_file", str(CONFIG), str(WORKER), runs["data"], runs["base"], str(fsdp)]
    _launch(launch + ["ppo_full,ppo_part,dpo_full,dpo_part"], fsdp)
    _launch(launch + ["ppo_resume,dpo_resume"], fsdp)
    return fsdp


@pytest.mark.parametrize("algo", ["ppo", "dpo"])
def test_sharded_checkpoint_resume_gives_the_uninterrupted_run(resumed, algo):
    from safetensors.torch import load_file

    full, part = resumed / f"{algo}_full", resumed / f"{algo}_part"
    ckpt = part / "checkpoints" / "checkpoint-000002"
    assert sorted(p.name for p in (ckpt / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (part / "checkpoints" / "checkpoint-000003").exists()  # the kill came before step 3
    a, b = _steps(full / "metrics.jsonl"), _steps(part / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    keys = ("loss", "lr", "margin") if algo == "dpo" else ("policy_loss", "value_loss", "reward", "kl", "lr")
    for ra, rb in zip(a, b):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-9), (algo, ra["step"], k)
    assert a[1]["lr"] != a[3]["lr"]  # the schedule moved
    if algo == "dpo":  # pairs split evenly: the sharded, accumulated run is the single-process run
        from prefmatch.llm.config import load_config, read_yaml
        from prefmatch.llm.train.dpo import DPOConfig, train_dpo

        saved = read_yaml(full / "config.yaml")
        one = resumed / "dpo_single"
        train_dpo(load_config(DPOConfig, overrides={**saved, "out": str(one), "save_every": 0}), quiet=True)
        for ra, rb in zip(a, _steps(one / "metrics.jsonl"), strict=True):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5), ra["step"]
    wa, wb = load_file(str(full / "model" / "model.safetensors")), load_file(str(part / "model" / "model.safetensors"))
    base = load_file(str(Path(runs_sft(resumed)) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6
    assert max(float((wa[k] - base[k]).abs().max()) for k in wa) > 1e-4  # trained


def runs_sft(fsdp):
    return fsdp / "sft" / "model"
