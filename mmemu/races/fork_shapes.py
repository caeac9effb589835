"""Race suites for fork against the parent's own address-space changes: a
munmap and a first-touch fault of the parent while dup_mmap copies it.

Emulates: kernel/fork.c (dup_mmap: the parent's mmap_sem held for write
across the whole copy), mm/memory.c (copy_page_range, do_anonymous_page),
mm/mmap.c (do_munmap) (2.6.27)

dup_mmap reads the parent's vma list, copies each vma (``*tmp = *mpnt``,
its anon_vma included), links the copy, and then copy_page_range reads
``mpnt->anon_vma`` and the parent's ptes again.  The parent's mmap_sem,
held for write, is what makes those reads one snapshot: no munmap, mprotect
or fault of the parent runs in between (rmap walkers still do; they are
the subject of the cow:* and swap:* suites).

The checks, at the end:
- fork is atomic for the parent's munmap: the child has the vma and its
  page, or neither (``ForkLostPage``);
- every pte that maps an anonymous page is in a vma its anon_vma lists, so
  rmap (try_to_unmap, page_referenced) can find it (``RmapMissesPte``);
- every page's count and mapcount match the ptes that map it.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.engine import InvariantViolation
from mmemu.kernel.locking import down_write, up_write
from mmemu.lowlevel import reach
from mmemu.mm.fork import NO_OLDMM_LOCK, dup_mm
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, MmStruct, do_mmap, find_vma, mm_alloc
from mmemu.mm.page import PageAnon
from mmemu.races.mm import check_page_refs
from mmemu.races.notifier import munmap


class ForkLostPage(InvariantViolation):
    """The child of a fork has a vma but not the page the parent had there."""


class RmapMissesPte(InvariantViolation):
    """A pte maps an anonymous page from a vma that the page's anon_vma does
    not list: rmap walks can never find (and so never unmap) it."""


def check_rmap_finds_every_pte(sim: Any, mms: list[MmStruct]) -> None:
    """Each present pte of an anonymous page lies in a vma on that page's
    anon_vma list (page->mapping): the walk rmap does from the page."""
    for mm in mms:
        for vma in mm.vmas():
            for addr in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
                pte = pte_get(mm, addr)
                if pte is None or not pte.present or pte.page is None or not PageAnon(pte.page):
                    continue
                av = pte.page.mapping
                if not any(v is vma for v in getattr(av, "head", ())):
                    raise RmapMissesPte(
                        f"{mm.__mmemu_name__} maps anonymous page{pte.page.pfn} at {addr:#x}, "
                        f"but its anon_vma ({av!r}) does not list that vma "
                        f"(vma->anon_vma is {vma.anon_vma!r}): rmap cannot find the pte",
                        details=pte.page.dump())


async def _anon_mm(sim: Any, *, touched: bool) -> tuple[Any, MmStruct, int]:
    """Setup: one mm with a one-page anonymous vma, written once if
    ``touched`` (then it has its anon_vma and a private page)."""
    kernel = boot_checked(sim, npages=6)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    if touched:
        await fault_in(mm, vma.vm_start, write=True)
    return kernel, mm, vma.vm_start


def _child_outcomes(out: dict[str, Any], addr: int) -> tuple[bool, bool]:
    child = out["child"]
    vma = find_vma(child, addr)
    has_vma = vma is not None and vma.vm_start <= addr
    pte = pte_get(child, addr)
    return has_vma, pte is not None and pte.present


async def _fork(mm: MmStruct, out: dict[str, Any]) -> None:
    out["child"] = await dup_mm(mm)
    has_vma, has_page = _child_outcomes(out, out["addr"])
    if has_vma and has_page:
        reach("fork: the child got the vma and the parent's page")
    elif not has_vma:
        reach("fork: the child has no vma (munmap came first)")
    else:
        reach("fork: the child got the vma, no pte")


@mmemu.scenario("cow:fork-vs-munmap", catches=[NO_OLDMM_LOCK],
                reaches=["fork: the child got the vma and the parent's page",
                         "fork: the child has no vma (munmap came first)"])
async def fork_vs_munmap(sim: Any) -> None:
    """The parent munmaps its anonymous page while it forks.

    CPU0 (fork: dup_mmap)                       CPU1 (munmap of the parent)
    1. down_write(oldmm->mmap_sem)              M1. down_write(mmap_sem)
    2. walk oldmm->mmap; *tmp = *mpnt;          M2. detach the vma
       anon_vma_link(tmp); link tmp             M3. range_start; zap the pte
    3. copy_page_range: both PTLs; the              (page_remove_rmap, the
       parent's pte write-protected, the            page freed unless the
       child's a read-only copy; get_page;          child maps it); range_end
       page_dup_rmap                            M4. anon_vma_unlink;
    4. up_write(oldmm->mmap_sem)                    free_pgtables
                                                M5. up_write(mmap_sem)

    There are 2 critical interleavings that matter:
    - 1-4 before M1: the child has the vma and maps the page (mapcount 2);
      M3 drops the parent's pte only, the page lives on in the child;
    - M1-M5 before 1: the parent has no vma there; nor has the child.
    Without 1 and 4 (mutant ``fork:dup-mmap-no-mmap-sem``) M2-M4 run between
    2 and 3: the child keeps a copy of a vma the parent was unmapping, but 3
    finds the pte zapped and the page freed -- the child's memory reads as
    zeros (or 3 copies the pte first and the page survives, by luck).

    Harmless: nothing else -- the mmap_sem orders the two sides completely.
    """
    kernel, mm, addr = await _anon_mm(sim, touched=True)
    out: dict[str, Any] = {"addr": addr}
    async with sim.cpus() as cpus:
        cpus.start(_fork, mm, out, name="fork")
        cpus.start(munmap, mm, addr, name="munmap")
    has_vma, has_page = _child_outcomes(out, addr)
    if has_vma and not has_page:
        raise ForkLostPage(
            f"the child has the vma at {addr:#x} but no pte: fork copied the vma of a region "
            f"the parent's munmap was tearing down, and the page is gone")
    check_rmap_finds_every_pte(sim, [mm, out["child"]])
    check_page_refs(sim, kernel)


async def _parent_write(mm: MmStruct, addr: int) -> None:
    await fault_in(mm, addr, write=True)


@mmemu.scenario("cow:fork-vs-fault", catches=[NO_OLDMM_LOCK],
                reaches=["fork: the child got the vma and the parent's page",
                         "fork: the child got the vma, no pte"])
async def fork_vs_fault(sim: Any) -> None:
    """The parent writes an anonymous page it never touched while it forks.

    The vma has no anon_vma yet: the first fault gives it one.

    CPU0 (fork: dup_mmap)                       CPU1 (parent write fault)
    1. down_write(oldmm->mmap_sem)              F1. down_read(mmap_sem); find_vma
    2. walk; *tmp = *mpnt (tmp->anon_vma =      F2. anon_vma_prepare:
       NULL, nothing to link); link tmp             vma->anon_vma = a new one
    3. copy_page_range: mpnt->anon_vma?         F3. do_anonymous_page: PTL;
       none: nothing to copy (the child             set_pte_at; page_add_new_
       faults its own pages); else both PTLs,       anon_rmap; up_read
       copy the pte, page_dup_rmap
    4. up_write(oldmm->mmap_sem)

    There are 2 critical interleavings that matter:
    - F1-F3 before 1: the child's vma joins the new anon_vma in 2 and 3
      copies the pte read-only: parent and child share the page;
    - 1-4 before F1: the child has the vma, no anon_vma and no pte; the
      parent's fault is its own.
    Without 1 and 4 (mutant ``fork:dup-mmap-no-mmap-sem``) F2-F3 run between
    2 and 3: 2 copied a NULL anon_vma, 3 sees the new one and copies the
    pte, so the child maps an anonymous page whose anon_vma does not list
    the child's vma -- try_to_unmap can never take that pte down, and
    reclaim frees (or swaps out) a page the child still maps.

    Harmless: nothing else -- the mmap_sem orders the two sides completely.
    """
    kernel, mm, addr = await _anon_mm(sim, touched=False)
    out: dict[str, Any] = {"addr": addr}
    async with sim.cpus() as cpus:
        cpus.start(_fork, mm, out, name="fork")
        cpus.start(_parent_write, mm, addr, name="parent")
    check_rmap_finds_every_pte(sim, [mm, out["child"]])
    check_page_refs(sim, kernel)


__all__ = ["ForkLostPage", "RmapMissesPte", "check_rmap_finds_every_pte", "fork_vs_fault",
           "fork_vs_munmap"]
