"""The documentation builds, with every warning treated as an error.

Runs ``sphinx-build -W -b html docs <tmp>`` in a subprocess, the way a
person (or a docs CI job) builds it: a broken cross-reference, a page left
out of the toctree, a malformed mermaid or MyST block, or a CLI command whose
help cannot be generated fails this test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx", reason="the docs need the test extra: pip install -e '.[test]'")
pytest.importorskip("myst_parser", reason="the docs need the test extra: pip install -e '.[test]'")


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         str(DOCS), str(out), "-d", str(tmp_path / "doctrees")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"sphinx-build exited {proc.returncode}\n--- stderr\n{proc.stderr}\n--- stdout\n{proc.stdout}")
    assert (out / "index.html").is_file()
    # The CLI reference is generated from the app: every command has a section.
    from mmemu.cli import app

    cli = (out / "cli.html").read_text(encoding="utf-8")
    for name in app:
        if not name.startswith("-"):
            assert f'id="cli-{name}"' in cli, f"the CLI reference has no section for {name!r}"

