"""A toy secondary MMU kept coherent by mmu notifiers: the driver that
docs/driver.md ("Write your own driver") builds step by step.

Run it through every driver suite:

    mmemu run 'notifier:*' --driver examples/toy_driver.py:ToyDriver

The device caches translations virtual address -> page in its TLB
(``self.tlb``, the framework's shadow TLB, which the checkers watch).  The
protocol is KVM's, with the names made generic:

Fault side (``fault``):
  T1. seq = toy->seq
  T2. get_user_pages under mmap_sem for read (a page reference)
  T3. spin_lock(toy->lock)
  T4. if a range is active or seq changed: unlock, put_page, wait for the
      range to end, goto T1
  T5. install the translation
  T6. spin_unlock; put_page (the translation does not pin the page)

Invalidate side (the notifier callbacks, each under toy->lock):
  A. invalidate_page: seq++, zap the address
  B. invalidate_range_start: active++, zap the range
  C. invalidate_range_end: seq++, active--, wake the waiting faults
  release: zap everything

There are 2 critical interleavings that matter:
 - A or C between T1 and T4: seq changed, T4 retries (T2's page may be the
   one being freed);
 - B before T4 and C after it: active != 0, T4 retries after C (pages are
   freed between B and C, and B's zap already ran).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import (
    Driver,
    Page,
    SpinLock,
    down_read,
    get_user_pages,
    put_page,
    spin_lock,
    spin_unlock,
    up_read,
)
from mmemu.lowlevel import block, wake_all

PAGE_SIZE = 4096


class ToyDriver(Driver):
    """A device TLB keyed by page-aligned virtual address."""

    name = "toy"
    key_name = "va"

    def __init__(self) -> None:
        super().__init__()
        self.lock = SpinLock("toy->lock")
        self.seq = 0     # bumped by every invalidation, under self.lock
        self.active = 0  # range_start .. range_end sections in flight
        # access keys: what the explorer sees these fields as
        self.seq_key = (self, "seq")
        self.active_key = (self, "active")

    # ------------------------------------------------------ the fault side

    async def fault(self, address: int, write: bool = False) -> bool:
        key = self.key_of(address)
        while True:
            await mmemu.step("T1. seq = toy->seq", reads=(self.seq_key,))
            seq = self.seq
            await down_read(self.mm.mmap_sem, label="T2. down_read(mmap_sem)")
            page: Page | None = await get_user_pages(self.mm, address, write)
            await up_read(self.mm.mmap_sem, label="T2. up_read(mmap_sem)")
            if page is None:
                return False  # nothing mapped there (SIGBUS for the device)
            await spin_lock(self.lock, label="T3. spin_lock(toy->lock)")
            await mmemu.step("T4. retry?", reads=(self.seq_key, self.active_key))
            if self.active == 0 and self.seq == seq:
                await mmemu.step("T5. install", **self.tlb.install_accesses(key, page))
                self.tlb.install(key, page, writable=write)
                await spin_unlock(self.lock, label="T6. spin_unlock(toy->lock)")
                await put_page(page, label="T6. put_page")
                return True
            busy = self.active != 0
            await spin_unlock(self.lock, label="T4. spin_unlock(toy->lock) (retry)")
            await put_page(page, label="T4. put_page (retry)")
            # Wait for range_end instead of spinning (a spin would only burn steps).
            while busy and self.active > 0:
                await block(self.active_key, "T4. woken: no range in flight",
                            reads=(self.active_key,), why="toy->active to drop to 0")

    # -------------------------------------------------- the notifier side

    async def _zap(self, start: int, end: int, why: str) -> None:
        """Drop the translations in [start, end) (caller holds toy->lock)."""
        keys = [k for k in self.tlb.keys() if isinstance(k, int) and start <= k < end]
        await mmemu.step(f"toy: zap ({why})", **self.tlb.zap_accesses(keys))
        for k in keys:
            self.tlb.zap(k)

    async def invalidate_page(self, mm: Any, address: int) -> None:
        await spin_lock(self.lock, label="A. spin_lock(toy->lock)")
        await mmemu.step("A. toy->seq++", writes=(self.seq_key,))
        self.seq += 1
        await self._zap(address, address + PAGE_SIZE, "invalidate_page")
        await spin_unlock(self.lock, label="A. spin_unlock(toy->lock)")

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.lock, label="B. spin_lock(toy->lock)")
        await mmemu.step("B. toy->active++", writes=(self.active_key,))
        self.active += 1
        await self._zap(start, end, "range_start")
        await spin_unlock(self.lock, label="B. spin_unlock(toy->lock)")

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.lock, label="C. spin_lock(toy->lock)")
        await mmemu.step("C. toy->seq++; toy->active--", writes=(self.seq_key, self.active_key))
        self.seq += 1
        self.active -= 1
        wake_all(self.active_key)
        await spin_unlock(self.lock, label="C. spin_unlock(toy->lock)")

    async def release(self, mm: Any) -> None:
        await spin_lock(self.lock, label="release: spin_lock(toy->lock)")
        await self._zap(0, 1 << 64, "release")
        await spin_unlock(self.lock, label="release: spin_unlock(toy->lock)")
