"""Shared helpers of the CLI tests: run ``mmemu.cli.main`` in-process and
find tokens of known failures."""

from __future__ import annotations

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
