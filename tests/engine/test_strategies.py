"""Strategies: DFS counts, DPOR/sleep-set coverage, seeded determinism,
DFS checkpoints (mirrors mmemu/engine/_strategies.py)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import mmemu
from mmemu import DFS, PCT, Random

from ._support import Lock, Obj, RecordingDFS, Spy, trace_class

Scenario = Callable[[Any], Awaitable[None]]


def two_cpus(k: int, *, disjoint: bool = False) -> Scenario:
    """Two CPUs of k steps each, all writing one object (or one each)."""

    async def scenario(sim: Any) -> None:
        a, b = Obj("a"), Obj("b")

        async def cpu(o: Obj) -> None:
            for i in range(k):
                await mmemu.step(f"step {i}", writes=(o,))
                o.value += 1

        async with sim.cpus() as cpus:
            cpus.start(cpu, a, name="left")
            cpus.start(cpu, b if disjoint else a, name="right")

    return scenario


# ------------------------------------------------------------ DFS counting

@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_dfs_unbounded_runs_every_interleaving_once(k: int) -> None:
    dfs = RecordingDFS(reduction="none")
    res = mmemu.explore(two_cpus(k), strategy=dfs, executions=10_000)
    assert res.executions == math.comb(2 * k + 2, k + 1)
    assert res.exhausted is True
    assert res.failure is None
    assert len(dfs.schedules) == res.executions
    assert len(set(dfs.schedules)) == res.executions, "a schedule was explored twice"
    # distinct as interleavings too, not only as choice lists
    assert len({tuple((e[0], e[1]) for e in run) for run in dfs.runs}) == res.executions


@pytest.mark.parametrize("k", [1, 3])
def test_dfs_without_preemptions_runs_two(k: int) -> None:
    res = mmemu.explore(two_cpus(k), strategy=DFS(max_preemptions=0, reduction="none"),
                        executions=10_000)
    assert res.executions == 2
    assert res.exhausted is True


def test_dfs_budget_not_exhausted() -> None:
    res = mmemu.explore(two_cpus(3), strategy=DFS(reduction="none"), executions=10)
    assert res.executions == 10
    assert res.exhausted is False


@pytest.mark.parametrize("k", [1, 2, 4])
def test_dpor_disjoint_objects_run_once(k: int) -> None:
    res = mmemu.explore(two_cpus(k, disjoint=True), strategy=DFS(reduction="dpor"),
                        executions=10_000)
    assert res.executions == 1
    assert res.exhausted is True


# -------------------------------------------------- DPOR covers every class

async def dekker(sim: Any) -> None:
    """Store buffering: each CPU writes its flag then reads the other's."""
    x, y = Obj("x"), Obj("y")

    async def cpu(mine: Obj, other: Obj) -> None:
        await mmemu.step("1. store mine", writes=(mine,))
        mine.value = 1
        await mmemu.step("2. load other", reads=(other,))

    async with sim.cpus() as cpus:
        cpus.start(cpu, x, y, name="a")
        cpus.start(cpu, y, x, name="b")


async def three_mixed(sim: Any) -> None:
    """Three CPUs, reads and writes on two objects; two CPUs only read x."""
    x, y = Obj("x"), Obj("y")

    async def c0() -> None:
        await mmemu.step("read x", reads=(x,))
        await mmemu.step("write y", writes=(y,))

    async def c1() -> None:
        await mmemu.step("read x", reads=(x,))
        await mmemu.step("write x", writes=(x,))

    async def c2() -> None:
        await mmemu.step("read y", reads=(y,))
        await mmemu.step("read x", reads=(x,))

    async with sim.cpus() as cpus:
        cpus.start(c0)
        cpus.start(c1)
        cpus.start(c2)


async def readers_only(sim: Any) -> None:
    """Reads never conflict: one class, whatever the order."""
    x = Obj("x")

    async def reader() -> None:
        await mmemu.step("read x", reads=(x,))
        await mmemu.step("read x again", reads=(x,))

    async with sim.cpus() as cpus:
        for _ in range(3):
            cpus.start(reader)


async def locked_and_racy(sim: Any) -> None:
    """Two CPUs update x under a lock; a third reads x without it."""
    x = Obj("x")
    lock = Lock("L")

    async def locked() -> None:
        await lock.acquire()
        await mmemu.step("read x", reads=(x,))
        v = x.value
        await mmemu.step("write x", writes=(x,))
        x.value = v + 1
        await lock.release()

    async def racy() -> None:
        await mmemu.step("peek x", reads=(x,))

    async with sim.cpus() as cpus:
        cpus.start(locked)
        cpus.start(locked)
        cpus.start(racy)


async def two_locks(sim: Any) -> None:
    """Nested locks taken in the same order, and private work outside them."""
    a, b = Lock("A"), Lock("B")
    x, p0, p1 = Obj("x"), Obj("p0"), Obj("p1")

    async def cpu(private: Obj) -> None:
        await mmemu.step("private", writes=(private,))
        await a.acquire()
        await b.acquire()
        await mmemu.step("write x", writes=(x,))
        await b.release()
        await a.release()

    async with sim.cpus() as cpus:
        cpus.start(cpu, p0)
        cpus.start(cpu, p1)


COVERAGE_CASES = [dekker, three_mixed, readers_only, locked_and_racy, two_locks]


def _classes(scenario: Scenario, reduction: str) -> tuple[set[Any], int]:
    dfs = RecordingDFS(reduction=reduction)
    res = mmemu.explore(scenario, strategy=dfs, executions=100_000)
    assert res.failure is None
    assert res.exhausted is True
    return {trace_class(run) for run in dfs.runs}, res.executions


@pytest.mark.parametrize("scenario", COVERAGE_CASES, ids=lambda f: f.__name__)
def test_reductions_cover_every_equivalence_class(scenario: Scenario) -> None:
    full, n_full = _classes(scenario, "none")
    dpor, n_dpor = _classes(scenario, "dpor")
    sleep, n_sleep = _classes(scenario, "sleep")
    assert dpor == full
    assert sleep == full
    assert n_dpor < n_full
    assert n_sleep <= n_full
    # every execution of an optimal search is a new class; ours may repeat a
    # few, but never more than the full search does
    assert len(full) <= n_dpor <= n_sleep


def test_readers_only_is_one_class() -> None:
    full, _ = _classes(readers_only, "none")
    assert len(full) == 1
    _, n = _classes(readers_only, "dpor")
    assert n == 1


# ------------------------------------------------------- seeded determinism

async def three_writers(sim: Any) -> None:
    x = Obj("x")

    async def cpu() -> None:
        for i in range(4):
            await mmemu.step(f"write {i}", writes=(x,))

    async with sim.cpus() as cpus:
        for _ in range(3):
            cpus.start(cpu)


@pytest.mark.parametrize("make", [lambda s: Random(s), lambda s: PCT(3, s)],
                         ids=["random", "pct"])
def test_seeded_strategies_are_deterministic(make: Callable[[int], Any]) -> None:
    def run(seed: int) -> list[tuple[int, ...]]:
        spy = Spy(make(seed))
        res = mmemu.explore(three_writers, strategy=spy, executions=40)
        assert res.executions == 40
        return spy.choices

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert len(set(first)) > 1, "the strategy never varied its choices"


def test_seed_argument_reaches_random() -> None:
    a, b = Spy(Random()), Spy(Random())
    mmemu.explore(three_writers, strategy=a, executions=20, seed=3)
    mmemu.explore(three_writers, strategy=b, executions=20, seed=4)
    assert a.choices != b.choices


# ------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("reduction", ["none", "dpor"])
def test_dfs_checkpoint_resumes_where_it_stopped(tmp_path: Path, reduction: str) -> None:
    scenario = two_cpus(3)
    whole = RecordingDFS(reduction=reduction)
    total = mmemu.explore(scenario, strategy=whole, executions=10_000)
    assert total.exhausted

    path = tmp_path / "dfs.json"
    first = RecordingDFS(reduction=reduction, checkpoint=path)
    part = mmemu.explore(scenario, strategy=first, executions=total.executions // 3)
    assert part.executions == total.executions // 3
    assert part.exhausted is False
    assert path.exists()

    second = RecordingDFS(reduction=reduction, checkpoint=path)
    rest = mmemu.explore(scenario, strategy=second, executions=10_000)
    assert rest.exhausted is True
    assert part.executions + rest.executions == total.executions
    assert first.schedules + second.schedules == whole.schedules

    third = RecordingDFS(reduction=reduction, checkpoint=path)
    after = mmemu.explore(scenario, strategy=third, executions=10_000)
    assert after.executions == 0
    assert after.exhausted is True


def test_dfs_checkpoint_of_another_exploration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dfs.json"
    mmemu.explore(two_cpus(2), strategy=DFS(reduction="none", checkpoint=path), executions=3)
    with pytest.raises(mmemu.ModelError, match="another exploration"):
        mmemu.explore(two_cpus(2), strategy=DFS(reduction="dpor", checkpoint=path),
                      executions=3)
