"""Race suite for page aging: kswapd asks whether a page was used since the
last aging while a secondary MMU faults it in and uses it.

Emulates: mm/rmap.c (page_referenced, page_referenced_one:
ptep_clear_flush_young_notify -> ->clear_flush_young) against the drivers
(2.6.27; the same call in the modern generation)

Aging frees nothing: what a missing notification breaks is the answer.  A
page the guest keeps using through its translation looks old to the VM,
and reclaim evicts the guest's hottest memory.  The check, on in every suite
(mmemu.check.young): a driver that implements ->clear_flush_young and has a
young translation of the page when page_referenced_one asks must be counted
(``AgingMissedSecondaryReference``).  Drivers without it (GRU, HMM mirrors,
an SVA IOTLB) cannot be asked, as in the kernel.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check.young import AgingMissedSecondaryReference
from mmemu.driver import guarded, supports_api
from mmemu.mm.memory import SECONDARY_YOUNG
from mmemu.mm.page import PG_referenced
from mmemu.mm.rmap import page_referenced
from mmemu.races.notifier import DRIVER_AXES, guest, guest_fault


def _aging_goals(params: dict[str, Any]) -> list[str]:
    """The aging walk reached the guest's pte (page_referenced_one), and a
    driver that answers ->clear_flush_young must have said young."""
    from mmemu.races._filters import driver_class
    cls = driver_class(params)
    return ["step:ptep_clear_flush_young"] + (
        [SECONDARY_YOUNG] if getattr(cls, "clear_flush_young", None) is not None else [])


@mmemu.scenario("aging:referenced-vs-guest-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["memory:young-no-notify"], reaches=_aging_goals)
async def referenced_vs_guest_fault(sim: Any) -> None:
    """page_referenced (kswapd's aging) against a guest that faults and uses the page.

    CPU0 (page_referenced)                     CPU1 (guest fault)
    1. TestClearPageReferenced                 F1-F3. seq, GUP (FOLL_TOUCH:
    2. page_lock_anon_vma; walk the vmas           mark_page_accessed), lock,
    3. page_referenced_one: PTL;                   retry?
       ptep_clear_flush_young_notify: the      F4. install (young); unlock
       pte's accessed bit, then each driver's  X. access (sets the
       ->clear_flush_young (KVM: kvm_age_hva,      translation's young bit)
       test and clear the sptes' bits, flush)

    The CPU pte is old and PG_referenced clear at the start; the guest used
    the page since the last aging: its translation is young.

    There are 2 critical interleavings that matter:
    - F4/X before 3: 3 finds the translation young (again), the page is
      referenced;
    - F4/X after 3: the young translation from before 3 was counted at 3
      (and F2's mark_page_accessed at 1 if it ran first).
    Without ->clear_flush_young (mutant ``memory:young-no-notify``) 3 sees
    only the CPU pte, which is old: the page is reported unreferenced and
    reclaim would take it from under the guest.

    Harmless: X after 3 makes the translation young again for the next
    aging.
    """
    g = await guest(sim, kind="anon")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
    await guarded(g.driver, "access", g.driver.access, g.addr)
    g.page.flags &= ~PG_referenced

    async def kswapd() -> None:
        await page_referenced(g.page, False)

    async with sim.cpus() as cpus:
        cpus.start(kswapd, name="kswapd")
        cpus.start(guest_fault, g, False, name=g.driver.name)


__all__ = ["AgingMissedSecondaryReference", "referenced_vs_guest_fault"]
