"""khugepaged's scan: is a pmd's worth of small pages hot enough to collapse into a huge page?

Emulates: mm/khugepaged.c, the referenced test of khugepaged_scan_pmd
(hpage_collapse_scan_pmd since 6.1) (2.6.38+, 8ee53820edfd "thp:
mmu_notifier_test_young"): the call site of ->test_young

A range is worth collapsing only if some of its pages were used recently:
a young pte, PG_young or PG_referenced, or a secondary MMU that answers
->test_young (without clearing anything: khugepaged only looks).

Not modelled: the collapse itself (huge pages are not modelled), the
none/swap/shared limits of the scan.
"""

from __future__ import annotations

import mmemu
from mmemu.engine._execution import span, step
from mmemu.kernel.locking import spin_lock, spin_unlock
from mmemu.mm import mmu_notifier
from mmemu.mm.memory import populated_ptes, pte_get, pte_key, report_aging
from mmemu.mm.mmap import VmAreaStruct
from mmemu.mm.page import PG_referenced, PG_young


SCAN_NO_TEST_YOUNG = mmemu.register_mutant(
    "khugepaged:no-test-young",
    "khugepaged's scan counts only the CPU ptes' accessed bits and PG_young/PG_referenced, "
    "asking no secondary MMU (no mmu_notifier_test_young)",
    caught_as="AgingMissedSecondaryReference (khugepaged's question answered 'old' while a "
              "driver implementing ->test_young holds a young translation of the page)",
    doc="8ee53820edfd ('thp: mmu_notifier_test_young', 2.6.38) added ->test_young for "
        "khugepaged: a KVM guest's memory is touched through sptes, so a scan that looks "
        "only at the CPU ptes finds the guest's hottest ranges cold and never collapses "
        "them into huge pages.  Unlike ->clear_flush_young the callback only looks: "
        "khugepaged must not age the page.  The mutant is the scan from before that "
        "commit (the call removed on purpose).")


async def khugepaged_scan_referenced(vma: VmAreaStruct, start: int, end: int) -> int:
    """How many present ptes of [start, end) of ``vma`` were referenced
    (pte_young, PG_young, PG_referenced, or mmu_notifier_test_young).
    Caller holds mmap_sem for read."""
    mm = vma.vm_mm
    referenced = 0
    with span("khugepaged_scan_pmd"):
        await spin_lock(mm.page_table_lock, label="khugepaged_scan_pmd: pte_offset_map_lock")
        for address in populated_ptes(mm, start, end):
            await step(f"khugepaged_scan_pmd: pte_young({address:#x})?",
                       reads=(pte_key(mm, address),))
            pte = pte_get(mm, address)
            if pte is None or not pte.present or pte.page is None:
                continue
            page = pte.page
            report_aging("begin", mm, address, "test_young")
            young = bool(pte.young or page.flags & (PG_young | PG_referenced) or (
                not mmemu.mutant(SCAN_NO_TEST_YOUNG)
                and await mmu_notifier.mmu_notifier_test_young(mm, address)))
            report_aging("end", mm, address, "test_young", young)
            if young:
                referenced += 1
        await spin_unlock(mm.page_table_lock, label="khugepaged_scan_pmd: pte_unmap_unlock")
    return referenced


__all__ = ["SCAN_NO_TEST_YOUNG", "khugepaged_scan_referenced"]
