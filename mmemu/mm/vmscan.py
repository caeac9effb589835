"""Page reclaim: isolate pages from the LRU, unmap them, drop them from the pagecache.

Emulates: mm/vmscan.c (2.6.27): isolate_lru_page, putback_lru_page,
shrink_page_list, __remove_mapping; and lru_cache_add from mm/swap.c

Reclaim is the remove side of the speculative pagecache protocol (the comment
on mmemu.mm.pagemap.page_cache_get_speculative).  Once it has isolated a
page (its reference) and found it clean and unmapped, it owns exactly two
references: the pagecache's and its own.  ``__remove_mapping`` then::

    spin_lock(tree_lock)
    A. page_freeze_refs(page, 2)     count 2 -> 0, or bail: someone holds a
                                     (speculative) reference
       PageDirty?                    dirtied meanwhile: page_unfreeze_refs, bail
    B. __remove_from_page_cache      the slot is emptied; lookups blocked at
                                     step 2 retry and find nothing
    spin_unlock(tree_lock)
    unlock_page
    C. free the page                 the count is still the frozen 0: straight
                                     to the allocator (free_hot_cold_page)

    CPU0 (reclaim)                   CPU1 (find_get_page)
                                     1. radix_tree_lookup -> page
    A. freeze 2 -> 0
                                     2. get_page_unless_zero fails: retry
    B. remove from the tree
                                     1. radix_tree_lookup -> NULL
    C. free

The count check and the zeroing are one cmpxchg.  With a separate check
(mutant ``vmscan:no-freeze``) a speculative reference taken between the
check and B is lost: C frees a page somebody holds.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.engine._execution import current_simulation, reach, span, step
from mmemu.kernel.locking import SpinLock, guarded_by, spin_lock, spin_unlock
from mmemu.mm.filemap import AddressSpace, __remove_from_page_cache, page_mapping
from mmemu.mm.page import (
    PG_dirty,
    PG_lru,
    PG_swapcache,
    PageAnon,
    BadPageState,
    Page,
    PageLocked,
    page_site,
    put_page,
    trylock_page,
    unlock_page,
)
from mmemu.mm.pagemap import _frozen, page_freeze_refs, page_unfreeze_refs

EBUSY = 16

NO_FREEZE = mmemu.register_mutant(
    "vmscan:no-freeze",
    "__remove_mapping checks page_count == 2, then removes and frees, without freezing",
    caught_as="FreePageInPageCache / PageCountUnderflow",
    doc="The pre-lockless __remove_mapping: 'if (page_count(page) != 2) goto cannot_free' "
        "under tree_lock, which was enough while find_get_page took tree_lock.  A "
        "lockless lookup takes its speculative reference between the check and B; "
        "reclaim then frees the page as if it owned every reference "
        "(set_page_count(page, 0)), and the lookup's holder uses and finally puts a "
        "page that is free or already reused for another file.")

DIRTY_BEFORE_FREEZE = mmemu.register_mutant(
    "vmscan:dirty-before-freeze",
    "__remove_mapping tests PageDirty before page_freeze_refs instead of after it",
    caught_as="DataLoss (the page-state checker: a page dirtied by a reference holder leaves "
              "the pagecache without writeback; the suite's own end check, LostWrite, would "
              "see it next)",
    doc="The order __remove_mapping's comment warns about (2.6.27, 'Must be careful with the "
        "order of the tests'): a get_user_pages holder writes to the page, SetPageDirty, "
        "put_page.  Tested clean first, then frozen once that holder's reference is gone, "
        "the page is removed and freed with its new data never written back.  Freezing first "
        "and testing PageDirty after the freeze (the cmpxchg is the read barrier) sees the "
        "dirty bit of any holder whose reference the freeze saw dropped.")

FREEZE_WRONG_COUNT = mmemu.register_mutant(
    "vmscan:freeze-wrong-count",
    "__remove_mapping freezes the count at 3 instead of 2 (the pagecache's and reclaim's)",
    caught_as="PageCountUnderflow / GetPageOnFreePage (reclaim freezes and frees a page "
              "while a third holder -- a pin, a speculative lookup, truncate's pagevec -- "
              "still uses it)",
    doc="page_freeze_refs(page, 2) encodes exactly which references reclaim owns after "
        "isolating an unmapped clean page: the pagecache's and its own.  Expecting one more "
        "turns the check upside down: with only those two the freeze always fails (reclaim "
        "never frees anything), and with a third holder present it succeeds, so reclaim "
        "frees a page that holder still uses.")


def _lru_lock() -> SpinLock:
    kernel = current_simulation().data["kernel"]
    lock = kernel.data.get("zone.lru_lock")
    if lock is None:
        lock = kernel.data["zone.lru_lock"] = SpinLock("zone.lru_lock", "lru_lock")
    return lock  # type: ignore[no-any-return]


def lru_key(page: Page) -> tuple[Page, str]:
    """The access key of ``page->lru``, the page's link on its zone's LRU
    list.  The model keeps no list (PG_lru says the page is on it), but
    every step that puts a page on the list or takes it off writes this key,
    and only the zone->lru_lock holder may: the list is shared by every
    page of the zone, so an unlocked list_add/list_del corrupts it whatever
    the page's flag says (the lockset checker reports it as a DataRace)."""
    return (page, "lru")


# __page_cache_release's del_page_from_lru (mm/page.py put_page) does not
# take the lock in the model and does not declare the key: see its comment.
guarded_by(Page, "lru", lambda page: _lru_lock(),
           why="zone->lru_lock protects the LRU lists (page->lru)")


def PageLRU(page: Page) -> bool:
    return bool(page.flags & PG_lru)


def PageDirty(page: Page) -> bool:
    return bool(page.flags & PG_dirty)


def _allocator() -> Any:
    return current_simulation().data["kernel"].page_alloc


ISOLATE_KEEPS_LRU = mmemu.register_mutant(
    "vmscan:isolate-keeps-lru",
    "isolate_lru_page takes its reference but leaves PG_lru set",
    caught_as="BadPageState (the second isolation of the same page also succeeds; a "
              "putback then finds PG_lru still set: VM_BUG_ON(PageLRU(page)))",
    doc="Isolation is a test-and-clear of PG_lru under zone->lru_lock: the winner takes "
        "the page off the LRU (and a reference), every later isolation sees PG_lru clear "
        "and fails with -EBUSY until the page is put back.  Leaving the flag set (a step "
        "removed on purpose) lets reclaim, migration, mlock or compaction isolate one page "
        "twice: both think they own it, each one's reference makes the other's freeze or "
        "count test fail, and both put it back onto one list.")
PUTBACK_NO_LRU = mmemu.register_mutant(
    "vmscan:putback-no-lru",
    "putback_lru_page drops the isolation reference without setting PG_lru again",
    caught_as="InvariantViolation (a page in use that nobody holds isolated is not on the "
              "LRU: reclaim and migration can never take it again)",
    doc="putback_lru_page is the other half of isolation: the page goes back on an LRU "
        "list (SetPageLRU under zone->lru_lock) and only then is the isolation reference "
        "dropped.  Without the SetPageLRU (a step removed on purpose) the page is off "
        "every list for good: unreclaimable, unmigratable, and every later "
        "isolate_lru_page fails with -EBUSY.")
#: coverage event
ISOLATE_BUSY = "vmscan: isolate_lru_page: the page was not on the LRU (-EBUSY)"


async def lru_cache_add(page: Page) -> None:
    """Put a page on the (inactive) LRU (mm/swap.c).  The LRU holds no reference."""
    lock = _lru_lock()
    await spin_lock(lock)
    await step("SetPageLRU", writes=(page.flags_key, lru_key(page)))
    _lru_bug_on(page, "lru_cache_add")
    page.flags |= PG_lru
    await spin_unlock(lock)


def _lru_bug_on(page: Page, where: str) -> None:
    """2.6.27's VM_BUG_ON(PageLRU(page)) where a page goes (back) on the LRU
    (__pagevec_lru_add, shrink_inactive_list's putback): a page already on
    it is on two lists, or was never isolated."""
    if page.flags & PG_lru:
        current_simulation().fail(BadPageState(
            f"{where}(page{page.pfn}) at {page_site()}: VM_BUG_ON(PageLRU(page)): the page "
            f"is already on the LRU", details=page.dump()))


async def isolate_lru_page(page: Page) -> int:
    """Take the page off the LRU for reclaim, with a reference (the reclaim
    reference ``__remove_mapping`` counts on); 0 or -EBUSY."""
    lock = _lru_lock()
    with span("isolate_lru_page"):
        await spin_lock(lock)
        await step("PageLRU && get_page_unless_zero: ClearPageLRU",
                   writes=(page.flags_key, page._count, lru_key(page)))
        ret = -EBUSY
        if page.flags & PG_lru and page._count.counter > 0:
            page._count.counter += 1
            if not mmemu.mutant(ISOLATE_KEEPS_LRU):
                page.flags &= ~PG_lru
            ret = 0
        else:
            reach(ISOLATE_BUSY)
        await spin_unlock(lock)
    return ret


async def putback_lru_page(page: Page) -> None:
    """Return an isolated page that reclaim kept to the LRU and drop the
    isolation reference."""
    lock = _lru_lock()
    with span("putback_lru_page"):
        await spin_lock(lock)
        await step("SetPageLRU", writes=(page.flags_key, lru_key(page)))
        _lru_bug_on(page, "putback_lru_page")
        if not mmemu.mutant(PUTBACK_NO_LRU):
            page.flags |= PG_lru
        await spin_unlock(lock)
        await put_page(page, label="putback: put_page (isolation reference)")


async def __remove_mapping(mapping: AddressSpace, page: Page) -> bool:
    """Remove a locked, isolated, unmapped page from the pagecache if nobody
    else holds a reference; true if it did (the count is then frozen at 0 and
    the caller frees the page: C)."""
    sim = current_simulation()
    if not PageLocked(page) or page_mapping(page) is not mapping:
        sim.fail(BadPageState(
            f"__remove_mapping(page{page.pfn}) at {page_site()}: "
            f"BUG_ON(!PageLocked(page)) / BUG_ON(mapping != page_mapping(page))",
            details=page.dump()))
    with span("__remove_mapping"):
        await spin_lock(mapping.tree_lock)
        if mmemu.mutant(NO_FREEZE):
            await step("A. page_count(page) == 2?", reads=(page._count,))
            if page._count.counter != 2:
                await spin_unlock(mapping.tree_lock, label="cannot_free: spin_unlock(tree_lock)")
                return False
        else:
            if mmemu.mutant(DIRTY_BEFORE_FREEZE):
                await step("PageDirty? (before the freeze)", reads=(page.flags_key,))
                if page.flags & PG_dirty:
                    await spin_unlock(mapping.tree_lock, label="cannot_free: spin_unlock(tree_lock)")
                    return False
            # The non-racy check for a busy page: the cache's reference and
            # ours, and nobody else's -- frozen so that nobody can take one.
            # PageDirty is tested only *after* the freeze: a holder that
            # dirtied the page and then dropped its reference is seen.
            expected = 3 if mmemu.mutant(FREEZE_WRONG_COUNT) else 2
            if not await page_freeze_refs(page, expected):
                reach("vmscan: __remove_mapping: the freeze failed (the page is busy)")
                await spin_unlock(mapping.tree_lock, label="cannot_free: spin_unlock(tree_lock)")
                return False
            if not mmemu.mutant(DIRTY_BEFORE_FREEZE):
                await step("PageDirty? (after the freeze)", reads=(page.flags_key,))
                if page.flags & PG_dirty:
                    # Changed its mind: give the references back (and wake
                    # the lookups that found the count frozen).
                    reach("vmscan: __remove_mapping unfroze a dirty page (changed its mind)")
                    await page_unfreeze_refs(page, expected)
                    await spin_unlock(mapping.tree_lock,
                                      label="cannot_free: spin_unlock(tree_lock)")
                    return False
        if page.flags & PG_swapcache:
            from mmemu.mm.swap_state import __delete_from_swap_cache, _swap_page_removed
            from mmemu.mm.swapfile import swap_free
            offset = page.private
            assert isinstance(offset, int)
            await __delete_from_swap_cache(page)
            # (in that step) the page-state checker's DataLoss: a page whose
            # data is newer than its slot's (dirtied since pageout wrote it,
            # a dirty pte cleared without set_page_dirty, a new slot never
            # written) leaves the swap cache to be freed while swap ptes
            # still refer to the slot -- its data is in no slot and no page
            _swap_page_removed(page, offset)
            reach("vmscan: __remove_mapping froze and freed the page")
            await spin_unlock(mapping.tree_lock)
            await swap_free(offset, label="__remove_mapping: swap_free (the cache's slot)")
        else:
            await __remove_from_page_cache(page)
            reach("vmscan: __remove_mapping froze and freed the page")
            await spin_unlock(mapping.tree_lock)
    return True


async def _free_frozen_page(page: Page) -> None:
    """C: the page left the pagecache with its count frozen at 0: it goes
    straight to the allocator (__pagevec_free -> free_hot_cold_page)."""
    await step("C. free the page (free_hot_cold_page)",
               writes=(page._count, page.flags_key, _allocator()))
    if mmemu.mutant(NO_FREEZE):
        # The remover believes it owns every reference: set_page_count(page, 0).
        page._count.counter = 0
    elif page._count.counter != 0:
        current_simulation().fail(BadPageState(
            f"free of page{page.pfn} at {page_site()}: count is {page._count.counter}, "
            f"not the frozen 0", details=page.dump()))
    _frozen(page).pop(page, None)
    from mmemu.mm.page_alloc import __free_page
    __free_page(page)


def _rmap() -> Any:
    try:
        from mmemu.mm import rmap
    except ModuleNotFoundError as exc:
        if exc.name != "mmemu.mm.rmap":
            raise
        return None
    return rmap if hasattr(rmap, "try_to_unmap") else None


async def shrink_page_list(page_list: list[Page]) -> tuple[int, list[Page]]:
    """Try to free each isolated page; returns (pages freed, pages kept).

    The kept pages still carry the isolation reference: give them back with
    putback_lru_page.  Per page::

        trylock_page                     (busy: keep)
        anon without a swap slot:        add_to_swap (swap full: keep)
        page_mapped? try_to_unmap        (fails: keep)
        PageDirty?                       a swap cache page: pageout (the write
                                         is instant); a file page: keep (no
                                         file writeback in the model)
        __remove_mapping: A, B           (busy: keep)
        unlock_page
        C. free the page
    """
    nr_reclaimed = 0
    kept: list[Page] = []
    with span("shrink_page_list"):
        for page in page_list:
            if not await trylock_page(page):
                kept.append(page)
                continue
            await step("page_mapped(page)? PageDirty(page)?",
                       reads=(page._mapcount, page.mapping_key, page.flags_key))
            mapped = page._mapcount.counter >= 0
            if PageAnon(page) and not page.flags & PG_swapcache:
                # Anonymous memory has backing store? Give it a swap slot here.
                from mmemu.mm.swap_state import add_to_swap
                if not await add_to_swap(page):
                    await unlock_page(page, label="activate_locked: unlock_page (swap full)")
                    kept.append(page)
                    continue
            mapping = page_mapping(page)
            dirty = PageDirty(page)
            if mapped and mapping is not None:
                rmap = _rmap()
                if rmap is None:
                    await unlock_page(page, label="keep_locked: unlock_page")
                    kept.append(page)
                    continue
                ret = await rmap.try_to_unmap(page, False)
                if ret != getattr(rmap, "SWAP_SUCCESS", 0):
                    await unlock_page(page, label="keep_locked: unlock_page")
                    kept.append(page)
                    continue
                await step("PageDirty(page)? (after try_to_unmap)", reads=(page.flags_key,))
                dirty = PageDirty(page)
            if dirty and page.flags & PG_swapcache:
                # pageout -> swap_writepage: the write to the swap slot is not
                # modelled; it completes at once (a synchronous write, as to a
                # ramdisk), the page is clean and reclaim goes on
                await step("pageout: swap_writepage (the I/O is not modelled): clean",
                           writes=(page.flags_key,))
                page.flags &= ~PG_dirty
                from mmemu.mm.swap_state import _swap_page_written
                _swap_page_written(page)
                dirty = False
            if dirty or mapping is None or not await __remove_mapping(mapping, page):
                await unlock_page(page, label="keep_locked: unlock_page")
                kept.append(page)
                continue
            await unlock_page(page)
            await _free_frozen_page(page)
            nr_reclaimed += 1
    return nr_reclaimed, kept


async def reclaim_page(page: Page) -> bool:
    """Isolate one page and run it through shrink_page_list (what kswapd's
    shrink_inactive_list does for a batch); true if it was freed."""
    if await isolate_lru_page(page) != 0:
        return False
    nr, kept = await shrink_page_list([page])
    for p in kept:
        await putback_lru_page(p)
    return nr == 1


__all__ = ["DIRTY_BEFORE_FREEZE", "FREEZE_WRONG_COUNT", "ISOLATE_BUSY", "ISOLATE_KEEPS_LRU", "NO_FREEZE", "PUTBACK_NO_LRU", "PageDirty", "PageLRU",
           "isolate_lru_page", "lru_cache_add",
           "putback_lru_page", "reclaim_page", "shrink_page_list"]
