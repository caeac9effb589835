"""Changing the access permissions of a range of an address space: mprotect.

Emulates: mm/mprotect.c (sys_mprotect, mprotect_fixup, change_protection,
change_pte_range) (2.6.27); modern: the MMU_NOTIFY_PROTECTION_VMA range and
the TLB flush that reaches arch_invalidate_secondary_tlbs

    sys_mprotect(start, len, prot)          mmap_sem held for write
      for each vma in [start, end):
        mprotect_fixup(vma, nstart, tmp, newflags)
          split_vma at start (new below) and at end   (vma_adjust: the rmap
                                                       locks, see mmap.py)
          vma->vm_flags = newflags                    (mmap_sem: faults see
                                                       the new flags)
          change_protection(vma, start, end)

The permissions of a present pte follow the vma's vm_page_prot: a shared
writable mapping's ptes stay writable, a private one's become read-only
(writes copy on write; the writable bit comes back through do_wp_page), and
a mapping without VM_WRITE is read-only.  A write migration entry becomes a
read one.

Not modelled: vma_merge (the split vmas are never merged back), VM_ACCOUNT,
PROT_GROWSDOWN/UP, dirty accounting (vma_wants_writenotify), modern
kernels' can_change_pte_writable() (which keeps an exclusive anonymous
pte writable when mprotect adds PROT_WRITE).
"""

from __future__ import annotations

import mmemu
from mmemu.engine._execution import reach, span, step
from mmemu.kernel.locking import down_write, spin_lock, spin_unlock, up_write
from mmemu.mm import mmu_notifier
from mmemu.mm.memory import make_migration_entry, populated_ptes, pte_get, pte_key, set_pte_at
from mmemu.mm.mmap import (
    EACCES,
    EINVAL,
    ENOMEM,
    PAGE_MASK,
    PAGE_SIZE,
    ULONG_MAX,
    VM_EXEC,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
    _assert_mmap_sem_write,
    find_vma,
    split_vma,
)

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

NO_NOTIFY = mmemu.register_mutant(
    "mprotect:no-notify",
    "change_protection write-protects the ptes without the invalidate_range_start/end "
    "bracket",
    caught_as="PteChangeNotNotified (the write protection was never reported to the "
              "notifiers), or SecondaryWriteToReadOnly (a secondary MMU keeps write access "
              "to a page the process has made read-only)",
    doc="2.6.27's mprotect_fixup brackets change_protection with "
        "mmu_notifier_invalidate_range_start/end (since the first mmu-notifier kernel, "
        "cddb8a5c14aa; 3.x moved the bracket into change_protection, a5338093bfb4 and "
        "later into change_pmd_range with MMU_NOTIFY_PROTECTION_VMA).  Removed on purpose, "
        "a KVM spte or device TLB entry made writable before the mprotect stays writable "
        "after it: the guest writes memory the process has write-protected (a JIT's code "
        "page, a checkpoint's snapshot).")


#: coverage event: a present writable pte became read-only
WRPROTECTED = "mprotect: change_pte_range write-protected a pte"


def calc_vm_prot_bits(prot: int) -> int:
    return ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0)
            | (VM_EXEC if prot & PROT_EXEC else 0))


def vm_page_prot_writable(vm_flags: int) -> bool:
    """Does vm_get_page_prot(vm_flags) allow writes?  Only for a shared
    writable mapping: a private one is mapped copy-on-write."""
    return bool(vm_flags & VM_SHARED and vm_flags & VM_WRITE)


async def change_pte_range(vma: VmAreaStruct, addr: int, end: int) -> None:
    """Under the PTL, give each present pte of [addr, end) the vma's
    permissions (ptep_modify_prot_start / pte_modify / commit); a write
    migration entry becomes a read one."""
    mm = vma.vm_mm
    ptl = mm.page_table_lock
    writable = vm_page_prot_writable(vma.vm_flags)
    with span("change_pte_range"):
        await spin_lock(ptl, label="2. change_pte_range: pte_offset_map_lock")
        for address in populated_ptes(mm, addr, end):
            await step(f"3. change_pte_range: pte_modify({address:#x})",
                       writes=(pte_key(mm, address),))
            pte = pte_get(mm, address)
            if pte is None:
                continue
            if pte.present:
                if pte.write != writable:
                    set_pte_at(mm, address, pte.replace(write=writable))
                    if not writable:
                        reach(WRPROTECTED)
            elif pte.swp is not None and pte.swp.type == "migration" and pte.swp.write:
                # "A protection check is difficult so just be safe and disable write"
                set_pte_at(mm, address, make_migration_entry(pte.swp.page, False)
                           if pte.swp.page is not None else pte)
        await spin_unlock(ptl, label="4. change_pte_range: pte_unmap_unlock")


async def flush_tlb_range(vma: VmAreaStruct, start: int, end: int) -> None:
    """Flush the CPU TLBs of [start, end).  Modern: it reaches the TLBs that
    walk the CPU page tables (arch_invalidate_secondary_tlbs); 2.6.27's told
    nobody."""
    if mmu_notifier.is_modern(vma.vm_mm):
        await mmu_notifier.arch_invalidate_secondary_tlbs(vma.vm_mm, start, end)


async def change_protection(vma: VmAreaStruct, start: int, end: int) -> None:
    """Apply ``vma``'s new permissions to its ptes in [start, end).

    Against a secondary MMU that maps a page of the range::

      mprotect (change_protection)            secondary MMU (KVM guest write)
      1. invalidate_range_start (driver: zap, F1. mmu_seq = mmu_notifier_seq
         KVM count++)                         F2. GUP(write) under mmap_sem
      2. PTL                                      (read): VM_WRITE? a page ref
      3. pte_modify per pte (write-protect)   F3. mmu_lock; retry if count
      4. unlock; flush_tlb_range                  != 0 or seq changed
      5. invalidate_range_end (KVM: seq++,    F4. install a writable spte
         count--)

    mprotect holds mmap_sem for write from before the new vm_flags until
    after 5, so F2 runs entirely before it or entirely after it (and then
    fails: the vma has no VM_WRITE, -EFAULT).

    There are 2 critical interleavings that matter:
     - F2 before mprotect, F3 between 1 and 5: count != 0, the fault waits
       for 5 and retries; GUP now fails (-EFAULT): nothing is installed;
     - F2 before mprotect, F3 after 5: the seq changed, the same retry.
    Without 1 and 5 (mutant ``mprotect:no-notify``) a writable translation
    made before 3 (by F4, or one the guest had all along) survives: the
    guest keeps writing a page the process made read-only.

    Harmless: F4 before 1 (1 zaps it).  Modern: the same bracket, event
    MMU_NOTIFY_PROTECTION_VMA, ended before the TLB flush (which reaches
    an SVA IOTLB through arch_invalidate_secondary_tlbs); 2.6.27 flushes
    before the end.  The modern bracket opens only at a populated pmd (not
    modelled: it is always opened).
    """
    mm = vma.vm_mm
    notify = not mmemu.mutant(NO_NOTIFY)
    modern = mmu_notifier.is_modern(mm)
    ev = mmu_notifier.MMU_NOTIFY_PROTECTION_VMA
    with span("change_protection"):
        if notify:
            await mmu_notifier.mmu_notifier_invalidate_range_start(mm, start, end, event=ev)
        await change_pte_range(vma, start, end)
        if not modern:
            await flush_tlb_range(vma, start, end)
        if notify:
            await mmu_notifier.mmu_notifier_invalidate_range_end(mm, start, end, event=ev)
        if modern:
            await flush_tlb_range(vma, start, end)


async def mprotect_fixup(vma: VmAreaStruct, start: int, end: int, newflags: int) -> int:
    """Give [start, end) of ``vma`` the flags ``newflags``: split the vma at
    the edges (2.6.27: split_vma(new_below=1) at start, split_vma at end),
    set vm_flags, change_protection.  Caller holds mmap_sem for write."""
    mm = vma.vm_mm
    if newflags == vma.vm_flags:
        return 0
    if start != vma.vm_start:
        await split_vma(mm, vma, start, 1)
    if end != vma.vm_end:
        await split_vma(mm, vma, end, 0)
    # vm_flags and vm_page_prot are protected by the mmap_sem held in write mode
    await step("mprotect_fixup: vma->vm_flags = newflags", writes=((vma, "vm_flags"),))
    vma.vm_flags = newflags
    await change_protection(vma, start, end)
    return 0


#: coverage event: mprotect asked for a protection the vma may not have
MPROTECT_EACCES = "mprotect: -EACCES (a protection without its VM_MAY* bit)"


async def do_mprotect(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """sys_mprotect's body: 0 or a negative errno.  Caller holds ``mmap_sem``
    for write."""
    _assert_mmap_sem_write(mm, "mprotect")
    if start & ~PAGE_MASK:
        return -EINVAL
    if not length:
        return 0
    length = (length + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MAX  # PAGE_ALIGN, size_t
    end = (start + length) & ULONG_MAX
    if end <= start:
        return -ENOMEM
    vm_flags = calc_vm_prot_bits(prot)
    await step("mprotect: find_vma", reads=((mm, "mmap"),))
    vma = find_vma(mm, start)
    if vma is None or vma.vm_start > start:
        return -ENOMEM
    nstart = start
    with span("mprotect"):
        while True:
            newflags = vm_flags | (vma.vm_flags & ~(VM_READ | VM_WRITE | VM_EXEC))
            # newflags >> 4 shifts VM_MAY% in place of VM_%
            if (newflags & ~(newflags >> 4)) & (VM_READ | VM_WRITE | VM_EXEC):
                reach(MPROTECT_EACCES)
                return -EACCES
            tmp = min(vma.vm_end, end)
            error = await mprotect_fixup(vma, nstart, tmp, newflags)
            if error:
                return error
            nstart = tmp
            if nstart >= end:
                return 0
            nxt = find_vma(mm, nstart)
            if nxt is None or nxt.vm_start != nstart:
                return -ENOMEM
            vma = nxt


async def sys_mprotect(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """mprotect(2) on ``mm``: mmap_sem for write around do_mprotect."""
    await down_write(mm.mmap_sem, label="mprotect: down_write(mmap_sem)")
    ret = await do_mprotect(mm, start, length, prot)
    await up_write(mm.mmap_sem, label="mprotect: up_write(mmap_sem)")
    return ret


__all__ = ["MPROTECT_EACCES", "NO_NOTIFY", "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE",
           "calc_vm_prot_bits", "change_protection", "change_pte_range", "do_mprotect",
           "mprotect_fixup", "sys_mprotect", "vm_page_prot_writable"]
