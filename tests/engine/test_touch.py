"""``touch``: accesses a step records when it runs, beyond those it declared.

The race analysis reads them from the recorded events; the sleep sets must
see them too.  A CPU whose step was explored at a choice point sleeps in the
later branches until a dependent step wakes it, and when its step's only
conflict is a touched access, judging it by its declared accesses alone
keeps it asleep for good: the reversed order is abandoned as sleep-set
blocked and never runs to the end.  (Found 2026-11-26 in
notifier:unregister-vs-invalidate, whose notifier watch touches the
notifier list at the end of every driver callback: optimal DPOR never ran
its goal with a driver whose callback ends in a spin_unlock.)"""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu import DFS
from mmemu.engine._execution import touch

from ._support import Obj


def _scenario(*, extra_step: bool) -> Any:
    async def run(sim: Any) -> None:
        x = Obj("x")
        lock = Obj("lock")

        async def reader() -> None:
            # declares only its own lock word; what it reads of x is known
            # to it only when it runs (touched)
            await mmemu.step("look at x", writes=(lock,))
            touch(reads=(x,))
            seen = x.value
            if extra_step:
                await mmemu.step("after", writes=(lock,))
            sim.check(seen == 0, "the reader saw the writer's x")

        async def writer() -> None:
            await mmemu.step("write x", writes=(x,))
            x.value = 1
            await mmemu.step("after the write")

        async with sim.cpus() as cpus:
            cpus.start(reader, name="reader")
            cpus.start(writer, name="writer")

    return run


@pytest.mark.parametrize("reduction", ["dpor", "source", "sleep", "none"])
@pytest.mark.parametrize("extra_step", [False, True])
def test_a_conflict_only_touched_is_still_reversed(reduction: str, extra_step: bool) -> None:
    res = mmemu.explore(_scenario(extra_step=extra_step),
                        strategy=DFS(max_preemptions=None, reduction=reduction),
                        executions=100, shrink=False)
    assert not res.ok, (reduction, res.executions, res.blocked)
    assert "saw the writer's x" in res.failure.message


@pytest.mark.parametrize("reduction", ["dpor", "source"])
def test_both_orders_run_to_the_end(reduction: str) -> None:
    res = mmemu.explore(_scenario(extra_step=True),
                        strategy=DFS(max_preemptions=None, reduction=reduction),
                        executions=100, shrink=False, stop_on_failure=False)
    assert res.exhausted
    assert res.executions == 2 and res.blocked == 0
