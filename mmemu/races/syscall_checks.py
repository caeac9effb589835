"""The memory syscalls' argument and permission checks, one call at a time.

Emulates: mm/madvise.c (sys_madvise, madvise_dontneed), mm/mmap.c
(do_munmap), mm/mprotect.c (sys_mprotect, mprotect_fixup) (2.6.27)

Not a race: one CPU makes each call in turn, as the error-path tests of a
syscall test suite do (LTP's madvise02, munmap02, mprotect02).  The race
suites only ever pass good arguments, so without this suite no check of a
syscall's arguments runs, and a check skipped (the mutation benchmark's
``recheck`` operator) would go unseen.  Each call is one whose wrong
answer is visible: an errno, or a pte or a vma that the failed call must
leave alone.  A call that reached the wrong path returns something else,
so the suite cannot pass without running every error path it lists.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.madvise import DONTNEED_REFUSED, MADV_DONTNEED, sys_madvise
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import (
    EACCES,
    EINVAL,
    ENOMEM,
    PAGE_SIZE,
    ULONG_MAX,
    VM_LOCKED,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    do_mmap,
    do_munmap,
    mm_alloc,
)
from mmemu.mm.mprotect import MPROTECT_EACCES, PROT_READ, PROT_WRITE, sys_mprotect
from mmemu.races.mm import file_with_pages

#: where the scenario's vmas go: A (anonymous, two pages), L (VM_LOCKED)
#: right below N (anonymous), S (a read-only file's shared mapping), and a
#: hole above them all
A, L, N, S, HOLE = 0x10000, 0x20000, 0x21000, 0x30000, 0x40000


async def _munmap(mm: MmStruct, start: int, length: int) -> int:
    await down_write(mm.mmap_sem)
    ret = await do_munmap(mm, start, length)
    await up_write(mm.mmap_sem)
    return ret


@mmemu.scenario("mm:syscall-errors", reaches=[DONTNEED_REFUSED, MPROTECT_EACCES])
async def syscall_errors(sim: Any) -> None:
    """madvise, munmap and mprotect with arguments they must refuse.

    CPU0, one call after the other (expected result; what else must hold):
    1. madvise(HOLE + 1, 1 page, DONTNEED): -EINVAL (start not page
       aligned: checked before the vmas are looked at, so not -ENOMEM)
    2. madvise(A, 1 page, 1234): -EINVAL (no such advice); A's page stays
       mapped
    3. madvise(L, 2 pages, DONTNEED), L VM_LOCKED, N next to it: -EINVAL
       from madvise_dontneed at L; the walk stops there, so N's page stays
       mapped, and so does L's
    4. munmap(HOLE + 1, 1 page): -EINVAL (not aligned; not the 0 of an
       empty range)
    5. munmap(A, 0): -EINVAL (an empty range); A stays
    6. mprotect(HOLE + 1, 1 page, PROT_READ): -EINVAL (not -ENOMEM)
    7. mprotect(S, 1 page, PROT_READ | PROT_WRITE) on the shared mapping of
       a file opened read-only (no VM_MAYWRITE): -EACCES; S stays
       read-only
    8. mprotect(A, 1 page, PROT_READ | PROT_WRITE), A's own protection:
       0, and mprotect_fixup leaves A whole (no split for unchanged
       flags)
    9. madvise(A, ULONG_MAX, DONTNEED): -EINVAL (PAGE_ALIGN of the length
       wraps to 0: "len was rounded up from small -ve to zero")
    10. madvise(A, 2**64 - 1 page, DONTNEED): -EINVAL (start + len wraps
        below start)
    11. madvise(A, 0, 1234): 0 -- an empty range returns before any vma is
        looked at, and 2.6.27 checks the advice only in madvise_vma, per
        vma (today's madvise_behavior_valid() comes first: -EINVAL)
    12. mprotect(A + 1 page, 2**64 - 1 page, PROT_READ): -ENOMEM (start +
        len wraps: end <= start)

    There are no interleavings: one CPU, one execution.  Harmless: none.
    Goals: the two refusals decided inside the walk (3 and 7); the others
    return before it, and the checks of their errnos stand for them.
    """
    kernel = boot_checked(sim, npages=8)
    mm = mm_alloc(kernel)
    mapping, _ = await file_with_pages(kernel, "file", 1)
    await down_write(mm.mmap_sem)
    await do_mmap(mm, A, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    # mlock's population is not modelled: the locked vma is made locked
    await do_mmap(mm, L, PAGE_SIZE, VM_READ | VM_WRITE | VM_LOCKED)
    await do_mmap(mm, N, PAGE_SIZE, VM_READ | VM_WRITE)
    s = await do_mmap(mm, S, PAGE_SIZE, VM_READ | VM_SHARED, file=mapping, pgoff=0)
    # do_mmap_pgoff for MAP_SHARED of a file without FMODE_WRITE:
    # vm_flags &= ~(VM_MAYWRITE | VM_SHARED) (the model's do_mmap has no
    # file modes; every file it maps is writable)
    s.vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
    await up_write(mm.mmap_sem)
    for address in (A, L, N):
        await fault_in(mm, address, write=True)
    await fault_in(mm, S, write=False)
    before = {a: pte_get(mm, a) for a in (A, L, N, S)}
    vmas_before = len(mm.vmas())

    got: list[int] = []

    async def calls() -> None:
        got.append(await sys_madvise(mm, HOLE + 1, PAGE_SIZE, MADV_DONTNEED))
        got.append(await sys_madvise(mm, A, PAGE_SIZE, 1234))
        got.append(await sys_madvise(mm, L, 2 * PAGE_SIZE, MADV_DONTNEED))
        got.append(await _munmap(mm, HOLE + 1, PAGE_SIZE))
        got.append(await _munmap(mm, A, 0))
        got.append(await sys_mprotect(mm, HOLE + 1, PAGE_SIZE, PROT_READ))
        got.append(await sys_mprotect(mm, S, PAGE_SIZE, PROT_READ | PROT_WRITE))
        got.append(await sys_mprotect(mm, A, PAGE_SIZE, PROT_READ | PROT_WRITE))
        got.append(await sys_madvise(mm, A, ULONG_MAX, MADV_DONTNEED))
        got.append(await sys_madvise(mm, A, ULONG_MAX + 1 - PAGE_SIZE, MADV_DONTNEED))
        got.append(await sys_madvise(mm, A, 0, 1234))
        got.append(await sys_mprotect(mm, A + PAGE_SIZE, ULONG_MAX + 1 - PAGE_SIZE, PROT_READ))

    async with sim.cpus() as cpus:
        cpus.start(calls, name="cpu0")
    want = [-EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EACCES, 0,
            -EINVAL, -EINVAL, 0, -ENOMEM]
    for n, (g, w) in enumerate(zip(got, want, strict=True), 1):
        sim.check(g == w, f"call {n} (see the scenario's list) returned {g}, expected {w}")
    for address, pte in before.items():
        now = pte_get(mm, address)
        sim.check(now == pte, f"a refused call changed the pte at {address:#x}: "
                              f"{pte!r} -> {now!r}")
    sim.check(len(mm.vmas()) == vmas_before,
              f"{len(mm.vmas())} vmas after the calls, {vmas_before} before: a refused or "
              f"unchanged-protection call split a vma", details=repr(mm.vmas()))


__all__ = ["syscall_errors"]
