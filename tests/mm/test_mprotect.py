"""mprotect (change_protection) and split_vma / vma_adjust: the pte and vma
effects, the interleavings the protocol comments name forced both ways,
and the mutant caught with a short report."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.check import boot_checked
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.filemap import AddressSpace
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import (
    EACCES,
    ENOMEM,
    PAGE_SIZE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    do_mmap,
    mm_alloc,
)
from mmemu.mm.mprotect import PROT_READ, PROT_WRITE, sys_mprotect
from mmemu.testing import force
from tests.mm._helpers import labels, run_setup

KVM = {"driver": "kvm"}


def test_mprotect_of_part_of_a_vma_splits_it_and_write_protects_the_ptes() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8)
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, 3 * PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm.mmap_sem)
        a = vma.vm_start
        for i in range(3):
            await fault_in(mm, a + i * PAGE_SIZE, write=True)
        sim.check(await sys_mprotect(mm, a + PAGE_SIZE, PAGE_SIZE, PROT_READ) == 0, "mprotect")
        got = [(v.vm_start - a, v.vm_end - a, bool(v.vm_flags & VM_WRITE), v.vm_pgoff - (a >> 12))
               for v in mm.vmas()]
        sim.check(got == [(0, 4096, True, 0), (4096, 8192, False, 1), (8192, 12288, True, 2)],
                  f"vmas after mprotect: {got}")
        sim.check(all(v.anon_vma is vma.anon_vma and v in vma.anon_vma.head for v in mm.vmas()),
                  "every part of the split vma is on the anon_vma")
        writes = [pte_get(mm, a + i * PAGE_SIZE).write for i in range(3)]  # type: ignore[union-attr]
        sim.check(writes == [True, False, True], f"pte write bits {writes}")
        # PROT_WRITE again: vmas whose flags do not change are left alone; the
        # private page made writable stays read-only (COW prot) until the next
        # write makes it writable again through do_wp_page's reuse
        sim.check(await sys_mprotect(mm, a, 3 * PAGE_SIZE, PROT_READ | PROT_WRITE) == 0, "")
        writes = [pte_get(mm, a + i * PAGE_SIZE).write for i in range(3)]  # type: ignore[union-attr]
        sim.check(writes == [True, False, True], f"after mprotect(PROT_WRITE): {writes}")
        b = a + PAGE_SIZE
        page = pte_get(mm, b).page  # type: ignore[union-attr]
        await fault_in(mm, b, write=True)
        p = pte_get(mm, b)
        sim.check(p is not None and p.write and p.page is page, f"reused in place: {p!r}")
        sim.check(await sys_mprotect(mm, a + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ) == -ENOMEM,
                  "mprotect of a hole is -ENOMEM")

    run_setup(scenario)


def test_mprotect_keeps_a_shared_writable_mapping_writable_and_refuses_what_mmap_forbade() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8)
        mm = mm_alloc(kernel)
        mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED, file=mapping, pgoff=0)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start, write=True)
        sim.check(await sys_mprotect(mm, vma.vm_start, PAGE_SIZE, PROT_READ) == 0, "")
        sim.check(not pte_get(mm, vma.vm_start).write, "shared, PROT_READ: read-only")  # type: ignore[union-attr]
        sim.check(await sys_mprotect(mm, vma.vm_start, PAGE_SIZE, PROT_READ | PROT_WRITE) == 0, "")
        sim.check(pte_get(mm, vma.vm_start).write, "shared, PROT_WRITE: writable")  # type: ignore[union-attr]
        vma.vm_flags &= ~0x20  # as if mapped from a read-only file: no VM_MAYWRITE
        sim.check(await sys_mprotect(mm, vma.vm_start, PAGE_SIZE, PROT_WRITE) == -EACCES,
                  "PROT_WRITE without VM_MAYWRITE is -EACCES")

    run_setup(scenario)


# ------------------------------------------- mprotect vs a guest write fault


def test_guest_gup_before_mprotect_retries_on_the_count_and_gup_then_fails() -> None:
    out = force("mprotect:mprotect-vs-guest-write", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("mprotect", "B. kvm->mmu_notifier_count++"),
        ("kvm", "4. mmu_notifier_retry"),
        ("mprotect", "C. kvm->mmu_notifier_count--"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    k = labels(out, "kvm")
    assert "4. retry: mmu_notifier_count != 0" in k
    retry = k.index("4. spin_unlock(kvm->mmu_lock) (retry)")
    assert "get_user_pages: find_extend_vma" in k[retry:]
    assert not any(x.startswith("5. set_spte") for x in k[retry:])  # GUP(write) failed
    assert not any(x.startswith("kvm: access") for x in k)


def test_guest_gup_before_mprotect_and_check_after_it_retries_on_the_seq() -> None:
    out = force("mprotect:mprotect-vs-guest-write", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("mprotect", "C. kvm->mmu_notifier_count--"),
        ("kvm", "4. mmu_notifier_retry"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    k = labels(out, "kvm")
    assert "4. spin_unlock(kvm->mmu_lock) (retry)" in k
    assert "4. retry: mmu_notifier_count != 0" not in k


def test_mprotect_without_the_bracket_leaves_a_writable_translation_when_forced() -> None:
    out = force("mprotect:mprotect-vs-guest-write", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("mprotect", "mprotect: up_write(mmap_sem)"),
        ("kvm", "4. mmu_notifier_retry"),
    ], params=KVM, mutants=["mprotect:no-notify"])
    assert out.failure is not None and out.failure.kind == "PteChangeNotNotified"
    assert "write-protected" in out.failure.message


@pytest.mark.parametrize("params", [{"driver": "kvm"}, {"driver": "gru"},
                                    {"driver": "hmm", "api": "modern"}])
def test_mprotect_no_notify_is_caught_minimally(params: dict[str, str]) -> None:
    res = mmemu.explore("mprotect:mprotect-vs-guest-write", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, params=params, mutants=["mprotect:no-notify"])
    f = res.failure
    assert f is not None and f.kind in ("PteChangeNotNotified", "SecondaryWriteToReadOnly"), f
    assert f.preemptions <= 2
    assert "write-protected" in f.message or "never reached driver" in f.message


# ------------------------------------------------- vma_adjust vs an rmap walk


async def _split_vs_reclaim(sim: Any) -> None:
    """CPU0 splits a two-page private file vma (mprotect of the first page);
    CPU1 reclaims the file page mapped at the second: try_to_unmap computes
    its address from vm_start/vm_pgoff under i_mmap_lock."""
    from mmemu.mm.vmscan import lru_cache_add, reclaim_page
    from mmemu.mm.rmap import page_referenced
    kernel = boot_checked(sim, npages=8)
    mm = mm_alloc(kernel)
    mapping = AddressSpace(kernel, "file", i_size=2 * PAGE_SIZE)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    a = vma.vm_start + PAGE_SIZE
    await fault_in(mm, a)
    page = pte_get(mm, a).page  # type: ignore[union-attr]
    assert page is not None
    await lru_cache_add(page)
    await page_referenced(page, False)  # old: reclaim may take it
    out: dict[str, Any] = {}

    async def mprotect() -> None:
        out["mprotect"] = await sys_mprotect(mm, vma.vm_start, PAGE_SIZE, PROT_READ)

    async def reclaim() -> None:
        out["freed"] = await reclaim_page(page)

    async with sim.cpus() as cpus:
        cpus.start(mprotect, name="mprotect")
        cpus.start(reclaim, name="reclaim")
    sim.check(out["mprotect"] == 0, "mprotect failed")
    sim.check(out["freed"] and pte_get(mm, a) is None,
              f"reclaim left the page mapped: freed={out['freed']} pte={pte_get(mm, a)!r}")


@pytest.mark.parametrize("walk_first", [True, False])
def test_split_and_rmap_walk_see_the_vma_whole_before_or_after(walk_first: bool) -> None:
    adjust = ("mprotect", "3. vma_adjust: vm_start/vm_end/vm_pgoff; __insert_vm_struct")
    walk = ("reclaim", "1. walk i_mmap")
    out = force(_split_vs_reclaim, [walk, adjust] if walk_first else [adjust, walk])
    assert out.failure is None, out.failure.report()
    r = labels(out, "reclaim")
    assert "6. page_cache_release (the pte's reference)" in r


def test_split_vs_reclaim_passes_exhaustively() -> None:
    res = mmemu.explore(_split_vs_reclaim, strategy=mmemu.DFS(max_preemptions=2),
                        executions=10_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions > 1
