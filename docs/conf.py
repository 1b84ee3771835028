"""Sphinx configuration of the prefmatch documentation.

Build (warnings are errors):  sphinx-build -W --keep-going -b html docs docs/_build/html
or ``make -C docs html``.  See docs/_ext/ for the pages and figures made from the code.
"""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "prefmatch"
author = "the prefmatch authors"
copyright = "2025, the prefmatch authors"
try:
    from prefmatch import __version__ as release
except Exception:  # noqa: BLE001 - the docs of a broken tree still say which version
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax shipped in _static/mathjax: formulas render offline
    "sphinx.ext.viewcode",
    "sphinx_proof",
    "sphinxcontrib.bibtex",
    "prefmatch_checks",
    "prefmatch_generate",
    "prefmatch_numbering",  # theorem boxes and references carry the papers' numbers
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md", "_generated/cli.md"]
templates_path: list[str] = []

# --- MyST
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# --- math: macros used across the theory pages
mathjax3_config = {
    "tex": {
        "macros": {
            "E": r"\mathbb{E}",
            "KL": r"\mathrm{KL}",
            "piref": r"\pi_{\mathrm{ref}}",
            "simplex": r"\Delta",
            "one": r"\mathbb{1}",
        }
    }
}

# --- bibliography
bibtex_bibfiles = ["refs.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# --- autodoc: modules still being written must not break the build; heavy optional
# dependencies are mocked so the API pages build without torch & co. being importable
autodoc_mock_imports = [
    "torch", "transformers", "accelerate", "peft", "datasets", "tokenizers", "deepspeed",
    "trl", "gguf", "llama_cpp", "safetensors",
]
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# --- sphinx-proof: the site's counter is replaced by the paper's number read from each box's
# title (docs/_ext/prefmatch_numbering.py)
proof_minimal_theme = False

# --- HTML
html_theme = "furo"
html_title = f"prefmatch {release}"
html_static_path = ["_static"]
html_theme_options = {"navigation_with_keys": True}

# --- live results and generated material (docs/_ext)
prefmatch_checks_timeout = 900.0
prefmatch_checks_tolerate_errors = False
prefmatch_api_tolerate_import_errors = False
prefmatch_figures_tolerate_errors = False
prefmatch_figure_timeout = 300.0

# nitpicky stays off: autodoc would otherwise demand targets for numpy/torch types
nitpicky = False
suppress_warnings: list[str] = []
