"""Tiny scenarios for the CLI tests: a lock-order deadlock with kernel-function
spans, and a counter suite with the mutant it must catch.

They are registered only for the duration of a test (``cli_registry``
fixture), so they never show up in other tests' view of the registry.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.lowlevel import block, current_cpu, wake_all

NO_LOCK = "clitest:no-lock"

COUNTER_DOC = """Two CPUs increment a counter under a lock.

    CPU 0                         CPU 1
    1. lock                       1. lock
    2. tmp = counter              2. tmp = counter
    3. counter = tmp + 1          3. counter = tmp + 1
    4. unlock                     4. unlock

There are 2 critical interleavings that matter:
 - CPU 1's 2 between CPU 0's 2 and 3: the lock makes CPU 1 wait at 1;
 - CPU 1's 1 between CPU 0's 1 and 4: it blocks until CPU 0's 4.
"""


class Named:
    def __init__(self, name: str) -> None:
        self.__mmemu_name__ = name
        self.value = 0


class Lock:
    """A blocking lock (engine block/wake_all) that keeps CPU.held current."""

    def __init__(self, name: str) -> None:
        self.__mmemu_name__ = name
        self.owner: Any = None

    async def acquire(self) -> None:
        me = current_cpu()
        assert me is not None
        with mmemu.span("mutex_lock"):
            await mmemu.step(f"lock {self.__mmemu_name__}", writes=(self,))
            while self.owner is not None:
                await block(self, f"lock {self.__mmemu_name__} (retry)", writes=(self,),
                            why=f"{self.__mmemu_name__}")
            self.owner = me
            me.held.append(self.__mmemu_name__)

    async def release(self) -> None:
        me = current_cpu()
        assert me is not None
        with mmemu.span("mutex_unlock"):
            await mmemu.step(f"unlock {self.__mmemu_name__}", writes=(self,))
            self.owner = None
            me.held.remove(self.__mmemu_name__)
            wake_all(self)


async def _ab(first: Lock, second: Lock) -> None:
    with mmemu.span("lock_both"):
        await first.acquire()
        await second.acquire()
        await second.release()
        await first.release()


async def deadlock(sim: Any) -> None:
    """Two CPUs take locks A and B in opposite orders (ABBA)."""
    a, b = Lock("A"), Lock("B")
    async with sim.cpus() as cpus:
        cpus.start(_ab, a, b, name="ab")
        cpus.start(_ab, b, a, name="ba")


async def _increment(counter: Named, lock: Lock) -> None:
    locked = not mmemu.mutant(NO_LOCK)
    if locked:
        await lock.acquire()
    await mmemu.step("2. tmp = counter", reads=(counter,))
    tmp = counter.value
    await mmemu.step("3. counter = tmp + 1", writes=(counter,))
    counter.value = tmp + 1
    if locked:
        await lock.release()


async def counter(sim: Any) -> None:
    c, lock = Named("counter"), Lock("counter_lock")
    async with sim.cpus() as cpus:
        cpus.start(_increment, c, lock, name="inc")
        cpus.start(_increment, c, lock, name="inc")
    sim.check(c.value == 2, f"counter is {c.value}, expected 2",
              details=f"  counter: value={c.value} (two CPUs each added 1)")


counter.__doc__ = COUNTER_DOC


def register() -> None:
    mmemu.scenario("clitest:deadlock", expect="fail", max_preemptions=2)(deadlock)
    mmemu.scenario("clitest:counter", catches=(NO_LOCK,), max_preemptions=2)(counter)
    mmemu.register_mutant(NO_LOCK, "increment without taking the counter lock",
                          caught_as="InvariantViolation",
                          doc="Drops steps 1 and 4: two loads can then see the same value.")


async def _spinner(flag: dict[str, bool]) -> None:
    while not flag["set"]:
        await mmemu.step("while (!flag->set)", reads=("flag",))
        await mmemu.step("cpu_relax()")


async def _bystander() -> None:
    await mmemu.step("do something else", writes=("x",))


async def spin_livelock(sim: Any) -> None:
    """A CPU spins on a flag nobody sets: a Livelock at max_steps."""
    flag = {"set": False}
    async with sim.cpus() as cpus:
        cpus.start(_spinner, flag, name="spinner")
        cpus.start(_bystander, name="bystander")
