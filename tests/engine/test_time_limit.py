"""A time budget (mirrors explore's time_limit and mmemu run --time): the
exploration stops after the execution that runs past it, keeps what it
explored and says it was time-limited, not exhausted."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mmemu
from mmemu.benchmarks import dpor_programs as P


def test_time_limit_returns_what_was_explored() -> None:
    res = mmemu.explore(P.three_on_one(3), strategy=mmemu.DFS(), executions=1_000_000,
                        time_limit=0.2)
    assert res.time_limited and not res.exhausted
    assert 0 < res.executions < 1680
    assert res.traces == res.executions  # each a distinct trace, as without a limit


def test_a_time_limit_that_is_not_reached_changes_nothing() -> None:
    res = mmemu.explore(P.three_on_one(1), strategy=mmemu.DFS(), executions=1000,
                        time_limit=60)
    assert res.exhausted and not res.time_limited and res.executions == 6


@pytest.mark.parametrize("bad", [0, -1])
def test_a_bad_time_limit_is_a_model_error(bad: float) -> None:
    with pytest.raises(mmemu.ModelError, match="'time_limit' must be"):
        mmemu.explore(P.three_on_one(1), strategy=mmemu.DFS(), time_limit=bad)


def test_mmemu_run_time_marks_the_summary() -> None:
    ran = subprocess.run([sys.executable, "-m", "mmemu.cli", "run", "demo:lost-update-locked",
                          "--time", "0.000001"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""}, check=False)
    assert ran.returncode == 0, ran.stderr
    assert "--time 1e-06s ran out: 1 suite run not started" in ran.stdout
    bad = subprocess.run([sys.executable, "-m", "mmemu.cli", "run", "--time", "0"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "--time must be a number of seconds > 0" in bad.stderr + bad.stdout
