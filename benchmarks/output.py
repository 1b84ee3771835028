"""How the benchmark scripts print their result: one JSON object with ``--json`` (what report.py reads),
otherwise a few lines for a reader."""
from __future__ import annotations

import json


def emit(result: dict, as_json: bool, lines: list[str]) -> int:
    """Print ``result`` as JSON, or ``lines``; the exit code 0.

    Each benchmark passes its own report lines, f-strings of its own numbers; ``duplicates`` pairs two of
    those lists (solvers, sample_complexity) by shape: what they say is each benchmark's own."""
    print(json.dumps(result) if as_json else "\n".join(lines))
    return 0
