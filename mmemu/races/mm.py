"""Race suites for process address spaces: faults against truncate, reclaim
against get_user_pages, faults against migration.

Emulates: mm/memory.c, mm/rmap.c, mm/migrate.c, mm/truncate.c, mm/vmscan.c (2.6.27)

Each suite builds one small file (one page in the pagecache), one mm with one
shared file vma, and two CPUs.  Besides the checks the kernel model makes on
its own (page-table checks of mmemu.mm.memory, the page checks of page.py,
lockdep), every suite ends with ``check_page_refs``: each page still in use
holds exactly the references the model can account for (the pagecache's,
one per pte, and the ones the scenario says it still holds), and its
``_mapcount`` matches the ptes that map it.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.kernel.locking import down_read, down_write, up_read, up_write
from mmemu.mm.filemap import AddressSpace, add_to_page_cache
from mmemu.check import boot_checked
from mmemu.mm.init import Kernel
from mmemu.mm.memory import fault_in, get_user_pages, pte_get, ptes_mapping
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, MmStruct, VmAreaStruct, do_mmap, mm_alloc
from mmemu.mm.page import PG_uptodate, Page, put_page, unlock_page
from mmemu.mm.page_alloc import alloc_page_setup

# ------------------------------------------------------------------ setup


async def written_anon_page(sim: Any, *, npages: int = 6,
                            api: str | None = None) -> tuple[Kernel, MmStruct, int, Page]:
    """Setup: a checked kernel (``api``: the notifier generation, default
    the scenario's), one mm with a one-page anonymous vma, and its page
    written once (do_anonymous_page: the pte is present, writable, dirty)."""
    kernel = boot_checked(sim, npages=npages) if api is None else \
        boot_checked(sim, npages=npages, api=api)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    await fault_in(mm, vma.vm_start, write=True)
    pte = pte_get(mm, vma.vm_start)
    assert pte is not None and pte.page is not None
    return kernel, mm, vma.vm_start, pte.page


async def file_with_pages(kernel: Kernel, name: str, npages: int, *,
                          cached: int | None = None) -> tuple[AddressSpace, list[Page]]:
    """Setup helper: a file of ``npages`` pages, the first ``cached`` of them
    (default all) in the pagecache, uptodate and unlocked, each holding only
    the pagecache's reference."""
    mapping = AddressSpace(kernel, name, i_size=npages * PAGE_SIZE)
    pages = []
    for index in range(npages if cached is None else cached):
        page = alloc_page_setup()
        err = await add_to_page_cache(page, mapping, index)
        assert err == 0, err
        page.flags |= PG_uptodate
        await unlock_page(page)
        await put_page(page)
        pages.append(page)
    return mapping, pages


async def mm_with_file_vma(kernel: Kernel, mapping: AddressSpace, npages: int, *,
                           flags: int = VM_READ | VM_WRITE | VM_SHARED) -> tuple[MmStruct, VmAreaStruct]:
    """Setup helper: a new mm mapping ``npages`` pages of ``mapping`` from offset 0."""
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, npages * PAGE_SIZE, flags, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    return mm, vma


async def mapped_file_page(sim: Any) -> tuple[Kernel, AddressSpace, Page, MmStruct, VmAreaStruct]:
    """Setup helper: a one-page file, its page in the pagecache and on the
    LRU, mapped (read, MAP_SHARED) by a new mm.  Returns (kernel, mapping,
    page, mm, vma)."""
    from mmemu.mm.vmscan import lru_cache_add
    kernel = boot_checked(sim, npages=8)
    mapping, pages = await file_with_pages(kernel, "file", 1)
    mm, vma = await mm_with_file_vma(kernel, mapping, 1, flags=VM_READ | VM_SHARED)
    await fault_in(mm, vma.vm_start, write=False)
    await lru_cache_add(pages[0])
    return kernel, mapping, pages[0], mm, vma


def check_page_refs(sim: Any, kernel: Kernel, held: dict[Page, int] | None = None) -> None:
    """Every page in use: count == pagecache ref + present ptes + ``held``;
    mapcount == present ptes."""
    held = held or {}
    for page in list(kernel.page_alloc.pages):
        if page.free:
            continue
        ptes = [(mm, a) for mm, a in ptes_mapping(kernel, page)
                if (p := pte_get(mm, a)) is not None and p.present]
        mapping = page.mapping
        in_cache = int(isinstance(mapping, AddressSpace)
                       and mapping.page_tree.get(page.index) is page)
        expected = in_cache + len(ptes) + held.get(page, 0)
        sim.check(page._count.counter == expected,
                  f"page{page.pfn} has count {page._count.counter}, but the model accounts "
                  f"for {expected} (pagecache {in_cache}, ptes {len(ptes)}, "
                  f"held {held.get(page, 0)}): a reference leaked or was lost",
                  details=page.dump())
        sim.check(page._mapcount.counter + 1 == len(ptes),
                  f"page{page.pfn} has mapcount {page._mapcount.counter + 1} but "
                  f"{len(ptes)} ptes map it", details=page.dump())


# ------------------------------------------------------ fault vs truncate


@mmemu.scenario("mm:fault-vs-truncate", catches=["memory:fault-unlocked"],
                max_preemptions=2,
                bound_reason="the fault and truncate can retry against each other "
                             "(truncate_inode_pages' loop removes the page the fault has just "
                             "read in, find_lock_page sees it truncated and the fault reads it "
                             "again); with the model's fairness assumption (FAIR_FAULT_ROUNDS, "
                             "mm/memory.py) the unbounded space ends, but only after 17,339 "
                             "executions (main d8cede2+), too many for the main job",
                reaches=["truncate: a fault mapped the page after unmap_mapping_range; "
                         "unmapped again under the page lock",
                         "step:beyond EOF: unlock_page",
                         "step:truncated: page_cache_release, repeat"])
async def fault_vs_truncate(sim: Any) -> None:
    """A file fault against vmtruncate of the page it maps.

    CPU0 (read fault, __do_fault)           CPU1 (vmtruncate(file, 0))
    1. find_lock_page: lookup, lock_page,   a. i_size_write(0)
       page->mapping == mapping?            b. unmap_mapping_range: zap every
    2. i_size recheck under the page lock      pte of the file (i_mmap_lock, PTL,
    3. PTL: pte still none?                    range_start .. free .. range_end)
    4. page_add_file_rmap; set_pte_at       c. truncate_inode_pages: lock_page;
    5. unlock the PTL; unlock_page             page_mapped? zap it again;
                                               remove_from_page_cache
                                               (page->mapping = NULL); unlock;
                                               drop the cache's reference

    There are 2 critical interleavings that matter:
     - 1 before c's lock_page: c waits until 5, finds the page mapped and
       zaps the new pte before removing the page from the cache;
     - c before 1: 1 finds no page (or locks it, sees page->mapping NULL and
       looks again, finding none), and 2 -- or the first i_size check --
       sees i_size 0: SIGBUS.

    b running before 4 zaps nothing: that's OK, c's page_mapped recheck under
    the page lock covers it.  A fault between a and b is zapped by b.

    Mutant ``memory:fault-unlocked`` looks the page up without locking it
    and maps it without the recheck: a, b and c all fit between 1 and 4, and
    4 maps a page whose page->mapping is NULL (MappedTruncatedPage).  One
    preemption finds it.

    A fault that passed its first i_size check before a, and finds no page
    after c, reads a new page into the cache and then fails the recheck of
    2: the page stays cached beyond EOF, unmapped.  That's OK (2.6.27 does
    the same; the next truncate or reclaim drops it).

    At the end: nothing maps a truncated page, and every page in use is
    accounted for.
    """
    kernel = boot_checked(sim, npages=8)
    mapping, _ = await file_with_pages(kernel, "file", 1)
    mm, vma = await mm_with_file_vma(kernel, mapping, 1)
    out: dict[str, int] = {}

    async def fault() -> None:
        out["fault"] = await fault_in(mm, vma.vm_start, write=False)

    async def truncate() -> None:
        from mmemu.mm.truncate import vmtruncate
        await vmtruncate(mapping, 0)

    async with sim.cpus() as cpus:
        cpus.start(fault, name="fault")
        cpus.start(truncate, name="truncate")
    sim.check(pte_get(mm, vma.vm_start) is None,
              f"a pte still maps the truncated file: {pte_get(mm, vma.vm_start)!r}")
    check_page_refs(sim, kernel)
    # A fault that passed the first i_size check may read a page into the
    # cache after truncate_inode_pages: it stays there, unmapped, beyond EOF
    # (the kernel allows that too).  Anything else in use is a leak.
    used = [p for p in kernel.page_alloc.pages
            if not p.free and mapping.page_tree.get(p.index) is not p]
    sim.check(not used, "pages still in use after truncate: " + ", ".join(f"page{p.pfn}" for p in used),
              details="\n".join(p.dump() for p in used))


# ------------------------------------------------------- reclaim vs gup


@mmemu.scenario("mm:reclaim-vs-gup", catches=["vmscan:no-freeze"],
                reaches=["vmscan: __remove_mapping: the freeze failed (the page is busy)",
                         "vmscan: __remove_mapping froze and freed the page",
                         "filemap: step 2 failed on a frozen page (the lookup waits)"])
async def reclaim_vs_gup(sim: Any) -> None:
    """get_user_pages pins a mapped file page while reclaim tries to free it.

    CPU0 (get_user_pages, read)             CPU1 (reclaim_page)
    1. mmap_sem read; follow_page: PTL,     A. isolate_lru_page (+1 ref)
       pte present? get_page (the pin);     B. trylock_page; try_to_unmap:
       (pte gone: fault the page back in,      i_mmap_lock, PTL, clear the pte,
       then follow_page again)                 invalidate_page, drop the pte's ref
    2. up_read                              C. __remove_mapping: tree_lock,
    3. use the page: still allocated, the      page_freeze_refs(page, 2)
       same allocation as when pinned          (pagecache + isolation refs)
    4. put_page                                busy: putback; else remove, free

    There are 2 critical interleavings that matter:
     - 1 before C: the pin makes the count 3; the freeze fails and reclaim
       keeps the page (putback).  The pin holder uses it safely.
     - C before 1: the page is gone from the cache and freed; follow_page
       finds no pte (B cleared it) and faults: a new page is read into the
       cache (the hot allocator may hand back the very same pfn, as a new
       allocation) and pinned.

    1 between B and C is harmless: B already cleared the pte, so 1 faults the
    page back in through find_lock_page -- which waits for reclaim's page
    lock, then finds page->mapping NULL (freed) or takes a speculative
    reference that makes the freeze fail.

    Mutant ``vmscan:no-freeze`` (reclaim checks the count, then removes and
    frees): the fault of the third case takes its speculative reference
    between the check and the removal; reclaim frees the page under it and
    the fault's put_page underflows the count.  One preemption finds it.

    At the end: the pinned page was never freed while pinned, and every page
    in use is accounted for.
    """
    from mmemu.mm.rmap import page_referenced
    from mmemu.mm.vmscan import reclaim_page
    kernel, mapping, page, mm, vma = await mapped_file_page(sim)
    await page_referenced(page, False)  # an old pte: try_to_unmap will not refuse it
    out: dict[str, Any] = {}

    async def gup() -> None:
        await down_read(mm.mmap_sem, label="1. down_read(mmap_sem)")
        pinned = await get_user_pages(mm, vma.vm_start, False)
        await up_read(mm.mmap_sem, label="2. up_read(mmap_sem)")
        if pinned is None:
            out["gup"] = None
            return
        gen = pinned.gen
        await mmemu.step("3. use the pinned page", reads=(pinned.flags_key, pinned._count))
        sim.check(not pinned.free and pinned.gen == gen,
                  f"the page pinned by get_user_pages (page{pinned.pfn}) was freed "
                  f"while pinned", details=pinned.dump())
        out["gup"] = pinned
        await put_page(pinned, label="4. put_page (unpin)")

    async def reclaim() -> None:
        out["reclaimed"] = await reclaim_page(page)

    async with sim.cpus() as cpus:
        cpus.start(gup, name="gup")
        cpus.start(reclaim, name="reclaim")
    sim.check(out.get("gup") is not None, "get_user_pages failed")
    check_page_refs(sim, kernel)


# ------------------------------------------------- fault vs migration


@mmemu.scenario("migrate:fault-vs-migration", catches=["migrate:plain-get"],
                reaches=["step:A. busy, -EAGAIN: spin_unlock(tree_lock)",
                         "step:b. frozen: pte_unmap_unlock",
                         "step:c. retry the fault (pte changed)"])
async def fault_vs_migration(sim: Any) -> None:
    """A fault on a migration entry against the migration of a pagecache page.

    CPU0 (fault, migration_entry_wait)      CPU1 (migrate_pages(page, newpage))
    0. entry = *pte (lockless): present?    1. lock_page(page)
       done; a migration entry:             2. try_to_unmap(page, migration):
    a. PTL; still a migration entry?           the pte becomes a migration entry
    b. get_page_unless_zero(page)           3. tree_lock;
       (fails: unlock, wait for the pte        A. page_freeze_refs(page, 2)
       to change, retry the fault)             B. get_page(newpage); replace slot
    c. unlock; wait_on_page_locked(page);      C. page_unfreeze_refs(page, 2);
       put_page; retry the fault                  put the cache's reference
                                               copy; page->mapping = NULL
                                            4. remove_migration_ptes: the pte
                                               maps newpage
                                            5. unlock_page(page); free it

    There are 2 critical interleavings that matter:
     - b before A: the freeze sees the fault's reference and fails: -EAGAIN;
       4 restores the pte to the old page, 5 unlocks it, and the fault (woken
       from wait_on_page_locked) finds it mapped again;
     - A before b: b fails on the frozen count; the fault waits for the pte
       to change and then finds newpage mapped.

    A fault whose 0 runs before 2 finds a present pte: that's OK, it only
    marks it young under the PTL, which orders it before or after 2.

    Mutant ``migrate:plain-get``: b is get_page; between A and C it runs on a
    frozen count (GetPageOnFreePage, the kernel's VM_BUG_ON).  One preemption
    finds it.

    At the end: the pte maps the page the pagecache holds at index 0 and
    every page is accounted for; a migrated page is free.
    """
    from mmemu.mm.migrate import migrate_pages
    from mmemu.mm.vmscan import isolate_lru_page, putback_lru_page
    kernel, mapping, page, mm, vma = await mapped_file_page(sim)
    assert await isolate_lru_page(page) == 0
    newpage = alloc_page_setup()
    out: dict[str, int] = {}

    async def fault() -> None:
        out["fault"] = await fault_in(mm, vma.vm_start, write=False)

    async def migrate() -> None:
        rc = await migrate_pages(page, newpage)
        out["rc"] = rc
        if rc:
            await putback_lru_page(page)

    async with sim.cpus() as cpus:
        cpus.start(fault, name="fault")
        cpus.start(migrate, name="migrate")
    pte = pte_get(mm, vma.vm_start)
    cached = mapping.page_tree.get(0)
    sim.check(pte is not None and pte.present and pte.page is cached,
              f"after the fault the pte is {pte!r}, the pagecache holds "
              f"{'page' + str(cached.pfn) if cached else 'nothing'}")
    if out.get("rc") == 0:
        sim.check(page.free, f"migrated page{page.pfn} was not freed", details=page.dump())
        sim.check(cached is newpage, "the pagecache does not hold the new page after migration")
    check_page_refs(sim, kernel)
