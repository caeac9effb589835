"""Sphinx configuration for the mmemu documentation.

Build:  sphinx-build -W -b html docs docs/_build/html
(tests/docs/test_sphinx_build.py runs exactly that, warnings as errors.)
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # mmemu and drivers, for the CLI reference

project = "mmemu"
author = "the mmemu authors"
copyright = "the mmemu authors; GPL-2.0-only"

extensions = [
    "myst_parser",
    "mmemu_cli_help",
    "mmemu_diagrams",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
# ```{mmemu-interleaving} SUITE N``` fences draw a forced interleaving as an
# inline SVG at build time (docs/_ext/mmemu_diagrams.py): no script, nothing
# from the network.
myst_heading_anchors = 3

html_theme = "furo"
html_title = "mmemu"
pygments_style = "sphinx"

# Shell sessions are shown as ``console`` blocks; "text" for reports.
highlight_language = "python"
