"""Sphinx extension: theorem boxes and cross-references carry the papers' numbers.

sphinx-proof numbers every ``prf:theorem``, ``prf:lemma`` … box with the site's own counter
("Theorem 6"), which is not the number a reader finds in the paper.  This extension reads the
number from the box's title instead, so the pages need no extra markup::

    ```{prf:theorem} PM paper, Theorem 4, with the full optimum
    :label: thm-cpm
    ```

renders as **Theorem 4 (PM paper), with the full optimum**, and ``{prf:ref}`thm-cpm``` as
"Theorem 4 of the PM paper".  The rules (:func:`paper_number`):

* the title names a result of the box's own kind with a number — ``Theorem 4``, ``Lemma A.1``,
  ``Corollary C.1`` — optionally after the paper's name (``PM paper``, ``multi-reference
  paper``); without a name the paper is the one the page's title names;
* any other box (the project's own results, a paper's equation, another paper's result) has no
  number at all: "Theorem (Optimum of f-divergence RLHF (our derivation))", referenced as
  Theorem “Optimum of f-divergence RLHF”.

A reference with explicit text (``{prf:ref}`text <label>```) keeps its text.
"""
from __future__ import annotations

import re

from docutils import nodes
from sphinx.util import logging
from sphinx.util.nodes import make_refnode
from sphinx_proof.domain import ProofDomain
from sphinx_proof.nodes import NODE_TYPES, unenumerable_node

logger = logging.getLogger(__name__)

_PAPERS = {"pm paper": "PM paper", "multi-reference paper": "multi-reference paper"}
_PAPER_RE = r"(?P<paper>PM paper|[Mm]ulti-reference paper)"
_NUM_RE = r"(?P<num>[A-Z]?\d+(?:\.\d+)*|[A-Z]\.\d+(?:\.\d+)*)"
_ENUMERABLE = tuple(set(NODE_TYPES.values()))


def _number_regex(kind: str) -> re.Pattern:
    return re.compile(rf"(?:{_PAPER_RE},?\s+)?(?P<kind>{kind.title()})\s+{_NUM_RE}\b")


def _tidy(text: str) -> str:
    text = re.sub(r"\(\s*,\s*", "(", text)
    text = re.sub(r"\s*,\s*\)", ")", text)
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"\s{2,}", " ", text).strip(" ,;")
    return text


def page_paper(title: str) -> str | None:
    """The paper a page is about, from its title ("… (PM paper, Section 3)")."""
    m = re.search(_PAPER_RE, title or "")
    return _PAPERS[m.group("paper").lower()] if m else None


def paper_number(kind: str, title: str, default_paper: str | None = None) -> dict:
    """Split a box title into the paper's number and the rest.

    Returns ``{"number", "paper", "rest", "short"}``: ``number`` is None when the title names
    no result of this kind (the box is then unnumbered); ``short`` is the title without
    provenance tags (``[S-prose, D]``) for references to an unnumbered box.
    """
    title = title.strip()
    short = _tidy(re.sub(r"\s*\[[^\]]*\]", "", title))
    short = _tidy(re.sub(r"\s*\((?:our|as stated)[^)]*\)\s*$", "", short))
    m = _number_regex(kind).search(title)
    if not m:
        return {"number": None, "paper": None, "rest": title, "short": short or title}
    paper = _PAPERS[m.group("paper").lower()] if m.group("paper") else default_paper
    rest = _tidy(title[:m.start()] + title[m.end():])
    return {"number": m.group("num"), "paper": paper, "rest": rest, "short": short or title}


def _kind_title(kind: str) -> str:
    return kind.title()


def box_heading(kind: str, info: dict) -> str:
    """The text after the kind's name in a box's title bar."""
    if info["number"] is None:
        return f"({info['rest']})" if info["rest"] else ""
    head = info["number"] + (f" ({info['paper']})" if info["paper"] else "")
    rest = info["rest"]
    if rest.startswith("(") and rest.endswith(")") and rest.count("(") == 1:
        inner = rest[1:-1]
        return (f"{info['number']} ({info['paper']}, {inner})" if info["paper"]
                else f"{head} ({inner})")
    if not rest:
        return head
    if rest.startswith("["):  # provenance tags follow the number directly
        return f"{head} {rest}"
    return head + (f", {rest}" if rest[0].islower() else f": {rest}")


def reference_text(kind: str, info: dict) -> str:
    """How a ``{prf:ref}`` without explicit text reads."""
    name = _kind_title(kind)
    if info["number"] is None:
        return f"{name} “{info['short']}”"
    return f"{name} {info['number']}" + (f" of the {info['paper']}" if info["paper"] else "")


def renumber(app, doctree) -> None:
    """doctree-read: give each box the paper's number and drop the site's counter."""
    env = app.env
    first = next(iter(doctree.findall(nodes.title)), None)
    default_paper = page_paper(first.astext() if first is not None else "")
    proofs = getattr(env, "proof_list", {})
    for node in list(doctree.findall(lambda n: isinstance(n, _ENUMERABLE + (unenumerable_node,)))):
        kind = node.get("realtype", "")
        label = node.get("label", "")
        raw = node.get("title", "").strip()
        if raw.startswith("(") and raw.endswith(")"):
            raw = raw[1:-1]
        info = paper_number(kind, raw, default_paper)
        heading = box_heading(kind, info)
        title_node = next((c for c in node.children if isinstance(c, nodes.title)), None)
        if title_node is None:
            continue
        plain = all(isinstance(c, nodes.Text) for c in title_node.children)
        if plain:  # a title with markup (math, literals) keeps its nodes
            title_node.children = []
            title_node += nodes.Text(" " + heading if heading else "")
        node["classes"].append("pm-paper-numbered" if info["number"] else "pm-unnumbered")
        ids = list(node["ids"])
        for i in ids:
            if i not in title_node["ids"]:
                title_node["ids"].append(i)
        if isinstance(node, _ENUMERABLE):
            new = unenumerable_node()
            new.attributes.update(node.attributes)
            new.document = node.document
            new += node.children
            node.replace_self(new)
        if label in proofs:
            proofs[label]["nonumber"] = True
            proofs[label]["paper_reference"] = reference_text(kind, info)
            proofs[label]["paper_number"] = info["number"]
            proofs[label]["paper"] = info["paper"]


class PaperNumberProofDomain(ProofDomain):
    """The ``prf`` domain, with references that read the paper's number."""

    def resolve_xref(self, env, fromdocname, builder, typ, target, node, contnode):
        match = getattr(env, "proof_list", {}).get(target)
        if (node.attributes.get("refdomain", "") != self.name or match is None
                or "paper_reference" not in match):
            return super().resolve_xref(env, fromdocname, builder, typ, target, node, contnode)
        title = contnode[0]
        if target in contnode[0]:
            title = nodes.Text(match["paper_reference"])
        return make_refnode(builder, fromdocname, match["docname"], target, title)


def setup(app):
    app.setup_extension("sphinx_proof")
    app.add_domain(PaperNumberProofDomain, override=True)
    app.connect("doctree-read", renumber)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True,
            "env_version": 1}
