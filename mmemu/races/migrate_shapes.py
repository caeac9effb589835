"""Race suites for page migration against the paths that change the ptes it
rewrites: a zap of an anonymous page, a guest fault on one, and a truncate
of a file page.

Emulates: mm/migrate.c (migrate_pages -> unmap_and_move: try_to_unmap with
migration entries, move_to_new_page, remove_migration_ptes; 2.6.27) against
mm/madvise.c (madvise(MADV_DONTNEED) -> zap_page_range), the drivers' faults
(get_user_pages -> do_swap_page -> migration_entry_wait) and mm/truncate.c
(vmtruncate)

Migration holds the old page's lock and the isolation reference from start
to end, and the new page's lock while it fills it, but no mmap_sem and no
lock that the zap paths take: between its try_to_unmap and its
remove_migration_ptes, the ptes it rewrites hold migration entries that
anything holding the PTL may clear.  remove_migration_pte therefore
re-reads the pte under the PTL and rewrites only its own entry.

The checks: every checker of ``boot_checked`` (page counts and leaks, pages
freed or truncated while mapped, the end-of-run coherence of every
translation) and, per suite, what the racing path promised on return.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import supports_api
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.fork import dup_mm
from mmemu.mm.memory import (
    FORK_COPIED_MIGRATION_ENTRY,
    WRPROTECTED_FOR_FORK,
    fault_in,
    is_migration_entry,
    pte_get,
)
from mmemu.mm.migrate import ANON_BUSY, ANON_MIGRATED, REMOVE_PTE_UNLOCKED, migrate_pages
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE
from mmemu.mm.page import Page
from mmemu.mm.page_alloc import alloc_page, alloc_page_setup
from mmemu.mm.truncate import NO_REMAP_CHECK, vmtruncate
from mmemu.mm.vmscan import isolate_lru_page, lru_cache_add, putback_lru_page
from mmemu.races.mm import (
    check_page_refs,
    file_with_pages,
    mapped_file_page,
    mm_with_file_vma,
    written_anon_page,
)
from mmemu.races.notifier import DRIVER_AXES, goals, guest, guest_fault

#: truncate_complete_page found the page mapped again (here: by migration's
#: remove_migration_ptes, which the first unmap_mapping_range left alone)
TRUNCATE_REMAPPED = ("truncate: a fault mapped the page after unmap_mapping_range; unmapped "
                     "again under the page lock")


async def _migrate(page: Page, newpage: Page | None = None) -> int:
    """Migrate one page (isolated here unless the caller did: ``newpage``
    given), putting it back on failure; migrate_pages' rc, or -EBUSY."""
    if newpage is None:
        if await isolate_lru_page(page) != 0:
            return -16
        newpage = await alloc_page(label="migrate: alloc_page(newpage)")
    rc = await migrate_pages(page, newpage)
    if rc != 0:
        await putback_lru_page(page)
    return rc


async def _anon_page(sim: Any) -> tuple[Any, Any, int, Page]:
    """Setup: an mm with one written anonymous page, on the LRU."""
    kernel, mm, addr, page = await written_anon_page(sim, npages=8)
    await lru_cache_add(page)
    return kernel, mm, addr, page


@mmemu.scenario("migrate:anon-vs-zap", catches=[REMOVE_PTE_UNLOCKED],
                reaches=[ANON_MIGRATED, "step:move_newpage: putback_lru_page(page) (freed under us)",
                         "step:4. migration entry for the old page?"])
async def anon_vs_zap(sim: Any) -> None:
    """Migration of an anonymous page against madvise(MADV_DONTNEED) of it.

    CPU0 (migrate_pages; the page isolated)   CPU1 (madvise DONTNEED: mmap_sem
    0. page_count == 1? (freed under us:          for read, no page lock)
       drop it, done)                         Z1. zap_page_range: PTL
    1. lock_page(page)                        Z2. clear the pte: a present
    2. try_to_unmap(migration): PTL; the          pte's rmap and reference go
       pte becomes a migration entry              to the tlb gather; a
    3. move_to_new_page: count == 1?              migration entry is just
       copy; page->mapping = NULL                 cleared
    4. remove_migration_pte: PTL; still our   Z3. unlock; free the gathered
       migration entry?  pte -> newpage;          pages
       unlock
    5. unlock_page; put the old page (freed)

    There are 3 critical interleavings that matter:
    - Z2 before 0: the zap dropped the pte's reference; only the isolation
      reference is left and 0 frees the page (nothing to migrate);
    - Z2 between 2 and 4: the zap clears the migration entry; 4 finds no
      entry of its own under the PTL and installs nothing: newpage and the
      old page are both freed.  Without the PTL at 4 (mutant
      ``migrate:remove-pte-unlocked``) the test, the install and the rmap
      update are separate steps: a zap between the test and the install is
      undone (madvise returns with the new page mapped), one between the
      install and the rmap unmaps a page not yet counted (_mapcount below
      -1);
    - Z2 after 4: the zap takes the pte to newpage.
    Harmless: Z2 between 0 and 2 (try_to_unmap finds no pte; the page,
    unmapped, is migrated for nobody and freed).

    At the end: madvise returned, so no pte maps the address; every page's
    count and mapcount match the ptes that map it.
    """
    kernel, mm, addr, page = await _anon_page(sim)
    assert await isolate_lru_page(page) == 0
    newpage = alloc_page_setup()
    async with sim.cpus() as cpus:
        cpus.start(_migrate, page, newpage, name="migrate")
        cpus.start(sys_madvise, mm, addr, PAGE_SIZE, MADV_DONTNEED, name="madvise")
    pte = pte_get(mm, addr)
    sim.check(pte is None or not pte.present and not is_migration_entry(pte),
              f"madvise(MADV_DONTNEED) returned but the pte at {addr:#x} is {pte!r}")
    check_page_refs(sim, kernel)


@mmemu.scenario("migrate:anon-vs-guest-fault", axes=DRIVER_AXES, filter=supports_api,
                max_preemptions=2,
                bound_reason="unbounded: KVM modern not exhausted after 9,200 traces (22 s "
                             "CPU), KVM 2.6.27 6,376 traces (13 s), GRU modern 4,189 (9 s); "
                             "162-394 executions per driver at two preemptions, which "
                             "catch every driver mutant it lists",
                catches=["kvm:seq-outside-lock", "kvm:no-retry", "gru:no-dropin-drop",
                         "hmm:seq-outside-lock", "hmm:no-retry", "sva:no-flush"],
                reaches=goals(ANON_MIGRATED, ANON_BUSY, "step:c. pte_unmap_unlock",
                              kvm=("retry",), hmm=("retry",)))
async def anon_vs_guest_fault(sim: Any) -> None:
    """A guest fault on an anonymous page that migration moves.

    CPU0 (migrate: isolate, migrate_pages)     CPU1 (guest fault)
    1. lock_page(page)                         F1. seq / notifier sequence
    2. try_to_unmap_one(migration): clear      F2. GUP: follow_page finds a
       the pte, tell the drivers                   migration entry: do_swap_page
       (invalidate_page / the modern range),       -> migration_entry_wait:
       install a migration entry                   a. PTL; still the entry?
    3. move_to_new_page: page_count == 1?          b. get_page_unless_zero
       (an anonymous page is in no tree: no        c. unlock; wait_on_page_
       freeze; any extra reference: -EAGAIN)          locked; put; retry
    4. remove_migration_ptes (anon_vma->lock):     (present pte: a reference)
       the pte maps newpage (or, on -EAGAIN,   F3. lock; retry if an
       the old page again)                         invalidation overlapped
    5. unlock_page; free the old page          F4. install; unlock; put

    There are 3 critical interleavings that matter:
    - F2's wait (b) before 3: the fault's reference fails 3's count test:
      -EAGAIN, 4 maps the old page back, the fault wakes at 5 and finds it;
    - F2 before 2, F3 after 2: the invalidation of 2 makes the fault retry
      (KVM, HMM; GRU drops a dropin the invalidate overtook); the retry
      waits on the entry and maps newpage;
    - F2 between 3 and 4: b takes a reference to the old page, which 5's
      put then leaves to the fault's put to free; the retry finds newpage.
    Each driver's own protocol is what makes the second safe: the driver
    mutants that drop the retry or move the sequence update out of the
    lock (``kvm:no-retry``, ``kvm:seq-outside-lock``, ``hmm:no-retry``,
    ``hmm:seq-outside-lock``; GRU's dropin not dropped when an invalidate
    overtook it, ``gru:no-dropin-drop``; SVA's IOTLB not flushed with the
    CPU TLB, ``sva:no-flush``) leave a translation to the old page that 5
    frees.

    Harmless: the fault entirely before 1 (2 zaps its translation) or after
    5 (it maps newpage).
    """
    g = await guest(sim, kind="anon")
    async with sim.cpus() as cpus:
        cpus.start(_migrate, g.page, name="migrate")
        cpus.start(guest_fault, g, name=g.driver.name)


@mmemu.scenario("migrate:file-vs-truncate", catches=[NO_REMAP_CHECK],
                max_preemptions=2,
                bound_reason="unbounded: not exhausted after 18,000 traces (40 s CPU): the "
                             "truncate's lookup loop and migration's -EAGAIN multiply; 579 "
                             "executions at two preemptions, which catch its mutant",
                reaches=["step:4. set_pte_at(new page)", TRUNCATE_REMAPPED,
                         "step:A. busy, -EAGAIN: spin_unlock(tree_lock)"])
async def file_vs_truncate(sim: Any) -> None:
    """Migration of a mapped file page against a truncate of the file.

    CPU0 (migrate_pages; the page isolated)   CPU1 (vmtruncate to 0)
    1. lock_page(page)                        T1. i_size = 0
    2. try_to_unmap(migration): the pte       T2. unmap_mapping_range: zap the
       becomes a migration entry                  ptes -- but not a migration
    3. tree_lock; A. freeze the count at 2        entry (details: swap and
       (isolation + pagecache), else -EAGAIN;     migration entries are left)
       B. the slot holds newpage (locked);    T3. truncate_inode_pages: lookup
       C. unfreeze; copy; mapping = NULL          (a reference); trylock, else
    4. remove_migration_ptes: the pte maps        lock_page (waits for 5);
       newpage                                    page->mapping still ours?
    5. unlock newpage; unlock_page; free the      mapped? unmap again; remove
       old page                                   from the cache; put
                                              T4. unmap_mapping_range again

    There are 3 critical interleavings that matter:
    - T3's lookup before A: its reference fails the freeze: -EAGAIN; 4 maps
      the old page back, and T3 (waiting for the page lock) finds it mapped
      and unmaps it before removing it;
    - T2 between 2 and 4: T2 leaves the migration entry, and 4 maps newpage
      after the truncate's unmap; T3 finds newpage in the slot, waits for
      its lock, sees it mapped and unmaps it again under the page lock
      (truncate_inode_pages' page_mapped test).  Without that test (mutant
      ``truncate:no-remap-check``) newpage leaves the pagecache still
      mapped;
    - T3's lookup after B: it finds newpage (locked until the copy is
      done) and truncates it; the old page, no longer in the mapping,
      is freed by 5.
    Harmless: the whole truncate before 1 (the page is gone: 1-2 find no
    mapping or pte) or after 5.

    At the end: the file is empty, nothing maps it, every page is accounted
    for.
    """
    kernel, mapping, page, mm, vma = await mapped_file_page(sim)
    assert await isolate_lru_page(page) == 0
    newpage = alloc_page_setup()
    async with sim.cpus() as cpus:
        cpus.start(_migrate, page, newpage, name="migrate")
        cpus.start(vmtruncate, mapping, 0, name="truncate")
    sim.check(not mapping.page_tree, f"the file was truncated to 0 but its pagecache holds "
              f"{sorted(mapping.page_tree)}")
    pte = pte_get(mm, vma.vm_start)
    sim.check(pte is None or not pte.present and not is_migration_entry(pte),
              f"the file was truncated to 0 but the pte at {vma.vm_start:#x} is {pte!r}")
    check_page_refs(sim, kernel)


def _fork_goals(params: dict[str, Any]) -> list[str]:
    if params.get("page") == "file":  # a read-only pte: nothing to write-protect
        return [FORK_COPIED_MIGRATION_ENTRY, "step:4. set_pte_at(new page)"]
    return [ANON_MIGRATED, FORK_COPIED_MIGRATION_ENTRY, WRPROTECTED_FOR_FORK]


@mmemu.scenario("migrate:page-vs-fork", axes={"page": ["anon", "file"]}, reaches=_fork_goals)
async def page_vs_fork(sim: Any) -> None:
    """Migration of a mapped page against fork of the process that maps it:
    an anonymous page (found through anon_vma->head), or a file page read
    through a private file mapping (found through i_mmap; the vma has an
    anon_vma -- its other page was written -- so fork copies its ptes:
    copy_page_range skips a vma without one, whose faults can fill it).

    CPU0 (migrate_pages; the page isolated)   CPU1 (fork: dup_mmap, the parent's
    1. lock_page(page)                            mmap_sem for write)
    2. try_to_unmap(migration): PTL; the      F1. anon_vma_link / vma_prio_tree_add
       pte becomes a (write) migration            (child's vma): the rmap walks
       entry                                      find it from now on
                                              F2. copy_pte_range, both PTLs: a
    3. move_to_new_page: copy                     present pte is write-protected
    4. remove_migration_ptes: walk                in the parent and copied (ref,
       anon_vma->head / i_mmap; per vma:          mapcount, child's rss); a
       PTL; our migration entry?  pte ->          migration entry is copied,
       newpage (read-only if the entry is)        made a read entry in both (a
    5. unlock_page; put the old page              COW mapping), and counted in
                                                  the child's rss

    There are 2 critical interleavings that matter:
    - F2 between 2 and 4: fork copies the migration entry (goal), read-only
      in both; 4 finds the child's vma on the anon_vma / i_mmap (F1 came
      first) and restores both ptes to newpage, read-only: the first write
      of either copies it (anon);
    - F2 before 2 or after 4: an ordinary copy of a present pte (anon:
      write-protected for fork, goal); try_to_unmap then unmaps both ptes,
      or both map newpage already.
    Harmless: none -- every order ends with both ptes on the same page,
    read-only.

    The checks: every checker of ``boot_checked`` (the rss counters --
    2.6.27 forgot the child's count for a copied migration entry; the model
    keeps later kernels' count, see copy_one_pte --, mapcounts, leaks) and,
    at the end, the parent's and the child's ptes map one page, read-only.
    """
    if sim.params.get("page") == "file":
        kernel = boot_checked(sim, npages=8)
        mapping, pages = await file_with_pages(kernel, "file", 2)
        mm, vma = await mm_with_file_vma(kernel, mapping, 2, flags=VM_READ | VM_WRITE)
        await fault_in(mm, vma.vm_start, write=True)  # page 0: a COW copy, the anon_vma
        addr, page = vma.vm_start + PAGE_SIZE, pages[1]
        await fault_in(mm, addr, write=False)  # page 1: the pagecache page, read-only
        await lru_cache_add(page)
    else:
        kernel, mm, addr, page = await _anon_page(sim)
    assert await isolate_lru_page(page) == 0
    newpage = alloc_page_setup()
    child: list[Any] = []

    async def fork() -> None:
        child.append(await dup_mm(mm))

    async with sim.cpus() as cpus:
        cpus.start(_migrate, page, newpage, name="migrate")
        cpus.start(fork, name="fork")
    mine, theirs = pte_get(mm, addr), pte_get(child[0], addr)
    sim.check(mine is not None and theirs is not None and mine.present and theirs.present
              and mine.page is theirs.page and not mine.write and not theirs.write,
              f"after fork and migration the parent's pte is {mine!r} and the child's "
              f"{theirs!r}: not one page, read-only in both")
    check_page_refs(sim, kernel)


__all__ = ["anon_vs_guest_fault", "anon_vs_zap", "file_vs_truncate", "page_vs_fork"]
