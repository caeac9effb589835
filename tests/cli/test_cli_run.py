"""mmemu run: progress on stderr, interrupted runs, logging switches."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
import structlog

from ._helpers import cli, interrupt_when


def test_plain_progress_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "run", "demo:lost-update-locked")
    assert ran.code == 0
    assert ran.err_lines[0].startswith("exploring demo:lost-update-locked with dfs, ")
    assert ran.err_lines[-1].startswith("  demo:lost-update-locked: ok after 4 executions, exhausted")
    assert "\x1b[" not in ran.err  # no terminal control codes in a pipe


def test_failure_prints_its_report_and_replay_line(capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "run", "demo:lost-update")
    assert ran.code == 1
    assert "InvariantViolation: counter is 1, expected 2" in ran.out
    assert "  mmemu replay mm1." in ran.out


def test_verbose_logs_lifecycle_events_and_default_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    quiet = cli(capsys, "run", "demo:lost-update-locked")
    assert "exploration started" not in quiet.err
    loud = cli(capsys, "--verbose", "run", "demo:lost-update-locked")
    assert loud.code == 0
    assert "exploration started" in loud.err and "exploration finished" in loud.err
    # the CLI leaves structlog as it found it (unconfigured: the library stays silent)
    assert not structlog.is_configured()


def test_rich_progress_bar_on_a_terminal() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mmemu.cli", "run", "demo:lost-update-locked",
                             "--strategy", "random", "--executions", "3000"],
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "3000/3000" in text and "\u2501" in text  # rich's count column and bar
    assert "demo:lost-update-locked: ok after 3000 executions" in text


def _interrupted_run(*suites: str) -> subprocess.CompletedProcess[str]:
    """Start a long run, wait until the last suite is being explored, SIGINT it."""
    done, _took = interrupt_when(["run", *suites, "--strategy", "random",
                                  "--executions", "100000000"], f"exploring {suites[-1]} ")
    return done


def test_interrupted_run_keeps_what_it_found() -> None:
    done = _interrupted_run("demo:lost-update", "demo:lost-update-locked")
    assert done.returncode == 1  # a failure was found before the interrupt
    assert "Traceback" not in done.stderr
    assert "interrupted: explored" in done.stderr
    assert "  demo:lost-update: InvariantViolation: mmemu replay mm1." in done.stderr
    assert "replay with:" in done.stdout  # the report
    assert done.stdout.strip().splitlines()[-1].startswith("total: 2 runs, ")  # the summary
    assert done.stdout.count("demo:lost") >= 3


def test_interrupted_run_without_failure_exits_130() -> None:
    done = _interrupted_run("demo:lost-update-locked")
    assert done.returncode == 130
    assert "Traceback" not in done.stderr
    assert "interrupted: explored" in done.stderr
    assert "  demo:lost-update-locked: interrupted after " in done.stderr
