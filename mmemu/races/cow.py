"""Race suites for copy-on-write: fork write-protecting the parent's ptes, and
the COW fault that moves the parent's pte to a private copy, each against a
secondary MMU that maps the page.

Emulates: kernel/fork.c (dup_mmap) and mm/memory.c (copy_page_range,
do_wp_page) against the drivers (2.6.27, and the modern generation's
PROTECTION_PAGE / CLEAR brackets)

Neither path frees a page: the old page stays with the child (or the
parent) after the COW.  What goes wrong without the notifier is coherence,
so the suites rely on the end-of-execution check of mmemu.check.notifier
(on in every suite): each translation still in any TLB of a driver maps the
page the CPU pte maps now (IncoherentTranslation), and is writable only if
that pte is writable (SecondaryWriteToReadOnly).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import guarded, supports_api
from mmemu.mm.fork import dup_mm
from mmemu.mm.memory import COW_COPIED, PRIVATE_COPY, WRPROTECTED_FOR_FORK, fault_in, pte_get
from mmemu.races.notifier import DRIVER_AXES, Guest, guest, guest_fault



async def fork(g: Guest, out: dict[str, Any]) -> None:
    """The process forks: dup_mm copies the mm (copy_page_range)."""
    out["child"] = await dup_mm(g.mm)


@mmemu.scenario("cow:fork-vs-guest-write", axes=DRIVER_AXES, filter=supports_api,
                catches=["memory:fork-no-notify"], reaches=[WRPROTECTED_FOR_FORK, COW_COPIED])
async def fork_vs_guest_write(sim: Any) -> None:
    """fork write-protects an anonymous page the guest writes.

    CPU0 (fork: dup_mmap, copy_page_range)     CPU1 (guest write fault)
    1. invalidate_range_start (driver: zap,     F1. seq = mmu_notifier_seq
       KVM count++)                             F2. GUP(write) (page ref; a
    2. both PTLs                                    read-only pte: do_wp_page
    3. ptep_set_wrprotect(parent); read-only        copies the page first)
       copy in the child; get_page;             F3. lock; retry if count/seq
       page_dup_rmap                            F4. install writable; unlock
    4. unlock the PTLs                          X. access
    5. invalidate_range_end (KVM: seq++,
       count--)

    The guest wrote the page before the fork: its translation is writable.

    There are 2 critical interleavings that matter:
    - F2 before 3 and F3 between 1 and 5: count != 0 (GRU: range active,
      HMM: seq), the fault retries after 5 and GUP(write) breaks the COW:
      the guest gets the parent's new private copy, the child keeps the old.
    - F2 before 3 and F3 after 5: seq changed, the same retry.
    Without 1 and 5 (mutant ``memory:fork-no-notify``) the writable
    translation from before the fork (or one F4 makes from F2's page)
    survives 3: the guest writes a page the parent maps read-only and the
    child shares.

    Harmless: F2 after 3 (GUP sees the read-only pte and COWs); F4 before 1
    (1 zaps it).
    """
    g = await guest(sim, kind="anon")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, True)
    out: dict[str, Any] = {}
    async with sim.cpus() as cpus:
        cpus.start(fork, g, out, name="fork")
        cpus.start(guest_fault, g, True, name=g.driver.name)


async def parent_write(g: Guest) -> None:
    """The parent process writes its page: a COW fault (do_wp_page)."""
    await fault_in(g.mm, g.addr, write=True)


@mmemu.scenario("cow:wp-fault-vs-guest-read", axes=DRIVER_AXES, filter=supports_api,
                catches=["memory:cow-no-notify"], reaches=[COW_COPIED])
async def wp_fault_vs_guest_read(sim: Any) -> None:
    """The parent's COW fault against a guest that reads the page.

    After a fork (in setup) the parent and the child share the anonymous
    page read-only.

    CPU0 (the parent writes: do_wp_page)       CPU1 (guest read fault)
    1. get_page(old); copy to a new page        F1. seq snapshot
       (modern: invalidate_range_start)         F2. GUP(read): the old page
    2. PTL; pte_same? ptep_clear_flush_notify:  F3. lock; retry?
       the pte is cleared, ->invalidate_page    F4. install read-only;
       (2.6.27)                                     unlock
    3. set_pte_at(new, writable); rmap; unlock  X. access
       (modern: invalidate_range_end)

    There is 1 critical interleaving that matters:
    - F4 before 2: the guest maps the old page; 2 (modern: 1) zaps it; a
      later fault maps the new one.  Without the notification (mutant
      ``memory:cow-no-notify``) the guest keeps reading the old page --
      which the child now owns -- while the parent writes the new one.
    Harmless: F2 after 3 (the guest maps the new page); F2 between 1 and 3
    (F3 retries on the seq, or, modern, waits for the range).
    """
    g = await guest(sim, kind="anon")
    await dup_mm(g.mm)
    async with sim.cpus() as cpus:
        cpus.start(parent_write, g, name="parent")
        cpus.start(guest_fault, g, False, name=g.driver.name)





@mmemu.scenario("mm:private-cow-vs-truncate", catches=["truncate:single-unmap"],
                reaches=[PRIVATE_COPY], max_preemptions=1,
                bound_reason="more than 500 traces unbounded (the fault's retries against "
                             "truncate's two unmaps); 59 executions at one preemption, which "
                             "catches its mutant")
async def private_cow_vs_truncate(sim: Any) -> None:
    """A write fault on a MAP_PRIVATE file page (a COW copy) against vmtruncate.

    CPU0 (write fault, __do_fault)          CPU1 (vmtruncate(file, 0))
    1. find_lock_page; lock_page            a. i_size_write(0)
    2. i_size recheck under the page lock   b. unmap_mapping_range(even_cows)
    3. copy the page (anon, private)        c. truncate_inode_pages: lock_page;
    4. PTL: set_pte_at(the copy)               page_mapped? (the pagecache page:
    5. unlock_page                             no); remove it; unlock
                                            d. unmap_mapping_range(even_cows)
                                               again

    There are 2 critical interleavings that matter:
     - 1-5 between b and d: the copy is mapped after b, and c cannot see it
       (it is not the pagecache page); d zaps it.  Without d (mutant
       ``truncate:single-unmap``, vmtruncate before d00806b183152af6d2) the
       process keeps a private copy of a page beyond EOF.
     - a before 2: the i_size recheck under the page lock fails: SIGBUS.
    Harmless: 1-5 before b (b zaps the copy); c before 1 (no page: SIGBUS).

    At the end: no pte maps the file beyond EOF, every page is accounted for.
    """
    from mmemu.check import boot_checked
    from mmemu.mm.mmap import VM_READ, VM_WRITE
    from mmemu.mm.truncate import vmtruncate
    from mmemu.races.mm import check_page_refs, file_with_pages, mm_with_file_vma
    kernel = boot_checked(sim, npages=8)
    mapping, _ = await file_with_pages(kernel, "file", 1)
    mm, vma = await mm_with_file_vma(kernel, mapping, 1, flags=VM_READ | VM_WRITE)

    async with sim.cpus() as cpus:
        cpus.start(fault_in, mm, vma.vm_start, True, name="fault")
        cpus.start(vmtruncate, mapping, 0, name="truncate")
    pte = pte_get(mm, vma.vm_start)
    sim.check(pte is None, f"after truncate to 0 a pte still maps the file's first page: {pte!r}"
              + (f" (page{pte.page.pfn}, a private copy)" if pte and pte.page else ""),
              details=pte.page.dump() if pte is not None and pte.page is not None else "")
    check_page_refs(sim, kernel)
__all__ = ["fork_vs_guest_write", "private_cow_vs_truncate", "wp_fault_vs_guest_read"]
