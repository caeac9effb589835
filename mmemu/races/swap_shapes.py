"""Race suite for the swap-in of one page by two faults at once: the CPU and
the guest both fault an anonymous page that reclaim swapped out.

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
from mmemu.mm.memory import SWAPIN_PTE_CHANGED, SWAPPED_IN, fault_in, pte_get
from mmemu.mm.vmscan import reclaim_page
from mmemu.races.notifier import DRIVER_AXES, guest, guest_fault

@mmemu.scenario("swap:swapin-vs-guest-swapin", axes=DRIVER_AXES, filter=supports_api,
                reaches=[SWAPPED_IN, SWAPIN_PTE_CHANGED], max_preemptions=2,
                bound_reason="more than 5,800 traces unbounded with KVM (not exhausted in "
                             "2 minutes); 429 executions at 2 preemptions, the bound its "
                             "mutants were measured at (docs/mutation.md)")
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


__all__ = ["swapin_vs_guest_swapin"]
