"""Race suite for the interval-notifier collision-retry protocol under two
invalidations in flight at once.

Emulates: mm/mmu_notifier.c's interval tree (mn_itree_inv_start_range,
mn_itree_inv_end, mmu_interval_read_begin / read_retry; 5.5+, 99cb252f5e68,
the modern generation) driven by two madvise(MADV_DONTNEED) calls under
mmap_sem for read, against an HMM mirror's fault (hmm_range_fault between
read_begin and read_retry)

An mm's interval invalidation is one state for all its ranges:
``invalidate_seq`` turns odd at the first range that hits an interval and
even again only when ``active_invalidate_ranges`` drops to zero.  While it
is odd, a mirror's read_begin sleeps: whatever the walk would see may be
zapped by a range still between its start and its end.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import guarded
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.memory import fault_in
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, mm_alloc
from mmemu.mm.mmu_notifier import MUTANT_ITREE_END_FIRST

#: coverage events (mm/mmu_notifier.py)
NESTED = "two invalidations of one mm in flight at once"
WAITED = "mmu_interval_read_begin waited for an invalidation of its interval"


async def _mirror_fault(mirror: Any, addr: int) -> None:
    if await guarded(mirror, "fault", mirror.fault, addr, False):
        await guarded(mirror, "access", mirror.access, addr)


@mmemu.scenario("interval:read-begin-vs-nested-invalidations", axes={"api": ["modern"]},
                catches=[MUTANT_ITREE_END_FIRST], max_preemptions=1,
                bound_reason="unbounded: more than 4,200 traces, not exhausted in 16 s CPU "
                             "(three CPUs of ~25 steps each); 196 executions at one "
                             "preemption, which catches its mutant (after 49)",
                reaches=[NESTED, WAITED, "step:4. unlock(dmirror->lock) (retry)"])
async def read_begin_vs_nested_invalidations(sim: Any) -> None:
    """A mirror faults a page while two madvise(MADV_DONTNEED) calls
    invalidate overlapping ranges over it.

    CPU0 (madvise [page0, page2))  CPU1 (madvise [page1, page2))  CPU2 (mirror fault page1)
    I1. lock; active++; seq odd    I1. lock; active++ (2)        R1. read_begin: seq ==
    I2. ->invalidate: set_seq,     I2. ->invalidate: set_seq,        invalidate_seq (odd)?
        zap the mirror                 zap the mirror                sleep until even
    Z. zap the ptes, free pages    Z. zap page1's pte (if left)  R2. hmm_range_fault:
    I3. lock; active--: not the    I3. lock; active-- (0): seq       walk/fault the pte
        last, return                   even; wake_up_all         R3. lock; R4. read_retry?
                                                                 R5. program; unlock

    There are 2 critical interleavings that matter:
    - CPU1's I1 between CPU0's I1 and I3, and R1 after CPU0's I3: the
      invalidation is still in progress (CPU1 has not zapped page1's pte),
      so R1 must still see the odd seq and sleep until CPU1's I3.  Ending
      the invalidation at the first I3 (mutant
      ``mmu_notifier:itree-end-first``: the active_invalidate_ranges test
      skipped) makes the seq even too early: R1 returns the seq CPU1's I2
      already stored, R2 maps page1, R4 sees no change, and R5 programs the
      device with the page CPU1 then zaps and frees;
    - an I2 between R1 and R4: set_seq changed the interval's seq, R4
      retries.
    Harmless: R1 before both I1 (the I2s retry it or zap what R5 put in);
    R1 after both I3 (R2 finds the ptes gone and faults a new page).

    At the end: the end-of-run check compares the mirror's translation, if
    any, with the CPU pte; a translation to a freed page fails earlier.
    """
    from mmemu.drivers.hmm import HmmMirror
    kernel = boot_checked(sim, npages=6, api="modern")
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    addrs = (vma.vm_start, vma.vm_start + PAGE_SIZE)
    await fault_in(mm, addrs[1], write=True)  # page0 is never touched: nothing to zap
    mirror = HmmMirror(name="hmm")
    sim.check(await mirror.attach(kernel, mm) == 0, "hmm: attach failed")
    async with sim.cpus() as cpus:
        cpus.start(sys_madvise, mm, addrs[0], PAGE_SIZE, MADV_DONTNEED, name="madvise0")
        cpus.start(sys_madvise, mm, addrs[1], PAGE_SIZE, MADV_DONTNEED, name="madvise1")
        cpus.start(_mirror_fault, mirror, addrs[1], name="mirror")


__all__ = ["read_begin_vs_nested_invalidations"]
