"""The usage-error type of every layer, defined at the bottom of the import graph.

A layer raises :class:`UsageError` (or a subclass) for input the user can fix; the ``prefmatch``
command line (``prefmatch/cli.py``, on top) catches it and prints one line, exit code 2.  Defining it
here lets theory/, tabular/ and llm/ raise it without importing the command line above them.
"""
from __future__ import annotations


class UsageError(Exception):
    """A user-fixable error: printed as ``prefmatch: error: <message>``, exit code 2."""
