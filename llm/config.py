"""Config dataclasses → YAML files → ``--key value`` overrides (TRL style).

Every training stage has one frozen-free dataclass whose fields carry a ``help`` string in
their metadata (``field(default=..., metadata={"help": ...})``).  :func:`load_config` builds
an instance from an optional YAML file, then applies ``--key value`` overrides, coercing each
value to the field's type; unknown keys and ill-typed values raise :class:`ConfigError` naming
the key and what it accepts.  :func:`config_help` renders the fields for ``--help``.

This module imports no torch: the CLI uses it to build parsers quickly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin
from collections.abc import Callable

import yaml

from prefmatch.theory.validate import Interval, as_interval, number


class ConfigError(ValueError):
    """A config file or override that cannot be used (unknown key, wrong type, bad value)."""


def cfg_field(default: Any = dataclasses.MISSING, help: str | Callable[[], str] = "",
              choices: tuple | Callable[[], tuple] | None = None, range: str | Interval | None = None, **kw):
    """``dataclasses.field`` with a ``help`` string, optional allowed ``choices`` and, for numbers,
    the allowed ``range`` written as an interval (``"(0, inf)"``, ``"[0, 1]"``).

    ``help`` and ``choices`` may be functions, called when read (so that a list that comes from a
    registry, such as the regularizers, is the registry's at that moment).  Every int and float
    field declares its range here, next to the field: :func:`validate` checks it (and finiteness)
    before any work starts, and the CLI help shows it."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices if callable(choices) else tuple(choices)
    if range is not None:
        meta["range"] = as_interval(range)
    if isinstance(default, (list, dict)):
        val = default
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(val)), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def field_choices(f: dataclasses.Field) -> tuple | None:
    """The allowed values a field declares (``None``: any)."""
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


def field_help(f: dataclasses.Field) -> str:
    h = f.metadata.get("help", "")
    return h() if callable(h) else h


def field_range(f: dataclasses.Field) -> Interval | None:
    """The interval a numeric field declares (``None``: not a number field)."""
    return f.metadata.get("range")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the annotated type ``tp``."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{name}: cannot use {value!r}")
    if tp is Any:
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            try:
                value = safe_load_unique(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            except yaml.YAMLError as e:
                raise ConfigError(f"{name}: expected a list, got {value!r}") from e
        if not isinstance(value, (list, tuple)):
            if isinstance(value, (dict, bool)) or value is None:
                raise ConfigError(f"{name}: expected a list, got {value!r}")
            value = [value]
        inner = args[0] if args else Any
        return [coerce(name, v, inner) for v in value]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = safe_load_unique(value) if value.strip() else {}
            except yaml.YAMLError as e:
                why = f" ({getattr(e, 'problem', None)})" if getattr(e, "problem", None) else ""
                raise ConfigError(f"{name}: expected a mapping like '{{beta: 0.1}}', got {value!r}{why}") from None
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping like '{{beta: 0.1}}', got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):  # a YAML number or mapping where a path or a name belongs
            raise ConfigError(f"{name}: expected a string, got {value!r} ({type(value).__name__}); quote it in YAML")
        return value
    return value


def nearest_key(key: str, allowed) -> str:
    """`` (did you mean X?)`` for the allowed key closest to ``key``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def from_dict(cls, data: dict[str, Any], source: str = "config"):
    """Build ``cls`` from a mapping; unknown keys (with the nearest valid one) and bad values raise
    :class:`ConfigError`."""
    types_ = _field_types(cls)
    for old, new in getattr(cls, "ALIASES", {}).items():  # old spellings: accepted, with a one-line note
        if old in data:
            print(f"prefmatch: note: {old} is the old name of {new}; use {new}", file=sys.stderr)
            data = {**{k: v for k, v in data.items() if k != old}, new: data[old]}
    unknown = sorted((k for k in data if k not in types_), key=str)
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"{source}: unknown key {k!r}{nearest_key(k, types_)} for {cls.__name__}"
            + (f" (also unknown: {', '.join(map(str, unknown[1:]))})" if unknown[1:] else "")
            + f"; allowed: {', '.join(types_)}"
        )
    kwargs = {k: coerce(k, v, types_[k]) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj)
    return obj


def validate(obj) -> None:
    """:func:`check_fields`, then ``obj.check()`` if present."""
    check_fields(obj)
    check = getattr(obj, "check", None)
    if callable(check):
        check()


def check_fields(obj) -> None:
    """Check every field's declared ``range`` and ``choices`` (ConfigError naming the field)."""
    for f in dataclasses.fields(obj):
        iv = field_range(f)
        value = getattr(obj, f.name)
        if iv is not None and value is not None:
            integer = isinstance(value, int) and not isinstance(value, bool)
            for v in value if isinstance(value, list) else [value]:
                try:
                    number(f.name, v, iv, integer=integer)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        choices = field_choices(f)
        if choices is not None and getattr(obj, f.name) not in choices:
            raise ConfigError(
                f"{f.name}: {getattr(obj, f.name)!r} is not allowed; choose one of {', '.join(map(str, choices))}"
            )


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--lr", "1e-5", "--beta=0.1"]`` → ``{"lr": "1e-5", "beta": "0.1"}`` (strings; coerced later).

    Dashes in keys become underscores (``--max-new-tokens`` = ``--max_new_tokens``); a key
    with no value is a boolean ``true``.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise ConfigError(f"unexpected argument {tok!r}; overrides are written --key value")
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            val = tokens[i + 1]
            i += 2
        else:
            val = "true"
            i += 1
        out[key.replace("-", "_")] = val
    return out


#: YAML configs shipped with the package (``--config tiny_ppo`` finds ``llm/configs/tiny_ppo.yaml``)
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def regularizer_params_help(names, note: str) -> str:
    """The help of a trainer's ``regularizer_params`` field: each regularizer's parameters besides β
    (from the registry) and ``note``, the trainer's own default."""
    from prefmatch.theory.regularizers import describe_params

    return ("parameters of the regularizer besides beta, as a mapping, e.g. {alpha: 0.3}; per regularizer: "
            + " | ".join(describe_params(n, exclude=("beta",)) for n in names) + f" ({note})")


def check_trainer_regularizer_params(name: str, params: dict) -> None:
    """A trainer samples whole sequences, so a parameter given per response (``c2: [1, 2]``, which
    ``solve`` accepts over an enumerated response set) has no response to attach to: refused."""
    from prefmatch.theory.regularizers import REGISTRY

    cls = REGISTRY.get(name)
    if cls is None or not isinstance(params, dict):
        return
    for prm in cls.params:
        if getattr(prm, "per_response", False) and isinstance(params.get(prm.name), (list, tuple, dict)):
            raise ConfigError(f"regularizer_params.{prm.name}: {params[prm.name]!r} gives one value per response, "
                              "which has no meaning for sampled sequences; give one number")


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGE_CONFIGS.glob("*.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (YAML says keys are
    unique; PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str):
    """``yaml.safe_load`` that refuses duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Mapping from a YAML file, or from a packaged config named without path and suffix; a file
    that cannot be read, is not UTF-8, is not YAML, repeats a key or is not a mapping is one line
    naming ``--config``."""
    p = Path(path)
    if not p.is_file() and (PACKAGE_CONFIGS / f"{p.name}.yaml").is_file() and p.name == str(path):
        p = PACKAGE_CONFIGS / f"{p.name}.yaml"
    if p.is_dir():
        raise ConfigError(f"--config: {p} is a directory, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {p} (packaged configs: {', '.join(packaged_configs())})")
    try:
        data = safe_load_unique(p.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"--config: cannot read {p} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config: {p} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())  # the problem and its line, on one line
        raise ConfigError(f"--config: {p} is not valid YAML ({first[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def load_config(cls, path: str | os.PathLike | None = None, overrides: dict[str, Any] | list[str] | None = None,
                source: str | os.PathLike | None = None):
    """``cls`` from YAML file ``path`` (optional) updated by ``overrides`` (dict or ``--key value`` list);
    ``source`` names where the values came from in errors (default: ``path``)."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    data.pop("stage", None)  # example files may say which stage they are for
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    data.update(overrides or {})
    where = source or path
    return from_dict(cls, data, source=str(where) if where else "overrides")


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def save_config(obj, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (reloadable with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def config_help(cls) -> str:
    """One line per field: ``--name (type, default) help``; for the CLI epilog."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        tp = _type_name(_field_types(cls)[f.name])
        choices = field_choices(f)
        extra = f" {{{', '.join(map(str, choices))}}}" if choices else ""
        if field_range(f) is not None:
            extra += f" in {field_range(f)}"
        lines.append(f"  --{f.name} ({tp}, default {default!r}){extra}\n      {field_help(f)}")
    return "\n".join(lines)
