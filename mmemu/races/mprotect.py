"""Race suite for mprotect: write-protecting part of an anonymous mapping
while a secondary MMU writes it.

Emulates: mm/mprotect.c (mprotect_fixup, change_protection) and mm/mmap.c
(split_vma, vma_adjust) against the drivers (2.6.27; modern:
MMU_NOTIFY_PROTECTION_VMA)

At the end mmemu.check.notifier's end check (on in every suite) finds a
translation left to a page the pte does not map (IncoherentTranslation) or
one writable where the pte is read-only (SecondaryWriteToReadOnly).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import guarded, new_driver, supports_api
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, mm_alloc
from mmemu.mm.mprotect import PROT_READ, WRPROTECTED, sys_mprotect
from mmemu.races.notifier import DRIVER_AXES, Guest, guest_fault


@mmemu.scenario("mprotect:mprotect-vs-guest-write", axes=DRIVER_AXES, filter=supports_api,
                catches=["mprotect:no-notify"], reaches=[WRPROTECTED])
async def mprotect_vs_guest_write(sim: Any) -> None:
    """mprotect(PROT_READ) of the first page of a two-page anonymous vma that
    the guest writes.

    CPU0 (sys_mprotect)                        CPU1 (guest write fault)
    0. down_write(mmap_sem); split_vma at      F1. seq = mmu_notifier_seq
       the end of the range (vma_adjust under  F2. GUP(write) under mmap_sem
       anon_vma->lock); vm_flags = VM_READ         read: VM_WRITE? page ref
    1. invalidate_range_start (driver: zap,    F3. lock; retry if count/seq
       KVM count++)                            F4. install writable; unlock
    2-4. PTL; write-protect the pte; unlock;   X. access
       flush_tlb_range
    5. invalidate_range_end; up_write

    The guest wrote the page before: its translation is writable.

    There are 2 critical interleavings that matter:
    - F2 before 0, F3 between 1 and 5: count != 0 (GRU: range active, HMM:
      seq), the fault retries after 5 and GUP(write) fails on the
      read-only vma: nothing is installed;
    - F2 before 0, F3 after 5: the seq changed, the same retry.
    Without 1 and 5 (mutant ``mprotect:no-notify``) the translation made
    before 3 keeps write access to the read-only page.

    Harmless: F2 after 5 (GUP fails at once); F4 before 1 (1 zaps it).
    """
    kernel = boot_checked(sim, npages=6)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    addr = vma.vm_start
    await fault_in(mm, addr, write=True)
    pte = pte_get(mm, addr)
    assert pte is not None and pte.page is not None
    driver = new_driver(sim)
    ret = await driver.attach(kernel, mm)
    sim.check(ret == 0, f"{driver.name}: attach returned {ret}")
    g = Guest(kernel, mm, None, addr, pte.page, driver)
    await guarded(driver, "fault", driver.fault, addr, True)
    out: dict[str, int] = {}

    async def mprotect() -> None:
        out["ret"] = await sys_mprotect(mm, addr, PAGE_SIZE, PROT_READ)

    async with sim.cpus() as cpus:
        cpus.start(mprotect, name="mprotect")
        cpus.start(guest_fault, g, True, name=driver.name)
    sim.check(out.get("ret") == 0, f"mprotect returned {out.get('ret')}")
    sim.check([(v.vm_start - addr, v.vm_end - addr, bool(v.vm_flags & VM_WRITE))
               for v in mm.vmas()] == [(0, PAGE_SIZE, False), (PAGE_SIZE, 2 * PAGE_SIZE, True)],
              f"the vma was not split as mprotect asked: {mm.vmas()!r}")


__all__ = ["mprotect_vs_guest_write"]
