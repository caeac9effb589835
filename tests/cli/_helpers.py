"""Shared helpers of the CLI tests: run ``mmemu.cli.main`` in-process and
find tokens of known failures."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from mmemu.cli import main
from mmemu.engine import DFS, Failure, explore


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def cli(capsys: pytest.CaptureFixture[str], *args: Any) -> Ran:
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return Ran(code, cap.out, cap.err)


def failure_of(name: str, *, mutants: Sequence[str] = ()) -> Failure:
    res = explore(name, strategy=DFS(max_preemptions=2), executions=500, mutants=mutants)
    assert res.failure is not None, f"{name} did not fail"
    return res.failure


def interrupt_when(args: Sequence[str], started: str, *, after: float = 0.5,
                   env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``mmemu ARGS`` in a subprocess, SIGINT it ``after`` seconds after
    a stderr line starting with ``started``; (the finished process, seconds
    from the signal to its exit)."""
    proc = subprocess.Popen([sys.executable, "-m", "mmemu.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    err = []
    for line in proc.stderr:
        err.append(line)
        if line.startswith(started):
            break
    time.sleep(after)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(err) + rest), took
