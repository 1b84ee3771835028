"""What a reader of the docs meets, checked without building them: theorem numbers come from the
papers, configuration fields show their help, the API pages follow the reading order, and no
tracker reference or path outside the repository reaches a page or a docstring.

The rendered pages themselves are checked in a browser by ``tests/test_docs_browser.py``
(``make test-browser``).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _ext(name):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_proof")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize("kind, title, page_paper, heading, ref", [
    ("theorem", "PM paper, Theorem 4, with the full optimum", None,
     "4 (PM paper), with the full optimum", "Theorem 4 of the PM paper"),
    ("definition", "Preference matching (PM paper, Definition 3.2)", None,
     "3.2 (PM paper): Preference matching", "Definition 3.2 of the PM paper"),
    ("lemma", "Multi-reference paper, Lemma 6.1 [S-prose, D]", None,
     "6.1 (multi-reference paper) [S-prose, D]", "Lemma 6.1 of the multi-reference paper"),
    ("theorem", "RKL sub-optimality gap, O(1/n) (Theorem 5.5)", "multi-reference paper",
     "5.5 (multi-reference paper): RKL sub-optimality gap, O(1/n)",
     "Theorem 5.5 of the multi-reference paper"),
    ("proposition", "PM paper, Proposition A.2", None, "A.2 (PM paper)",
     "Proposition A.2 of the PM paper"),
    ("theorem", "PM paper, Theorem 3 (as stated)", None, "3 (PM paper, as stated)",
     "Theorem 3 of the PM paper"),
    # a result of another kind, another paper's, or our own: no number at all
    ("proposition", "Robust reading of PM-RLHF (PM paper, Example 1)", None,
     "(Robust reading of PM-RLHF (PM paper, Example 1))",
     "Proposition “Robust reading of PM-RLHF (PM paper, Example 1)”"),
    ("proposition", "MRPO surrogate (Le et al. 2024, Prop. 1, reconstructed) [D]", None,
     "(MRPO surrogate (Le et al. 2024, Prop. 1, reconstructed) [D])",
     "Proposition “MRPO surrogate (Le et al. 2024, Prop. 1, reconstructed)”"),
    ("theorem", "Optimum of f-divergence RLHF (our derivation)", "PM paper",
     "(Optimum of f-divergence RLHF (our derivation))", "Theorem “Optimum of f-divergence RLHF”"),
])
def test_boxes_carry_the_papers_numbers(kind, title, page_paper, heading, ref):
    num = _ext("prefmatch_numbering")
    info = num.paper_number(kind, title, page_paper)
    assert num.box_heading(kind, info) == heading
    assert num.reference_text(kind, info) == ref


def test_every_numbered_box_in_the_docs_names_its_paper():
    num = _ext("prefmatch_numbering")
    seen = 0
    for page in sorted((DOCS / "theory").glob("*.md")):
        text = page.read_text()
        first = next((ln for ln in text.splitlines() if ln.startswith("# ")), "")
        for kind, title in re.findall(r"```\{prf:(\w+)\}\s*(.*)", text):
            if kind == "proof":
                continue
            info = num.paper_number(kind, title, num.page_paper(first))
            seen += 1
            if info["number"] is not None:
                assert info["paper"], f"{page.name}: {title!r} numbered {info['number']} without a paper"
                assert info["number"] in title
    assert seen >= 30


def test_config_fields_show_their_help():
    pytest.importorskip("sphinx")
    gen = _ext("prefmatch_generate")
    from prefmatch.llm.train.ppo import PPOConfig

    lines = list((PPOConfig.__doc__ or "").splitlines())
    gen.add_config_field_help(None, "class", "PPOConfig", PPOConfig, {}, lines)
    params = {ln.split(":")[1].split()[1]: ln for ln in lines if ln.startswith(":param ")}
    assert {"lr", "batch_size", "regularizer", "data"} <= set(params)
    assert "learning rate" in params["lr"] and "allowed (0" in params["lr"]
    assert "one of ``kl``" in params["regularizer"] or "``kl``" in params["regularizer"]
    assert not any(ln.startswith("PPOConfig(") for ln in lines), "the dataclass signature dump"
    assert "\\`" not in params["data"] and "``datasets``" in params["data"]


def test_api_pages_follow_the_reading_order():
    gen = _ext("prefmatch_generate")
    theory = gen._modules(ROOT, "theory", "prefmatch.theory")
    assert theory[0] == "prefmatch.theory.regularizers"
    assert theory.index("prefmatch.theory.bounds") > theory.index("prefmatch.theory.identities")
    assert theory.index("prefmatch.theory.checks") > theory.index("prefmatch.theory.bounds")
    llm = gen._modules(ROOT, "llm", "prefmatch.llm")
    assert llm.index("prefmatch.llm.config") < llm.index("prefmatch.llm.train.ppo")


_TRACKER = re.compile(r"\b[Ii]ssues? ?#?\d+\b|\(#\d+\)|shared/(?:spec|seeds)|/work/|\bdesign\.md\b")


def test_no_tracker_references_or_outside_paths():
    """Titles, pages and docstrings speak to a reader: no "(issue 7)", no path outside the repo."""
    files = [ROOT / "README.md"]
    for sub in ("theory", "tabular", "llm", "prefmatch", "docs"):
        for p in (ROOT / sub).rglob("*"):
            if p.suffix in (".py", ".md") and not {"_build", "_generated"} & set(p.parts):
                files.append(p)
    bad = []
    for p in files:
        for k, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if _TRACKER.search(line):
                bad.append(f"{p.relative_to(ROOT)}:{k}: {line.strip()[:90]}")
    assert not bad, "tracker references / outside paths:\n" + "\n".join(bad)
