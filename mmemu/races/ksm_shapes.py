"""Race suites for KSM against the process that owns the page: ksmd merges a
page while the process writes it.

Emulates: mm/ksm.c (try_to_merge_one_page, write_protect_page,
replace_page: 2.6.32 in the "2.6.27" generation) against mm/memory.c
(handle_pte_fault, do_wp_page)

The merge is safe only because every step that changes the pte
(write_protect_page's clear and read-only set, replace_page's switch to the
KSM page) runs under the PTL, re-checks the pte it read, and holds the page
lock that do_wp_page needs to reuse the page in place.  The checks, at the
end:
- the page at the address is either the KSM page, read-only, or a private
  page the process may write: never the KSM page writable;
- every page's count and mapcount match the ptes that map it (a fault
  that slipped in between two of ksmd's steps shows up as a page mapped
  twice or leaked; a merged page not freed as a count too high).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.engine import InvariantViolation
from mmemu.mm.ksm import MERGE_TRYLOCK_FAILED, MERGED, REPLACE_NO_PTE_SAME, ksm_merge_page
from mmemu.mm.memory import COW_COPIED, WP_TRYLOCK_FAILED, fault_in, pte_get
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.mmap import PAGE_SIZE
from mmemu.mm.vmscan import lru_cache_add, reclaim_page
from mmemu.races.ksm import ksm_setup
from mmemu.races.mm import check_page_refs


class WritableKsmPage(InvariantViolation):
    """A pte maps a KSM page writable: a write would change every sharer."""


@mmemu.scenario("ksm:merge-vs-write-fault", reaches=[MERGED, COW_COPIED, WP_TRYLOCK_FAILED],
                # exhausts unbounded: 807 executions, 1.1 s CPU (main fcbd7b7)
                catches=[REPLACE_NO_PTE_SAME])
async def merge_vs_write_fault(sim: Any) -> None:
    """ksmd merges a page while the process writes it.

    The page was written before (writable, but clean and old: the write
    fault has to set the dirty and accessed bits, a new pte).

    CPU0 (ksmd: try_to_merge_one_page)         CPU1 (write fault)
    0. follow_page (ref); trylock_page         F1. entry = *pte
    W1. PTL; the pte maps the page?            F2. PTL; pte_same(entry)?
    W2. ptep_clear_flush; pin check                writable: set the dirty and
    W3. set_pte_at_notify(read-only); unlock       young bits (a new pte);
    R1. PTL; pte_same(orig)? else no merge         read-only: do_wp_page
    R2. get_page(kpage); mapcount(kpage)++     F3. do_wp_page: trylock_page; not
    R3. ptep_clear_flush; set_pte_at_notify        the KSM page and mapped once:
       (kpage, read-only)                          reuse in place; else copy
    R4. page_remove_rmap; put_page; unlock         (COW: always while ksmd
    5. unlock_page; put_page (freed)               holds the page lock),
                                                   set_pte_at the copy

    There are 3 critical interleavings that matter:
    - F2 before W1: the fault's new pte (dirty) is what ksmd protects and
      replaces; the merge goes through (the write came first);
    - F2 between W3 and R1: the pte is read-only; do_wp_page's trylock
      of the page fails (ksmd holds the page lock) and it copies the page
      (COW): the pte now maps the writer's copy, and R1's pte_same fails:
      nothing is merged.  Without R1's test (mutant
      ``ksm:replace-no-pte-same``) R2-R4 point the pte at the KSM page over
      the writer's copy (the write is lost, the copy leaked) and drop the
      old page's mapping a second time (its _mapcount goes below -1);
    - F2 after R4: the pte maps the KSM page read-only; do_wp_page copies
      it for the writer.
    Without the PTL in W (mutation benchmark's
    ``ksm:write_protect_page:lock-pair:1``) F1-F2 see the pte cleared by W2
    and do_anonymous_page maps a new page that W3 overwrites (a leaked,
    "mapped" page); without R2's mapcount (``ksm:replace_page:seq-update:1``)
    the KSM page's mapcount is short by one.

    Harmless: the whole fault before 0 or after 5.
    """
    kernel, mm, a1, kpage = await ksm_setup(sim, clean_old=True)

    async with sim.cpus() as cpus:
        cpus.start(ksm_merge_page, mm, a1, kpage, name="ksmd")
        cpus.start(fault_in, mm, a1, True, name="writer")
    now = pte_get(mm, a1)
    sim.check(now is not None and now.present and now.page is not None,
              f"after the write fault the pte is {now!r}")
    assert now is not None
    if now.page is kpage and now.write:
        raise WritableKsmPage(f"the pte at {a1:#x} maps the KSM page{kpage.pfn} writable",
                              details=kpage.dump())
    sim.check(now.page is kpage or now.write,
              f"the write fault returned but the pte at {a1:#x} is read-only: {now!r}")
    check_page_refs(sim, kernel)


@mmemu.scenario("ksm:merge-vs-zap", reaches=[MERGED], catches=[REPLACE_NO_PTE_SAME])
async def merge_vs_zap(sim: Any) -> None:
    """ksmd merges a page while the process zaps it (madvise(MADV_DONTNEED):
    mmap_sem for read, like ksmd -- the two run side by side).

    CPU0 (ksmd)                                CPU1 (madvise DONTNEED)
    0. down_read; follow_page (ref);           Z1. down_read(mmap_sem)
       trylock_page                            Z2. range_start; PTL
    W1-W3. under the PTL: the pte maps the     Z3. zap the pte: page_remove_
       page? clear; pin check; read-only           rmap; the pte's reference
    R1. PTL; pte_same(orig)? else no merge         to the tlb gather; unlock
    R2-R4. the pte maps kpage; rmap and        Z4. tlb_finish_mmu: free the
       reference of the page dropped               gathered pages; range_end
    5. unlock_page; put_page; up_read

    There are 3 critical interleavings that matter:
    - Z3 before W1: W1 finds no pte, nothing is merged; 5's put frees the
      page;
    - Z3 between W3 and R1: R1's pte_same fails (the pte is none): no
      merge, 5 frees the page.  Without R1's test (mutant
      ``ksm:replace-no-pte-same``) R2-R4 map kpage where the zap left no
      pte and drop the old page's rmap and reference a second time;
    - Z3 after R4: the zap takes kpage's pte (kpage's mapcount and count
      go back down by one).
    Without the PTL in W or R (the mutation benchmark's
    ``ksm:write_protect_page:lock-pair:1``, ``ksm:replace_page:lock-pair:1``)
    the zap and the merge both drop the old page's mapping, or the merge
    installs kpage over a pte the zap already took.

    Harmless: the zap entirely before 0 (no page to merge) or after 5.
    """
    kernel, mm, a1, kpage = await ksm_setup(sim, clean_old=True)
    async with sim.cpus() as cpus:
        cpus.start(ksm_merge_page, mm, a1, kpage, name="ksmd")
        cpus.start(sys_madvise, mm, a1, PAGE_SIZE, MADV_DONTNEED, name="madvise")
    now = pte_get(mm, a1)
    sim.check(now is None or not now.present,
              f"madvise(MADV_DONTNEED) returned but the pte at {a1:#x} is {now!r}")
    check_page_refs(sim, kernel)


#: goal of ksm:merge-vs-reclaim
RECLAIMED = "vmscan: __remove_mapping froze and freed the page"


@mmemu.scenario("ksm:merge-vs-reclaim", reaches=[MERGED, MERGE_TRYLOCK_FAILED, RECLAIMED])
async def merge_vs_reclaim(sim: Any) -> None:
    """ksmd merges a page while kswapd reclaims it.

    Setup: the merge candidate is clean, old and on the LRU (reclaim takes
    it: add_to_swap gives it a slot, try_to_unmap puts the swap entry in
    its pte).

    CPU0 (ksmd)                                CPU1 (kswapd: shrink_page_list)
    0. down_read; follow_page (ref);           A. isolate (ref); trylock_page
       trylock_page: locked?  no merge         B. add_to_swap; try_to_unmap:
       this pass (ksmd never waits)               the pte becomes a swap entry
    W1-W3. PTL: the pte maps the page?         C. pageout (the slot is written);
       clear; pin check (count == mapcount        __remove_mapping: freeze at 2
       + 2: ours and follow_page's); read-        (cache + ours): out of the
       only                                       swap cache, free
    R1-R4. PTL: pte_same?  the pte maps        D. busy (a reference more): unlock,
       kpage; the page's rmap and reference       putback
       dropped
    5. unlock_page; put_page; up_read

    There are 3 critical interleavings that matter:
    - A's trylock first: 0's trylock fails and ksmd leaves the page
      alone (without that test -- the source mutant skipping it -- ksmd
      write-protects a page reclaim is unmapping and unlocks reclaim's
      lock: "unlock_page of an unlocked page");
    - 0's reference before C's freeze: the freeze fails (count 3) and
      reclaim keeps the page (ksmd may merge it once reclaim unlocked);
    - B before 0: follow_page finds a swap entry, nothing to merge.
    Harmless: the merge entirely before A (reclaim finds the page
    unmapped and frees it with its new slot), or reclaim entirely before 0.

    2.6.32's ksm in the "2.6.27" generation, as the other KSM suites.
    """
    _, mm, a1, kpage = await ksm_setup(sim, clean_old=True)
    pte = pte_get(mm, a1)
    assert pte is not None and pte.page is not None
    page = pte.page
    await lru_cache_add(page)
    async with sim.cpus() as cpus:
        cpus.start(ksm_merge_page, mm, a1, kpage, name="ksmd")
        cpus.start(reclaim_page, page, name="kswapd")


__all__ = ["RECLAIMED", "WritableKsmPage", "merge_vs_reclaim", "merge_vs_write_fault",
           "merge_vs_zap"]
