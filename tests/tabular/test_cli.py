"""`prefmatch bandit`: list, run --json schema, exit codes, bad input."""
import json
import subprocess
import sys

import pytest

from prefmatch.cli import main


def test_list(capsys):
    assert main(["bandit", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("bias", "beta-bias", "collapse", "fdiv-bias", "conditional-pm", "multi-reference", "bt-mle",
                 "sample-complexity"):
        assert name in out


def test_run_json_schema(capsys, tmp_path):
    fig = tmp_path / "bias.png"
    assert main(["bandit", "run", "bias", "--json", "--plot", str(fig), "--seed", "3"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert list(res) == ["experiment", "params", "series", "checks"]
    assert res["experiment"] == "bias" and res["params"]["seed"] == 3
    assert all(set(c) == {"id", "passed", "detail"} for c in res["checks"])
    assert fig.stat().st_size > 1000
    assert cap.err == ""  # --json: no progress bars


def test_sample_complexity_quick_json(capsys):
    assert main(["bandit", "run", "sample-complexity", "--quick", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["series"]
    assert s["bound_holds"] is True
    assert set(s["slopes"]) == {"rkl_optimality", "rkl_suboptimality", "fkl_optimality", "fkl_suboptimality"}


def test_failing_check_exits_1(monkeypatch, capsys):
    from prefmatch.tabular import experiments

    def fake(seed=0, progress=False):
        return {"experiment": "bias", "params": {}, "series": {}, "checks": [{"id": "x", "passed": False, "detail": "d"}]}

    monkeypatch.setitem(experiments.EXPERIMENTS, "bias", experiments.Experiment("bias", "s", "f", fake))
    assert main(["bandit", "run", "bias", "--json"]) == 1


@pytest.mark.parametrize("argv, field", [
    (["bandit", "run", "nope"], "experiment"),
    (["bandit", "run", "bias", "--seed", "-3"], "--seed"),
    (["bandit", "run", "bias", "--seed", "abc"], "--seed"),
    (["bandit", "run", "bias", "--plot", "/proc/prefmatch-no-dir/x.png"], "--plot: cannot create folder"),
    (["bandit", "run", "bias", "--plot", "x.txt"], "--plot"),
    (["bandit", "run", "bias", "--quick"], "--quick"),
    (["bandit", "run", "sample-complexity", "--trials", "2"], "--trials"),
])
def test_bad_input_exit_2_one_line(argv, field):
    proc = subprocess.run([sys.executable, "-m", "prefmatch", *argv], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
