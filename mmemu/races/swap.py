"""Race suite for the reclaim of anonymous memory: kswapd swaps out a page a
secondary MMU maps, while the guest faults it (back) in.

Emulates: mm/vmscan.c (shrink_page_list: add_to_swap, try_to_unmap,
pageout, __remove_mapping of a swap cache page), mm/swap_state.c and
mm/memory.c (do_swap_page) against the drivers (2.6.27; modern: the
CLEAR bracket around try_to_unmap_one)

The checks: no page freed under a translation (FreedPageStillMapped), no
access through a stale one (SecondaryUseAfterFree), and at the end every
translation maps what the pte maps now (IncoherentTranslation, the end check
of mmemu.check.notifier).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import guarded, supports_api
from mmemu.mm.memory import SWAPPED_IN
from mmemu.mm.vmscan import reclaim_page
from mmemu.races.notifier import DRIVER_AXES, guest, guest_fault


@mmemu.scenario("swap:reclaim-anon-vs-guest-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["kvm:seq-outside-lock", "hmm:no-retry", "gru:no-dropin-drop",
                         "sva:no-flush"],
                reaches=["vmscan: __remove_mapping froze and freed the page", SWAPPED_IN],
                max_preemptions=2,
                bound_reason="more than 1,000 traces unbounded per driver; "
                             "kvm:seq-outside-lock needs two preemptions")
async def reclaim_anon_vs_guest_fault(sim: Any) -> None:
    """Reclaim swaps out an anonymous page the guest maps; the guest faults.

    CPU0 (shrink_page_list)                    CPU1 (guest fault)
    1. isolate; trylock_page; add_to_swap:     F1. seq = mmu_notifier_seq
       a slot, the swap cache, PG_dirty        F2. GUP: present pte (page
    2. try_to_unmap_one: young? (pte and           ref), or a swap pte:
       secondary); ptep_clear_flush_notify         do_swap_page (lookup_swap_
       (driver: seq++, zap); the pte becomes       cache / read_swap_cache_
       the swap entry                              async, lock_page, map it)
    3. pageout (instant); __remove_mapping:    F3. lock; retry if seq changed
       freeze(2), delete from the swap cache,  F4. install; unlock; put
       swap_free; free the page                X. access

    The guest read the page long ago: its translation is old, so 2 does
    not keep the page for being young.

    There are 3 critical interleavings that matter:
    - F2 before 2, F3 after 2: the seq changed, F3 retries; the second GUP
      finds the swap pte and swaps the page back in (the same page, from
      the swap cache, if 3 has not freed it; a new one if it has);
    - F2 before 3 holds a reference: the freeze fails, the page stays in
      the swap cache; do_swap_page maps it again;
    - F2's do_swap_page between 2 and 3: lock_page waits for reclaim's
      page lock; then the freeze (with F2's lookup reference) fails, or the
      page was freed first and F2 reads a new one.
    Bumping the seq outside the driver lock (``kvm:seq-outside-lock``) or
    skipping the retry (``hmm:no-retry``) installs the page 3 frees.

    Harmless: F4 before 2 (2 sees the new young bit and keeps the page, or
    zaps it); the whole fault after 3 (a clean swap-in).
    """
    g = await guest(sim, kind="anon")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
    for e in g.driver.tlb.entries.values():
        e.young = False  # used long ago: reclaim may take the page
    async with sim.cpus() as cpus:
        cpus.start(reclaim_page, g.page, name="kswapd")
        cpus.start(guest_fault, g, False, name=g.driver.name)


__all__ = ["reclaim_anon_vs_guest_fault"]
