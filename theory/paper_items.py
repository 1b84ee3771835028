"""The numbered items of both papers and the checks that test them (``paper_items.toml``).

:func:`load_items` reads and validates the data file; :func:`coverage_rows` joins it with check
results (as :func:`prefmatch.theory.checks.run_checks` returns them) into the rows of the docs'
coverage page. Every item carries ``checks`` (registered ids), a ``reason`` why it cannot be
checked, or both. :func:`expand_label` turns a label such as ``"(40)–(45)"`` into the numbered
labels it stands for, so that the tests can compare the file with the papers' text.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

#: the data file (cites the extracted paper texts and the spec it was built from)
ITEMS_FILE = Path(__file__).with_name("paper_items.toml")

PAPERS = {
    "pm": "PM paper (Xiao et al., preference matching RLHF)",
    "mref": "Multi-reference paper (Aminian et al. 2025)",
}
KINDS = ("theorem", "proposition", "lemma", "corollary", "definition", "assumption", "remark",
         "example", "equation", "algorithm")
_FIELDS = ("paper", "item", "kind", "where", "what")


def load_items(path: Path | str = ITEMS_FILE) -> list[dict]:
    """The items of the data file, validated: known paper and kind, and a check or a reason."""
    with open(path, "rb") as fh:
        items = tomllib.load(fh).get("item", [])
    for k, it in enumerate(items):
        name = it.get("item", f"#{k}")
        missing = [f for f in _FIELDS if not str(it.get(f, "")).strip()]
        if missing:
            raise ValueError(f"paper item {name!r}: missing field(s) {', '.join(missing)}")
        if it["paper"] not in PAPERS:
            raise ValueError(f"paper item {name!r}: paper must be one of {', '.join(PAPERS)}, got {it['paper']!r}")
        if it["kind"] not in KINDS:
            raise ValueError(f"paper item {name!r}: kind must be one of {', '.join(KINDS)}, got {it['kind']!r}")
        checks = it.setdefault("checks", [])
        if not isinstance(checks, list) or not all(isinstance(c, str) and c for c in checks):
            raise ValueError(f"paper item {name!r}: checks must be a list of check ids")
        if not checks and not str(it.get("reason", "")).strip():
            raise ValueError(f"paper item {name!r}: needs checks or a reason why it cannot be checked")
        it.setdefault("reason", "")
    return items


def expand_label(label: str) -> list[str]:
    """Numbered labels an item stands for: "(3.3)–(3.5)" → ["(3.3)", "(3.4)", "(3.5)"],
    "(53)–(60)" → eight labels, "Theorem 1" → ["Theorem 1"]."""
    m = re.fullmatch(r"\((?P<p>[A-Z0-9]+\.)?(?P<a>\d+)\)–\((?P=p)?(?P<b>\d+)\)", label.strip())
    if m:
        prefix = m.group("p") or ""
        return [f"({prefix}{i})" for i in range(int(m.group("a")), int(m.group("b")) + 1)]
    return [label.strip()]


def coverage_rows(items: list[dict], results: dict[str, dict], registered=None) -> list[dict]:
    """One row per item: its checks with their live status, and its reason.

    ``results`` maps check id → result dict (``passed``); ``registered`` (ids) tells a registered
    check without a result ("not run") from an id no module registers. ``status`` of the row:
    ``"passed"`` (every check passed), ``"failed"``, ``"not checkable"`` (a reason, no check) or
    ``"unregistered"`` (a check id nobody registers — the tests forbid it).
    """
    registered = set(results) if registered is None else set(registered) | set(results)
    rows = []
    for it in items:
        checks = []
        for cid in it["checks"]:
            if cid in results:
                st = "passed" if results[cid].get("passed") else "failed"
            elif cid in registered:
                st = "not run"
            else:
                st = "unregistered"
            checks.append((cid, st))
        states = {s for _, s in checks}
        if not checks:
            status = "not checkable"
        elif "unregistered" in states:
            status = "unregistered"
        elif "failed" in states:
            status = "failed"
        elif "not run" in states:
            status = "not run"
        else:
            status = "passed"
        rows.append({**it, "check_status": checks, "status": status})
    return rows
