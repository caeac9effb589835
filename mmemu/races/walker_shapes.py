"""Race suite for the rmap walkers that unmap or age a page (reclaim's and
migration's try_to_unmap, migration's remove_migration_ptes, idle page
tracking) against a split of the vma that maps it.

Emulates: mm/rmap.c (try_to_unmap_anon/_file, try_to_unmap_one),
mm/migrate.c (unmap_and_move, remove_migration_ptes), mm/page_idle.c
(page_idle_clear_pte_refs: 4.3+, the modern generation only),
mm/vmscan.c (shrink_page_list of an anonymous and a file page),
mm/mprotect.c + mm/mmap.c (mprotect's split_vma -> vma_adjust) (2.6.27;
the modern generation brackets try_to_unmap_one with
invalidate_range_start/end)

A split leaves two vmas on the same ``anon_vma->head`` and
``mapping->i_mmap``, each covering half of the pages; every walker turns
the page's index into an address in each vma it meets (vma_address) and
must skip the half that does not cover the page (-EFAULT) before it looks
at a pte.  rmap:vma-change-vs-aging covers page_referenced; this suite the
other walkers, which no earlier suite ran over a split vma.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import guarded, new_driver, supports_api
from mmemu.mm.memory import fault_in, pte_get, set_pte_at
from mmemu.mm.migrate import REMOVE_VMA_NOT_COVERING, migrate_pages
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, do_munmap
from mmemu.mm.mprotect import PROT_READ, sys_mprotect
from mmemu.mm.page import PG_active, PG_dirty, PG_referenced, Page, PageAnon
from mmemu.mm.page_alloc import alloc_page_setup
from mmemu.mm.page_idle import (
    IDLE_VMA_NOT_COVERING,
    page_idle_bitmap_read,
    page_idle_bitmap_write,
    page_is_young,
)
from mmemu.engine._execution import reach
from mmemu.mm.rmap import REFERENCED_NO_PTE, UNMAP_VMA_NOT_COVERING, page_referenced
from mmemu.mm.vmscan import isolate_lru_page, lru_cache_add, putback_lru_page, reclaim_page
from mmemu.races.mm import file_with_pages, mm_with_file_vma
from mmemu.races.notifier import DRIVER_AXES

#: the walker CPU1 runs, one run each (idle: modern generation only)
WALKERS = ["reclaim", "migrate", "idle"]


def _walker_goals(params: dict[str, Any]) -> list[str]:
    """What only a walk after the split meets: the half that does not cover
    the page."""
    walker = params.get("walker", "reclaim")
    if walker == "idle":
        return [IDLE_VMA_NOT_COVERING]
    if walker == "migrate":
        return [UNMAP_VMA_NOT_COVERING, REMOVE_VMA_NOT_COVERING]
    return [UNMAP_VMA_NOT_COVERING]


def _in_its_era(params: dict[str, Any]) -> bool:
    """The driver supports the generation; idle page tracking is modern."""
    return supports_api(params) and (params.get("walker") != "idle"
                                      or params.get("api") == "modern")


@mmemu.scenario("rmap:split-vs-walker", axes={**DRIVER_AXES, "walker": WALKERS},
                filter=_in_its_era, reaches=_walker_goals)
async def split_vs_walker(sim: Any) -> None:
    """An rmap walker unmaps or ages the pages of a private file mapping
    while the process splits the vma that maps them.

    Setup: a two-page MAP_PRIVATE file vma (read and write, so it has an
    anon_vma); page 0 read (the pagecache page itself, read-only), page 1
    written (an anonymous COW copy); reclaim and migrate in 2.6.27: a
    one-page MAP_SHARED vma of the file's page 0 too, written, then the
    page written back (a dirty pte, a clean page, as a mapping without
    dirty accounting -- tmpfs in 2.6.27 -- has them: the unmap owes the
    page its dirty bit; the modern runs go without it,
    to keep their search small -- __try_to_unmap_one's dirty transfer is
    the same code in both generations); the driver attached, the guest has
    read both pages through it (its translations map them).  Both pages
    were aged (page_referenced: the ptes' and the translations' accessed
    bits are clear; idle: page 1's pte is young again, a CPU access), both
    are on the LRU (migrate: the file page, active, isolated).

    CPU0 (mprotect(page 1, PROT_READ),          CPU1 (the walker)
    mmap_sem for write: split_vma, the new      reclaim: shrink_page_list of the
    vma below)                                      file page (try_to_unmap_file;
      S1. i_mmap_lock; anon_vma->lock               __remove_mapping)
      S2. vma = [1, 2) keeps its place on the
          lists; new = [0, 1) goes on the
          mm's list, and after vma on i_mmap
          and anon_vma->head                    migrate: the file page:
      S3. unlock both; change_protection of         try_to_unmap(migration), copy,
          vma (write-protect page 1's pte)          remove_migration_ptes (walks
                                                    i_mmap to its end)
                                                idle (modern): mark both pages
                                                    idle and read the bits back
                                                    (page_idle_clear_pte_refs
                                                    walks anon_vma->head, i_mmap
                                                    to their ends)
    Each walk: W1. anon_vma->lock / i_mmap_lock; per listed vma:
    vma_address(page, vma) -- -EFAULT: skip the vma --; PTL; the pte.
    try_to_unmap stops at the first vma after which the page is unmapped.

    There are 2 critical interleavings that matter:
    - the walk (W1) before S1 or after S3's unlock of the lists: one vma
      covering both pages; every pte of the page is found in it;
    - W1 after S2: the file page's walk meets vma = [1, 2) first, which
      does not cover page 0 (goal: -EFAULT, skipped), and finds the pte in
      new; a walk to the end of a list (remove_migration_ptes, idle) also
      meets the half that does not cover the anonymous page 1.  A walker
      that does not skip the -EFAULT vma looks up a pte at -EFAULT
      (BadPteAddress): the kernel walks the kernel's page tables there.
    The split cannot come between W1 and the walk's end: S1 takes the lock
    the walk holds.
    Harmless: change_protection (S3) before or after the walker's unmap
    of page 1 (it write-protects a present pte, or skips a swap entry).

    The checks: every checker of ``boot_checked`` (BadPteAddress among
    them; migration's old page is freed without PG_active; DataLoss: the
    shared pte's dirty bit reaches page 0 -- reclaim keeps the page, the
    model has no file writeback -- or migration's new page; the lockset checker holds every access to ``anon_vma->head`` and
    ``i_mmap`` to its lock) and, at the end, the split's two vmas (and the
    shared one); page 1's pte the
    anonymous page, read-only; page 0's pte
    none (reclaimed), the old or the new page (migration), read-only;
    idle: both pages read back idle (nothing used them after the marking)
    and page 1 is PG_young (its young pte's access moved to the page for
    reclaim's aging, not lost).
    """
    walker = sim.params.get("walker", "reclaim")
    kernel = boot_checked(sim, npages=8)
    mapping, pages = await file_with_pages(kernel, "file", 2)
    mm, vma = await mm_with_file_vma(kernel, mapping, 2, flags=VM_READ | VM_WRITE)
    a0, a1 = vma.vm_start, vma.vm_start + PAGE_SIZE
    dirty = walker != "idle" and sim.params.get("api") != "modern"
    if dirty:
        await down_write(mm.mmap_sem)
        shared = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED,
                               file=mapping, pgoff=0)
        await up_write(mm.mmap_sem)
        await fault_in(mm, shared.vm_start, write=True)  # a dirty pte of page 0
        # ... and the page written back since: clear_page_dirty_for_io
        # cleans (page_mkclean) the ptes only of a mapping with dirty
        # accounting (mapping_cap_account_dirty); in 2.6.27 a tmpfs or
        # ramfs page keeps its dirty, writable pte while PG_dirty is clear,
        # and later writes go through it -- the bit the unmap must move
        # to the page.  (The model has no file writeback: the setup clears
        # PG_dirty as the completed write would.)
        pages[0].flags &= ~PG_dirty
    await fault_in(mm, a0, write=False)
    await fault_in(mm, a1, write=True)
    p0, p1 = pte_get(mm, a0), pte_get(mm, a1)
    assert p0 is not None and p0.page is pages[0] and p1 is not None and p1.page is not None
    filepage, anon = p0.page, p1.page
    assert PageAnon(anon)
    driver = new_driver(sim)
    sim.check(await guarded(driver, "attach", driver.attach, kernel, mm) == 0,
              f"{driver.name}: attach failed")
    for address in (a0, a1):
        await guarded(driver, "fault", driver.fault, address, False)
    for page in (filepage, anon):
        await page_referenced(page, False)
        sim.check(not page.flags & PG_referenced,
                  f"setup: page_referenced(page{page.pfn}) left PG_referenced set (the "
                  f"guest's GUP marked it accessed): TestClearPageReferenced consumes it",
                  details=page.dump())
    if walker == "idle":
        p1 = pte_get(mm, a1)
        assert p1 is not None
        set_pte_at(mm, a1, p1.replace(young=True))
    await lru_cache_add(anon)
    await lru_cache_add(filepage)
    newpage: Page | None = None
    if walker == "migrate":
        # an active page (activate_page: mark_page_accessed's second use;
        # the model's LRU is one list, and PG_active only travels with the
        # page): migrate_page_copy moves the flag to the new page and
        # clears it in the old one, which free_pages_check refuses with it
        filepage.flags |= PG_active
        assert await isolate_lru_page(filepage) == 0
        newpage = alloc_page_setup()
    out: dict[str | int, Any] = {}

    async def walk() -> None:
        if walker == "reclaim":
            out["file"] = await reclaim_page(filepage)
        elif walker == "migrate":
            assert newpage is not None
            out["rc"] = rc = await migrate_pages(filepage, newpage)
            if rc != 0:
                await putback_lru_page(filepage)
        else:
            for page in (anon, filepage):
                await page_idle_bitmap_write(page)
                out[page.pfn] = await page_idle_bitmap_read(page)

    async with sim.cpus() as cpus:
        cpus.start(sys_mprotect, mm, a1, PAGE_SIZE, PROT_READ, name="mprotect")
        cpus.start(walk, name=walker)
    sim.check(len(list(mm.vmas())) == 2 + dirty, f"after the split {mm!r} has vmas {list(mm.vmas())}")
    now = pte_get(mm, a1)
    ok = now is not None and now.present and now.page is anon and not now.write
    sim.check(ok, f"after the {walker} walk (result {out}) page 1's pte at {a1:#x} is "
                  f"{now!r}", details=anon.dump())
    now = pte_get(mm, a0)
    if walker == "reclaim":
        # reclaim unmaps page 0 from every vma, then keeps it: the shared
        # pte was dirty, and the model has no file writeback
        ok = now is None or (now.present and now.page is filepage and not now.write)
    else:
        want = newpage if walker == "migrate" and out["rc"] == 0 else filepage
        ok = now is not None and now.present and now.page is want and not now.write
    sim.check(ok, f"after the {walker} walk (result {out}) page 0's pte at {a0:#x} is "
                  f"{now!r}")
    if walker == "idle":
        for page in (anon, filepage):
            sim.check(out[page.pfn], f"page{page.pfn} was marked idle and nothing used it "
                                     f"since, but it reads back as used", details=page.dump())
        sim.check(page_is_young(anon), f"page{anon.pfn}'s pte was young when it was marked "
                                       f"idle, but the page is not PG_young: the access is "
                                       f"lost to reclaim's aging", details=anon.dump())


#: goals of rmap:munmap-vs-aging: the walk of each page met the vma munmap
#: was tearing down after its zap, before its unlink (no pte) ...
AGED_AFTER_ZAP = REFERENCED_NO_PTE
#: ... and one walk ran before the unmap (it cleared the young bit of page 1's pte)
AGED_BEFORE_MUNMAP = "rmap: the aging walk cleared the young pte of the page munmap unmaps"


@mmemu.scenario("rmap:munmap-vs-aging", reaches=[AGED_AFTER_ZAP, AGED_BEFORE_MUNMAP])
async def munmap_vs_aging(sim: Any) -> None:
    """kswapd ages the pages of a private file mapping while the process
    unmaps half of it.

    Setup: a two-page MAP_PRIVATE file vma; page 0 written (an anonymous
    COW copy: the vma has an anon_vma), page 1 read (the pagecache page);
    both ptes young.

    CPU0 (munmap(page 1): mmap_sem for write)  CPU1 (kswapd: page_referenced
    M1. split_vma: vma = [1, 2) and new =      of page 0 (anon_vma->head),
        [0, 1) (both locks, as in the split)    then of page 1 (trylock_page;
    M2. detach vma from the mm's list           i_mmap))
    M3. unmap_region: unmap_vmas zaps page 1's A1. anon_vma->lock / i_mmap_lock;
        pte (PTL)                                  per listed vma: vma_address,
    M4. free_pgtables: anon_vma_unlink(vma),       PTL, the pte, clear young
        unlink_file_vma(vma): each under its
        list's lock

    There are 2 critical interleavings that matter:
    - A1 before M4's unlink of the list it walks: it still lists the
      detached vma; before M3 the walk finds page 1's young pte there
      (goal) and clears its young bit, after M3 the pte is none (goal):
      nothing to age, the vma is on its way out;
    - A1 after M4: the detached vma is gone from the list; page 0 is found
      in new, page 1 is found nowhere.
    The unlinks take the lock the walk holds: a walker never sees a list
    half changed.  The lockset checker reports a removal that runs after
    its unlock once the walker has touched the list (the mutation
    benchmark's move-after-unlock of anon_vma_unlink and unlink_file_vma).
    Harmless: M1 and M2 against the walks (rmap:vma-change-vs-aging covers
    the split).

    The checks: every checker of ``boot_checked`` and, at the end, one vma
    [0, 1) listed on the anon_vma and i_mmap, page 1 unmapped, page 0's pte
    old (the walk found it whatever the order).
    """
    kernel = boot_checked(sim, npages=8)
    mapping, pages = await file_with_pages(kernel, "file", 2)
    mm, vma = await mm_with_file_vma(kernel, mapping, 2, flags=VM_READ | VM_WRITE)
    a0, a1 = vma.vm_start, vma.vm_start + PAGE_SIZE
    await fault_in(mm, a0, write=True)
    await fault_in(mm, a1, write=False)
    p0 = pte_get(mm, a0)
    assert p0 is not None and p0.page is not None and PageAnon(p0.page)
    anon, filepage = p0.page, pages[1]

    async def munmap() -> None:
        await down_write(mm.mmap_sem, label="munmap: down_write(mmap_sem)")
        await do_munmap(mm, a1, PAGE_SIZE)
        await up_write(mm.mmap_sem, label="munmap: up_write(mmap_sem)")

    async def kswapd() -> None:
        await page_referenced(anon, False)
        if await page_referenced(filepage, False):
            reach(AGED_BEFORE_MUNMAP)

    async with sim.cpus() as cpus:
        cpus.start(munmap, name="munmap")
        cpus.start(kswapd, name="kswapd")
    vmas = list(mm.vmas())
    left = vmas[0] if len(vmas) == 1 else None
    sim.check(left is not None and (left.vm_start, left.vm_end) == (a0, a1)
              and left in mapping.i_mmap and left.anon_vma is not None
              and left in left.anon_vma.head and len(mapping.i_mmap) == 1,
              f"after munmap the vmas are {vmas}, i_mmap {list(mapping.i_mmap)}")
    now0, now1 = pte_get(mm, a0), pte_get(mm, a1)
    sim.check(now1 is None and now0 is not None and now0.page is anon and not now0.young,
              f"after munmap and aging page 0's pte is {now0!r}, page 1's {now1!r}")


__all__ = ["AGED_AFTER_ZAP", "AGED_BEFORE_MUNMAP", "WALKERS", "munmap_vs_aging",
           "split_vs_walker"]
