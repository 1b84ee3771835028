"""`make demo` ends with a summary that fits one screen, however many checks and claims there are."""
from __future__ import annotations

from pathlib import Path

from prefmatch.demo import SCREEN_COLS, SCREEN_LINES, summary_lines


def test_demo_summary_fits_one_screen_and_names_the_files():
    verify = [{"id": f"c.{i}", "passed": i != 7} for i in range(300)]
    claims = [{"id": f"claim_{i}", "holds": [True, False, None][i % 3], "criterion": "x" * 200} for i in range(40)]
    cells = [{"alpha": a, "level": lv, "reduction": 0.1, "paper_reduction": 0.2 if lv == "token" else None}
             for a in (0.1, 0.3, 0.5) for lv in ("token", "sequence")]
    # a cell whose seeds did not converge has no reduction, only its verdict
    cells[1] = {"alpha": 0.1, "level": "sequence", "reduction": None, "paper_reduction": 0.0656,
                "verdict": "not evaluated (0 converged seeds)"}
    opinion = {"rows": [{}] * 60, "claims": claims, "table3": {"cells": cells}}
    out = Path("out")
    lines = summary_lines(out, verify, 9, opinion, {"verify": 30, "figures": 20, "opinion": 100})
    assert len(lines) <= SCREEN_LINES and max(map(len, lines)) <= SCREEN_COLS, "\n".join(lines)
    text = "\n".join(lines)
    assert "299 of 300 pass" in text and "c.7" in text
    assert "claims: 14 of 40 hold, 13 do not, 13 not evaluated" in text
    for path in ("out/verify.json", "out/figures/", "out/opinion.json", "out/opinion/"):
        assert path in text, path
    assert "claim_1" not in text  # claims stay in the file
    assert "cPM α=0.1 (token) vs KL: 10.0%; paper (OPT-1.3B) 20.0%" in text
    assert "cPM α=0.1 (sequence) vs KL: not evaluated (0 converged seeds); paper (OPT-1.3B) 6.6%" in text
    failed = summary_lines(out, None, None, {}, {})
    assert "did not run" in failed[0] and "opinion  failed" in failed[1]
