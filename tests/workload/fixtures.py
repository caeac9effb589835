"""Drivers written against the public driver API only (mmemu, mmemu.driver,
mmemu.lowlevel), as a user would: correct ones, and ones that reproduce real
bugs from kernel history that no fixed suite of mmemu reaches.  Loaded by
path: "tests/workload/fixtures.py:PinCacheDriver".

- ``SeqDriver``: correct.  KVM's protocol with generic names: a seq bumped
  by every invalidation and a count of ranges in flight, both under the
  driver lock; the fault retries if either moved since it read the seq.
- ``HwTlbDriver``: correct.  SeqDriver plus a second translation cache (a
  hardware TLB behind the driver's table, filled by accesses, flushed by
  every invalidation), registered with ``add_tlb``.
- ``PinCacheDriver``: BUG.  A pfn cache beside the table (kvm's
  gfn_to_pfn_cache before it learnt the seq protocol): refreshed from a
  pinned page looked up with get_user_pages, and invalidated by the
  notifier -- but the refresh does not check the seq, so an invalidation
  that runs between the lookup and the store is missed and the cache keeps
  a pinned page the process no longer maps.
- ``PinCacheDriverFixed``: the same cache refreshed under the seq protocol.
- ``LateReleaseDriver``: BUG.  Its detach skips mmu_notifier_unregister when
  it sees that exit_mmap's ->release has started ("the mm is going away
  anyway") and returns while that ->release still runs (the class of bug of
  the 2013 GRU/mmu_notifier_unregister race, 751efd8610d3).
- ``LeakyCountDriver``: BUG caught by its own ``check()``: range_end
  forgets to drop its count of active ranges for multi-page ranges.
- ``EagainDev``: correct.  A modern driver that fails a non-blockable start
  with -EAGAIN when its mutex is busy, and checks that its starts and ends
  balance.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import (
    EAGAIN,
    PAGE_SIZE,
    Driver,
    Mutex,
    Page,
    SpinLock,
    down_read,
    get_user_pages,
    mmu_notifier_range_blockable,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
    put_page,
    spin_lock,
    spin_unlock,
    up_read,
)
from mmemu.lowlevel import block, reach, wake_all


class SeqDriver(Driver):
    """A device TLB keyed by virtual address, KVM's seq/count protocol."""

    name = "seqdev"
    key_name = "va"
    apis = ("2.6.27", "modern")

    def __init__(self) -> None:
        super().__init__()
        self.lock = SpinLock(f"{self.name}->lock", "seqdev->lock")
        self.seq = 0
        self.active = 0
        self.seq_key = (self, "seq")
        self.active_key = (self, "active")

    async def gup(self, address: int, write: bool) -> Page | None:
        await down_read(self.mm.mmap_sem, label="G. down_read(mmap_sem)")
        page = await get_user_pages(self.mm, address, write)
        await up_read(self.mm.mmap_sem, label="G. up_read(mmap_sem)")
        return page

    async def fault(self, address: int, write: bool = False) -> bool:
        key = self.key_of(address)
        while True:
            await mmemu.step("F1. seq = dev->seq", reads=(self.seq_key,))
            seq = self.seq
            page = await self.gup(address, write)
            if page is None:
                return False
            await spin_lock(self.lock, label="F3. spin_lock(dev->lock)")
            await mmemu.step("F4. retry?", reads=(self.seq_key, self.active_key))
            if self.active == 0 and self.seq == seq:
                await mmemu.step("F5. install", **self.tlb.install_accesses(key, page))
                self.tlb.install(key, page, writable=write)
                await spin_unlock(self.lock, label="F6. spin_unlock(dev->lock)")
                await put_page(page, label="F6. put_page")
                return True
            busy = self.active != 0
            await spin_unlock(self.lock, label="F4. spin_unlock(dev->lock) (retry)")
            await put_page(page, label="F4. put_page (retry)")
            while busy and self.active > 0:
                await block(self.active_key, "F4. woken: no range in flight",
                            reads=(self.active_key,), why="dev->active to drop to 0")

    def keys_in(self, start: int, end: int) -> list[Any]:
        return [k for k in self.tlb.keys() if isinstance(k, int) and start <= k < end]

    async def zap(self, start: int, end: int, why: str) -> None:
        """Drop the translations of [start, end) (caller holds dev->lock)."""
        keys = self.keys_in(start, end)
        await mmemu.step(f"zap ({why})", **self.tlb.zap_accesses(keys))
        for k in keys:
            self.tlb.zap(k)

    async def invalidate_page(self, mm: Any, address: int) -> None:
        await spin_lock(self.lock, label="A. spin_lock(dev->lock)")
        await mmemu.step("A. dev->seq++", writes=(self.seq_key,))
        self.seq += 1
        await self.zap(address, address + PAGE_SIZE, "invalidate_page")
        await spin_unlock(self.lock, label="A. spin_unlock(dev->lock)")

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.lock, label="B. spin_lock(dev->lock)")
        await mmemu.step("B. dev->active++", writes=(self.active_key,))
        self.active += 1
        await self.zap(start, end, "range_start")
        await spin_unlock(self.lock, label="B. spin_unlock(dev->lock)")

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.lock, label="C. spin_lock(dev->lock)")
        await mmemu.step("C. dev->seq++; dev->active--", writes=(self.seq_key, self.active_key))
        self.seq += 1
        self.range_ended(start, end)
        wake_all(self.active_key)
        await spin_unlock(self.lock, label="C. spin_unlock(dev->lock)")

    def range_ended(self, start: int, end: int) -> None:
        self.active -= 1

    async def release(self, mm: Any) -> None:
        await spin_lock(self.lock, label="R. spin_lock(dev->lock)")
        await self.zap(0, 1 << 64, "release")
        await spin_unlock(self.lock, label="R. spin_unlock(dev->lock)")

    def check(self) -> None:
        # A driver detached (or released by exit) in the middle of an
        # invalidation saw its range_start and never its range_end: the
        # count only has to be back to 0 while the notifier is registered.
        if self.mn.hashed:
            assert self.active == 0, f"{self.active} invalidation range(s) still active at the end"


class HwTlbDriver(SeqDriver):
    """A hardware TLB in front of the driver's table: filled on access,
    flushed with the table on every invalidation."""

    name = "hwtlb"

    def __init__(self) -> None:
        super().__init__()
        self.hw = self.add_tlb("hw", key_name="va")

    async def access(self, address: int, write: bool = False) -> Page | None:
        key = self.key_of(address)
        await spin_lock(self.lock, label="X. spin_lock(dev->lock)")
        entry = self.tlb.entries.get(key)
        acc: dict[str, tuple[Any, ...]] = (self.hw.install_accesses(key, entry.page,
                                                                    reads=(self.tlb.slot(key),))
                                           if entry is not None else {"reads": (self.tlb.slot(key),)})
        await mmemu.step("X. TLB miss: fill the hw TLB from the table", **acc)
        if entry is not None and self.hw.lookup(key) is None:
            self.hw.install(key, entry.page, writable=entry.writable)
        await spin_unlock(self.lock, label="X. spin_unlock(dev->lock)")
        got = self.hw.entries.get(key)
        await mmemu.step("X. hw TLB access", reads=(self.hw.slot(key),) + (
            (got.page._count,) if got is not None else ()))
        got = self.hw.entries.get(key)
        if write and got is not None and got.writable is False:
            return None  # the hardware refuses the write: a write fault, nothing written
        return self.hw.access(key, write=write)

    async def zap(self, start: int, end: int, why: str) -> None:
        await super().zap(start, end, why)
        keys = [k for k in self.hw.keys() if isinstance(k, int) and start <= k < end]
        await mmemu.step(f"flush the hw TLB ({why})", **self.hw.zap_accesses(keys))
        for k in keys:
            self.hw.zap(k)


class PinCacheDriver(SeqDriver):
    """SeqDriver plus a pfn cache holding pinned pages (see the module
    docstring).  ``seq_refresh``: the refresh follows the seq protocol."""

    name = "pincache"
    seq_refresh = False

    def __init__(self) -> None:
        super().__init__()
        self.pfncache = self.add_tlb("pfncache", key_name="va")

    async def fault(self, address: int, write: bool = False) -> bool:
        if not await super().fault(address, write):
            return False
        await self.refresh(address, write)
        return True

    async def refresh(self, address: int, write: bool) -> None:
        """kvm_gpc_refresh: pin the page behind ``address`` into the cache."""
        key = self.key_of(address)
        while True:
            await mmemu.step("P1. seq = dev->seq (refresh)", reads=(self.seq_key,))
            seq = self.seq
            page = await self.gup(address, write)
            if page is None:
                return
            await spin_lock(self.lock, label="P3. spin_lock(dev->lock) (refresh)")
            await mmemu.step("P4. retry? (refresh)", reads=(self.seq_key, self.active_key))
            if self.seq_refresh and (self.active or self.seq != seq):
                busy = self.active != 0
                await spin_unlock(self.lock, label="P4. spin_unlock(dev->lock) (retry)")
                await put_page(page, label="P4. put_page (retry)")
                # as the fault: wait for the invalidation in flight to end
                # (retrying at once would spin against a preempted one)
                while busy and self.active > 0:
                    await block(self.active_key, "P4. woken: no range in flight",
                                reads=(self.active_key,), why="dev->active to drop to 0")
                continue
            old = self.pfncache.entries.get(key)
            await mmemu.step("P5. store the pinned pfn in the cache",
                             **self.pfncache.install_accesses(key, page))
            self.pfncache.install(key, page, writable=write)
            self.pins.append(page)  # GUP's reference is the cache's pin now
            await spin_unlock(self.lock, label="P6. spin_unlock(dev->lock) (refresh)")
            if old is not None:
                await self.unpin(old.page, label="P6. unpin the old pfn")
            return

    async def zap(self, start: int, end: int, why: str) -> None:
        await super().zap(start, end, why)
        keys = [k for k in self.pfncache.keys() if isinstance(k, int) and start <= k < end]
        await mmemu.step(f"invalidate the pfn cache ({why})", **self.pfncache.zap_accesses(keys))
        gone = [self.pfncache.entries[k].page for k in keys]
        for k in keys:
            self.pfncache.zap(k)
        for page in gone:
            # still mapped by the pte being invalidated: this put never frees
            await self.unpin(page, label=f"unpin the cached pfn ({why})")


class PinCacheDriverFixed(PinCacheDriver):
    name = "pincache-fixed"
    seq_refresh = True


class LateReleaseDriver(SeqDriver):
    """Detach skips unregister once exit_mmap's ->release has begun."""

    name = "laterelease"

    def __init__(self) -> None:
        super().__init__()
        self.dying = False
        self.dying_key = (self, "dying")

    async def release(self, mm: Any) -> None:
        await mmemu.step("R0. dev->dying = true", writes=(self.dying_key,))
        self.dying = True
        await super().release(mm)

    async def detach(self) -> None:
        await mmemu.step("D0. dev->dying?", reads=(self.dying_key,))
        if self.dying:
            return  # "exit is tearing the mm down anyway": no unregister
        await super().detach()


class LeakyCountDriver(SeqDriver):
    """range_end only drops ``active`` for one-page ranges (a later fault
    would wait forever; before that, only the driver's check() sees it)."""

    name = "leakycount"

    def range_ended(self, start: int, end: int) -> None:
        if end - start == PAGE_SIZE:
            self.active -= 1


class EagainDev(Driver):
    """Correct.  A modern driver whose lock is a mutex: in a non-blockable
    range (the OOM reaper) it only trylocks, and fails the start with -EAGAIN
    when the lock is busy.  It counts its starts and ends; check() wants them
    balanced: the core must end exactly the notifiers whose start succeeded."""

    name = "eagain"
    apis = ("modern",)
    range_callbacks = True

    def __init__(self) -> None:
        super().__init__()
        self.lock = Mutex(f"{self.name}->lock", "eagain->lock")
        self.seq = 0
        self.active = 0
        self.starts = 0
        self.ends = 0
        self.seq_key = (self, "seq")
        self.active_key = (self, "active")

    async def fault(self, address: int, write: bool = False) -> bool:
        key = self.key_of(address)
        while True:
            await mmemu.step("F1. seq", reads=(self.seq_key,))
            seq = self.seq
            await down_read(self.mm.mmap_sem, label="F2. down_read(mmap_sem)")
            page = await get_user_pages(self.mm, address, write)
            await up_read(self.mm.mmap_sem, label="F2. up_read(mmap_sem)")
            if page is None:
                return False
            await mutex_lock(self.lock, label="F3. mutex_lock")
            await mmemu.step("F4. retry?", reads=(self.seq_key, self.active_key))
            ok = self.active == 0 and self.seq == seq
            if ok:
                await mmemu.step("F5. install", **self.tlb.install_accesses(key, page))
                self.tlb.install(key, page, writable=write)
            await mutex_unlock(self.lock, label="F6. mutex_unlock")
            await put_page(page, label="F6. put_page")
            if ok:
                return True
            while self.active:
                await block(self.active_key, "F4. woken", reads=(self.active_key,))

    async def invalidate_range_start(self, range: Any) -> int:
        if mmu_notifier_range_blockable(range):
            await mutex_lock(self.lock, label="B. mutex_lock")
        elif not await mutex_trylock(self.lock, label="B. mutex_trylock (non-blockable)"):
            reach("eagain: -EAGAIN")
            return -EAGAIN
        keys = [k for k in self.tlb.keys() if isinstance(k, int) and range.start <= k < range.end]
        await mmemu.step("B. starts++; active++; zap",
                         **self.tlb.zap_accesses(keys, writes=(self.active_key,)))
        self.starts += 1
        self.active += 1
        for k in keys:
            self.tlb.zap(k)
        await mutex_unlock(self.lock, label="B. mutex_unlock")
        return 0

    async def invalidate_range_end(self, range: Any) -> None:
        await mmemu.step("C. ends++; seq++; active--; wake",
                         writes=(self.seq_key, self.active_key))
        self.ends += 1
        self.seq += 1
        self.active -= 1
        wake_all(self.active_key)

    async def release(self, mm: Any) -> None:
        await mmemu.step("R. zap all", **self.tlb.zap_accesses(self.tlb.keys()))
        self.tlb.zap_all()

    def check(self) -> None:
        if self.mn.hashed:
            assert self.starts == self.ends, f"{self.starts} starts but {self.ends} ends"
