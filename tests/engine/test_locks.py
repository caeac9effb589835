"""Engine locks (mirrors mmemu/engine/_locks.py): an acquisition is one
step, a held lock leaves its waiters not enabled, DPOR orders critical
sections and nothing else."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
from mmemu import DFS
from mmemu.engine._execution import Simulation
from mmemu.lowlevel import Lock, RwLock, current_cpu

from ._support import Obj, RecordingDFS, trace_class

Scenario = Callable[[Any], Awaitable[None]]


def each_takes_once(n: int) -> Scenario:
    """n CPUs, each taking one lock once (the lock-order test)."""

    async def scenario(sim: Any) -> None:
        lock = Lock("L")

        async def cpu() -> None:
            await lock.acquire()
            await lock.release()

        async with sim.cpus() as cpus:
            for _ in range(n):
                cpus.start(cpu)

    return scenario


def mutex_order(n: int) -> Scenario:
    """Nidhugg's mutex_order: n threads each do lock(m); ++x; unlock(m)."""

    async def scenario(sim: Any) -> None:
        m = Lock("m")
        x = Obj("x")

        async def cpu() -> None:
            await m.acquire()
            await mmemu.step("++x", reads=(x,), writes=(x,))
            x.value += 1
            await m.release()

        async with sim.cpus() as cpus:
            for _ in range(n):
                cpus.start(cpu)
        sim.check(x.value == n, "an increment was lost")

    return scenario


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_n_cpus_taking_one_lock_once_run_n_factorial(n: int) -> None:
    res = mmemu.explore(each_takes_once(n), strategy=DFS(), executions=10_000)
    assert res.exhausted and res.failure is None
    assert res.executions == math.factorial(n)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_mutex_order(n: int) -> None:
    res = mmemu.explore(mutex_order(n), strategy=DFS(), executions=10_000)
    assert res.exhausted and res.failure is None
    assert res.executions == math.factorial(n)  # mutex_order(3) = 6


class Probe(DFS):
    """Unbounded DFS that keeps the enabled sets and steps of every run."""

    def __init__(self) -> None:
        super().__init__(reduction="none")
        self.runs: list[tuple[list[tuple[int, str]], list[tuple[int, ...]]]] = []

    def end(self, sim: Simulation) -> None:
        self.runs.append(([(e[0], e[1]) for e in sim.events], list(sim.enabled)))
        super().end(sim)


def test_a_contended_acquisition_is_one_step_and_waiters_are_not_enabled() -> None:
    probe = Probe()
    res = mmemu.explore(each_takes_once(2), strategy=probe, executions=1000)
    assert res.exhausted and res.failure is None
    assert probe.runs
    for events, enabled in probe.runs:
        # per CPU: <start>, acquire, release -- no retry or wake-up step
        for cpu in (0, 1):
            assert [label for c, label in events if c == cpu] == [
                "<start>", "acquire(L)", "release(L)"]
        holder = None
        waiting: set[int] = set()  # at their acquisition, not holding L
        for (cpu, label), en in zip(events, enabled):
            if holder is not None and waiting - {holder}:
                # while one CPU holds L, the other's acquisition is not enabled
                assert en == (holder,), (events, enabled)
            if label == "<start>":
                waiting.add(cpu)
            elif label == "acquire(L)":
                waiting.discard(cpu)
                holder = cpu
            elif label == "release(L)":
                holder = None
    # both orders of the critical sections, and contention in some runs
    firsts = {next(c for c, label in ev if label == "acquire(L)") for ev, _ in probe.runs}
    assert firsts == {0, 1}


def test_deadlock_report_names_holder_and_waiter() -> None:
    async def scenario(sim: Any) -> None:
        a, b = Lock("A"), Lock("B")

        async def take(first: Lock, second: Lock) -> None:
            await first.acquire()
            me = current_cpu()
            assert me is not None
            me.held.append(first.name)
            await second.acquire()
            await second.release()
            await first.release()

        async with sim.cpus() as cpus:
            cpus.start(take, a, b, name="ab")
            cpus.start(take, b, a, name="ba")

    res = mmemu.explore(scenario, strategy=DFS(), executions=100)
    assert res.failure is not None and res.failure.kind == "Deadlock"
    msg = res.failure.message
    assert "cpu0 (ab): waits for lock B held by cpu1 (ba); holds A" in msg
    assert "cpu1 (ba): waits for lock A held by cpu0 (ab); holds B" in msg


def test_try_acquire_never_waits() -> None:
    async def scenario(sim: Any) -> None:
        lock = Lock("L")
        got: list[bool] = []

        async def holder() -> None:
            await lock.acquire()
            await mmemu.step("inside")
            await lock.release()

        async def trier() -> None:
            ok = await lock.try_acquire()
            got.append(ok)
            if ok:
                await lock.release()

        async with sim.cpus() as cpus:
            cpus.start(holder)
            cpus.start(trier)
        sim.data["got"] = got

    outcomes: set[bool] = set()

    class Keep(DFS):
        def end(self, sim: Simulation) -> None:
            outcomes.update(sim.data["got"])
            super().end(sim)

    res = mmemu.explore(scenario, strategy=Keep(), executions=100)
    assert res.exhausted and res.failure is None
    assert outcomes == {True, False}


def test_release_of_a_lock_not_held_is_a_model_error() -> None:
    async def scenario(sim: Any) -> None:
        lock = Lock("L")

        async def cpu() -> None:
            await lock.release()

        async with sim.cpus() as cpus:
            cpus.start(cpu)

    with pytest.raises(mmemu.ModelError, match="releases lock L .* but nobody holds it"):
        mmemu.explore(scenario, strategy=DFS(), executions=10)


# --------------------------------------------------------------- RwLock


def readers(n: int, *, writer: bool) -> Scenario:
    async def scenario(sim: Any) -> None:
        rw = RwLock("rw")

        async def reader() -> None:
            await rw.acquire_read()
            await rw.release_read()

        async def write() -> None:
            await rw.acquire_write()
            await rw.release_write()

        async with sim.cpus() as cpus:
            if writer:
                cpus.start(write, name="writer")
            for _ in range(n):
                cpus.start(reader)

    return scenario


@pytest.mark.parametrize("n", [1, 2, 3])
def test_readers_of_an_rwlock_do_not_conflict(n: int) -> None:
    res = mmemu.explore(readers(n, writer=False), strategy=DFS(), executions=100)
    assert res.exhausted and res.executions == 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_writer_orders_against_each_reader(n: int) -> None:
    # each reader's section is before the writer's attempt, around it (the
    # writer queues) or after the writer's section: 3^n traces, each once
    res = mmemu.explore(readers(n, writer=True), strategy=DFS(), executions=1000)
    assert res.exhausted and res.failure is None
    assert res.executions == 3 ** n


def test_a_queued_writer_makes_new_readers_wait() -> None:
    # r1 reads; the writer finds the lock held and queues; from then on r2's
    # read acquisition is not enabled until the writer has been through.
    async def scenario(sim: Any) -> None:
        rw = RwLock("rw")

        async def r1() -> None:
            await rw.acquire_read()
            await mmemu.step("r1 inside")
            await rw.release_read()

        async def w() -> None:
            await rw.acquire_write()
            await rw.release_write()

        async def r2() -> None:
            await rw.acquire_read()
            await rw.release_read()

        async with sim.cpus() as cpus:
            cpus.start(r1)
            cpus.start(w)
            cpus.start(r2)

    probe = Probe()
    res = mmemu.explore(scenario, strategy=probe, executions=100_000)
    assert res.exhausted and res.failure is None
    queued_runs = 0
    for events, enabled in probe.runs:
        if (1, "acquire_write(rw) acquired") not in events:
            continue
        queued_runs += 1
        q = events.index((1, "acquire_write(rw)"))
        a = events.index((1, "acquire_write(rw) acquired"))
        r2_in = [k for k, e in enumerate(events) if e == (2, "acquire_read(rw)")]
        assert r2_in and not q < r2_in[0] < a, events  # r2 did not barge in
        r2_started = events.index((2, "<start>"))
        if r2_in[0] > a:
            # r2 waited at its acquisition while the writer was queued
            for k in range(max(q, r2_started) + 1, a + 1):
                assert 2 not in enabled[k], (events, enabled)
    assert queued_runs, "the writer never had to queue"


# ------------------------------------------------- DPOR sees every order


async def rw_mix(sim: Any) -> None:
    rw = RwLock("rw")
    x = Obj("x")

    async def reader() -> None:
        await rw.acquire_read(reads=(x,))
        await rw.release_read()

    async def writer() -> None:
        await rw.acquire_write(writes=(x,))
        x.value += 1
        await rw.release_write()

    async with sim.cpus() as cpus:
        cpus.start(reader)
        cpus.start(writer)
        cpus.start(reader)


@pytest.mark.parametrize("scenario", [rw_mix, mutex_order(3)], ids=["rw_mix", "mutex_order3"])
def test_dpor_with_locks_covers_every_trace_of_the_full_search(scenario: Scenario) -> None:
    def classes(reduction: str) -> tuple[set[Any], int]:
        dfs = RecordingDFS(reduction=reduction)
        res = mmemu.explore(scenario, strategy=dfs, executions=200_000)
        assert res.exhausted and res.failure is None
        return {trace_class(run) for run in dfs.runs}, res.executions

    full, n_full = classes("none")
    dpor, n_dpor = classes("dpor")
    assert dpor == full
    assert n_dpor < n_full
