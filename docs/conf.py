# Build: python -m sphinx -W -b html docs docs/_build/html
"""Sphinx configuration of the forcematch documentation (MyST Markdown pages).

The CLI, config, refusal and API references are generated from the code at build time by
the local extension `_ext/forcematch_reference.py`, so they cannot drift from it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "forcematch"
author = "forcematch developers"
copyright = "forcematch developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "forcematch_reference",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# reference/_generated/ holds the generated pages' bodies: included, never built on their own.
exclude_patterns = ["_build", "reference/_generated"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: the package is installed; importing a documented module starts no work (the heavy
# libraries are imported, nothing runs). forcematch's docstrings are plain text meant to be
# read as written (Markdown-style `code`, aligned listings, |x| for a norm), not reST:
# `docstring_as_text` shows each one verbatim instead of parsing it.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}

html_theme = "alabaster"
html_title = "forcematch"
# Wider than alabaster's 940 px: the reference tables hold long messages and options.
html_theme_options = {"page_width": "1200px", "body_max_width": "none"}


def docstring_as_text(app, what, name, obj, options, lines):
    """autodoc-process-docstring: the docstring in a literal block, exactly as written."""
    if any(line.strip() for line in lines):
        lines[:] = [".. code-block:: text", ""] + [f"   {line}" for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", docstring_as_text)
