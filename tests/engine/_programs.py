"""Small random concurrent programs, generated deterministically from a seed,
for checking the reductions against the full search.

A program is a list of CPUs, each a list of operations over a few shared
objects, engine locks and one rwlock:

- ``("r", x)`` / ``("w", x)``: a read or write of object x (one step);
- ``("if", x, then, else)``: read x, then run ``then`` if it is odd, else
  ``else`` (so executions of one program take different paths);
- ``("lock", l, body)``: acquire lock l, run body, release;
- ``("try", l, body)``: try_acquire lock l; if it succeeded run body and
  release;
- ``("read", body)`` / ``("write", body)``: the rwlock for read / for write
  around body.

Writes store a value that depends on what the CPU read before, so that the
order of conflicting steps changes what later steps see.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.lowlevel import Lock, RwLock

from ._support import Obj

Op = tuple[Any, ...]
Program = list[list[Op]]

OBJECTS = ("x", "y", "z")
LOCKS = ("A", "B")


def _ops(rng: random.Random, budget: int, depth: int, *, locks: bool) -> list[Op]:
    ops: list[Op] = []
    while budget > 0:
        kinds = ["r", "w", "w"]
        if depth < 2:
            kinds.append("if")
            if locks:
                kinds += ["lock", "lock", "try", "read", "write"]
        kind = rng.choice(kinds)
        if kind in ("r", "w"):
            ops.append((kind, rng.choice(OBJECTS)))
            budget -= 1
        elif kind == "if":
            x = rng.choice(OBJECTS)
            then = _ops(rng, rng.randint(0, 1), depth + 1, locks=locks)
            other = _ops(rng, rng.randint(0, 1), depth + 1, locks=locks)
            ops.append(("if", x, then, other))
            budget -= 1 + max(len(then), len(other))
        elif kind in ("lock", "try"):
            body = _ops(rng, rng.randint(0, 2), depth + 1, locks=locks)
            ops.append((kind, rng.choice(LOCKS), body))
            budget -= 2 + len(body)
        else:
            body = _ops(rng, rng.randint(0, 1), depth + 1, locks=locks)
            ops.append((kind, body))
            budget -= 2 + len(body)
    return ops


def generate(seed: int, *, cpus: tuple[int, int] = (2, 3), size: tuple[int, int] = (1, 3),
             locks: bool = True) -> Program:
    """The program of ``seed`` (same seed, same program, in any process)."""
    rng = random.Random(f"mmemu-test-program:{seed}")
    return [_ops(rng, rng.randint(*size), 0, locks=locks)
            for _ in range(rng.randint(*cpus))]


def scenario(program: Program) -> Callable[[Any], Awaitable[None]]:
    """The program as an mmemu scenario."""

    async def run(sim: Any) -> None:
        objs = {name: Obj(name) for name in OBJECTS}
        locks = {name: Lock(name) for name in LOCKS}
        rw = RwLock("rw")

        async def execute(ops: list[Op], me: int, seen: list[int]) -> None:
            for op in ops:
                kind = op[0]
                if kind == "r":
                    o = objs[op[1]]
                    await mmemu.step(f"read {op[1]}", reads=(o,))
                    seen.append(o.value)
                elif kind == "w":
                    o = objs[op[1]]
                    await mmemu.step(f"write {op[1]}", writes=(o,))
                    o.value = (sum(seen) * 7 + me + 1) % 5
                elif kind == "if":
                    o = objs[op[1]]
                    await mmemu.step(f"test {op[1]}", reads=(o,))
                    seen.append(o.value)
                    await execute(op[2] if o.value % 2 else op[3], me, seen)
                elif kind == "lock":
                    lock = locks[op[1]]
                    await lock.acquire()
                    await execute(op[2], me, seen)
                    await lock.release()
                elif kind == "try":
                    lock = locks[op[1]]
                    if await lock.try_acquire():
                        await execute(op[2], me, seen)
                        await lock.release()
                elif kind == "read":
                    await rw.acquire_read()
                    await execute(op[1], me, seen)
                    await rw.release_read()
                else:
                    await rw.acquire_write()
                    await execute(op[1], me, seen)
                    await rw.release_write()

        async with sim.cpus() as cpus:
            for me, ops in enumerate(program):
                cpus.start(execute, ops, me, [], name=f"p{me}")

    return run
