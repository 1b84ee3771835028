"""Fault tests of the reliability promise (counted by class in tests/reliability/cases.py):
no run is overwritten silently, resume keeps the run's config, kill -9 during a checkpoint write
leaves the last checkpoint complete, full and read-only disks give one line, NaN stops cleanly."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefmatch.cli import main
from prefmatch.llm.training import read_metrics

TINY_ARGS = ["--max-prompt-len", "32", "--max-response-len", "8"]


def one_line(capsys, argv) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def ppo_argv(tiny, out, *extra):
    return ["train", "ppo", "--json", "--data", tiny["data"], "--policy", tiny["sft"], "--reward-model", tiny["rm"],
            "--out", str(out), "--steps", "2", "--batch-size", "4", "--mini-batch-size", "2", "--lr", "1e-3",
            *TINY_ARGS, *extra]


def sft_argv(tiny, out, *extra):
    return ["train", "sft", "--json", "--data", tiny["data"], "--model", tiny["base"], "--out", str(out),
            "--steps", "2", "--batch-size", "4", *TINY_ARGS, *extra]


def fake_run(path: Path, n_lines: int = 30) -> None:
    (path / "model").mkdir(parents=True)
    (path / "model" / "weights").write_text("old model")
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in range(1, n_lines + 1)))
    (path / "config.yaml").write_text("steps: 30\n")


# --------------------------------------------------------------------------- silent data loss
def test_existing_run_dir_is_refused_without_overwrite(tmp_path, tiny, capsys):
    run = tmp_path / "run"
    fake_run(run)
    for argv in (ppo_argv(tiny, run), sft_argv(tiny, run)):
        msg = one_line(capsys, argv)
        assert "already holds a run" in msg and "--resume" in msg and "--overwrite" in msg
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 30
    assert (run / "model" / "weights").read_text() == "old model"


def test_overwrite_replaces_the_run(tmp_path, tiny, capsys):
    run = tmp_path / "run"
    fake_run(run)
    (run / "checkpoints" / "checkpoint-000900").mkdir(parents=True)
    assert main(sft_argv(tiny, run, "--overwrite")) == 0
    capsys.readouterr()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert not (run / "checkpoints").exists() and (run / "model" / "config.json").is_file()
    assert one_line(capsys, ppo_argv(tiny, run, "--overwrite", "--resume", str(run))).endswith("give one (continue the run, or replace it)")


def _cpm_run(tiny, tmp_path, capsys):
    run = tmp_path / "cpm"
    argv = ppo_argv(tiny, run, "--regularizer", "cpm", "--beta", "1", "--regularizer-params", "{alpha: 0.2}",
                    "--save-every", "1")
    assert main(argv) == 0
    capsys.readouterr()
    return run


def test_resume_restores_the_saved_config(tmp_path, tiny, capsys):
    run = _cpm_run(tiny, tmp_path, capsys)
    saved = (run / "config.yaml").read_text()
    # resume names only the run and the new step count: the regularizer, β and α are the run's
    assert main(["train", "ppo", "--json", "--resume", str(run), "--steps", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["steps"] == 3
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["regularizer"] == "cpm" and cfg["beta"] == 1.0 and cfg["regularizer_params"] == {"alpha": 0.2}
    assert {k: v for k, v in cfg.items() if k != "steps"} == {k: v for k, v in yaml.safe_load(saved).items() if k != "steps"}
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert (run / "checkpoints" / latest / "trainer_state.json").is_file()


def test_resume_refuses_a_conflicting_option(tmp_path, tiny, capsys):
    run = _cpm_run(tiny, tmp_path, capsys)
    before = (run / "config.yaml").read_text()
    msg = one_line(capsys, ["train", "ppo", "--resume", str(run), "--regularizer", "kl"])
    assert "--regularizer 'kl' (the run has 'cpm')" in msg
    msg = one_line(capsys, ["train", "ppo", "--resume", str(run), "--beta", "0.1"])
    assert "--beta" in msg and "conflicts" in msg
    assert (run / "config.yaml").read_text() == before
    # repeating the run's own values is fine
    assert main(["train", "ppo", "--json", "--resume", str(run), "--regularizer", "cpm", "--beta", "1",
                 "--steps", "3"]) == 0


KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
from prefmatch.llm import training
from prefmatch.cli import main

marker = Path(sys.argv[1])
real = training._fsync_tree

def slow_fsync(root):
    real(root)
    if "checkpoint-000002" in str(root):  # the second checkpoint: hang in the middle of its write
        marker.write_text("writing")
        time.sleep(600)

training._fsync_tree = slow_fsync
sys.exit(main(sys.argv[2:]))
"""


def test_kill_during_checkpoint_write_then_resume(tmp_path, tiny, capsys):
    run, marker = tmp_path / "run", tmp_path / "marker"
    script = tmp_path / "killme.py"
    script.write_text(KILL_SCRIPT)
    argv = ppo_argv(tiny, run, "--steps", "3", "--save-every", "1")
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = run / "checkpoints"
    stale = [p.name for p in ckpts.iterdir() if p.name.startswith(".tmp-")]
    assert stale, "the interrupted write should have left its temporary directory"
    latest = (ckpts / "latest").read_text().strip()
    assert latest == "checkpoint-000001" and (ckpts / latest / "trainer_state.json").is_file()
    # resume: the stale temporary is removed, the run goes on from the last complete checkpoint
    assert main(["train", "ppo", "--json", "--resume", str(run)]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in ckpts.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    latest = (ckpts / "latest").read_text().strip()
    assert latest == "checkpoint-000003" and (ckpts / latest).is_dir()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


def test_model_init_refuses_an_existing_model(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["model", "init", "--json", "--out", str(out)]) == 0
    capsys.readouterr()
    assert "already holds a model" in one_line(capsys, ["model", "init", "--out", str(out)])
    assert main(["model", "init", "--json", "--out", str(out), "--overwrite", "--seed", "1"]) == 0


# --------------------------------------------------------------------------- output paths
def test_out_is_a_file(tmp_path, tiny, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file, not a directory" in one_line(capsys, sft_argv(tiny, f))
    assert "lies under" in one_line(capsys, sft_argv(tiny, f / "sub"))
    assert f.read_text() == "x"


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size, ro=False)``: a small tmpfs (root only; the test is skipped where mount is refused)."""
    mounted = []

    def mount(size: str, ro: bool = False) -> Path:
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_read_only_output(tiny, tmpfs, capsys):
    ro = tmpfs("1m", ro=True)
    assert "cannot write in" in one_line(capsys, sft_argv(tiny, ro / "run"))
    assert "cannot write in" in one_line(capsys, ["model", "init", "--out", str(ro / "m")])


def test_disk_full_keeps_the_last_checkpoint(tiny, tmpfs, capsys):
    disk = tmpfs("3m")
    run = disk / "run"
    msg = one_line(capsys, ppo_argv(tiny, run, "--steps", "3", "--save-every", "1"))
    assert "No space left on device" in msg, msg
    ckpts = run / "checkpoints"
    latest = (ckpts / "latest").read_text().strip()
    assert (ckpts / latest / "trainer_state.json").is_file()
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".tmp-")]
    from prefmatch.llm.models import load_causal_lm

    load_causal_lm(ckpts / latest / "policy")  # complete and loadable


# --------------------------------------------------------------------------- wrong inputs
def test_reward_model_without_a_trained_head(tmp_path, tiny, capsys):
    argv = ppo_argv(tiny, tmp_path / "run")
    argv[argv.index("--reward-model") + 1] = tiny["sft"]
    msg = one_line(capsys, argv)
    assert "no trained reward head" in msg and "prefmatch train rm" in msg


def test_non_utf8_data_names_file_and_line(tmp_path, tiny, capsys):
    bad = tmp_path / "latin1.jsonl"
    good = Path(tiny["data"]).read_bytes().splitlines()
    bad.write_bytes(good[0] + b"\n" + '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}'.encode("latin-1") + b"\n")
    argv = sft_argv(tiny, tmp_path / "run")
    argv[argv.index("--data") + 1] = str(bad)
    msg = one_line(capsys, argv)
    assert f"{bad} line 2: not UTF-8" in msg
    assert "is not UTF-8 text" in one_line(capsys, ["solve", "--input", str(bad)])
    assert "is not UTF-8 text" in one_line(capsys, ["train", "sft", "--config", str(bad)])


def test_eval_reward_without_head(tiny, capsys):
    msg = one_line(capsys, ["eval", "--policy", tiny["sft"], "--reward", tiny["sft"], "--ref", tiny["sft"],
                            "--data", tiny["data"], "--n-prompts", "2", "--max-new-tokens", "4"])
    assert "no trained reward head" in msg


# --------------------------------------------------------------------------- NaN
def test_nan_weights_stop_ppo_with_checkpoint_intact(tmp_path, tiny, ppo_overrides):
    """Weights that become inf in an optimizer step stop the run at that step; the last checkpoint
    is complete and finite."""
    import torch

    from prefmatch.llm.config import load_config
    from prefmatch.llm.models import load_causal_lm
    from prefmatch.llm.ppo import PPOConfig, PPOTrainer
    from prefmatch.llm.training import TrainingError

    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "run", max_grad_norm=0.0))
    tr = PPOTrainer(cfg, quiet=True)
    tr.step()
    ckpt = tr.save_checkpoint()
    step = tr.optimizer.step

    def overflowing_step(*a, **k):  # fault injection: an update that overflows one weight to inf
        out = step(*a, **k)
        with torch.no_grad():
            next(p for p in tr.model.parameters() if p.requires_grad).view(-1)[0] = float("inf")
        return out

    tr.optimizer.step = overflowing_step
    with pytest.raises(TrainingError, match="non-finite (weights|gradient) .* at step 2.*last checkpoint .*000001"):
        tr.step()
    lm = load_causal_lm(Path(ckpt) / "policy")
    assert all(bool(torch.isfinite(p).all()) for p in lm.parameters())


def test_nan_weights_stop_sft(tmp_path, tiny, capsys, monkeypatch):
    import torch

    step = torch.optim.AdamW.step

    def nan_step(self, *a, **k):  # fault injection: an optimizer step that leaves a NaN weight
        out = step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", nan_step)
    msg = one_line(capsys, sft_argv(tiny, tmp_path / "run"))
    assert "non-finite weights after the optimizer step at step 1" in msg
    assert not (tmp_path / "run" / "model").exists()


def _nan_copy(src: str, dst: Path) -> str:
    import torch

    from prefmatch.llm.models import load_causal_lm, save_model
    from prefmatch.llm.tokenizer import load_tokenizer

    m = load_causal_lm(src)
    with torch.no_grad():
        next(m.parameters()).fill_(float("nan"))
    save_model(m, dst, load_tokenizer(src))
    return str(dst)


def _eval_argv(tiny, policy, ref):
    return ["eval", "--policy", policy, "--reward", tiny["rm"], "--ref", ref, "--data", tiny["data"],
            "--n-prompts", "2", "--max-new-tokens", "4"]


def test_eval_nan_reference(tmp_path, tiny, capsys):
    nan = _nan_copy(tiny["sft"], tmp_path / "nan")
    msg = one_line(capsys, _eval_argv(tiny, tiny["sft"], nan))
    assert msg.startswith("prefmatch: error: --ref:") and "NaN" in msg


def test_eval_nan_policy(tmp_path, tiny, capsys):
    nan = _nan_copy(tiny["sft"], tmp_path / "nan")
    msg = one_line(capsys, _eval_argv(tiny, nan, tiny["sft"]))
    assert msg.startswith("prefmatch: error: --policy:") and "NaN" in msg


def test_kl_metric_is_never_negative(tmp_path, tiny, capsys):
    """The KL in PPO's metrics and in eval is Σ_t k3 ≥ 0, and k3 is unbiased: its Monte Carlo mean
    on a categorical matches the exact KL (5 standard errors: fails with probability < 1e-6)."""
    import numpy as np

    from prefmatch.llm.metrics import token_kl_k3

    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    y = rng.choice(6, size=200_000, p=p)
    k3 = token_kl_k3([[np.log(p[t])] for t in y], [[np.log(q[t])] for t in y])
    exact = float(np.sum(p * np.log(p / q)))
    assert np.all(k3 >= 0)
    assert abs(k3.mean() - exact) < 5 * k3.std() / np.sqrt(len(k3)), (k3.mean(), exact)

    assert main(ppo_argv(tiny, tmp_path / "run", "--steps", "3")) == 0
    capsys.readouterr()
    assert all(r["kl"] >= 0 for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert main(["eval", "--json", "--policy", str(tmp_path / "run" / "model"), "--reward", tiny["rm"],
                 "--ref", tiny["sft"], "--data", tiny["data"], "--n-prompts", "4", "--max-new-tokens", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["kl"] >= 0


def test_lora_settings_that_cannot_apply(tmp_path, tiny, capsys):
    msg = one_line(capsys, sft_argv(tiny, tmp_path / "run", "--lora", "--lora-target-modules", "[nonexistent]"))
    assert msg.startswith("prefmatch: error: lora_target_modules:") and "c_attn" in msg
    assert "lora_r must be an integer in [1, inf)" in one_line(capsys, sft_argv(tiny, tmp_path / "r", "--lora", "--lora-r", "0"))


def test_resume_of_an_older_checkpoint_rewinds_the_run(tmp_path, tiny, capsys):
    """Resuming checkpoint 1 of a run that reached 2: the later checkpoint and metrics go, the new
    ones are kept (not pruned by name order), and `latest` names a checkpoint that exists."""
    run = _cpm_run(tiny, tmp_path, capsys)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-000001", "checkpoint-000002"]
    assert main(["train", "ppo", "--json", "--resume", str(ckpts / "checkpoint-000001"), "--steps", "3"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-000002", "checkpoint-000003"]
    assert (ckpts / (ckpts / "latest").read_text().strip()).is_dir()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
