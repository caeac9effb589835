"""The exact split of optimal DPOR (mmemu/engine/_split.py), in one process.

The units of a split search run here in a deliberately scrambled order (a
backend that finishes a random pending unit first, with several "slots"),
so that speculation is used, discarded and re-run; the result must still be
exactly the single DFS's: the same executions, abandoned executions,
traces, exhaustion and first failure (its unshrunk schedule).  The programs
are small random ones with locks, rwlocks, try-locks and branches
(tests/engine/_programs.py), the literature's benchmarks, and a racy one
that fails far into the search.  Units stop after 3 executions here, so
that handing the rest of a subtree back is exercised too.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest

import mmemu
from benchmarks import dpor_programs as bp
from mmemu.engine import DFS
from mmemu.engine import _parallel
from mmemu.engine._registry import is_registered
from tests.engine import _programs
from tests.engine._support import Obj


class Scrambled(_parallel._Backend):
    """Three slots; ``wait`` finishes a random pending unit (seeded)."""

    slots = 3

    def __init__(self) -> None:
        self.queue: list[tuple[object, dict[str, Any]]] = []
        self.rng = random.Random(7)
        self.last: tuple[object, dict[str, Any]] | None = None
        self.units = 0

    def submit(self, unit: dict[str, Any]) -> Any:
        fut = object()
        self.queue.append((fut, unit))
        return fut

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        ready = [(f, u) for f, u in self.queue if f in pending]
        if not ready:
            return set()
        fut, unit = self.rng.choice(ready)
        self.queue = [(f, u) for f, u in self.queue if f is not fut]
        self.units += 1
        self.last = (fut, _parallel.run_unit_here(unit))
        return {fut}

    def result(self, fut: Any) -> dict[str, Any]:
        assert self.last is not None and self.last[0] is fut
        return self.last[1]

    def cancel(self, futs: Iterable[Any]) -> set[Any]:
        drop = set(futs)
        gone = {f for f, _u in self.queue if f in drop}
        self.queue = [(f, u) for f, u in self.queue if f not in drop]
        return gone


class ScrambledStealing(Scrambled):
    """As ``Scrambled``, and units can be asked to stop (work stealing):
    units run uncapped, the coordinator's requests are honoured, and a
    third of the units are asked to cede as they start, as if a worker had
    gone idle then (seeded)."""

    stops = True

    def __init__(self) -> None:
        super().__init__()
        self.board = [0] * _parallel.STOP_SLOTS
        self.uids: dict[object, int] = {}
        self.asked = 0

    def submit(self, unit: dict[str, Any]) -> Any:
        fut = super().submit(unit)
        self.uids[fut] = int(unit["uid"])
        return fut

    def request_stop(self, fut: Any, how: int = _parallel.CEDE) -> None:
        uid = self.uids[fut]
        self.board[uid % _parallel.STOP_SLOTS] = uid if how == _parallel.CEDE else -uid

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        for fut in pending:
            if self.rng.random() < 1 / 3:
                self.asked += 1
                self.request_stop(fut)
        _parallel._BOARD = self.board
        try:
            return super().wait(pending, timeout)
        finally:
            _parallel._BOARD = None


async def racy(sim: Any) -> None:
    """Three CPUs: private steps, then an unlocked read-modify-write of x;
    a lost update where CPU 0 writes last fails (the 12th execution)."""
    x = Obj("x")
    mine = [Obj(f"m{i}") for i in range(3)]
    writers: list[int] = []

    async def cpu(i: int) -> None:
        for _ in range(2):
            await mmemu.step(f"m{i}", writes=(mine[i],))
        await mmemu.step("read x", reads=(x,))
        seen = x.value
        await mmemu.step("touch m", reads=(mine[(i + 1) % 3],))
        await mmemu.step("write x", writes=(x,))
        x.value = seen + 1
        writers.append(i)

    async with sim.cpus() as cpus:
        for i in range(3):
            cpus.start(cpu, i, name=f"c{i}")
    assert x.value == 3 or writers[-1] != 0, f"lost update: x = {x.value}"


def _register() -> list[str]:
    names = []
    for seed in range(24):
        name = f"splittest:p{seed}"
        if not is_registered(name):
            mmemu.scenario(name, expect="fail")(
                _programs.scenario(_programs.generate(seed, cpus=(2, 3), size=(2, 4))))
        names.append(name)
    for label, factory, n in [("readers", bp.readers, 4), ("lastzero", bp.lastzero, 4),
                              ("mutex_order", bp.mutex_order, 4),
                              ("mutex_vs_trylock", bp.mutex_vs_trylock, 2),
                              ("three_on_one", bp.three_on_one, 2)]:
        name = f"splittest:{label}"
        if not is_registered(name):
            mmemu.scenario(name)(factory(n))
        names.append(name)
    if not is_registered("splittest:racy"):
        mmemu.scenario("splittest:racy", expect="fail")(racy)
    names.append("splittest:racy")
    return names


@pytest.mark.parametrize("backend", [Scrambled, ScrambledStealing])
def test_split_search_is_the_single_dfs(monkeypatch: pytest.MonkeyPatch,
                                        backend: type[Scrambled]) -> None:
    backends: list[Scrambled] = []

    def make() -> Scrambled:
        backends.append(backend())
        return backends[-1]

    monkeypatch.setattr(_parallel, "_Inline", make)
    monkeypatch.setattr(_parallel, "UNIT_EXECUTIONS", 3)
    discarded = failures = steals = 0
    names = _register()
    if backend is ScrambledStealing:
        names = names[::2] + ["splittest:racy"]  # every other program: test time
    for name in names:
        kw: dict[str, Any] = dict(strategy=DFS(), executions=10**6, shrink=False)
        one = mmemu.explore(name, **kw)
        split = _parallel.explore_parallel(name, jobs=1, **kw)
        assert (split.executions, split.blocked, split.traces, split.exhausted) == \
            (one.executions, one.blocked, one.traces, one.exhausted), name
        assert (split.failure and split.failure.schedule) == \
            (one.failure and one.failure.schedule), name
        assert sum(u for _w, u, _e in split.workers) >= 1
        discarded += split.discarded
        failures += one.failure is not None
        steals += split.steals
    # the scrambled order did make speculation fail (and be re-run), and
    # the first failure was compared at least on the racy program
    assert discarded > 0
    assert failures >= 1
    assert sum(b.units for b in backends) > (100 if backend is Scrambled else 40)
    if backend is ScrambledStealing:
        # units did hand their subtree's rest back when asked
        assert steals > 10, steals
