"""Truncation: shrink a file and drop its pages from the pagecache.

Emulates: mm/truncate.c (truncate_inode_pages_range, truncate_complete_page)
and mm/memory.c (vmtruncate, vmtruncate_range) (2.6.27)

    vmtruncate(mapping, offset)
      i_size_write(offset)                  new faults beyond it get SIGBUS
      unmap_mapping_range(offset, ...)      zap the ptes of every vma (i_mmap)
      truncate_inode_pages(offset)          (then unmap_mapping_range again:
                                             private COW copies, see vmtruncate)
        pass 1: for each page found (lockless pagevec_lookup):
                  trylock_page               (busy: leave it for pass 2)
                  truncate_complete_page
                  unlock_page
        pass 2: until a lookup from the start finds nothing:
                  lock_page                  (sleeps)
                  truncate_complete_page
                  unlock_page

    truncate_complete_page(mapping, page)    (page locked)
      page->mapping != mapping?              (already truncated or reclaimed
                                              while we waited: nothing to do)
      cancel_dirty_page(page)                the data is thrown away on purpose
      remove_from_page_cache(page)           tree_lock, B., unlock
      page_cache_release(page)               the pagecache's reference

Truncate takes no speculative-reference shortcut: it holds the page lock and
drops the cache's reference with an ordinary put_page, so a lookup that pinned
the page keeps it alive (and, if it locks it, sees page->mapping == NULL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.engine._execution import current_simulation, reach, span, step, wake_all
from mmemu.mm.filemap import (
    PAGE_CACHE_SIZE,
    PAGE_SHIFT,
    AddressSpace,
    find_get_pages,
    index_key,
    page_cache_release,
    remove_from_page_cache,
)
from mmemu.mm.page import PG_dirty, Page, lock_page, put_page, trylock_page, unlock_page

PAGEVEC_SIZE = 14


async def cancel_dirty_page(page: Page) -> None:
    """The page's data is being thrown away (it is beyond the new EOF):
    TestClearPageDirty, so that nobody writes it back -- and so that losing
    it is not data loss (the page-state checker is told)."""
    await step("cancel_dirty_page", writes=(page.flags_key,))
    page.flags &= ~PG_dirty
    kernel = current_simulation().data.get("kernel")
    chk = kernel.data.get("page_state") if kernel is not None else None
    if chk is not None:
        chk.dirty_cancelled(page)


NO_REMAP_CHECK = mmemu.register_mutant(
    "truncate:no-remap-check",
    "truncate_inode_pages removes a locked page from the pagecache without unmapping it "
    "again when something mapped it after vmtruncate's unmap_mapping_range",
    caught_as="MappedTruncatedPage / InvariantViolation (a pte still maps a page the "
              "truncate removed from the file)",
    doc="unmap_mapping_range runs before truncate_inode_pages takes any page lock, so a "
        "pte can come back in between: a fault that looked the page up before i_size "
        "changed, or page migration, whose migration entries unmap_mapping_range leaves "
        "alone (zap_pte_range skips non-present ptes when given details) and which "
        "remove_migration_ptes turns into ptes to the new page.  2.6.27's "
        "truncate_inode_pages_range therefore tests page_mapped() under the page lock and "
        "unmaps that one page again before truncate_complete_page.  Without the test (a "
        "step removed on purpose) the page leaves the pagecache still mapped.")


async def truncate_complete_page(mapping: AddressSpace, page: Page) -> None:
    """Remove a locked page from the pagecache and drop the cache's reference,
    unless it left ``mapping`` while we waited for its lock."""
    await step("truncate_complete_page: page->mapping == mapping?",
               reads=(page.mapping_key, index_key(page)))
    if page.mapping is not mapping:
        return
    # A fault that held the page lock may have mapped the page after
    # vmtruncate's unmap_mapping_range: zap it again under the page lock
    # (2.6.27 truncate_inode_pages_range: "if (page_mapped(page))
    # unmap_mapping_range(mapping, index << PAGE_CACHE_SHIFT, PAGE_CACHE_SIZE, 0)").
    await step("page_mapped(page)?", reads=(page._mapcount,))
    if page._mapcount.counter >= 0 and not mmemu.mutant(NO_REMAP_CHECK):
        reach("truncate: a fault mapped the page after unmap_mapping_range; unmapped again "
              "under the page lock")
        unmap = _unmap_mapping_range()
        if unmap is not None:
            await unmap(mapping, page.index << PAGE_SHIFT, PAGE_CACHE_SIZE, 0)
    await cancel_dirty_page(page)
    await remove_from_page_cache(page, label="remove_from_page_cache")
    await page_cache_release(page, label="page_cache_release (the pagecache's reference)")


async def pagevec_release(pages: list[Page]) -> None:
    for page in pages:
        await put_page(page, label="pagevec_release: put_page")


#: coverage event: a lookup of truncate_inode_pages_range returned a page
#: beyond ``lend`` (a hole's end), which the range rechecks leave alone
BEYOND_RANGE = "truncate: the lookup returned a page beyond the range's end; left alone"


async def truncate_inode_pages_range(mapping: AddressSpace, lstart: int, lend: int) -> None:
    """Drop the pages that hold bytes lstart..lend (lend inclusive, -1 for
    the end of the file).  Zeroing the partial page at lstart is not
    modelled (the model has no page contents).

    The gang lookups start at an index and return whatever is cached from
    there on, so with a finite ``lend`` (a hole: vmtruncate_range) they
    return pages beyond it: each pass tests every page's index against
    ``end`` and stops there."""
    start = (lstart + PAGE_CACHE_SIZE - 1) >> PAGE_SHIFT
    end = (1 << 62) if lend < 0 else (lend >> PAGE_SHIFT)
    with span("truncate_inode_pages_range"):
        # pass 1: the pages nobody holds locked
        nxt = start
        while nxt <= end:
            pvec = await find_get_pages(mapping, nxt, PAGEVEC_SIZE)
            if not pvec:
                break
            for page in pvec:
                page_index = page.index
                if page_index > end:
                    reach(BEYOND_RANGE)
                    nxt = page_index  # ends the outer loop
                    break
                if page_index > nxt:
                    nxt = page_index
                nxt += 1
                if not await trylock_page(page):
                    continue
                await truncate_complete_page(mapping, page)
                await unlock_page(page)
            await pagevec_release(pvec)

        # pass 2: wait for the locked ones, until nothing is left
        nxt = start
        while True:
            pvec = await find_get_pages(mapping, nxt, PAGEVEC_SIZE)
            if not pvec:
                if nxt == start:
                    break
                nxt = start
                continue
            if pvec[0].index > end:
                reach(BEYOND_RANGE)
                await pagevec_release(pvec)
                break
            for page in pvec:
                if page.index > end:
                    reach(BEYOND_RANGE)
                    break
                await lock_page(page)
                if page.index > nxt:
                    nxt = page.index
                nxt += 1
                await truncate_complete_page(mapping, page)
                await unlock_page(page)
            await pagevec_release(pvec)


async def truncate_inode_pages(mapping: AddressSpace, lstart: int) -> None:
    """Drop every page from byte ``lstart`` to the end of the file."""
    with span("truncate_inode_pages"):
        await truncate_inode_pages_range(mapping, lstart, -1)


def _unmap_mapping_range() -> Any:
    try:
        from mmemu.mm import memory
    except ModuleNotFoundError as exc:
        if exc.name != "mmemu.mm.memory":
            raise
        return None
    return getattr(memory, "unmap_mapping_range", None)


SINGLE_UNMAP = mmemu.register_mutant(
    "truncate:single-unmap",
    "vmtruncate (and vmtruncate_range, which shares the code) calls unmap_mapping_range "
    "once, before truncate_inode_pages, and not again after it",
    caught_as="InvariantViolation (a private COW copy of a truncated page stays mapped "
              "beyond the new end of file)",
    doc="d00806b183152af6d2 ('mm: fix fault vs invalidate race for linear mappings', Nick "
        "Piggin, 2007, 2.6.23) made the file fault hold the page lock from lookup to pte "
        "and added a second unmap_mapping_range after truncate_inode_pages: a write fault "
        "on a MAP_PRIVATE mapping can copy the page after the first unmap and map the copy; "
        "truncate_inode_pages, which rechecks page_mapped() under the page lock, only sees "
        "the pagecache page, which nothing maps, and the anonymous copy survives the "
        "truncate, mapped beyond EOF (where a shared mapping would get SIGBUS).")


async def vmtruncate(mapping: AddressSpace, offset: int) -> int:
    """Shrink the file to ``offset`` bytes: set i_size, zap every pte that
    maps the file beyond it, drop its pages, then zap again the private COW
    copies made meanwhile (d00806b183152af6d2, 2.6.23).  Returns 0.

    (Growing a file only sets i_size.)
    """
    with span("vmtruncate"):
        # (the write of the model's ``truncating`` count is part of the step:
        # see FAIR_FAULT_ROUNDS in mm/memory.py)
        await step("i_size_write(inode, offset)",
                   writes=(mapping.i_size_key, (mapping, "truncating")))
        growing = offset > mapping.i_size
        mapping.i_size = offset
        if growing:
            return 0
        first = (offset + PAGE_CACHE_SIZE - 1) >> PAGE_SHIFT
        mapping.truncating.append(first)
        await _shrink(mapping, offset)
        # wake a fault that gave way to this truncation (not kernel code)
        await step("fairness: vmtruncate done, wake the faults that gave way",
                   writes=((mapping, "truncating"), mapping.truncate_wq))
        mapping.truncating.remove(first)
        wake_all(mapping.truncate_wq)
    return 0


async def vmtruncate_range(mapping: AddressSpace, offset: int, end: int) -> int:
    """Punch a hole: drop bytes ``offset``..``end`` (inclusive) of the file
    from every mapping and from the pagecache, i_size unchanged -- what
    madvise(MADV_REMOVE) does on tmpfs after dropping mmap_sem
    (madvise_remove).  2.6.27 (mm/memory.c)::

        mutex_lock(&inode->i_mutex); down_write(&inode->i_alloc_sem);
        unmap_mapping_range(mapping, offset, (end - offset), 1);
        truncate_inode_pages_range(mapping, offset, end);
        unmap_mapping_range(mapping, offset, (end - offset), 1);
        inode->i_op->truncate_range(inode, offset, end);
        up_write(&inode->i_alloc_sem); mutex_unlock(&inode->i_mutex);

    The unmap / drop / unmap again is vmtruncate's (_unmap_drop_unmap).
    Not modelled: i_mutex and i_alloc_sem (no other path of the model takes
    them; a concurrent truncate of the same file is not run),
    ->truncate_range (shmem_truncate_range: the backing blocks and swap),
    and the -ENOSYS of a filesystem without it.  A fault into the hole
    after truncate_inode_pages_range reads the page in again, as in
    2.6.27 (the hole is refilled; i_size does not stop it)."""
    with span("vmtruncate_range"):
        await _unmap_drop_unmap(mapping, offset, end - offset,
                                lambda: truncate_inode_pages_range(mapping, offset, end))
    return 0


async def _shrink(mapping: AddressSpace, offset: int) -> None:
    """vmtruncate's part after the i_size write: unmap, drop the pages,
    unmap again."""
    await _unmap_drop_unmap(mapping, offset + PAGE_CACHE_SIZE - 1, 0,
                            lambda: truncate_inode_pages(mapping, offset))


async def _unmap_drop_unmap(mapping: AddressSpace, holebegin: int, holelen: int,
                            drop: Callable[[], Awaitable[None]]) -> None:
    """unmap_mapping_range(holebegin, holelen, even_cows); ``drop`` the
    pages; unmap_mapping_range again (vmtruncate and vmtruncate_range)."""
    unmap = _unmap_mapping_range()
    if unmap is not None:
        await unmap(mapping, holebegin, holelen, True)
    await drop()
    # unmap_mapping_range is called twice, first simply for efficiency
    # so that truncate_inode_pages does fewer single-page unmaps.  After
    # the first call, and before truncate_inode_pages finishes, a private
    # page may be COWed; the copy is not the pagecache page, so
    # truncate_inode_pages' page_mapped() test does not see it: only this
    # second call (even_cows) zaps it.
    if unmap is not None and not mmemu.mutant(SINGLE_UNMAP):
        await unmap(mapping, holebegin, holelen, True)


__all__ = ["BEYOND_RANGE", "NO_REMAP_CHECK", "SINGLE_UNMAP", "truncate_complete_page", "truncate_inode_pages",
           "truncate_inode_pages_range", "vmtruncate", "vmtruncate_range"]
