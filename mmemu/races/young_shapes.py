"""Race suite for ->test_young against an invalidation of the same page.

Emulates: mm/khugepaged.c (khugepaged_scan_pmd's mmu_notifier_test_young,
under the page-table lock), mm/madvise.c (madvise_dontneed ->
zap_page_range: mmu_notifier_invalidate_range_start, then the ptes under
the page-table lock), virt/kvm/kvm_main.c (kvm_mmu_notifier_test_young and
kvm_mmu_notifier_invalidate_range_start, both under kvm->mmu_lock).

->test_young only looks at the secondary MMU's accessed bits, so nothing
in the page state shows whether it looked under the driver's lock.  What
does: khugepaged's scan holds the PTL and mmap_sem for read, MADV_DONTNEED
holds mmap_sem for read and calls range_start before it takes the PTL, so
the driver's ->test_young and its range_start zap run at the same time,
serialised only by the driver's own lock (KVM's mmu_lock: the rmap walk of
kvm_test_age_hva against kvm_unmap_rmapp).  The lockset checker sees a walk
without it as a ``DataRace`` on the driver's translation.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import supports_api
from mmemu.engine._execution import step
from mmemu.kernel.locking import down_read, up_read
from mmemu.mm.khugepaged import khugepaged_scan_referenced
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.mmap import PAGE_SIZE, find_vma
from mmemu.races._filters import answers
from mmemu.races.aging_shapes import _aged_guest
from mmemu.races.notifier import DRIVER_AXES, ZAPPED, driver_of


def _asks_test_young(params: dict[str, Any]) -> bool:
    """A driver that answers ->test_young (KVM)."""
    return supports_api(params) and bool(params.get("driver")) and answers(params, "test_young")


def _goals(params: dict[str, Any]) -> list[str]:
    return [ZAPPED, f"callback:{driver_of(params)}->test_young"]


@mmemu.scenario("aging:scan-vs-zap", axes=DRIVER_AXES, filter=_asks_test_young, reaches=_goals)
async def scan_vs_zap(sim: Any) -> None:
    """khugepaged scans the guest's page for recent use while the process
    zaps it (madvise(MADV_DONTNEED)).

    CPU0 (khugepaged: khugepaged_scan_pmd)     CPU1 (madvise(MADV_DONTNEED))
    1. down_read(mmap_sem)                     1. down_read(mmap_sem)
    2. PTL; the pte is old, the page's flags   2. range_start: the driver zaps
       clear: mmu_notifier_test_young (KVM:       its translation (KVM: under
       kvm_test_age_hva under mmu_lock)           mmu_lock)
    3. unlock; up_read                         3. PTL; zap the pte, free the page
                                               4. range_end; up_read

    There is 1 critical interleaving that matters:
    - CPU1's 2 against CPU0's 2: both run, mmap_sem is shared and the PTL
      is not yet CPU1's.  The driver's lock orders the zap and the look at
      the accessed bits; ->test_young reading the translation without it
      (a dropped lock pair) races the zap: DataRace on the translation.
    Harmless: CPU1's 3 before CPU0's 2 (the pte is gone: the scan asks
    nobody); CPU0's 3 before CPU1's 2.
    """
    g = await _aged_guest(sim, translation=True)
    mm = g.mm

    async def khugepaged() -> None:
        await down_read(mm.mmap_sem, label="1. khugepaged: down_read(mmap_sem)")
        await step("1. khugepaged: find_vma", reads=((mm, "mmap"),))
        vma = find_vma(mm, g.addr)
        assert vma is not None
        await khugepaged_scan_referenced(vma, g.addr, g.addr + PAGE_SIZE)
        await up_read(mm.mmap_sem, label="3. khugepaged: up_read(mmap_sem)")

    async with sim.cpus() as cpus:
        cpus.start(khugepaged, name="khugepaged")
        cpus.start(sys_madvise, mm, g.addr, PAGE_SIZE, MADV_DONTNEED, name="madvise")
    sim.check(not g.driver.tlb.keys(),
              f"{g.driver.name}: translations left after MADV_DONTNEED: {g.driver.tlb.keys()}")

