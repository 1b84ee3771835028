"""The ``prefmatch`` command line.

Each layer owns its subcommands: it exposes ``register(subparsers)`` in its ``cli`` module
(``prefmatch.theory.cli``, ``prefmatch.tabular.cli``, ``prefmatch.llm.cli``), which adds
parsers whose ``func(args) -> int`` runs the command.  Layer CLIs import heavy libraries
(torch, cvxpy, transformers) inside ``func`` only, so ``prefmatch --help`` stays fast.

Errors a user can fix raise :class:`CLIError`; they are printed as one line on stderr and
exit with code 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

LAYER_CLIS = (
    "prefmatch.theory.cli",
    "prefmatch.tabular.cli",
    "prefmatch.llm.cli",
    "prefmatch.llm.opinion_cli",
)


class CLIError(Exception):
    """A user-fixable error: printed as ``prefmatch: error: <message>``, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefmatch",
        description="How RLHF regularizers bias an aligned model: theory checks, tabular "
        "bandit experiments and an LLM trainer built on one regularizer interface.",
    )
    from prefmatch import __version__

    parser.add_argument("--version", action="version", version=f"prefmatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for mod_name in LAYER_CLIS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as err:
            if err.name == mod_name:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"prefmatch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prefmatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
