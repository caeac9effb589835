"""Idle page tracking: which pages nobody, CPU or secondary MMU, touched since they were marked idle.

Emulates: mm/page_idle.c (page_idle_clear_pte_refs, page_idle_bitmap_read /
page_idle_bitmap_write for one page) (4.3+: modern generation only; it is
the call site of ->clear_young)

A user marks a page idle (writing its bit in /sys/kernel/mm/page_idle/bitmap),
runs a workload, and reads the bit back.  Both first move the accessed bits
of every pte that maps the page, and of every secondary MMU's translation,
into PG_young (page_idle_clear_pte_refs: ptep_clear_young_notify, no TLB
flush), so that reclaim's own aging still sees them; any young bit found
clears PG_idle.  A secondary MMU's access counts only if its ->clear_young
reports it.
"""

from __future__ import annotations

import mmemu
from mmemu.engine._execution import reach, span, step
from mmemu.kernel.locking import spin_lock, spin_unlock
from mmemu.mm.memory import pte_get, pte_key, ptep_clear_young_notify
from mmemu.mm.mmap import EFAULT, VmAreaStruct, vma_address
from mmemu.mm.page import PG_idle, PG_young, Page, PageAnon
from mmemu.mm.rmap import page_lock_anon_vma, page_unlock_anon_vma

IDLE_SET_BEFORE_CLEAR = mmemu.register_mutant(
    "page_idle:set-idle-before-clear",
    "page_idle_bitmap_write sets PG_idle before clearing the page's references "
    "(the kernel clears them first: page_idle_clear_pte_refs, then folio_set_idle)",
    caught_as="PageNeverIdle (a use from before the marking "
              "clears the fresh PG_idle: an untouched page reads back as not idle)",
    doc="Marking a page idle must first fold every accessed bit from before the marking "
        "(CPU ptes and, through ->clear_young, the secondary MMUs' translations) into "
        "PG_young and clear them; only then is PG_idle set, so that the next read sees "
        "only uses after the marking.  In the other order the old accessed bits clear "
        "the new PG_idle at once: a page nobody touched since reads back as used.")


def page_is_idle(page: Page) -> bool:
    return bool(page.flags & PG_idle)


def page_is_young(page: Page) -> bool:
    return bool(page.flags & PG_young)


#: the walk met a vma that does not cover the page (vma_address: -EFAULT;
#: the other half of a split)
IDLE_VMA_NOT_COVERING = "page_idle: the walk met a vma that does not cover the page"


async def page_idle_clear_pte_refs_one(page: Page, vma: VmAreaStruct) -> bool:
    mm = vma.vm_mm
    address = vma_address(page, vma)
    if address == -EFAULT:
        reach(IDLE_VMA_NOT_COVERING)
        return False
    await spin_lock(mm.page_table_lock, label="page_idle_clear_pte_refs_one: spin_lock(ptl)")
    await step("page_idle_clear_pte_refs_one: the pte maps the page?",
               reads=(pte_key(mm, address),))
    pte = pte_get(mm, address)
    referenced = False
    if pte is not None and pte.present and pte.page is page:
        referenced = await ptep_clear_young_notify(vma, address)
    await spin_unlock(mm.page_table_lock,
                      label="page_idle_clear_pte_refs_one: spin_unlock(ptl)")
    return referenced


async def page_idle_clear_pte_refs(page: Page) -> None:
    """rmap_walk the page: each young pte or secondary translation clears
    PG_idle and sets PG_young.  (The kernel takes the page lock of a file
    page with trylock and skips the page when it fails; here it walks the
    file's i_mmap under i_mmap_lock as page_referenced does.)"""
    with span("page_idle_clear_pte_refs"):
        await step("page_idle_clear_pte_refs: page_mapped?", reads=(page._mapcount,
                                                                    page.mapping_key))
        if page._mapcount.counter < 0 or page.mapping is None:
            return
        vmas: list[VmAreaStruct] = []
        referenced = False
        if PageAnon(page):
            anon_vma = await page_lock_anon_vma(page)
            if anon_vma is None:
                return
            await step("walk anon_vma->head", reads=((anon_vma, "head"),))
            vmas = list(anon_vma.head)
            for vma in vmas:
                referenced = await page_idle_clear_pte_refs_one(page, vma) or referenced
            await page_unlock_anon_vma(anon_vma)
        else:
            mapping = page.mapping
            await spin_lock(mapping.i_mmap_lock, label="page_idle: spin_lock(i_mmap_lock)")
            await step("walk i_mmap", reads=((mapping, "i_mmap"),))
            for vma in list(mapping.i_mmap):
                referenced = await page_idle_clear_pte_refs_one(page, vma) or referenced
            await spin_unlock(mapping.i_mmap_lock, label="page_idle: spin_unlock(i_mmap_lock)")
        if referenced:
            await step("clear_page_idle; set_page_young", writes=(page.flags_key,))
            page.flags = (page.flags & ~PG_idle) | PG_young


async def page_idle_bitmap_write(page: Page) -> None:
    """Mark the page idle: clear its references first, then PG_idle.
    The caller holds a reference (page_idle_get_page)."""
    early = mmemu.mutant(IDLE_SET_BEFORE_CLEAR)
    if early:
        await step("set_page_idle", writes=(page.flags_key,))
        page.flags |= PG_idle
    await page_idle_clear_pte_refs(page)
    if not early:
        await step("set_page_idle", writes=(page.flags_key,))
        page.flags |= PG_idle


async def page_idle_bitmap_read(page: Page) -> bool:
    """Is the page still idle?  Clears its references first (any young bit
    found since the write makes it not idle)."""
    await page_idle_clear_pte_refs(page)
    await step("page_is_idle", reads=(page.flags_key,))
    return page_is_idle(page)


__all__ = ["IDLE_SET_BEFORE_CLEAR", "IDLE_VMA_NOT_COVERING", "page_idle_bitmap_read", "page_idle_bitmap_write", "page_idle_clear_pte_refs",
           "page_is_idle", "page_is_young"]
