"""mm/mmap.py: building address spaces, munmap, exit_mmap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.filemap import AddressSpace
from mmemu.mm.init import boot
from mmemu.mm.memory import fault_in, pte_get, pte_table
from mmemu.mm.mmap import (
    PAGE_SIZE,
    TASK_UNMAPPED_BASE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    AnonVma,
    BadVma,
    MmStruct,
    anon_vma_prepare,
    do_mmap,
    do_munmap,
    find_vma,
    mm_alloc,
    mmap_region,
    mmput,
)

RW = VM_READ | VM_WRITE


def run(body: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``body(sim)`` as a one-execution scenario; fail the test on any failure."""
    async def scenario(sim: Any) -> None:
        await body(sim)
    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)
    assert res.failure is None, res.failure.report()


def failure_of(body: Callable[[Any], Awaitable[None]]) -> mmemu.Failure:
    async def scenario(sim: Any) -> None:
        await body(sim)
    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)
    assert res.failure is not None
    return res.failure


async def new_mm(sim: Any, npages: int = 16) -> tuple[Any, MmStruct]:
    kernel = boot(sim, npages=npages)
    return kernel, mm_alloc(kernel)


def chain(mm: MmStruct) -> list[tuple[int, int]]:
    out = []
    v = mm.mmap
    while v is not None:
        out.append((v.vm_start, v.vm_end))
        v = v.vm_next
    return out


def test_vmas_are_kept_in_address_order() -> None:
    async def body(sim: Any) -> None:
        _, mm = await new_mm(sim)
        await down_write(mm.mmap_sem)
        b = TASK_UNMAPPED_BASE
        await mmap_region(mm, b + 8 * PAGE_SIZE, PAGE_SIZE, RW)
        await mmap_region(mm, b, 2 * PAGE_SIZE, RW)
        await mmap_region(mm, b + 4 * PAGE_SIZE, PAGE_SIZE, RW)
        auto = await do_mmap(mm, 0, 3 * PAGE_SIZE, RW)  # first fit after the highest end
        await up_write(mm.mmap_sem)
        assert chain(mm) == [(b, b + 2 * PAGE_SIZE), (b + 4 * PAGE_SIZE, b + 5 * PAGE_SIZE),
                             (b + 8 * PAGE_SIZE, b + 9 * PAGE_SIZE),
                             (b + 9 * PAGE_SIZE, b + 12 * PAGE_SIZE)]
        assert auto.vm_start == b + 9 * PAGE_SIZE
        assert mm.map_count == 4
        assert find_vma(mm, b + PAGE_SIZE).vm_start == b
        assert find_vma(mm, b + 2 * PAGE_SIZE).vm_start == b + 4 * PAGE_SIZE  # first above
        assert find_vma(mm, b + 12 * PAGE_SIZE) is None
        # anonymous vmas: pgoff is the page number of vm_start
        assert auto.vm_pgoff == auto.vm_start >> 12
    run(body)


def test_overlapping_mmap_is_refused() -> None:
    async def body(sim: Any) -> None:
        _, mm = await new_mm(sim)
        await down_write(mm.mmap_sem)
        await mmap_region(mm, TASK_UNMAPPED_BASE, 2 * PAGE_SIZE, RW)
        with pytest.raises(BadVma, match="overlaps"):
            await mmap_region(mm, TASK_UNMAPPED_BASE + PAGE_SIZE, 2 * PAGE_SIZE, RW)
        with pytest.raises(mmemu.ModelError, match="page-aligned"):
            await mmap_region(mm, TASK_UNMAPPED_BASE + 5, PAGE_SIZE, RW)
        await up_write(mm.mmap_sem)
    run(body)


def test_file_vmas_sit_on_i_mmap_and_share_an_anon_vma() -> None:
    async def body(sim: Any) -> None:
        kernel, mm = await new_mm(sim)
        mapping = AddressSpace(kernel, "f", i_size=8 * PAGE_SIZE)
        await down_write(mm.mmap_sem)
        f1 = await do_mmap(mm, 0, 2 * PAGE_SIZE, RW | VM_SHARED, file=mapping, pgoff=0)
        f2 = await do_mmap(mm, 0, 2 * PAGE_SIZE, RW, file=mapping, pgoff=4)
        av = AnonVma("shared")
        a1 = await do_mmap(mm, 0, PAGE_SIZE, RW, anon_vma=av)
        a2 = await do_mmap(mm, 0, PAGE_SIZE, RW, anon_vma=av)
        await up_write(mm.mmap_sem)
        assert mapping.i_mmap == [f1, f2]
        assert f1.mapping is mapping and f1.vm_file is not None and f1.vm_file.f_mapping is mapping
        assert a1.anon_vma is av and a2.anon_vma is av and av.head == [a1, a2]
        assert av.lock.cls == "anon_vma->lock" and av.head_next_lsb is False
    run(body)


def test_anon_vma_prepare_allocates_once_and_merges_with_a_neighbour() -> None:
    async def body(sim: Any) -> None:
        _, mm = await new_mm(sim)
        await down_write(mm.mmap_sem)
        v1 = await mmap_region(mm, TASK_UNMAPPED_BASE, PAGE_SIZE, RW)
        v2 = await mmap_region(mm, TASK_UNMAPPED_BASE + PAGE_SIZE, PAGE_SIZE, RW)
        v3 = await mmap_region(mm, TASK_UNMAPPED_BASE + 4 * PAGE_SIZE, PAGE_SIZE, RW)
        await up_write(mm.mmap_sem)
        av1 = await anon_vma_prepare(v1)
        assert await anon_vma_prepare(v1) is av1  # idempotent
        assert await anon_vma_prepare(v2) is av1  # adjacent, same flags: shared
        av3 = await anon_vma_prepare(v3)
        assert av3 is not av1
        assert av1.head == [v1, v2] and av3.head == [v3]
    run(body)


def test_munmap_splits_zaps_frees_and_unlinks() -> None:
    async def body(sim: Any) -> None:
        kernel, mm = await new_mm(sim)
        mapping = AddressSpace(kernel, "f", i_size=8 * PAGE_SIZE)
        await down_write(mm.mmap_sem)
        anon = await do_mmap(mm, 0, 4 * PAGE_SIZE, RW)
        filev = await do_mmap(mm, 0, 2 * PAGE_SIZE, RW | VM_SHARED, file=mapping)
        await up_write(mm.mmap_sem)
        s = anon.vm_start
        for i in range(4):
            await fault_in(mm, s + i * PAGE_SIZE, write=True)
        await fault_in(mm, filev.vm_start, write=False)
        pages = [pte_get(mm, s + i * PAGE_SIZE).page for i in range(4)]
        fpage = pte_get(mm, filev.vm_start).page
        assert fpage._count.counter == 2  # pagecache + pte
        await down_write(mm.mmap_sem)
        # punch a hole in the middle of the anon vma, and unmap the file vma
        assert await do_munmap(mm, s + PAGE_SIZE, 2 * PAGE_SIZE) == 0
        assert await do_munmap(mm, filev.vm_start, 2 * PAGE_SIZE) == 0
        await up_write(mm.mmap_sem)
        assert chain(mm) == [(s, s + PAGE_SIZE), (s + 3 * PAGE_SIZE, s + 4 * PAGE_SIZE)]
        lo, hi = mm.vmas()
        assert lo.anon_vma is hi.anon_vma is anon.anon_vma  # the split half kept it
        assert anon.anon_vma.head == [lo, hi]
        assert hi.vm_pgoff == (s + 3 * PAGE_SIZE) >> 12
        assert [p.free for p in pages] == [False, True, True, False]
        assert pte_get(mm, s + PAGE_SIZE) is None and pte_get(mm, s) is not None
        assert mapping.i_mmap == []  # unlinked
        assert fpage._count.counter == 1 and fpage._mapcount.counter == -1  # only the cache
        assert mm.anon_rss == 2 and mm.file_rss == 0
    run(body)


def test_munmap_frees_empty_page_tables() -> None:
    async def body(sim: Any) -> None:
        _, mm = await new_mm(sim)
        await down_write(mm.mmap_sem)
        v = await do_mmap(mm, 0, PAGE_SIZE, RW)
        await up_write(mm.mmap_sem)
        await fault_in(mm, v.vm_start, write=True)
        assert pte_table(mm, v.vm_start) is not None
        await down_write(mm.mmap_sem)
        await do_munmap(mm, v.vm_start, PAGE_SIZE)
        await up_write(mm.mmap_sem)
        assert pte_table(mm, v.vm_start) is None and mm.pgd == {}
        assert mm.map_count == 0 and mm.mmap is None
    run(body)


def test_munmap_without_mmap_sem_for_write_is_a_bug() -> None:
    async def body(sim: Any) -> None:
        _, mm = await new_mm(sim)
        await down_write(mm.mmap_sem)
        v = await do_mmap(mm, 0, PAGE_SIZE, RW)
        await up_write(mm.mmap_sem)
        await do_munmap(mm, v.vm_start, PAGE_SIZE)
    f = failure_of(body)
    assert f.kind == "BadVma"
    assert "do_munmap without mm1->mmap_sem held for write" in f.message


def test_exit_mmap_releases_notifiers_first_then_frees_everything() -> None:
    from mmemu.mm import mmu_notifier
    events: list[str] = []

    async def body(sim: Any) -> None:
        kernel, mm = await new_mm(sim)
        mapping = AddressSpace(kernel, "f", i_size=8 * PAGE_SIZE)
        await down_write(mm.mmap_sem)
        a = await do_mmap(mm, 0, 2 * PAGE_SIZE, RW)
        f = await do_mmap(mm, 0, PAGE_SIZE, RW, file=mapping)
        await up_write(mm.mmap_sem)
        await fault_in(mm, a.vm_start, write=True)
        await fault_in(mm, f.vm_start, write=False)
        anon_page = pte_get(mm, a.vm_start).page
        file_page = pte_get(mm, f.vm_start).page

        async def release(mn: Any, m: Any) -> None:
            events.append(f"release anon_free={anon_page.free}")

        async def start(mn: Any, m: Any, s: int, e: int) -> None:
            events.append(f"start {s:#x}-{e:#x}")

        async def end(mn: Any, m: Any, s: int, e: int) -> None:
            events.append(f"end anon_free={anon_page.free}")

        ops = mmu_notifier.MmuNotifierOps(release=release, invalidate_range_start=start,
                                          invalidate_range_end=end)
        assert await mmu_notifier.mmu_notifier_register(mmu_notifier.MmuNotifier(ops), mm) == 0
        async with sim.cpus() as cpus:
            cpus.start(mmput, mm, name="exit")
        assert mm.dead and mm.map_count == 0 and mm.mmap is None
        assert anon_page.free and file_page._count.counter == 1
        assert a.anon_vma is not None and a.anon_vma.head == [] and mapping.i_mmap == []
    run(body)
    # ->release ran before any page was freed; it unhashed the notifier, so
    # the unmap that followed had nobody to call
    assert events == ["release anon_free=False"]
