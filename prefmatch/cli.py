"""The ``prefmatch`` command line.

Each layer owns its subcommands: it exposes ``register(subparsers)`` in its ``cli`` module
(``prefmatch.theory.cli``, ``prefmatch.tabular.cli``, ``prefmatch.llm.cli``,
``prefmatch.llm.opinion_cli``), imported here statically (imports flow one way: the layers never
import this module), which adds parsers whose ``func(args) -> int`` runs the command.  Layer CLIs
import heavy libraries (torch, cvxpy, transformers) inside ``func`` only, so ``prefmatch --help``
stays fast.

Errors a user can fix raise :class:`prefmatch.theory.errors.UsageError` (``CLIError`` here is the
same class); they are printed as one line on stderr and exit with code 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import sys

from prefmatch import __version__
from prefmatch.llm import cli as llm_cli
from prefmatch.llm import opinion_cli
from prefmatch.tabular import cli as tabular_cli
from prefmatch.theory import cli as theory_cli
from prefmatch.theory.errors import UsageError

CLIError = UsageError  # the name the commands have always raised

#: the layers' command modules, in the order of ``prefmatch --help``
LAYER_CLIS = (theory_cli, tabular_cli, llm_cli, opinion_cli)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (``prefmatch: error: ...``, exit 2), not a usage block."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="prefmatch",
        description="How RLHF regularizers bias an aligned model: theory checks, tabular "
        "bandit experiments and an LLM trainer built on one regularizer interface.",
    )
    parser.add_argument("--version", action="version", version=f"prefmatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for mod in LAYER_CLIS:
        mod.register(sub)
    accept_underscores(parser)
    return parser


def accept_underscores(parser: argparse.ArgumentParser) -> None:
    """One spelling per option in help (dashes: ``--max-new-tokens``); the underscore spelling
    (``--max_new_tokens``) is accepted everywhere as a hidden alias of the same option."""
    for action in list(parser._actions):
        for opt in action.option_strings:
            if opt.startswith("--") and "-" in opt[2:]:
                parser._option_string_actions.setdefault("--" + opt[2:].replace("-", "_"), action)
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                accept_underscores(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"prefmatch: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or pseudo filesystem, a path under a file
        where = f" {err.filename}" if err.filename else ""
        print(f"prefmatch: error: cannot write or read{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("prefmatch: error: out of memory; reduce the problem size (trials, batch size, responses)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prefmatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
