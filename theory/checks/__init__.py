"""Registry of executable checks of the papers' claims (``prefmatch verify``).

Every check has a stable ``id``, a one-line ``statement``, the ``source`` (theorem or
equation of the paper it verifies), the ``method`` (``"sympy"`` or ``"numeric"``) and a
function returning ``(passed, detail)``.  Checks are registered with :func:`check` in the
modules listed in :data:`CHECK_MODULES`; :func:`run_checks` imports them and runs them.

A check function must be deterministic (seed its own random generator) and take no
arguments.  It compares a closed form with an *independent* computation (``dsolve``,
cvxpy, scipy on logits, finite differences) to a tolerance stated in ``detail``.

A check is registered by ``@check(id)``; what it claims (statement, source in the papers, method) is data,
written once per id in ``claims.toml`` beside the modules, so the code holds only how each claim is checked.
What two checks share is factored into the module's helpers (``_instance``, ``_optimum_vs_cvxpy``,
``_disagreement_slopes``, ...).  Every check ends the same way on purpose, ``return ok, (f"...")`` with its
measured errors against its stated tolerances; ``duplicates`` pairs some of those tails by shape.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

#: modules that register checks when imported (order = report order)
CHECK_MODULES = (
    "prefmatch.theory.checks.pm",
    "prefmatch.theory.checks.mref",
    "prefmatch.theory.checks.mref_practice",
    "prefmatch.theory.checks.mref_sc",
    "prefmatch.theory.checks.grad",
    "prefmatch.theory.checks.grad_trainers",
    "prefmatch.theory.checks.items",
    "prefmatch.theory.checks.dpo",
)


#: the stable check ids other code relies on (docs pages, the verify contract)
CONTRACT_IDS = (
    "pm.ode.derivation",
    "pm.ode.general_solution",
    "pm.ode.uniqueness",
    "pm.sufficiency",
    "pm.response_dependent",
    "pm.kl_rlhf_not_pm",
    "pm.generalized_g",
    "pm.examples",
    "pm.robust_dual",
    "pm.conditional",
    "rlhf.kl_optimum",
    "rlhf.bias",
    "rlhf.collapse",
    "fdiv.optimum",
    "fdiv.only_kl_is_exp",
    "bt.mle_recovers_reward",
    "mref.escort_identity",
    "mref.rkl_optimum",
    "mref.rkl_mrpo_lower_bound",
    "mref.rkl_holder_upper_bound",
    "mref.softmax_sensitivity",
    "mref.fkl_identity",
    "mref.fkl_optimum",
    "mref.bounds_monotone",
    "mref.dpo_objectives",
    "dpo.implicit_reward",
    "dpo.population_minimizer",
    "dpo.gradient_at_optimum",
    "dpo.partial_coverage",
    "dpo.simpo_relation",
)


@dataclass(frozen=True)
class Check:
    id: str
    statement: str
    source: str
    method: str
    func: Callable[[], tuple[bool, str]]


REGISTRY: dict[str, Check] = {}


#: what every check claims (statement, source, method), by id: data beside the code that checks it
CLAIMS_FILE = Path(__file__).with_name("claims.toml")


@functools.cache
def _claims() -> dict[str, dict[str, str]]:
    with CLAIMS_FILE.open("rb") as fh:
        return tomllib.load(fh)


def check(id: str, *, statement: str | None = None, source: str | None = None, method: str | None = None):
    """Decorator registering ``func() -> (passed, detail)`` under a stable ``id``, with the claim written for
    ``id`` in :data:`CLAIMS_FILE` (``statement``, ``source``, ``method`` given together instead: checks made
    from a table in code)."""
    if (statement, source, method) == (None, None, None):
        if id not in _claims():
            raise ValueError(f"check id {id!r}: no claim for it in {CLAIMS_FILE} (add [\"{id}\"] with statement, "
                             "source and method)")
        statement, source, method = (_claims()[id][k] for k in ("statement", "source", "method"))
    elif None in (statement, source, method):
        raise ValueError(f"check id {id!r}: pass statement, source and method together, or none (then {CLAIMS_FILE.name})")
    if method not in ("sympy", "numeric"):
        raise ValueError(f"method must be 'sympy' or 'numeric', got {method!r}")

    def deco(func):
        if id in REGISTRY and REGISTRY[id].func.__qualname__ != func.__qualname__:
            raise ValueError(f"check id {id!r} registered twice")
        REGISTRY[id] = Check(id, statement, source, method, func)
        return func

    return deco


def load_all() -> dict[str, Check]:
    """Import every module of :data:`CHECK_MODULES` (skipping ones not written yet)."""
    for mod in CHECK_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
    return REGISTRY


def select(pattern: str | None = None) -> list[Check]:
    """Checks whose id matches the glob or substring ``pattern`` (all when ``None``)."""
    checks = list(load_all().values())
    if not pattern:
        return checks
    return [c for c in checks if fnmatch.fnmatch(c.id, pattern) or pattern in c.id]


def run_check(c: Check) -> dict:
    """Run one check; an exception counts as a failure with its message as detail."""
    t0 = time.perf_counter()
    try:
        passed, detail = c.func()
        passed = bool(passed)
    except Exception as exc:  # a crashing check is a failing check, reported, not raised
        passed, detail = False, f"raised {type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=3)
    return {
        "id": c.id,
        "statement": c.statement,
        "source": c.source,
        "method": c.method,
        "passed": passed,
        "detail": str(detail),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run_checks(pattern: str | None = None, progress: bool = False) -> list[dict]:
    checks = select(pattern)
    if progress:
        from tqdm import tqdm

        checks = tqdm(checks, desc="verify", unit="check", leave=False)
    return [run_check(c) for c in checks]
