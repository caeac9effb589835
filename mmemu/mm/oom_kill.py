"""The OOM reaper: tearing down a killed task's anonymous memory without sleeping.

Emulates: mm/oom_kill.c (__oom_reap_task_mm, oom_reap_task_mm,
oom_reap_task) (4.19+ with the non-blockable mmu notifier ranges of 5.x)

The reaper frees the victim's private memory while the victim may be stuck
(holding locks the reaper must not wait for), so it never blocks: it takes
``mmap_sem`` with a trylock, and asks the mmu notifiers for a
*non-blockable* invalidation of each vma.  A notifier that would have to
sleep fails the start with -EAGAIN; the reaper then skips that vma (the
notifiers that did start were already ended) and tries the whole mm again
later.

oom reaper (per attempt):
  1. down_read_trylock(mmap_sem), or retry later
  2. for each anonymous or private vma:
     a. mmu_notifier_invalidate_range_start_nonblock(range): -EAGAIN: skip
        the vma (no range_end), the attempt fails
     b. unmap_page_range: clear the ptes, gather the pages
     c. mmu_notifier_invalidate_range_end(range)
     d. tlb_finish_mmu: free the gathered pages
  3. up_read; a failed attempt sleeps (HZ/10) and retries, at most
     MAX_OOM_REAP_RETRIES times, then gives up (MMF_OOM_SKIP)

There are 2 critical interleavings that matter (a secondary MMU faults the
victim's memory concurrently, under mmap_sem for read, which the trylock
does not exclude):
 - the driver holds its lock when 2a's callback runs: the callback must not
   wait (non-block context: sleeping is reported), it fails with -EAGAIN
   and the vma stays mapped; no range_end is called for it;
 - the callback succeeds: it zapped its translations and must keep new
   ones out until 2c; 2d frees the pages after 2c.
Harmless: the driver faults after the reap (a fresh page; the kernel would
SIGBUS it with MMF_UNSTABLE, not modelled).

Modelling note: MAX_OOM_REAP_RETRIES is 2 here (10 in the kernel), to keep
the explored state space small; the attempts are the same.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.engine._execution import step
from mmemu.kernel.locking import down_read_trylock, up_read
from mmemu.lowlevel import reach
from mmemu.mm.memory import tlb_finish_mmu, tlb_gather_mmu, unmap_page_range
from mmemu.mm.mmap import VM_SHARED, MmStruct
from mmemu.mm.mmu_notifier import (
    MMU_NOTIFY_UNMAP,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start_nonblock,
    mmu_notifier_range_init,
)

MAX_OOM_REAP_RETRIES = 2

#: coverage goals (see mmemu.races.oom_shapes)
OOM_TRYLOCK_FAILED = "oom_reaper: mmap_sem busy (down_read_trylock failed)"
OOM_GAVE_UP = "oom_reaper: unable to reap (every attempt failed)"


async def __oom_reap_task_mm(mm: MmStruct) -> bool:
    """Step 2; False if a vma had to be skipped.  Caller holds mmap_sem."""
    ret = True
    await step("2. __oom_reap_task_mm: for each vma", reads=((mm, "mmap"),))
    for vma in list(mm._vmas):
        if not (vma.vm_file is None or not vma.vm_flags & VM_SHARED):
            continue
        range = mmu_notifier_range_init(MMU_NOTIFY_UNMAP, 0, mm, vma.vm_start, vma.vm_end)
        tlb = tlb_gather_mmu(mm)
        if await mmu_notifier_invalidate_range_start_nonblock(range):
            await tlb_finish_mmu(tlb)
            ret = False
            continue
        await unmap_page_range(tlb, vma, range.start, range.end, None)
        await mmu_notifier_invalidate_range_end(range)
        await tlb_finish_mmu(tlb)
    return ret


async def oom_reap_task_mm(mm: MmStruct) -> bool:
    """One attempt (steps 1-3): False if it must be retried."""
    if not await down_read_trylock(mm.mmap_sem, label="1. down_read_trylock(mmap_sem)"):
        reach(OOM_TRYLOCK_FAILED)
        return False
    ret = await __oom_reap_task_mm(mm)
    await up_read(mm.mmap_sem, label="3. up_read(mmap_sem)")
    return ret


async def oom_reap_task(mm: MmStruct, *, retries: int = MAX_OOM_REAP_RETRIES) -> bool:
    """The oom_reaper kthread on one victim: True if its memory was reaped."""
    with mmemu.span("oom_reap_task"):
        attempts = 0
        while True:
            attempts += 1
            if await oom_reap_task_mm(mm):
                return True
            if attempts >= retries:
                await step("3. oom_reaper: unable to reap; MMF_OOM_SKIP")
                reach(OOM_GAVE_UP)
                return False
            await step("3. schedule_timeout_idle(HZ/10)")


__all__ = ["MAX_OOM_REAP_RETRIES", "OOM_GAVE_UP", "OOM_TRYLOCK_FAILED", "__oom_reap_task_mm", "oom_reap_task", "oom_reap_task_mm"]
