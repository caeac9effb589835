"""The documentation builds, with every warning treated as an error, works
offline, and its interleaving diagrams render in a browser.

Runs ``sphinx-build -W -b html docs <tmp>`` in a subprocess, the way a
person (or a docs CI job) builds it: a broken cross-reference, a page left
out of the toctree, a malformed MyST block, an interleaving diagram whose
forced execution no longer happens as the catalogue says, or a CLI command
whose help cannot be generated fails this test.  The built pages must not
load anything from the network (the diagrams used to come from a Mermaid
CDN), and one diagram is screenshot in headless Chromium.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli._png import (  # tests/ is on sys.path (rootdir-relative packages)
    browser_or_skip,
    colour_counts,
    decode_png,
    screenshot,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx", reason="the docs need the test extra: pip install -e '.[test]'")
pytest.importorskip("myst_parser", reason="the docs need the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("docs")
    out = tmp / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         str(DOCS), str(out), "-d", str(tmp / "doctrees")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"sphinx-build exited {proc.returncode}\n--- stderr\n{proc.stderr}\n--- stdout\n{proc.stdout}")
    return out


def test_docs_build_without_warnings(built: Path) -> None:
    assert (built / "index.html").is_file()
    # The CLI reference is generated from the app: every command has a section.
    from mmemu.cli import app

    cli = (built / "cli.html").read_text(encoding="utf-8")
    for name in app:
        if not name.startswith("-"):
            assert f'id="cli-{name}"' in cli, f"the CLI reference has no section for {name!r}"


REMOTE = re.compile(r"""(?ix)
    <(script|img|iframe|link|source|embed)\b[^>]*\b(src|href)\s*=\s*["']?\s*(https?:)?//
  | @import\s+url\(\s*["']?\s*(https?:)?//
""")


def test_built_pages_load_nothing_from_the_network(built: Path) -> None:
    pages = sorted(built.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        text = page.read_text(encoding="utf-8")
        hit = REMOTE.search(text)
        assert hit is None, f"{page.relative_to(built)} loads {hit.group(0)!r}"
        assert "mermaid" not in text.lower(), f"{page.relative_to(built)} still mentions mermaid"
    for css in built.rglob("*.css"):
        assert not re.search(r"(?i)url\(\s*['\"]?(https?:)?//", css.read_text(encoding="utf-8")), css


def test_protocol_pages_inline_their_interleaving_diagrams(built: Path) -> None:
    from mmemu._interleavings import all_interleavings

    drawn = 0
    for page in sorted((built / "protocols").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        drawn += text.count('class="mmemu-timeline"')
    shown = sum(1 for il in all_interleavings() if il.number and il.title)
    assert drawn >= 14  # every diagram the pages had as Mermaid, now drawn from the model
    assert drawn <= shown


def test_a_diagram_renders_in_headless_chromium(built: Path, tmp_path: Path) -> None:
    browser = browser_or_skip()
    page = built / "protocols" / "release.html"
    png = tmp_path / "shot.png"
    why = screenshot(browser, page.as_uri(), png, size=(1200, 3000), profile=tmp_path / "profile")
    assert png.exists(), f"no screenshot ({why})"
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1200, 3000)
    colours = colour_counts(rows)
    # the SVG really drew: its lane heads (dark slate), the named steps
    # (blue grey) and, in the 2012 bug's diagram, the failing step (red)
    assert colours.get((0x26, 0x32, 0x38), 0) > 3000, "no lane heads drawn"
    assert colours.get((0xcf, 0xd8, 0xdc), 0) > 3000, "no named steps drawn"
    assert colours.get((0xff, 0xcd, 0xd2), 0) > 1000, "the failing step is not drawn"
