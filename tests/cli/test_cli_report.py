"""mmemu report: one self-contained HTML page of swimlanes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmemu._html_report import render_report, validate_report_html

from ._helpers import cli, failure_of
from ._png import browser_or_skip, colour_counts, decode_png, screenshot
from .test_cli_trace import _annotated


def _page(capsys: pytest.CaptureFixture[str], tmp_path: Path, token: str) -> tuple[Path, str]:
    path = tmp_path / "report.html"
    ran = cli(capsys, "report", token, "-o", path)
    assert ran.code == 0, ran.err
    return path, path.read_text(encoding="utf-8")


def test_demo_report_has_lanes_and_the_violation(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    failure = failure_of("demo:lost-update")
    _, page = _page(capsys, tmp_path, failure.schedule)
    shape = validate_report_html(page)
    assert shape.problems == ()
    assert shape.lanes == 2 and shape.steps == failure.steps
    assert "counter is 1, expected 2 (an increment was lost)" in shape.text
    assert "cpu0 (inc)" in shape.text and "cpu1 (inc)" in shape.text
    assert f"mmemu replay {failure.schedule}" in shape.text
    # the check after the CPUs is the failing row; the steps on "counter",
    # the object the message names, are highlighted
    assert shape.failing == 1 and "scenario check after the CPUs" in shape.text
    assert page.count("step blamed") == 4
    # hover text: a step's accesses
    assert shape.titles[4].splitlines() == ["#4 cpu1 (inc): 2. counter = tmp + 1", "reads: -",
                                            "writes: counter", "after: #1 on counter"]
    assert "1. tmp = counter" in shape.text  # the protocol, folded under the lanes
    assert "http" not in page  # nothing is fetched from the network


def test_deadlock_report_highlights_the_failing_step(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path, cli_registry: None) -> None:
    failure = failure_of("clitest:deadlock")
    _, page = _page(capsys, tmp_path, failure.schedule)
    shape = validate_report_html(page)
    assert shape.problems == () and shape.lanes == 2
    failing = failure.failure_step - 1
    title = shape.titles[failing]
    assert title.startswith(f"#{failing} cpu0 (ab): lock B")
    assert "Deadlock: no CPU can run" in title and "waits for B; holds A" in title  # the dump
    classes = re.search(rf'<div class="([^"]*)" data-step="{failing}"', page)
    assert classes is not None and "failing" in classes.group(1).split()
    assert shape.failing == 1
    assert page.count('class="span"') >= 4  # lock_both and mutex_lock bars


def test_annotations_are_listed_and_blame_wins() -> None:
    trace = _annotated()
    page = render_report(trace, title="annotated")
    shape = validate_report_html(page)
    assert shape.problems == () and shape.lanes == 2 and shape.steps == 6
    assert "page free -> reuse" in shape.text and "pfn 7" in shape.text
    assert "free=0, used=4" in shape.text
    assert "no failure" in shape.text and shape.failing == 0


def test_validator_catches_broken_pages() -> None:
    page = render_report(_annotated(), title="x")
    assert validate_report_html(page.replace('data-cpus="2"', 'data-cpus="3"')).problems
    assert validate_report_html(page.replace("<style>", '<link rel="stylesheet" href="https://x/y.css"><style>')).problems
    assert validate_report_html(page.replace("</section>", "", 1)).problems
    assert validate_report_html(page.replace('data-step="1"', 'data-step="7"')).problems


def test_report_renders_in_headless_chromium(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    browser = browser_or_skip()
    failure = failure_of("demo:lost-update")
    path, _ = _page(capsys, tmp_path, failure.schedule)
    png = tmp_path / "shot.png"
    why = screenshot(browser, path.as_uri(), png, size=(1200, 800), profile=tmp_path / "profile")
    assert png.exists(), f"no screenshot ({why})"
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1200, 800)
    colours = colour_counts(rows)
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    # the CSS really applied: the lane heads' dark slate and the failing
    # row's red fill cover visible areas
    assert colours.get((0x26, 0x32, 0x38), 0) > 2000, "lane heads not drawn"
    assert colours.get((0xff, 0xcd, 0xd2), 0) > 2000, "failing row not highlighted"
