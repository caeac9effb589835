"""madvise(MADV_DONTNEED): the zap under mmap_sem for read, against a fault
and a KVM guest fault that run concurrently."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.drivers.kvm import KvmDriver
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import EINVAL, ENOMEM, PAGE_SIZE, VM_LOCKED
from mmemu.races.mm import check_page_refs
from tests.mm._helpers import anon_mm, run_setup


async def _anon(sim: Any, npages: int = 2) -> tuple[Any, Any, Any]:
    return await anon_mm(sim, npages, faulted=0)


def test_dontneed_drops_the_pages_and_keeps_the_vma() -> None:
    async def scenario(sim: Any) -> None:
        kernel, mm, vma = await _anon(sim)
        a = vma.vm_start
        await fault_in(mm, a, write=True)
        await fault_in(mm, a + PAGE_SIZE, write=True)
        page = pte_get(mm, a).page  # type: ignore[union-attr]
        sim.check(await sys_madvise(mm, a, PAGE_SIZE, MADV_DONTNEED) == 0, "madvise")
        sim.check(pte_get(mm, a) is None and page.free, "page 0 dropped and freed")
        sim.check(pte_get(mm, a + PAGE_SIZE) is not None, "page 1 kept")
        sim.check(mm.vmas() == [vma], "the vma stays")
        await fault_in(mm, a, write=False)
        sim.check(pte_get(mm, a) is not None, "the next access faults a new page in")
        sim.check(await sys_madvise(mm, a, 4 * PAGE_SIZE, MADV_DONTNEED) == -ENOMEM,
                  "a hole in the range is -ENOMEM (the mapped part is still dropped)")
        sim.check(pte_get(mm, a + PAGE_SIZE) is None, "dropped before the hole")
        vma.vm_flags |= VM_LOCKED
        sim.check(await sys_madvise(mm, a, PAGE_SIZE, MADV_DONTNEED) == -EINVAL, "mlocked")
        check_page_refs(sim, kernel)

    run_setup(scenario)


async def _dontneed_vs_fault(sim: Any) -> None:
    """CPU0 madvise(DONTNEED) under mmap_sem read; CPU1 a KVM guest fault
    (GUP under mmap_sem read, concurrently)."""
    kernel, mm, vma = await _anon(sim, 1)
    a = vma.vm_start
    await fault_in(mm, a, write=True)
    kvm = KvmDriver()
    assert await kvm.attach(kernel, mm) == 0

    async def guest() -> None:
        if await kvm.fault(a, True):
            await kvm.access(a)

    async with sim.cpus() as cpus:
        cpus.start(sys_madvise, mm, a, PAGE_SIZE, MADV_DONTNEED, name="madvise")
        cpus.start(guest, name="kvm")
    pte = pte_get(mm, a)
    e = kvm.tlb.entries.get(0)
    sim.check(e is None or (pte is not None and e.page is pte.page),
              f"kvm maps page{e.page.pfn if e else '-'} but the pte is {pte!r}")
    check_page_refs(sim, kernel)


def test_dontneed_vs_a_guest_fault_passes_exhaustively() -> None:
    res = mmemu.explore(_dontneed_vs_fault, strategy=mmemu.DFS(max_preemptions=2),
                        executions=20_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions > 10


def test_the_guest_retries_when_gup_ran_before_the_zap() -> None:
    from mmemu.testing import force
    from tests.mm._helpers import labels
    out = force(_dontneed_vs_fault, [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("madvise", "B. kvm->mmu_notifier_count++"),
        ("kvm", "4. mmu_notifier_retry"),
    ])
    assert out.failure is None, out.failure.report()
    k = labels(out, "kvm")
    assert "4. retry: mmu_notifier_count != 0" in k
    assert "do_anonymous_page: alloc_zeroed_user_highpage" in k  # GUP faulted a new page


@pytest.mark.parametrize("bad", [1, 0x1001])
def test_bad_arguments_are_einval(bad: int) -> None:
    async def scenario(sim: Any) -> None:
        kernel, mm, vma = await _anon(sim)
        sim.check(await sys_madvise(mm, vma.vm_start + bad, PAGE_SIZE, MADV_DONTNEED)
                  == -EINVAL, "unaligned")
        sim.check(await sys_madvise(mm, vma.vm_start, PAGE_SIZE, 99) == -EINVAL, "behavior")

    run_setup(scenario)
