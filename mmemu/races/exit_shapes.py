"""Race suite: exit_mmap against a ->release that another caller is still
running (notifier:exit-vs-release-in-flight).

Emulates: mm/mmu_notifier.c __mmu_notifier_release's closing
synchronize_srcu (modern, d34883d4e35c order) and mmu_notifier_unregister's
->release call, with a notifier whose ->release hands the teardown to
whichever caller came first and returns at once for the second -- the shape
of amdkfd's kfd_process_notifier_release (drivers/gpu/drm/amd/amdkfd/
kfd_process.c: "Do early return if table is empty ... This could
potentially happen if this function is called concurrently by mmu_notifier
and by kfd_cleanup_processes", then synchronize_srcu and the teardown).

Why a suite: the reference drivers' ->release zap their whole TLB in the
call, whoever else calls it, so exit's own ->release leaves nothing behind
and exit_mmap may free the pages at once.  __mmu_notifier_release's
synchronize_srcu exists for the other kind ("prevents mmu_notifier_release
from returning to exit_mmap (which would proceed with freeing all pages in
the mm) until the ->release method returns, if it was invoked by
mmu_notifier_unregister", the kernel's comment): the mutation benchmark
showed it surviving every suite of the main job.

The checks: every checker of ``boot_checked``; the shadow-TLB checker's
FreedPageStillMapped when exit_mmap frees the page while the device still
translates it.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check.shadow_tlb import ShadowTLB, register_tlb
from mmemu.engine._execution import reach, step
from mmemu.kernel.signal import current
from mmemu.mm.mmap import MmStruct, exit_mmap
from mmemu.mm.mmu_notifier import (
    MmuNotifier,
    MmuNotifierOps,
    MmuNotifierRange,
    mmu_notifier_register,
    mmu_notifier_unregister,
)
from mmemu.races.mm import written_anon_page

#: goals of notifier:exit-vs-release-in-flight
EARLY_RETURN = "exit-vs-release: exit's ->release returned early (the detach is tearing down)"
EXIT_TEARDOWN = "exit-vs-release: exit's ->release did the teardown itself"


class HandoffDevice:
    """A device whose ->release tears down once, by its first caller:

    R1. under the process-table lock: already taken off the table?  then
        return at once (the other caller is tearing down); else take it off
    R2. wait for the table's SRCU readers (a step of its own here)
    R3. zap every translation of the device

    ->invalidate_range_start zaps the range's translations (one step)."""

    def __init__(self) -> None:
        self.tlb = ShadowTLB("handoff", key_name="va")
        self.on_table = True
        self.table_key = (self, "on_table")
        #: the CPU running the detach (the other caller of ->release is exit)
        self.closer: Any = None
        self.mn = MmuNotifier(MmuNotifierOps(release=self._release,
                                             invalidate_range_start=self._start),
                              name="handoff.mmu_notifier", owner=self)
        self.__mmemu_name__ = "handoff"

    async def _release(self, mn: MmuNotifier, mm: MmStruct) -> None:
        await step("R1. process-table lock: on the table? take it off", writes=(self.table_key,))
        by_exit = current() is not self.closer
        if not self.on_table:
            if by_exit:
                reach(EARLY_RETURN)
            return
        self.on_table = False
        if by_exit:
            reach(EXIT_TEARDOWN)
        await step("R2. synchronize_srcu(process table)")
        keys = list(self.tlb.entries)
        await step("R3. zap every translation", **self.tlb.zap_accesses(keys))
        self.tlb.zap_all()

    async def _start(self, mn: MmuNotifier, range: MmuNotifierRange) -> int:
        keys = [k for k in self.tlb.entries if isinstance(k, int) and range.start <= k < range.end]
        await step("I. invalidate_range_start: zap the range", **self.tlb.zap_accesses(keys))
        for k in keys:
            self.tlb.zap(k)
        return 0


async def _detach(dev: HandoffDevice, mm: MmStruct) -> None:
    """The device file is closed: mmu_notifier_unregister (->release if
    still hashed, then the grace period)."""
    dev.closer = current()
    await mmu_notifier_unregister(dev.mn, mm)


@mmemu.scenario("notifier:exit-vs-release-in-flight", axes={"api": ["modern"]},
                reaches=[EARLY_RETURN, EXIT_TEARDOWN])
async def exit_vs_release_in_flight(sim: Any) -> None:
    """The process exits while its device is being detached; the device's
    ->release tears down once, in whichever caller comes first.

    Setup: an anonymous page, mapped by the CPU and translated by the
    device (its notifier registered on the mm).

    CPU0 (exit_mmap)                           CPU1 (close: mmu_notifier_unregister)
    1. __mmu_notifier_release: srcu_read_lock; 1. hashed? srcu_read_lock;
       ->release (R1: off the table already?      ->release: R1, R2, R3 (zap)
       return; else R2, R3); srcu_read_unlock     srcu_read_unlock
    2. hlist_del_init_rcu (all)                2. hlist_del_init_rcu
    3. synchronize_srcu                        3. synchronize_srcu
    4. unmap_vmas: clear the pte, free the
       page (no notifier is hashed: nothing
       more reaches the device)

    There are 2 critical interleavings that matter:
    - CPU1's R1 before CPU0's: CPU0's ->release returns at once and CPU0
      goes on while CPU1 is between R1 and R3, its SRCU read section still
      open.  3 waits for it, so 4 frees the page only after R3 zapped the
      device's translation.  Without 3 (the source mutant dropping
      __mmu_notifier_release's synchronize_srcu) 4 frees the page the
      device still translates: FreedPageStillMapped;
    - CPU0's R1 first: exit tears down itself (R2, R3) and CPU1's ->release
      returns at once (or finds the notifier unhashed and only waits).
    Harmless: the whole detach before 1 (exit finds no notifier), or after
    2 (CPU1 sees it unhashed).

    Modern only: 2.6.27's unregister unhashed first and called ->release
    after (its exit then never called a notifier unregister had taken), and
    its synchronize_rcu played the same part.
    """
    kernel, mm, addr, page = await written_anon_page(sim, npages=4, api="modern")
    dev = HandoffDevice()
    register_tlb(kernel, dev.tlb)
    sim.check(await mmu_notifier_register(dev.mn, mm) == 0, "setup: register failed")
    dev.tlb.install(addr, page, writable=True)
    async with sim.cpus() as cpus:
        cpus.start(exit_mmap, mm, name="exit")
        cpus.start(_detach, dev, mm, name="close")
    sim.check(not dev.tlb.entries, f"the device still translates {list(dev.tlb.entries)}")


__all__ = ["EARLY_RETURN", "EXIT_TEARDOWN", "HandoffDevice", "exit_vs_release_in_flight"]
