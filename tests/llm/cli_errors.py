"""What the LLM tests expect of a user error on the command line: exit code 2 and one line on stderr."""
from __future__ import annotations

from prefmatch.cli import main


def one_line_error(capsys, argv) -> str:
    """Run ``prefmatch argv``; assert exit code 2 and one ``prefmatch: error:`` line without a traceback; return it."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prefmatch: error:") and "\n" not in err and "Traceback" not in err
    return err
