"""Page migration: move a page's contents and mappings to another page.

Emulates: mm/migrate.c, include/linux/swapops.h (migration entries) (2.6.27)

``migrate_pages(page, newpage)`` moves one isolated page (the caller holds
the isolation reference, as after isolate_lru_page) to ``newpage`` (a fresh
page, count 1).  unmap_and_move, per page::

  1. lock_page(page)
  2. try_to_unmap(page, migration): every pte becomes a migration entry
     that points at the old page (and drops its reference)
  3. move_to_new_page: newpage takes page->mapping and page->index, then
     migrate_page_move_mapping -- for a pagecache page, under tree_lock:
       A. page_freeze_refs(page, 2): the isolation reference and the
          pagecache's, nobody else's (else -EAGAIN)
       B. get_page(newpage); replace the radix slot with newpage
       C. page_unfreeze_refs(page, 2); drop the pagecache's reference
     (an anonymous page is not in a tree: its count must be 1, no freeze)
     then migrate_page_copy: contents and flags; page->mapping = NULL
  4. remove_migration_ptes(page, newpage): each migration entry becomes a pte
     to newpage (on failure: back to the old page)
  5. unlock_page(page); drop the old page (isolation reference: freed);
     move_to_lru(newpage): lru_cache_add, put_page (freed if migration failed)

The fault side (migration_entry_wait), faulting on a migration entry::

  a. PTL; the pte is still a migration entry for the page?
  b. get_page_unless_zero(page)          (fails: count frozen by A)
  c. unlock the PTL; wait_on_page_locked(page); put_page; retry the fault

There are 2 critical interleavings that matter:
 - b before A: A sees the extra reference and fails: -EAGAIN, 4 restores the
   ptes to the old page, 5 unlocks it; the fault wakes and finds it mapped.
 - A before b: b fails on the frozen count; the fault returns and is retried
   (mmemu: it waits until the pte changes instead of spinning), and finds
   the pte to newpage installed by 4.

A plain get_page at b (mutant ``migrate:plain-get``) increments a frozen
count: the kernel's VM_BUG_ON(page_count(page) == 0) -- and, had migration
gone on, a reference to a page about to be freed.
"""

from __future__ import annotations

import mmemu
from mmemu.engine._execution import block, reach, span, step
from mmemu.kernel.locking import spin_lock, spin_unlock
from mmemu.mm.memory import (
    is_migration_entry,
    mk_pte,
    pte_get,
    pte_key,
    set_pte_at,
)
from mmemu.mm.mmap import EFAULT, VmAreaStruct, anon_vma_head_check, vma_address
from mmemu.mm.page import (
    PG_active,
    PG_anon,
    PG_dirty,
    PG_locked,
    PG_referenced,
    PG_uptodate,
    Page,
    PageAnon,
    SetPageLocked,
    get_page,
    get_page_unless_zero,
    lock_page,
    put_page,
    unlock_page,
)

EAGAIN = 11

PLAIN_GET = mmemu.register_mutant(
    "migrate:plain-get",
    "migration_entry_wait takes its reference with get_page, not get_page_unless_zero",
    caught_as="GetPageOnFreePage",
    doc="Kamezawa's fix folded into the speculative-references patch: once "
        "migrate_page_move_mapping has frozen the old page's count (page_freeze_refs), "
        "a fault on one of its migration entries must not take a reference with "
        "get_page -- the count is zero, and the increment would resurrect a page the "
        "migration is about to free (VM_BUG_ON(page_count(page) == 0)).  "
        "get_page_unless_zero fails instead and the fault is simply retried.")

NEWPAGE_UNLOCKED = mmemu.register_mutant(
    "migrate:newpage-unlocked",
    "move_to_new_page puts the new page in the pagecache slot without locking it first",
    caught_as="HalfInitialisedPage (a lockless reader finds the new page in the slot before "
              "migrate_page_copy made it uptodate, and it is not locked)",
    doc="move_to_new_page locks the new page (2.6.27: 'if (TestSetPageLocked(newpage)) "
        "BUG()') before migrate_page_move_mapping makes it visible in the radix tree, and "
        "unlocks it only after migrate_page_copy: a lockless reader that finds it between "
        "B and the copy sees a page that is not uptodate and, because it is locked, waits "
        "for the copy -- the same rule as add_to_page_cache's lock before the insert.  "
        "Without the lock the reader takes the page as a read that failed or returns data "
        "that was never copied.")


# ------------------------------------------------------------ fault side


REMOVE_PTE_UNLOCKED = mmemu.register_mutant(
    "migrate:remove-pte-unlocked",
    "remove_migration_pte tests for the migration entry and installs the pte to the new "
    "page without the page table lock",
    caught_as="BadPageState (a zap between the install and page_add_anon_rmap finds the "
              "new page mapped but not counted: _mapcount below -1) or InvariantViolation "
              "(a zap between the test and the install is undone: madvise(MADV_DONTNEED) "
              "returns with the page still mapped)",
    doc="remove_migration_pte re-reads the pte under the PTL (pte_offset_map_lock, then "
        "'if (!pte_same(pte, swp_entry_to_pte(entry))) goto out') because nothing else "
        "keeps the pte still: migration holds neither mmap_sem nor a lock the zap paths "
        "take, and madvise(MADV_DONTNEED) (mmap_sem for read) or munmap may clear the "
        "migration entry at any time.  Without the lock (a step removed on purpose) the "
        "test, the install and the rmap update are separate steps: a zap between the test "
        "and the install is undone (the new page mapped in a range the process has just "
        "dropped), one between the install and the rmap unmaps a page not yet counted.")
#: coverage events
ANON_BUSY = "migrate: the anonymous page had an extra reference (-EAGAIN)"
ANON_MIGRATED = "migrate: an anonymous page moved to its new page"
#: remove_migration_ptes' walk met a vma that does not cover the page
#: (vma_address: -EFAULT; the other half of a split)
REMOVE_VMA_NOT_COVERING = "migrate: remove_migration_pte met a vma that does not cover the page"


async def wait_on_page_locked(page: Page) -> None:
    """Sleep until PG_locked is clear (no lock taken)."""
    key = page.flags_key
    await step(f"wait_on_page_locked(page{page.pfn})", reads=(key,))
    while page.flags & PG_locked:
        await block(key, f"wait_on_page_locked(page{page.pfn}) woken", reads=(key,),
                    why=f"page{page.pfn} to be unlocked")


async def _wait_pte_change(mm: object, address: int, entry: object) -> None:
    """The retried fault: every retry would find the same migration entry
    until the pte changes, so wait for that (remove_migration_pte or a zap)."""
    k = pte_key(mm, address)  # type: ignore[arg-type]
    await step("c. retry the fault: pte still the migration entry?", reads=(k,))
    while pte_get(mm, address) is entry:  # type: ignore[arg-type]
        await block(k, "c. retry the fault (pte changed)", reads=(k,),
                    why=f"the migration entry at {address:#x} to be replaced")


async def migration_entry_wait(mm: object, address: int) -> None:
    """A fault found a migration entry at ``address``: wait for the migration
    to finish (steps a-c of the comment at the top); the caller retries."""
    from mmemu.mm.mmap import MmStruct
    assert isinstance(mm, MmStruct)
    ptl = mm.page_table_lock
    k = pte_key(mm, address)
    with span("migration_entry_wait"):
        await spin_lock(ptl, label="a. migration_entry_wait: pte_offset_map_lock")
        await step("a. is_migration_entry(*pte)?", reads=(k,))
        entry = pte_get(mm, address)
        if not is_migration_entry(entry):
            await spin_unlock(ptl, label="a. not a migration entry: pte_unmap_unlock")
            return
        assert entry is not None and entry.swp is not None
        page = entry.swp.page
        assert page is not None
        if mmemu.mutant(PLAIN_GET):
            await get_page(page, label="b. get_page(page)")
        elif not await get_page_unless_zero(page, label="b. get_page_unless_zero(page)"):
            await spin_unlock(ptl, label="b. frozen: pte_unmap_unlock")
            await _wait_pte_change(mm, address, entry)
            return
        await spin_unlock(ptl, label="c. pte_unmap_unlock")
        await wait_on_page_locked(page)
        await put_page(page, label="c. put_page(page)")


# --------------------------------------------------------- migration side


async def remove_migration_pte(vma: VmAreaStruct, old: Page, new: Page) -> None:
    """Replace the migration entry for ``old`` in ``vma`` by a pte to ``new``."""
    from mmemu.mm import rmap
    mm = vma.vm_mm
    address = vma_address(new, vma)
    if address == -EFAULT:
        reach(REMOVE_VMA_NOT_COVERING)
        return
    ptl = mm.page_table_lock
    k = pte_key(mm, address)
    locked = not mmemu.mutant(REMOVE_PTE_UNLOCKED)
    if locked:
        await spin_lock(ptl, label="4. remove_migration_pte: spin_lock(ptl)")
    await step("4. migration entry for the old page?", reads=(k,))
    pte = pte_get(mm, address)
    if is_migration_entry(pte) and pte is not None and pte.swp is not None and pte.swp.page is old:
        write = pte.swp.write
        await get_page(new, label=f"4. get_page(page{new.pfn})")
        await step("4. set_pte_at(new page)", reads=(new.mapping_key, new._count), writes=(k,))
        if new is not old and PageAnon(new):
            reach(ANON_MIGRATED)
        set_pte_at(mm, address, mk_pte(new, vma, write=write, young=False))
        if PageAnon(new):
            await rmap.page_add_anon_rmap(new, vma, address, label="4. page_add_anon_rmap")
        else:
            await rmap.page_add_file_rmap(new, label="4. page_add_file_rmap")
    if locked:
        await spin_unlock(ptl, label="4. remove_migration_pte: pte_unmap_unlock")


async def remove_migration_ptes(old: Page, new: Page) -> None:
    """Every migration entry for ``old`` becomes a pte to ``new`` (``new`` may
    be ``old``: migration failed, the old page is mapped back)."""
    with span("remove_migration_ptes"):
        if PageAnon(new):
            anon_vma = new.mapping
            await spin_lock(anon_vma.lock, label="4. remove_anon_migration_ptes: spin_lock(anon_vma->lock)")
            await step("4. walk anon_vma->head", reads=((anon_vma, "head"),))
            anon_vma_head_check(anon_vma)
            for vma in list(anon_vma.head):
                await remove_migration_pte(vma, old, new)
            await spin_unlock(anon_vma.lock, label="4. spin_unlock(anon_vma->lock)")
        else:
            mapping = new.mapping
            if mapping is None:
                return
            await spin_lock(mapping.i_mmap_lock, label="4. remove_file_migration_ptes: spin_lock(i_mmap_lock)")
            await step("4. walk i_mmap", reads=((mapping, "i_mmap"),))
            for vma in list(mapping.i_mmap):
                await remove_migration_pte(vma, old, new)
            await spin_unlock(mapping.i_mmap_lock, label="4. spin_unlock(i_mmap_lock)")


async def migrate_page_move_mapping(mapping: object, newpage: Page, page: Page) -> int:
    """Steps A-C: hand the pagecache slot to ``newpage`` (0 or -EAGAIN)."""
    from mmemu.mm.filemap import AddressSpace, radix_tree_store, slot_key, tree_key
    from mmemu.mm.pagemap import page_freeze_refs, page_unfreeze_refs
    if mapping is None:
        # anonymous: only the isolation reference may be left
        await step("3. migrate_page_move_mapping: page_count(page) == 1?", reads=(page._count,))
        if page._count.counter != 1:
            reach(ANON_BUSY)
            return -EAGAIN
        return 0
    assert isinstance(mapping, AddressSpace)
    expected = 2  # the isolation reference + the pagecache's (no buffers in the model)
    slot = slot_key(mapping, page.index)
    with span("migrate_page_move_mapping"):
        await spin_lock(mapping.tree_lock, label="3. spin_lock_irq(tree_lock)")
        await step("3. radix_tree_lookup_slot: slot holds the page?", reads=(slot,))
        if mapping.page_tree.get(page.index) is not page:
            await spin_unlock(mapping.tree_lock, label="3. -EAGAIN: spin_unlock(tree_lock)")
            return -EAGAIN
        if not await page_freeze_refs(page, expected, label="A. page_freeze_refs(page, 2)"):
            await spin_unlock(mapping.tree_lock, label="A. busy, -EAGAIN: spin_unlock(tree_lock)")
            return -EAGAIN
        await get_page(newpage, label="B. get_page(newpage) (the cache's reference)")
        await step("B. radix_tree_replace_slot(newpage)", writes=(slot, tree_key(mapping)))
        radix_tree_store(mapping, page.index, newpage)
        await page_unfreeze_refs(page, expected, label="C. page_unfreeze_refs(page, 2)")
        await put_page(page, label="C. __put_page(page) (the cache's reference)")
        await spin_unlock(mapping.tree_lock, label="3. spin_unlock_irq(tree_lock)")
    return 0


async def migrate_page_copy(newpage: Page, page: Page) -> None:
    """Contents and flags to the new page; the old page leaves the mapping."""
    await step("3. migrate_page_copy", writes=(page.flags_key, newpage.flags_key, page.mapping_key))
    for bit in (PG_uptodate, PG_referenced, PG_dirty, PG_active):
        if page.flags & bit:
            newpage.flags |= bit
    page.flags &= ~(PG_active | PG_dirty)
    page.mapping = None


async def move_to_new_page(newpage: Page, page: Page) -> int:
    """3 and 4: move the mapping, copy, then remove_migration_ptes."""
    await step("3. move_to_new_page: newpage->mapping, ->index",
               writes=(newpage.flags_key, newpage.mapping_key, (newpage, "index")))
    locked = not mmemu.mutant(NEWPAGE_UNLOCKED)
    if locked:
        SetPageLocked(newpage)
    newpage.index = page.index
    newpage.mapping = page.mapping
    if PageAnon(page):
        newpage.flags |= PG_anon
        mapping = None
    else:
        mapping = page.mapping
    rc = await migrate_page_move_mapping(mapping, newpage, page)
    if rc == 0:
        await migrate_page_copy(newpage, page)
        await remove_migration_ptes(page, newpage)
    else:
        await step("3. failed: newpage->mapping = NULL", writes=(newpage.mapping_key,))
        newpage.mapping = None
        newpage.flags &= ~PG_anon
    if locked:
        await unlock_page(newpage, label="unlock_page(newpage)")
    return rc


async def migrate_pages(page: Page, newpage: Page) -> int:
    """Move one isolated page to ``newpage`` (unmap_and_move); 0 or -EAGAIN.

    The caller holds the isolation reference on ``page`` and the only
    reference on ``newpage``; both are consumed: on success the old page is
    freed, on failure ``newpage`` is and the old page is the caller's to put
    back (putback_lru_page)."""
    from mmemu.mm.rmap import page_mapped, try_to_unmap
    with span("migrate_pages"):
        await step("unmap_and_move: page_count(page) == 1?", reads=(page._count,))
        if page._count.counter == 1:
            # freed under us: only the isolation reference is left, and
            # move_newpage's putback_lru_page(page) drops it (rc != -EAGAIN):
            # the page is freed here
            await put_page(page, label="move_newpage: putback_lru_page(page) (freed under us)")
            await put_page(newpage, label="move_newpage: put_page(newpage)")
            return 0
        await lock_page(page, label="1. lock_page(page)")
        rc = -EAGAIN
        await step("page->mapping?", reads=(page.mapping_key,))
        if page.mapping is not None:
            await try_to_unmap(page, True)
            await step("page_mapped(page)?", reads=(page._mapcount,))
            if not page_mapped(page):
                rc = await move_to_new_page(newpage, page)
            if rc:
                await remove_migration_ptes(page, page)
        await unlock_page(page, label="5. unlock_page(page)")
        if rc == 0:
            await put_page(page, label="5. put_page(page) (migrated: freed)")
        # move_newpage: move_to_lru(newpage) -- lru_cache_add, then put_page
        # (if migration failed, that put frees it, off the LRU again)
        from mmemu.mm.vmscan import lru_cache_add
        await lru_cache_add(newpage)
        await put_page(newpage, label="move_newpage: put_page(newpage)")
    return rc


__all__ = ["ANON_BUSY", "ANON_MIGRATED", "EAGAIN", "NEWPAGE_UNLOCKED", "PLAIN_GET", "REMOVE_PTE_UNLOCKED",
           "REMOVE_VMA_NOT_COVERING", "migrate_page_move_mapping", "migrate_pages",
           "migration_entry_wait", "remove_migration_ptes", "wait_on_page_locked"]
