"""i_mmap_lock and anon_vma->lock: spinlocks in 2.6.27, sleeping locks in the
modern generation (i_mmap_mutex 3d48ae45e723 and anon_vma mutex 2b575eb64f7a
in v3.0; rwsems since c8c06efa8b55 and 5a505085f043).  A driver may sleep in
a blockable range_start that an rmap walk or unmap_mapping_range calls under
them in the modern generation, and may not in 2.6.27."""

from __future__ import annotations

from typing import Any

import pytest

from mmemu import DFS
from mmemu.driver import Driver, Mutex, mutex_lock, mutex_unlock, register_driver
from mmemu.workload import explore_workload

EAGAIN_DEV = "tests/workload/fixtures.py:EagainDev"


@pytest.mark.parametrize("wl", [
    "vmas=p1; cpu0: fault(0,w) access(0); cpu1: reclaim(0)",   # try_to_unmap_file
    "vmas=s1; cpu0: fault(0,w) access(0); cpu1: truncate(0)",  # unmap_mapping_range
    "vmas=a1; cpu0: fault(0,w) access(0); cpu1: reclaim(0)",   # try_to_unmap_anon
])
def test_a_modern_mutex_driver_may_sleep_in_a_blockable_range(wl: str) -> None:
    # EagainDev takes its mutex in every blockable range_start; before the
    # modern generation had sleeping rmap locks this was SleepingWhileAtomic
    res = explore_workload(f"drivers={EAGAIN_DEV} api=modern {wl}",
                           strategy=DFS(max_preemptions=1), executions=5000)
    assert res.ok, res.failure.report() if res.failure else ""
    assert res.exhausted


class MutexIn2627(Driver):
    """A 2.6.27 driver whose invalidate_range_start takes a mutex."""

    name = "mutex2627"
    apis = ("2.6.27",)

    def __init__(self) -> None:
        super().__init__()
        self.lock = Mutex("mutex2627->lock")

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await mutex_lock(self.lock, label="B. mutex_lock")
        for k in [k for k in self.tlb.keys() if start <= k < end]:
            self.tlb.zap(k)
        await mutex_unlock(self.lock, label="B. mutex_unlock")

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        pass


@pytest.mark.parametrize("wl", [
    "vmas=s1; cpu0: truncate(0)",  # unmap_mapping_range: range_start under i_mmap_lock
])
def test_a_2627_mutex_driver_sleeps_under_a_spinlock(wl: str) -> None:
    old = register_driver("mutex2627", MutexIn2627)
    try:
        res = explore_workload(f"drivers=mutex2627 api=2.6.27 {wl}",
                               strategy=DFS(max_preemptions=1), executions=100)
    finally:
        register_driver("mutex2627", old)
    assert res.failure is not None and res.failure.kind == "SleepingWhileAtomic"
    assert "i_mmap_lock" in res.failure.report()
