"""One CLI: every command takes --json; options are shown with dashes and accepted with
underscores; usage errors are one line."""
from __future__ import annotations

import argparse

import pytest

from prefmatch.cli import build_parser, main


def _leaves(parser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for a in subs:
        for name, child in a.choices.items():
            yield from _leaves(child, path + (name,))


LEAVES = list(_leaves(build_parser()))


def test_every_command_takes_json():
    missing = [" ".join(p) for p, parser in LEAVES if "--json" not in parser._option_string_actions]
    assert not missing, missing
    assert len(LEAVES) >= 12


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_options_shown_with_dashes_accepted_with_underscores(path, parser):
    for action in parser._actions:
        for opt in action.option_strings:
            assert "_" not in opt or opt not in parser.format_help(), f"{opt} shown in help"
            if opt.startswith("--") and "-" in opt[2:]:
                assert parser._option_string_actions.get("--" + opt[2:].replace("-", "_")) is action, opt


def test_underscore_spelling_reaches_the_same_field(capsys):
    # the same range error whichever spelling is used
    for spelling in ("--max-new-tokens", "--max_new_tokens"):
        assert main(["eval", "--policy", "p", spelling, "0"]) == 2
        assert "--max-new-tokens must be an integer in [1, inf)" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    assert main(["train", "ppo", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err
