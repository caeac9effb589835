"""free_pages_check at free (BadPageAtFree), data loss, anonymous leaks: each
rule broken on purpose with the model's own functions, and the correct paths
silent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
from mmemu.check import boot_checked
from mmemu.kernel.locking import down_write, spin_lock, spin_unlock, up_write
from mmemu.mm.filemap import AddressSpace, add_to_page_cache, remove_from_page_cache
from mmemu.mm.memory import fault_in, pte_clear, pte_get, zap_page_range
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, mm_alloc
from mmemu.mm.page import (
    PG_active,
    PG_dirty,
    PG_lru,
    PG_swapcache,
    Page,
    get_page,
    lock_page,
    put_page,
    unlock_page,
)
from mmemu.mm.page_alloc import __free_page, alloc_page
from mmemu.mm.truncate import truncate_inode_pages
from mmemu.mm.vmscan import lru_cache_add, reclaim_page

Body = Callable[[Any, Any], Awaitable[None]]


def run(body: Body) -> mmemu.Result:
    """Boot with every checker and run ``body(sim, world)`` on one CPU, where
    the world is a file with page0 cached at index 0 (on the LRU) and an mm
    mapping it shared and writable at ``world.addr``."""

    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=6)
        w = World(kernel)
        w.mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
        from mmemu.mm.page_alloc import alloc_page_setup
        w.page = alloc_page_setup()
        await add_to_page_cache(w.page, w.mapping, 0)
        await unlock_page(w.page)
        await put_page(w.page)
        await lru_cache_add(w.page)
        w.mm = mm_alloc(kernel)
        await down_write(w.mm.mmap_sem)
        vma = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED,
                            file=w.mapping, pgoff=0)
        await up_write(w.mm.mmap_sem)
        w.vma = vma
        w.addr = vma.vm_start
        async with sim.cpus() as c:
            c.start(body, sim, w, name="cpu")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=5)


class World:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.mapping: Any = None
        self.page: Any = None
        self.mm: Any = None
        self.vma: Any = None
        self.addr = 0


def kind(res: mmemu.Result) -> str | None:
    return res.failure.kind if res.failure is not None else None


# --------------------------------------------------------- free_pages_check


def test_freeing_a_page_that_still_has_a_mapping_is_a_bad_page() -> None:
    async def body(sim: Any, w: World) -> None:
        q = await alloc_page()
        q.mapping = w.mapping  # as if add_to_page_cache failed half-way
        await put_page(q)

    res = run(body)
    assert kind(res) == "BadPageAtFree"
    assert "page->mapping is file[0], not NULL" in res.failure.message
    assert "free_pages_check" in res.failure.message


def test_freeing_a_locked_page_is_a_bad_page() -> None:
    async def body(sim: Any, w: World) -> None:
        q = await alloc_page()
        await lock_page(q)
        await put_page(q)

    res = run(body)
    assert kind(res) == "BadPageAtFree"
    assert "PG_locked set" in res.failure.message


def test_the_last_put_of_a_page_on_the_lru_takes_it_off_first() -> None:
    """put_page's __page_cache_release clears PG_lru; a free that skips it is bad."""
    async def good(sim: Any, w: World) -> None:
        q = await alloc_page()
        await lru_cache_add(q)
        await put_page(q)
        assert q.free and not q.flags & PG_lru

    assert run(good).failure is None

    async def bad(sim: Any, w: World) -> None:
        q = await alloc_page()
        await lru_cache_add(q)
        await mmemu.step("bogus: free without __page_cache_release", writes=(q._count,))
        q._count.counter = 0
        __free_page(q)

    res = run(bad)
    assert kind(res) == "BadPageAtFree" and "PG_lru set" in res.failure.message


def test_more_unmaps_than_maps_is_a_bad_page() -> None:
    async def body(sim: Any, w: World) -> None:
        q = await alloc_page()
        await mmemu.step("bogus page_remove_rmap", writes=(q._mapcount,))
        q._mapcount.counter -= 1
        await put_page(q)

    res = run(body)
    assert kind(res) == "BadPageAtFree" and "_mapcount is -2" in res.failure.message


@pytest.mark.parametrize("flag,name", [(PG_active, "PG_active"), (PG_swapcache, "PG_swapcache")])
def test_a_page_freed_with_a_flag_free_pages_check_rejects(flag: int, name: str) -> None:
    async def body(sim: Any, w: World) -> None:
        q = await alloc_page()
        await mmemu.step(f"bogus: SetPage{name[3:].capitalize()}", writes=(q.flags_key,))
        q.flags |= flag
        await put_page(q)

    res = run(body)
    assert kind(res) == "BadPageAtFree" and f"{name} set" in res.failure.message


def test_anonymous_pages_are_freed_with_their_anon_vma_pointer() -> None:
    """free_hot_cold_page clears an anonymous page's mapping itself."""
    async def body(sim: Any, w: World) -> None:
        await down_write(w.mm.mmap_sem)
        vma = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(w.mm.mmap_sem)
        await fault_in(w.mm, vma.vm_start, write=True)
        await zap_page_range(vma, vma.vm_start, PAGE_SIZE)

    res = run(body)
    assert res.failure is None, res.failure.report()


# ----------------------------------------------------------------- data loss


def test_a_dirty_page_removed_from_the_pagecache_is_data_loss() -> None:
    async def body(sim: Any, w: World) -> None:
        await mmemu.step("set_page_dirty", writes=(w.page.flags_key,))
        w.page.flags |= PG_dirty
        await lock_page(w.page)
        await remove_from_page_cache(w.page)  # no writeback, no truncation
        await unlock_page(w.page)
        await put_page(w.page)

    res = run(body)
    assert kind(res) == "DataLoss"
    assert "left the pagecache" in res.failure.message and "while dirty" in res.failure.message


def test_truncation_throws_dirty_data_away_on_purpose() -> None:
    async def body(sim: Any, w: World) -> None:
        await fault_in(w.mm, w.addr, write=True)  # a shared write: PG_dirty
        assert w.page.flags & PG_dirty
        w.mapping.i_size = 0
        from mmemu.mm.memory import unmap_mapping_range
        await unmap_mapping_range(w.mapping, 0, 0, True)
        await truncate_inode_pages(w.mapping, 0)

    res = run(body)
    assert res.failure is None, res.failure.report()


def _clean_but_written(w: World) -> None:
    """The state after writeback and a later write through the pte: the page
    is clean, the pte dirty (the CPU sets the bit, not the kernel)."""
    w.page.flags &= ~PG_dirty
    pte = pte_get(w.mm, w.addr)
    assert pte is not None and pte.dirty


def test_a_zap_that_forgets_the_pte_dirty_bit_loses_data() -> None:
    async def body(sim: Any, w: World) -> None:
        await fault_in(w.mm, w.addr, write=True)
        _clean_but_written(w)
        # a broken zap_pte_range: clears the dirty pte without set_page_dirty
        ptl = w.mm.page_table_lock
        await spin_lock(ptl)
        await mmemu.step("buggy zap: ptep_get_and_clear", writes=((w.mm, "pte", w.addr),))
        pte_clear(w.mm, w.addr)
        await spin_unlock(ptl)
        from mmemu.mm.rmap import page_remove_rmap
        await page_remove_rmap(w.page, w.vma)
        await put_page(w.page)
        # reclaim now finds a clean, unmapped page and drops it
        assert await reclaim_page(w.page)

    res = run(body)
    assert kind(res) == "DataLoss"
    assert "a dirty pte mapping it was cleared" in res.failure.message
    assert "buggy zap" in res.failure.message


def test_the_real_zap_passes_the_dirty_bit_and_reclaim_keeps_the_page() -> None:
    async def body(sim: Any, w: World) -> None:
        await fault_in(w.mm, w.addr, write=True)
        _clean_but_written(w)
        await zap_page_range(w.vma, w.addr, PAGE_SIZE)
        assert w.page.flags & PG_dirty
        assert not await reclaim_page(w.page)  # dirty: no writeback in the model

    res = run(body)
    assert res.failure is None, res.failure.report()


# --------------------------------------------------------------- anon leaks


def test_an_anonymous_page_reference_never_dropped_is_a_leak() -> None:
    async def body(sim: Any, w: World) -> None:
        await down_write(w.mm.mmap_sem)
        vma = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(w.mm.mmap_sem)
        await fault_in(w.mm, vma.vm_start, write=True)
        pte = pte_get(w.mm, vma.vm_start)
        assert pte is not None and pte.page is not None
        await get_page(pte.page)  # never put

    res = run(body)
    assert kind(res) == "PageLeak"
    assert "anonymous page" in res.failure.message and "ptes 1" in res.failure.message


def test_a_page_allocated_on_a_cpu_and_dropped_on_the_floor_is_a_leak() -> None:
    async def body(sim: Any, w: World) -> None:
        q: Page = await alloc_page()
        assert q is not None  # and never freed

    res = run(body)
    assert kind(res) == "PageLeak"
