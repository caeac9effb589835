"""Race suites for the aging walks that only look at accessed bits, against
a guest that uses the page: idle page tracking (->clear_young) and
khugepaged's scan (->test_young).

Emulates: mm/page_idle.c (page_idle_bitmap_write / page_idle_bitmap_read
for one page: page_idle_clear_pte_refs -> ptep_clear_young_notify ->
->clear_young; 4.3+, the modern generation only) and mm/khugepaged.c's
referenced test (khugepaged_scan_pmd -> mmu_notifier_test_young; 2.6.38+)
against the drivers

Neither walk frees or unmaps anything: what a missing or misordered step
breaks is the answer.  A guest touches its memory through its own
translations, whose accessed bits the CPU ptes never see; a walk that does
not ask the secondary MMU calls the guest's hottest pages idle (the
proactive reclaim built on idle tracking then takes them) or cold
(khugepaged never collapses them).  Only drivers that implement the
callback can be asked, as in the kernel: GRU, HMM mirrors and an SVA IOTLB
answer nothing, and for them the suites check only what the CPU side
decides.

The checks: mmemu.check's aging rule, on in every suite
(AgingMissedSecondaryReference: an aging question answered "old" while a
driver that implements the callback holds a young translation of the
page), and the idle suite's own: a page used only before it was marked
idle reads back idle (PageNeverIdle).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import guarded, supports_api
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import reach, step
from mmemu.kernel.locking import down_read, up_read
from mmemu.mm.khugepaged import SCAN_NO_TEST_YOUNG, khugepaged_scan_referenced
from mmemu.mm.memory import CLEAR_YOUNG_NO_NOTIFY, pte_get, set_pte_at
from mmemu.mm.mmap import PAGE_SIZE, find_vma
from mmemu.mm.page import PG_idle, PG_referenced, PG_young
from mmemu.mm.page_idle import IDLE_SET_BEFORE_CLEAR, page_idle_bitmap_read, page_idle_bitmap_write
from mmemu.races._filters import answers
from mmemu.races.modern import MODERN_DRIVER_AXES
from mmemu.races.notifier import DRIVER_AXES, Guest, guest, guest_fault


class PageNeverIdle(InvariantViolation):
    """A page nobody used since it was marked idle reads back as used."""


#: coverage events (reached on the walker's CPU)
IDLE_SAW_USE = "page_idle: the read found a use after the marking (not idle)"
IDLE_STAYED_IDLE = "page_idle: a page used only before the marking read back idle"
SCAN_SAW_GUEST = "khugepaged: the scan counted the guest's use (->test_young)"


def _idle_goals(params: dict[str, Any]) -> list[str]:
    """Every driver: the walk reached the guest's pte, and a page used only
    before its marking reads back idle.  A driver with ->clear_young: some
    read also finds the guest's use after the marking."""
    goals = ["step:ptep_test_and_clear_young", IDLE_STAYED_IDLE]
    if answers(params, "clear_young"):
        goals.append(IDLE_SAW_USE)
    return goals


async def _aged_guest(sim: Any, *, translation: bool) -> Guest:
    """An anonymous page the CPU mapped, its PG_referenced/PG_young/PG_idle
    clear.  With ``translation`` the guest has used it before: its
    translation is there, and it and the CPU pte are old (aged since);
    without, the CPU pte is young (the CPU's use before the race)."""
    g = await guest(sim, kind="anon")
    if not translation:
        # the CPU used the page too, before the race: its pte is young
        pte = pte_get(g.mm, g.addr)
        assert pte is not None
        set_pte_at(g.mm, g.addr, pte.replace(young=True))
    if translation:
        await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
        for e in g.driver.tlb.entries.values():
            e.young = False
    g.page.flags &= ~(PG_referenced | PG_young | PG_idle)
    return g


@mmemu.scenario("aging:idle-vs-guest-access", axes=MODERN_DRIVER_AXES, filter=supports_api,
                catches=[CLEAR_YOUNG_NO_NOTIFY, IDLE_SET_BEFORE_CLEAR], reaches=_idle_goals)
async def idle_vs_guest_access(sim: Any) -> None:
    """A user marks a page idle and reads the bit back while the guest
    faults the page in and uses it.

    CPU0 (the user: /sys/kernel/mm/page_idle)  CPU1 (the guest)
    0. opens the bitmap                        F. fault: GUP (FOLL_TOUCH:
    1. bitmap_write: page_idle_clear_pte_refs:    mark_page_accessed clears
       rmap walk; PTL; ptep_clear_young_notify:   PG_idle), install the
       the pte's accessed bit, then each          translation (young), a
       driver's ->clear_young (KVM: test and      first access
       clear the sptes' bits, no flush)        X. access: the translation's
                                                  accessed bit is set
    2. set_page_idle
    3. the workload runs (a step of its own)
    4. bitmap_read: page_idle_clear_pte_refs
       again: any young bit clears PG_idle
    5. page_is_idle?

    The CPU used the page before the race: its pte is young.

    There are 2 critical interleavings that matter:
    - F and X before 0: uses from before the marking (the CPU's and the
      guest's).  1 must fold the young pte and translation into PG_young
      and clear them before 2 sets PG_idle, so that 5 reads idle.  Setting
      PG_idle first (mutant ``page_idle:set-idle-before-clear``) lets 1's
      young bits clear it at once: a page untouched since reads as used
      (PageNeverIdle; the CPU's young pte does it under every driver);
    - F before 0, X between 2 and 3: a use through the existing
      translation after the marking, which no CPU pte and no page flag
      records.  4 must ask the driver: with ->clear_young it finds the
      translation young and 5 reads not idle.  Without the callback
      (mutant ``memory:clear-young-no-notify``, the CPU ptes' bits only)
      the page reads idle while the guest's translation is young
      (AgingMissedSecondaryReference).
    Harmless: F after 2 (its GUP's mark_page_accessed clears PG_idle
    itself); X during 1 or 4 (before or after the driver's ->clear_young,
    it counts for the one read or the other); X after 4 (a use for the
    next read).  Drivers without ->clear_young (GRU, HMM, an SVA IOTLB)
    are never asked: only their faults are seen, as in the kernel, and
    only the first interleaving is checked for them.
    """
    g = await _aged_guest(sim, translation=False)
    # The check and the goals compare the order of the guest's access with
    # the user's milestones.  Each milestone is a step that reads the
    # translation's slot, which the access writes (its accessed bit): the
    # search orders the access against every milestone, whatever the walks
    # ask the driver.
    slot = g.driver.tlb.slot(g.driver.key_of(g.addr))
    marks: list[str] = []
    out: dict[str, bool] = {}

    async def user() -> None:
        await step("0. open /sys/kernel/mm/page_idle/bitmap", reads=(slot,))
        marks.append("begin")
        out["mapped"] = g.driver.key_of(g.addr) in g.driver.tlb.entries
        await page_idle_bitmap_write(g.page)
        await step("2. bitmap_write returned", reads=(slot,))
        marks.append("marked")
        await step("3. the workload runs", reads=(slot,))
        marks.append("reading")
        idle = await page_idle_bitmap_read(g.page)
        out["idle"] = idle
        if idle and "accessed" in marks and marks.index("accessed") < marks.index("begin"):
            reach(IDLE_STAYED_IDLE)
        if not idle and out["mapped"] and "used" in marks \
                and marks.index("marked") < marks.index("used"):
            reach(IDLE_SAW_USE)  # through the translation: the fault came before 0

    async def guest_use() -> None:
        await guest_fault(g, False)
        hit = await guarded(g.driver, "access", g.driver.access, g.addr)
        marks.append("accessed")
        if hit is not None:
            marks.append("used")  # through a translation: its accessed bit set

    async with sim.cpus() as cpus:
        cpus.start(user, name="user")
        cpus.start(guest_use, name=g.driver.name)
    if marks.index("accessed") < marks.index("begin") and not out["idle"]:
        raise PageNeverIdle(
            f"page{g.page.pfn} reads back as used, but its only use ({g.driver.name}'s "
            f"fault and access) came before it was marked idle", details=g.page.dump())


def _scan_goals(params: dict[str, Any]) -> list[str]:
    """Every driver: the scan tested the guest's pte.  A driver with
    ->test_young: some scan counts the guest's use."""
    goals = ["step:khugepaged_scan_pmd: pte_young(0x10000000)?"]
    if answers(params, "test_young"):
        goals.append(SCAN_SAW_GUEST)
    return goals


@mmemu.scenario("aging:scan-vs-guest-access", axes=DRIVER_AXES, filter=supports_api,
                catches=[SCAN_NO_TEST_YOUNG], reaches=_scan_goals)
async def scan_vs_guest_access(sim: Any) -> None:
    """khugepaged scans the guest's range for recently used pages while the
    guest uses its page.

    CPU0 (khugepaged: khugepaged_scan_pmd)     CPU1 (the guest)
    1. down_read(mmap_sem); find_vma           X. access: the translation's
    2. PTL; per present pte: pte_young,           accessed bit is set
       PG_young, PG_referenced, else
       mmu_notifier_test_young (KVM:
       kvm_test_age_hva under mmu_lock: any
       spte young?  Only looks: nothing is
       cleared)
    3. unlock; up_read

    The CPU pte is old and the page's flags clear; the guest's translation
    is old too (aged since its last use): its use can only show through X.

    There is 1 critical interleaving that matters:
    - X before 2's test_young: the guest used the page; a driver with
      ->test_young answers young and the page counts as referenced.
      Without the call (mutant ``khugepaged:no-test-young``, the scan from
      before 8ee53820edfd) it counts as cold while the translation is young
      (AgingMissedSecondaryReference).
    Harmless: X after 2 (the next scan sees it; test_young left the bit
    set).  Drivers without ->test_young are not asked, as in the kernel.
    """
    g = await _aged_guest(sim, translation=True)
    # the goal orders the access (a write of the translation's slot: its
    # accessed bit) against the scan's start, a step that reads the slot
    slot = g.driver.tlb.slot(g.driver.key_of(g.addr))
    marks: list[str] = []
    out: dict[str, int] = {}

    async def khugepaged() -> None:
        mm = g.mm
        await down_read(mm.mmap_sem, label="1. khugepaged: down_read(mmap_sem)")
        await step("1. khugepaged: find_vma", reads=((mm, "mmap"), slot))
        vma = find_vma(mm, g.addr)
        assert vma is not None
        marks.append("scanning")
        out["referenced"] = await khugepaged_scan_referenced(vma, g.addr, g.addr + PAGE_SIZE)
        if out["referenced"] and "accessed" in marks:
            reach(SCAN_SAW_GUEST)
        await up_read(mm.mmap_sem, label="3. khugepaged: up_read(mmap_sem)")

    async def guest_access() -> None:
        await guarded(g.driver, "access", g.driver.access, g.addr)
        marks.append("accessed")

    async with sim.cpus() as cpus:
        cpus.start(khugepaged, name="khugepaged")
        cpus.start(guest_access, name=g.driver.name)


__all__ = ["PageNeverIdle", "idle_vs_guest_access", "scan_vs_guest_access"]
