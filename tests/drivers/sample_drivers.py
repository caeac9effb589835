"""Drivers written outside mmemu, loaded by path ("tests/drivers/sample_drivers.py:Class").

``SeqDriver`` is a correct minimal secondary MMU (a GRU-like dropin with a
sequence count); the others break it on purpose.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import Driver
from mmemu.kernel.locking import down_read, spin_lock, spin_unlock, up_read, SpinLock
from mmemu.lowlevel import block, wake_all
from mmemu.mm.memory import get_user_pages
from mmemu.mm.page import put_page

PAGE = 4096


class SeqDriver(Driver):
    """Translations keyed by virtual address; ``active`` counts ranges being
    invalidated, ``seq`` counts invalidations; both under ``lock``."""

    name = "seqdev"
    key_name = "va"

    def __init__(self) -> None:
        super().__init__()
        self.lock = SpinLock("seqdev->lock")
        self.seq = 0
        self.active = 0

    async def fault(self, address: int, write: bool = False) -> bool:
        va = address & ~(PAGE - 1)
        while True:
            await mmemu.step("seqdev: read seq", reads=((self, "seq"),))
            seq = self.seq
            await down_read(self.mm.mmap_sem)
            page = await get_user_pages(self.mm, va, write)
            await up_read(self.mm.mmap_sem)
            if page is None:
                return False
            await spin_lock(self.lock)
            await mmemu.step("seqdev: retry?", reads=((self, "seq"), (self, "active")))
            if self.active > 0 or self.seq != seq:
                busy = self.active > 0
                await spin_unlock(self.lock)
                await put_page(page)
                while busy and self.active > 0:
                    await block((self, "active"), "seqdev: range ended",
                                reads=((self, "active"),), why="seqdev range_active")
                continue
            await mmemu.step("seqdev: install", **self.tlb.install_accesses(va, page))
            self.tlb.install(va, page, writable=write)
            await spin_unlock(self.lock)
            await put_page(page)
            return True

    async def _zap(self, start: int, end: int) -> None:
        keys = [k for k in self.tlb.keys() if start <= k < end]
        await mmemu.step("seqdev: zap", **self.tlb.zap_accesses(keys))
        for k in keys:
            self.tlb.zap(k)

    async def invalidate_page(self, mm: Any, address: int) -> None:
        await spin_lock(self.lock)
        await mmemu.step("seqdev: seq++", writes=((self, "seq"),))
        self.seq += 1
        await self._zap(address & ~(PAGE - 1), (address & ~(PAGE - 1)) + PAGE)
        await spin_unlock(self.lock)

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.lock)
        await mmemu.step("seqdev: active++", writes=((self, "active"),))
        self.active += 1
        await self.zap_range(start, end)
        await spin_unlock(self.lock)

    async def zap_range(self, start: int, end: int) -> None:
        await self._zap(start, end)

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.lock)
        await mmemu.step("seqdev: seq++, active--", writes=((self, "seq"), (self, "active")))
        self.seq += 1
        self.active -= 1
        wake_all((self, "active"))
        await spin_unlock(self.lock)

    async def release(self, mm: Any) -> None:
        await spin_lock(self.lock)
        await self._zap(0, 1 << 64)
        await spin_unlock(self.lock)


class ZapNothingDriver(SeqDriver):
    """Forgets to zap anything in invalidate_range_start."""

    name = "zapnothing"

    async def zap_range(self, start: int, end: int) -> None:
        await mmemu.step("zapnothing: (no zap)")


class RaisingDriver(SeqDriver):
    """Has a bug: raises inside invalidate_range_start."""

    name = "raising"

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await mmemu.step("raising: range_start")
        raise RuntimeError("oops in range_start")


class BlockingDriver(SeqDriver):
    """Waits forever in invalidate_range_start (for an event nobody sends)."""

    name = "blocking"

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await mmemu.step("blocking: range_start")
        await block((self, "never"), "blocking: woken", why="an event nobody sends")


NotADriver = object
