"""Helpers shared by the engine tests: tiny models and spying strategies."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import mmemu
from mmemu.engine import DFS, Strategy
from mmemu.engine._execution import Chooser, Simulation
from mmemu.lowlevel import block, current_cpu, wake_all


class Obj:
    """A shared object with a stable name (reports and trace keys use it)."""

    def __init__(self, name: str) -> None:
        self.__mmemu_name__ = name
        self.value = 0

    def __repr__(self) -> str:
        return self.__mmemu_name__


class Lock:
    """A blocking lock on the engine's block/wake_all, like DemoLock, that
    keeps ``CPU.held`` current so that deadlock reports say who holds what."""

    def __init__(self, name: str) -> None:
        self.__mmemu_name__ = name
        self.owner: Any = None

    def __repr__(self) -> str:
        return self.__mmemu_name__

    async def acquire(self) -> None:
        me = current_cpu()
        assert me is not None
        await mmemu.step(f"lock {self.__mmemu_name__}", writes=(self,))
        while self.owner is not None:
            await block(self, f"lock {self.__mmemu_name__} (retry)",
                        why=f"lock {self.__mmemu_name__} held by {self.owner.title}")
        self.owner = me
        me.held.append(self.__mmemu_name__)

    async def release(self) -> None:
        me = current_cpu()
        assert me is not None
        await mmemu.step(f"unlock {self.__mmemu_name__}", writes=(self,))
        self.owner = None
        me.held.remove(self.__mmemu_name__)
        wake_all(self)


def name_of(obj: Hashable) -> str:
    if isinstance(obj, tuple):  # (srcu_struct, cpu): a per-CPU key
        return "(" + ", ".join(name_of(o) for o in obj) + ")"
    return getattr(obj, "__mmemu_name__", None) or str(obj)


Event = tuple[int, str, tuple[str, ...], tuple[str, ...]]


class RecordingDFS(DFS):
    """DFS that keeps, per execution, its choices and its named events.

    ``classes`` holds one value per execution that two executions share iff
    they are equivalent: their Mazurkiewicz trace, or for an execution that
    failed in a CPU's step, the failure and that step's causal past (steps
    independent of it may or may not have run before it: the same failure).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs: list[list[Event]] = []
        self.schedules: list[tuple[int, ...]] = []
        self.classes: list[Any] = []

    def end(self, sim: Simulation) -> None:
        if not sim.abandoned:  # an abandoned run is no execution
            run = [(cpu, label, tuple(map(name_of, r)), tuple(map(name_of, w)))
                   for cpu, label, r, w, _pre in sim.events]
            self.runs.append(run)
            self.schedules.append(tuple(sim.choices))
            exc = sim.failure
            stuck = exc is not None and str(exc).startswith("no CPU can run")
            if exc is None or stuck or sim.failure_step < 1:
                self.classes.append((type(exc).__name__ if exc else None, trace_class(run)))
            else:
                cut = causal_past(run, sim.failure_step - 1)
                self.classes.append((type(exc).__name__, trace_class(cut)))
        super().end(sim)


class Spy(Strategy):
    """Wraps a strategy and keeps the choices of every execution."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.name = inner.name
        self.record = inner.record
        self.choices: list[tuple[int, ...]] = []
        self.steps: list[int] = []

    def bind(self, seed: int) -> None:
        self.inner.bind(seed)

    def begin(self, index: int) -> Chooser | None:
        return self.inner.begin(index)

    def end(self, sim: Simulation) -> None:
        self.choices.append(tuple(sim.choices))
        self.steps.append(sim.steps)
        self.inner.end(sim)

    @property  # type: ignore[override]
    def exhausted(self) -> bool:
        return self.inner.exhausted


def _conflict(a: Event, b: Event) -> bool:
    _, _, ar, aw = a
    _, _, br, bw = b
    return bool(set(aw) & (set(bw) | set(br)) or set(ar) & set(bw))


def trace_class(events: list[Event]) -> frozenset[Any]:
    """The Mazurkiewicz trace of an execution, as a hashable value.

    Events are named by (cpu, n-th event of that cpu, label, accesses); the
    class is those events plus, for every pair of conflicting events of
    different CPUs (write/write or read/write on one object), which came
    first.  Two executions are equivalent iff these sets are equal.
    """
    named = []
    seen: dict[int, int] = {}
    for ev in events:
        n = seen.get(ev[0], 0)
        seen[ev[0]] = n + 1
        named.append((ev[0], n, ev[1], ev[2], ev[3]))
    out: set[Any] = set(named)
    for j, b in enumerate(events):
        for i in range(j):
            a = events[i]
            if a[0] != b[0] and _conflict(a, b):
                out.add((named[i][:2], named[j][:2]))
    return frozenset(out)


def causal_past(events: list[Event], last: int) -> list[Event]:
    """The events that happen before event ``last`` (and it), in order."""
    keep = [False] * len(events)
    keep[last] = True
    for j in range(last, -1, -1):
        if not keep[j]:
            continue
        for i in range(j):
            if not keep[i] and (events[i][0] == events[j][0] or _conflict(events[i], events[j])):
                keep[i] = True
    return [e for k, e in enumerate(events) if keep[k]]
