"""Kernel samepage merging: replace an anonymous page by an identical, write-protected KSM page.

Emulates: mm/ksm.c (try_to_merge_with_ksm_page, try_to_merge_one_page,
write_protect_page, replace_page) as in 2.6.32, the first kernel with KSM,
for the "2.6.27" notifier generation (2.6.27 had no KSM: its notifier API
plus ->change_pte, which KSM brought, is what 2.6.32 ran on); and as in
3.6-6.9 for the modern generation (each pte change inside an
invalidate_range_start/end bracket, 6bdb913f0a70; ->change_pte removed in
6.10, 997308f9ae72: then only the bracket is left, which the modern
drivers already honour)

ksmd merges the page mapped at ``address`` into ``kpage``, a page already in
the stable tree (PageKsm, write-protected everywhere)::

  down_read(mmap_sem); find_vma; page = follow_page(FOLL_GET)   (ksmd's ref)
  try_to_merge_one_page(vma, page, kpage):
    trylock_page(page)
    write_protect_page:                                   (modern: start)
      W1. PTL; the pte maps the page?
      W2. writable: ptep_clear_flush; then the pin check
          page_mapcount + 1 (ksmd's ref) == page_count, else restore the
          pte and give up (O_DIRECT or a GUP holder may write the page)
      W3. set_pte_at_notify(pte_wrprotect): ->change_pte   (modern: end)
    pages_identical (the model has no page contents: always true)
    replace_page:                                         (modern: start)
      R1. PTL; pte_same(*pte, orig_pte)? else give up
      R2. get_page(kpage); page_add_anon_rmap(kpage)
      R3. ptep_clear_flush; set_pte_at_notify(kpage, read-only):
          ->change_pte
      R4. page_remove_rmap(page); put_page(page) (the pte's reference);
          unlock                                          (modern: end)
    unlock_page(page)
  put_page(page) (ksmd's: the page is freed); up_read(mmap_sem)

Not modelled: the stable and unstable trees, checksums, rmap_items, the
scan cursor (the scenario names the page and its KSM page), VM_MERGEABLE
(madvise(MADV_MERGEABLE)), swap-cache KSM pages, modern anon-exclusive
pages (page_try_share_anon_rmap).
"""

from __future__ import annotations

import mmemu
from mmemu.engine._execution import reach, span, step
from mmemu.kernel.locking import down_read, spin_lock, spin_unlock, up_read
from mmemu.mm import mmu_notifier
from mmemu.mm.memory import (
    FOLL_GET,
    Pte,
    follow_page,
    mk_pte,
    pte_get,
    pte_key,
    ptep_clear_flush,
    set_pte_at,
    set_pte_at_notify,
)
from mmemu.mm.mmap import PAGE_SIZE, MmStruct, VmAreaStruct, find_vma, vma_address
from mmemu.mm.page import (
    PG_ksm,
    Page,
    PageKsm,
    get_page,
    get_page_locked,
    put_page,
    trylock_page,
    unlock_page,
)
from mmemu.mm.rmap import page_remove_rmap

EFAULT = 14

REPLACE_NO_NOTIFY = mmemu.register_mutant(
    "ksm:replace-no-notify",
    "replace_page points the pte at the KSM page with set_pte_at, telling no secondary "
    "MMU (no ->change_pte, no start/end bracket)",
    caught_as="FreedPageStillMapped (the secondary MMU still maps the merged page when "
              "replace_page and ksmd drop its last references)",
    doc="replace_page is the one KSM step that frees a page out from under its mappings: "
        "the old page loses its pte and, with ksmd's reference dropped, goes back to the "
        "allocator.  2.6.32 told the secondary MMUs with set_pte_at_notify (->change_pte, "
        "or ->invalidate_page for a notifier without it), later kernels with the "
        "MMU_NOTIFY_CLEAR bracket around it.  With a plain set_pte_at (a step removed on "
        "purpose) a KVM spte or a device TLB entry keeps translating to the freed page.")
CHANGE_PTE_OUTSIDE_RANGE = mmemu.register_mutant(
    "ksm:change-pte-outside-range",
    "modern KSM calls set_pte_at_notify (->change_pte) without the invalidate_range_start/end "
    "bracket that 6bdb913f0a70 put around it",
    caught_as="KvmBug (KVM's WARN_ON_ONCE: .change_pte() without an invalidation in "
              "progress) / FreedPageStillMapped (a notifier without ->change_pte is told "
              "nothing, and the merged page is freed under its translation)",
    doc="2.6.32-3.5 called ->change_pte with no start/end around it, and fell back to "
        "->invalidate_page for notifiers without ->change_pte.  6bdb913f0a70 ('mm: wrap "
        "calls to set_pte_at_notify with invalidate_range_start and invalidate_range_end', "
        "2012) bracketed it and dropped the fallback, and modern drivers rely on the "
        "bracket: GRU, HMM mirrors and every interval notifier have no ->change_pte at all, "
        "and KVM's change_pte (c13fda237f08, 5.13) no longer bumps mmu_notifier_seq, warns "
        "when no invalidation is in progress and does nothing then.  Under the modern "
        "contract the 2.6.32 call sequence frees the merged page under their translations.",
    applies=lambda params: params.get("api") == "modern")

REPLACE_NO_PTE_SAME = mmemu.register_mutant(
    "ksm:replace-no-pte-same",
    "replace_page switches the pte to the KSM page without checking, under the PTL, that "
    "it is still the read-only pte write_protect_page left",
    caught_as="BadPageState (the old page's _mapcount below -1: the KSM page installed "
              "over the private copy a write fault made meanwhile, or over a pte a zap "
              "already took) or InvariantViolation (a count no pte accounts for)",
    doc="write_protect_page drops the PTL before replace_page takes it again, and a zap "
        "(madvise, munmap under mmap_sem read in later kernels' zap paths) or a write "
        "fault's COW may change the pte in between.  2.6.32's replace_page tests "
        "pte_same(*ptep, orig_pte) and gives up otherwise; without that test (a step "
        "removed on purpose) it drops the old page's rmap and reference a second time, and "
        "throws away the writer's copy (do_wp_page's trylock_page fails while ksmd holds "
        "the page lock, so the writer always copies).")


#: coverage events
PINNED = "ksm: write_protect_page found the page pinned (no merge)"
MERGED = "ksm: replace_page merged the page into the KSM page"
PIN_CHECKED = "ksm: write_protect_page compared the page's count with its mappings"
MERGE_TRYLOCK_FAILED = "ksm: try_to_merge_one_page found the page locked (no merge this pass)"


def pages_identical(page: Page, kpage: Page) -> bool:
    """memcmp of the two pages: the model keeps no page contents, so the
    scenario vouches that they are identical."""
    return True


async def write_protect_page(vma: VmAreaStruct, page: Page) -> Pte | None:
    """W1-W3: make the pte that maps ``page`` in ``vma`` read-only, unless
    someone besides its ptes and ksmd holds a reference.  Returns the
    (read-only) pte, or None: not mapped here, or pinned.  Caller holds the
    page lock and a reference (ksmd's)."""
    mm = vma.vm_mm
    addr = vma_address(page, vma)
    if addr == -EFAULT:
        return None
    modern = mmu_notifier.is_modern(mm)
    bracket = modern and not mmemu.mutant(CHANGE_PTE_OUTSIDE_RANGE)
    ptl = mm.page_table_lock
    k = pte_key(mm, addr)
    with span("write_protect_page"):
        if bracket:
            await mmu_notifier.mmu_notifier_invalidate_range_start(
                mm, addr, addr + PAGE_SIZE, event=mmu_notifier.MMU_NOTIFY_CLEAR)
        await spin_lock(ptl, label="W1. page_check_address: spin_lock(ptl)")
        await step("W1. page_check_address: the pte maps the page?", reads=(k,))
        pte = pte_get(mm, addr)
        result: Pte | None = None
        if pte is not None and pte.present and pte.page is page:
            if pte.write or (modern and pte.dirty):
                entry = await ptep_clear_flush(vma, addr)
                assert entry is not None
                await step("W2. page_mapcount + 1 + swapped == page_count?",
                           reads=(page._count, page._mapcount))
                swapped = 0  # swap-cache KSM candidates are not modelled
                reach(PIN_CHECKED)
                if page._mapcount.counter + 1 + 1 + swapped != page._count.counter:
                    # O_DIRECT or a GUP holder: give the pte back as it was
                    reach(PINNED)
                    if modern:
                        await step("W2. pinned: set_pte_at(entry)", writes=(k,))
                        set_pte_at(mm, addr, entry)
                    else:  # 2.6.32 gives the pte back with set_pte_at_notify
                        await set_pte_at_notify(vma, addr, entry, label="W2. pinned")
                else:
                    # modern also makes it clean (set_page_dirty first: anon
                    # pages have no writeback in the model)
                    await set_pte_at_notify(vma, addr,
                                            entry.replace(write=False,
                                                          dirty=entry.dirty and not modern),
                                            label="W3. set_pte_at_notify(pte_wrprotect)")
                    result = pte_get(mm, addr)
            else:
                result = pte
        await spin_unlock(ptl, label="W3. pte_unmap_unlock")
        if bracket:
            await mmu_notifier.mmu_notifier_invalidate_range_end(
                mm, addr, addr + PAGE_SIZE, event=mmu_notifier.MMU_NOTIFY_CLEAR)
    return result


async def replace_page(vma: VmAreaStruct, page: Page, kpage: Page, orig_pte: Pte) -> int:
    """R1-R4: point the pte that mapped ``page`` at ``kpage`` (read-only) and
    drop the old page's mapping and reference.  0, or -EFAULT when the pte
    changed since write_protect_page."""
    mm = vma.vm_mm
    addr = vma_address(page, vma)
    if addr == -EFAULT:
        return -EFAULT
    no_notify = mmemu.mutant(REPLACE_NO_NOTIFY)
    bracket = (mmu_notifier.is_modern(mm) and not no_notify
               and not mmemu.mutant(CHANGE_PTE_OUTSIDE_RANGE))
    ptl = mm.page_table_lock
    k = pte_key(mm, addr)
    err = -EFAULT
    with span("replace_page"):
        if bracket:
            await mmu_notifier.mmu_notifier_invalidate_range_start(
                mm, addr, addr + PAGE_SIZE, event=mmu_notifier.MMU_NOTIFY_CLEAR)
        await spin_lock(ptl, label="R1. replace_page: pte_offset_map_lock")
        await step("R1. pte_same(*ptep, orig_pte)?", reads=(k,))
        if pte_get(mm, addr) is orig_pte or mmemu.mutant(REPLACE_NO_PTE_SAME):
            await step("R2. get_page(kpage); page_add_anon_rmap(kpage)",
                       writes=(kpage._count, kpage._mapcount))
            get_page_locked(kpage)
            kpage._mapcount.counter += 1
            await ptep_clear_flush(vma, addr)
            new = mk_pte(kpage, vma, write=False, dirty=False)
            if no_notify:
                await step("R3. set_pte_at(kpage)", reads=(kpage._count,), writes=(k,))
                set_pte_at(mm, addr, new)
            else:
                await set_pte_at_notify(vma, addr, new, label="R3. set_pte_at_notify(kpage)")
            await page_remove_rmap(page, vma, label="R4. page_remove_rmap(page)")
            await put_page(page, label="R4. put_page(page) (the pte's reference)")
            reach(MERGED)
            err = 0
        await spin_unlock(ptl, label="R4. pte_unmap_unlock")
        if bracket:
            await mmu_notifier.mmu_notifier_invalidate_range_end(
                mm, addr, addr + PAGE_SIZE, event=mmu_notifier.MMU_NOTIFY_CLEAR)
    return err


async def try_to_merge_one_page(vma: VmAreaStruct, page: Page, kpage: Page) -> int:
    """Merge ``page`` (mapped in ``vma``) into ``kpage``: 0 or -EFAULT.
    trylock_page: ksmd never waits for a page lock, it comes back later."""
    if page is kpage:
        return 0
    err = -EFAULT
    with span("try_to_merge_one_page"):
        if not await trylock_page(page, label="try_to_merge_one_page: trylock_page(page)"):
            reach(MERGE_TRYLOCK_FAILED)
            return err
        orig_pte = await write_protect_page(vma, page)
        if orig_pte is not None and pages_identical(page, kpage):
            err = await replace_page(vma, page, kpage, orig_pte)
        await unlock_page(page, label="try_to_merge_one_page: unlock_page(page)")
    return err


async def ksm_merge_page(mm: MmStruct, address: int, kpage: Page) -> int:
    """ksmd merges the page mapped at ``address`` of ``mm`` into the KSM page
    ``kpage`` (try_to_merge_with_ksm_page, with the page ksmd's scan found):
    0, or -EFAULT if it was not merged."""
    if not PageKsm(kpage):
        raise mmemu.ModelError(f"page{kpage.pfn} is not a KSM page (use ksm_make_stable)")
    address &= ~(PAGE_SIZE - 1)
    with span("ksm_merge_page"):
        await down_read(mm.mmap_sem, label="ksmd: down_read(mmap_sem)")
        await step("ksmd: find_vma", reads=((mm, "mmap"),))
        vma = find_vma(mm, address)
        err = -EFAULT
        if vma is not None and vma.vm_start <= address and vma.anon_vma is not None:
            page = await follow_page(vma, address, FOLL_GET)
            if page is not None:
                if not PageKsm(page) and page.mapping is vma.anon_vma:
                    err = await try_to_merge_one_page(vma, page, kpage)
                await put_page(page, label="ksmd: put_page(page)")
        await up_read(mm.mmap_sem, label="ksmd: up_read(mmap_sem)")
    return err


async def ksm_make_stable(vma: VmAreaStruct, page: Page) -> int:
    """Make ``page`` (mapped in ``vma``) a KSM page as the stable tree holds
    it: write-protected, PageKsm (2.6.33+'s promotion of the first page of
    a pair; the model's stable tree is the page itself).  0 or -EFAULT."""
    ret = -EFAULT
    await get_page(page, label="ksm_make_stable: get_page")
    if await trylock_page(page):
        if await write_protect_page(vma, page) is not None:
            await step("stable_tree_insert: SetPageKsm", writes=(page.flags_key,))
            page.flags |= PG_ksm
            ret = 0
        await unlock_page(page)
    await put_page(page, label="ksm_make_stable: put_page")
    return ret


__all__ = ["MERGE_TRYLOCK_FAILED", "CHANGE_PTE_OUTSIDE_RANGE", "REPLACE_NO_NOTIFY", "REPLACE_NO_PTE_SAME", "ksm_make_stable", "ksm_merge_page",
           "pages_identical", "replace_page", "try_to_merge_one_page", "write_protect_page"]
