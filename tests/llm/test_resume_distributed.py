"""Checkpoint/resume reproduces an uninterrupted run; two CPU processes (gloo) stay in sync."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prefmatch.llm.config import load_config  # noqa: E402
from prefmatch.llm.train.ppo import PPOConfig, train_ppo  # noqa: E402

TIMING = {"tokens_per_s", "step_time_s", "model_time_fraction"}


def final_state(out):
    from prefmatch.llm.models import policy_with_value_class

    return policy_with_value_class().from_pretrained(Path(out) / "model").state_dict()


def metrics(out):
    recs = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_equals_uninterrupted_run(tmp_path, tiny, ppo_overrides, lora):
    kw = dict(steps=4, save_every=2, regularizer="cpm", regularizer_params={"alpha": 0.2}, beta=0.5, ppo_epochs=2,
              lora=lora)
    full = train_ppo(load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "full", **kw)), quiet=True)
    # interrupted after step 2 (its checkpoint), then resumed to step 4
    part = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "part", **{**kw, "steps": 2}))
    train_ppo(part, quiet=True)
    shutil.rmtree(tmp_path / "part" / "model")
    resumed = train_ppo(load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "part", **kw)), quiet=True,
                        resume=str(tmp_path / "part"))
    assert resumed["steps"] == full["steps"] == 4
    a, b = final_state(tmp_path / "full"), final_state(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metrics(tmp_path / "full") == metrics(tmp_path / "part")
    # and the run did move the weights away from the SFT start
    start = final_state_of_sft(tiny)
    assert any(not torch.equal(a[k], start[k]) for k in start)


def final_state_of_sft(tiny):
    from prefmatch.llm.models import load_causal_lm

    return {"lm." + k: v for k, v in load_causal_lm(tiny["sft"]).state_dict().items()}


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny, ppo_overrides):
    from prefmatch.llm.config import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint found"):
        train_ppo(load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "x")), resume=str(tmp_path))


def test_distributed_two_cpu_processes_hold_identical_weights(tmp_path, tiny):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(worker), tiny["data"], tiny["sft"], tiny["rm"],
         str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt")
    assert "MULTI_CPU" in r0["backend"]
    assert r0["prompts"] != r1["prompts"]  # each rank rolled out its own share of the batch
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    start = final_state_of_sft(tiny)
    assert any(not torch.equal(r0["state"][k], start[k]) for k in start)  # training changed the weights
