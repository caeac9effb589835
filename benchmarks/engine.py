"""Engine benchmark: cost of a step against a bare trio handoff, and
executions per second on the demo scenarios.

Run:  python benchmarks/engine.py [--quick]

Everything is measured in this one process, so the ratio is meaningful even
on a loaded machine; each figure is the median of several repeats.  The
design target (DESIGN.md, "Performance budget") is a step within 3x of a bare
handoff.  This is a script, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

import mmemu
from mmemu.engine import CPU, DFS, Random, Simulation
from mmemu.engine._explore import _Runner

REPEATS = 7
SWITCHES = 20_000


def _abort_ok(_: Any) -> Abort:
    return Abort.SUCCEEDED


async def _bare_handoff(switches: int) -> float:
    """Seconds per switch for two trio tasks passing a token directly."""
    tasks: dict[str, Any] = {}
    left = [switches]
    done = trio.Event()

    async def player(me: str, other: str) -> None:
        tasks[me] = current_task()
        await wait_task_rescheduled(_abort_ok)
        while left[0] > 0:
            left[0] -= 1
            reschedule(tasks[other])
            await wait_task_rescheduled(_abort_ok)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(player, "a", "b")
        nursery.start_soon(player, "b", "a")
        while len(tasks) < 2:
            await trio.sleep(0)
        await trio.sleep(0)  # both are parked now
        t0 = time.perf_counter()
        reschedule(tasks["a"])
        await done.wait()
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()  # the other player is still parked
    return elapsed / switches


async def _pingpong(sim: Any) -> None:
    x = object()
    per_cpu = sim.params["steps"]

    async def cpu() -> None:
        for _ in range(per_cpu):
            await mmemu.step("s", writes=(x,))

    async with sim.cpus() as cpus:
        cpus.start(cpu)
        cpus.start(cpu)


def _alternate(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
    """Always switch: the worst case for the engine."""
    return run[1] if prev is run[0] else run[0]


async def _engine_step(switches: int) -> float:
    """Seconds per engine step when every step switches CPUs."""
    runner = _Runner(_pingpong, "bench:pingpong", {"steps": switches // 2}, (), 10**9)
    t0 = time.perf_counter()
    sim = await runner.run(_alternate, record=False)
    elapsed = time.perf_counter() - t0
    assert sim.failure is None and sim.steps >= switches
    return elapsed / sim.steps


def _median(fn: Callable[[], float], repeats: int = REPEATS) -> float:
    return statistics.median(fn() for _ in range(repeats))


def _rate(scenario: str, make: Callable[[], Any], *, budget: int, min_time: float) -> float:
    """Executions per second: repeat whole explorations until min_time has
    passed (a DFS exhausts a small scenario in a few executions), all in one
    trio run so that starting trio is not counted."""

    async def go() -> float:
        n = 0
        t0 = time.perf_counter()
        while True:
            res = await mmemu.explore_async(scenario, strategy=make(), executions=budget,
                                            shrink=False, stop_on_failure=False)
            n += res.executions
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                return n / elapsed

    rate: float = trio.run(go)
    return rate


async def _executions_per_exploration(scenario: str, strategy: Any, budget: int) -> int:
    res = await mmemu.explore_async(scenario, strategy=strategy, executions=budget,
                                    shrink=False, stop_on_failure=False)
    return res.executions


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else REPEATS
    min_time = 0.2 if quick else 0.5
    bare = _median(lambda: trio.run(_bare_handoff, SWITCHES), repeats)
    step = _median(lambda: trio.run(_engine_step, SWITCHES), repeats)
    print(f"{'measure':<44} {'median':>14}")
    # DFS exhausts these small scenarios in a few executions, so its figure
    # includes the fixed cost of starting an exploration.
    print(f"{'bare trio handoff (per switch)':<44} {bare * 1e6:>11.2f} us")
    print(f"{'engine step, switching every step':<44} {step * 1e6:>11.2f} us")
    print(f"{'ratio (target <= 3x)':<44} {step / bare:>13.2f}x")
    for scenario in ("demo:lost-update", "demo:lost-update-locked"):
        for label, make, budget in (
            ("random", lambda: Random(0), 2000),
            ("dfs (dpor)", lambda: DFS(), 100_000),
            ("dfs (none)", lambda: DFS(reduction="none"), 100_000),
        ):
            rate = _median(lambda: _rate(scenario, make, budget=budget, min_time=min_time),
                           repeats)
            per = trio.run(_executions_per_exploration, scenario, make(), budget)
            name = f"{scenario} {label}"
            print(f"{name:<44} {rate:>10,.0f} ex/s   ({per} executions per exploration)")


if __name__ == "__main__":
    main()
