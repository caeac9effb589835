"""Ctrl-C and cancellation during an exploration.

Trio delivers SIGINT to the run's main task, which is the scenario's task; the
engine hands control between it and the CPU workers with reschedule().  A
KeyboardInterrupt that woke the scenario's task while its CPUs still ran used
to leave a CPU rescheduling a task that was no longer parked: trio's own
assertion, a TrioInternalError.  These tests raise SIGINT from inside a step
(where the CPU pool's workers are KI-protected and trio defers it), from the
scenario's setup code, and from another thread at random times.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import trio

import mmemu
from mmemu.engine import Random

from ._support import Obj

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _sigint_at(execution: int, *, where: str) -> Any:
    """A two-CPU scenario that raises SIGINT in execution ``execution``,
    either inside CPU 0's second step or in the scenario's own setup."""
    count = [0]

    async def scenario(sim: Any) -> None:
        x = Obj("x")
        mine = count[0]
        count[0] += 1
        if where == "setup" and mine == execution:
            signal.raise_signal(signal.SIGINT)

        async def cpu(me: int) -> None:
            await mmemu.step("a", writes=(x,))
            if where == "step" and me == 0 and mine == execution:
                signal.raise_signal(signal.SIGINT)
            await mmemu.step("b", writes=(x,))

        async with sim.cpus() as cpus:
            cpus.start(cpu, 0)
            cpus.start(cpu, 1)

    return scenario


@pytest.mark.parametrize("where", ["step", "setup"])
def test_sigint_inside_an_execution_interrupts_explore_between_executions(where: str) -> None:
    # trio installs its SIGINT handler only over the default one
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    res = mmemu.explore(_sigint_at(5, where=where), strategy=Random(0), executions=1000)
    assert res.interrupted
    # The execution during which Ctrl-C came finishes and counts.  From a
    # KI-protected CPU worker trio hands the signal over through its entry
    # queue, which may run only once the next execution has started: that
    # one then finishes too.  Never more, never a half-run execution.
    assert res.executions == 6 if where == "setup" else res.executions in (6, 7)
    assert res.failure is None


def test_sigint_inside_an_execution_under_dfs() -> None:
    res = mmemu.explore(_sigint_at(2, where="step"), strategy="dfs", executions=1000)
    assert res.interrupted and res.executions in (3, 4) and not res.exhausted


def test_cancelling_explore_async_stops_between_executions() -> None:
    count = [0]

    async def scenario(sim: Any) -> None:
        x = Obj("x")
        count[0] += 1

        async def cpu() -> None:
            for _ in range(3):
                await mmemu.step("w", writes=(x,))

        async with sim.cpus() as cpus:
            cpus.start(cpu)
            cpus.start(cpu)

    async def main() -> bool:
        with trio.move_on_after(0.2) as scope:
            await mmemu.explore_async(scenario, strategy=Random(0), executions=10**8)
        return scope.cancelled_caught

    assert trio.run(main)
    assert 0 < count[0] < 10**8


def test_final_progress_call_may_raise_keyboard_interrupt() -> None:
    calls: list[int] = []

    def progress(done: int, budget: int | None) -> None:
        calls.append(done)
        raise KeyboardInterrupt  # what the CLI's callback does after a Ctrl-C

    res = mmemu.explore("demo:lost-update-locked", strategy=Random(0), executions=10,
                        progress=progress)
    assert calls == [10] and res.interrupted and res.executions == 10


_STRESS = textwrap.dedent("""
    import os, signal, sys, threading, time
    import mmemu
    mmemu.engine.get_scenario("demo:lost-update-locked")  # imports done before the timer
    delay = float(sys.argv[1])
    def fire():
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=fire, daemon=True).start()
    try:
        r = mmemu.explore("demo:lost-update-locked", strategy="random", executions=10**8)
    except KeyboardInterrupt:
        print("KeyboardInterrupt")  # before the first execution: clean too
    else:
        print("interrupted", r.interrupted, r.executions > 0)
""")


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_sigint_from_another_thread_never_breaks_trio(delay: float) -> None:
    # the original report: a real Ctrl-C at a random moment of a long run
    proc = subprocess.run([sys.executable, "-c", _STRESS, str(delay)], capture_output=True,
                          text=True, timeout=60)
    assert "TrioInternalError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("interrupted True True", "KeyboardInterrupt")
