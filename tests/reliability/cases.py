"""The adversarial cases, as data: every bad input gets exit 2 and one line naming the field.

Most cases are generated from what the package declares: the config dataclasses' field ranges
(``cfg_field(range=...)``), the regularizers' :class:`~prefmatch.theory.regularizers.Param` ranges
and choices, and the CLI's options.  ``docs/_ext`` counts them by class for the reliability page.

A :class:`Case` is ``argv`` (and optional ``stdin``) for ``prefmatch.cli.main`` with the regex the
one-line error must match.  Cases that need models or files on disk (run directories, NaN weights,
full disks) are the fault tests in ``tests/llm/test_faults.py``; they are listed in :data:`FAULT_CASES` with
their class so the page counts them too.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

#: the classes of the reliability issue, in the order of the docs page
CLASSES = {
    "parsing": "input that is valid JSON/YAML but not a usable number or shape",
    "numerics": "extreme but valid input: exact finite answers",
    "config-ranges": "a config field outside its declared range, or of the wrong type",
    "wrong-inputs": "an input that is the wrong thing (no reward head, not UTF-8, not a model)",
    "nan": "non-finite weights, gradients, logits or log-probabilities",
    "output-paths": "an output that is a file, under a file, read-only, full or a pseudo filesystem",
    "silent-data-loss": "a run directory overwritten or a resumed run changed without a word",
    "resources": "a request too large for memory",
    "usage": "argparse usage errors, unknown options and choices",
    "strict-configs": "a config key unknown (the nearest valid key named), repeated, of the wrong type, "
                      "for another stage, or a parameter with no meaning for the trainer",
    "limits": "lengths beyond the model's positions, β and temperature at the ends of their ranges",
    "resume": "a damaged, missing or dangling checkpoint, a finished run, changed data or fewer steps",
}


@dataclass
class Case:
    cls: str
    label: str
    argv: list[str]
    match: str
    stdin: str | None = None
    #: files written into the (empty) working directory before the command: name -> text
    files: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- config ranges (generated)
def _bad_values(iv, integer: bool) -> list[tuple[str, str]]:
    """(value, regex of the message) pairs just outside ``iv``, plus non-numbers."""
    out = []
    step = 1 if integer else 0.5
    if math.isfinite(iv.lo):
        v = iv.lo - step if iv.lo_closed else iv.lo
        out.append((repr(int(v)) if integer else repr(float(v)), re.escape(str(iv))))
    if math.isfinite(iv.hi):
        v = iv.hi + step if iv.hi_closed else iv.hi
        out.append((repr(int(v)) if integer else repr(float(v)), re.escape(str(iv))))
    out.append(("abc", "expected (an integer|a number)"))
    if integer:
        out.append(("1.5", "expected an integer"))
    else:
        out.append(("nan", "finite number"))
        if not iv.allows_inf:
            out.append(("inf", "finite number"))
    return out


def config_stages():
    from prefmatch.llm.cli import STAGES

    return STAGES


def required_argv(stage: str) -> list[str]:
    """The options a stage needs to get past its own required-field checks (nothing is loaded:
    range checks come first)."""
    base = ["--data", "data.jsonl"]
    return base + {"sft": ["--model", "m"], "rm": ["--model", "m"], "ppo": ["--policy", "p", "--reward-model", "r"],
                   "dpo": ["--model", "m"]}.get(stage, [])


def _range_cases(cls, prefix: list[str], label: str) -> list[Case]:
    """Values just outside each declared range of ``cls``'s fields, through the command ``prefix``."""
    from prefmatch.llm.config import field_range

    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    cases = []
    for f in dataclasses.fields(cls):
        iv = field_range(f)
        if iv is None:
            continue
        integer = "int" in str(hints[f.name]) and "float" not in str(hints[f.name])
        for value, msg in _bad_values(iv, integer):
            cases.append(Case("config-ranges", f"{label} --{f.name} {value}",
                              [*prefix, f"--{f.name.replace('_', '-')}", value], rf"{f.name}\b.*{msg}"))
    return cases


def config_range_cases() -> list[Case]:
    from prefmatch.llm.opinion.config import BenchmarkConfig

    cases = []
    for stage, (cls, _, _) in config_stages().items():
        cases += _range_cases(cls, ["train", stage, *required_argv(stage)], f"train {stage}")
    return cases + _range_cases(BenchmarkConfig, ["opinion"], "opinion")


# --------------------------------------------------------------------------- strict configs (generated)
def _typo(name: str) -> str:
    """A misspelling of a field name: its last letter doubled."""
    return name + name[-1]


def _yaml_case(label: str, stage: str, text: str, match: str) -> Case:
    return Case("strict-configs", f"train {stage} --config: {label}",
                ["train", stage, "--config", "c.yaml", *required_argv(stage)], match, files={"c.yaml": text})


def strict_config_cases() -> list[Case]:
    """For every stage: each field misspelt in a YAML file (the message names the field meant),
    each string field given a number and each list-of-strings field a scalar number, a repeated
    key, a config for another stage; per-response regularizer parameters for the trainers."""
    import typing

    cases = []
    for stage, (cls, _, _) in config_stages().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            typo = _typo(f.name)
            if typo in hints:
                continue
            cases.append(_yaml_case(f"{typo} (typo)", stage, f"{typo}: 1\n",
                                    rf"unknown key '{re.escape(typo)}' \(did you mean {f.name}\?\)"))
            tp = hints[f.name]
            if tp is str and f.name not in ("data",) + tuple(k for k in ("model", "policy", "reward_model")):
                cases.append(_yaml_case(f"{f.name}: 5", stage, f"{f.name}: 5\n", rf"^{f.name}: expected a string"))
            if tp == list[str]:
                cases.append(_yaml_case(f"{f.name}: 5", stage, f"{f.name}: 5\n", rf"^{f.name}: expected a string"))
        cases.append(_yaml_case("repeated key", stage, "seed: 1\nlr: 0.1\nseed: 2\n", r"duplicate key 'seed' \(line 3\)"))
        other = next(s for s in config_stages() if s != stage)
        cases.append(_yaml_case(f"stage: {other}", stage, f"stage: {other}\n", rf"stage: .* is for stage '{other}'"))
        cases.append(_yaml_case("stage: banana", stage, "stage: banana\n", r"stage: .* is for stage 'banana'"))
        cases.append(_yaml_case("not YAML", stage, "seed: [1\n", r"--config: c.yaml is not valid YAML"))
    for stage in ("ppo", "dpo"):
        cases.append(Case("strict-configs", f"train {stage} pm c2 per response",
                          ["train", stage, *required_argv(stage), "--regularizer", "pm",
                           "--regularizer-params", "{c2: [1, 2]}"], r"regularizer_params.c2: .* one value per response"))
        cases.append(Case("strict-configs", f"train {stage} regularizer-params repeated key",
                          ["train", stage, *required_argv(stage), "--regularizer", "pm",
                           "--regularizer-params", "{c1: 1, c1: 2}"], r"regularizer_params.*duplicate key 'c1'"))
    cases.append(Case("strict-configs", "opinion --config not YAML", ["opinion", "--config", "c.yaml"],
                      r"--config: c.yaml is not valid YAML", files={"c.yaml": "seeds: [1\n"}))
    cases.append(Case("strict-configs", "opinion --config repeated key", ["opinion", "--config", "c.yaml"],
                      r"duplicate key 'seeds'", files={"c.yaml": "seeds: 1\nseeds: 2\n"}))
    cases.append(Case("strict-configs", "opinion --config unknown key", ["opinion", "--config", "c.yaml"],
                      r"unknown key 'seedz' \(did you mean seeds\?\)", files={"c.yaml": "seedz: 1\n"}))
    return cases


# --------------------------------------------------------------------------- solve (parsing, generated + hand-picked)
def _solve(label, problem, match, cls="parsing") -> Case:
    text = problem if isinstance(problem, str) else json.dumps(problem)
    return Case(cls, f"solve: {label}", ["solve"], match, stdin=text)


def _valid_problem(name: str) -> dict:
    from prefmatch.theory.cli import problem_fields
    from prefmatch.theory.regularizers import REGISTRY

    prob = {"regularizer": name, "reward": [1.0, 2.0, 0.5]}
    refs = REGISTRY[name].refs
    if refs == "one":
        prob["ref"] = [0.2, 0.3, 0.5]
    if refs == "K":
        prob["refs"] = [[0.2, 0.3, 0.5], [0.5, 0.25, 0.25]]
        prob["weights"] = [0.5, 0.5]
    required, _ = problem_fields(name)
    assert set(required) <= set(prob), (name, required)
    return prob


def solve_param_cases() -> list[Case]:
    """Every regularizer's declared parameters just outside their range, of the wrong type, or not
    among the choices."""
    from prefmatch.theory.regularizers import REGISTRY

    cases = []
    for name, cls in REGISTRY.items():
        for p in cls.params:
            base = _valid_problem(name)
            if p.kind == "number":
                bad = []
                if p.lo is not None:
                    bad.append(p.lo if p.lo_open else p.lo - 1)
                if p.hi is not None:
                    bad.append(p.hi + 1 if p.hi_closed else p.hi)
                bad += ["1", True, None]
                for v in bad:
                    cases.append(_solve(f"{name} {p.name}={v!r}", {**base, p.name: v}, rf"^{p.name} must be"))
            elif p.kind == "choice":
                for v in ("nope", 3):
                    cases.append(_solve(f"{name} {p.name}={v!r}", {**base, p.name: v}, rf"^{p.name} must be one of"))
            elif p.kind == "array":
                for v in ("3", [True]):
                    cases.append(_solve(f"{name} {p.name}={v!r}", {**base, p.name: v}, rf"^{p.name}(\[0\])? must be"))
            elif p.kind == "weights":
                for v, m in (([0.7, 0.7], "sum to 1"), (["0.5", "0.5"], r"weights\[0\] must be"), ([1.0], "one entry per reference")):
                    cases.append(_solve(f"{name} weights={v!r}", {**base, "weights": v}, m))
        base = _valid_problem(name)
        for key, m in (("reward", r"reward\[1\] must be a number"),):
            cases.append(_solve(f"{name} reward with a string", {**base, key: [1, "2", 3]}, m))
        if "ref" in base:
            cases.append(_solve(f"{name} ref not summing to 1", {**base, "ref": [0.5, 0.5, 0.5]}, "rows must sum to 1"))
            cases.append(_solve(f"{name} ref shape", {**base, "ref": [0.5, 0.5]}, "must match"))
            cases.append(_solve(f"{name} negative ref", {**base, "ref": [-0.5, 1.0, 0.5]}, "probabilities >= 0"))
    return cases


HUGE_INT = "1" + "0" * 400

SOLVE_CASES = [
    _solve("strings as rewards", {"regularizer": "kl", "reward": ["1", "2"], "ref": [0.5, 0.5]}, r"reward\[0\] must be a number"),
    _solve("beta as a string", {"regularizer": "kl", "reward": [1, 2], "ref": [0.5, 0.5], "beta": "1"}, "beta must be"),
    _solve("integer reward beyond float range", f'{{"regularizer": "pm", "reward": [{HUGE_INT}, 1]}}', "beyond the float range"),
    _solve("integer beta beyond float range", f'{{"regularizer": "pm", "reward": [1, 2], "beta": {HUGE_INT}}}', "beta must be"),
    _solve("pathological nesting", '{"regularizer": "pm", "reward": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
    _solve("3-D reward", {"regularizer": "pm", "reward": [[[1, 2]]]}, "nested deeper than 2"),
    _solve("ragged reward", {"regularizer": "pm", "reward": [[1, 2], [3]]}, "rectangular"),
    _solve("empty reward", {"regularizer": "pm", "reward": []}, "non-empty"),
    _solve("reward null", {"regularizer": "pm", "reward": None}, "reward must be"),
    _solve("reward an object", {"regularizer": "pm", "reward": {"a": 1}}, "reward must be"),
    _solve("reward booleans", {"regularizer": "pm", "reward": [True, False]}, r"reward\[0\] must be a number"),
    _solve("NaN reward", '{"regularizer": "pm", "reward": [1, NaN]}', r"reward\[1\] must be a finite number"),
    _solve("duplicate keys", '{"regularizer": "pm", "reward": [1, 2], "beta": 1, "beta": 2}', "duplicate key 'beta'"),
    _solve("not JSON", "{regularizer: pm}", "not valid JSON"),
    _solve("empty input", "", "not valid JSON"),
    _solve("a list, not an object", "[1, 2]", "must be a JSON object"),
    _solve("regularizer a number", {"regularizer": 3, "reward": [1, 2]}, "regularizer must be one of"),
    _solve("unknown regularizer", {"regularizer": "ppo", "reward": [1, 2]}, "regularizer must be one of"),
    _solve("missing regularizer", {"reward": [1, 2]}, "missing field 'regularizer'"),
    _solve("missing reward", {"regularizer": "pm"}, "missing field 'reward'"),
    _solve("unknown field", {"regularizer": "pm", "reward": [1, 2], "tau": 1}, "unknown field 'tau'"),
    _solve("field not applying", {"regularizer": "pm", "reward": [1, 2], "ref": [0.5, 0.5]}, "does not apply"),
    _solve("refs disjoint supports", {"regularizer": "multi_rkl", "reward": [1, 2], "refs": [[1, 0], [0, 1]],
                                      "weights": [0.5, 0.5]}, "supports do not intersect"),
    _solve("c2 of the wrong length", {"regularizer": "pm", "reward": [1, 2], "c2": [1, 2, 3]}, "one per response"),
    Case("parsing", "solve --input missing file", ["solve", "--input", "/nonexistent/problem.json"], "--input: cannot read"),
]


# --------------------------------------------------------------------------- usage errors (every command)
USAGE_CASES = [
    Case("usage", f"{' '.join(argv)}", argv, match)
    for argv, match in [
        (["nosuchcommand"], "invalid choice"),
        (["verify", "--bogus"], "unrecognized arguments"),
        (["verify", "--only", "no-such-check-id"], "matches no check id"),
        (["solve", "--bogus"], "unrecognized arguments"),
        (["bandit", "run"], "required"),
        (["bandit", "run", "nope"], "experiment must be one of"),
        (["bandit", "run", "bias", "--quick"], "--quick applies to sample-complexity only"),
        (["bandit", "run", "bias", "--trials", "100"], "--trials applies to"),
        (["bandit", "run", "bias", "--plot", "fig.gif"], r"\.png, \.pdf or \.svg"),
        (["bandit", "run", "bias", "--seed", "x"], "--seed must be an integer"),
        (["bandit", "figures"], "required"),
        (["train"], "required"),
        (["train", "sft", "--bogus", "1"], "unrecognized arguments"),
        (["train", "ppo", "--regularizer", "nope", "--data", "d", "--policy", "p", "--reward-model", "r"], "one of"),
        (["train", "ppo", "--regularizer-mode", "nope", "--data", "d", "--policy", "p", "--reward-model", "r"], "one of"),
        (["train", "ppo", "--data", "d", "--policy", "p"], "give exactly one"),
        (["train", "ppo", "--data", "d", "--policy", "p", "--reward-model", "r", "--reward-fn", "a:b"], "give exactly one"),
        (["train", "sft", "--data", "d"], "model: required"),
        (["train", "sft", "--model", "m"], "data: required"),
        (["train", "sft", "--data", "d", "--model", "m", "--split", "nope"], "one of"),
        (["train", "sft", "--data", "d", "--model", "m", "--mixed-precision", "fp8"], "one of"),
        (["train", "sft", "--data", "d", "--model", "m", "--split-fractions", "[0.5, 0.5, 0.5]"], "summing to 1"),
        (["train", "sft", "--data", "d", "--model", "m", "--split-fractions", "[0.5, 0.5]"], "three fractions"),
        (["train", "ppo", "--data", "d", "--policy", "p", "--reward-model", "r", "--regularizer-params", "[1"],
         "regularizer_params"),
        (["train", "ppo", "--data", "d", "--policy", "p", "--reward-model", "r", "--regularizer", "cpm",
          "--regularizer-params", "{alpha: 2}"], "alpha"),
        (["train", "ppo", "--data", "d", "--policy", "p", "--reward-model", "r", "--mini-batch-size", "64",
          "--batch-size", "8"], "mini_batch_size: must be at most batch_size"),
        (["train", "ppo", "--data", "d", "--policy", "p", "--reward-model", "r", "--top-k", "5"], "top_k: must be 0"),
        (["train", "ppo", "--data", "d", "--policy", "p", "--reward-model", "r", "--gamma", "0.9"], "gamma: must be 1"),
        (["train", "ppo", "--config", "/nonexistent.yaml"], "file not found"),
        (["model"], "required"),
        (["model", "init"], "required"),
        (["model", "init", "--out", "x", "--size", "huge"], "--size: must be one of"),
        (["model", "init", "--out", "x", "--arch", "bert"], "--arch: must be one of"),
        (["model", "init", "--out", "x", "--vocab-size", "10"], r"--vocab-size must be an integer in \[260"),
        (["model", "init", "--out", "x", "--vocab-size", "abc"], "invalid int value"),
        (["model", "init", "--out", "x", "--seed", "-1"], "--seed must be an integer in"),
        (["eval"], "required"),
        (["eval", "--policy", "p", "--reward", "r", "--ref", "q", "--data", "d", "--n-prompts", "0"], "--n-prompts must be"),
        (["eval", "--policy", "p", "--reward", "r", "--ref", "q", "--data", "d", "--max-new-tokens", "0"],
         "--max-new-tokens must be"),
        (["eval", "--policy", "p", "--reward", "r", "--ref", "q", "--data", "d", "--seed", "-2"], "--seed must be"),
        (["eval", "--policy", "p", "--reward", "r", "--ref", "q", "--data", "d", "--split", "nope"], "invalid choice"),
        (["opinion", "--quick", "--full"], "not allowed with"),
        (["opinion", "--bogus"], "unrecognized arguments"),
    ]
]

RESOURCE_CASES = [
    Case("resources", "bandit sample-complexity --trials 1e8",
         ["bandit", "run", "sample-complexity", "--trials", "100000000"], r"--trials must be an integer in \[10, 100000\]"),
    Case("resources", "bandit bt-mle --trials 1e9", ["bandit", "run", "bt-mle", "--trials", "1000000000"],
         r"--trials must be an integer in \[10, 100000\]"),
    Case("resources", "bandit --trials 5", ["bandit", "run", "bt-mle", "--trials", "5"], r"--trials must be an integer in"),
]

OUTPUT_PATH_CASES = [
    Case("output-paths", "train --out ''", ["train", "sft", "--data", "d", "--model", "m", "--out", ""], "out: an empty path"),
    Case("output-paths", "model init --out /proc/...", ["model", "init", "--out", "/proc/prefmatch-test"], "out: cannot write"),
    Case("output-paths", "model init --out under /dev/null", ["model", "init", "--out", "/dev/null/x"], "out: .* which is a file"),
    Case("output-paths", "bandit --plot into a folder that cannot be made", ["bandit", "run", "bias", "--plot",
         "/proc/prefmatch-figs/f.png"], "--plot: cannot create folder"),
    Case("output-paths", "bandit figures into /proc", ["bandit", "figures", "--out", "/proc/prefmatch-figs"], "--out: cannot create"),
    Case("output-paths", "opinion --out into /proc", ["opinion", "--out", "/proc/prefmatch-opinion"], "--out: cannot write"),
    Case("output-paths", "train --out contains the --model", ["train", "sft", "--data", "d", "--model", "run/model",
                                                              "--out", "run"], r"out: run contains the input model"),
    Case("output-paths", "train --out is the --data file's folder", ["train", "sft", "--data", "run/d.jsonl",
                                                                     "--model", "m", "--out", "run"],
         r"out: run contains the input data"),
    Case("silent-data-loss", "bandit --plot replaces a file", ["bandit", "run", "bias", "--plot", "f.png"],
         r"--plot: f.png exists; pass --overwrite", files={"f.png": "an earlier figure"}),
    Case("silent-data-loss", "opinion --page replaces a file", ["opinion", "--page", "page.md", "--out", "o"],
         r"--page: page.md exists; pass --overwrite", files={"page.md": "an earlier page"}),
    Case("silent-data-loss", "bandit figures into a folder holding figures", ["bandit", "figures", "--out", "figs"],
         r"--out: figs already holds figures", files={"figs/bias.png": "an earlier figure"}),
    Case("wrong-inputs", "train --model is a file", ["train", "sft", "--data", "d.jsonl", "--model", "d.jsonl",
                                                     "--out", "o"], r"^model: d.jsonl is a file, not a model directory",
         files={"d.jsonl": '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'}),
    Case("wrong-inputs", "train ppo --reward-model is a file",
         ["train", "ppo", "--data", "d.jsonl", "--policy", "m", "--reward-model", "d.jsonl", "--out", "o"],
         r"^(policy: directory not found: m|reward_model: d.jsonl is a file)",
         files={"d.jsonl": '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'}),
    Case("wrong-inputs", "train --model with a broken config.json", ["train", "sft", "--data", "d.jsonl", "--model",
                                                                    "m", "--out", "o"],
         r"^model: m/config.json cannot be read as JSON", files={"m/config.json": "{broken", "d.jsonl": "{}\n"}),
    Case("wrong-inputs", "eval --policy a run without its model", ["eval", "--policy", "run", "--reward-model", "r",
                                                                  "--ref", "q", "--data", "d"],
         r"^--policy: the run directory run holds no final model", files={"run/config.yaml": "data: d\n"}),
    Case("wrong-inputs", "eval of a DPO run names the missing reward model",
         ["eval", "--policy", "run/model"], r"^--reward-model: required \(the run's run/config.yaml names no "
         r"reward_model \(a DPO run", files={"run/config.yaml": "data: d\nmodel: m\nreference: []\n",
                                            "run/model/config.json": "{}"}),
    Case("wrong-inputs", "train --config is a directory", ["train", "sft", "--config", "cfg"],
         r"^--config: cfg is a directory", files={"cfg/x.yaml": "seed: 1\n"}),
    Case("resume", "--resume of a path that does not exist", ["train", "ppo", "--resume", "nope"],
         r"^--resume: nope does not exist"),
    Case("resume", "--resume of a run without checkpoints", ["train", "dpo", "--resume", "run"],
         r"^--resume: no checkpoint found in run", files={"run/config.yaml": "data: d\n"}),
    Case("resume", "--allow-changes without --resume", ["train", "dpo", "--data", "d", "--model", "m",
                                                        "--allow-changes"], r"^--allow-changes: applies to --resume only"),
]


def numeric_problems() -> list[tuple[str, dict, object]]:
    """(label, problem, check(result) -> None) for extreme but valid ``solve`` input."""
    import numpy as np

    def value_between(lo, hi):
        def check(res):
            assert lo <= res["value"] <= hi, (res["value"], lo, hi)
        return check

    def value_close(v, rel=1e-12):
        def check(res):
            assert abs(res["value"] - v) <= rel * abs(v), (res["value"], v)
        return check

    def simplex(res):
        p = np.asarray(res["policy"], float)
        assert np.all(np.isfinite(p)) and np.all(p >= 0) and abs(p.sum(-1) - 1).max() <= 1e-12, p

    out = []
    r, ref = [1.0, 2.0], [0.5, 0.5]
    for beta in (1e8, 1e10, 1e16, 1e20, 1e300):
        # J = β log E_ref e^{r/β} = 1.5 + Var_ref(r)/(2β) + O(β^-2)
        out.append((f"kl beta={beta:g}", {"regularizer": "kl", "reward": r, "ref": ref, "beta": beta},
                    value_close(1.5 + 0.125 / beta)))
    for beta in (1e-10, 1e-300):
        out.append((f"kl beta={beta:g}", {"regularizer": "kl", "reward": r, "ref": ref, "beta": beta}, value_between(2.0 - 1e-6, 2.0)))
    big = [1e308, -1e308, 3.0]
    for name in ("kl", "pm", "maxent", "cpm", "fdiv", "multi_rkl", "multi_fkl", "generalized_pm"):
        prob = _valid_problem(name)
        out.append((f"{name} rewards ±1e308", {**prob, "reward": big}, simplex))
    for f in ("reverse_kl", "chi2", "hellinger", "js"):
        out.append((f"fdiv f={f} rewards ±1e308", {**_valid_problem("fdiv"), "f": f, "reward": big}, simplex))
        out.append((f"fdiv f={f} beta=1e-6", {**_valid_problem("fdiv"), "f": f, "beta": 1e-6}, simplex))
    out.append(("kl zero reference probability", {"regularizer": "kl", "reward": [5.0, 1.0], "ref": [0.0, 1.0]},
                value_close(1.0)))

    def policy_is(expected):
        def check(res):
            assert res["policy"] == expected, (res["policy"], expected)
        return check

    # β where r/β or 1/β leave the float range: the one-hot limit, never the reference by underflow
    for f, beta in (("chi2", 1e-300), ("kl", 2e-300)):
        out.append((f"fdiv f={f} beta={beta:g} off-support best", {"regularizer": "fdiv", "f": f, "reward": [5, 1, 0],
                    "ref": [0, 0.5, 0.5], "beta": beta}, policy_is([0.0, 1.0, 0.0])))
    for label, prob in (("kl beta=5e-324", {"regularizer": "kl", "reward": [5, 1, 0], "ref": [0.2, 0.3, 0.5],
                                            "beta": 5e-324}),
                        ("pm beta=1e-310", {"regularizer": "pm", "reward": [5, 1, 0], "beta": 1e-310}),
                        ("maxent rewards ±1e308 beta=1e-300", {"regularizer": "maxent", "reward": [1e308, -1e308, 3],
                                                               "beta": 1e-300}),
                        ("generalized_pm power beta=5e-324", {"regularizer": "generalized_pm", "link": "power",
                                                              "reward": [5, 1, 0], "beta": 5e-324})):
        out.append((label, prob, policy_is([1.0, 0.0, 0.0])))
    return out


#: fault tests (tests/llm/test_faults.py) by class, so that the page counts them: (class, test function name)
FAULT_CASES = [
    ("silent-data-loss", "test_existing_run_dir_is_refused_without_overwrite"),
    ("silent-data-loss", "test_overwrite_replaces_the_run"),
    ("silent-data-loss", "test_resume_restores_the_saved_config"),
    ("silent-data-loss", "test_resume_refuses_a_conflicting_option"),
    ("silent-data-loss", "test_kill_during_checkpoint_write_then_resume"),
    ("silent-data-loss", "test_model_init_refuses_an_existing_model"),
    ("silent-data-loss", "test_resume_of_an_older_checkpoint_rewinds_the_run"),
    ("output-paths", "test_out_is_a_file"),
    ("output-paths", "test_read_only_output"),
    ("output-paths", "test_disk_full_keeps_the_last_checkpoint"),
    ("wrong-inputs", "test_reward_model_without_a_trained_head"),
    ("wrong-inputs", "test_non_utf8_data_names_file_and_line"),
    ("wrong-inputs", "test_eval_reward_without_head"),
    ("nan", "test_nan_weights_stop_ppo_with_checkpoint_intact"),
    ("nan", "test_nan_weights_stop_sft"),
    ("nan", "test_eval_nan_reference"),
    ("nan", "test_eval_nan_policy"),
    ("nan", "test_kl_metric_is_never_negative"),
    ("config-ranges", "test_lora_settings_that_cannot_apply"),
    ("silent-data-loss", "test_refused_overwrite_keeps_the_old_run"),
    ("silent-data-loss", "test_failed_overwrite_brings_the_old_run_back"),
    ("silent-data-loss", "test_a_second_run_into_a_directory_in_use_is_refused"),
    ("silent-data-loss", "test_two_concurrent_runs_into_one_out"),
    ("silent-data-loss", "test_sigterm_during_an_overwrite_brings_the_old_run_back"),
    ("resume", "test_resume_of_a_finished_run_is_a_no_op"),
    ("resume", "test_resume_refuses_fewer_steps_and_keeps_the_config"),
    ("resume", "test_resume_falls_back_from_a_damaged_latest_checkpoint"),
    ("resume", "test_resume_refuses_changed_data_unless_allowed"),
    ("limits", "test_lengths_beyond_the_model_positions_are_refused"),
    ("limits", "test_ppo_trains_at_the_ends_of_the_declared_ranges"),
    ("limits", "test_dpo_trains_at_the_ends_of_the_beta_range"),
    ("wrong-inputs", "test_model_directories_without_tokenizer_or_final_model"),
]


def all_cases() -> list[Case]:
    return (config_range_cases() + solve_param_cases() + SOLVE_CASES + USAGE_CASES + RESOURCE_CASES
            + OUTPUT_PATH_CASES + strict_config_cases())


def counts_by_class() -> dict[str, int]:
    """Number of cases per class: the one-line cases, the numeric problems and the fault tests."""
    counts = dict.fromkeys(CLASSES, 0)
    for case in all_cases():
        counts[case.cls] += 1
    counts["numerics"] += len(numeric_problems())
    for cls, _ in FAULT_CASES:
        counts[cls] += 1
    return counts
