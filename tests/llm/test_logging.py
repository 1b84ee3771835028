"""Where a run's numbers go: metrics.jsonl, TensorBoard (report_to), one console line per logged
step when stderr is not a terminal, the log history in trainer_state.json."""
from __future__ import annotations

import json
from pathlib import Path


def test_tensorboard_and_console_lines(tmp_path, tiny, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.sft import SFTConfig, train_sft
    from prefmatch.llm.train.loop import read_metrics

    out = tmp_path / "sft"
    train_sft(load_config(SFTConfig, overrides=dict(model=tiny["base"], data=tiny["data"], out=str(out), steps=3,
                                                    batch_size=4, max_prompt_len=32, max_response_len=8,
                                                    report_to="tensorboard")), quiet=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sft step ")]
    assert [line.split(":")[0] for line in lines] == ["sft step 1", "sft step 2", "sft step 3"], err
    events = list(out.rglob("events.out.tfevents*"))
    assert events, list(out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    loss = [e.value for e in acc.Scalars("loss")]
    jsonl = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(loss) == 3 and all(abs(a - b) < 1e-5 * max(1, abs(b)) for a, b in zip(loss, jsonl))


def test_report_to_a_missing_tracker_is_one_line(tmp_path, tiny, capsys):
    import importlib.util

    from prefmatch.cli import main

    if importlib.util.find_spec("wandb") is not None:
        return
    argv = ["train", "sft", "--data", tiny["data"], "--model", tiny["base"], "--out", str(tmp_path / "w"),
            "--report-to", "wandb", "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "prefmatch: error: report_to: wandb is not installed (pip install wandb)"


def test_checkpoint_keeps_the_log_history(tmp_path, tiny, ppo_overrides):
    from prefmatch.llm.config import load_config
    from prefmatch.llm.train.ppo import PPOConfig, train_ppo

    res = train_ppo(load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "p", steps=2, save_every=2)), quiet=True)
    state = json.loads((Path(res["last_checkpoint"]) / "trainer_state.json").read_text())
    assert state["step"] == 2 and [r["step"] for r in state["log_history"]] == [1, 2]
    assert state["log_history"][1]["reward"] == res["final_metrics"]["reward"]
