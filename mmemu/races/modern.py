"""Race suites for the modern notifier generation: non-blockable ranges (the
OOM reaper) and interval notifiers inserted and removed during an
invalidation.

Emulates: mm/oom_kill.c (__oom_reap_task_mm), mm/mmu_notifier.c
(mmu_notifier_invalidate_range_start_nonblock, mmu_interval_notifier_insert
/ remove, mn_itree_inv_end's deferred list) (modern: 5.5+)

What they check: no page goes back to the allocator while a secondary TLB
maps it (FreedPageStillMapped), no device access through a stale
translation (SecondaryUseAfterFree), no callback sleeps in a non-blockable
range (SleepingWhileAtomic), no ``invalidate_range_end`` after a failed
non-blockable start (MmuNotifierViolation), no ``->invalidate`` through an
interval notifier its owner freed (NotifierUseAfterFree), and at the end
each remaining translation maps what the CPU pte maps.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import available_drivers, guarded, supports_api
from mmemu.engine._execution import step
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.memory import fault_in
from mmemu.mm.filemap import AddressSpace
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, mm_alloc
from mmemu.mm.oom_kill import oom_reap_task
from mmemu.mm.truncate import vmtruncate
from mmemu.races.notifier import (
    ZAPPED,
    goals,
    guest,
    guest_fault,
)

MODERN_DRIVER_AXES: dict[str, Any] = {"api": ["modern"], "driver": available_drivers}


@mmemu.scenario("notifier:oom-reap-vs-fault", axes=MODERN_DRIVER_AXES, filter=supports_api,
                catches=["hmm:no-retry", "sva:no-flush"],
                reaches=goals(ZAPPED, kvm=("retry",),
                              hmm=("retry", "a non-blockable invalidate_range_start failed "
                                            "(-EAGAIN)")))
async def oom_reap_vs_fault(sim: Any) -> None:
    """The OOM reaper unmaps a victim's anonymous page while the driver faults it.

    CPU0 (oom_reap_task)                       CPU1 (secondary-MMU fault)
    1. down_read_trylock(mmap_sem)             F1. seq / count snapshot
    2a. invalidate_range_start_nonblock:       F2. walk or GUP under
        callbacks in non-block context;            mmap_sem for read
        -EAGAIN (driver lock busy): skip       F3. driver lock; retry?
        the vma, no range_end; retry later     F4. install; unlock
    2b. unmap_page_range (pte cleared; IOMMU   X. access
        TLBs flushed under the PTL)
    2c. invalidate_range_end
    2d. tlb_finish_mmu: free the page

    There are 2 critical interleavings that matter:
    - 2a while CPU1 holds the driver lock between F3 and F4: a callback
      that waited would sleep in non-block context (reported); the driver
      fails with -EAGAIN instead, the reaper skips the vma and must not
      call range_end; the next attempt reaps it.
    - 2a-2c between F2 and F3: the callback's seq/count makes F3 retry
      (``hmm:no-retry`` installs the page 2d frees); an IOMMU TLB filled by
      F2 is flushed in 2b (``sva:no-flush`` keeps it after 2d).

    Harmless: F1-F4 after 2d (a new zero page is faulted in: the kernel's
    MMF_UNSTABLE SIGBUS is not modelled); both reap attempts fail (the page
    stays mapped and so may the translation).
    """
    g = await guest(sim, kind="anon")
    async with sim.cpus() as cpus:
        cpus.start(oom_reap_task, g.mm, name="oom_reaper")
        cpus.start(guest_fault, g, name=g.driver.name)


async def _kfree_mirror(mirror: Any) -> None:
    """The owner removes its interval notifier, then frees it."""
    await guarded(mirror, "detach", mirror.detach)
    await step("kfree(dmirror): the interval notifier's memory", writes=(mirror.notifier,))
    mirror.notifier.freed = True


async def _attach_and_fault(mirror: Any, kernel: Any, mm: Any, addr: int) -> None:
    ret = await guarded(mirror, "attach", mirror.attach, kernel, mm)
    mmemu.lowlevel.current_simulation().check(ret == 0, f"attach returned {ret}")
    if await guarded(mirror, "fault", mirror.fault, addr, False):
        await guarded(mirror, "access", mirror.access, addr)


@mmemu.scenario("interval:insert-remove-vs-invalidate", axes={"api": ["modern"]},
                catches=["mmu_notifier:interval-no-defer", "mmu_notifier:interval-remove-nowait"],
                max_preemptions=1,
                bound_reason="more than 1,900 traces unbounded (three CPUs, two interval "
                             "notifiers); 266 executions at one preemption, which catches "
                             "both its mutants",
                reaches=["mmu_interval_notifier_insert during an invalidation",
                         "mmu_interval_notifier_remove: waits for the invalidation in progress",
                         "mmu_interval_read_begin waited for an invalidation of its interval",
                         "step:4. unlock(dmirror->lock) (retry)"])
async def insert_remove_vs_invalidate(sim: Any) -> None:
    """Interval notifiers inserted and removed while a truncate invalidates their range.

    CPU0 (vmtruncate)         CPU1 (mirror B starts)      CPU2 (mirror A stops)
    I1. active++; A hits:     N1. insert B: during an     M1. remove A: during
        invalidate_seq odd        invalidation deferred,      an invalidation
    I2. A->invalidate (zap)       B's seq = the odd seq       deferred, seq noted
    3. zap the pte            R1. read_begin(B): waits    M2. wait_event(seq
    I3. seq even; deferred        for I3                      moved on)
        insert B, remove A;   R2. walk: pte none, fault:  K. kfree(A)
        wake_up_all               beyond EOF -> fail
    5. truncate_inode_pages:  (or, before I1: map, and
       free the page              I2/I3 cover B)

    There are 2 critical interleavings that matter:
    - N1 between I1 and I3: I2 walks a tree without B, so B must not map
      before I3: its seq equals the odd invalidate_seq and R1 waits.
      Inserting at once with an older seq (mutant
      ``mmu_notifier:interval-no-defer``) lets R2 see the pte and B map the
      page that 5 frees (no invalidation tells B).
    - M1 between I1 and I2: I2 is about to call A; M2 keeps A alive until
      I3.  Returning at once (mutant ``mmu_notifier:interval-remove-nowait``)
      lets K free A before I2 calls it.

    Harmless: N1 or M1 before I1 (plain tree insert/remove: the next
    invalidation sees the tree as it is) or after I3.
    """
    from mmemu.drivers.hmm import HmmMirror
    kernel = boot_checked(sim, npages=6, api="modern")
    mm = mm_alloc(kernel)
    mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    addr = vma.vm_start
    await fault_in(mm, addr, write=False)
    mirror_a = HmmMirror(name="hmm-A")
    mirror_b = HmmMirror(name="hmm-B")
    ret = await mirror_a.attach(kernel, mm)
    sim.check(ret == 0, f"attach returned {ret}")
    await mirror_a.fault(addr, False)
    async with sim.cpus() as cpus:
        cpus.start(vmtruncate, mapping, 0, name="truncate")
        cpus.start(_attach_and_fault, mirror_b, kernel, mm, addr, name="mirror-B")
        cpus.start(_kfree_mirror, mirror_a, name="mirror-A")
    # the translations of both mirrors against the CPU pte: the end-of-run
    # coherence check of mmemu.check.notifier (IncoherentTranslation)


__all__ = ["insert_remove_vs_invalidate", "oom_reap_vs_fault"]
