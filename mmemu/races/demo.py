"""Teaching scenarios for the engine itself: the lost update.

Two CPUs increment one counter.  An increment is two steps::

    CPU 0                         CPU 1
    1. tmp = counter              1. tmp = counter
    2. counter = tmp + 1          2. counter = tmp + 1

There is 1 critical interleaving that matters:
 - CPU 1's load (1) runs between CPU 0's load (1) and store (2): both store
   the same value and one increment is lost.  One preemption suffices.

``demo:lost-update-locked`` takes a lock around the two steps; every
interleaving then ends with counter == 2.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.lowlevel import block, wake_all


class Counter:
    __mmemu_name__ = "counter"

    def __init__(self) -> None:
        self.value = 0


class DemoLock:
    """A minimal blocking lock built on the engine's wait/wake primitive."""

    __mmemu_name__ = "lock"

    def __init__(self) -> None:
        self.owner: Any = None

    async def acquire(self) -> None:
        await mmemu.step("lock", writes=(self,))
        while self.owner is not None:
            await block(self, "lock (retry)", why="demo lock")
        self.owner = True

    async def release(self) -> None:
        await mmemu.step("unlock", writes=(self,))
        self.owner = None
        wake_all(self)


async def _increment(counter: Counter) -> None:
    await mmemu.step("1. tmp = counter", reads=(counter,))
    tmp = counter.value
    await mmemu.step("2. counter = tmp + 1", writes=(counter,))
    counter.value = tmp + 1


async def _locked_increment(counter: Counter, lock: DemoLock) -> None:
    await lock.acquire()
    await _increment(counter)
    await lock.release()


@mmemu.scenario("demo:lost-update", expect="fail", strategy="dfs", max_preemptions=None)
async def lost_update(sim: Any) -> None:
    """Two CPUs load then store a shared counter: an increment is lost."""
    counter = Counter()
    async with sim.cpus() as cpus:
        cpus.start(_increment, counter, name="inc")
        cpus.start(_increment, counter, name="inc")
    sim.check(counter.value == 2, f"counter is {counter.value}, expected 2 (an increment was lost)")


@mmemu.scenario("demo:lost-update-locked", strategy="dfs", max_preemptions=None,
                reaches=["step:lock (retry)"])
async def lost_update_locked(sim: Any) -> None:
    """The same two increments under a lock: no update is lost."""
    counter = Counter()
    lock = DemoLock()
    async with sim.cpus() as cpus:
        cpus.start(_locked_increment, counter, lock, name="inc")
        cpus.start(_locked_increment, counter, lock, name="inc")
    sim.check(counter.value == 2, f"counter is {counter.value}, expected 2")
