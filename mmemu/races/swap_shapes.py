"""Race suites for the swap-in of one page by two faults at once: the CPU and
the guest both fault an anonymous page that reclaim swapped out
(swap:swapin-vs-guest-swapin), or two CPUs do with the swap device full
(swap:fault-vs-fault).

Emulates: mm/memory.c do_swap_page (2.6.27) run twice for one swap pte --
once by a CPU fault (handle_mm_fault), once by the driver's
get_user_pages -- with mm/swap_state.c's lookup_swap_cache /
read_swap_cache_async and mm/swapfile.c's swap_free between them.

Why a suite: swap:reclaim-anon-vs-guest-fault runs do_swap_page alone, so
what orders two swap-ins of one pte (the page lock, the PTL and the
``pte_same`` recheck under it) was never exercised; the mutation benchmark
(benchmarks/mutation.py) showed every one of those steps surviving.

The checks: every checker of ``boot_checked`` (page counts and leaks, pages
freed while mapped, and at the end every translation coherent with the CPU
pte), and at the end one pte mapping the page once.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import supports_api
from mmemu.mm.memory import (
    SWAP_NO_PTE_SAME,
    SWAPIN_PTE_CHANGED,
    SWAPIN_SLOT_GONE,
    SWAPPED_IN,
    WP_EXTRA_REFERENCE,
    WP_REUSED,
    WP_TRYLOCK_FAILED,
    fault_in,
    pte_get,
    set_pte_at,
)
from mmemu.mm.mmap import PAGE_SIZE, MmStruct
from mmemu.mm.swap_state import swapper_space
from mmemu.mm.swapfile import (
    FREE_SWAP_BUSY,
    FREE_SWAP_DELETED,
    FREE_SWAP_TRYLOCK_FAILED,
    swap_info,
)
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.lowlevel import reach
from mmemu.mm.page import Page
from mmemu.mm.rmap import page_referenced
from mmemu.mm.vmscan import lru_cache_add, reclaim_page
from mmemu.mm.fork import dup_mm
from mmemu.races.mm import written_anon_page
from mmemu.races.notifier import DRIVER_AXES, guest, guest_fault

@mmemu.scenario("swap:swapin-vs-guest-swapin", axes=DRIVER_AXES, filter=supports_api,
                reaches=[SWAPPED_IN, SWAPIN_PTE_CHANGED], max_preemptions=1,
                catches=[SWAP_NO_PTE_SAME],
                bound_reason="more than 5,800 traces unbounded with KVM; 53-59 executions "
                             "per driver at one preemption (1.4 s for the six runs).  Two "
                             "preemptions (362-466 executions, 10 s) catch 10 more source "
                             "mutants of drivers/ and mm/memory.py (benchmarks/mutation.py), "
                             "each caught by another suite of the main job")
async def swapin_vs_guest_swapin(sim: Any) -> None:
    """A CPU write fault and a guest read fault swap in the same page.

    Setup: an anonymous page, mapped by the guest, swapped out (its pte is
    a swap entry, the page freed, the translation invalidated).

    CPU0 (write fault: do_swap_page)           CPU1 (guest fault: GUP, do_swap_page)
    1. lookup_swap_cache, else                 1. the same: one of them reads
       read_swap_cache_async (a new page          the page into the swap cache,
       in the swap cache, locked for "I/O")       the other finds it there
    2. lock_page; PTL; pte_same?               2. lock_page; PTL; pte_same?
    3. set_pte_at; page_add_anon_rmap          3. (the loser: the pte changed:
    4. swap_free; unlock_page                     unlock, put_page, retry the
    5. write: do_wp_page (the page is             walk: the pte is present)
       shared with the swap cache)             4. install the translation

    There are 2 critical interleavings that matter:
    - both find the page (one read it in, the other looked it up) and both
      wait for the page lock: the second to get it must see the pte
      changed and back off (dropping its lookup reference), or the page
      gets two mappings for one pte and a reference nobody drops;
    - the winner's swap_free drops the slot while the loser still holds
      the page from the swap cache: the loser's recheck under the PTL is
      what keeps it from mapping a page the swap slot no longer owns.
    Without that recheck (mutant ``memory:swap-no-pte-same``) the loser
    maps the page a second time over the winner's pte.

    Harmless: one swap-in entirely before the other (the second finds a
    present pte and never reaches do_swap_page).

    At the end: the pte maps the page once (``_mapcount`` 0); the end
    check of mmemu.check.notifier compares the guest's translation, if
    any, with the pte.
    """
    g = await guest(sim, kind="anon")
    await guest_fault(g, False)
    for e in g.driver.tlb.entries.values():
        e.young = False
    sim.check(await reclaim_page(g.page), "setup: reclaim did not swap the page out")
    async with sim.cpus() as cpus:
        cpus.start(fault_in, g.mm, g.addr, True, name="cpu write fault")
        cpus.start(guest_fault, g, False, name=g.driver.name)
    pte = pte_get(g.mm, g.addr)
    sim.check(pte is not None and pte.present and pte.page is not None,
              f"after two swap-ins the pte is {pte!r}")
    assert pte is not None and pte.page is not None
    sim.check(pte.page._mapcount.counter == 0,
              f"page{pte.page.pfn} is mapped by one pte but its _mapcount is "
              f"{pte.page._mapcount.counter} (expected 0)", details=pte.page.dump())


async def _swapped_out(sim: Any, *, slots: int | None = 1) -> tuple[MmStruct, int, int]:
    """Setup: an anonymous page written once, then swapped out by reclaim
    to a swap device of ``slots`` slots (the pte holds the only reference to
    the slot; the page is free).  With one slot in use the device is full
    (vm_swap_full()), so a swap-in's remove_exclusive_swap_page takes the
    page out of the swap cache and frees the slot at once when nobody else
    holds it; ``slots=None`` keeps the kernel's roomy default."""
    kernel, mm, addr, page = await written_anon_page(sim)
    if slots is not None:
        kernel.data["swap_slots"] = slots
    pte = pte_get(mm, addr)
    assert pte is not None
    set_pte_at(mm, addr, pte.replace(young=False))  # old: reclaim takes it
    await lru_cache_add(page)
    sim.check(await reclaim_page(page), "setup: reclaim did not swap the page out")
    swp = pte_get(mm, addr)
    assert swp is not None and swp.swp is not None
    return mm, addr, swp.swp.offset


async def _swapped_in_by_read(sim: Any, *, old: bool = False) -> tuple[MmStruct, int, Page]:
    """Setup: an anonymous page swapped out to a roomy device and read back
    in: it stays in the swap cache, clean, with its slot (the cache's
    count); its pte is present and read-only (``old``: not young, so that
    reclaim takes it), and the page is on the LRU, as read_swap_cache_async's
    lru_cache_add_active puts it."""
    mm, addr, slot = await _swapped_out(sim, slots=None)
    await fault_in(mm, addr, False)
    pte = pte_get(mm, addr)
    assert pte is not None and pte.page is not None
    page = pte.page
    sim.check(swapper_space().page_tree.get(slot) is page,
              "setup: the read swap-in did not leave the page in the swap cache")
    if old:
        set_pte_at(mm, addr, pte.replace(young=False))
    await lru_cache_add(page)
    return mm, addr, page


def _check_swapped_in(sim: Any, mm: MmStruct, addr: int, slot: int) -> None:
    """The end state of two swap-in faults of one pte."""
    pte = pte_get(mm, addr)
    sim.check(pte is not None and pte.present and pte.page is not None,
              f"after both faults the pte is {pte!r}, not a present page")
    assert pte is not None and pte.page is not None
    page = pte.page
    cached = swapper_space().page_tree.get(slot)
    in_cache = cached is page
    sim.check(page._mapcount.counter == 0,
              f"page{page.pfn} has mapcount {page._mapcount.counter + 1}, but one pte maps "
              f"it: the swap-in was mapped twice", details=page.dump())
    want = 1 + int(in_cache)
    sim.check(page._count.counter == want,
              f"page{page.pfn} has count {page._count.counter}, expected {want} (the pte"
              f"{', the swap cache' if in_cache else ''})", details=page.dump())
    count = swap_info().swap_map.get(slot, 0)
    want_slot = int(cached is not None)
    sim.check(count == want_slot,
              f"swap slot {slot} has count {count}, expected {want_slot} (no swap pte is "
              f"left{'; the swap cache holds it' if want_slot else ''}): a slot reference "
              f"{'leaked' if count > want_slot else 'was dropped twice'}")
    sim.check(mm.anon_rss == 1, f"mm->anon_rss is {mm.anon_rss}, but one anonymous pte is present")


@mmemu.scenario("swap:fault-vs-fault", axes={"api": ["2.6.27", "modern"]},
                reaches=[SWAPPED_IN, SWAPIN_PTE_CHANGED, SWAPIN_SLOT_GONE, WP_TRYLOCK_FAILED],
                catches=[SWAP_NO_PTE_SAME], max_preemptions=2,
                bound_reason="unbounded: not exhausted after 13,000 traces (37 s CPU); "
                             "343 executions at two preemptions, which "
                             "remove_exclusive_swap_page's count mutant needs (one "
                             "preemption misses it)")
async def fault_vs_fault(sim: Any) -> None:
    """Two CPUs fault on one swapped-out pte, one reading, one writing,
    with the swap device full.

    CPU0 and CPU1 (handle_pte_fault -> do_swap_page, mmap_sem read)
    1. lookup_swap_cache(slot) (a reference), else read_swap_cache_async:
       swap_duplicate; a new page, locked, added to the swap cache, "read"
       (unlocked); None if the slot was freed meanwhile: PTL, pte_same?,
       back out
    2. lock_page; PTL; pte_same(*pte, orig)?  no: unlock, put, done
    3. set_pte_at (the write: writable if can_share_swap_page);
       page_add_anon_rmap; anon_rss++
    4. swap_free(slot); swap full: remove_exclusive_swap_page (count 2
       and slot count 1: out of the swap cache); unlock_page; PTL unlock

    There are 3 critical interleavings that matter:
    - both at 1 before either adds the page: one adds it, the other's
      add_to_swap_cache meets -EEXIST and it finds that page on its retry;
      both hold a reference, one maps it at 3 and the other's pte_same at 2
      fails (it drops its reference);
    - the loser at 1 after the winner's 4: the page left the swap cache
      and the slot is free; read_swap_cache_async's swap_duplicate fails,
      and the PTL recheck sees the pte changed and backs out;
    - the loser's reference from 1 taken before the winner's 4:
      remove_exclusive_swap_page sees count 3 and leaves the page in the
      swap cache (the slot with it); the loser's pte_same at 2 fails.
    Without the pte_same recheck at 2 (mutant ``memory:swap-no-pte-same``)
    or without the PTL around 2-4 both map the page: mapcount 2 for one
    pte, the slot freed twice.

    Harmless: one fault entirely before the other (the second finds a
    present pte).

    What it adds to swap:swapin-vs-guest-swapin (a roomy device, a guest):
    the full device, the only way the main job reaches
    remove_exclusive_swap_page and the freed-slot back-out, and a read
    against a write of two CPUs.  Measured with benchmarks/mutation.py:
    of do_swap_page's 17 mutants it catches the same 9 as
    swap:swapin-vs-guest-swapin; of swap_state.py's and swapfile.py's 33 it
    catches 16, where swap:reclaim-anon-vs-guest-fault and
    swap:swapin-vs-guest-swapin together catch 14 -- it adds
    remove_exclusive_swap_page's count test and read_swap_cache_async's
    retry test.  A roomy device (the page stays in the swap cache) added no
    catch and is not run.  It runs in both generations: in the modern one
    the write that cannot share (step 3 maps the page read-only) goes on to
    do_wp_page, whose wp_can_reuse_anon_folio reuses a swap-cache page only
    under folio_trylock (then folio_free_swap and the refcount test); while
    the other fault holds the page lock for its step 2 the trylock fails and
    the writer copies (a goal of the suite, in both generations: 2.6.27's
    do_wp_page takes the same trylock around can_share_swap_page).  It is the only suite that reaches that trylock failing
    (the source mutant dropping the trylock test is caught here alone;
    swap:swapin-vs-guest-swapin caught it only at two preemptions).

    At the end: the pte maps one page with mapcount 1 and the count of the
    pte plus the swap cache's (if the page is still there); the slot's
    count is the swap cache's alone; ``anon_rss`` is 1.
    """
    mm, addr, slot = await _swapped_out(sim)
    async with sim.cpus() as cpus:
        cpus.start(fault_in, mm, addr, False, name="read")
        cpus.start(fault_in, mm, addr, True, name="write")
    _check_swapped_in(sim, mm, addr, slot)


#: goals of swap:write-vs-reclaim
SWAPPED_OUT_DIRTY = "swap: reclaim unmapped a dirty pte of a swap-cache page and wrote it out"
REFERENCED_KEPT = "swap: the write made the page young again: reclaim kept it"


async def _kswapd(mm: MmStruct, page: Page) -> None:
    """kswapd's two passes over one page: shrink_active_list ages it
    (page_referenced clears the accessed bits), then shrink_inactive_list
    reclaims it."""
    await page_referenced(page, False)
    mapped_dirty = False
    pte_hooks = mm.kernel.pte_hooks

    def watch(mm: Any, address: int, old: Any, new: Any) -> None:
        nonlocal mapped_dirty
        if old is not None and old.present and old.page is page and old.dirty \
                and (new is None or not new.present):
            mapped_dirty = True

    pte_hooks.append(watch)
    try:
        freed = await reclaim_page(page)
    finally:
        pte_hooks.remove(watch)
    if freed and mapped_dirty:
        reach(SWAPPED_OUT_DIRTY)
    elif not freed:
        reach(REFERENCED_KEPT)


def _write_vs_reclaim_goals(params: dict[str, Any]) -> list[str]:
    """The write copies while kswapd holds the page: 2.6.27's trylock fails;
    the modern reuse test sees kswapd's isolation reference first."""
    busy = WP_TRYLOCK_FAILED if params.get("api") == "2.6.27" else WP_EXTRA_REFERENCE
    return [SWAPPED_OUT_DIRTY, REFERENCED_KEPT, busy, WP_REUSED]


@mmemu.scenario("swap:write-vs-reclaim", axes={"api": ["2.6.27", "modern"]},
                reaches=_write_vs_reclaim_goals,
                max_preemptions=1,
                bound_reason="unbounded: 8,968 traces, 102 s (main 4208360); 42 executions at one "
                             "preemption reach its three goals, and the lost dirty bit "
                             "needs none (the write, then kswapd)")
async def write_vs_reclaim(sim: Any) -> None:
    """A process writes a page it swapped in by reading, while kswapd ages
    and reclaims it.

    Setup: an anonymous page swapped out and read back in (a roomy swap
    device: the page stays in the swap cache, clean -- the slot holds its
    data -- and its pte is read-only; the model puts it on the LRU as
    read_swap_cache_async's lru_cache_add_active does).

    CPU0 (write fault: do_wp_page)             CPU1 (kswapd)
    1. PTL; the pte is read-only               A. page_referenced: clear the
    2. trylock_page: can_share_swap_page          pte's accessed bit
       (mapcount 1, the slot's only user       B. isolate; lock_page
       the swap cache): reuse in place;        C. try_to_unmap_one: young?
       else copy (COW)                            keep it; else clear the pte:
    3. the pte writable, young and DIRTY;         a dirty pte moves its bit to
       the page stays clean (2.6.27 dirties       the page (set_page_dirty);
       only a shared file page here)              the swap entry goes in
                                               D. PageDirty: pageout (writes
                                                  the slot; instant here)
                                               E. __remove_mapping: freeze,
                                                  out of the swap cache; free

    There are 3 critical interleavings that matter:
    - 1-3 before A: the page's newest data is only in the page, and only
      the pte's dirty bit says so; C must hand it to the page so that D
      writes the slot before E frees the page.  Without it (the source
      mutant of try_to_unmap_one dropping ``page.flags |= PG_dirty``) E
      frees a clean page whose slot holds the data from before the write,
      and the next swap-in reads that back: DataLoss (the page-state
      checker's swap rule);
    - 1-3 between A and C: the write made the pte young again, C keeps the
      page (SWAP_FAIL) and it goes back to the LRU;
    - 2 while CPU1 holds the page lock (B-E): the trylock fails and the
      write copies the page (COW); C then finds the pte mapping the copy
      and E frees the swap-cache page with no swap pte left to read its
      slot.
    Harmless: the write after C (it faults on the swap entry and swaps the
    page in again, from the swap cache or from the written slot).

    The modern generation runs it too, for its reuse test
    (wp_can_reuse_anon_folio): the reuse at 2 frees the swap slot
    (folio_free_swap: the page leaves the swap cache, so reclaim gives it a
    new slot and writes it there), and while kswapd holds the page (B-E)
    its isolation reference makes the refcount test copy before any
    trylock.  The write must reuse the page when it is the pte's alone (a
    goal of both generations).  A reuse test that never passes (a source
    mutant of benchmarks/mutation.py compares the final count with 0)
    loses no data here, but copies a page the process owns alone -- the
    copy the kernel must not make, since a page pinned by get_user_pages
    then loses its user mapping (the class of bug the COW rework of
    2020-22 dealt with: 09854ba94c6a "mm: do_wp_page() simplification",
    v5.9, then PageAnonExclusive, v5.19).
    """
    mm, addr, page = await _swapped_in_by_read(sim)
    async with sim.cpus() as cpus:
        cpus.start(fault_in, mm, addr, True, name="write")
        cpus.start(_kswapd, mm, page, name="kswapd")


#: goals of swap:fork-swapin-vs-write
CHILD_SHARES = "swap: the child swapped in the page the parent left in the swap cache"
PARENT_COPIED = "swap: the parent's write copied the page (the child's swap pte still needs it)"


async def _write_copied(mm: MmStruct, addr: int, page: Page) -> None:
    await fault_in(mm, addr, True)
    pte = pte_get(mm, addr)
    if pte is not None and pte.present and pte.page is not page:
        reach(PARENT_COPIED)


async def _child_swapin(child: MmStruct, addr: int, page: Page) -> None:
    await fault_in(child, addr, False)
    pte = pte_get(child, addr)
    if pte is not None and pte.present and pte.page is page:
        reach(CHILD_SHARES)


@mmemu.scenario("swap:fork-swapin-vs-write", axes={"api": ["2.6.27", "modern"]},
                reaches=[PARENT_COPIED, CHILD_SHARES])
async def fork_swapin_vs_write(sim: Any) -> None:
    """After fork, an anonymous page both processes map is swapped out; the
    parent swaps it back in by reading, then writes it while the child
    swaps it in.

    Setup: parent and child map the page read-only (fork's COW); reclaim
    puts a swap entry in both ptes (the slot's count is 2); the parent's
    read fault brings the page into the swap cache and maps it read-only
    (the slot: the cache's count and the child's).

    CPU0 (parent: write fault, do_wp_page)     CPU1 (child: read fault, do_swap_page)
    1. PTL; the pte is read-only               1. lookup_swap_cache: the page
    2. may the page be reused in place?           (a reference)
       2.6.27: trylock_page;                   2. lock_page; PTL; pte_same?
       can_share_swap_page: mapcount +         3. set_pte_at (read-only);
       swapcount - 1 == 1 (the child's            page_add_anon_rmap; swap_free
       swap pte counts);                          (the child's slot reference)
       modern: wp_can_reuse_anon_folio:        4. unlock_page
       refcount <= 1 + swapcache, trylock,
       folio_free_swap (fails while the
       child's swap pte holds the slot),
       refcount == 1
    3. no: copy the page (COW) and map the
       copy writable

    There are 2 critical interleavings that matter:
    - 2 before the child's 1: the page's only pte is the parent's, but the
      child's swap pte still reaches it through the slot: the reuse test
      must count that (2.6.27's swapcount; today's refcount test after a
      folio_free_swap that cannot free a slot still in use) and copy.  A
      reuse here (the modern final test made ``== 2``, a source mutant of
      benchmarks/mutation.py) maps the page writable in the parent, and the
      child's swap-in then maps the same page: the parent's writes show in
      the child (BadPtePermission: a writable pte to a page two ptes map);
    - 2 while the child holds the page lock (2-4): the trylock fails and
      the parent copies.
    Harmless: the child's swap-in entirely before 1 (mapcount 2: copy).

    At the end: the parent writes to a page of its own; the child maps the
    page that was swapped out (or nothing else).
    """
    kernel, mm, addr, page = await written_anon_page(sim, npages=8)
    child = await dup_mm(mm)
    for m in (mm, child):
        pte = pte_get(m, addr)
        assert pte is not None and pte.page is page
        set_pte_at(m, addr, pte.replace(young=False))  # old: reclaim takes it
    await lru_cache_add(page)
    sim.check(await reclaim_page(page), "setup: reclaim did not swap the shared page out")
    await fault_in(mm, addr, False)
    pte = pte_get(mm, addr)
    assert pte is not None and pte.page is not None
    swapped = pte.page
    sim.check(swapper_space().page_tree.get(swapped.private) is swapped,
              "setup: the parent's read swap-in did not leave the page in the swap cache")
    async with sim.cpus() as cpus:
        cpus.start(_write_copied, mm, addr, swapped, name="parent")
        cpus.start(_child_swapin, child, addr, swapped, name="child")
    mine, theirs = pte_get(mm, addr), pte_get(child, addr)
    assert mine is not None and theirs is not None
    sim.check(mine.write and mine.page is not theirs.page,
              f"after the parent's write fault its pte is {mine!r} and the child's {theirs!r}")


#: goal of swap:dontneed-vs-reclaim
ZAPPED_SWAP_PTE = "swap: MADV_DONTNEED zapped a swap pte (free_swap_and_cache)"


async def _dontneed(mm: MmStruct, addr: int) -> None:
    """MADV_DONTNEED of the page (mmap_sem for read): zap_pte_range under
    the PTL; a swap pte goes to free_swap_and_cache."""
    zapped_swap = False
    pte_hooks = mm.kernel.pte_hooks

    def watch(m: Any, address: int, old: Any, new: Any) -> None:
        nonlocal zapped_swap
        if m is mm and old is not None and old.swp is not None and old.swp.type == "swap" \
                and new is None:
            zapped_swap = True

    pte_hooks.append(watch)
    try:
        ret = await sys_madvise(mm, addr, PAGE_SIZE, MADV_DONTNEED)
    finally:
        pte_hooks.remove(watch)
    assert ret == 0, ret
    if zapped_swap:
        reach(ZAPPED_SWAP_PTE)


@mmemu.scenario("swap:dontneed-vs-reclaim", axes={"api": ["2.6.27"]},
                reaches=[ZAPPED_SWAP_PTE, FREE_SWAP_TRYLOCK_FAILED, FREE_SWAP_DELETED,
                         FREE_SWAP_BUSY])
async def dontneed_vs_reclaim(sim: Any) -> None:
    """MADV_DONTNEED of a page that sits in the swap cache, while kswapd
    reclaims it.

    Setup: an anonymous page swapped out and read back in (a roomy swap
    device: the page stays in the swap cache, clean, and keeps its slot,
    whose count is the cache's; the pte is present, old, read-only), on
    the LRU.

    CPU0 (madvise(MADV_DONTNEED):              CPU1 (kswapd: shrink_page_list)
    zap_pte_range, under the PTL)              A. isolate_lru_page (a reference);
    1. the pte is present: clear it, drop         trylock_page
       the rmap, free the page at the tlb      B. try_to_unmap_one: the pte
       flush (only the cache holds it then)       becomes swap entry `slot`
    2. the pte is a swap entry:                   (swap_duplicate: count 2)
       free_swap_and_cache: swap_entry_free    C. clean: no pageout;
       (count 2 -> 1: only the cache);            __remove_mapping: freeze the
       find_get_page (a reference);               count at 2 (cache + ours):
       trylock_page                               out of the swap cache,
    3. locked: put it back, done; else            swap_free; free the page.
       page_count == 2 (cache + ours)?            The freeze fails (a third
       delete_from_swap_cache (frees the          reference): unlock; putback
       slot), SetPageDirty; unlock; put           (drops A's)

    There are 3 critical interleavings that matter:
    - 2 after B while CPU1 holds the page lock: the trylock fails and the
      zap leaves the page to reclaim, dropping its lookup reference (if it
      did not, the page would leak; if it went on, it would unlock
      reclaim's lock: "unlock_page of an unlocked page" when reclaim
      unlocks);
    - 2's lookup reference taken before C's freeze: the freeze fails,
      reclaim unlocks and puts the page back; then the trylock succeeds
      with the count at 2 and the zap takes the page out of the swap cache
      itself (slot and page freed, the goal "took the page out of the
      swap cache");
    - the trylock between reclaim's unlock and its putback: count 3, the
      page stays in the swap cache with its slot (a later reclaim frees
      it; nothing maps it).
    Harmless: 1 before B (reclaim finds the page unmapped and frees it
    with its slot); reclaim done before 2 (swap_entry_free drops the last
    count: no page to look up).

    At the end (the counters checker's BadSwapCount): every slot's count
    is the swap ptes that hold it (none are left) plus the swap cache's;
    the page-state checker: no page reference leaked or dropped twice.

    2.6.27 only: the modern free_swap_and_cache (__try_to_reclaim_swap) is
    the same protocol with folios, not modelled separately.
    """
    mm, addr, page = await _swapped_in_by_read(sim, old=True)
    async with sim.cpus() as cpus:
        cpus.start(_dontneed, mm, addr, name="madvise")
        cpus.start(reclaim_page, page, name="kswapd")
    after = pte_get(mm, addr)
    sim.check(after is None, f"after MADV_DONTNEED the pte is {after!r}, not none")


__all__ = ["CHILD_SHARES", "PARENT_COPIED", "fork_swapin_vs_write", "REFERENCED_KEPT", "SWAPPED_OUT_DIRTY", "ZAPPED_SWAP_PTE", "dontneed_vs_reclaim",
           "fault_vs_fault", "swapin_vs_guest_swapin", "write_vs_reclaim"]
