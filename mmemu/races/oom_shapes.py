"""Race suites for the OOM reaper against its victim's own address-space
changes: the victim still runs (or is stuck) holding its mmap_sem.

Emulates: mm/oom_kill.c (oom_reap_task, oom_reap_task_mm,
__oom_reap_task_mm) against mm/mmap.c (do_munmap) (modern: 4.19+)

The reaper must never wait for the victim: the victim may be stuck, holding
its mmap_sem for write, in the very allocation that is waiting for the
reaper.  So it only *tries* the lock (down_read_trylock), and when the
victim holds it, sleeps a little and tries again; after
MAX_OOM_REAP_RETRIES failed attempts it gives up ("oom_reaper: unable to
reap pid") and hides the mm from the OOM killer anyway.  With the read lock
the vma list cannot change under the walk, so each vma it zaps is still
the victim's.  With no notifier on the mm the non-blockable range never
fails: an attempt that gets the lock reaps everything.

The checks, at the end:
- the reaper's verdict is true: when it reports the memory reaped, no
  anonymous page is mapped in the victim any more (``OomReapIncomplete``);
- every page's count and mapcount match the ptes that map it, and the
  checkers of mmemu.check (page tables against the vmas, leaks, lockdep's
  unlock of an rwsem the CPU does not hold) look at every execution.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.engine import InvariantViolation
from mmemu.kernel.locking import down_write, up_write
from mmemu.lowlevel import reach
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, MmStruct, do_mmap, mm_alloc
from mmemu.mm.oom_kill import OOM_GAVE_UP, OOM_TRYLOCK_FAILED, oom_reap_task
from mmemu.mm.page import PageAnon
from mmemu.races.mm import check_page_refs
from mmemu.races.notifier import munmap

#: goal: an attempt that got the lock reported the victim reaped
REAPED = "oom_reaper: reaped the victim's anonymous memory"


class OomReapIncomplete(InvariantViolation):
    """The OOM reaper reported a victim reaped while it still maps anonymous
    memory: the OOM killer would count memory as freed that is not."""


def check_reaped(sim: Any, mm: MmStruct) -> None:
    """No present pte of the victim maps an anonymous page."""
    for vma in mm.vmas():
        for addr in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
            pte = pte_get(mm, addr)
            if pte is not None and pte.present and pte.page is not None and PageAnon(pte.page):
                raise OomReapIncomplete(
                    f"oom_reap_task reported {mm.__mmemu_name__} reaped, but it still maps "
                    f"anonymous page{pte.page.pfn} at {addr:#x}", details=pte.page.dump())


async def _reaper(mm: MmStruct, out: dict[str, Any]) -> None:
    out["reaped"] = await oom_reap_task(mm)
    if out["reaped"]:
        reach(REAPED)


@mmemu.scenario("mm:oom-reap-vs-munmap", axes={"api": ["modern"]},
                reaches=[REAPED, OOM_TRYLOCK_FAILED, OOM_GAVE_UP])
async def reap_vs_munmap(sim: Any) -> None:
    """The OOM reaper reaps a victim that is unmapping its own memory.

    The victim has two anonymous pages in one vma and unmaps the second
    one (munmap splits the vma first).

    CPU0 (oom_reap_task, 2 attempts)            CPU1 (the victim: munmap)
    1. down_read_trylock(mmap_sem):             M1. down_write(mmap_sem)
       busy: 3. sleep, retry; the last          M2. split_vma; detach the upper
       attempt gives up (MMF_OOM_SKIP)              vma from the list
    2. for each anonymous vma:                  M3. unmap_region: zap its pte,
       a. range_start_nonblock                      free the page; unlink it,
       b. unmap_page_range: zap the ptes            free its page tables
       c. range_end                             M4. up_write(mmap_sem)
       d. tlb_finish_mmu: free the pages
    3. up_read(mmap_sem)

    There are 2 critical interleavings that matter:
    - 1 between M1 and M4: the trylock fails and the reaper must not touch
      the vmas (the list is being changed under it); it retries after M4,
      or gives up when both attempts fall inside M1-M4.  Ignoring the
      failed trylock walks the vma list during M2-M3 and zaps vmas munmap
      owns, then releases a read lock it never took (lockdep: unlock of an
      rwsem not held);
    - M1 after 1: munmap waits for the reaper's read lock; 2 zaps both
      pages of the whole vma, and M3 finds the upper pte already gone.
    Harmless: the whole munmap before 1 (the reaper reaps the lower vma
    only).

    At the end: a reaper that reports success left no anonymous page
    mapped (a reaper that gave up may leave the lower page mapped), and
    every page's count and mapcount match the ptes.
    """
    kernel = boot_checked(sim, npages=6, api="modern")
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    addr = vma.vm_start
    await fault_in(mm, addr, write=True)
    await fault_in(mm, addr + PAGE_SIZE, write=True)
    out: dict[str, Any] = {}
    async with sim.cpus() as cpus:
        cpus.start(_reaper, mm, out, name="oom_reaper")
        cpus.start(munmap, mm, addr + PAGE_SIZE, name="victim")
    if out["reaped"]:
        check_reaped(sim, mm)
    check_page_refs(sim, kernel)


__all__ = ["OomReapIncomplete", "REAPED", "check_reaped", "reap_vs_munmap"]
