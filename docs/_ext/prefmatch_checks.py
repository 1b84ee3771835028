"""Sphinx extension: show the live result of ``prefmatch verify`` checks in the docs.

At ``config-inited`` the check registry (:func:`prefmatch.theory.checks.run_checks`) is run
once, in a background subprocess that runs while the figures are made (so a hanging or crashing check cannot take the build down with it), and
its results are cached in ``docs/_generated/checks.json`` keyed by a hash of the package
sources: an unchanged tree re-uses the results, any edit to the code re-runs them.

Markup provided (MyST syntax shown)::

    ```{check-result} pm.ode.general_solution
    ```
    a box with the check's statement, source, method, PASSED/FAILED and detail

    {check}`pm.ode.general_solution`
    an inline badge: the id and its status

    ```{check-table}
    ```
    every check id of the contract plus any other registered one, linked to the page that
    documents it

    ```{coverage-table}
    :paper: pm
    ```
    every numbered item of one paper (``theory/paper_items.toml``) with its checks' live status,
    or the reason it cannot be checked

An id that the registry does not (yet) know renders as "not yet registered"; it never fails the
build.  A registry that cannot be loaded at all is shown on the pages and logged as a warning
(which ``-W`` turns into an error) unless ``prefmatch_checks_tolerate_errors`` is true.
"""
from __future__ import annotations

import re

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole

from prefmatch.theory.checks import CONTRACT_IDS  # the stable ids the docs cover

logger = logging.getLogger(__name__)

_RUNNER = r"""
import json, sys
from prefmatch.theory.checks import run_checks
res = run_checks()
sys.stdout.write("\n@@PREFMATCH-CHECKS@@\n" + json.dumps(res))
"""


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    for sub in ("theory", "tabular", "prefmatch"):
        for p in sorted((root / sub).rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _start_registry(root: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    return subprocess.Popen([sys.executable, "-c", _RUNNER], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_registry(proc: subprocess.Popen, timeout: float) -> dict:
    """Collect the subprocess's results: {"results": [...]} or {"error": str}."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"the check registry did not finish within {timeout:.0f} s"}
    marker = "\n@@PREFMATCH-CHECKS@@\n"
    if proc.returncode != 0 or marker not in out:
        tail = (err or out).strip().splitlines()[-6:]
        return {"error": "the check registry could not be run: " + " | ".join(tail)}
    return {"results": json.loads(out.split(marker, 1)[1])}


def start_checks(app, config) -> None:
    """config-inited: start the registry in the background when the cache is stale, so it
    runs while the other extensions make the figures and the CLI/API pages."""
    root = Path(app.confdir).parent
    cache = Path(app.confdir) / "_generated" / "checks.json"
    digest = _source_digest(root)
    app.prefmatch_checks_pending = None
    app.prefmatch_checks = None
    if cache.exists() and not os.environ.get("PREFMATCH_DOCS_RERUN_CHECKS"):
        try:
            cached = json.loads(cache.read_text())
            if cached.get("digest") == digest:
                _install(app, cached)
                return
        except (OSError, ValueError):
            pass
    logger.info("[prefmatch] running the check registry (prefmatch verify) ...")
    app.prefmatch_checks_pending = (_start_registry(root), digest, cache)


def _ensure(app) -> None:
    if getattr(app, "prefmatch_checks", None) is not None:
        return
    proc, digest, cache = app.prefmatch_checks_pending
    data = _finish_registry(proc, app.config.prefmatch_checks_timeout)
    data["digest"] = digest
    if "results" in data:  # cache only complete runs
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(data, indent=1))
    app.prefmatch_checks_pending = None
    _install(app, data)


def _install(app, data: dict) -> None:
    if "error" in data:
        msg = f"[prefmatch] {data['error']}"
        if app.config.prefmatch_checks_tolerate_errors:
            logger.info(msg)
        else:
            logger.warning(msg, type="prefmatch", subtype="checks")
    results = {r["id"]: r for r in data.get("results", [])}
    app.prefmatch_checks = {"results": results, "error": data.get("error")}
    app.prefmatch_checks_digest = hashlib.sha256(
        json.dumps([(k, v.get("passed"), v.get("detail")) for k, v in sorted(results.items())]
                   + [data.get("error")]).encode()
    ).hexdigest()
    n_pass = sum(1 for r in results.values() if r.get("passed"))
    logger.info(f"[prefmatch] checks: {len(results)} registered, {n_pass} passed")


def _status(app, cid: str) -> tuple[str, str]:
    """(css class, label) for a check id."""
    _ensure(app)
    info = app.prefmatch_checks
    if info["error"] and not info["results"]:
        return "unavailable", "registry unavailable"
    r = info["results"].get(cid)
    if r is None:
        return "unregistered", "not yet registered"
    return ("passed", "passed") if r.get("passed") else ("failed", "FAILED")


def _note_use(env, docname: str) -> None:
    if not hasattr(env, "prefmatch_check_docs"):
        env.prefmatch_check_docs = set()
    env.prefmatch_check_docs.add(docname)


class check_ref(nodes.General, nodes.Element):
    """Placeholder resolved after reading: a link to the page documenting a check id."""


class CheckRole(SphinxRole):
    def run(self):
        cid = self.text.strip()
        cls, label = _status(self.env.app, cid)
        _note_use(self.env, self.env.docname)
        node = nodes.inline(classes=["pm-check-inline"])
        node += nodes.literal(cid, cid)
        node += nodes.Text(" ")
        node += nodes.inline(label, label, classes=["pm-badge", f"pm-{cls}"])
        return [node], []


# ----------------------------------------------------------------------------- statements as math
#: unicode in the checks' statements → TeX (MathJax typesets the rest of a formula's characters)
_TEX = {"π": r"\pi", "β": r"\beta", "α": r"\alpha", "λ": r"\lambda", "ψ": r"\psi", "Σ": r"\Sigma",
        "σ": r"\sigma", "θ": r"\theta", "ρ": r"\rho", "μ": r"\mu", "τ": r"\tau", "δ": r"\delta",
        "ε": r"\varepsilon", "η": r"\eta", "γ": r"\gamma", "Δ": r"\Delta", "Π": r"\Pi", "φ": r"\varphi",
        "χ": r"\chi", "ν": r"\nu", "κ": r"\kappa", "ω": r"\omega", "∝": r"\propto", "−": "-",
        "·": r"\cdot", "≤": r"\le", "≥": r"\ge", "‖": r"\|", "→": r"\to", "∞": r"\infty",
        "≈": r"\approx", "×": r"\times", "∈": r"\in", "⁻¹": "^{-1}", "≠": r"\ne", "∑": r"\sum",
        "∂": r"\partial", "√": r"\sqrt", "ℓ": r"\ell", "²": "^{2}", "∘": r"\circ", "…": r"\ldots",
        "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$"}
_FUNCS = re.compile(r"(?<![A-Za-z\\_])(logsumexp|log|exp|softmax|max|min|argmax|argmin|KL|sup|inf|lse)(?![A-Za-z])")
#: a token is a formula when it has a superscript, or a subscript on a one-character symbol
#: (π_ref, E_{x}, β_i), not an identifier with underscores (reward_clip)
_MATHY = re.compile(r"\^|(?:^|[^A-Za-z0-9_])[A-Za-z0-9\u0370-\u03ff](?:_[{A-Za-z0-9\u0370-\u03ff])|[)}]_"
                    r"|[\u0370-\u03ff∝‖≤≥≠²⁻∑∂]|^[−-](log|exp)$|^[A-Z]\d?'+$|^[A-Z]\d(/|$)"
                    r"|\b(min|max|sup|inf|argmax|argmin|lse)_")


#: a formula joined across spaces stays short: MathJax does not break inline math, so a long one would
#: stick out of a check box at 1280 px (the browser test checks every box)
_JOIN_MAX = 28
_OPS = {"+", "-", "−", "=", "∝", "≤", "≥", "·", "×", "/", "<", ">", "≈", "≠"}


def _sub(m: re.Match) -> str:
    body = m.group(1)
    return "_{" + (r"\mathrm{" + body + "}" if len(body) > 1 else body) + "}"


def statement_tex(token: str) -> str:
    """One formula of a statement in TeX: multi-letter subscripts upright, symbols as macros."""
    tex = re.sub(r"(.)\u0302", r"\\hat{\1}", token)  # π̂ (combining hat), π̄ (combining bar)
    tex = re.sub(r"(.)\u0304", r"\\bar{\1}", tex)
    tex = re.sub(r"_(\\(?:hat|bar)\{.\})", r"_{\1}", tex)  # E_P̄: a braced subscript
    tex = _FUNCS.sub(lambda m: r"\operatorname{" + m.group(1) + "}", tex)
    tex = re.sub(r"_([A-Za-z0-9]+)", _sub, tex)
    tex = re.sub(r"\^([A-Za-z0-9]{2,})", lambda m: r"^{\mathrm{" + m.group(1) + "}}", tex)
    for k in sorted(_TEX, key=len, reverse=True):
        tex = tex.replace(k, " " + _TEX[k] + " " if _TEX[k][:1] == "\\" and _TEX[k][-1:].isalpha() else _TEX[k])
    return tex


def statement_nodes(text: str) -> list:
    """A check's statement as text with its formulas (π_ref e^{r/β}, E_{π_ref} r) typeset as math."""
    out = []
    tokens = re.split(r"(\s+)", text)
    # a formula written with spaces (π_ref e^{r/β}, r_i + R(π_i)): math tokens joined across operators
    i = 0
    while i < len(tokens):
        j = i
        while (j + 2 < len(tokens) and _MATHY.search(tokens[j]) and tokens[j][-1:] not in ",.;:"
               and len("".join(tokens[i:j + 5])) <= _JOIN_MAX):
            if _MATHY.search(tokens[j + 2]):  # two formulas side by side: one (−log π)
                j += 2
            elif j + 4 < len(tokens) and tokens[j + 2] in _OPS and _MATHY.search(tokens[j + 4]):
                j += 4
            else:
                break
        if j > i:
            tokens[i:j + 1] = [" ".join(t for t in tokens[i:j + 1] if t.strip())]
        i += 1
    for token in tokens:
        core, lead, trail = token, "", ""
        while core and (core[-1] in ",.;:" or (core[-1] == ")" and core.count(")") > core.count("("))):
            core, trail = core[:-1], core[-1] + trail
        while core and core[0] == "(" and core.count("(") > core.count(")"):
            core, lead = core[1:], lead + core[0]
        if core and _MATHY.search(core) and core.count("{") == core.count("}"):
            tex = statement_tex(core)
            out += [nodes.Text(lead), nodes.math(tex, tex), nodes.Text(trail)]
        else:
            out.append(nodes.Text(token))
    merged = []  # adjacent text nodes as one
    for n in out:
        if isinstance(n, nodes.Text) and merged and isinstance(merged[-1], nodes.Text):
            merged[-1] = nodes.Text(merged[-1].astext() + n.astext())
        elif not (isinstance(n, nodes.Text) and not n.astext()):
            merged.append(n)
    return merged


class CheckResultDirective(SphinxDirective):
    """Box with one check's live result; also the anchor the check table links to."""

    required_arguments = 1
    has_content = False
    option_spec = {"class": directives.class_option}

    def run(self):
        cid = self.arguments[0].strip()
        env = self.env
        _note_use(env, env.docname)
        if not hasattr(env, "prefmatch_check_locations"):
            env.prefmatch_check_locations = {}
        env.prefmatch_check_locations.setdefault(cid, env.docname)
        anchor = "check-" + cid.replace(".", "-").replace("_", "-")
        cls, label = _status(env.app, cid)
        box = nodes.container(classes=["pm-check", f"pm-check-{cls}"], ids=[anchor])
        head = nodes.paragraph(classes=["pm-check-head"])
        head += nodes.strong("prefmatch verify: ", "prefmatch verify: ")
        head += nodes.literal(cid, cid)
        head += nodes.Text(" ")
        head += nodes.inline(label, label, classes=["pm-badge", f"pm-{cls}"])
        box += head
        r = env.app.prefmatch_checks["results"].get(cid)
        if r is not None:
            body = nodes.paragraph()
            body += statement_nodes(f"{r.get('statement', '')} ")
            body += nodes.emphasis(f"Source: {r.get('source', '')}; method: {r.get('method', '')}.",
                                   f"Source: {r.get('source', '')}; method: {r.get('method', '')}.")
            box += body
            detail = str(r.get("detail", "")).strip()
            if detail:
                box += nodes.literal_block(detail, detail, classes=["pm-check-detail"])
        elif cls == "unregistered":
            box += nodes.paragraph(
                text="This id is part of the verify contract but no check module registers it "
                "yet; the result appears here once it does.")
        else:
            err = env.app.prefmatch_checks["error"] or ""
            box += nodes.paragraph(text=f"The check registry could not be run: {err}")
        return [box]


class CheckTableDirective(SphinxDirective):
    """Table of every contract id and every registered id with its live status."""

    has_content = False

    def run(self):
        _note_use(self.env, self.env.docname)
        app = self.env.app
        _ensure(app)
        results = app.prefmatch_checks["results"]
        ids = list(CONTRACT_IDS) + sorted(set(results) - set(CONTRACT_IDS))
        table, tbody = _table(["pm-check-table"], ("check id", "status", "statement", "source", "documented in"),
                              (22, 10, 38, 18, 12))
        for cid in ids:
            cls, label = _status(app, cid)
            r = results.get(cid, {})
            row = nodes.row()
            row += nodes.entry("", nodes.paragraph("", "", nodes.literal(cid, cid)))
            row += nodes.entry("", nodes.paragraph("", "", nodes.inline(
                label, label, classes=["pm-badge", f"pm-{cls}"])))
            row += nodes.entry("", nodes.paragraph("", "", *statement_nodes(r.get("statement", ""))))
            row += nodes.entry("", nodes.paragraph(text=r.get("source", "")))
            ref = check_ref(cid=cid)
            row += nodes.entry("", nodes.paragraph("", "", ref))
            tbody += row
        n = len(results)
        n_pass = sum(1 for r in results.values() if r.get("passed"))
        missing = [c for c in CONTRACT_IDS if c not in results]
        summary = nodes.paragraph()
        summary += nodes.Text(
            f"{n} checks registered, {n_pass} passed, {n - n_pass} failed; "
            f"{len(missing)} contract id(s) not yet registered.")
        out = [summary, table]
        if app.prefmatch_checks["error"]:
            out.insert(0, nodes.warning("", nodes.paragraph(
                text=f"The check registry could not be run: {app.prefmatch_checks['error']}")))
        return out


def _table(classes: list[str], headers: tuple[str, ...], widths: tuple[int, ...]):
    """An empty docutils table with a header row: ``(table, tbody)``, rows to be appended to ``tbody``."""
    table = nodes.table(classes=classes)
    tgroup = nodes.tgroup(cols=len(headers))
    table += tgroup
    for w in widths:
        tgroup += nodes.colspec(colwidth=w)
    thead = nodes.thead()
    tgroup += thead
    row = nodes.row()
    for h in headers:
        row += nodes.entry("", nodes.paragraph(text=h))
    thead += row
    tbody = nodes.tbody()
    tgroup += tbody
    return table, tbody


class CoverageTableDirective(SphinxDirective):
    """Every numbered item of one paper (``theory/paper_items.toml``) with its checks' live
    status, or the reason it cannot be checked. Option ``:paper:`` is ``pm`` or ``mref``."""

    has_content = False
    option_spec = {"paper": directives.unchanged_required}

    def run(self):
        from prefmatch.theory.paper_items import ITEMS_FILE, PAPERS, coverage_rows, load_items

        _note_use(self.env, self.env.docname)
        self.env.note_dependency(str(ITEMS_FILE))
        app = self.env.app
        _ensure(app)
        paper = self.options.get("paper", "").strip()
        if paper not in PAPERS:
            raise self.error(f"coverage-table: :paper: must be one of {', '.join(PAPERS)}, got {paper!r}")
        results = app.prefmatch_checks["results"]
        rows = [r for r in coverage_rows(load_items(), results) if r["paper"] == paper]
        table, tbody = _table(["pm-check-table", "pm-coverage-table"],
                              ("item", "where", "what it says", "checks (live)", "not checkable because"),
                              (14, 14, 30, 22, 20))
        for r in rows:
            row = nodes.row()
            row += nodes.entry("", nodes.paragraph("", "", nodes.strong(r["item"], r["item"])))
            row += nodes.entry("", nodes.paragraph(text=r["where"]))
            row += nodes.entry("", nodes.paragraph(text=r["what"]))
            cell = nodes.entry()
            for cid, _st in r["check_status"]:
                cls, label = _status(app, cid)
                para = nodes.paragraph()
                para += check_ref(cid=cid, literal=True)
                para += nodes.Text(" ")
                para += nodes.inline(label, label, classes=["pm-badge", f"pm-{cls}"])
                cell += para
            if not r["check_status"]:
                cell += nodes.paragraph(text="—")
            row += cell
            row += nodes.entry("", nodes.paragraph(text=r["reason"] or "—"))
            tbody += row
        n = len(rows)
        with_checks = [r for r in rows if r["check_status"]]
        n_pass = sum(1 for r in with_checks if r["status"] == "passed")
        n_not = sum(1 for r in rows if r["status"] == "not checkable")
        summary = nodes.paragraph(text=(
            f"{PAPERS[paper]}: {n} numbered items; {len(with_checks)} tested by checks "
            f"({n_pass} with every check passing in this build), {n_not} not checkable, with the reason."))
        return [summary, table]


def resolve_check_refs(app, doctree, fromdocname):
    locs = getattr(app.env, "prefmatch_check_locations", {})
    for node in list(doctree.findall(check_ref)):
        cid = node["cid"]
        doc = locs.get(cid)
        if node.get("literal"):  # the id itself, linked to its check box when a page has one
            lit = nodes.literal(cid, cid)
            if doc is None:
                node.replace_self(lit)
                continue
            anchor = "check-" + cid.replace(".", "-").replace("_", "-")
            ref = nodes.reference("", "", lit, internal=True,
                                  refuri=app.builder.get_relative_uri(fromdocname, doc) + "#" + anchor)
            node.replace_self(ref)
            continue
        if doc is None:
            node.replace_self(nodes.Text("—"))
            continue
        anchor = "check-" + cid.replace(".", "-").replace("_", "-")
        title = app.env.titles.get(doc)
        text = title.astext() if title is not None else doc
        ref = nodes.reference("", text, internal=True,
                              refuri=app.builder.get_relative_uri(fromdocname, doc) + "#" + anchor)
        node.replace_self(ref)


def env_purge_doc(app, env, docname):
    if hasattr(env, "prefmatch_check_docs"):
        env.prefmatch_check_docs.discard(docname)
    if hasattr(env, "prefmatch_check_locations"):
        for k in [k for k, v in env.prefmatch_check_locations.items() if v == docname]:
            del env.prefmatch_check_locations[k]


def env_merge_info(app, env, docnames, other):
    if hasattr(other, "prefmatch_check_docs"):
        if not hasattr(env, "prefmatch_check_docs"):
            env.prefmatch_check_docs = set()
        env.prefmatch_check_docs |= other.prefmatch_check_docs
    if hasattr(other, "prefmatch_check_locations"):
        if not hasattr(env, "prefmatch_check_locations"):
            env.prefmatch_check_locations = {}
        for k, v in other.prefmatch_check_locations.items():
            env.prefmatch_check_locations.setdefault(k, v)


def env_get_outdated(app, env, added, changed, removed):
    """Re-read the pages that show check results when the results changed."""
    _ensure(app)
    if getattr(env, "prefmatch_checks_digest", None) != app.prefmatch_checks_digest:
        env.prefmatch_checks_digest = app.prefmatch_checks_digest
        return sorted(getattr(env, "prefmatch_check_docs", set()) - set(removed))
    return []


def setup(app):
    app.add_config_value("prefmatch_checks_timeout", 900.0, "env")
    app.add_config_value("prefmatch_checks_tolerate_errors", False, "env")
    app.add_node(check_ref)
    app.add_role("check", CheckRole())
    app.add_directive("check-result", CheckResultDirective)
    app.add_directive("check-table", CheckTableDirective)
    app.add_directive("coverage-table", CoverageTableDirective)
    app.connect("config-inited", start_checks)
    app.connect("env-get-outdated", env_get_outdated)
    app.connect("env-purge-doc", env_purge_doc)
    app.connect("env-merge-info", env_merge_info)
    app.connect("doctree-resolved", resolve_check_refs)
    app.add_css_file("prefmatch.css")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True,
            "env_version": 1}
