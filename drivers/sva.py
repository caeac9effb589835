"""An IOMMU doing SVA: the device walks the CPU page tables and caches translations in its IOTLB.

Emulates: drivers/iommu/iommu-sva.c (iommu_sva_bind_device,
iommu_sva_handle_iopf), drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c
(arm_smmu_mmu_notifier_get, arm_smmu_mm_arch_invalidate_secondary_tlbs,
arm_smmu_mm_release) (modern generation only: 6.6's
``->arch_invalidate_secondary_tlbs``, before it ``->invalidate_range``)

With Shared Virtual Addressing the IOMMU uses the process's own page
tables (the PASID's context descriptor points at the mm's pgd): there is no
device page table for a notifier to keep in sync, only the IOTLB (and ATC)
caching what the hardware walk found.  The walk reads the ptes directly,
without any lock; the kernel's only duty is to invalidate the IOTLB
whenever it flushes the CPU TLB, before the page can be freed.

Device side (``fault``: a DMA through the PASID):
  D1. IOTLB miss: the IOMMU walks the page table (reads the pte) and, if
      present and permitted, fills the IOTLB entry -- one atomic hardware
      transaction against the invalidation (CMD_SYNC waits for walks in
      flight)
  D2. not present: a page request (PRI / IOPF): iommu_sva_handle_iopf takes
      mmap_sem for read, handle_mm_fault, then the device retries D1

Kernel side:
  F. every pte clear flushes the CPU TLB under the PTL, and
     arch_invalidate_secondary_tlbs(mm, start, end) -> the driver
     invalidates the IOTLB range (arm_smmu_tlb_inv_range_asid); the pages
     are freed only after the PTL is dropped (tlb_finish_mmu, or reclaim's
     __remove_mapping)
  R. release (exit_mmap): the context descriptor stops translating (walks
     fault) and the whole ASID is invalidated

There are 2 critical interleavings that matter:
 - D1 before the pte clear: the IOTLB holds the page; F invalidates it
   before the page is freed.  Without the flush (mutant ``sva:no-flush``)
   the IOTLB keeps a translation to a freed page.
 - D1 after the pte clear: the walk sees pte_none (or a migration entry)
   and takes D2; the fault path maps the new page.
Harmless: D1 after R (the walk faults: no translation); D2 after the
process's last mmput (mmget_not_zero fails: the request is refused).

Registration: ``mmu_notifier_get(&arm_smmu_mmu_notifier_ops, mm)`` -- one
refcounted notifier per (ops, mm), allocated by ``alloc_notifier`` and
freed by ``free_notifier`` after an SRCU grace period on the last
``mmu_notifier_put``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import mmemu
from mmemu import step
from mmemu.driver import (
    PAGE_SIZE,
    VM_FAULT_SIGBUS,
    Driver,
    MmuNotifier,
    MmuNotifierOps,
    Page,
    fault_in,
    guarded,
    mmget_not_zero,
    mmput,
    mmu_notifier_get,
    mmu_notifier_put,
    pmd_key,
    pte_get,
    pte_key,
)
from mmemu.lowlevel import reach

#: a DMA walked after the context descriptor stopped translating
SVA_CD_GONE = "sva: a DMA found the context descriptor cleared (C_BAD_CD)"
#: a page request came after the process's last user was gone
SVA_IOPF_MM_GONE = "sva: a page request found the mm exiting (mmget_not_zero failed)"

NO_FLUSH = mmemu.register_mutant(
    "sva:no-flush",
    "the IOMMU driver does not invalidate its IOTLB in arch_invalidate_secondary_tlbs",
    caught_as="FreedPageStillMapped (IOTLB entry to a freed page)",
    doc="An SVA IOMMU caches the result of its own walk of the CPU page tables; nothing "
        "but the secondary-TLB invalidation issued with the CPU TLB flush removes it.  "
        "Skipping it leaves the IOTLB translating to the page after the kernel freed it.")


class SvaDevice(Driver):
    """A device bound to ``mm`` through SVA (one PASID); ``self.tlb`` is its IOTLB."""

    name = "sva"
    key_name = "va"
    apis = ("modern",)
    #: the bond's notifier comes from mmu_notifier_get(self.ops, mm)
    notifier_get = True

    def __init__(self) -> None:
        super().__init__()
        #: arm_smmu_mmu_notifier_ops (shared by every bond of the driver)
        self.ops = MmuNotifierOps(
            release=self._release_cb,
            arch_invalidate_secondary_tlbs=self._invalidate_cb,
            alloc_notifier=self._alloc_notifier,
            free_notifier=self._free_notifier)
        self.bond: MmuNotifier | None = None
        #: the PASID's context descriptor is live (cleared by release)
        self.cd_live = False
        self.cd_key = (self, "cd")

    # --------------------------------------------------------------- bind

    def _alloc_notifier(self, mm: Any) -> MmuNotifier:
        return MmuNotifier(self.ops, name=f"{self.name}.mmu_notifier", owner=self)

    def _free_notifier(self, mn: MmuNotifier) -> None:
        """free_notifier: runs as an SRCU callback after the last put."""

    async def attach(self, kernel: Any, mm: Any) -> int:
        """iommu_sva_bind_device: mmu_notifier_get, then install the CD."""
        self.bind(kernel, mm)
        ret = await mmu_notifier_get(self.ops, mm)
        if isinstance(ret, int):
            return ret
        self.bond = ret
        await step("arm_smmu_write_ctx_desc: CD live", writes=(self.cd_key,))
        self.cd_live = True
        return 0

    async def detach(self) -> None:
        """iommu_sva_unbind_device: the CD stops translating, flush, put."""
        await step("arm_smmu_write_ctx_desc: CD cleared; flush the ASID",
                   **self.tlb.zap_accesses(self.tlb.keys(), reads=(self.cd_key,),
                                           writes=(self.cd_key,)))
        self.cd_live = False
        self.tlb.zap_all()
        if self.bond is not None:
            await mmu_notifier_put(self.bond)
            self.bond = None

    # ------------------------------------------------------------- device

    async def fault(self, address: int, write: bool = False) -> bool:
        """A DMA to ``address``: D1 (walk + IOTLB fill), D2 (IOPF) on a miss."""
        address &= ~(PAGE_SIZE - 1)
        mm = self.mm
        key = self.key_of(address)
        with mmemu.span("iommu_sva: DMA"):
            while True:
                peek = pte_get(mm, address)
                reads: tuple[Hashable, ...] = (self.cd_key, pte_key(mm, address),
                                               pmd_key(mm, address))
                if peek is not None and peek.present and peek.page is not None:
                    reads += (peek.page._count,)
                await step(f"D1. IOMMU walk: pte of {address:#x}, IOTLB fill", reads=reads,
                           writes=(self.tlb.slot(key),))
                if not self.cd_live:
                    reach(SVA_CD_GONE)
                    return False  # C_BAD_CD: the bond is gone
                pte = pte_get(mm, address)
                if pte is not peek:
                    continue  # the walk raced with a pte change: walk again
                if pte is not None and pte.present and (pte.write or not write):
                    assert pte.page is not None
                    self.tlb.install(key, pte.page, writable=write)
                    return True
                if await self.iopf(address, write) & VM_FAULT_SIGBUS:
                    return False

    # a DMA is the device's own doing: it may come while the process exits
    device_fault = fault

    async def iopf(self, address: int, write: bool) -> int:
        """D2. iommu_sva_handle_iopf (iommu_sva_handle_mm): a user reference
        on the mm unless it is exiting (the page request is answered
        INVALID), then handle_mm_fault under mmap_sem for read, mmput."""
        mm = self.mm
        with mmemu.span("iommu_sva_handle_iopf"):
            if not await mmget_not_zero(mm):
                reach(SVA_IOPF_MM_GONE)
                return VM_FAULT_SIGBUS
            ret = await fault_in(mm, address, write)
            await mmput(mm)
            return ret

    # ------------------------------------------------------- the notifier

    def _zap_all_accesses(self) -> dict[str, tuple[Hashable, ...]]:
        return self.tlb.zap_accesses(self.tlb.keys())

    async def _invalidate_cb(self, mn: MmuNotifier, mm: Any, start: int, end: int) -> None:
        await guarded(self, "->arch_invalidate_secondary_tlbs",
                      self.arch_invalidate_secondary_tlbs, mm, start, end)

    async def _release_cb(self, mn: MmuNotifier, mm: Any) -> None:
        await guarded(self, "->release", self.release, mm)

    async def arch_invalidate_secondary_tlbs(self, mm: Any, start: int, end: int) -> None:
        """F. arm_smmu_mm_arch_invalidate_secondary_tlbs: IOTLB + ATC range."""
        keys = [k for k in self.tlb.keys() if isinstance(k, int) and start <= k < end]
        if mmemu.mutant(NO_FLUSH):
            await step("F. arm_smmu_tlb_inv_range_asid (skipped)")
            return
        await step(f"F. arm_smmu_tlb_inv_range_asid [{start:#x}, {end:#x})",
                   **self.tlb.zap_accesses(keys))
        for k in keys:
            self.tlb.zap(k)

    async def release(self, mm: Any) -> None:
        """R. arm_smmu_mm_release: the CD faults from now on; flush the ASID."""
        acc = self._zap_all_accesses()
        await step("R. arm_smmu_mm_release: CD -> fault; flush the ASID",
                   reads=acc["reads"], writes=acc["writes"] + (self.cd_key,))
        self.cd_live = False
        self.tlb.zap_all()


__all__ = ["SVA_CD_GONE", "SVA_IOPF_MM_GONE", "NO_FLUSH", "SvaDevice"]
