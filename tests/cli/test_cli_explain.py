"""mmemu explain: the protocol as a kernel comment, and what breaks it."""

from __future__ import annotations

import pytest

from mmemu._explain import kernel_comment

from ._helpers import cli


def test_demo_shows_its_protocol_and_minimal_failure(capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "explain", "demo:lost-update")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "/*"
    assert lines[1].startswith(" * demo:lost-update - ")
    end = lines.index(" */")
    body = lines[1:end]
    assert all(ln.startswith(" *") for ln in body)
    comment = "\n".join(body)
    # numbered steps per side and the interleavings that matter
    assert " *     1. tmp = counter              1. tmp = counter" in comment
    assert " *     2. counter = tmp + 1          2. counter = tmp + 1" in comment
    assert "There is 1 critical interleaving that matters:" in comment
    assert "``" not in comment  # reST literals are softened for the terminal
    # a teaching scenario that fails: its minimal failing timeline follows
    rest = "\n".join(lines[end:])
    assert "InvariantViolation after 6 steps, 1 preemption" in rest
    assert "#2* |" in rest and "mmemu replay mm1." in rest


def test_suite_lists_the_mutants_it_must_catch(capsys: pytest.CaptureFixture[str],
                                               cli_registry: None) -> None:
    ran = cli(capsys, "explain", "clitest:counter")
    assert ran.code == 0, ran.err
    assert " *     1. lock                       1. lock" in ran.out
    assert " * There are 2 critical interleavings that matter:" in ran.out
    assert "Mutants it must catch (1):" in ran.out
    assert ("  clitest:no-lock [caught as InvariantViolation]: increment without taking the "
            "counter lock") in ran.out
    assert "replay with:" not in ran.out  # it passes: no timeline to show


def test_mutant_shows_the_interleaving_that_breaks_it(capsys: pytest.CaptureFixture[str],
                                                      cli_registry: None) -> None:
    ran = cli(capsys, "explain", "clitest:no-lock")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("/*\n * mutant clitest:no-lock - increment without taking the counter lock\n")
    assert " * Drops steps 1 and 4" in ran.out
    assert "Suites that must catch it: clitest:counter" in ran.out
    assert "mmemu: clitest:counter with mutant clitest:no-lock" in ran.out
    assert "InvariantViolation after 6 steps, 1 preemption" in ran.out  # minimal: one preemption
    assert "counter is 1, expected 2" in ran.out
    assert "exploring clitest:counter with mutant clitest:no-lock" in ran.err  # progress on stderr


def test_kernel_comment_shape() -> None:
    text = kernel_comment("x:y - title", "Steps::\n\n    1. a\n\nUse ``foo``.")
    assert text.splitlines() == ["/*", " * x:y - title", " *", " * Steps:", " *", " *     1. a",
                                 " *", " * Use foo.", " */"]
