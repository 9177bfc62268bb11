"""Sphinx configuration for the gymnasiarch docs."""

from __future__ import annotations

import os
from importlib.metadata import version as _version

project = "gymnasiarch"
author = "The gymnasiarch developers"
copyright = "2026, The gymnasiarch developers"
release = _version("gymnasiarch")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
myst_heading_anchors = 3

# No network on CI machines: fetching inventories would fail and -W would
# turn that into an error. GYMNASIARCH_DOCS_ONLINE=1 switches the links on.
if os.environ.get("GYMNASIARCH_DOCS_ONLINE") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "anyio": ("https://anyio.readthedocs.io/en/stable", None),
        "structlog": ("https://www.structlog.org/en/stable", None),
    }
else:
    intersphinx_mapping = {}

html_theme = "furo"
html_title = f"gymnasiarch {release}"
