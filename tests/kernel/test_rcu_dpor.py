"""Grace periods under optimal DPOR.

synchronize_srcu waits for every reader that was inside when it began; the
last reader's unlock wakes it.  The race analysis knows only that last
waker, so a reversal can put the waiter's wake-up step before another
reader's unlock, where it cannot run.  The wakeup tree then held a branch
for a CPU that was blocked, and the engine ran it anyway (ValueError in
_block, reported as a NondeterminismError) -- found 2026-11-26 by random
programs of locks and SRCU sections, shrunk to the program below.  Each
reduction must reach every trace of the full search."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

import mmemu
from mmemu.kernel.rcu import SrcuStruct, srcu_read_lock, srcu_read_unlock, synchronize_srcu

from tests.engine._support import RecordingDFS


class _Box:
    def __init__(self, name: str) -> None:
        self.__mmemu_name__ = name


async def _scenario(sim: Any) -> None:
    ss = SrcuStruct("ss")
    x = _Box("x")

    async def section() -> None:
        idx = await srcu_read_lock(ss)
        await srcu_read_unlock(ss, idx)

    async def two_sections() -> None:
        await mmemu.step("test x", reads=(x,))
        await section()
        await section()

    async with sim.cpus() as cpus:
        cpus.start(synchronize_srcu, ss, name="sync")
        cpus.start(section, name="reader")
        cpus.start(two_sections, name="reader2")


@cache
def _classes(reduction: str) -> frozenset[Any]:
    dfs = RecordingDFS(reduction=reduction)
    res = mmemu.explore(_scenario, strategy=dfs, executions=20_000, shrink=False)
    assert res.exhausted and res.ok
    return frozenset(dfs.classes)


def test_the_full_search_sees_the_grace_period_end_in_several_places() -> None:
    assert len(_classes("none")) > 3


@pytest.mark.parametrize("reduction", ["dpor", "source", "sleep"])
def test_grace_periods_explore_every_trace(reduction: str) -> None:
    assert _classes(reduction) == _classes("none")
