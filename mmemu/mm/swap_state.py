"""The swap cache: anonymous pages on their way to or from a swap slot.

Emulates: mm/swap_state.c (add_to_swap, add_to_swap_cache,
__delete_from_swap_cache, delete_from_swap_cache, lookup_swap_cache,
read_swap_cache_async) (2.6.27)

The swap cache is ``swapper_space``: an address_space whose radix tree maps
a swap slot (``swp_entry_t.val``, here the offset) to the page that holds
its contents.  A page in it has PG_swapcache and ``page->private`` = the
offset, keeps ``page->mapping`` = its anon_vma (rmap still finds its ptes),
and is found by the same lockless lookup as the pagecache
(find_get_page(&swapper_space, offset): the speculative protocol of
mmemu.mm.pagemap).  The cache holds one page reference and one slot
reference (swap_map).

Reclaim of an anonymous page (shrink_page_list)::

    add_to_swap: get_swap_page (slot count 1: the cache's); page locked:
                 add_to_swap_cache (page ref, PG_swapcache, private, radix
                 insert); SetPageDirty
    try_to_unmap: each pte becomes the swap entry (swap_duplicate: +1)
    pageout: the write to swap (not modelled: the page is clean at once)
    __remove_mapping: freeze(2); __delete_from_swap_cache; swap_free (the
                 cache's slot reference); free the page

A fault on a swap pte (do_swap_page) looks the slot up in the swap cache
(lookup_swap_cache); if it is not there, read_swap_cache_async allocates a
page, takes a slot reference (swap_duplicate: the slot may have been freed
meanwhile) and adds it to the cache locked, then "reads" it (swap_readpage:
not modelled, the page is uptodate at once).  A racing add of the same slot
fails with -EEXIST and the loser uses the winner's page.

Not modelled: swap readahead (one slot at a time), the I/O, writeback
state, swap tokens, memcg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmemu.engine._execution import current_simulation, span, step
from mmemu.kernel.locking import spin_lock, spin_unlock
from mmemu.mm.filemap import (
    AddressSpace,
    _checker,
    find_get_page,
    nrpages_key,
    radix_tree_store,
    slot_key,
    tree_key,
)
from mmemu.mm.page import (
    PG_dirty,
    PG_swapcache,
    PG_uptodate,
    BadPageState,
    ClearPageLocked,
    Page,
    PageLocked,
    SetPageLocked,
    get_page_locked,
    page_site,
    put_page,
    unlock_page,
)
from mmemu.mm.swapfile import get_swap_page, swap_count, swap_duplicate_async, swap_free, swap_info

if TYPE_CHECKING:
    from mmemu.mm.init import Kernel
    from mmemu.mm.mmap import VmAreaStruct

EEXIST = 17


def swapper_space(kernel: Kernel | None = None) -> AddressSpace:
    """The swap cache's address_space (one per kernel)."""
    if kernel is None:
        kernel = current_simulation().data["kernel"]
    sp = kernel.data.get("swapper_space")
    if sp is None:
        sp = kernel.data["swapper_space"] = AddressSpace(kernel, "swapper_space")
    assert isinstance(sp, AddressSpace)
    return sp


def PageSwapCache(page: Page) -> bool:
    return bool(page.flags & PG_swapcache)


async def add_to_swap_cache(page: Page, offset: int) -> int:
    """Put the locked page in the swap cache at ``offset`` (0, or -EEXIST if
    the slot's page is already there).  The cache takes a page reference;
    the caller already holds the slot reference for it."""
    if not PageLocked(page) or PageSwapCache(page):
        current_simulation().fail(BadPageState(
            f"add_to_swap_cache(page{page.pfn}) at {page_site()}: BUG_ON(!PageLocked(page)) "
            f"/ BUG_ON(PageSwapCache(page))", details=page.dump()))
    sp = swapper_space()
    with span("add_to_swap_cache"):
        await step("add_to_swap_cache: page_cache_get; SetPageSwapCache; set_page_private",
                   writes=(page._count, page.flags_key))
        get_page_locked(page)
        page.flags |= PG_swapcache
        page.private = offset
        await spin_lock(sp.tree_lock, label="add_to_swap_cache: spin_lock(swapper_space.tree_lock)")
        await step(f"add_to_swap_cache: radix_tree_insert(swap {offset})",
                   writes=(slot_key(sp, offset), tree_key(sp), nrpages_key(sp)))
        err = 0
        if offset in sp.page_tree:
            err = -EEXIST
        else:
            radix_tree_store(sp, offset, page)
            sp.nrpages += 1
        await spin_unlock(sp.tree_lock,
                          label="add_to_swap_cache: spin_unlock(swapper_space.tree_lock)")
        if err:
            await step("add_to_swap_cache: -EEXIST: ClearPageSwapCache",
                       writes=(page.flags_key,))
            page.flags &= ~PG_swapcache
            page.private = None
            await put_page(page, label="add_to_swap_cache: page_cache_release")
    return err


# ----------------------------------------------------- checker interface
#
# The page-state checker (kernel.data["page_state"], see mmemu.check) keeps
# which swap-cache pages hold data their slot does not: a page given a new
# slot, until pageout writes it; a page whose dirty pte was cleared.


def _swap_page_new(page: Page) -> None:
    """``page`` got a new (never written) slot: its data is only in the page."""
    chk = _checker()
    if chk is not None:
        chk.swap_page_new(page)


def _swap_page_written(page: Page) -> None:
    """pageout wrote ``page`` to its slot."""
    chk = _checker()
    if chk is not None:
        chk.swap_page_written(page)


def _swap_page_removed(page: Page, offset: int) -> None:
    """Called inside the step in which reclaim took ``page`` out of the swap
    cache to free it: will swap ptes read the slot back?"""
    chk = _checker()
    if chk is not None:
        chk.swap_page_removed(page, offset, swap_count(offset) - 1)


async def add_to_swap(page: Page) -> bool:
    """Give a locked anonymous page a swap slot and put it in the swap
    cache, dirty (it must be written before it can be freed).  False: swap
    is full."""
    if not PageLocked(page):
        current_simulation().fail(BadPageState(
            f"add_to_swap(page{page.pfn}) at {page_site()}: BUG_ON(!PageLocked(page))",
            details=page.dump()))
    with span("add_to_swap"):
        while True:
            offset = await get_swap_page()
            if not offset:
                return False
            err = await add_to_swap_cache(page, offset)
            if err == 0:
                await step("add_to_swap: SetPageDirty", writes=(page.flags_key,))
                page.flags |= PG_dirty
                _swap_page_new(page)
                return True
            # -EEXIST: raced with a "speculative" read_swap_cache_async
            await swap_free(offset, label="add_to_swap: -EEXIST: swap_free")


async def __delete_from_swap_cache(page: Page) -> None:
    """Take the page out of the swap cache (caller holds
    swapper_space.tree_lock and the page lock).  The cache's page reference
    and slot reference are the caller's to drop."""
    sp = swapper_space()
    offset = page.private
    if not PageSwapCache(page) or not isinstance(offset, int) or sp.page_tree.get(offset) is not page:
        current_simulation().fail(BadPageState(
            f"__delete_from_swap_cache(page{page.pfn}) at {page_site()}: not in the swap cache "
            f"at {offset}", details=page.dump()))
    assert isinstance(offset, int)
    await step(f"__delete_from_swap_cache(swap {offset})",
               writes=(slot_key(sp, offset), tree_key(sp), nrpages_key(sp), page.flags_key))
    radix_tree_store(sp, offset, None)
    sp.nrpages -= 1
    page.private = None
    page.flags &= ~PG_swapcache


async def delete_from_swap_cache(page: Page) -> None:
    """Take the locked page out of the swap cache and drop what the cache
    held: the slot reference (swap_free) and the page reference."""
    sp = swapper_space()
    offset = page.private
    assert isinstance(offset, int)
    with span("delete_from_swap_cache"):
        await spin_lock(sp.tree_lock,
                        label="delete_from_swap_cache: spin_lock(swapper_space.tree_lock)")
        await __delete_from_swap_cache(page)
        await spin_unlock(sp.tree_lock,
                          label="delete_from_swap_cache: spin_unlock(swapper_space.tree_lock)")
        await swap_free(offset, label="delete_from_swap_cache: swap_free")
        await put_page(page, label="delete_from_swap_cache: page_cache_release")


async def lookup_swap_cache(offset: int) -> Page | None:
    """The slot's page with a reference, if it is in the swap cache."""
    with span("lookup_swap_cache"):
        return await find_get_page(swapper_space(), offset)


async def swap_readpage(page: Page) -> None:
    """The read from swap (not modelled: it completes at once, as
    end_swap_bio_read would): SetPageUptodate, unlock_page."""
    await step("swap_readpage: SetPageUptodate (the I/O is not modelled)",
               writes=(page.flags_key,))
    page.flags |= PG_uptodate
    await unlock_page(page, label="end_swap_bio_read: unlock_page")


async def read_swap_cache_async(offset: int, vma: VmAreaStruct | None = None,
                                addr: int = 0) -> Page | None:
    """The slot's page, from the swap cache or read into a new page that is
    added to it (with a reference for the caller); None if the slot was
    freed meanwhile (another fault or a zap got there first)."""
    from mmemu.mm.page_alloc import alloc_page
    found: Page | None = None
    new: Page | None = None
    with span("read_swap_cache_async"):
        while True:
            found = await find_get_page(swapper_space(), offset)
            if found is not None:
                break
            if new is None:
                new = await alloc_page(label="read_swap_cache_async: alloc_page_vma")
            # the swap entry may have been freed since our caller observed it
            if not await swap_duplicate_async(offset, label="read_swap_cache_async: swap_duplicate"):
                break
            await step("read_swap_cache_async: SetPageLocked", writes=(new.flags_key,))
            SetPageLocked(new)
            err = await add_to_swap_cache(new, offset)
            if err == 0:
                await swap_readpage(new)
                return new
            await step("read_swap_cache_async: ClearPageLocked", writes=(new.flags_key,))
            ClearPageLocked(new)
            await swap_free(offset, label="read_swap_cache_async: -EEXIST: swap_free")
        if new is not None:
            await put_page(new, label="read_swap_cache_async: page_cache_release(new_page)")
    return found


__all__ = ["EEXIST", "PageSwapCache", "__delete_from_swap_cache", "add_to_swap",
           "add_to_swap_cache", "delete_from_swap_cache", "lookup_swap_cache",
           "read_swap_cache_async", "swap_info", "swap_readpage", "swapper_space"]
