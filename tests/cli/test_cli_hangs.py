"""A driver that hangs is an error that names where, never a hung mmemu.

- a CPU that awaits something mmemu does not schedule (``await
  trio.sleep_forever()`` in a driver's ``fault``): ForeignAwait naming the
  driver, the callback and the await;
- a step that never yields (a busy loop): StepTimeout after
  ``MMEMU_STEP_TIMEOUT`` seconds, naming the file and line, with what was
  explored kept;
- Ctrl-C ends such a run within about a second and keeps what was found.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

import mmemu

from ._helpers import Ran, cli, interrupt_when

HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "hang_drivers.py"
SUITE = "notifier:truncate-vs-fault"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    env.update(extra)
    return env


def _run(capsys: pytest.CaptureFixture[str], driver: str, *more: str) -> Ran:
    return cli(capsys, "run", SUITE, "--api", "2.6.27", "--driver", f"{DRIVERS}:{driver}", *more)


def _busy_lines() -> set[str]:
    """``BusyDriver.fault (file:N)`` for the two lines of its loop (the
    signal lands between two bytecodes of either)."""
    lines = DRIVERS.read_text().splitlines()
    body = next(k for k, ln in enumerate(lines, 1) if "the line the report must name" in ln)
    return {f"at BusyDriver.fault ({DRIVERS}:{n})" for n in (body - 1, body)}


def test_a_foreign_await_is_an_error_naming_driver_callback_and_await(
        capsys: pytest.CaptureFixture[str]) -> None:
    ran = _run(capsys, "SleepyDriver")
    assert ran.code == 1, ran.err
    line = next(ln for ln in ran.out.splitlines() if ln.startswith("ForeignAwait: "))
    assert "awaits trio.sleep_forever()" in line
    assert f"in SleepyDriver.fault ({DRIVERS}:" in line
    assert "mmemu replay mm1." in ran.out
    row = next(ln for ln in ran.out.splitlines() if ln.startswith(SUITE))
    assert "ForeignAwait" in row.split()
    # the printed replay line replays the hang as that error, not as a hung replay
    token = ran.out.split("mmemu replay ", 1)[1].split()[0]
    again = cli(capsys, "replay", token)
    assert again.code == 1, again.err
    assert line in again.out.splitlines()


def test_a_step_that_never_yields_is_reported_with_file_and_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMEMU_STEP_TIMEOUT", "1")
    started = time.monotonic()
    ran = _run(capsys, "BusyDriver")
    assert ran.code == 1, ran.err
    line = next(ln for ln in ran.out.splitlines() if ln.startswith("StepTimeout: "))
    assert any(line.endswith(where) for where in _busy_lines()), line
    assert "stopped by the watchdog (step_timeout, MMEMU_STEP_TIMEOUT)" in ran.out
    # the summary and the replay line are there: nothing lost
    assert ran.out.strip().splitlines()[-1].startswith("total: 1 run, ")
    assert "mmemu replay mm1." in ran.out
    token = ran.out.split("mmemu replay ", 1)[1].split()[0]
    again = cli(capsys, "replay", token)
    assert again.code == 1, again.err
    assert any(ln.startswith("StepTimeout: ") for ln in again.out.splitlines()), again.out
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("driver", ["SleepyDriver", "BusyDriver"])
def test_hangs_are_reported_with_jobs_too(driver: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With --jobs the executions run in worker processes, and the DFS split
    runs some in this one: both are watched, and the hang is not shrunk (each
    run of it would cost a timeout)."""
    monkeypatch.setenv("MMEMU_STEP_TIMEOUT", "1")
    started = time.monotonic()
    ran = _run(capsys, driver, "--jobs", "2")
    assert ran.code == 1, ran.err
    kind = "ForeignAwait" if driver == "SleepyDriver" else "StepTimeout"
    line = next(ln for ln in ran.out.splitlines() if ln.startswith(f"{kind}: "))
    assert f"{driver}.fault ({DRIVERS}:" in line
    assert "mmemu replay mm1." in ran.out
    assert ran.out.strip().splitlines()[-1].startswith("total: 1 run, ")
    assert time.monotonic() - started < 120  # a few watchdog waits, not one per execution


def test_ctrl_c_ends_a_run_stuck_in_a_step_within_a_second() -> None:
    done, took = interrupt_when(["run", SUITE, "--api", "2.6.27", "--driver",
                                 f"{DRIVERS}:BusyDriver"], f"exploring {SUITE} ",
                                after=1.0,  # well inside the endless step
                                env=_env(MMEMU_STEP_TIMEOUT="600"))
    out = done.stdout
    assert done.returncode == 1  # the stuck step is reported as found
    assert "Traceback" not in out + done.stderr
    assert any(where in out for where in _busy_lines()), out
    assert "stopped by Ctrl-C" in out
    assert out.strip().splitlines()[-1].endswith("(interrupted)")
    # The watchdog acts within STOP_GRACE_S (0.25 s) and a tick; the rest is
    # printing the report.  Generous for a loaded CI machine, and still far
    # below the 600 s step timeout that would end it otherwise.
    assert took < 5.0, took


async def _waits_on_an_event(event: trio.Event) -> None:
    await mmemu.step("1. about to wait")
    await event.wait()  # nobody sets it: mmemu does not schedule trio events


async def _event_scenario(sim: mmemu.Simulation) -> None:
    event = trio.Event()
    async with sim.cpus() as cpus:
        cpus.start(_waits_on_an_event, event, name="waiter")
        cpus.start(_waits_on_an_event, event, name="other")


def test_the_api_reports_a_foreign_await_and_goes_on() -> None:
    res = mmemu.explore(_event_scenario, strategy="dfs", executions=3)
    failure = res.failure
    assert failure is not None and failure.kind == "ForeignAwait"
    assert failure.message.startswith("cpu0 (waiter) awaits trio.Event.wait() in ")
    assert "in _waits_on_an_event (" in failure.message and "test_cli_hangs.py:" in failure.message
    # the trio run is usable afterwards: a second exploration in it works
    again = mmemu.explore("demo:lost-update-locked", strategy="dfs")
    assert again.ok and again.exhausted
