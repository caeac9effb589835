"""One execution: deadlocks, livelocks, exceptions in CPUs, fail(), misuse
(mirrors mmemu/engine/_execution.py)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

import mmemu
from mmemu import DFS, Random
from mmemu.lowlevel import fail

from ._support import Lock, Obj


async def abba(sim: Any) -> None:
    """CPU 0 takes A then B, CPU 1 takes B then A."""
    a, b = Lock("A"), Lock("B")

    async def take(first: Lock, second: Lock) -> None:
        await first.acquire()
        await second.acquire()
        await second.release()
        await first.release()

    async with sim.cpus() as cpus:
        cpus.start(take, a, b, name="ab")
        cpus.start(take, b, a, name="ba")


@pytest.mark.parametrize("strategy", [DFS(), DFS(reduction="none"), Random(1)],
                         ids=["dpor", "none", "random"])
def test_abba_is_a_deadlock_naming_both_cpus(strategy: Any) -> None:
    res = mmemu.explore(abba, strategy=strategy, executions=500)
    f = res.failure
    assert f is not None
    assert f.kind == "Deadlock"
    assert isinstance(f.exception, mmemu.Deadlock)
    assert f.message.splitlines() == [
        "no CPU can run:",
        "  cpu0 (ab): waits for lock B held by cpu1 (ba); holds A",
        "  cpu1 (ba): waits for lock A held by cpu0 (ab); holds B",
    ]
    assert f.preemptions == 1  # shrunk: one switch after the first lock


async def spinner(sim: Any) -> None:
    flag = Obj("flag")

    async def spin() -> None:
        while flag.value == 0:  # nobody ever sets it
            await mmemu.step("spin on flag", reads=(flag,))

    async def idle() -> None:
        await mmemu.step("idle")

    async with sim.cpus() as cpus:
        cpus.start(spin)
        cpus.start(idle)


def test_endless_loop_is_a_livelock() -> None:
    res = mmemu.explore(spinner, strategy=DFS(max_preemptions=0), executions=5, max_steps=25)
    f = res.failure
    assert f is not None
    assert f.kind == "Livelock"
    assert "max_steps=25" in f.message
    assert "spin on flag" in f.message
    assert f.steps == 26  # the step that went over the bound is shown


class Boom(Exception):
    pass


async def raiser(sim: Any) -> None:
    x = Obj("x")

    async def bad() -> None:
        await mmemu.step("about to explode", writes=(x,))
        raise Boom("the fuse was lit")

    async def good() -> None:
        await mmemu.step("harmless", reads=(x,))

    async with sim.cpus() as cpus:
        cpus.start(good)
        cpus.start(bad, name="bomb")


def test_exception_in_a_cpu_is_unexpected_exception_with_traceback() -> None:
    res = mmemu.explore(raiser, strategy=DFS(), executions=10)
    f = res.failure
    assert f is not None
    assert f.kind == "UnexpectedException"
    assert "cpu1 (bomb) raised Boom: the fuse was lit" in f.message
    assert "about to explode" in f.message  # its step history
    exc = f.exception
    assert isinstance(exc, mmemu.UnexpectedException)
    assert isinstance(exc.original, Boom)
    assert exc.traceback_text.startswith("Traceback (most recent call last):")
    assert 'raise Boom("the fuse was lit")' in exc.traceback_text
    assert "in bad" in exc.traceback_text
    assert exc.traceback_text.rstrip() in f.report()


async def swallower(sim: Any) -> None:
    x = Obj("x")
    after: list[str] = []
    sim.data["after"] = after

    async def cpu() -> None:
        await mmemu.step("check", reads=(x,))
        try:
            fail(mmemu.InvariantViolation("x is bad"))
        except Exception:  # model code that catches too much must not hide it
            after.append("swallowed")
        after.append("continued")

    async with sim.cpus() as cpus:
        cpus.start(cpu)
        cpus.start(cpu)


def test_fail_cannot_be_swallowed() -> None:
    res = mmemu.explore(swallower, strategy=DFS(), executions=5)
    f = res.failure
    assert f is not None
    assert f.kind == "InvariantViolation"
    assert f.message == "x is bad"


def test_a_swallowed_fail_does_not_continue() -> None:
    seen: list[list[str]] = []

    async def scenario(sim: Any) -> None:
        try:
            await swallower(sim)
        finally:
            seen.append(sim.data["after"])

    mmemu.explore(scenario, strategy=DFS(), executions=1, shrink=False)
    assert seen and all(s == [] for s in seen)


def test_scenario_check_failure() -> None:
    async def scenario(sim: Any) -> None:
        async with sim.cpus() as cpus:
            cpus.start(lambda: mmemu.step("noop"))
        sim.check(False, "always broken", details="dump: nothing")

    res = mmemu.explore(scenario, strategy=DFS(), executions=3)
    f = res.failure
    assert f is not None and f.kind == "InvariantViolation"
    assert f.message == "always broken"
    assert "dump: nothing" in f.report()


def test_step_outside_an_execution_is_a_model_error() -> None:
    import trio

    with pytest.raises(mmemu.ModelError, match=r"mmemu.step\('x'\) called outside an execution"):
        trio.run(mmemu.step, "x")


def test_wake_without_declared_write_is_a_model_error() -> None:
    from mmemu.lowlevel import block, wake_all

    async def scenario(sim: Any) -> None:
        ch = Obj("ch")

        async def waiter() -> None:
            await mmemu.step("wait", writes=(ch,))
            await block(ch, "woken")

        async def waker() -> None:
            await mmemu.step("wake (undeclared)")
            wake_all(ch)

        async with sim.cpus() as cpus:
            cpus.start(waiter)
            cpus.start(waker)

    with pytest.raises(mmemu.ModelError, match="did not declare writes"):
        mmemu.explore(scenario, strategy=DFS(reduction="none"), executions=10)


# ------------------------------------------------- CPU tasks: pool or not

async def three_cpus(sim: Any) -> None:
    x = Obj("x")

    async def cpu() -> None:
        await mmemu.step("write x", writes=(x,))

    async with sim.cpus() as cpus:
        for _ in range(3):
            cpus.start(cpu)


def test_pool_workers_are_reused_across_explorations() -> None:
    import trio

    from mmemu.engine._execution import CpuPool

    async def main() -> tuple[Any, ...]:
        dead = await mmemu.explore_async(abba, strategy=DFS(), executions=100)
        ok = await mmemu.explore_async(three_cpus, strategy=DFS(reduction="none"),
                                       executions=1000)
        boom = await mmemu.explore_async(raiser, strategy=Random(0), executions=50)
        return dead, ok, boom, len(CpuPool.current()._idle)

    dead, ok, boom, idle = trio.run(main)
    assert dead.failure is not None and dead.failure.kind == "Deadlock"
    assert ok.failure is None and ok.exhausted and ok.executions == 90  # 6!/(2!)^3
    assert boom.failure is not None and boom.failure.kind == "UnexpectedException"
    assert idle == 3  # every worker came back; never more than one execution needs


def test_simulation_without_a_pool_spawns_its_cpus() -> None:
    import trio

    from mmemu.engine import Simulation

    def switch(sim: Any, prev: Any, run: list[Any]) -> Any:
        return next(c for c in run if c is not prev)  # always preempt

    async def main() -> list[Any]:
        out = []
        for scenario in (abba, three_cpus, raiser, swallower):
            sim = Simulation(chooser=switch, record=True)
            await sim.run(scenario)
            out.append(sim)
        return out

    dead, ok, boom, swallowed = trio.run(main)
    assert isinstance(dead.failure, mmemu.Deadlock)
    assert ok.failure is None and ok.steps == 6
    assert [e[0] for e in ok.events] == [0, 1, 0, 1, 2, 2]
    assert isinstance(boom.failure, mmemu.UnexpectedException)
    assert isinstance(swallowed.failure, mmemu.InvariantViolation)


class _ChooserGaveUp(BaseException):
    """Stands for Hypothesis's StopTest: a BaseException from a chooser."""


def test_an_exception_from_the_chooser_unwinds_the_execution_and_reaches_the_caller() -> None:
    # Hypothesis ends an example by raising StopTest from a draw, i.e. from
    # inside the chooser.  The execution must unwind every CPU and hand the
    # exception to explore's caller instead of hanging.
    class GivesUp(mmemu.engine.Strategy):
        name = "gives-up"

        def begin(self, index: int) -> Any:
            def choose(sim: Any, prev: Any, run: Any) -> Any:
                if len(sim.choices) == 2:
                    raise _ChooserGaveUp()
                return run[0]
            return choose

    with pytest.raises(_ChooserGaveUp):
        mmemu.explore("demo:lost-update-locked", strategy=GivesUp(), executions=3)
    # and the engine is usable afterwards
    assert mmemu.explore("demo:lost-update-locked", strategy="dfs").exhausted


class _Logged:
    """An object only the event log refers to (a step's declared access)."""


def _cyclic_scenario(alive: list[Any]) -> Any:
    async def scenario(sim: Any) -> None:
        # the model's objects refer to the execution, as Kernel.sim does:
        # the Simulation is in a reference cycle
        sim.data["model"] = {"sim": sim}

        async def cpu() -> None:
            tok = _Logged()
            alive.append(weakref.ref(tok))
            await mmemu.step("touch", reads=(tok,))
            await mmemu.step("again", writes=("x",))

        async with sim.cpus() as cpus:
            cpus.start(cpu)
            cpus.start(cpu)

    return scenario


@pytest.mark.parametrize("strategy", [DFS(), DFS(reduction="none")], ids=["dpor", "none"])
def test_an_execution_is_freed_without_the_cycle_collector(strategy: Any) -> None:
    """The engine's strategies keep nothing of an execution once they have
    seen it: its event log is released at once (Simulation.dispose), not
    left to Python's cycle collector with the rest of the execution."""
    alive: list[Any] = []
    was = gc.isenabled()
    gc.disable()
    try:
        res = mmemu.explore(_cyclic_scenario(alive), strategy=strategy, executions=20)
        live = [r for r in alive if r() is not None]
    finally:
        if was:
            gc.enable()
    assert res.executions > 1 and not res.failures
    assert alive and not live


def test_a_strategy_that_overrides_end_may_keep_the_execution() -> None:
    kept: list[Any] = []

    class Keep(DFS):
        def end(self, sim: Any) -> None:
            kept.append(sim)
            super().end(sim)

    res = mmemu.explore(_cyclic_scenario([]), strategy=Keep(), executions=20)
    assert res.executions == len(kept) > 1
    assert all(len(s.events) == 6 and s.cpu_list[0].sim is s for s in kept)
