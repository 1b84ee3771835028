"""`train ppo` prints the mean batch reward of its first and last quarter of steps."""
from __future__ import annotations

import json

from prefmatch.llm.cli import reward_trend


def test_reward_trend_means_the_first_and_last_quarter(tmp_path):
    f = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "reward": float(i), "kl": 0.0} for i in range(1, 21)] + [{"step": 20, "final": True, "reward": 99}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert reward_trend(f) == {"steps 1-5": 3.0, "steps 16-20": 18.0}
    f.write_text("\n".join(json.dumps({"step": i, "loss": 1.0}) for i in range(1, 21)))
    assert reward_trend(f) == {}  # SFT, DPO: no reward logged
    f.write_text("\n".join(json.dumps({"step": i, "reward": 1.0}) for i in range(1, 4)))
    assert reward_trend(f) == {}  # too few steps for a trend
    assert reward_trend(tmp_path / "missing.jsonl") == {}
