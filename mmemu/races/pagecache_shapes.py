"""Race suites for the lockless pagecache, second series: two inserters of
one index, reclaim that changes its mind, reclaim against truncate, and a
lockless lookup against migration.

Emulates the scenarios of the seed patch "mm: speculative page references"
that the first series (mmemu.races.pagecache) leaves out: mm/filemap.c
(add_to_page_cache_locked's -EEXIST, page_cache_read), mm/vmscan.c
(__remove_mapping's freeze, dirty test and page_unfreeze_refs),
mm/truncate.c (truncate_inode_pages) and mm/migrate.c
(migrate_page_move_mapping, move_to_new_page) (2.6.27).

Every suite boots one file ("file") and, where a freed page could be handed
out again, a second one ("file2") that the remover fills right after: the
hot allocator gives the page it freed last straight back, so a stale
reference lands on a page that now belongs to file2[1].  Besides the
checkers every suite runs (mmemu.check: pages freed while cached or
referenced, lookups returning the wrong page, references leaked at the end),
each suite checks its own outcome at the end and records it in
``sim.data["outcome"]``.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.check.page_state import PageLeak
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import reach, step
from mmemu.mm.filemap import PAGE_SIZE, AddressSpace, find_get_page
from mmemu.mm.page import PG_dirty, PG_uptodate, Page, PageLocked, put_page
from mmemu.mm.memory import FAULT_PTE_CHANGED, fault_in, pte_get
from mmemu.mm.mmap import VM_READ, VM_SHARED, VM_WRITE
from mmemu.mm.truncate import BEYOND_RANGE, truncate_inode_pages, vmtruncate_range
from mmemu.mm.vmscan import isolate_lru_page, putback_lru_page, reclaim_page
from mmemu.races.mm import file_with_pages, mm_with_file_vma
from mmemu.races.pagecache import _cached_file, _read_in, _reclaim_then_reuse, wait_uptodate


class LostWrite(InvariantViolation):
    """Data written to a page never reached the file: the dirty page left
    the pagecache without being written back."""


def _name(page: Page | None) -> str | None:
    return None if page is None else f"page{page.pfn}#{page.gen}"


def _pages_in_use(kernel: Any) -> list[Page]:
    return [p for p in kernel.page_alloc.pages if not p.free]


# ------------------------------------------------------------ add vs add


async def _generic_read(sim: Any, mapping: AddressSpace, who: str) -> None:
    """do_generic_file_read of file[0] (2.6.27), one page:

        R1. find_get_page: cached?  yes: R3
        R2. page_cache_read: page_cache_alloc, add_to_page_cache (locked),
            readpage (SetPageUptodate, unlock_page), page_cache_release;
            -EEXIST: "losing race to add is OK" -- drop our page; goto R1
        R3. PageUptodate?  no: the read is in flight, wait on the page lock
        R4. copy to user; page_cache_release
    """
    out = sim.data["outcome"]
    while True:
        page = await find_get_page(mapping, 0)
        if page is not None:
            break
        if await _read_in(mapping, 0) is None:
            out[f"{who}: -EEXIST"] = True
            reach(EEXIST)
    if await wait_uptodate(mapping, 0, page):
        reach(WAITED_FOR_READ)
    out[who] = _name(page)
    await put_page(page, label="R4. page_cache_release (the reader's reference)")


EEXIST = "add_to_page_cache: -EEXIST (lost the race to add)"
WAITED_FOR_READ = "a reader waited on the page lock for the read in flight"


@mmemu.scenario("pagecache:add-vs-add", catches=["filemap:eexist-no-undo"],
                reaches=[EEXIST, WAITED_FOR_READ])
async def add_vs_add(sim: Any) -> None:
    """Two readers of an uncached index both read it in: one add_to_page_cache
    wins, the other gets -EEXIST.

        CPU0 (read0: file[0])                 CPU1 (read1: file[0])
        1. radix_tree_lookup: empty           1. radix_tree_lookup: empty
        page_cache_alloc: pageA               page_cache_alloc: pageB
        SetPageLocked; page_cache_get         SetPageLocked; page_cache_get
        page->mapping = mapping; ...          page->mapping = mapping; ...
        radix_tree_insert: ok                 radix_tree_insert: -EEXIST
        readpage: SetPageUptodate             -EEXIST: page_cache_release
        unlock_page                           ClearPageLocked; put_page: pageB freed
        1-2-3: pageA                          1-2-3: pageA
        PageUptodate(page)?                   PageUptodate(page)?  no: lock_page
        R4. page_cache_release                R4. page_cache_release

    (do_generic_file_read: a miss goes to page_cache_read, "losing race to
    add is OK", and looks again.)

    There are 2 critical interleavings that matter:
     - both radix_tree_lookups run before either radix_tree_insert: the
       second insert finds the slot taken; add_to_page_cache_locked must
       undo what it did before the insert (page->mapping = NULL, the
       pagecache's reference) and add_to_page_cache clear PG_locked, so the
       loser's put_page frees its page.  Without the undo (mutant
       ``filemap:eexist-no-undo``) that page leaks, claiming to be file[0].
     - the loser looks again while the winner's read is in flight (between
       radix_tree_insert and unlock_page): it finds pageA locked and not
       uptodate and waits on the page lock.

    Harmless: one reader's lookup after the other's insert (it finds pageA
    and never allocates).

    At the end: file[0] is one uptodate, unlocked page with only the
    pagecache's reference, both readers returned it, and every other page
    is free.
    """
    kernel = boot_checked(sim, npages=4)
    mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
    sim.data["outcome"] = {}
    async with sim.cpus() as cpus:
        cpus.start(_generic_read, sim, mapping, "read0", name="read0")
        cpus.start(_generic_read, sim, mapping, "read1", name="read1")
    out = sim.data["outcome"]
    cached = mapping.page_tree.get(0)
    sim.check(cached is not None and mapping.nrpages == 1,
              f"file should cache exactly one page at index 0: {mapping.dump()}")
    assert cached is not None
    sim.check(bool(cached.flags & PG_uptodate) and not PageLocked(cached)
              and cached._count.counter == 1,
              f"file[0] should be uptodate, unlocked, with only the pagecache's reference",
              details=cached.dump())
    for who in ("read0", "read1"):
        sim.check(out.get(who) == _name(cached),
                  f"{who} returned {out.get(who)}, not file[0] ({_name(cached)})")
    leaked = [p for p in _pages_in_use(kernel) if p is not cached]
    if leaked:
        raise PageLeak(
            f"{', '.join(f'page{p.pfn}' for p in leaked)} still in use after both reads "
            f"(count {', '.join(str(p._count.counter) for p in leaked)}): the page that lost "
            f"the race to add was never freed",
            details="\n".join(p.dump() for p in leaked))


# ---------------------------------------------- reclaim that changes its mind


async def _write_through_pin(sim: Any, page: Page) -> None:
    """The holder of a get_user_pages reference (its user mapping already
    gone) writes to the page, dirties it and drops the pin."""
    await step("W1. write_to(page); SetPageDirty", writes=(page.flags_key,))
    page.flags |= PG_dirty
    sim.data["outcome"]["written"] = True
    await put_page(page, label="W2. put_page (the get_user_pages pin)")


async def _lookup(sim: Any, mapping: AddressSpace) -> None:
    page = await find_get_page(mapping, 0)
    sim.data["outcome"]["lookup"] = _name(page)
    if page is not None:
        await put_page(page, label="page_cache_release (the lookup's reference)")


async def _reclaim(sim: Any, page: Page) -> None:
    sim.data["outcome"]["reclaimed"] = await reclaim_page(page)


@mmemu.scenario("pagecache:reclaim-unfreeze",
                catches=["pagemap:unfreeze-no-wake", "vmscan:dirty-before-freeze",
                         "vmscan:freeze-wrong-count"],
                reaches=["vmscan: __remove_mapping unfroze a dirty page (changed its mind)",
                         "filemap: step 2 failed on a frozen page (the lookup waits)",
                         "vmscan: __remove_mapping: the freeze failed (the page is busy)"])
async def reclaim_unfreeze(sim: Any) -> None:
    """Reclaim freezes a page, finds it dirtied meanwhile and changes its mind,
    while a lockless lookup waits on the frozen count.

        CPU0 (reclaim)                    CPU1 (pin)              CPU2 (find_get_page)
        isolate_lru_page; trylock_page    W1. write_to(page);     1. radix_tree_lookup
        page_mapped(page)? PageDirty?         SetPageDirty        2. page_cache_get_
        spin_lock(tree_lock)              W2. put_page (the           speculative
        A. page_freeze_refs                   get_user_pages pin)     (fails on 0: wait)
        PageDirty? (after the freeze)                             3. recheck: page
        page_unfreeze_refs                                            still in the slot?
        cannot_free: spin_unlock; unlock; putback                 put_page

    The pin was taken before (get_user_pages, then the user mapping went
    away), so A can succeed only after W2.

    There are 3 critical interleavings that matter:
     - W1-W2 between "page_mapped(page)? PageDirty(page)?" and A: A sees
       count 2 and freezes; "PageDirty? (after the freeze)" must see W1's
       dirty bit (the cmpxchg of A is the read barrier) and unfreeze.
       Testing PageDirty before the freeze (mutant
       ``vmscan:dirty-before-freeze``) frees the page with the data W1
       wrote: DataLoss (the page-state checker, as the page leaves the
       pagecache dirty; the end check would say LostWrite).
     - 2 between A and page_unfreeze_refs: it fails on the frozen count and
       waits for the slot to change or the count to come back;
       page_unfreeze_refs is the only event that ends that wait here.
       Without its wake-up (mutant ``pagemap:unfreeze-no-wake``) the lookup
       waits forever.
     - W2 after A (or 2 before A): A sees the extra reference and bails
       out; reclaim keeps the page.  Freezing at the wrong count (mutant
       ``vmscan:freeze-wrong-count``: 3) succeeds here instead, while the
       pin holder still writes to the page: reclaim frees it under the pin.

    Harmless: W1 before "page_mapped(page)? PageDirty(page)?" (the page is
    kept dirty without a freeze); a lookup after page_unfreeze_refs (it
    takes its reference normally).

    At the end: the page is still file[0], dirty (its data is not lost),
    with the pagecache's reference only, and the lookup returned it.
    """
    _kernel, mapping, _other, page = await _cached_file(sim)
    page._count.counter += 1  # the get_user_pages pin, taken before the user mapping went away
    async with sim.cpus() as cpus:
        cpus.start(_reclaim, sim, page, name="reclaim")
        cpus.start(_write_through_pin, sim, page, name="pin")
        cpus.start(_lookup, sim, mapping, name="find_get_page")
    out = sim.data["outcome"]
    if page.free or mapping.page_tree.get(0) is not page or not page.flags & PG_dirty:
        raise LostWrite(
            f"the data written through the pin to file[0] (page{page.pfn}) is lost: reclaim "
            f"{'freed the page' if page.free else 'dropped it from the pagecache'} after it "
            f"was dirtied, without writing it back", details=page.dump())
    sim.check(page._count.counter == 1, "file[0] should hold only the pagecache's reference",
              details=page.dump())
    sim.check(out.get("lookup") == _name(page),
              f"the lookup returned {out.get('lookup')}, not file[0] ({_name(page)})")


# ------------------------------------------------------- reclaim vs truncate


async def _truncate(sim: Any, mapping: AddressSpace) -> None:
    await truncate_inode_pages(mapping, 0)
    sim.data["outcome"]["truncated"] = True


@mmemu.scenario("pagecache:reclaim-vs-truncate",
                catches=["vmscan:no-freeze", "vmscan:freeze-wrong-count"],
                reaches=["vmscan: __remove_mapping froze and freed the page",
                         "vmscan: __remove_mapping: the freeze failed (the page is busy)",
                         "filemap: step 2 failed on a frozen page (the lookup waits)"])
async def reclaim_vs_truncate(sim: Any) -> None:
    """Reclaim and truncate both remove the same pagecache page.

        CPU0 (reclaim, then read file2[1])     CPU1 (truncate_inode_pages)
        isolate_lru_page (+1)                  1. radix_tree_gang_lookup_slot
        trylock_page                           1-2-3. a speculative reference (+1)
        page_mapped(page)? PageDirty(page)?    trylock_page (busy: pass 2's
        spin_lock(tree_lock)                       lock_page waits)
        A. page_freeze_refs                    truncate_complete_page:
        B. __remove_from_page_cache                page->mapping == mapping?
        unlock_page                                (NULL: reclaim took it)
        C. free the page                       remove_from_page_cache
        page_cache_alloc: the same page        page_cache_release (the cache's)
        add_to_page_cache(file2, 1)            unlock_page
                                               pagevec_release: put_page (-1)

    Both removers need the page lock, so only one of them takes the page
    out of the cache.  There are 2 critical interleavings that matter:
     - truncate's step 2 before A: A sees count 3 and bails out; reclaim
       puts the page back, truncate locks it and removes it, and the last
       of the three puts frees it.  Checking the count without freezing
       (mutant ``vmscan:no-freeze``), or freezing at 3
       (``vmscan:freeze-wrong-count``), frees the page while truncate's
       pagevec holds it: pagevec_release then puts a page that is free or
       already file2[1].
     - A before step 2: truncate's lookup fails on the frozen count, waits
       for B, and finds nothing to truncate.

    Harmless: truncate removes the page first (reclaim's trylock fails, or
    it finds page->mapping NULL, and puts the page back: its isolation
    reference is then the last one); the page freed by reclaim is reused
    for file2 before truncate looks (truncate finds nothing in file).

    At the end: file is empty, and the page is free or file2[1].
    """
    _kernel, mapping, other, page = await _cached_file(sim)
    async with sim.cpus() as cpus:
        cpus.start(_reclaim_then_reuse, sim, page, other, name="reclaim")
        cpus.start(_truncate, sim, mapping, name="truncate")
    out = sim.data["outcome"]
    sim.check(not mapping.page_tree and mapping.nrpages == 0,
              f"file still caches pages after truncate: {mapping.dump()}")


# ---------------------------------------------------- punch hole vs fault


async def _punch(sim: Any, mapping: AddressSpace) -> None:
    """madvise(MADV_REMOVE) of the file's first page, after madvise_remove
    dropped mmap_sem: vmtruncate_range(inode, 0, PAGE_SIZE - 1)."""
    assert await vmtruncate_range(mapping, 0, PAGE_SIZE - 1) == 0


async def _fault_beyond(sim: Any, mm: Any, addr: int) -> None:
    await fault_in(mm, addr, False)


@mmemu.scenario("pagecache:punch-hole-vs-fault", reaches=[BEYOND_RANGE])
async def punch_hole_vs_fault(sim: Any) -> None:
    """A hole is punched in the first page of a two-page file (tmpfs's
    MADV_REMOVE) while a read fault brings in the second.

    Setup: a file of two pages, the first cached and mapped (MAP_SHARED,
    read) by one mm, the second not cached.

    CPU0 (vmtruncate_range(0, PAGE_SIZE-1))      CPU1 (read fault at page 1)
    1. unmap_mapping_range(hole): zap page 0's   A. filemap_fault: find_lock_page(1):
       pte (i_mmap_lock)                            not cached
    2. truncate_inode_pages_range(0, end=0):     B. page_cache_alloc;
       pass 1: pagevec_lookup(from 0) -- every      add_to_page_cache(1) (locked);
       cached page from index 0 on, page 1 too      readpage; unlock_page
       if B ran; index > end?  stop; else        C. find_lock_page(1); map it
       trylock_page, truncate_complete_page         (__do_fault, 1-5 under the
       pass 2: the same with lock_page, until       page lock)
       a lookup from 0 finds nothing at or
       below end
    3. unmap_mapping_range(hole) again (COW copies)

    There are 2 critical interleavings that matter:
    - B before a lookup of 2: the lookup returns page 1, beyond the hole;
      each pass must test the index against ``end`` and stop there (pass 2:
      the first page found is already beyond it -- without that test pass 2
      looks again from 0 forever).  Without the tests (source mutants of
      truncate_inode_pages_range in benchmarks/mutation.py) page 1 leaves the
      cache -- and its pte, by the page_mapped() recheck -- though it is
      outside the hole;
    - B's page locked (between add_to_page_cache and the read's unlock, or
      C's lock from find_lock_page to the pte) when pass 1 meets it: pass 1
      skips locked pages, so only the index test keeps pass 2 from waiting
      for it and removing it.
    Harmless: B after every lookup (nothing beyond the hole is cached yet).

    At the end: page 0 is neither cached nor mapped; page 1 is cached and
    mapped.  i_size is unchanged (a hole, not a truncation).
    """
    kernel = boot_checked(sim, npages=6)
    mapping, pages = await file_with_pages(kernel, "file", 2, cached=1)
    mm, vma = await mm_with_file_vma(kernel, mapping, 2, flags=VM_READ | VM_SHARED)
    await fault_in(mm, vma.vm_start, False)
    async with sim.cpus() as cpus:
        cpus.start(_punch, sim, mapping, name="punch")
        cpus.start(_fault_beyond, sim, mm, vma.vm_start + PAGE_SIZE, name="fault")
    hole, beyond = pte_get(mm, vma.vm_start), pte_get(mm, vma.vm_start + PAGE_SIZE)
    sim.check(0 not in mapping.page_tree and hole is None,
              f"after the hole punch file[0] is {mapping.page_tree.get(0)!r} and its pte "
              f"{hole!r}: the hole's page survived")
    cached = mapping.page_tree.get(1)
    sim.check(cached is not None and beyond is not None and beyond.page is cached
              and mapping.i_size == 2 * PAGE_SIZE,
              f"after the hole punch file[1] is {cached!r} and its pte {beyond!r} (i_size "
              f"{mapping.i_size}): the page beyond the hole was dropped",
              details=mapping.dump())


# ------------------------------------------------ two write faults of a page


@mmemu.scenario("pagecache:write-fault-vs-write-fault", axes={"map": ["private", "shared"]},
                reaches=[FAULT_PTE_CHANGED])
async def write_fault_vs_write_fault(sim: Any) -> None:
    """Two threads of one process write to the same not-yet-mapped page of
    a file mapping at once (``map``: MAP_PRIVATE or MAP_SHARED).

    Setup: a one-page file, cached; one mm maps it (read/write), no pte yet.

    CPU0 and CPU1 (handle_pte_fault -> __do_fault, mmap_sem read):
    1. filemap_fault: find_lock_page (the page lock, a reference)
    2. MAP_PRIVATE: anon_vma_prepare; alloc_page_vma; copy the file page
    3. PTL; pte_same(*pte, orig_pte) (still none)?
    4. yes: MAP_PRIVATE: page_add_new_anon_rmap of the copy; MAP_SHARED:
       page_add_file_rmap; set_pte_at; anon_rss/file_rss++
       no (the other thread mapped it): MAP_PRIVATE: page_cache_release of
       the copy; MAP_SHARED: nothing to undo
    5. PTL unlock; unlock_page; MAP_PRIVATE: page_cache_release of the file
       page (the copy is mapped); MAP_SHARED and mapped: set_page_dirty

    The page lock from 1 to 5 serialises the two, so the loser always
    reaches 3 after the winner's 4.  There is 1 critical interleaving that
    matters:
    - the loser's 3 finds the winner's pte: it must drop what it prepared
      -- the private copy (a source mutant of benchmarks/mutation.py that
      skips that put leaks it: PageLeak) -- and its reference to the file
      page.
    Harmless: either thread first (they are symmetric); which one loses
    changes nothing else.

    At the end: one pte maps the copy (private: anonymous, count 1) or the
    file page (shared: count 2, the cache's and the pte's).
    """
    map = sim.params.get("map", "private")
    kernel = boot_checked(sim, npages=6)
    mapping, pages = await file_with_pages(kernel, "file", 1)
    flags = VM_READ | VM_WRITE | (VM_SHARED if map == "shared" else 0)
    mm, vma = await mm_with_file_vma(kernel, mapping, 1, flags=flags)
    async with sim.cpus() as cpus:
        cpus.start(fault_in, mm, vma.vm_start, True, name="thread0")
        cpus.start(fault_in, mm, vma.vm_start, True, name="thread1")
    pte = pte_get(mm, vma.vm_start)
    sim.check(pte is not None and pte.present and pte.write and pte.page is not None,
              f"after both write faults the pte is {pte!r}")
    assert pte is not None and pte.page is not None
    want = (pte.page is not pages[0]) if map == "private" else (pte.page is pages[0])
    sim.check(want and pte.page._mapcount.counter == 0,
              f"the {map} write fault mapped page{pte.page.pfn} with mapcount "
              f"{pte.page._mapcount.counter + 1}", details=pte.page.dump())


# ---------------------------------------------------- lookup vs migration


MIGRATED = "migrate: the page was migrated"
MIGRATE_EAGAIN = "migrate: -EAGAIN (a reference blocked the freeze)"


async def _migrate_then_reuse(sim: Any, page: Page, other: AddressSpace) -> None:
    """Isolate the page and migrate it to a new page; a failed migration puts
    it back.  Then read file2[1] in: it gets the page freed last."""
    from mmemu.mm.migrate import migrate_pages
    from mmemu.mm.page_alloc import alloc_page
    out = sim.data["outcome"]
    if await isolate_lru_page(page) != 0:
        return
    newpage = await alloc_page(label="migrate: alloc_page(newpage)")
    out["newpage"] = _name(newpage)
    rc = await migrate_pages(page, newpage)
    out["migrated"] = rc == 0
    reach(MIGRATE_EAGAIN if rc else MIGRATED)
    if rc:
        await putback_lru_page(page)
    reused = await _read_in(other, 1)
    out["reused"] = _name(reused)


async def _read(sim: Any, mapping: AddressSpace) -> None:
    page = await find_get_page(mapping, 0)
    sim.data["outcome"]["lookup"] = _name(page)
    if page is None:
        return
    if await wait_uptodate(mapping, 0, page):
        reach(WAITED_FOR_READ)
    await put_page(page, label="page_cache_release (the reader's reference)")


@mmemu.scenario("pagecache:lookup-vs-migration",
                catches=["filemap:no-recheck", "filemap:plain-get", "migrate:newpage-unlocked"],
                reaches=[MIGRATED, MIGRATE_EAGAIN, WAITED_FOR_READ,
                         "filemap: step 2 failed on a frozen page (the lookup waits)"])
async def lookup_vs_migration(sim: Any) -> None:
    """A lockless read of file[0] races with the migration of its page.

        CPU0 (read of file[0])             CPU1 (migrate_pages(page0, newpage),
                                            then read file2[1])
        1. radix_tree_lookup               1. lock_page(page)
        2. page_cache_get_speculative      3. move_to_new_page: newpage->mapping,
           (fails on 0: wait for the          ->index (newpage locked)
           slot to change)                 A. page_freeze_refs(page, 2)
        3. recheck: page still in the      B. radix_tree_replace_slot(newpage)
           slot?  (no: put_page, goto 1)   C. page_unfreeze_refs(page, 2)
        PageUptodate(page)?  no: it must   3. migrate_page_copy (uptodate)
           be locked: lock_page, then      unlock_page(newpage)
           it is uptodate                  5. put_page(page) (migrated: freed)
        put_page                           page_cache_alloc: page0 again for
                                           file2[1]

    There are 2 critical interleavings that matter:
     - 2 before A: A sees the reader's reference and fails; migration
       returns -EAGAIN, frees newpage and puts page0 back.
     - A before 2: 2 fails on the frozen count and waits; B's slot change
       wakes it and 1 finds newpage -- locked and not yet uptodate, because
       move_to_new_page locked it before B: the reader waits on its lock
       until migrate_page_copy is done.  A newpage put in the slot unlocked
       (mutant ``migrate:newpage-unlocked``) is read before its data
       arrives; a plain get_page at 2 (``filemap:plain-get``) increments
       the frozen count.

    Harmless: between 1 and 2 the migration finishes and page0 is reused
    for file2[1]: 2 pins the reused page and 3 sees the slot changed (without
    3, mutant ``filemap:no-recheck``, the lookup returns the reused page).

    At the end: file[0] is page0 or newpage, uptodate and unlocked; a
    migrated page0 is free or file2[1].
    """
    _kernel, mapping, other, page = await _cached_file(sim)
    async with sim.cpus() as cpus:
        cpus.start(_read, sim, mapping, name="read")
        cpus.start(_migrate_then_reuse, sim, page, other, name="migrate")
    out = sim.data["outcome"]
    cached = mapping.page_tree.get(0)
    if out.get("migrated"):
        sim.check(cached is not None and _name(cached) == out["newpage"],
                  f"after the migration file[0] should be the new page: {mapping.dump()}")
    elif "migrated" in out:
        sim.check(cached is page, f"after a failed migration file[0] should be page0: "
                                  f"{mapping.dump()}")
    sim.check(cached is not None and bool(cached.flags & PG_uptodate)
              and not PageLocked(cached),
              "file[0] should be an uptodate, unlocked page after the migration",
              details=cached.dump() if cached is not None else mapping.dump())


__all__ = ["LostWrite", "add_vs_add", "lookup_vs_migration",
           "punch_hole_vs_fault", "reclaim_unfreeze", "write_fault_vs_write_fault",
           "reclaim_vs_truncate"]
