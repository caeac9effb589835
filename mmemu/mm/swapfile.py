"""The swap device: slot allocation and the per-slot reference counts.

Emulates: mm/swapfile.c (get_swap_page, swap_duplicate, swap_free,
free_swap_and_cache, can_share_swap_page, remove_exclusive_swap_page)
(2.6.27), for one swap device of ``nr_slots`` slots

``swap_map[offset]`` counts the references to a slot: one for the swap
cache while a page is in it (get_swap_page gives the slot with that one),
one per pte that holds the swap entry (swap_duplicate).  At zero the slot
is free again.  Everything is under ``swap_lock`` (one step each here: the
kernel's swap_info_get / swap_info_put around a counter update).

Not modelled: the I/O (a slot has no contents: swap_writepage and
swap_readpage complete at once), several devices and priorities, cluster
allocation, swapoff, swap tokens, the swap-count continuation of 2.6.34.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import current_simulation, reach, step
from mmemu.mm.page import Page, PageLocked, page_site

if TYPE_CHECKING:
    from mmemu.mm.init import Kernel
    from mmemu.mm.memory import SwpEntry

#: slots of the emulated swap device (a scenario may set kernel.data["swap_slots"])
DEFAULT_SLOTS = 8


class BadSwapEntry(InvariantViolation):
    """A swap_map count went wrong: freeing a free slot, duplicating one
    nobody holds ("swap_free: Unused swap offset" / "Bad swap file entry")."""


class SwapInfo:
    """``struct swap_info_struct`` of the one swap device."""

    __mmemu_name__ = "swap_info"

    def __init__(self, nr_slots: int) -> None:
        self.nr_slots = nr_slots
        #: offset -> count; absent: a free slot (slot 0 is the header, never used)
        self.swap_map: dict[int, int] = {}

    def key(self, offset: int) -> tuple[Any, ...]:
        """The access key of one slot's count."""
        return (self, "swap_map", offset)


def swap_info(kernel: Kernel | None = None) -> SwapInfo:
    """The swap device of the running kernel (created on first use)."""
    if kernel is None:
        kernel = current_simulation().data["kernel"]
    si = kernel.data.get("swap_info")
    if si is None:
        si = kernel.data["swap_info"] = SwapInfo(kernel.data.get("swap_slots", DEFAULT_SLOTS))
    assert isinstance(si, SwapInfo)
    return si


async def get_swap_page() -> int:
    """A free slot with a count of one (the swap cache's), or 0: swap full.
    Lowest free offset first (scan_swap_map without clusters)."""
    si = swap_info()
    await step("get_swap_page: scan_swap_map", writes=(si,))
    for offset in range(1, si.nr_slots + 1):
        if offset not in si.swap_map:
            si.swap_map[offset] = 1
            return offset
    return 0


def _bad(what: str, offset: int) -> None:
    current_simulation().fail(BadSwapEntry(f"{what} swap entry {offset} at {page_site()}"))


async def swap_duplicate_async(offset: int, *, label: str | None = None) -> bool:
    """One more reference to a slot in use (a pte, or a swap-in racing a
    free: False when the slot was freed meanwhile)."""
    si = swap_info()
    await step(label or f"swap_duplicate(swap {offset})", writes=(si.key(offset),))
    return swap_duplicate(offset)


def swap_duplicate(offset: int) -> bool:
    """swap_duplicate inside the caller's step (which declares the slot's
    key, ``swap_info().key(offset)``): False for a free slot."""
    si = swap_info()
    count = si.swap_map.get(offset, 0)
    if count <= 0:
        return False
    si.swap_map[offset] = count + 1
    return True


def swap_free_locked(offset: int) -> int:
    """swap_free inside the caller's step: the slot's new count."""
    si = swap_info()
    count = si.swap_map.get(offset, 0)
    if count <= 0:
        _bad("swap_free: unused", offset)
    count -= 1
    if count:
        si.swap_map[offset] = count
    else:
        del si.swap_map[offset]
    return count


async def swap_free(offset: int, *, label: str | None = None) -> int:
    si = swap_info()
    await step(label or f"swap_free(swap {offset})", writes=(si.key(offset), si))
    return swap_free_locked(offset)


def swap_count(offset: int) -> int:
    return swap_info().swap_map.get(offset, 0)


def page_swapcount(page: Page) -> int:
    """The references to the page's swap slot other than... all of them
    (2.6.27: ``page_swapcount``; the caller subtracts the cache's own)."""
    offset = page.private
    return swap_count(offset) if isinstance(offset, int) else 0


def can_share_swap_page(page: Page) -> bool:
    """May a write fault reuse this page in place (2.6.27)?  Caller holds
    the page lock: the only pte that maps it is ours, and no other swap pte
    holds its slot (mapcount + swapcount - the cache's own == 1).  The
    caller's step reads the page's _mapcount and the slot."""
    from mmemu.mm.page import PG_swapcache
    if not PageLocked(page):
        current_simulation().fail(InvariantViolation(
            f"can_share_swap_page(page{page.pfn}) at {page_site()}: BUG_ON(!PageLocked(page))"))
    count = page._mapcount.counter + 1
    if count <= 1 and page.flags & PG_swapcache:
        count += page_swapcount(page) - 1
    return count == 1


#: goals a suite can declare (``reaches=``): free_swap_and_cache's three outcomes
FREE_SWAP_TRYLOCK_FAILED = "swapfile: free_swap_and_cache found the swap-cache page locked (left it)"
FREE_SWAP_DELETED = "swapfile: free_swap_and_cache took the page out of the swap cache"
FREE_SWAP_BUSY = "swapfile: free_swap_and_cache left a busy page in the swap cache"


async def free_swap_and_cache(entry: SwpEntry, *, label: str | None = None) -> None:
    """A zapped pte held ``entry`` (zap_pte_range, under the PTL): drop its
    slot reference; if only the swap cache still holds the slot, look its
    page up and, if nobody but the cache and us holds it (page_count == 2)
    or swap is more than half full (vm_swap_full), take it out of the cache
    and mark it dirty (its slot is gone: the data now lives only in the
    page).  2.6.27::

        1. swap_info_get (swap_lock); swap_entry_free(p, offset) == 1?
           find_get_page(&swapper_space, entry.val); TestSetPageLocked:
           a locked page is somebody else's business (reclaim, a swap-in):
           page_cache_release, done; spin_unlock(&swap_lock)
        2. PageSwapCache && !PageWriteback && (page_count == 2 ||
           vm_swap_full())?  delete_from_swap_cache; SetPageDirty
        3. unlock_page; page_cache_release

    The model takes 1 in separate steps (the slot's count under one step,
    then the lookup and the trylock: swap_lock is not a lock of its own
    here, and nothing else the model does under it could run between).
    Not modelled: PageWriteback (the swap I/O completes at once).
    """
    from mmemu.mm.filemap import find_get_page
    from mmemu.mm.memory import vm_swap_full
    from mmemu.mm.page import PG_dirty, PG_swapcache, put_page, trylock_page, unlock_page
    from mmemu.mm.swap_state import delete_from_swap_cache, swapper_space
    offset = entry.offset
    si = swap_info()
    await step(label or f"free_swap_and_cache: swap_entry_free(swap {offset})",
               writes=(si.key(offset), si))
    if swap_free_locked(offset) != 1:
        return
    page = await find_get_page(swapper_space(), offset)
    if page is None:
        return
    if not await trylock_page(page, label="free_swap_and_cache: trylock_page"):
        reach(FREE_SWAP_TRYLOCK_FAILED)
        await put_page(page, label="free_swap_and_cache: page_cache_release (locked)")
        return
    await step("free_swap_and_cache: PageSwapCache && (page_count == 2 || vm_swap_full)?",
               reads=(page._count, page.flags_key, si))
    if page.flags & PG_swapcache and (page._count.counter == 2 or vm_swap_full()):
        await delete_from_swap_cache(page)
        page.flags |= PG_dirty
        reach(FREE_SWAP_DELETED)
    else:
        reach(FREE_SWAP_BUSY)
    await unlock_page(page, label="free_swap_and_cache: unlock_page")
    await put_page(page, label="free_swap_and_cache: page_cache_release")


async def remove_exclusive_swap_page(page: Page) -> None:
    """A swapped-in page whose slot only the cache still holds leaves the
    swap cache (vm_swap_full or mlocked, in do_swap_page).  Caller holds the
    page lock.  2.6.27 (remove_exclusive_swap_page_count(page, 2))::

        1. PageSwapCache, !PageWriteback, page_count == 2 (the cache's and
           the caller's)?  swap_info_get (swap_lock): swap_map[offset] == 1
           (only the cache holds the slot)?
        2. tree_lock: page_count still 2?  __delete_from_swap_cache;
           SetPageDirty -- the slot goes, so the page is now the only copy
           of its data and must be written again before reclaim frees it
        3. swap_free(entry); page_cache_release (the cache's references)

    (delete_from_swap_cache does 2 without its SetPageDirty, and 3; the
    dirty bit follows in a step of its own, still under the page lock that
    every reader of it for this page -- reclaim, free_swap_and_cache --
    takes first.)"""
    from mmemu.mm.page import PG_dirty, PG_swapcache
    from mmemu.mm.swap_state import delete_from_swap_cache
    si = swap_info()
    offset = page.private
    if not page.flags & PG_swapcache or not isinstance(offset, int):
        return
    await step("remove_exclusive_swap_page: page_count == 2 && swapcount == 1?",
               reads=(page._count, si.key(offset)))
    if page._count.counter == 2 and swap_count(offset) == 1:
        await delete_from_swap_cache(page)
        await step("remove_exclusive_swap_page: SetPageDirty", writes=(page.flags_key,))
        page.flags |= PG_dirty


__all__ = ["FREE_SWAP_BUSY", "FREE_SWAP_DELETED", "FREE_SWAP_TRYLOCK_FAILED", "BadSwapEntry", "SwapInfo", "can_share_swap_page", "free_swap_and_cache",
           "get_swap_page", "page_swapcount", "remove_exclusive_swap_page", "swap_count",
           "swap_duplicate", "swap_duplicate_async", "swap_free", "swap_free_locked",
           "swap_info"]
