"""Physical to virtual reverse mappings: from a page to the ptes that map it.

Emulates: mm/rmap.c, include/linux/rmap.h (2.6.27)

An anonymous page's ``page->mapping`` is its ``AnonVma`` (with PG_anon set:
the kernel's PAGE_MAPPING_ANON bit); the vmas that may map it are on
``anon_vma->head``.  A file page's mapping is its AddressSpace; the vmas are
on ``mapping->i_mmap``.  ``page->_mapcount`` counts the ptes (from -1).

Lock ordering in the emulated mm (mmemu's, enforced by lockdep; each edge
names the path that creates it)::

  mm->mmap_sem
    page lock (PG_locked)            (fault: find_lock_page under mmap_sem;
    |                                 migrate, reclaim, truncate lock the page first)
    | mapping->i_mmap_lock           (try_to_unmap_file, unmap_mapping_range from
    | |                               truncate_inode_pages, page_referenced_file)
    | | anon_vma->lock               (vma_adjust: a split vma of a private file
    | |                               mapping; alone: try_to_unmap_anon,
    | |                               page_referenced_anon, anon_vma_prepare)
    | | mm->page_table_lock (PTL)    (try_to_unmap_one, zap_pte_range,
    | |                               remove_migration_pte, anon_vma_prepare)
    | |   kvm->mmu_lock etc.         (notifier callbacks: invalidate_page under
    | |                               the PTL, range_start/end under i_mmap_lock)
    | mapping->tree_lock             (__remove_mapping, add_to_page_cache,
    |                                 migrate_page_move_mapping)
    mm_all_locks_mutex               (mm_take_all_locks, mmap_sem held for write)
      anon_vma->lock, i_mmap_lock    (all of them, nest_lock = mmap_sem)

  Never: the PTL then the page lock (a fault drops the PTL before
  lock_page); anon_vma->lock then i_mmap_lock (outside mm_take_all_locks,
  which takes them nested under mmap_sem in any order); tree_lock then
  i_mmap_lock.

try_to_unmap (reclaim and migration, page locked by the caller)::

  1. walk the vmas (anon_vma->lock or i_mmap_lock held)
  2. try_to_unmap_one: PTL; does the pte at vma_address(page) map the page?
  3. not migration and (VM_LOCKED or young): SWAP_FAIL (keep the page)
  4. ptep_clear_flush_notify: clear the pte, flush the TLB, then
     mmu_notifier_invalidate_page(mm, address) -- the page is still allocated
  5. migration: install a migration entry in the cleared pte; an anon page
     (in the swap cache): its swap entry (swap_duplicate)
  6. page_remove_rmap; put_page (the pte's reference); unlock the PTL
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.engine._execution import current_simulation, reach, span, step
from mmemu.kernel.atomic import atomic_add_return
from mmemu.kernel.locking import spin_lock, spin_unlock
from mmemu.kernel.rcu import rcu_read_lock, rcu_read_unlock
from mmemu.mm.memory import (
    Pte,
    SwpEntry,
    make_migration_entry,
    pte_get,
    pte_key,
    ptep_clear_flush_notify,
    ptep_clear_flush_young_notify,
    set_pte_at,
)
from mmemu.mm.mmap import (
    EFAULT,
    VM_LOCKED,
    AnonVma,
    VmAreaStruct,
    anon_vma_head_check,
    linear_page_index,
    vma_address,
)
from mmemu.mm.page import (
    PG_anon,
    PG_dirty,
    PG_referenced,
    PG_swapcache,
    BadPageState,
    Page,
    PageAnon,
    PageKsm,
    PageLocked,
    page_site,
    put_page,
    trylock_page,
    unlock_page,
)

SWAP_SUCCESS = 0
SWAP_AGAIN = 1
SWAP_FAIL = 2

NO_I_MMAP_LOCK = mmemu.register_mutant(
    "rmap:try-to-unmap-no-i-mmap-lock",
    "try_to_unmap_file walks mapping->i_mmap without i_mmap_lock",
    caught_as="UnbalancedRange (mmu_notifier_register hashed the notifier between "
              "try_to_unmap_one's invalidate_range_start and range_end: the notifier gets the "
              "end without its start; KVM's KvmBug would follow)",
    doc="mm_take_all_locks 'locks against the VM for all pte/vma/mm related operations that "
        "could ever happen on a certain mm.  This includes vmtruncate, try_to_unmap, and all "
        "page faults' -- for try_to_unmap of a file page, through the i_mmap_lock its rmap "
        "walk holds.  Since try_to_unmap_one brackets the pte clear with "
        "invalidate_range_start/end (4.13, the modern generation), a walk without "
        "i_mmap_lock lets mmu_notifier_register hash a notifier between the two: the driver "
        "gets an end whose start it never saw (KVM: mmu_notifier_count goes negative).  The "
        "lock also keeps the vmas the walk visits from being freed (munmap's "
        "unlink_file_vma takes it), which the model does not check.")


REFERENCED_NO_I_MMAP_LOCK = mmemu.register_mutant(
    "rmap:referenced-no-i-mmap-lock",
    "page_referenced_file walks mapping->i_mmap without i_mmap_lock",
    caught_as="DataRace (the walk reads mapping->i_mmap while a split, fork or new mapping "
              "of the file changes it under i_mmap_lock)",
    doc="A deliberately removed step: the aging walk of a file page holds i_mmap_lock so "
        "that the vma list it walks, and the vm_start/vm_pgoff it turns the page's index "
        "into an address with, are not changed under it by vma_adjust, dup_mmap or "
        "__vma_link_file, which change them under the same lock.  In the kernel the walk "
        "would follow a half-linked prio-tree node or compute an address from a half-"
        "updated vma; in the model a list change is one step, so the lockset checker "
        "reports the unlocked read of the list a second CPU writes.")


def page_mapped(page: Page) -> bool:
    """Does any pte map the page?  (The caller's step reads ``page._mapcount``.)"""
    return page._mapcount.counter >= 0


def page_anon_vma(page: Page) -> AnonVma | None:
    if not PageAnon(page):
        return None
    return page.mapping  # type: ignore[no-any-return]


def __page_set_anon_rmap(page: Page, vma: VmAreaStruct, address: int, *, new: bool = False) -> None:
    """page->mapping = anon_vma | PAGE_MAPPING_ANON; page->index.  Inside the
    caller's step (a new page nobody else can see, or the first mapper)."""
    anon_vma = vma.anon_vma
    if anon_vma is None:
        current_simulation().fail(BadPageState(
            f"__page_set_anon_rmap at {page_site()}: {vma!r} has no anon_vma "
            f"(BUG_ON(!anon_vma))", details=page.dump()))
    if new:
        page._mapcount.counter = 0  # page_add_new_anon_rmap: atomic_set(_mapcount, 0)
    page.mapping = anon_vma
    page.flags |= PG_anon
    page.index = linear_page_index(vma, address)


async def page_add_new_anon_rmap(page: Page, vma: VmAreaStruct, address: int) -> None:
    """Rmap for a page just allocated for ``vma`` (nobody else sees it yet)."""
    await step("page_add_new_anon_rmap", writes=(page._mapcount, page.mapping_key, page.flags_key))
    __page_set_anon_rmap(page, vma, address, new=True)


async def page_add_anon_rmap(page: Page, vma: VmAreaStruct, address: int, *,
                             label: str | None = None) -> None:
    """One more pte maps an anonymous page (the first sets page->mapping)."""
    first = await atomic_add_return(1, page._mapcount,
                                    label=label or f"page_add_anon_rmap(page{page.pfn})") == 0
    if first:
        __page_set_anon_rmap(page, vma, address)


async def page_add_file_rmap(page: Page, *, label: str | None = None) -> None:
    """One more pte maps a pagecache page."""
    await atomic_add_return(1, page._mapcount, label=label or f"page_add_file_rmap(page{page.pfn})")


async def page_remove_rmap(page: Page, vma: VmAreaStruct, *, label: str | None = None) -> None:
    """One pte less maps the page (caller holds the PTL of that pte)."""
    c = await atomic_add_return(-1, page._mapcount,
                                label=label or f"page_remove_rmap(page{page.pfn})")
    if c < -1:
        current_simulation().fail(BadPageState(
            f"page_remove_rmap(page{page.pfn}) at {page_site()}: _mapcount went below -1 "
            f"(\"Eventually BUG\": more unmaps than maps)", details=page.dump()))


# -------------------------------------------------------- try_to_unmap


#: coverage event of try_to_unmap_one (goal of rmap:split-vs-walker): the
#: walk met a vma of the page's anon_vma / i_mmap that does not cover the
#: page (vma_address: -EFAULT; the other half of a split)
UNMAP_VMA_NOT_COVERING = "rmap: try_to_unmap_one met a vma that does not cover the page"


async def try_to_unmap_one(page: Page, vma: VmAreaStruct, migration: bool) -> int:
    """Unmap ``page`` from ``vma`` (steps 2-6 of the comment at the top).
    Modern notifier API: no invalidate_page; steps 2-6 run inside an
    invalidate_range_start/end bracket (MMU_NOTIFY_CLEAR over the page)."""
    from mmemu.mm import mmu_notifier
    from mmemu.mm.mmap import PAGE_SIZE
    mm = vma.vm_mm
    if not mmu_notifier.is_modern(mm):
        return await __try_to_unmap_one(page, vma, migration)
    address = vma_address(page, vma)
    if address == -EFAULT:
        reach(UNMAP_VMA_NOT_COVERING)
        return SWAP_AGAIN
    await mmu_notifier.mmu_notifier_invalidate_range_start(mm, address, address + PAGE_SIZE,
                                                           event="CLEAR")
    ret = await __try_to_unmap_one(page, vma, migration)
    await mmu_notifier.mmu_notifier_invalidate_range_end(mm, address, address + PAGE_SIZE,
                                                         event="CLEAR")
    return ret


async def __try_to_unmap_one(page: Page, vma: VmAreaStruct, migration: bool) -> int:
    """try_to_unmap_one's body (2.6.27)."""
    mm = vma.vm_mm
    address = vma_address(page, vma)
    if address == -EFAULT:
        reach(UNMAP_VMA_NOT_COVERING)
        return SWAP_AGAIN
    ptl = mm.page_table_lock
    k = pte_key(mm, address)
    ret = SWAP_AGAIN
    with span("try_to_unmap_one"):
        await spin_lock(ptl, label="2. page_check_address: spin_lock(ptl)")
        await step("2. page_check_address: pte maps the page?", reads=(k,))
        pte = pte_get(mm, address)
        if pte is None or not pte.present or pte.page is not page:
            await spin_unlock(ptl, label="2. not mapped here: spin_unlock(ptl)")
            return ret
        if not migration and PageAnon(page) and not page.flags & PG_swapcache:
            # 2.6.27 reaches here only with a swap-cache page (shrink_page_list
            # adds anon pages to swap first): an anon page with no swap slot
            # has nowhere to go (the kernel would BUG on the pte it cannot write).
            await spin_unlock(ptl, label="no swap entry: spin_unlock(ptl)")
            return SWAP_FAIL
        if not migration and (vma.vm_flags & VM_LOCKED
                              or await ptep_clear_flush_young_notify(vma, address)):
            await spin_unlock(ptl, label="3. referenced or mlocked: SWAP_FAIL")
            return SWAP_FAIL
        pteval = await ptep_clear_flush_notify(vma, address)
        assert pteval is not None
        if PageAnon(page) and not migration:
            # Store the swap location in the pte (the page is in the swap
            # cache: page->private is its slot); the pte holds a slot reference.
            from mmemu.mm.swapfile import swap_duplicate, swap_info
            offset = page.private
            assert isinstance(offset, int)
            await step("5. swap_duplicate; set_pte_at(swp_entry_to_pte)",
                       writes=(k, page.flags_key, swap_info().key(offset)))
            if pteval.dirty:
                page.flags |= PG_dirty
            swap_duplicate(offset)
            set_pte_at(mm, address, Pte(None, present=False, young=False,
                                        swp=SwpEntry("swap", None, offset=offset)))
        elif pteval.dirty or migration:
            keys: tuple[Any, ...] = (k, page.flags_key)
            await step("5. set_page_dirty / set_pte_at(migration entry)" if migration
                       else "set_page_dirty", reads=(page._count,), writes=keys)
            if pteval.dirty:
                page.flags |= PG_dirty
            if migration:
                set_pte_at(mm, address, make_migration_entry(page, pteval.write))
        # dec_mm_counter: the page leaves this mm -- but a migration entry
        # keeps its page's rss count (2.6.27 decrements only in the swap and
        # the plain file branches; remove_migration_pte adds nothing back)
        if not migration:
            if PageAnon(page):
                mm.anon_rss -= 1
            else:
                mm.file_rss -= 1
        await page_remove_rmap(page, vma, label="6. page_remove_rmap")
        await put_page(page, label="6. page_cache_release (the pte's reference)")
        await spin_unlock(ptl, label="6. pte_unmap_unlock")
    return ret


async def page_lock_anon_vma(page: Page) -> AnonVma | None:
    """rcu_read_lock, then the page's anon_vma locked (None: not anon or not mapped)."""
    await rcu_read_lock()
    await step("page_lock_anon_vma: page->mapping", reads=(page.mapping_key, page._mapcount))
    anon_vma = page_anon_vma(page)
    if anon_vma is None or not page_mapped(page):
        await rcu_read_unlock()
        return None
    await spin_lock(anon_vma.lock, label="1. page_lock_anon_vma: spin_lock(anon_vma->lock)")
    if anon_vma.lock.sleeps:
        # modern (folio_lock_anon_vma_read): the lock, a sleeping rwsem,
        # keeps the anon_vma alive, and RCU is dropped before the walk, so
        # the walk's notifier callbacks may sleep.  Its slow path (trylock
        # failed: take a reference, drop RCU, then sleep on the rwsem) is
        # not modelled: the model takes the lock under RCU and drops RCU.
        await rcu_read_unlock()
    return anon_vma


async def page_unlock_anon_vma(anon_vma: AnonVma) -> None:
    await spin_unlock(anon_vma.lock, label="page_unlock_anon_vma: spin_unlock(anon_vma->lock)")
    if not anon_vma.lock.sleeps:
        await rcu_read_unlock()


async def try_to_unmap_anon(page: Page, migration: bool) -> int:
    ret = SWAP_FAIL
    anon_vma = await page_lock_anon_vma(page)
    if anon_vma is None:
        return ret
    await step("1. walk anon_vma->head", reads=((anon_vma, "head"),))
    anon_vma_head_check(anon_vma)
    for vma in list(anon_vma.head):
        ret = await try_to_unmap_one(page, vma, migration)
        await step("page_mapped?", reads=(page._mapcount,))
        if ret == SWAP_FAIL or not page_mapped(page):
            break
    await page_unlock_anon_vma(anon_vma)
    return ret


async def try_to_unmap_file(page: Page, migration: bool) -> int:
    mapping = page.mapping  # stable: the page is locked
    ret = SWAP_AGAIN
    if mapping is None:
        return ret
    locked = not mmemu.mutant(NO_I_MMAP_LOCK)
    if locked:
        await spin_lock(mapping.i_mmap_lock, label="1. try_to_unmap_file: spin_lock(i_mmap_lock)")
    await step("1. walk i_mmap", reads=((mapping, "i_mmap"),))
    for vma in list(mapping.i_mmap):
        ret = await try_to_unmap_one(page, vma, migration)
        await step("page_mapped?", reads=(page._mapcount,))
        if ret == SWAP_FAIL or not page_mapped(page):
            break
    if locked:
        await spin_unlock(mapping.i_mmap_lock, label="try_to_unmap_file: spin_unlock(i_mmap_lock)")
    return ret


async def try_to_unmap(page: Page, migration: bool = False) -> int:
    """Try to remove every pte that maps ``page``; the caller holds the page
    lock.  SWAP_SUCCESS: no pte maps it any more; SWAP_AGAIN: try again
    later; SWAP_FAIL: a referenced or mlocked pte keeps it (reclaim only).
    With ``migration``, each pte becomes a migration entry."""
    if not PageLocked(page):
        current_simulation().fail(BadPageState(
            f"try_to_unmap(page{page.pfn}) at {page_site()}: BUG_ON(!PageLocked(page))",
            details=page.dump()))
    if PageKsm(page):
        # 2.6.32: KSM pages are not swappable; rmap_walk_ksm, which finds their
        # ptes at addresses unrelated to page->index (2.6.33), is not modelled
        return SWAP_FAIL
    with span("try_to_unmap"):
        if PageAnon(page):
            ret = await try_to_unmap_anon(page, migration)
        else:
            ret = await try_to_unmap_file(page, migration)
        await step("try_to_unmap: page_mapped?", reads=(page._mapcount,))
        if not page_mapped(page):
            ret = SWAP_SUCCESS
    return ret


# ------------------------------------------------------- page_referenced


#: coverage events of page_referenced_one (goals of rmap:vma-change-vs-aging):
#: the walk met a vma of the page's anon_vma / i_mmap that does not cover the
#: page (the other half of a split) ...
REFERENCED_VMA_NOT_COVERING = "rmap: page_referenced_one met a vma that does not cover the page"
#: ... or one that covers it without a pte of it (a fork's child before
#: copy_page_range, a new mapping of the file not yet faulted)
REFERENCED_NO_PTE = "rmap: page_referenced_one found no pte of the page in a vma covering it"
#: page_referenced of a file page found it locked (counted as referenced)
REFERENCED_TRYLOCK_FAILED = "rmap: page_referenced found the file page locked (busy: referenced)"


async def page_referenced_one(page: Page, vma: VmAreaStruct) -> int:
    mm = vma.vm_mm
    address = vma_address(page, vma)
    if address == -EFAULT:
        reach(REFERENCED_VMA_NOT_COVERING)
        return 0
    ptl = mm.page_table_lock
    await spin_lock(ptl, label="page_referenced_one: spin_lock(ptl)")
    await step("page_referenced_one: pte maps the page?", reads=(pte_key(mm, address),))
    pte = pte_get(mm, address)
    referenced = 0
    if pte is not None and pte.present and pte.page is page:
        if vma.vm_flags & VM_LOCKED:
            referenced = 1
        elif await ptep_clear_flush_young_notify(vma, address):
            referenced = 1
    else:
        reach(REFERENCED_NO_PTE)
    await spin_unlock(ptl, label="page_referenced_one: pte_unmap_unlock")
    return referenced


async def page_referenced(page: Page, is_locked: bool) -> int:
    """How many ptes (and secondary MMUs) used the page since the last call,
    clearing their accessed bits; PG_referenced counts once.  A file page
    needs the page lock (taken with trylock here unless ``is_locked``)."""
    referenced = 0
    with span("page_referenced"):
        await step("page_referenced: TestClearPageReferenced", writes=(page.flags_key,))
        if page.flags & PG_referenced:
            page.flags &= ~PG_referenced
            referenced += 1
        await step("page_referenced: page_mapped?", reads=(page._mapcount, page.mapping_key))
        if not page_mapped(page) or page.mapping is None:
            return referenced
        if PageAnon(page):
            anon_vma = await page_lock_anon_vma(page)
            if anon_vma is not None:
                await step("walk anon_vma->head", reads=((anon_vma, "head"),))
                anon_vma_head_check(anon_vma)
                for vma in list(anon_vma.head):
                    referenced += await page_referenced_one(page, vma)
                await page_unlock_anon_vma(anon_vma)
            return referenced
        locked_here = False
        if not is_locked:
            if not await trylock_page(page):
                reach(REFERENCED_TRYLOCK_FAILED)
                return referenced + 1
            locked_here = True
        mapping = page.mapping
        if mapping is not None:
            locked = not mmemu.mutant(REFERENCED_NO_I_MMAP_LOCK)
            if locked:
                await spin_lock(mapping.i_mmap_lock, label="page_referenced_file: spin_lock(i_mmap_lock)")
            await step("walk i_mmap", reads=((mapping, "i_mmap"),))
            for vma in list(mapping.i_mmap):
                referenced += await page_referenced_one(page, vma)
            if locked:
                await spin_unlock(mapping.i_mmap_lock, label="page_referenced_file: spin_unlock(i_mmap_lock)")
        if locked_here:
            await unlock_page(page)
    return referenced


__all__ = [
    "NO_I_MMAP_LOCK", "REFERENCED_NO_I_MMAP_LOCK", "REFERENCED_NO_PTE", "REFERENCED_TRYLOCK_FAILED", "REFERENCED_VMA_NOT_COVERING", "SWAP_AGAIN", "SWAP_FAIL", "SWAP_SUCCESS", "UNMAP_VMA_NOT_COVERING", "page_add_anon_rmap", "page_add_file_rmap",
    "page_add_new_anon_rmap", "page_mapped", "page_referenced", "page_remove_rmap",
    "try_to_unmap", "try_to_unmap_anon", "try_to_unmap_file", "try_to_unmap_one",
]

