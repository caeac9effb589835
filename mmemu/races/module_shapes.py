"""Race suite for a driver module unloaded right after its last
mmu_notifier_put, while an invalidation still walks the notifier list.

Emulates: mm/mmu_notifier.c (mmu_notifier_put: unhash under
mmu_notifier_mm->lock, free_notifier queued with call_srcu;
mmu_notifier_synchronize: srcu_barrier), the exit function of a module
whose notifiers come from mmu_notifier_get (drivers/misc/sgi-gru/grufile.c
gru_exit, the SMMUv3 SVA code), and mm/madvise.c (MADV_DONTNEED: an
invalidation that walks the list under SRCU).

mmu_notifier_put returns at once: the notifier is freed by its driver's
``free_notifier`` after an SRCU grace period, from whichever CPU ends it --
possibly long after the driver's last detach.  ``free_notifier`` is the
module's code, so the module's exit must wait for every such callback
(mmu_notifier_synchronize, 2c7933f53f6b, v5.4) before its text goes away.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import guarded, load_driver, supports_api
from mmemu.mm.mmu_notifier import SYNCHRONIZE_WAITED, module_unloaded
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.mmap import PAGE_SIZE
from mmemu.races.modern import MODERN_DRIVER_AXES
from mmemu.races.notifier import guest


def _put_does_not_wait(params: dict[str, Any]) -> bool:
    """A driver whose detach is mmu_notifier_put (it does not wait for its
    callbacks) in this generation: modern GRU, SVA."""
    if not supports_api(params) or not params.get("driver"):
        return False
    cls = load_driver(str(params["driver"]))
    return not cls().detach_waits_for_callbacks(str(params.get("api", "2.6.27")))


@mmemu.scenario("notifier:put-vs-module-exit", axes=MODERN_DRIVER_AXES,
                filter=_put_does_not_wait, reaches=[SYNCHRONIZE_WAITED])
async def put_vs_module_exit(sim: Any) -> None:
    """The driver's last detach and its module's exit, while
    madvise(MADV_DONTNEED) walks the notifier list.

    CPU0 (the driver: detach, module exit)     CPU1 (madvise(MADV_DONTNEED))
    P1. mmu_notifier_put: --users == 0         T1. range_start: srcu_read_lock,
    P2. hlist_del_init_rcu                         walk the list (the driver's
    P3. call_srcu(free_notifier)                   callbacks), srcu_read_unlock
    M1. module exit: mmu_notifier_synchronize  T2. zap, free the page
        (srcu_barrier: free_notifier ran)      T3. range_end: the same
    M2. the module's code is gone

    There is 1 critical interleaving that matters:
    - T1's or T3's srcu_read_lock before P2, its srcu_read_unlock after
      P3: the grace period ends at that unlock, which runs free_notifier
      on CPU1; M1 must wait for it.  A module exit that does not
      (mutants of mmu_notifier_synchronize) lets the unlock run
      free_notifier after M2: NotifierUseAfterFree.

    Harmless: the walk entirely before P2 or after P3's grace period (the
    callback runs at once, inside P3, or the walk never sees the notifier).
    """
    g = await guest(sim, kind="anon")
    driver = g.driver

    async def detach_and_unload() -> None:
        await guarded(driver, "detach", driver.detach)
        await guarded(driver, "module_exit", driver.module_exit)
        module_unloaded(type(driver).__module__)

    async with sim.cpus() as cpus:
        cpus.start(detach_and_unload, name=f"{driver.name} (module exit)")
        cpus.start(sys_madvise, g.mm, g.addr, PAGE_SIZE, MADV_DONTNEED, name="madvise")


__all__ = ["put_vs_module_exit"]
