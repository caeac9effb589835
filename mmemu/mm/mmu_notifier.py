"""MMU notifiers: how secondary MMUs hear about changes to a CPU page table.

Emulates: mm/mmu_notifier.c, include/linux/mmu_notifier.h (2.6.27, plus the
later API generation when the kernel is booted with api="modern")

INTERFACE CONTRACT (call sites in memory.py, rmap.py, migrate.py, mmap.py use
exactly these; the notifier implementation fills in the bodies):

- ``mm.mmu_notifier_mm``: None until a notifier registers on ``mm``.
- ``mm_has_notifiers(mm) -> bool`` (sync).
- ``await mmu_notifier_invalidate_range_start(mm, start, end, *, event="UNMAP")``
- ``await mmu_notifier_invalidate_range_end(mm, start, end, *, event="UNMAP")``
- ``await mmu_notifier_invalidate_page(mm, address)``
- ``await mmu_notifier_clear_flush_young(mm, address) -> bool``
- ``await mmu_notifier_test_young(mm, address) -> bool``
- ``await mmu_notifier_change_pte(mm, address, page)``
- ``await mmu_notifier_release(mm)``            (exit_mmap, before unmapping)
- ``await arch_invalidate_secondary_tlbs(mm, start, end)`` (modern: under the PTL
  where the CPU TLB is flushed)

Each is a no-op returning quickly when ``mm`` has no notifiers.
"""

from __future__ import annotations

from typing import Any


def mm_has_notifiers(mm: Any) -> bool:
    return getattr(mm, "mmu_notifier_mm", None) is not None


async def mmu_notifier_invalidate_range_start(mm: Any, start: int, end: int, *,
                                              event: str = "UNMAP") -> None:
    if not mm_has_notifiers(mm):
        return


async def mmu_notifier_invalidate_range_end(mm: Any, start: int, end: int, *,
                                            event: str = "UNMAP") -> None:
    if not mm_has_notifiers(mm):
        return


async def mmu_notifier_invalidate_page(mm: Any, address: int) -> None:
    if not mm_has_notifiers(mm):
        return


async def mmu_notifier_clear_flush_young(mm: Any, address: int) -> bool:
    if not mm_has_notifiers(mm):
        return False
    return False


async def mmu_notifier_test_young(mm: Any, address: int) -> bool:
    if not mm_has_notifiers(mm):
        return False
    return False


async def mmu_notifier_change_pte(mm: Any, address: int, page: Any) -> None:
    if not mm_has_notifiers(mm):
        return


async def mmu_notifier_release(mm: Any) -> None:
    if not mm_has_notifiers(mm):
        return


async def arch_invalidate_secondary_tlbs(mm: Any, start: int, end: int) -> None:
    if not mm_has_notifiers(mm):
        return
