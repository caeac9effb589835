"""Race suites for the lockless pagecache: lookups against reclaim, truncate
and insertion, and the seed's harmless re-insertion.

Emulates the scenarios of the seed patch "mm: speculative page references"
(include/linux/pagemap.h, mm/filemap.c, mm/vmscan.c, mm/truncate.c, 2.6.27).

Every suite boots one file ("file") with at most one cached page (page0 at
index 0) and a second file ("file2") that the reclaimer or truncater fills
right after freeing: the hot allocator hands the page it just freed straight
back, so a stale lockless reference lands on a page that now belongs to
file2[1].  Each suite records what happened in ``sim.data["outcome"]``.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.check.page_state import HalfInitialisedPage
from mmemu.engine._execution import step
from mmemu.mm.filemap import (
    PAGE_SIZE,
    AddressSpace,
    add_to_page_cache,
    find_get_page,
    find_lock_page,
)
from mmemu.lowlevel import fail
from mmemu.mm.page import (
    PG_uptodate,
    Page,
    PageLocked,
    lock_page,
    page_site,
    put_page,
    unlock_page,
)
from mmemu.mm.page_alloc import alloc_page_setup
from mmemu.mm.pagemap import page_cache_alloc
from mmemu.mm.truncate import truncate_inode_pages
from mmemu.mm.vmscan import lru_cache_add, reclaim_page

LOOKUPS = ("find_get_page", "find_lock_page")


async def _cached_file(sim: Any, name: str = "file") -> tuple[Any, AddressSpace, AddressSpace, Page]:
    """Boot; "file" holds page0 at index 0 (count 1: the pagecache's
    reference; on the LRU, uptodate, unlocked); "file2" is empty."""
    kernel = boot_checked(sim, npages=4)
    mapping = AddressSpace(kernel, name, i_size=2 * PAGE_SIZE)
    other = AddressSpace(kernel, "file2", i_size=2 * PAGE_SIZE)
    page = alloc_page_setup()
    await add_to_page_cache(page, mapping, 0)
    page.flags |= PG_uptodate
    await lru_cache_add(page)
    await unlock_page(page)
    await put_page(page)
    sim.data["outcome"] = {}
    return kernel, mapping, other, page


async def _read_in(mapping: AddressSpace, index: int) -> Page | None:
    """A new page for mapping[index], as a read or a fault does: allocate,
    add_to_page_cache (locked), "read" it (SetPageUptodate), unlock, drop
    the allocation reference.  None if the slot was taken."""
    page = await page_cache_alloc(mapping)
    if await add_to_page_cache(page, mapping, index) != 0:
        await put_page(page)
        return None
    await step("readpage: SetPageUptodate", writes=(page.flags_key,))
    page.flags |= PG_uptodate
    await unlock_page(page)
    await put_page(page, label="page_cache_release (the allocation reference)")
    return page


async def _lookup(sim: Any, mapping: AddressSpace, how: str) -> None:
    out = sim.data["outcome"]
    if how == "find_lock_page":
        page = await find_lock_page(mapping, 0)
    else:
        page = await find_get_page(mapping, 0)
    out["lookup"] = None if page is None else f"page{page.pfn}#{page.gen}"
    if page is None:
        return
    if how == "find_lock_page":
        await unlock_page(page)
    await put_page(page, label="page_cache_release (the lookup's reference)")


# ------------------------------------------------------------ lookup vs reclaim


async def _reclaim_then_reuse(sim: Any, page: Page, other: AddressSpace) -> None:
    out = sim.data["outcome"]
    out["reclaimed"] = await reclaim_page(page)
    reused = await _read_in(other, 1)
    out["reused"] = None if reused is None else f"page{reused.pfn}#{reused.gen}"


@mmemu.scenario("pagecache:lookup-vs-reclaim",
                catches=["filemap:no-recheck", "filemap:plain-get", "vmscan:no-freeze"],
                axes={"lookup": LOOKUPS}, strategy="dfs",
                reaches=["vmscan: __remove_mapping froze and freed the page",
                         "vmscan: __remove_mapping: the freeze failed (the page is busy)",
                         "filemap: step 2 failed on a frozen page (the lookup waits)",
                         "step:3. page moved: put_page, goto 1"])
async def lookup_vs_reclaim(sim: Any) -> None:
    """A lockless lookup races with reclaim freeing the page it looks up.

        CPU0 (find_get_page / find_lock_page)   CPU1 (reclaim, then a read)
        rcu_read_lock                            isolate_lru_page: count 2
        1. radix_tree_lookup: page0              trylock_page
        2. page_cache_get_speculative            spin_lock(tree_lock)
           (fails on 0: wait, goto 1)            A. page_freeze_refs(page0, 2)
        3. page0 still in the slot?              B. __remove_from_page_cache
           (no: put_page, goto 1)                spin_unlock; unlock_page
        rcu_read_unlock                          C. free page0
        [find_lock_page: lock_page,              page_cache_alloc: page0 again
         page->mapping == file?]                 add_to_page_cache(file2, 1)
        put_page

    There are 2 critical interleavings that matter:
     - 2 runs before A: A sees count 3 and bails out; the lookup returns
       page0, which stays cached;
     - A runs before 2: 2 sees 0 and retries; after B, 1 finds nothing and
       the lookup returns NULL.

    Between 1 and 2 reclaim may finish and page0 be reused for file2[1]: 2
    then pins the reused page, 3 sees the slot changed and drops it with
    put_page (which must work whatever the page is now).  That's OK.
    """
    _kernel, mapping, other, page = await _cached_file(sim)
    how = sim.params.get("lookup", "find_get_page")
    async with sim.cpus() as cpus:
        cpus.start(_lookup, sim, mapping, how, name=how)
        cpus.start(_reclaim_then_reuse, sim, page, other, name="reclaim")
    out = sim.data["outcome"]
    if out["reclaimed"]:
        sim.check(0 not in mapping.page_tree, "reclaim freed page0 but file[0] still holds it")
    else:
        sim.check(mapping.page_tree.get(0) is page, "reclaim kept page0 but file[0] lost it")


# ----------------------------------------------------------- lookup vs truncate


async def _truncate_then_reuse(sim: Any, mapping: AddressSpace, other: AddressSpace) -> None:
    await truncate_inode_pages(mapping, 0)
    reused = await _read_in(other, 1)
    sim.data["outcome"]["reused"] = None if reused is None else f"page{reused.pfn}#{reused.gen}"


@mmemu.scenario("pagecache:lookup-vs-truncate", catches=["filemap:no-recheck"],
                axes={"lookup": LOOKUPS}, strategy="dfs",
                reaches=lambda p: ["step:3. page moved: put_page, goto 1"] + (
                    ["step:truncated: page_cache_release, repeat"]
                    if p.get("lookup", "find_lock_page") == "find_lock_page"
                    else ["step:page_cache_release (the lookup's reference)"]))
async def lookup_vs_truncate(sim: Any) -> None:
    """A lockless lookup races with truncate_inode_pages dropping the page.

        CPU0 (find_lock_page / find_get_page)   CPU1 (truncate, then a read)
        1. radix_tree_lookup: page0              pagevec_lookup (1-2-3): count 2
        2. page_cache_get_speculative            trylock_page (busy: pass 2 waits)
        3. page0 still in the slot?              page->mapping == file?
        lock_page (waits for truncate)           remove_from_page_cache
        page->mapping == file?                   put_page (the cache's reference)
           (no: truncated: unlock, put, repeat)  unlock_page; pagevec_release
        put_page                                 page_cache_alloc: page0 again,
                                                 add_to_page_cache(file2, 1)

    Truncate holds the page lock and drops the cache's reference with a plain
    put_page, so nothing is frozen: the lookup's reference keeps page0 alive.

    There are 2 critical interleavings that matter:
     - the lookup pins page0 before the removal: find_get_page returns it
       (a page that is being truncated: its caller must cope);
       find_lock_page waits for the page lock, sees page->mapping == NULL and
       looks again, finding nothing;
     - the removal (and the free, and the reuse for file2[1]) runs between
       1 and 2: 2 pins whatever page0 is now, and 3 sees the slot changed.
    """
    _kernel, mapping, other, _page = await _cached_file(sim)
    how = sim.params.get("lookup", "find_lock_page")
    async with sim.cpus() as cpus:
        cpus.start(_lookup, sim, mapping, how, name=how)
        cpus.start(_truncate_then_reuse, sim, mapping, other, name="truncate")
    sim.check(not mapping.page_tree and mapping.nrpages == 0,
              f"file still caches pages after truncate: {mapping.dump()}")


# -------------------------------------------------------------- add vs lookup


async def _reader(sim: Any, mapping: AddressSpace) -> None:
    """A buffered read of file[0] (do_generic_file_read): find_get_page; a page
    that is not uptodate has its read in flight and must be locked: wait on
    the page lock, then it is uptodate."""
    out = sim.data["outcome"]
    page = await find_get_page(mapping, 0)
    out["lookup"] = None if page is None else f"page{page.pfn}"
    if page is None:
        return
    if await wait_uptodate(mapping, 0, page):
        out["waited"] = True
    await put_page(page, label="page_cache_release (the reader's reference)")


async def wait_uptodate(mapping: AddressSpace, index: int, page: Page) -> bool:
    """The reader's half of the read-in protocol, for a page found in
    ``mapping`` without a lock: a page that is not uptodate has its read in
    flight and must be locked (and initialised) -- wait on the page lock,
    then it is uptodate.  True if it had to wait."""
    await step("PageUptodate(page)? (else it must be locked)",
               reads=(page.flags_key, page.mapping_key, (page, "index")))
    if page.flags & PG_uptodate:
        return False
    if not PageLocked(page) or page.mapping is not mapping or page.index != index:
        _half_initialised(mapping, index, page, "not uptodate and not locked")
    await lock_page(page)
    await step("PageUptodate(page)? (after the read)", reads=(page.flags_key,))
    if not page.flags & PG_uptodate:
        _half_initialised(mapping, index, page, "not uptodate once its lock was free")
    await unlock_page(page)
    return True


def _half_initialised(mapping: AddressSpace, index: int, page: Page, what: str) -> None:
    fail(HalfInitialisedPage(
        f"the reader of {mapping.name}[{index}] at {page_site()} found page{page.pfn} {what} "
        f"(page->mapping={getattr(page.mapping, 'name', 'NULL')}, index={page.index}, "
        f"PG_locked {'set' if PageLocked(page) else 'clear'}): it would return data that "
        f"was never read in", details=page.dump()))


async def _adder(sim: Any, mapping: AddressSpace) -> None:
    page = await _read_in(mapping, 0)
    sim.data["outcome"]["added"] = None if page is None else f"page{page.pfn}"


@mmemu.scenario("pagecache:add-vs-lookup", catches=["filemap:insert-before-lock"],
                strategy="dfs",
                reaches=["step:PageUptodate(page)? (after the read)"])
async def add_vs_lookup(sim: Any) -> None:
    """A lockless reader races with add_to_page_cache of a new page.

        CPU0 (read in file[0])                  CPU1 (buffered read of file[0])
        page_cache_alloc                        1. radix_tree_lookup
        SetPageLocked                           2. page_cache_get_speculative
        page_cache_get                          3. still in the slot?
        page->mapping, page->index = file, 0    PageUptodate? else PageLocked?
        spin_lock(tree_lock)                      lock_page (waits for the read)
        radix_tree_insert                         PageUptodate?
        spin_unlock(tree_lock)                  put_page
        readpage: SetPageUptodate
        unlock_page

    Lookups racing with insertion are not a problem: 1 finds the page or it
    does not.  There is 1 critical interleaving that matters:
     - 1 runs right after the insert, before the read completes: the page
       must already be locked (and its mapping and index set), so the reader
       waits on the page lock instead of returning data never read in.  That
       is why add_to_page_cache sets PG_locked *before* the insert.
    """
    kernel = boot_checked(sim, npages=4)
    mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
    sim.data["outcome"] = {}
    async with sim.cpus() as cpus:
        cpus.start(_adder, sim, mapping, name="add")
        cpus.start(_reader, sim, mapping, name="read")
    page = mapping.page_tree.get(0)
    sim.check(page is not None and page.flags & PG_uptodate and not PageLocked(page),
              "file[0] is not an uptodate, unlocked page after the read-in: "
              + (page.dump() if page is not None else "empty"))


# ------------------------------------------------------------- the harmless ABA


async def _reclaim_then_reread(sim: Any, page: Page, mapping: AddressSpace) -> None:
    out = sim.data["outcome"]
    out["reclaimed"] = await reclaim_page(page)
    if out["reclaimed"]:
        again = await _read_in(mapping, 0)
        out["reinserted"] = None if again is None else f"page{again.pfn}#{again.gen}"


@mmemu.scenario("pagecache:reinsert-aba", strategy="dfs",
                reaches=["filemap: between 1 and 2 the page was freed and re-inserted in the "
                         "same slot (the harmless ABA)",
                         "vmscan: __remove_mapping froze and freed the page"])
async def reinsert_aba(sim: Any) -> None:
    """The same page leaves file[0] and comes back to file[0] between 1 and 2.

        CPU0 (find_get_page)                    CPU1 (reclaim, then re-read)
        1. radix_tree_lookup: page0
                                                A. freeze, B. remove, C. free
                                                page_cache_alloc: page0 again
                                                add_to_page_cache(file, 0)
        2. page_cache_get_speculative: ok
        3. page0 still in the slot: yes
        returns page0

    It is possible that between 1 and 2 the page is removed and the exact same
    page inserted into the same position.  That's OK: a find_get_page using
    tree_lock could equally have run before or after the re-insertion,
    depending on the order the lock was granted.  The lookup returns the
    page that is file[0] at 3, which is what it was asked for.  This suite
    must pass.
    """
    _kernel, mapping, _other, page = await _cached_file(sim)
    async with sim.cpus() as cpus:
        cpus.start(_lookup, sim, mapping, "find_get_page", name="find_get_page")
        cpus.start(_reclaim_then_reread, sim, page, mapping, name="reclaim")
    cached = mapping.page_tree.get(0)
    sim.check(cached is page, "file[0] should hold page0 (the same page, reused by the hot "
                              "allocator) after reclaim and re-read: " + mapping.dump())
