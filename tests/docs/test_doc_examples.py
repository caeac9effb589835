"""Every code block in docs/ runs as documented (see _doctools.py for the rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sybil", reason="the doc tests need the test extra: pip install -e '.[test]'")

from ._doctools import DOCS, doc_pages, run_document  # noqa: E402


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "examples").symlink_to(DOCS.parent / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    # rich sizes tables and the timeline from COLUMNS when not on a terminal
    monkeypatch.setenv("COLUMNS", "120")
    for var in ("MMEMU_SEED", "MMEMU_EXECUTIONS", "MMEMU_MAX_STEPS", "MMEMU_MAX_PREEMPTIONS",
                "MMEMU_STRATEGY", "MMEMU_SHRINK_BUDGET", "MMEMU_STEP_TIMEOUT", "MMEMU_LOG"):
        monkeypatch.delenv(var, raising=False)
    run_document(page)


def test_the_harness_checks_exit_status_and_output(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that states the wrong exit status, or output the command does
    not print, fails: the harness itself can fail."""
    monkeypatch.chdir(tmp_path)
    bad_exit = tmp_path / "bad_exit.md"
    bad_exit.write_text("```console\n$ mmemu run demo:lost-update-locked  # exit 1\n```\n")
    with pytest.raises(AssertionError, match="exited 0, the docs say 1"):
        run_document(bad_exit)
    bad_output = tmp_path / "bad_output.md"
    bad_output.write_text("```console\n$ mmemu run demo:lost-update  # exit 1\n"
                          "InvariantViolation: counter is 7\n```\n")
    with pytest.raises(AssertionError, match="did not print the line"):
        run_document(bad_output)
    good = tmp_path / "good.md"
    good.write_text("```console\n$ mmemu run demo:lost-update  # exit 1\n...\n"
                    "InvariantViolation: counter is 1, expected 2 (an increment was lost)\n```\n"
                    "```python\nx = 1\n```\n```python\nassert x == 1\n```\n")
    assert run_document(good) == 3
