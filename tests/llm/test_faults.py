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
from prefmatch.llm.train.loop import read_metrics

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
from prefmatch.llm import rundir
from prefmatch.cli import main

marker = Path(sys.argv[1])
real = rundir._fsync_tree

def slow_fsync(root):
    real(root)
    if "checkpoint-000002" in str(root):  # the second checkpoint: hang in the middle of its write
        marker.write_text("writing")
        time.sleep(600)

rundir._fsync_tree = slow_fsync
sys.exit(main(sys.argv[2:]))
"""


def _run_until_marker(script, marker, argv):
    """Start ``script`` (KILL_SCRIPT) on ``argv`` and return the process once it is inside the second checkpoint's write."""
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.2)
    return proc


def test_kill_during_checkpoint_write_then_resume(tmp_path, tiny, capsys):
    run, marker = tmp_path / "run", tmp_path / "marker"
    script = tmp_path / "killme.py"
    script.write_text(KILL_SCRIPT)
    argv = ppo_argv(tiny, run, "--steps", "3", "--save-every", "1")
    proc = _run_until_marker(script, marker, argv)
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
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer
    from prefmatch.llm.train.loop import TrainingError

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


# --------------------------------------------------------------------------- round 2: nothing destroys a run
def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_refused_overwrite_keeps_the_old_run(tmp_path, tiny, capsys):
    """--overwrite with bad data, a broken model or an --out that holds the --model: refused before
    anything in the run directory moves."""
    run = tmp_path / "run"
    fake_run(run)
    before = _snapshot(run)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "rejected": "r"}\n')
    argv = sft_argv(tiny, run, "--overwrite")
    argv[argv.index("--data") + 1] = str(bad)
    assert "line 1: missing key(s) chosen" in one_line(capsys, argv)
    broken = tmp_path / "broken"
    shutil.copytree(tiny["base"], broken)
    (broken / "config.json").write_text("{not json")
    argv = sft_argv(tiny, run, "--overwrite")
    argv[argv.index("--model") + 1] = str(broken)
    assert one_line(capsys, argv).startswith(f"prefmatch: error: model: {broken}/config.json cannot be read as JSON")
    argv = sft_argv(tiny, run, "--overwrite")
    argv[argv.index("--model") + 1] = str(run / "model")
    assert "contains the input model" in one_line(capsys, argv)
    assert _snapshot(run) == before


def test_failed_overwrite_brings_the_old_run_back(tmp_path, tiny, capsys, monkeypatch):
    """A new run that fails after it started (NaN weights at step 1) leaves the old run as it was."""
    import torch

    run = tmp_path / "run"
    fake_run(run)
    before = _snapshot(run)
    step = torch.optim.AdamW.step

    def nan_step(self, *a, **k):
        out = step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", nan_step)
    assert "non-finite weights" in one_line(capsys, sft_argv(tiny, run, "--overwrite"))
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.jsonl", "model"]


def test_a_second_run_into_a_directory_in_use_is_refused(tmp_path, tiny, capsys):
    """The lock: refused while its holder lives; a lock file left by a dead process is no obstacle."""
    from prefmatch.llm.rundir import LOCK_FILE, _RunLock

    run = tmp_path / "run"
    run.mkdir()
    holder = _RunLock(run)
    holder.acquire()
    try:
        msg = one_line(capsys, sft_argv(tiny, run))
        assert f"is in use by another run (pid {os.getpid()}" in msg
    finally:
        holder.release()
    (run / LOCK_FILE).write_text("99999999")  # a stale lock: its writer died without unlocking
    assert main(sft_argv(tiny, run)) == 0
    capsys.readouterr()
    assert not (run / LOCK_FILE).exists() and [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]


def test_two_concurrent_runs_into_one_out(tmp_path, tiny):
    """The same command twice at once: one runs, the other is refused in one line (the directory is in
    use, or, if the first run ended before the second looked, holds a run); metrics are one run's."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "prefmatch", *ppo_argv(tiny, run, "--steps", "3")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    assert sorted(c for c, _ in res) == [0, 2], res
    refused = next(e for c, e in res if c == 2).strip()
    assert len(refused.splitlines()) == 1 and ("in use by another run" in refused or "already holds a run" in refused)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


# --------------------------------------------------------------------------- round 2: resume
@pytest.fixture
def saved_dpo(tiny, tmp_path, capsys):
    """A finished DPO run of 3 steps with a checkpoint at each (its data a copy that tests may edit)."""
    data = tmp_path / "data.jsonl"
    shutil.copy(tiny["data"], data)
    run = tmp_path / "dpo"
    argv = ["train", "dpo", "--json", "--data", str(data), "--model", tiny["sft"], "--out", str(run), "--steps", "3",
            "--batch-size", "4", "--save-every", "1", "--keep-checkpoints", "3", *TINY_ARGS]
    assert main(argv) == 0
    capsys.readouterr()
    return run, data


def _resume(run, *extra):
    return ["train", "dpo", "--json", "--resume", str(run), *extra]


def test_resume_of_a_finished_run_is_a_no_op(saved_dpo, capsys):
    run, _ = saved_dpo
    before = _snapshot(run)
    assert main(_resume(run)) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["already_finished"] is True
    assert len(err.strip().splitlines()) == 1 and "already finished at step 3" in err
    assert _snapshot(run) == before  # the final eval record is not appended again


def test_resume_refuses_fewer_steps_and_keeps_the_config(saved_dpo, capsys):
    run, _ = saved_dpo
    before = _snapshot(run)
    msg = one_line(capsys, _resume(run, "--steps", "1"))
    assert "steps: 1 is below the step of the checkpoint resumed (checkpoint-000003, step 3)" in msg
    assert _snapshot(run) == before


def test_resume_falls_back_from_a_damaged_latest_checkpoint(saved_dpo, capsys):
    """Damaged state, truncated optimizer, truncated weights, a missing or dangling `latest`: the
    newest valid checkpoint is resumed, said in one line; the run ends where an intact one would."""
    run, _ = saved_dpo
    ckpts = run / "checkpoints"
    damage = {
        "trainer_state.json": lambda c: (c / "trainer_state.json").write_text("{\"st"),
        "optimizer.pt": lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:500]),
        "model.safetensors": lambda c: (c / "policy" / "model.safetensors").write_bytes(
            (c / "policy" / "model.safetensors").read_bytes()[:-100]),
    }
    pristine = run.parent / "pristine"
    shutil.copytree(run, pristine)
    for what, hurt in damage.items():
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        hurt(ckpts / "checkpoint-000003")
        assert main(_resume(run, "--steps", "4")) == 0, what
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "checkpoint-000003 is unusable" in lines[0] and what in lines[0], (what, err)
        assert "resuming from checkpoint-000002" in lines[0]
        assert json.loads(out)["steps"] == 4
        steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if not r.get("final")]
        assert steps == [1, 2, 3, 4], (what, steps)
    for what, hurt in (("missing", lambda: (ckpts / "latest").unlink()),
                       ("names", lambda: (ckpts / "latest").write_text("checkpoint-000009"))):
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        hurt()
        assert main(_resume(run, "--steps", "4")) == 0, what
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and what in err and "checkpoint-000003" in err, err
    # a checkpoint named explicitly is not replaced by another: one line saying what is wrong with it
    (ckpts / "checkpoint-000004" / "optimizer.pt").write_bytes(b"PK\x03\x04 truncated")
    assert "optimizer.pt: truncated" in one_line(capsys, _resume(ckpts / "checkpoint-000004", "--steps", "5"))


def test_resume_refuses_changed_data_unless_allowed(saved_dpo, capsys):
    run, data = saved_dpo
    lines = data.read_text().splitlines()
    data.write_text("\n".join(reversed(lines)) + "\n")  # the same records in another order: other batches
    before = _snapshot(run)
    msg = one_line(capsys, _resume(run, "--steps", "4"))
    assert f"data: {data} is not the data the run trained on" in msg and "--allow-changes" in msg
    assert _snapshot(run) == before
    assert main(_resume(run, "--steps", "4", "--allow-changes")) == 0
    capsys.readouterr()
    assert "--allow-changes: applies to --resume only" in one_line(
        capsys, ["train", "dpo", "--data", str(data), "--model", "m", "--allow-changes"])


# --------------------------------------------------------------------------- round 2: limits before work
def test_lengths_beyond_the_model_positions_are_refused(tmp_path, tiny, capsys):
    """prompt + response longer than the model's 512 positions: one line before anything is loaded
    or written, for every stage and eval (an IndexError from the position embedding otherwise)."""
    out = tmp_path / "run"
    cases = {
        "sft": sft_argv(tiny, out, "--max-prompt-len", "600"),
        "rm": ["train", "rm", "--data", tiny["data"], "--model", tiny["sft"], "--out", str(out),
               "--max-response-len", "1000"],
        "ppo": ppo_argv(tiny, out, "--max-prompt-len", "600"),
        "dpo": ["train", "dpo", "--data", tiny["data"], "--model", tiny["sft"], "--out", str(out),
                "--max-prompt-len", "500", "--max-response-len", "13"],
    }
    for stage, argv in cases.items():
        msg = one_line(capsys, argv)
        assert "exceeds the 512 positions of" in msg and "max_prompt_len + max_response_len" in msg, (stage, msg)
    msg = one_line(capsys, _eval_argv(tiny, tiny["sft"], tiny["sft"])[:-2] + ["--max-new-tokens", "1000000000"])
    assert msg.startswith("prefmatch: error: --max-prompt-len + --max-new-tokens = 32 + 1000000000 = 1000000032 "
                          "exceeds the 512 positions of --policy")
    assert not out.exists()


@pytest.mark.parametrize("extra", [("--beta", "1e6"), ("--beta", "1e-300"), ("--temperature", "0.01"),
                                   ("--temperature", "1e6")])
def test_ppo_trains_at_the_ends_of_the_declared_ranges(tmp_path, tiny, capsys, extra):
    """β and the sampling temperature at the ends of their declared ranges: finite metrics."""
    import math

    assert main(ppo_argv(tiny, tmp_path / "run", "--steps", "1", *extra)) == 0
    res = json.loads(capsys.readouterr().out)
    assert all(math.isfinite(v) for v in res["final_metrics"].values()), res


@pytest.mark.parametrize("beta", ["1e6", "1e-300"])
def test_dpo_trains_at_the_ends_of_the_beta_range(tmp_path, tiny, capsys, beta):
    import math

    argv = ["train", "dpo", "--json", "--data", tiny["data"], "--model", tiny["sft"], "--out", str(tmp_path / "r"),
            "--steps", "2", "--batch-size", "4", "--beta", beta, "--lr", "1e-2", *TINY_ARGS]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert all(math.isfinite(res[k]) for k in ("loss", "margin", "eval_loss")), res


# --------------------------------------------------------------------------- round 2: messages naming the option
def test_model_directories_without_tokenizer_or_final_model(tmp_path, tiny, capsys):
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in Path(tiny["sft"]).iterdir():
        if f.is_file() and "token" not in f.name and f.name != "special_tokens_map.json":
            shutil.copy(f, notok / f.name)
    argv = sft_argv(tiny, tmp_path / "run")
    argv[argv.index("--model") + 1] = str(notok)
    msg = one_line(capsys, argv)
    assert msg.startswith("prefmatch: error: model: ") and "tokenizer" in msg and str(notok) in msg
    msg = one_line(capsys, _eval_argv(tiny, str(notok), tiny["sft"]))
    assert msg.startswith("prefmatch: error: --policy: ") and "tokenizer" in msg  # not blamed on --reward
    unfinished = tmp_path / "unfinished"
    fake_run(unfinished)
    shutil.rmtree(unfinished / "model")
    msg = one_line(capsys, _eval_argv(tiny, str(unfinished), tiny["sft"]))
    assert msg.startswith(f"prefmatch: error: --policy: the run directory {unfinished} holds no final model")
    assert not (tmp_path / "run").exists()


def test_sigterm_during_an_overwrite_brings_the_old_run_back(tmp_path, tiny, capsys):
    """SIGTERM while the new run writes its second checkpoint: the old run's files come back as
    they were, and the lock is released (the next run starts)."""
    run, marker = tmp_path / "run", tmp_path / "marker"
    fake_run(run)
    before = _snapshot(run)
    script = tmp_path / "term.py"
    script.write_text(KILL_SCRIPT)
    argv = ppo_argv(tiny, run, "--steps", "3", "--save-every", "1", "--overwrite")
    proc = _run_until_marker(script, marker, argv)
    assert not (run / "model" / "weights").exists()  # the old run is aside while the new one runs
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=240) == 130
    assert "interrupted" in proc.stderr.read().decode()
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.jsonl", "model"]
