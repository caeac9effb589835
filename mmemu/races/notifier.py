"""Race suites for mmu notifiers: a secondary MMU (a driver) against the mm
paths that invalidate CPU ptes and free pages.

Emulates: mm/mmu_notifier.c and its callers in mm/memory.c, mm/rmap.c,
mm/mmap.c, mm/truncate.c, mm/vmscan.c (2.6.27), with each driver installed
in the ``mmemu.drivers`` entry-point group (``axes={"driver": ...}``) or the
one given by ``mmemu run SUITE --driver NAME_OR_PATH``.

What every suite checks: no page goes back to the allocator while a driver's
shadow TLB maps it (FreedPageStillMapped), no guest/device access goes
through a stale translation (SecondaryUseAfterFree), and when everything has
finished each remaining translation maps the page the CPU pte maps
(IncoherentTranslation).
"""

from __future__ import annotations

from typing import Any

import attrs

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import (
    Driver,
    DriverLoadError,
    available_drivers,
    guarded,
    load_driver,
    new_driver,
    supports_api,
)
from mmemu.check.notifier import IncoherentTranslation
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.filemap import AddressSpace
from mmemu.mm.memory import fault_in, pte_get, set_pte_at
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_munmap, do_mmap, exit_mmap, mm_alloc
from mmemu.mm.page import Page
from mmemu.mm.truncate import vmtruncate
from mmemu.mm.vmscan import PageLRU, lru_cache_add, reclaim_page


def _register_driver_mutants() -> None:
    """Import every installed driver so that its mutants are registered."""
    for name in available_drivers():
        try:
            load_driver(name)
        except DriverLoadError:
            pass  # reported when a suite runs with it


_register_driver_mutants()

#: every installed driver under every notifier API generation it supports
#: (``Driver.apis``; the ``filter=supports_api`` of each suite drops the
#: rest).  2.6.27 is the default generation: its combinations leave ``api``
#: unset, so they (and their replay tokens) are the ones from before the axis.
DRIVER_AXES: dict[str, Any] = {"api": [None, "modern"], "driver": available_drivers}


# ------------------------------------------------------- coverage goals
#
# What must happen at least once in a complete exploration for a suite to
# mean anything (mmemu.engine._coverage).  The kernel side is the same for
# every driver; the retry of the driver's own protocol is known only for the
# shipped drivers (a user's driver gets the kernel-side goals).

#: the secondary MMU had a translation and an invalidation took it away
ZAPPED = "secondary MMU: a live translation was zapped"
#: the guest/device fault came too late: nothing left to map
NOTHING_TO_MAP = "the guest fault found nothing to map"
#: each shipped driver's fault retrying because an invalidation overlapped it
#: (SVA has no retry: the IOMMU walks the CPU page table itself)
DRIVER_RETRY: dict[str, tuple[str, ...]] = {
    "kvm": ("step:4. kvm_release_pfn_clean (retry)",),
    "hmm": ("step:4. unlock(dmirror->lock) (retry)",),
}
GRU_IGNORED = "gru: the hardware ignored a dropin that a TLB invalidate overtook"
GRU_FAILACTIVE = "gru: a dropin was refused, a range invalidate is active (failactive)"


def driver_of(params: dict[str, Any]) -> str:
    """The driver name a suite runs with (the default one when unset)."""
    from mmemu.driver import DEFAULT_DRIVER
    return str(params.get("driver") or DEFAULT_DRIVER)


def goals(*kernel_side: str, **per_driver: tuple[str, ...]) -> Any:
    """``reaches=`` for a driver suite: the kernel-side goals, plus the
    driver's own (``per_driver[name]``; "retry" there stands for its
    DRIVER_RETRY entry)."""
    def resolve(params: dict[str, Any]) -> list[str]:
        d = driver_of(params)
        own: list[str] = []
        for g in per_driver.get(d, ()):
            own += DRIVER_RETRY.get(d, ()) if g == "retry" else (g,)
        return list(kernel_side) + own
    return resolve


@attrs.define(eq=False)
class Guest:
    kernel: Any
    mm: Any
    mapping: AddressSpace | None
    addr: int
    page: Page
    driver: Driver


async def guest(sim: Any, *, kind: str = "shared", attach: bool = True,
                npages: int = 6) -> Guest:
    """Setup (no steps): one mm with one one-page vma, faulted in.

    ``kind``: "shared" (MAP_SHARED file page: pagecache + pte), "private" (a
    MAP_PRIVATE file vma written to: an anonymous COW copy in the pte), or
    "anon".  The driver named by ``sim.params["driver"]`` is attached (its
    notifier registered) unless ``attach`` is False."""
    kernel = boot_checked(sim, npages=npages)
    mm = mm_alloc(kernel)
    mapping = None
    await down_write(mm.mmap_sem)
    if kind == "anon":
        vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
    else:
        mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
        flags = VM_READ | VM_WRITE | (VM_SHARED if kind == "shared" else 0)
        vma = await do_mmap(mm, 0, PAGE_SIZE, flags, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    addr = vma.vm_start
    await fault_in(mm, addr, write=kind != "shared")
    pte = pte_get(mm, addr)
    assert pte is not None and pte.page is not None
    # old enough to be reclaimed: the accessed bit is clear, the page on the LRU
    set_pte_at(mm, addr, pte.replace(young=False))
    if not PageLRU(pte.page):
        await lru_cache_add(pte.page)
    driver = new_driver(sim)
    if attach:
        ret = await driver.attach(kernel, mm)
        sim.check(ret == 0, f"{driver.name}: attach returned {ret}")
    return Guest(kernel, mm, mapping, addr, pte.page, driver)


async def guest_fault(g: Guest, write: bool = False) -> None:
    """The guest touches ``addr``: a secondary-MMU fault, then the access."""
    if await guarded(g.driver, "fault", g.driver.fault, g.addr, write):
        await guarded(g.driver, "access", g.driver.access, g.addr)
    else:
        mmemu.lowlevel.reach(NOTHING_TO_MAP)


async def attach_and_fault(g: Guest) -> None:
    """kvm_create_vm (mmu_notifier_register), then the first guest fault."""
    ret = await guarded(g.driver, "attach", g.driver.attach, g.kernel, g.mm)
    mmemu.lowlevel.current_simulation().check(ret == 0, f"attach returned {ret}")
    await guest_fault(g, write=True)


# ---------------------------------------------------------------- suites


@mmemu.scenario("notifier:register-vs-truncate", axes=DRIVER_AXES, filter=supports_api,
                catches=["mmu_notifier:register-unlocked"],
                reaches=goals(NOTHING_TO_MAP, kvm=("callback:kvm->invalidate_range_start",),
                              gru=("callback:gru->invalidate_range_start",),
                              hmm=("callback:hmm->invalidate",)))
async def register_vs_truncate(sim: Any) -> None:
    """mmu_notifier_register while a truncate is between range_start and range_end.

    CPU0 (vmtruncate of a MAP_PRIVATE file     CPU1 (the driver starts)
    whose page was COWed)
    1. i_size = 0; spin_lock(i_mmap_lock)      R. mmu_notifier_register:
    2. range_start                                down_write(mmap_sem),
    3. zap the pte; the COW page is freed         mm_take_all_locks (waits for
       (tlb gather)                               i_mmap_lock), hash, drop
    4. range_end; spin_unlock(i_mmap_lock)     F. guest fault: GUP + install
    5. truncate_inode_pages                    X. guest access

    There are 2 critical interleavings that matter:
    - R before 2: the driver sees start and end; F either installs before
      2 (and 2 zaps it) or retries until 4 (and GUP then fails: i_size 0).
    - R after 4: F finds nothing to map.
    R between 2 and 4 is what mm_take_all_locks forbids.  Without it (mutant
    ``mmu_notifier:register-unlocked``) F installs a translation to the COW
    page between 2 and 3, nobody zaps it, and 3 frees the page under it.

    Harmless: F and X after 5 (SIGBUS: nothing installed).
    """
    g = await guest(sim, kind="private", attach=False)
    async with sim.cpus() as cpus:
        cpus.start(vmtruncate, g.mapping, 0, name="truncate")
        cpus.start(attach_and_fault, g, name=g.driver.name)


@mmemu.scenario("notifier:truncate-vs-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["kvm:no-retry", "kvm:no-count", "gru:no-range-active",
                         "gru:no-dropin-drop", "hmm:no-retry", "sva:no-flush"],
                reaches=goals(ZAPPED, NOTHING_TO_MAP, kvm=("retry",), hmm=("retry",),
                              gru=(GRU_FAILACTIVE, GRU_IGNORED)))
async def truncate_vs_fault(sim: Any) -> None:
    """A guest fault on a file page that a truncate removes.

    CPU0 (vmtruncate)                          CPU1 (guest fault)
    1. i_size = 0                              F1. seq = mmu_notifier_seq
    2. range_start (driver: count++, zap)      F2. GUP (page ref)
    3. zap the pte                             F3. lock; retry if count or seq
    4. range_end (driver: seq++, count--)      F4. install; unlock; put
    5. truncate_inode_pages: free the page     X. access

    There are 2 critical interleavings that matter:
    - F2 before 3 and F3 between 2 and 4: count != 0, the fault waits for 4
      and retries (GUP then fails).  Without the count (mutant
      ``kvm:no-count``) or the retry test (``kvm:no-retry``) F4 installs a
      translation that nothing zaps, and 5 frees the page under it.
    - F3 after 4 with F1 before 4: seq changed, retry.

    Harmless: F4 before 2 (2 zaps it); F1 after 4 (GUP fails: SIGBUS).
    """
    g = await guest(sim, kind="shared")
    async with sim.cpus() as cpus:
        cpus.start(vmtruncate, g.mapping, 0, name="truncate")
        cpus.start(guest_fault, g, name=g.driver.name)


@mmemu.scenario("notifier:reclaim-vs-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["kvm:seq-outside-lock", "kvm:no-retry", "gru:no-dropin-drop",
                         "hmm:no-retry", "hmm:seq-outside-lock", "sva:no-flush"],
                max_preemptions=2,
                bound_reason="unbounded: 639 traces with GRU on 2.6.27, more than 600 with "
                             "KVM, more than the main job's budget allows; "
                             "kvm:seq-outside-lock needs two preemptions",
                reaches=goals("vmscan: __remove_mapping froze and freed the page",
                              "vmscan: __remove_mapping: the freeze failed (the page is busy)",
                              ZAPPED, kvm=("retry",), hmm=("retry",), gru=(GRU_IGNORED,)))
async def reclaim_vs_fault(sim: Any) -> None:
    """A guest fault on a file page that reclaim unmaps and frees.

    CPU0 (shrink_page_list)                    CPU1 (guest fault)
    1. isolate, lock the page                  F1. seq = mmu_notifier_seq
    2. try_to_unmap_one: young? (CPU pte and   F2. GUP (page ref)
       secondary: clear_flush_young)           F3. lock; retry if seq changed
    3. ptep_clear_flush; invalidate_page       F4. install; unlock; put
       (driver: lock, seq++, zap, unlock)      X. access
    4. __remove_mapping: freeze(2), remove
    5. free the page

    There are 2 critical interleavings that matter:
    - F2 before 3, F3 after 3: seq changed, retry; GUP faults a new page.
      Bumping seq after the driver drops its lock (mutant
      ``kvm:seq-outside-lock``) or ignoring it (``kvm:no-retry``) lets F4
      install a translation 3 already swept, and 5 frees the page under it.
    - F2's reference still held at 4: the freeze fails, the page is kept.

    Harmless: F4 before 2 (2 sees the young bit: SWAP_FAIL, kept) or before
    3 (3 zaps it).
    """
    g = await guest(sim, kind="shared")
    async with sim.cpus() as cpus:
        cpus.start(reclaim_page, g.page, name="kswapd")
        cpus.start(guest_fault, g, name=g.driver.name)


async def migrate(page: Page) -> None:
    """Page migration of one file page (isolate, migrate_pages, putback)."""
    from mmemu.mm.migrate import migrate_pages
    from mmemu.mm.page_alloc import alloc_page
    from mmemu.mm.vmscan import isolate_lru_page, putback_lru_page
    if await isolate_lru_page(page) != 0:
        return
    newpage = await alloc_page(label="migrate: alloc_page(newpage)")
    if await migrate_pages(page, newpage) != 0:
        await putback_lru_page(page)


@mmemu.scenario("notifier:migrate-vs-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["gru:no-dropin-drop", "hmm:seq-outside-lock"],
                max_preemptions=1,
                bound_reason="unbounded: 2,300-4,400 traces per driver, most not exhausted "
                             "in 12 s; 38-45 executions per driver at one preemption (1.4 s "
                             "for the six runs, 8.9 s at two).  Two preemptions catch "
                             "kvm:seq-outside-lock and 10 more source mutants of drivers/ "
                             "and mm/migrate.py (benchmarks/mutation.py), each caught by "
                             "another suite of the main job",
                reaches=goals("step:A. busy, -EAGAIN: spin_unlock(tree_lock)",
                              "step:4. set_pte_at(new page)", ZAPPED,
                              kvm=("retry",), hmm=("retry",), gru=(GRU_IGNORED,)))
async def migrate_vs_fault(sim: Any) -> None:
    """A guest fault on a file page that migration moves to a new page.

    CPU0 (migrate_pages)                       CPU1 (guest fault)
    1. isolate; lock the page                  F1. seq = mmu_notifier_seq
    2. try_to_unmap_one(migration):            F2. GUP (page ref; waits on
       ptep_clear_flush; invalidate_page           the migration entry)
       (driver: lock, seq++, zap, unlock);     F3. lock; retry if seq changed
       migration entry in the pte              F4. install; unlock; put
    3. move_to_new_page: freeze, copy          X. access
    4. remove_migration_ptes; free the old page

    There is 1 critical interleaving that matters:
    - F2 before 2, F3 after 2: seq changed, retry; GUP then waits for the
      migration entry and maps the new page.  Bumping seq outside the
      driver's lock (``kvm:seq-outside-lock``) lets F4 install the old page,
      which 4 frees -- an interleaving of two preemptions, which this suite
      does not explore (see its bound_reason): notifier:reclaim-vs-fault
      and swap:reclaim-anon-vs-guest-fault catch that mutant.
    - F2's reference at 3: the freeze fails, migration is retried later.

    Harmless: F4 before 2 (2 zaps it); F1 after 2 (GUP sees the entry).
    """
    g = await guest(sim, kind="shared", npages=8)
    async with sim.cpus() as cpus:
        cpus.start(migrate, g.page, name="migrate")
        cpus.start(guest_fault, g, name=g.driver.name)


async def munmap(mm: Any, addr: int) -> None:
    await down_write(mm.mmap_sem, label="munmap: down_write(mmap_sem)")
    await do_munmap(mm, addr, PAGE_SIZE)
    await up_write(mm.mmap_sem, label="munmap: up_write(mmap_sem)")


@mmemu.scenario("notifier:munmap-vs-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["kvm:no-count", "kvm:no-retry", "hmm:no-retry", "sva:no-flush"],
                reaches=goals(ZAPPED, NOTHING_TO_MAP, kvm=("retry",), hmm=("retry",)))
async def munmap_vs_fault(sim: Any) -> None:
    """A guest fault on an anonymous page that munmap frees.

    CPU0 (munmap)                              CPU1 (guest fault)
    1. down_write(mmap_sem)                    F1. seq = mmu_notifier_seq
    2. range_start (driver: count++, zap)      F2. GUP under mmap_sem read
    3. zap the pte, free the page (tlb gather)     (page ref)
    4. range_end (driver: seq++, count--)      F3. lock; retry if count/seq
    5. up_write                                F4. install; unlock; put
                                               X. access

    There is 1 critical interleaving that matters:
    - F2 before 1, F3 between 2 and 4: the GUP reference keeps the page
      through 3; count != 0 makes the fault wait and retry (GUP then finds
      no vma).  Without the count (``kvm:no-count``) or the retry
      (``kvm:no-retry``) F4 installs a translation, and F4's put_page frees
      the page under it.

    Harmless: F2 can't run inside 1-5 (mmap_sem); F4 before 2 (2 zaps it).
    """
    g = await guest(sim, kind="anon")
    async with sim.cpus() as cpus:
        cpus.start(munmap, g.mm, g.addr, name="munmap")
        cpus.start(guest_fault, g, name=g.driver.name)


def _hears_exit(params: dict[str, Any]) -> bool:
    """supports_api, and the driver has a ->release in that generation (a
    driver lists the generations where it has none in ``no_release_apis``:
    exit_mmap's notifier release never reaches it, see mmemu.drivers.gru)."""
    if not supports_api(params):
        return False
    try:
        cls = load_driver(str(params["driver"])) if params.get("driver") else None
    except DriverLoadError:
        return True
    return str(params.get("api", "2.6.27")) not in getattr(cls, "no_release_apis", ())


@mmemu.scenario("notifier:exit-vs-reclaim", axes=DRIVER_AXES, filter=_hears_exit,
                catches=["mmu_notifier:release-after-unhash"],
                reaches=goals("vmscan: __remove_mapping froze and freed the page", ZAPPED,
                              kvm=("a notifier was called after its ->release, before exit_mmap "
                                   "unhashed it",),
                              gru=("a notifier was called after its ->release, before exit_mmap "
                                   "unhashed it",)))
async def exit_vs_reclaim(sim: Any) -> None:
    """exit_mmap tears down a mm whose page the driver maps, while reclaim
    unmaps that page through rmap.

    CPU0 (exit_mmap)                           CPU1 (shrink_page_list)
    1. __mmu_notifier_release: ->release       R1. try_to_unmap_one:
       of every notifier (driver: zap all)         ptep_clear_flush
    2. unhash them all; synchronize_srcu       R2. invalidate_page: walk the
    3. unmap_vmas, free_pgtables                   notifier list
                                               R3. __remove_mapping; free

    There is 1 critical interleaving that matters:
    - R2 between 1 and 2: the notifier is still hashed, the driver zaps
      (again, harmlessly).  Unhashing before ->release (the 2012 bug, mutant
      ``mmu_notifier:release-after-unhash``) lets R2 find no notifier while
      the translation is still there, and R3 frees the page under it.

    Harmless: R1 after 3 (the page is no longer mapped: nothing to unmap).
    """
    g = await guest(sim, kind="shared")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
    tr = g.driver.tlb.entries.get(g.driver.key_of(g.addr))
    if tr is not None:
        tr.young = False  # aged: reclaim may take the page
    async with sim.cpus() as cpus:
        cpus.start(exit_mmap, g.mm, name="exit")
        cpus.start(reclaim_page, g.page, name="kswapd")
    sim.check(not g.driver.tlb.keys(),
              f"{g.driver.name}: translations left after exit_mmap: {g.driver.tlb.keys()}")


__all__ = ["Guest", "IncoherentTranslation", "attach_and_fault", "guest", "guest_fault"]
