"""mm/memory.py: page tables, faults, zapping, get_user_pages, page-table checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
from mmemu.kernel.locking import down_read, down_write, spin_lock, spin_unlock, up_read, up_write
from mmemu.mm import mmu_notifier
from mmemu.mm.filemap import AddressSpace, add_to_page_cache
from mmemu.mm.init import boot
from mmemu.mm.memory import (
    PGDIR_SHIFT,
    PMD_SHIFT,
    PUD_SHIFT,
    VM_FAULT_SIGBUS,
    fault_in,
    get_user_pages,
    handle_mm_fault,
    populated_ptes,
    pte_get,
    set_pte_at,
    mk_pte,
    unmap_mapping_range,
    zap_page_range,
)
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, do_munmap, mm_alloc
from mmemu.mm.page import PG_anon, PG_dirty, PG_uptodate, page_mapcount, put_page, unlock_page
from mmemu.mm.page_alloc import alloc_page_setup

RW = VM_READ | VM_WRITE


def run(body: Callable[[Any], Awaitable[None]], **kw: Any) -> mmemu.Result:
    async def scenario(sim: Any) -> None:
        await body(sim)
    kw.setdefault("strategy", mmemu.DFS(max_preemptions=0))
    return mmemu.explore(scenario, executions=kw.pop("executions", 10), **kw)


def ok(body: Callable[[Any], Awaitable[None]]) -> None:
    res = run(body)
    assert res.failure is None, res.failure.report()


async def cached_file(kernel: Any, npages: int) -> AddressSpace:
    mapping = AddressSpace(kernel, "f", i_size=npages * PAGE_SIZE)
    for i in range(npages):
        page = alloc_page_setup()
        assert await add_to_page_cache(page, mapping, i) == 0
        page.flags |= PG_uptodate
        await unlock_page(page)
        await put_page(page)
    return mapping


async def setup(sim: Any, *, flags: int = RW, npages: int = 2, file: bool = False,
                cached: bool = True) -> tuple[Any, Any, Any, Any]:
    kernel = boot(sim, npages=16)
    mm = mm_alloc(kernel)
    mapping = None
    if file:
        mapping = await cached_file(kernel, npages) if cached else \
            AddressSpace(kernel, "f", i_size=npages * PAGE_SIZE)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, npages * PAGE_SIZE, flags, file=mapping,
                        pgoff=0 if mapping is not None else None)
    await up_write(mm.mmap_sem)
    return kernel, mm, vma, mapping


def test_four_level_table_is_populated_lazily() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        assert mm.pgd == {}
        await fault_in(mm, vma.vm_start, write=True)
        a = vma.vm_start
        pud = mm.pgd[(a >> PGDIR_SHIFT) & 511]
        pmd = pud[(a >> PUD_SHIFT) & 511]
        table = pmd[(a >> PMD_SHIFT) & 511]
        assert list(table) == [(a >> 12) & 511]
        assert populated_ptes(mm, 0, 1 << 48) == [a]
    ok(body)


def test_anonymous_fault_maps_a_new_page_with_rmap() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        assert await fault_in(mm, vma.vm_start + PAGE_SIZE, write=False) == 0
        pte = pte_get(mm, vma.vm_start + PAGE_SIZE)
        page = pte.page
        assert pte.present and pte.write and pte.dirty and pte.young
        assert page._count.counter == 1 and page_mapcount(page) == 1
        assert page.flags & PG_anon and page.mapping is vma.anon_vma
        assert page.index == (vma.vm_start + PAGE_SIZE) >> 12
        assert vma.anon_vma.head == [vma]
        assert mm.anon_rss == 1
    ok(body)


def test_file_faults_read_shared_write_and_private_cow() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=RW | VM_SHARED, file=True)
        a = vma.vm_start
        await fault_in(mm, a, write=False)
        pte = pte_get(mm, a)
        page = mapping.page_tree[0]
        assert pte.page is page and pte.present and not pte.write
        assert page._count.counter == 2 and page_mapcount(page) == 1
        await fault_in(mm, a, write=True)  # do_wp_page: a shared page is reused
        pte = pte_get(mm, a)
        assert pte.page is page and pte.write and pte.dirty and page.flags & PG_dirty
        # a write fault on a not-present pte of a private mapping: COW copy
        await down_write(mm.mmap_sem)
        priv = await do_mmap(mm, 0, PAGE_SIZE, RW, file=mapping, pgoff=1)
        await up_write(mm.mmap_sem)
        await fault_in(mm, priv.vm_start, write=True)
        copy = pte_get(mm, priv.vm_start).page
        orig = mapping.page_tree[1]
        assert copy is not orig and copy.flags & PG_anon and copy._count.counter == 1
        assert orig._count.counter == 1 and page_mapcount(orig) == 0  # only the cache
    ok(body)


def test_read_then_write_on_private_file_mapping_copies() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=RW, file=True)
        a = vma.vm_start
        await fault_in(mm, a, write=False)
        orig = mapping.page_tree[0]
        assert pte_get(mm, a).page is orig and orig._count.counter == 2
        await fault_in(mm, a, write=True)
        new = pte_get(mm, a).page
        assert new is not orig and new.flags & PG_anon and pte_get(mm, a).write
        assert orig._count.counter == 1 and page_mapcount(orig) == 0
        assert mm.file_rss == 0 and mm.anon_rss == 1
    ok(body)


def test_fault_beyond_eof_is_sigbus() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=VM_READ | VM_SHARED, file=True)
        mapping.i_size = PAGE_SIZE
        assert await fault_in(mm, vma.vm_start + PAGE_SIZE) == VM_FAULT_SIGBUS
        assert pte_get(mm, vma.vm_start + PAGE_SIZE) is None
    ok(body)


def test_file_fault_reads_an_uncached_page_into_the_cache() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=VM_READ | VM_SHARED, file=True,
                                               cached=False)
        async with sim.cpus() as cpus:
            cpus.start(fault_in, mm, vma.vm_start, False, name="fault")
        page = mapping.page_tree[0]
        assert pte_get(mm, vma.vm_start).page is page
        assert page.flags & PG_uptodate and not page.flags & 1  # read, unlocked
        assert page._count.counter == 2 and mapping.nrpages == 1
    ok(body)


def test_racing_anonymous_faults_map_one_page_and_free_the_loser() -> None:
    seen: set[tuple[int, int]] = set()

    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        async with sim.cpus() as cpus:
            cpus.start(fault_in, mm, vma.vm_start, True, name="fault")
            cpus.start(fault_in, mm, vma.vm_start, True, name="fault")
        used = [p for p in kernel.page_alloc.pages if not p.free]
        sim.check(len(used) == 1 and pte_get(mm, vma.vm_start).page is used[0],
                  f"pages in use: {used}")
        seen.add((len(kernel.page_alloc.pages), used[0].pfn))

    res = run(body, strategy=mmemu.DFS(max_preemptions=2), executions=100_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions > 2
    # both outcomes happen: one page allocated, or two with the loser freed
    assert {n for n, _ in seen} == {1, 2}


def test_zap_calls_range_start_then_frees_then_range_end() -> None:
    """munmap with a registered notifier: start (pages still mapped), the
    gathered pages freed, then end."""
    events: list[str] = []

    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        await fault_in(mm, vma.vm_start, write=True)
        await fault_in(mm, vma.vm_start + PAGE_SIZE, write=True)
        pages = [pte_get(mm, vma.vm_start + i * PAGE_SIZE).page for i in range(2)]
        kernel.free_hooks.append(lambda p: events.append(f"free page{p.pfn}"))

        async def start(mn: Any, m: Any, s: int, e: int) -> None:
            mapped = [pte_get(mm, vma.vm_start + i * PAGE_SIZE) is not None for i in range(2)]
            events.append(f"start {s - vma.vm_start:#x}-{e - vma.vm_start:#x} mapped={mapped}")

        async def end(mn: Any, m: Any, s: int, e: int) -> None:
            events.append(f"end {s - vma.vm_start:#x}-{e - vma.vm_start:#x}")

        ops = mmu_notifier.MmuNotifierOps(invalidate_range_start=start, invalidate_range_end=end)
        assert await mmu_notifier.mmu_notifier_register(mmu_notifier.MmuNotifier(ops), mm) == 0

        async def munmap() -> None:
            await down_write(mm.mmap_sem)
            await do_munmap(mm, vma.vm_start, 2 * PAGE_SIZE)
            await up_write(mm.mmap_sem)

        async with sim.cpus() as cpus:
            cpus.start(munmap, name="munmap")
        assert all(p.free for p in pages)

    ok(body)
    assert events == ["start 0x0-0x2000 mapped=[True, True]", "free page0", "free page1",
                      "end 0x0-0x2000"]


def test_zap_page_range_brackets_the_frees_via_the_call_sites(monkeypatch: Any) -> None:
    """The call sites are the functions of mmemu.mm.mmu_notifier, by name."""
    events: list[str] = []

    async def fake_start(mm: Any, start: int, end: int, **kw: Any) -> None:
        events.append("range_start")

    async def fake_end(mm: Any, start: int, end: int, **kw: Any) -> None:
        events.append("range_end")

    monkeypatch.setattr(mmu_notifier, "mmu_notifier_invalidate_range_start", fake_start)
    monkeypatch.setattr(mmu_notifier, "mmu_notifier_invalidate_range_end", fake_end)

    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        await fault_in(mm, vma.vm_start, write=True)
        kernel.free_hooks.append(lambda p: events.append(f"free page{p.pfn}"))
        await down_read(mm.mmap_sem)
        await zap_page_range(vma, vma.vm_start, 2 * PAGE_SIZE)
        await up_read(mm.mmap_sem)
        assert pte_get(mm, vma.vm_start) is None

    ok(body)
    assert events == ["range_start", "free page0", "range_end"]


def test_unmap_mapping_range_keeps_private_copies_unless_even_cows() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=RW, file=True)
        a = vma.vm_start
        await fault_in(mm, a, write=False)               # the file page itself
        await fault_in(mm, a + PAGE_SIZE, write=True)    # a private COW copy
        await unmap_mapping_range(mapping, 0, 0, False)
        assert pte_get(mm, a) is None
        assert pte_get(mm, a + PAGE_SIZE) is not None  # the copy stays
        await unmap_mapping_range(mapping, 0, 0, True)
        assert pte_get(mm, a + PAGE_SIZE) is None
        assert [p.free for p in kernel.page_alloc.pages] == [False, False, True]
    ok(body)


def test_unmap_mapping_range_zaps_only_the_hole() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=VM_READ | VM_SHARED, file=True,
                                               npages=3)
        for i in range(3):
            await fault_in(mm, vma.vm_start + i * PAGE_SIZE)
        await unmap_mapping_range(mapping, PAGE_SIZE, PAGE_SIZE, True)
        assert [pte_get(mm, vma.vm_start + i * PAGE_SIZE) is not None for i in range(3)] == \
            [True, False, True]
    ok(body)


def test_get_user_pages_faults_in_and_pins() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=RW | VM_SHARED, file=True)
        await down_read(mm.mmap_sem)
        page = await get_user_pages(mm, vma.vm_start + 5, write=True)
        missing = await get_user_pages(mm, vma.vm_end, write=False)
        await up_read(mm.mmap_sem)
        assert missing is None
        assert page is mapping.page_tree[0]
        assert page._count.counter == 3  # cache + pte + pin
        assert pte_get(mm, vma.vm_start).write and page.flags & PG_dirty
        await put_page(page)
        assert page._count.counter == 2
    ok(body)


def test_get_user_pages_refuses_a_write_to_a_read_only_vma() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim, flags=VM_READ)
        await down_read(mm.mmap_sem)
        assert await get_user_pages(mm, vma.vm_start, write=True) is None
        assert await get_user_pages(mm, vma.vm_start, write=False) is not None
        await up_read(mm.mmap_sem)
    ok(body)


def test_freeing_a_page_a_pte_still_maps_is_reported() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        await fault_in(mm, vma.vm_start, write=True)
        page = pte_get(mm, vma.vm_start).page

        async def buggy() -> None:
            await put_page(page)  # the pte's reference, dropped without a zap

        async with sim.cpus() as cpus:
            cpus.start(buggy, name="buggy")

    f = run(body).failure
    assert f is not None and f.kind == "FreePageInPageTable"
    assert "page0 freed at" in f.message and "mm1@0x10000000" in f.message


def test_mapping_a_truncated_page_is_reported() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, mapping = await setup(sim, flags=VM_READ | VM_SHARED, file=True)
        page = mapping.page_tree[0]
        mapping.page_tree.pop(0)
        page.mapping = None  # as truncate leaves it

        async def buggy() -> None:
            await spin_lock(mm.page_table_lock)
            await mmemu.step("set_pte_at", writes=(("x",),))
            set_pte_at(mm, vma.vm_start, mk_pte(page, vma))
            await spin_unlock(mm.page_table_lock)

        async with sim.cpus() as cpus:
            cpus.start(buggy, name="buggy")

    f = run(body).failure
    assert f is not None and f.kind == "MappedTruncatedPage"
    assert "maps page0 at 0x10000000" in f.message and "page->mapping is NULL" in f.message


def test_handle_mm_fault_outside_the_vma_is_a_model_error() -> None:
    async def body(sim: Any) -> None:
        kernel, mm, vma, _ = await setup(sim)
        await handle_mm_fault(mm, vma, vma.vm_end, False)

    with pytest.raises(mmemu.ModelError, match="is not in"):
        run(body)


def test_a_fault_on_a_vma_that_changed_without_mmap_sem_is_a_failure_not_a_crash() -> None:
    """A driver that looks the vma up and faults without holding mmap_sem
    across both (the mutant `drop down_read(mmap_sem)` of a driver's GUP)
    can see munmap split the vma in between: a reported failure, not a
    ModelError that kills the exploration."""

    async def body(sim: Any) -> None:
        kernel = boot(sim, npages=4)
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, RW)
        await up_write(mm.mmap_sem)
        upper = vma.vm_start + PAGE_SIZE

        async def unmap_upper() -> None:
            await down_write(mm.mmap_sem)
            await do_munmap(mm, upper, PAGE_SIZE)
            await up_write(mm.mmap_sem)

        async def stale_fault() -> None:
            await handle_mm_fault(mm, vma, upper, False)  # vma found earlier, no mmap_sem

        async with sim.cpus() as cpus:
            cpus.start(unmap_upper)
            cpus.start(stale_fault)

    res = run(body, strategy=mmemu.DFS(max_preemptions=1), executions=50)
    assert res.failure is not None and res.failure.kind == "VmaChangedUnderFault", \
        res.failure.report() if res.failure else "no failure"
