"""Theory-layer subcommands: ``prefmatch verify`` and ``prefmatch solve``."""
from __future__ import annotations

import argparse
import json
import math
import sys

from prefmatch.theory import checks, regularizers, validate
from prefmatch.theory._array import weighted_sum
from prefmatch.theory.errors import UsageError as CLIError
from prefmatch.theory.regularizers import REGISTRY, describe_params

def solve_help() -> str:
    """``prefmatch solve --help``: the schema, generated from the regularizer registry."""
    lines = "\n".join("  " + describe_params(name) for name in REGISTRY)
    return f"""\
Read one JSON problem (stdin or --input FILE) and print the optimal policy as JSON.

Input:  {{"regularizer": NAME, "reward": [...] or [[...], ...] (one row per prompt),
         "ref": [...] or [[...], ...] (probabilities; regularizers with one reference),
         "refs": [[...], ...] (K x n) or batch x K x n (regularizers with K references),
         and the regularizer's parameters:}}
{lines}
Output: {{"policy": [...], "logp": [...] (null where the probability is 0), "value": J(pi*)}}

beta multiplies the divergence for every regularizer: the objective is E_pi[r] - beta * D(pi, pi_ref)
(pm: psi = beta(-log pi + c1 + c2/pi), optimum softmax(r/beta); the PM paper's r/beta is this beta).
The multi-reference paper writes 1/beta for this beta.  "cpm" is Definition 4.1 (sequence level).
A field that does not apply to the chosen regularizer is an error.
Bad input exits with code 2 and one line on stderr naming the field and what is allowed.
"""


def problem_fields(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) fields of a ``solve`` problem for regularizer ``name`` (besides
    "regularizer" and "reward"), from the registry's declaration of its class."""
    cls = REGISTRY[name]
    required = {"none": (), "one": ("ref",), "K": ("refs",)}[cls.refs]
    # weights must match the references given, so solve asks for them
    required += tuple(p.name for p in cls.params if p.required or p.kind == "weights")
    optional = tuple(p.name for p in cls.params if p.name not in required)
    return required, optional


def register(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="run every registered check of the papers' claims (sympy and numeric)",
        description="Run the registry of executable checks (theory/checks/__init__.py). Exit code 1 if any fails.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of check results")
    p.add_argument("--only", metavar="PATTERN", help="run only checks whose id matches the glob or substring")
    p.add_argument("--list", action="store_true", help="list the check ids without running them")
    p.add_argument("--detail", action="store_true", help="print every check's full detail (failed checks always "
                   "show theirs)")
    p.set_defaults(func=cmd_verify)

    s = sub.add_parser(
        "solve",
        help="optimal policy of any regularized objective, JSON in and out",
        description=solve_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--input", metavar="FILE", help="read the problem from FILE instead of stdin")
    s.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    s.set_defaults(func=cmd_solve)


# --------------------------------------------------------------------------- verify
def cmd_verify(args) -> int:
    selected = checks.select(args.only)
    if not selected and not args.only:
        raise CLIError("no checks are registered (is the package installed correctly?)")
    if not selected:
        raise CLIError(f"--only {args.only!r} matches no check id; see `prefmatch verify --list`")
    if args.list:
        for c in selected:
            print(f"{c.id:32s} {c.source}")
        return 0
    results = []
    width = max(len(c.id) for c in selected)
    for i, c in enumerate(selected, 1):  # streamed: each line as its check finishes
        r = checks.run_check(c)
        results.append(r)
        if args.json:
            continue
        mark = "PASS" if r["passed"] else "FAIL"
        lines = r["detail"].splitlines() if r["detail"] else [""]
        print(f"[{i:>{len(str(len(selected)))}}/{len(selected)}] {mark}  {r['id']:<{width}}  {r['seconds']:6.2f}s  "
              f"{lines[0]}", flush=True)
        if args.detail or not r["passed"]:
            for line in lines[1:]:
                print(f"      {line}", flush=True)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("id", "statement", "source", "method", "passed", "detail")} for r in results], indent=2))
    else:
        n_fail = sum(not r["passed"] for r in results)
        print(f"{len(results) - n_fail} passed, {n_fail} failed")
    return 1 if any(not r["passed"] for r in results) else 0


# --------------------------------------------------------------------------- solve
def _err(msg: str):

    return CLIError(msg)


def _array(name, value, ndim_allowed):
    try:
        return validate.numbers(name, value, tuple(ndim_allowed), finite=False)
    except ValueError as e:
        raise _err(str(e)) from None


def _number(name, value):
    try:
        return validate.number(name, value)
    except ValueError as e:
        raise _err(str(e)) from None


def _probabilities(name, arr, tol=1e-6):
    import numpy as np

    if not np.all(np.isfinite(arr)):
        raise _err(f"{name} must hold finite probabilities (no NaN or inf)")
    if np.any(arr < 0):
        raise _err(f"{name} must hold probabilities >= 0, found {arr.min():g}")
    sums = arr.sum(-1)
    bad = np.abs(sums - 1.0) > tol
    if np.any(bad):
        raise _err(f"{name} rows must sum to 1 (tolerance {tol:g}), found a row summing to {sums[bad].flat[0]:.9g}")
    return arr


def parse_problem(text: str):
    """Validate a ``solve`` problem; returns (regularizer, reward, ref_logp) or raises CLIError."""
    import numpy as np

    try:
        prob = validate.load_json(text)  # NaN/Infinity parse to floats and are rejected per field below
    except ValueError as e:
        raise _err(str(e)) from None
    if not isinstance(prob, dict):
        raise _err("input must be a JSON object with fields 'regularizer', 'reward', ...")
    name = prob.get("regularizer")
    if name is None:
        raise _err(f"missing field 'regularizer' (one of {', '.join(regularizers.REGISTRY)})")
    if name not in regularizers.REGISTRY:
        raise _err(f"regularizer must be one of {', '.join(regularizers.REGISTRY)}, got {name!r}")
    cls = regularizers.REGISTRY[name]
    required, optional = problem_fields(name)
    applies = {"regularizer", "reward", *required, *optional}
    known = {"regularizer", "reward", "ref", "refs"} | {p.name for c in regularizers.REGISTRY.values() for p in c.params}
    unknown = sorted(set(prob) - known)
    if unknown:
        raise _err(f"unknown field {unknown[0]!r}; allowed fields: {', '.join(sorted(known))}")
    extra = sorted(set(prob) - applies)
    if extra:
        raise _err(f"field {extra[0]!r} does not apply to regularizer {name!r} "
                   f"(its fields: {', '.join(sorted(applies - {'regularizer', 'reward'})) or 'none'})")
    if "reward" not in prob:
        raise _err("missing field 'reward' (a list of numbers, or a list of rows for a batch)")
    for field in required:
        if field not in prob:
            raise _err(f"missing field {field!r}, required by regularizer {name!r}")
    reward = _array("reward", prob["reward"], (1, 2))
    if not np.all(np.isfinite(reward)):
        raise _err("reward must be finite (no NaN or inf)")
    n = reward.shape[-1]

    params = {}
    for p in cls.params:
        if p.name not in prob:
            continue
        value = prob[p.name]
        if p.kind == "array":
            if isinstance(value, list) and p.per_response:
                value = _array(p.name, value, (1,))
                if value.shape[-1] != n or not np.all(np.isfinite(value)):
                    raise _err(f"{p.name} must be a number or a list of {n} finite numbers (one per response)")
            else:
                value = _number(p.name, value)
        elif p.kind == "weights":
            continue  # checked against the references below
        try:
            params[p.name] = p.check(value)
        except ValueError as e:
            raise _err(str(e)) from None

    ref_logp = None
    if cls.refs == "one":
        ref = _probabilities("ref", _array("ref", prob["ref"], (1, 2)))
        if ref.shape != reward.shape:
            raise _err(f"ref has shape {list(ref.shape)} but reward has shape {list(reward.shape)}; they must match")
        with np.errstate(divide="ignore"):
            ref_logp = np.log(ref)
    if cls.refs == "K":
        refs = _array("refs", prob["refs"], (reward.ndim + 1,))
        if reward.ndim == 1:
            k = refs.shape[0]
            if refs.shape[1:] != reward.shape:
                raise _err(f"refs must be K x {n} (one row per reference), got shape {list(refs.shape)}")
        else:
            if refs.shape[0] != reward.shape[0] or refs.shape[2] != n:
                raise _err(f"refs must be batch x K x n = {reward.shape[0]} x K x {n}, got shape {list(refs.shape)}")
            k = refs.shape[1]
            refs = np.moveaxis(refs, 1, 0)  # leading K axis, the package convention
        if k == 0:
            raise _err("refs must hold at least one reference (K >= 1)")
        _probabilities("refs", refs)
        w = _array("weights", prob["weights"], (1,))
        if w.shape[0] != k:
            raise _err(f"weights must have one entry per reference (K = {k}), got {w.shape[0]}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1) > 1e-6:
            raise _err(f"weights must be non-negative and sum to 1 (tolerance 1e-6), got {w.tolist()}")
        params["weights"] = tuple(w.tolist())
        with np.errstate(divide="ignore"):
            ref_logp = np.log(refs)
        if name == "multi_rkl":

            if np.any(np.all(weighted_sum(w, ref_logp) == -np.inf, axis=-1)):
                raise _err("refs: the references' supports do not intersect, so multi_rkl has no solution")
    try:
        reg = regularizers.get(name, **params)
    except ValueError as e:
        raise _err(str(e)) from None
    return reg, reward, ref_logp


def solve_problem(text: str) -> dict:
    import numpy as np

    reg, reward, ref_logp = parse_problem(text)
    with np.errstate(all="ignore"):
        logp = reg.optimal_logp(reward, ref_logp)
        value = reg.optimal_value(reward, ref_logp)
    policy = np.exp(logp)
    if not (np.all(np.isfinite(policy)) and np.all(np.isfinite(value))) or np.any(np.isnan(logp)):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(reg).items() if not k.startswith("_"))
        raise _err(f"the optimum of regularizer {reg.name!r} ({fields}) is not finite for this reward "
                   f"(max |reward| = {np.max(np.abs(reward)):.3g}); rescale reward and beta together "
                   "(the optimum depends on reward/beta only)")
    logp_out = np.where(np.isneginf(logp), np.nan, logp)
    value_out = value.tolist() if np.ndim(value) else float(value)
    return {
        "policy": policy.tolist(),
        "logp": [[None if math.isnan(v) else v for v in row] for row in logp_out.tolist()]
        if logp.ndim == 2
        else [None if math.isnan(v) else v for v in logp_out.tolist()],
        "value": value_out,
    }


def cmd_solve(args) -> int:
    if args.input:
        try:
            with open(args.input, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as e:
            raise _err(f"--input: cannot read {args.input!r} ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise _err(f"--input: {args.input} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    else:
        text = sys.stdin.read()
    out = solve_problem(text)
    print(json.dumps(out, allow_nan=False))
    return 0
