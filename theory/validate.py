"""The one parser of user-given numbers: every entry point (``prefmatch solve``, the regularizer
parameters, the trainers' config fields, the bandit commands) checks numbers here.

A number is a real JSON/YAML/CLI number, never a string or a boolean; an integer beyond the float
range, a NaN, an infinity (unless the declared range is closed at infinity), or a value outside its
declared :class:`Interval` raises :class:`ValueError` whose one-line message names the argument and
the allowed range.  :func:`load_json` rejects duplicate keys and pathological nesting with one line.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_INF_WORDS = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True)
class Interval:
    """A real interval written as in mathematics: ``Interval.parse("(0, 1]")``, ``"[0, inf)"``."""
    lo: float = -math.inf
    hi: float = math.inf
    lo_closed: bool = False
    hi_closed: bool = False

    @classmethod
    def parse(cls, text: str) -> Interval:
        m = re.fullmatch(r"\s*([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])\s*", text)
        if not m:
            raise ValueError(f"interval {text!r} is not written like '(0, 1]'")
        lo, hi = (_INF_WORDS[v.lower()] if v.lower() in _INF_WORDS else float(v) for v in (m.group(2), m.group(3)))
        return cls(lo, hi, m.group(1) == "[", m.group(4) == "]")

    def __contains__(self, v: float) -> bool:
        above = v >= self.lo if self.lo_closed else v > self.lo
        below = v <= self.hi if self.hi_closed else v < self.hi
        return bool(above and below)

    @property
    def allows_inf(self) -> bool:
        return (self.hi == math.inf and self.hi_closed) or (self.lo == -math.inf and self.lo_closed)

    def __str__(self) -> str:
        def fmt(v):
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return f"{int(v)}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
        return f"{'[' if self.lo_closed else '('}{fmt(self.lo)}, {fmt(self.hi)}{']' if self.hi_closed else ')'}"


#: the ranges most fields use
POSITIVE = Interval(0.0, math.inf)
NONNEGATIVE = Interval(0.0, math.inf, lo_closed=True)
UNIT = Interval(0.0, 1.0, True, True)
#: random seeds: numpy and torch take 32-bit unsigned seeds
SEED = Interval(0, 2**32, lo_closed=True)


def as_interval(spec) -> Interval | None:
    if spec is None or isinstance(spec, Interval):
        return spec
    return Interval.parse(spec)


def _kind(value) -> str:
    return "a string" if isinstance(value, str) else "a boolean" if isinstance(value, bool) else type(value).__name__


def number(name: str, value: Any, interval: Interval | str | None = None, *, integer: bool = False):
    """``value`` as a float (or an int when ``integer``), checked against ``interval``.

    Strings and booleans are refused (``"1"`` is not a number here: the command line coerces its
    strings before calling this); so are integers beyond the float range and non-finite values
    (unless the interval is closed at infinity)."""
    iv = as_interval(interval)
    where = f" in {iv}" if iv is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}{where}, got {value!r} ({_kind(value)})")
    if integer:
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or not float(value).is_integer():
                raise ValueError(f"{name} must be an integer{where}, got {value!r}")
        v: float = int(value)
    else:
        try:
            v = float(value)
        except OverflowError:
            raise ValueError(f"{name} must be a number{where}; {str(value)[:20]}... is beyond the float range "
                             f"(about ±1.8e308)") from None
        if not math.isfinite(v) and not (iv is not None and iv.allows_inf and not math.isnan(v)):
            raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    if iv is not None and v not in iv:
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} in {iv}, got {value!r}")
    return v


def numbers(name: str, value: Any, ndims: tuple[int, ...] = (1,), *, finite: bool = True) -> np.ndarray:
    """A non-empty rectangular nested list of real numbers → float64 array of one of ``ndims``.

    Every leaf is checked as by :func:`number` (so ``["1", "2"]`` is refused as ``beta: "1"`` is),
    and the message names the first bad entry by its index, e.g. ``reward[1][0]``."""
    dims = " or ".join(f"{d}-D" for d in ndims)
    if isinstance(value, np.ndarray):
        arr = value.astype(np.float64, copy=False)
    else:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a {dims} list of numbers, got {value!r} ({_kind(value)})")
        _walk(name, value, depth=0, max_depth=max(ndims))
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a rectangular list of numbers (rows of equal length)") from None
    if arr.ndim not in ndims or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty {dims} list of numbers, got {arr.ndim}-D with {arr.size} entries")
    if finite and not np.all(np.isfinite(arr)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name}{''.join(f'[{i}]' for i in idx)} must be finite (no NaN or inf), "
                         f"got {arr[idx]!r}")
    return arr


def _walk(name: str, value, depth: int, max_depth: int) -> None:
    if isinstance(value, (list, tuple)):
        if depth >= max_depth:
            raise ValueError(f"{name} is nested deeper than {max_depth} level(s) of lists")
        for i, v in enumerate(value):
            _walk(f"{name}[{i}]", v, depth + 1, max_depth)
        return
    number(name, value)  # raises for strings, booleans, null, out-of-range integers


def _pairs_hook(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r} in the JSON object (each field may appear once)")
        out[k] = v
    return out


def load_json(text: str, what: str = "input") -> Any:
    """Parse JSON text; one-line ValueError for invalid JSON, duplicate keys or deep nesting."""
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be a problem of this schema") from None
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
