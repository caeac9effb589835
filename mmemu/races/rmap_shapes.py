"""Race suites for the rmap walkers against the changes of the vma lists they
walk: kswapd's aging (page_referenced) while the process splits, forks or
maps again the vma that maps its pages.

Emulates: mm/rmap.c (page_referenced, page_referenced_anon/_file,
page_referenced_one), mm/mmap.c (vma_adjust via mprotect's split_vma,
__vma_link_file via mmap_region), kernel/fork.c (dup_mmap) (2.6.27)

An rmap walk starts from the page, not from an mm: it takes the page's
anon_vma->lock (anonymous page) or its mapping's i_mmap_lock (file page),
walks the vmas on ``anon_vma->head`` / ``mapping->i_mmap``, and in each
vma turns the page's index into an address (vma_address) from vm_start
and vm_pgoff.  It holds no mmap_sem, so everything that changes those
lists or a listed vma's range -- a split (vma_adjust), fork (dup_mmap's
anon_vma_link and vma_prio_tree_add), a new mapping of the file
(__vma_link_file) -- does so under the same locks, and a walker sees each
change before or after, never half done.

The checks at the end: the walker found the page's pte in the original mm
whatever the order (page_referenced counted it, and its young bit is clear
now), and every checker of ``boot_checked`` (the lockset checker holds
every access to ``anon_vma->head`` and ``mapping->i_mmap`` to its lock).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.engine._execution import step
from mmemu.kernel.locking import down_read, down_write, up_read, up_write
from mmemu.mm.fork import dup_mm
from mmemu.mm.memory import (
    COW_COPIED,
    WP_PTE_CHANGED,
    fault_in,
    handle_mm_fault,
    pte_get,
    set_pte_at,
)
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap
from mmemu.mm.mprotect import PROT_READ, sys_mprotect
from mmemu.mm.page import Page, PageAnon
from mmemu.mm.rmap import (
    REFERENCED_NO_PTE,
    REFERENCED_TRYLOCK_FAILED,
    REFERENCED_VMA_NOT_COVERING,
    page_referenced,
)
from mmemu.mm.truncate import vmtruncate
from mmemu.mm.vmscan import isolate_lru_page, lru_cache_add, putback_lru_page, reclaim_page
from mmemu.races.mm import file_with_pages, mapped_file_page, mm_with_file_vma

#: the vma change CPU0 makes, one run each
CHANGES = ["split", "fork", "mmap"]


def _aging_goals(params: dict[str, Any]) -> list[str]:
    """What only a walk after (part of) the change can meet."""
    if params.get("change") == "split":
        return [REFERENCED_VMA_NOT_COVERING]
    return [REFERENCED_NO_PTE]


async def _age(pages: list[Page], referenced: dict[int, int]) -> None:
    """kswapd's shrink_active_list: page_referenced of each page in turn
    (not holding the page lock: a file page is trylocked inside)."""
    for page in pages:
        referenced[page.pfn] = await page_referenced(page, False)


@mmemu.scenario("rmap:vma-change-vs-aging", axes={"change": CHANGES}, reaches=_aging_goals,
                catches=["rmap:referenced-no-i-mmap-lock"])
async def vma_change_vs_aging(sim: Any) -> None:
    """kswapd ages the pages of a private file mapping while the process
    changes the vmas that map them.

    Setup: a two-page MAP_PRIVATE file vma; page 0 written (a COW copy: an
    anonymous page, the vma gets its anon_vma), page 1 read (the
    pagecache page itself).  Both ptes are young.

    CPU0 (the process, mmap_sem for write)     CPU1 (kswapd: page_referenced
    split: mprotect(page 1, PROT_READ):        of page 0, then of page 1)
      S1. i_mmap_lock; anon_vma->lock          A1. anon_vma->lock; walk
      S2. vma = [0, 1), new = [1, 2) on the        anon_vma->head: per vma,
          mm's list, i_mmap and anon_vma->head     vma_address (or -EFAULT),
      S3. unlock both; change_protection           PTL, clear the young bit
    fork: dup_mmap:                            A2. trylock_page(page 1);
      F1. anon_vma_link(child vma)                 i_mmap_lock; walk i_mmap
      F2. i_mmap_lock; vma_prio_tree_add           the same way
      F3. copy_page_range (both PTLs)
    mmap: mmap the file's page 1 again at a
      new address: __vma_link_file under
      i_mmap_lock (no fault: no pte)

    There are 2 critical interleavings that matter (per change):
    - the walk (A1 or A2) before the change's list update: it sees the old
      list; the one vma covers both pages and the walk clears both young
      bits;
    - the walk after it: split -- the page is found through the half that
      covers it, the other half gives vma_address -EFAULT (goal); fork --
      the child's vma is listed and its pte is none before F3 (goal: no
      pte in a covering vma) or an old copy after it; mmap -- the new vma
      covers page 1 and has no pte (the same goal).
    Either way the walker finds the original mm's pte and clears its young
    bit, because the list and the range it reads change only under the
    lock it holds.  The lockset checker reports any access to
    ``anon_vma->head`` or ``i_mmap`` without its lock once both CPUs have
    touched it, which is how the mutation benchmark's dropped lock pairs of
    vma_adjust, dup_mmap, __vma_link_file and page_referenced_file are
    caught: in the model the list update is one step, so the walker's copy
    of the list is never torn; the kernel's prio tree and list_add are
    not.
    Harmless: CPU0's change entirely before or after the walk of a page.
    """
    change = sim.params.get("change", "split")
    kernel = boot_checked(sim, npages=8)
    mapping, pages = await file_with_pages(kernel, "file", 2)
    mm, vma = await mm_with_file_vma(kernel, mapping, 2, flags=VM_READ | VM_WRITE)
    a0, a1 = vma.vm_start, vma.vm_start + PAGE_SIZE
    await fault_in(mm, a0, write=True)
    await fault_in(mm, a1, write=False)
    p0, p1 = pte_get(mm, a0), pte_get(mm, a1)
    assert p0 is not None and p0.page is not None and p1 is not None and p1.page is not None
    anon, filepage = p0.page, p1.page
    assert filepage is pages[1] and anon is not pages[0] and p0.young and p1.young

    async def remap() -> None:
        await down_write(mm.mmap_sem)
        await do_mmap(mm, 0, PAGE_SIZE, VM_READ, file=mapping, pgoff=1)
        await up_write(mm.mmap_sem)

    referenced: dict[int, int] = {}
    async with sim.cpus() as cpus:
        if change == "split":
            cpus.start(sys_mprotect, mm, a1, PAGE_SIZE, PROT_READ, name="mprotect")
        elif change == "fork":
            cpus.start(dup_mm, mm, name="fork")
        else:
            cpus.start(remap, name="mmap")
        cpus.start(_age, [anon, filepage], referenced, name="kswapd")
    for page, address in ((anon, a0), (filepage, a1)):
        pte = pte_get(mm, address)
        sim.check(referenced.get(page.pfn, 0) >= 1,
                  f"page_referenced(page{page.pfn}) returned {referenced.get(page.pfn)}, but "
                  f"the young pte at {address:#x} mapped it: the walk missed the vma",
                  details=page.dump())
        sim.check(pte is not None and pte.page is page and not pte.young,
                  f"after aging the pte at {address:#x} is {pte!r}: still young "
                  f"(the walk did not reach it)")


#: goal of rmap:aging-vs-truncate: the walk ran before the truncation took the page
AGED_MAPPED = "step:page_referenced_one: pte maps the page?"


@mmemu.scenario("rmap:aging-vs-truncate", reaches=[REFERENCED_TRYLOCK_FAILED, AGED_MAPPED])
async def aging_vs_truncate(sim: Any) -> None:
    """kswapd ages a mapped file page while the file is truncated to 0.

    CPU0 (kswapd: shrink_active_list)          CPU1 (vmtruncate(mapping, 0))
    (isolate_lru_page: a reference, before)    T1. unmap_mapping_range: i_mmap_lock;
    page_referenced(page, is_locked=0):            zap the pte (page_remove_rmap)
    A1. page_mapped?  no: nothing to walk      T2. truncate_inode_pages: lock_page;
    A2. trylock_page: taken?  no: the page         remove from the pagecache;
        is busy, count it as referenced            unlock; put
        and leave it
    A3. i_mmap_lock; walk i_mmap: the pte's
        young bit cleared; unlock; unlock_page
    A4. putback_lru_page: the last put frees
        a truncated page

    There are 2 critical interleavings that matter:
    - A2 while T2 holds the page lock: the trylock fails and kswapd leaves
      the page alone (goal).  A walker that went on without the lock
      (the mutation benchmark's ``rmap:page_referenced:recheck:3``) walks a
      page truncation is taking out of the file and unlocks truncation's
      page lock at its end;
    - A2 before T2: kswapd holds the page lock, T2's lock_page waits for
      A3 to finish (goal: the walk meets the pte, or T1 zapped it first).
    Harmless: A1 after T1 (the page is no longer mapped: nothing to do).

    The checks: every checker of ``boot_checked`` (the page is freed once,
    unlocked, by its last holder).
    """
    _, mapping, page, _, _ = await mapped_file_page(sim)

    # shrink_active_list isolated the page already (setup): 2.6.27 takes the
    # pages off the LRU, a reference each, before page_referenced looks at
    # them; the reference keeps a page that truncation takes out of the
    # file allocated until the putback
    sim.check(await isolate_lru_page(page) == 0, "setup: the page is not on the LRU")

    async def shrink_active_list() -> None:
        await page_referenced(page, False)
        await putback_lru_page(page)

    async with sim.cpus() as cpus:
        cpus.start(shrink_active_list, name="kswapd")
        cpus.start(vmtruncate, mapping, 0, name="truncate")
    sim.check(page.free, f"after the truncation page{page.pfn} is still in use",
              details=page.dump())


#: goal of rmap:reclaim-vs-file-cow: reclaim freed the pagecache page
FILE_PAGE_RECLAIMED = "step:__remove_mapping: freeze"


@mmemu.scenario("rmap:reclaim-vs-file-cow", reaches=[COW_COPIED, WP_PTE_CHANGED])
async def reclaim_vs_file_cow(sim: Any) -> None:
    """The process writes a page of a private file mapping that it has only
    read so far, while kswapd reclaims that pagecache page.

    Setup: a one-page file, mapped MAP_PRIVATE (read and write); a read
    fault mapped the pagecache page itself, read-only (file_rss 1); the
    pte is old, so reclaim may unmap it; the page is on the LRU.

    CPU0 (write fault: do_wp_page)             CPU1 (kswapd: reclaim_page)
    W1. PTL; the pte is read-only, the page    K1. isolate (ref); trylock_page
        a file page: copy (COW);               K2. try_to_unmap_file: i_mmap_lock,
        page_cache_get(old_page); unlock           PTL, clear the pte (the pte's
    W2. anon_vma_prepare; alloc; copy              ref and rmap dropped)
    W3. PTL; pte_same(orig)?  yes: file_rss--, K3. __remove_mapping: freeze at 2
        anon_rss++; ptep_clear_flush; map          (cache + isolation); fails
        the copy writable; page_remove_rmap        while W holds its ref
        (old)                                  K4. free, or unlock and put back
        no: drop the copy (the user's write
        faults again: not in this scenario)
    W4. page_cache_release(old_page)

    There are 2 critical interleavings that matter:
    - K2 between W1 and W3: W3's pte_same fails (goal) and the copy is
      dropped (the write will fault again on a none pte);
    - W3 before K2: the pte maps the anonymous copy (goal: COW copied), K2
      finds the file page unmapped, K3 frees it unless W4 has not yet
      dropped W's reference (then the freeze fails and kswapd puts it back).
    Harmless: K2 before W1 (the fault finds no pte and reads the page
    through the pagecache, __do_fault's COW).

    The checks: every checker of ``boot_checked`` -- the rss counters
    (do_wp_page moves the count from file_rss to anon_rss only with the
    pte), leaks, and the pte/vma checks.
    """
    kernel = boot_checked(sim, npages=8)
    mapping, pages = await file_with_pages(kernel, "file", 1)
    mm, vma = await mm_with_file_vma(kernel, mapping, 1, flags=VM_READ | VM_WRITE)
    a = vma.vm_start
    await fault_in(mm, a, write=False)
    pte = pte_get(mm, a)
    assert pte is not None and pte.page is pages[0] and not pte.write
    set_pte_at(mm, a, pte.replace(young=False))
    await lru_cache_add(pages[0])
    async def write_fault() -> None:
        # one fault (the user's retry of the write is another scenario:
        # after W3's pte_same failure it reads the page in again)
        await down_read(mm.mmap_sem)
        await step("fault: find_vma", reads=((mm, "mmap"),))
        await handle_mm_fault(mm, vma, a, True)
        await up_read(mm.mmap_sem)

    async with sim.cpus() as cpus:
        cpus.start(write_fault, name="writer")
        cpus.start(reclaim_page, pages[0], name="kswapd")
    now = pte_get(mm, a)
    # (the pagecache page may have been freed and its frame reused: test
    # what the pte maps, not which frame)
    sim.check(now is None or not now.present or (
              now.write and now.page is not None and PageAnon(now.page)),
              f"after the write fault the pte at {a:#x} is {now!r}: neither none (reclaim "
              f"took it first; the write faults again) nor the writer's anonymous copy")


__all__ = ["AGED_MAPPED", "CHANGES", "FILE_PAGE_RECLAIMED", "aging_vs_truncate",
           "reclaim_vs_file_cow", "vma_change_vs_aging"]
