"""notifier:unregister-vs-invalidate reaches its goal with a driver whose
range_start ends in a spin_unlock (a regression test, issue 13).

The suite's notifier watch touches the notifier list at the end of every
driver callback (``touch``).  Until 2026-11-26 the sleep sets judged a
sleeping CPU by its declared accesses only, so the callback's last step
(here the spin_unlock) slept through the unhash it conflicts with: optimal
DPOR abandoned the goal's executions as sleep-set blocked and exhausted in
155 executions without ever running the goal (a walker's callback still
running when unregister unhashed the notifier).  Sleep sets now keep what a
sleeping step touched (tests/engine/test_touch.py)."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu import DFS
from mmemu.driver import SpinLock, register_driver, spin_lock, spin_unlock

from tests.workload.fixtures import EagainDev

GOAL = "a walker's callback was still running when the notifier was unhashed"


class LockedZapDev(EagainDev):
    """EagainDev with a spinlock around the zap in every range_start."""

    name = "lockedzap"

    def __init__(self) -> None:
        super().__init__()
        self.spin = SpinLock("lockedzap->lock")

    async def invalidate_range_start(self, range: Any) -> int:
        await spin_lock(self.spin, label="B. spin_lock")
        keys = [k for k in self.tlb.keys() if isinstance(k, int) and range.start <= k < range.end]
        await mmemu.step("B. starts++; active++; zap",
                         **self.tlb.zap_accesses(keys, writes=(self.active_key,)))
        self.starts += 1
        self.active += 1
        for k in keys:
            self.tlb.zap(k)
        await spin_unlock(self.spin, label="B. spin_unlock")
        return 0


def _reached(reduction: str) -> int:
    old = register_driver("lockedzap", LockedZapDev)
    try:
        res = mmemu.explore("notifier:unregister-vs-invalidate",
                            params={"driver": "lockedzap", "api": "modern"},
                            strategy=DFS(max_preemptions=None, reduction=reduction),
                            executions=5000, coverage=True, reaches=())
    finally:
        register_driver("lockedzap", old)
    assert res.exhausted and res.ok
    return sum(v[0] for (kind, name), v in res.coverage.counts.items() if GOAL in name)


@pytest.mark.parametrize("reduction", ["dpor", "sleep"])
def test_the_goal_is_reached(reduction: str) -> None:
    assert _reached(reduction) > 0
