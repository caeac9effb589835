"""madvise(2) advice that changes the page tables: MADV_DONTNEED.

Emulates: mm/madvise.c (sys_madvise, madvise_vma, madvise_dontneed) (2.6.27);
modern: madvise_dontneed_single_vma -> zap_page_range_single with an
MMU_NOTIFY_CLEAR range

MADV_DONTNEED drops the pages of a range: the next access faults in the
file's page again, or a zero page for anonymous memory.  Unlike munmap it
keeps the vmas, so it runs with ``mmap_sem`` held only for *read*
(madvise_need_mmap_write: DONTNEED, WILLNEED and REMOVE do not need the
write lock): page faults, get_user_pages and a secondary MMU's fault run
concurrently with the zap, and only the invalidate_range_start/end bracket
of zap_page_range (and the PTL) orders them::

    madvise (zap_page_range)                 secondary MMU (KVM guest fault)
    1. invalidate_range_start (KVM: zap,     F1. mmu_seq = mmu_notifier_seq
       count++)                              F2. GUP under mmap_sem read:
    2. PTL; clear the ptes; gather the           a page reference
       pages; unlock                         F3. mmu_lock; retry if count
    3. tlb flush: free the gathered pages        != 0 or seq changed
    4. invalidate_range_end (KVM: seq++,     F4. install; unlock; put
       count--)

There are 2 critical interleavings that matter:
 - F2 before 2, F3 between 1 and 4: count != 0, the fault retries after 4
   and GUP faults a new page in (the old one stayed allocated through 3
   thanks to F2's reference, and is freed by F3's put);
 - F2 between 2 and 3 (the pte is gone: GUP faults a new page) or after:
   nothing stale to install.
Harmless: F4 before 1 (1 zaps it).

Not modelled: VM_NONLINEAR (remap_file_pages), the other advice values.
"""

from __future__ import annotations

from mmemu.engine._execution import reach, span, step
from mmemu.kernel.locking import down_read, up_read
from mmemu.mm import mmu_notifier
from mmemu.mm.memory import zap_page_range
from mmemu.mm.mmap import (
    EINVAL,
    ENOMEM,
    PAGE_MASK,
    PAGE_SIZE,
    ULONG_MAX,
    VM_LOCKED,
    VM_PFNMAP,
    MmStruct,
    find_vma,
)

MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4


#: coverage event: madvise(MADV_DONTNEED) met a vma it may not zap
DONTNEED_REFUSED = "madvise: MADV_DONTNEED refused a VM_LOCKED or VM_PFNMAP vma (-EINVAL)"


async def madvise_dontneed(vma: object, start: int, end: int) -> int:
    """Zap [start, end) of ``vma`` (0, or -EINVAL for a locked or PFN-mapped
    vma).  Caller holds mmap_sem for read."""
    from mmemu.mm.mmap import VmAreaStruct
    assert isinstance(vma, VmAreaStruct)
    if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
        reach(DONTNEED_REFUSED)
        return -EINVAL
    await zap_page_range(vma, start, end - start, None, event=mmu_notifier.MMU_NOTIFY_CLEAR)
    return 0


async def sys_madvise(mm: MmStruct, start: int, len_in: int, behavior: int) -> int:
    """madvise(start, len, behavior) on ``mm``: 0 or a negative errno.  Only
    MADV_DONTNEED changes anything in the model (the others are accepted and
    ignored, as hints)."""
    if start & ~PAGE_MASK:
        return -EINVAL
    length = (len_in + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MAX  # PAGE_ALIGN, size_t
    if len_in and not length:
        return -EINVAL
    end = (start + length) & ULONG_MAX
    if end < start:
        return -EINVAL
    if end == start:
        return 0
    if behavior not in (MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
                        MADV_DONTNEED):
        return -EINVAL
    error = 0
    with span("sys_madvise"):
        # madvise_need_mmap_write(MADV_DONTNEED) == 0: the read lock
        await down_read(mm.mmap_sem, label="madvise: down_read(mmap_sem)")
        await step("madvise: find_vma", reads=((mm, "mmap"),))
        addr = start
        unmapped = False
        while addr < end:
            vma = find_vma(mm, addr)
            if vma is None or vma.vm_start >= end:
                unmapped = True
                break
            if vma.vm_start > addr:
                unmapped = True  # a hole: -ENOMEM at the end, but go on
                addr = vma.vm_start
            tmp = min(vma.vm_end, end)
            if behavior == MADV_DONTNEED:
                error = await madvise_dontneed(vma, addr, tmp)
                if error:
                    break
            addr = tmp
        await up_read(mm.mmap_sem, label="madvise: up_read(mmap_sem)")
    if error:
        return error
    return -ENOMEM if unmapped else 0


__all__ = ["DONTNEED_REFUSED", "MADV_DONTNEED", "MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_WILLNEED",
           "madvise_dontneed", "sys_madvise"]
