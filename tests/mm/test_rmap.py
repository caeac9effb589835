"""mm/rmap.py: rmap counts, try_to_unmap, page_referenced; lockdep over the mm paths."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm import mmu_notifier
from mmemu.mm.filemap import AddressSpace, add_to_page_cache
from mmemu.mm.init import boot
from mmemu.mm.memory import fault_in, is_migration_entry, pte_get
from mmemu.mm.mmap import (
    PAGE_SIZE,
    VM_LOCKED,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    do_mmap,
    do_munmap,
    mm_alloc,
)
from mmemu.mm.page import PG_uptodate, get_page, lock_page, page_mapcount, put_page, unlock_page
from mmemu.mm.page_alloc import alloc_page_setup
from mmemu.mm.rmap import SWAP_FAIL, SWAP_SUCCESS, page_referenced, try_to_unmap

SHARED = VM_READ | VM_WRITE | VM_SHARED


def run(body: Callable[[Any], Awaitable[None]], **kw: Any) -> mmemu.Result:
    async def scenario(sim: Any) -> None:
        await body(sim)
    kw.setdefault("strategy", mmemu.DFS(max_preemptions=0))
    return mmemu.explore(scenario, executions=kw.pop("executions", 10), **kw)


def ok(body: Callable[[Any], Awaitable[None]]) -> None:
    res = run(body)
    assert res.failure is None, res.failure.report()


async def file_mapped_twice(sim: Any, *, flags: int = SHARED) -> tuple[Any, Any, list[Any], Any]:
    """One cached file page mapped by two mms (read faults: old-style ptes are young)."""
    kernel = boot(sim, npages=16)
    mapping = AddressSpace(kernel, "f", i_size=PAGE_SIZE)
    page = alloc_page_setup()
    assert await add_to_page_cache(page, mapping, 0) == 0
    page.flags |= PG_uptodate
    await unlock_page(page)
    await put_page(page)
    mms = []
    for _ in range(2):
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, PAGE_SIZE, flags, file=mapping, pgoff=0)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start)
        mms.append((mm, vma))
    return kernel, mapping, mms, page


def test_file_rmap_counts_follow_the_ptes() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim)
        assert page_mapcount(page) == 2 and page._count.counter == 3
        mm, vma = mms[0]
        await down_write(mm.mmap_sem)
        await do_munmap(mm, vma.vm_start, PAGE_SIZE)
        await up_write(mm.mmap_sem)
        assert page_mapcount(page) == 1 and page._count.counter == 2
    ok(body)


def test_try_to_unmap_refuses_young_ptes_once_then_unmaps_everything() -> None:
    calls: list[str] = []

    async def body(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim)

        async def invalidate_page(mn: Any, mm: Any, address: int) -> None:
            # the pte is already clear; the page is still allocated
            calls.append(f"{mm.__mmemu_name__} {address:#x} pte={pte_get(mm, address)} "
                         f"free={page.free} count={page._count.counter}")

        for mm, _ in mms:
            ops = mmu_notifier.MmuNotifierOps(invalidate_page=invalidate_page)
            assert await mmu_notifier.mmu_notifier_register(mmu_notifier.MmuNotifier(ops), mm) == 0
        await lock_page(page)
        assert await try_to_unmap(page) == SWAP_FAIL  # the first pte was young (now cleared)
        assert page_mapcount(page) == 2
        assert await page_referenced(page, True) == 1  # the second one still was young
        assert await try_to_unmap(page) == SWAP_SUCCESS
        await unlock_page(page)
        assert page_mapcount(page) == 0 and page._count.counter == 1  # only the pagecache
        assert all(pte_get(mm, vma.vm_start) is None for mm, vma in mms)

    ok(body)
    assert calls == ["mm1 0x10000000 pte=None free=False count=3",
                     "mm2 0x10000000 pte=None free=False count=2"]


def test_try_to_unmap_keeps_mlocked_pages() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim, flags=SHARED | VM_LOCKED)
        await page_referenced(page, False)
        await lock_page(page)
        assert await try_to_unmap(page) == SWAP_FAIL
        await unlock_page(page)
        assert page_mapcount(page) == 2
    ok(body)


def test_try_to_unmap_for_migration_leaves_migration_entries() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim)
        await lock_page(page)
        assert await try_to_unmap(page, True) == SWAP_SUCCESS  # young does not matter
        await unlock_page(page)
        for mm, vma in mms:
            pte = pte_get(mm, vma.vm_start)
            assert is_migration_entry(pte) and pte.swp.page is page and not pte.present
        assert page_mapcount(page) == 0 and page._count.counter == 1
    ok(body)


def test_anonymous_pages_have_no_swap_to_go_to() -> None:
    async def body(sim: Any) -> None:
        kernel = boot(sim, npages=8)
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start, write=True)
        page = pte_get(mm, vma.vm_start).page
        await get_page(page)  # migration holds the isolation reference
        await lock_page(page)
        assert await try_to_unmap(page) == SWAP_FAIL
        assert await try_to_unmap(page, True) == SWAP_SUCCESS
        await unlock_page(page)
        assert is_migration_entry(pte_get(mm, vma.vm_start))
        assert page._count.counter == 1 and not page.free
    ok(body)


def test_try_to_unmap_needs_the_page_lock() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim)
        await try_to_unmap(page)

    f = run(body).failure
    assert f is not None and f.kind == "BadPageState"
    assert "BUG_ON(!PageLocked(page))" in f.message


def test_page_referenced_counts_and_clears_accessed_bits() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim)
        assert await page_referenced(page, False) == 2
        assert await page_referenced(page, False) == 0
        assert not page.flags & 1  # trylock_page was undone
        await fault_in(mms[0][0], mms[0][1].vm_start)  # present, old: marks it young
        assert await page_referenced(page, False) == 1
    ok(body)


# ------------------------------------------------------------------ lockdep


async def _writer(mm: Any, vma: Any) -> None:
    await down_write(mm.mmap_sem)
    await do_munmap(mm, vma.vm_start, PAGE_SIZE)
    await up_write(mm.mmap_sem)


def test_lockdep_is_quiet_on_every_mm_path_together() -> None:
    """Faults, munmap, truncate, reclaim and migration on one file, explored
    at random: lockdep's order graph (kept across executions) sees every
    nesting of mmap_sem, the page lock, i_mmap_lock, the PTL and tree_lock,
    and never an inversion."""
    from mmemu.mm.migrate import migrate_pages
    from mmemu.mm.truncate import vmtruncate
    from mmemu.mm.vmscan import isolate_lru_page, lru_cache_add, putback_lru_page, reclaim_page

    async def scenario(sim: Any) -> None:
        kernel, mapping, mms, page = await file_mapped_twice(sim)
        mapping.i_size = 2 * PAGE_SIZE
        await lru_cache_add(page)
        (mm1, vma1), (mm2, vma2) = mms
        newpage = alloc_page_setup()

        async def migrate() -> None:
            if await isolate_lru_page(page) == 0:
                if await migrate_pages(page, newpage) != 0:
                    await putback_lru_page(page)
            else:
                await put_page(newpage)

        async def faults() -> None:
            await fault_in(mm1, vma1.vm_start, write=True)
            await fault_in(mm2, vma2.vm_start)

        async with sim.cpus() as cpus:
            cpus.start(faults, name="fault")
            cpus.start(migrate, name="migrate")
            cpus.start(reclaim_page, mapping.page_tree[0], name="reclaim")
        async with sim.cpus() as cpus:
            cpus.start(vmtruncate, mapping, 0, name="truncate")
            cpus.start(_writer, mm1, vma1, name="munmap")
            cpus.start(fault_in, mm2, vma2.vm_start, True, name="fault")

    res = mmemu.explore(scenario, strategy="random", executions=300, seed=7)
    assert res.failure is None, res.failure.report()
    assert res.executions == 300
