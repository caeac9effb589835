"""The benchmark programs of the DPOR literature, as raw mmemu scenarios.

Each shared-memory access of the C original is one step (declaring what it
reads and writes), each mutex operation one step on an engine ``Lock``.
``PROGRAMS`` lists them with the number of Mazurkiewicz traces the
literature reports (where it does) or that a full search counts.

Sources:

- ``readers(N)``: one writer of ``x``, N readers of it (RCMC, as in
  Nidhugg's ``benchmarks/from_RCMC/readers.c``); 2^N traces.
- ``lastzero(N)``: a reader scans ``array[N..0]`` for the last zero while
  writer ``j`` stores ``array[j-1] + 1`` into ``array[j]`` (Abdulla et al.,
  "Optimal dynamic partial order reduction", POPL 2014, Fig. 3 and the JACM
  2017 article); (N+3)*2^(N-2) traces.
- ``indexer(N)``: N threads insert 4 values each into a hash table with
  one mutex per bucket and linear probing (Flanagan & Godefroid,
  "Dynamic partial-order reduction for model checking software", POPL 2005);
  8 traces for N = 12, 64 for 13, 512 for 14, 4096 for 15.
- ``filesystem(N)``: N threads allocate an inode and a block under
  per-inode and per-block mutexes (Flanagan & Godefroid 2005); threads
  ``i`` and ``i + 13`` contend for one block: 2^(N-13) traces for N >= 13.
- ``mutex_order(N)``: N threads each do ``lock(m); ++x; unlock(m)``
  (Nidhugg's test suite); N! traces.
- From Nidhugg's test suite (``tests/smoke/C-tests``), counted here as
  Mazurkiewicz traces (Nidhugg's reference file counts weak traces, which
  merge orders of unobserved writes): ``n_writers_a_reader``,
  ``n_writes_a_read_two_threads``, ``redundant_co``, ``mutex_deadlock``,
  ``mutex_deadlock_one``, ``mutex_trylock_unlock``, ``mutex_vs_trylock``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.lowlevel import Lock

Scenario = Callable[[Any], Awaitable[None]]


class Cell:
    """A shared memory word with a stable name."""

    __slots__ = ("__mmemu_name__", "value")

    def __init__(self, name: str, value: int = 0) -> None:
        self.__mmemu_name__ = name
        self.value = value

    def __repr__(self) -> str:
        return self.__mmemu_name__


async def load(cell: Cell, label: str | None = None) -> int:
    await mmemu.step(label or f"load {cell.__mmemu_name__}", reads=(cell,))
    return cell.value


async def store(cell: Cell, value: int, label: str | None = None) -> None:
    await mmemu.step(label or f"store {cell.__mmemu_name__}", writes=(cell,))
    cell.value = value


def readers(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        x = Cell("x")

        async def writer() -> None:
            await store(x, 42)

        async def reader() -> None:
            await load(x)

        async with sim.cpus() as cpus:
            cpus.start(writer, name="writer")
            for i in range(n):
                cpus.start(reader, name=f"reader{i}")

    scenario.__qualname__ = f"readers({n})"
    return scenario


def lastzero(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        array = [Cell(f"array[{i}]") for i in range(n + 1)]

        async def reader() -> None:
            i = n
            while await load(array[i]) != 0:
                i -= 1

        async def writer(j: int) -> None:
            a = await load(array[j - 1])
            await store(array[j], a + 1)

        async with sim.cpus() as cpus:
            cpus.start(reader, name="reader")
            for j in range(1, n + 1):
                cpus.start(writer, j, name=f"writer{j}")

    scenario.__qualname__ = f"lastzero({n})"
    return scenario


INDEXER_SIZE = 128
INDEXER_MAX = 4


def indexer(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        table = [Cell(f"table[{h}]") for h in range(INDEXER_SIZE)]
        mutex = [Lock(f"cas_mutex[{h}]") for h in range(INDEXER_SIZE)]

        async def cas(h: int, val: int, new: int) -> bool:
            await mutex[h].acquire()
            ok = await load(table[h]) == val
            if ok:
                await store(table[h], new)
            await mutex[h].release()
            return ok

        async def thread(tid: int) -> None:
            m = 0
            for _ in range(10):
                if m < INDEXER_MAX:
                    m += 1
                    w = m * 11 + tid
                else:
                    return
                h = (w * 7) % INDEXER_SIZE
                while not await cas(h, 0, w):
                    h = (h + 1) % INDEXER_SIZE

        async with sim.cpus() as cpus:
            for tid in range(n):
                cpus.start(thread, tid, name=f"t{tid}")

    scenario.__qualname__ = f"indexer({n})"
    return scenario


NUMBLOCKS = 26
NUMINODE = 32


def filesystem(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        locki = [Lock(f"locki[{i}]") for i in range(NUMINODE)]
        inode = [Cell(f"inode[{i}]") for i in range(NUMINODE)]
        lockb = [Lock(f"lockb[{b}]") for b in range(NUMBLOCKS)]
        busy = [Cell(f"busy[{b}]") for b in range(NUMBLOCKS)]

        async def thread(tid: int) -> None:
            i = tid % NUMINODE
            await locki[i].acquire()
            if await load(inode[i]) == 0:
                b = (i * 2) % NUMBLOCKS
                for _ in range(10):
                    await lockb[b].acquire()
                    if not await load(busy[b]):
                        await store(busy[b], 1)
                        await store(inode[i], b + 1)
                        await lockb[b].release()
                        break
                    await lockb[b].release()
                    b = (b + 1) % NUMBLOCKS
            await locki[i].release()

        async with sim.cpus() as cpus:
            for tid in range(n):
                cpus.start(thread, tid, name=f"t{tid}")

    scenario.__qualname__ = f"filesystem({n})"
    return scenario


def mutex_order(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        m = Lock("m")
        x = Cell("x")

        async def thread() -> None:
            await m.acquire()
            await store(x, await load(x) + 1)
            await m.release()

        async with sim.cpus() as cpus:
            for tid in range(n):
                cpus.start(thread, name=f"t{tid}")

    scenario.__qualname__ = f"mutex_order({n})"
    return scenario


def n_writers_a_reader(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        x = Cell("x")

        async def writer(i: int) -> None:
            await store(x, i)

        async def reader() -> None:
            await load(x)

        async with sim.cpus() as cpus:
            for i in range(n):
                cpus.start(writer, i, name=f"writer{i}")
            cpus.start(reader, name="reader")

    scenario.__qualname__ = f"n_writers_a_reader({n})"
    return scenario


def n_writes_a_read_two_threads(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        x = Cell("x")

        async def thread(tid: int) -> None:
            for _ in range(n):
                await store(x, tid)
            await load(x)

        async with sim.cpus() as cpus:
            cpus.start(thread, 0, name="t0")
            cpus.start(thread, 1, name="t1")

    scenario.__qualname__ = f"n_writes_a_read_two_threads({n})"
    return scenario


def redundant_co(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        x = Cell("x")

        async def writer(v: int) -> None:
            for _ in range(n):
                await store(x, v)

        async def reader() -> None:
            await load(x)
            await load(x)

        async with sim.cpus() as cpus:
            cpus.start(writer, 1, name="t1")
            cpus.start(writer, 2, name="t2")
            cpus.start(reader, name="t3")

    scenario.__qualname__ = f"redundant_co({n})"
    return scenario


def mutex_deadlock(n: int, *, stuck: int | None = None) -> Scenario:
    """Each thread: lock(m); ++x; and unlocks only if it is not ``stuck``
    (``None``: nobody unlocks, Nidhugg's mutex_deadlock; a thread id: that
    one keeps the lock, mutex_deadlock_one / _one_first)."""

    async def scenario(sim: Any) -> None:
        m = Lock("m")
        x = Cell("x")

        async def thread(tid: int) -> None:
            await m.acquire()
            await store(x, await load(x) + 1)
            if stuck is not None and tid != stuck:
                await m.release()

        async with sim.cpus() as cpus:
            for tid in range(n):
                cpus.start(thread, tid, name=f"t{tid}")

    scenario.__qualname__ = f"mutex_deadlock({n}, stuck={stuck})"
    return scenario


def mutex_trylock_unlock(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        m = Lock("m")
        x = Cell("x")

        async def thread() -> None:
            if not await m.try_acquire():
                return
            await store(x, await load(x) + 1)
            await m.release()

        async with sim.cpus() as cpus:
            for tid in range(n):
                cpus.start(thread, name=f"t{tid}")

    scenario.__qualname__ = f"mutex_trylock_unlock({n})"
    return scenario


def mutex_vs_trylock(n: int) -> Scenario:
    async def scenario(sim: Any) -> None:
        m = Lock("m")
        x = Cell("x")

        async def thread() -> None:
            if not await m.try_acquire():
                return
            await store(x, await load(x) + 1)
            await m.release()

        async def main() -> None:
            await m.acquire()
            await store(x, await load(x) + 1)
            await m.release()

        async with sim.cpus() as cpus:
            for tid in range(n):
                cpus.start(thread, name=f"t{tid}")
            cpus.start(main, name="main")

    scenario.__qualname__ = f"mutex_vs_trylock({n})"
    return scenario


def three_on_one(k: int) -> Scenario:
    """Three CPUs each writing one object k times: (3k)!/(k!)^3 traces."""

    async def scenario(sim: Any) -> None:
        x = Cell("x")

        async def thread(tid: int) -> None:
            for _ in range(k):
                await store(x, tid)

        async with sim.cpus() as cpus:
            for tid in range(3):
                cpus.start(thread, tid, name=f"t{tid}")

    scenario.__qualname__ = f"three_on_one({k})"
    return scenario


def lastzero_traces(n: int) -> int:
    return (n + 3) * 2 ** n // 4


#: (name, scenario factory, sizes, published or known trace count per size,
#:  where the count comes from)
PROGRAMS: list[tuple[str, Callable[[int], Scenario], tuple[int, ...],
                     Callable[[int], int], str]] = [
    ("readers", readers, (3, 8, 10), lambda n: 2 ** n, "RCMC / Nidhugg: 2^N"),
    ("lastzero", lastzero, (3, 5, 10), lastzero_traces, "Abdulla et al. 2014/2017: (N+3)*2^(N-2)"),
    ("indexer", indexer, (12, 13, 14), lambda n: 8 ** (n - 11),
     "Flanagan-Godefroid 2005; Abdulla et al. 2014: 8, 64, 512"),
    ("filesystem", filesystem, (14, 16, 18), lambda n: 2 ** (n - 13),
     "Flanagan-Godefroid 2005; Abdulla et al. 2014: 2, 8, 32"),
    ("mutex_order", mutex_order, (3, 4, 5), math.factorial, "Nidhugg tests: N!"),
    ("three_on_one", three_on_one, (2, 3),
     lambda k: math.factorial(3 * k) // math.factorial(k) ** 3, "(3k)!/(k!)^3"),
    ("mutex_trylock_unlock", mutex_trylock_unlock, (3,), lambda n: 24,
     "Nidhugg tests: 24"),
    ("mutex_vs_trylock", mutex_vs_trylock, (1, 2), lambda n: {1: 3, 2: 16}[n],
     "Nidhugg tests: 3, 16"),
    ("n_writers_a_reader", n_writers_a_reader, (3, 5), lambda n: math.factorial(n + 1),
     "(N+1)! (writes ordered, the read among them)"),
]
