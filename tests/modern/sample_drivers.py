"""Drivers for the modern-notifier tests (loaded as path drivers)."""

from __future__ import annotations

from typing import Any

from mmemu.drivers.kvm import KvmDriver
from mmemu.engine._execution import step
from mmemu.kernel.locking import Mutex, mutex_lock, mutex_unlock


class SleepingKvm(KvmDriver):
    """KVM whose range_start takes a mutex: fine in a blockable range, a
    bug in the OOM reaper's non-blockable one."""

    name = "sleepy"
    apis = ("modern",)

    def __init__(self) -> None:
        super().__init__()
        self.big_lock = Mutex("sleepy->lock")

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await mutex_lock(self.big_lock, label="sleepy: mutex_lock")
        await step("sleepy: bookkeeping")
        await mutex_unlock(self.big_lock, label="sleepy: mutex_unlock")
        await super().invalidate_range_start(mm, start, end)
