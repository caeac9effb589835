"""An HMM / ODP device mirror: a device page table kept coherent by an interval notifier.

Emulates: lib/test_hmm.c (dmirror), mm/hmm.c (hmm_range_fault),
drivers/infiniband/core/umem_odp.c (the same protocol), on the interval
notifier API of mm/mmu_notifier.c (modern generation only, 5.5+)

The mirror covers the mm's address space with one ``mmu_interval_notifier``.
Unlike KVM's fault, hmm_range_fault takes *no* page reference: the pfns it
returns are valid only if no invalidation hit the interval since
``mmu_interval_read_begin``, and the driver checks that under the same lock
its ``->invalidate`` takes to publish the new seq.

Map side (``fault``, dmirror_range_fault):
  1. seq = mmu_interval_read_begin(sub)   (sleeps while an invalidation
                                           that hit sub is in progress)
  2. down_read(mmap_sem); hmm_range_fault: walk the CPU page table, fault
     what is missing (handle_mm_fault); up_read  -- no page reference
  3. lock(dmirror->lock)
  4. if mmu_interval_read_retry(sub, seq): unlock, goto 1
  5. program the device page table (install); unlock

Invalidate side (``invalidate``, dmirror_interval_invalidate):
  A. blockable: lock(dmirror->lock); non-blockable: trylock, or return
     false (the caller gets -EAGAIN and retries later)
  B. mmu_interval_set_seq(sub, cur_seq)
  C. zap the device entries of the range; unlock; return true

There are 3 critical interleavings that matter:
 - the walk (2) sees a pte, then an invalidation runs A-C, clears the pte
   and frees the page before 3: B changed sub's seq, 4 retries.  Skipping
   the test (mutant ``hmm:no-retry``) programs the device with a freed page.
 - B outside the lock (mutant ``hmm:seq-outside-lock``: A, C, unlock, then
   B): 3-5 fit between C's unlock and B, 4 sees the old seq, 5 installs a
   page the invalidation frees right after -- C's zap ran before it.
 - 1 while the invalidation is between I1 and I3 (after B): read_begin
   waits for the end, so 2 sees the cleared pte.
Harmless: an invalidation before 1 (2 sees the new ptes), or after 5 (C
zaps the entry).

Modelling note: ``dmirror->lock`` is a spinlock (test_hmm has a mutex).
It was chosen while the emulated mm called blockable invalidations under
2.6.27's spinlocks in both generations; the modern generation now holds
sleeping locks there (i_mmap_rwsem, anon_vma->rwsem), so a mutex would do,
but the reference driver keeps the spinlock its suites were measured with.
A non-blockable range uses spin_trylock and gives up on contention, as the
mutex drivers do with mutex_trylock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import mmemu
from mmemu import step
from mmemu.driver import (
    PAGE_SIZE,
    TASK_SIZE,
    VM_FAULT_ERROR,
    VM_WRITE,
    Driver,
    MmuIntervalNotifier,
    MmuIntervalNotifierOps,
    MmuNotifierRange,
    Page,
    SpinLock,
    down_read,
    find_vma,
    guarded,
    handle_mm_fault,
    mmget_not_zero,
    mmput,
    mmu_interval_notifier_insert,
    mmu_interval_notifier_remove,
    mmu_interval_read_begin,
    mmu_interval_read_retry,
    mmu_interval_set_seq,
    mmu_notifier_range_blockable,
    pmd_key,
    pte_get,
    pte_key,
    spin_lock,
    spin_trylock,
    spin_unlock,
    up_read,
)
from mmemu.lowlevel import reach

NO_RETRY = mmemu.register_mutant(
    "hmm:no-retry",
    "the HMM mirror programs the device without mmu_interval_read_retry",
    caught_as="SecondaryUseAfterFree / FreedPageStillMapped (device mapping to a freed page)",
    doc="hmm_range_fault returns pfns without page references; only the seq test under "
        "the driver lock says they are still the CPU's.  Without it, an invalidation that "
        "cleared the pte and freed the page between the walk and the device update goes "
        "unnoticed and the device maps a freed page.")
SEQ_OUTSIDE_LOCK = mmemu.register_mutant(
    "hmm:seq-outside-lock",
    "the mirror's ->invalidate calls mmu_interval_set_seq after dropping the driver lock",
    caught_as="FreedPageStillMapped (device mapping to a page the invalidation frees)",
    doc="mmu_interval_set_seq must happen under the lock that mmu_interval_read_retry "
        "runs under: otherwise the map side can take the lock between the zap and the "
        "seq update, see the old seq, and program the device with a page the "
        "invalidation is about to free.")


#: a fault found the mirrored process gone
HMM_MM_GONE = "hmm: dmirror_fault found the mirrored mm exiting (mmget_not_zero failed)"


class HmmMirror(Driver):
    """A device mirroring ``mm`` through one interval notifier (dmirror)."""

    name = "hmm"
    key_name = "va"
    apis = ("modern",)
    #: on the mm's interval tree, not its notifier hlist
    interval_notifier = True

    def __init__(self, start: int = 0, length: int = TASK_SIZE, *, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        super().__init__()
        self.lock = SpinLock("dmirror->lock", "dmirror->lock")
        # the device page table is programmed and zapped under dmirror->lock
        self.tlb.lock = self.lock
        self.start = start
        self.length = length
        self.notifier = MmuIntervalNotifier(
            MmuIntervalNotifierOps(self._invalidate), name=f"{self.name}.interval_notifier",
            owner=self)

    # ---------------------------------------------------------- operations

    async def attach(self, kernel: Any, mm: Any) -> int:
        """dmirror_fops_open: mmu_interval_notifier_insert over the mirror's range."""
        self.bind(kernel, mm)
        return await mmu_interval_notifier_insert(self.notifier, mm, self.start, self.length,
                                                  self.notifier.ops)  # type: ignore[arg-type]

    async def detach(self) -> None:
        """dmirror_fops_release: the device stops translating (its page table
        is torn down under the lock), then mmu_interval_notifier_remove,
        which returns only when no ->invalidate of it can run any more."""
        await spin_lock(self.lock, label="release: lock(dmirror->lock)")
        await step("release: dmirror device page table torn down",
                   **self.tlb.zap_accesses(self.tlb.keys()))
        self.tlb.zap_all()
        await spin_unlock(self.lock, label="release: unlock(dmirror->lock)")
        await mmu_interval_notifier_remove(self.notifier)

    async def hmm_range_fault(self, address: int, write: bool) -> Page | None:
        """2. the page at ``address`` (no reference), faulting it in if the
        pte does not allow the access; None: -EFAULT.  Caller holds mmap_sem
        for read.  The walk reads the pte without the PTL (hmm_vma_walk_pmd)."""
        mm = self.mm
        await step("2. hmm_range_fault: find_vma", reads=((mm, "mmap"),))
        vma = find_vma(mm, address)
        if vma is None or vma.vm_start > address or (write and not vma.vm_flags & VM_WRITE):
            return None
        while True:
            await step("2. hmm_vma_walk_pmd: pte", reads=(pte_key(mm, address),
                                                          pmd_key(mm, address)))
            pte = pte_get(mm, address)
            if pte is not None and pte.present and (pte.write or not write):
                return pte.page
            ret = await handle_mm_fault(mm, vma, address, write)
            if ret & VM_FAULT_ERROR:
                return None

    async def fault(self, address: int, write: bool = False) -> bool:
        """dmirror_fault: a reference on the mirrored mm first (the ioctl
        may come from any process holding the device file, even after the
        mirrored process exited: -EINVAL), then dmirror_range_fault +
        dmirror_do_fault (steps 1-5), mmput."""
        mm = self.mm
        if not await mmget_not_zero(mm):
            reach(HMM_MM_GONE)
            return False
        ret = await self.dmirror_range_fault(address, write)
        await mmput(mm)
        return ret

    # the device file can be used from another process: a fault may come
    # while the mirrored process exits
    device_fault = fault

    async def dmirror_range_fault(self, address: int, write: bool) -> bool:
        """Steps 1-5: read_begin, hmm_range_fault, lock, read_retry, program."""
        address &= ~(PAGE_SIZE - 1)
        sub = self.notifier
        with mmemu.span("dmirror_range_fault"):
            while True:
                seq = await mmu_interval_read_begin(sub)
                await down_read(self.mm.mmap_sem, label="2. down_read(mmap_sem)")
                page = await self.hmm_range_fault(address, write)
                await up_read(self.mm.mmap_sem, label="2. up_read(mmap_sem)")
                if page is None:
                    return False
                await spin_lock(self.lock, label="3. lock(dmirror->lock)")
                if not mmemu.mutant(NO_RETRY) and await mmu_interval_read_retry(sub, seq):
                    await spin_unlock(self.lock, label="4. unlock(dmirror->lock) (retry)")
                    continue
                key = self.key_of(address)
                await step(f"5. dmirror_do_update: va {address:#x}",
                           **self.tlb.install_accesses(key, page))
                self.tlb.install(key, page, writable=write)
                await spin_unlock(self.lock, label="5. unlock(dmirror->lock)")
                return True

    # ------------------------------------------------------- the notifier

    def _keys(self, start: int, end: int) -> list[Hashable]:
        return [k for k in self.tlb.keys() if isinstance(k, int) and start <= k < end]

    async def _invalidate(self, sub: MmuIntervalNotifier, range: MmuNotifierRange,
                          cur_seq: int) -> bool:
        """dmirror_interval_invalidate (steps A-C)."""
        return bool(await guarded(self, "->invalidate", self.invalidate, sub, range, cur_seq))

    async def invalidate(self, sub: MmuIntervalNotifier, range: MmuNotifierRange,
                         cur_seq: int) -> bool:
        if mmu_notifier_range_blockable(range):
            await spin_lock(self.lock, label="A. lock(dmirror->lock)")
        elif not await spin_trylock(self.lock, label="A. trylock(dmirror->lock)"):
            return False
        if not mmemu.mutant(SEQ_OUTSIDE_LOCK):
            await mmu_interval_set_seq(sub, cur_seq, label="B. mmu_interval_set_seq")
        keys = self._keys(max(range.start, sub.start), min(range.end, sub.last + 1))
        await step("C. dmirror_do_update: zap the range", **self.tlb.zap_accesses(keys))
        for k in keys:
            self.tlb.zap(k)
        await spin_unlock(self.lock, label="C. unlock(dmirror->lock)")
        if mmemu.mutant(SEQ_OUTSIDE_LOCK):
            await mmu_interval_set_seq(sub, cur_seq, label="B. mmu_interval_set_seq (unlocked)")
        return True


__all__ = ["HMM_MM_GONE", "HmmMirror", "NO_RETRY", "SEQ_OUTSIDE_LOCK"]
