"""filemap's single-CPU behaviour: insertion, -EEXIST, gang lookup, removal."""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.mm.filemap import (
    AS_MM_ALL_LOCKS,
    EEXIST,
    AddressSpace,
    add_to_page_cache,
    find_get_page,
    find_get_pages,
    find_lock_page,
    remove_from_page_cache,
    slot_key,
)
from mmemu.mm.page import PageLocked, lock_page, put_page, unlock_page
from mmemu.mm.pagemap import page_cache_alloc


def run_one(fn: Any) -> mmemu.Result:
    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=4)
        mapping = AddressSpace(kernel, "file")
        assert mapping in kernel.mappings and mapping.flags & AS_MM_ALL_LOCKS == 0
        async with sim.cpus() as c:
            c.start(fn, mapping, name="cpu")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=5)


def test_add_lookup_remove() -> None:
    async def body(mapping: AddressSpace) -> None:
        page = await page_cache_alloc(mapping)
        assert await add_to_page_cache(page, mapping, 3) == 0
        assert PageLocked(page) and page.mapping is mapping and page.index == 3
        assert page._count.counter == 2 and mapping.nrpages == 1
        await unlock_page(page)
        await put_page(page)
        assert await find_get_page(mapping, 2) is None
        got = await find_get_page(mapping, 3)
        assert got is page and page._count.counter == 2
        await put_page(got)
        assert await find_get_pages(mapping, 0, 14) == [page]
        assert await find_get_pages(mapping, 4, 14) == []
        await put_page(page)  # find_get_pages' reference
        locked = await find_lock_page(mapping, 3)
        assert locked is page and PageLocked(page)
        await remove_from_page_cache(page)
        assert page.mapping is None and mapping.nrpages == 0 and 3 not in mapping.page_tree
        await unlock_page(page)
        await put_page(page)  # find_lock_page's
        await put_page(page)  # the pagecache's: now free
        assert page.free

    res = run_one(body)
    assert res.failure is None, res.failure and res.failure.report()


def test_add_to_an_occupied_slot_fails_with_eexist_and_unlocks() -> None:
    async def body(mapping: AddressSpace) -> None:
        a = await page_cache_alloc(mapping)
        b = await page_cache_alloc(mapping)
        assert await add_to_page_cache(a, mapping, 0) == 0
        assert await add_to_page_cache(b, mapping, 0) == -EEXIST
        assert not PageLocked(b) and b.mapping is None and b._count.counter == 1
        assert mapping.page_tree[0] is a and mapping.nrpages == 1
        await put_page(b)
        await unlock_page(a)
        await put_page(a)

    res = run_one(body)
    assert res.failure is None, res.failure and res.failure.report()


def test_slot_keys_name_the_mapping_and_index() -> None:
    async def body(mapping: AddressSpace) -> None:
        assert slot_key(mapping, 5) == (mapping, "slot", 5)
        await mmemu.step("nothing")

    assert run_one(body).failure is None


def test_find_lock_page_waits_for_the_page_lock() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=4)
        mapping = AddressSpace(kernel, "file")
        from mmemu.mm.page_alloc import alloc_page_setup
        page = alloc_page_setup()
        await add_to_page_cache(page, mapping, 0)
        await unlock_page(page)
        await put_page(page)

        async def holder() -> None:
            await lock_page(page)
            await mmemu.step("work")
            await unlock_page(page)

        async def finder() -> None:
            p = await find_lock_page(mapping, 0)
            assert p is page
            await unlock_page(p)
            await put_page(p)

        async with sim.cpus() as c:
            c.start(holder, name="holder")
            c.start(finder, name="finder")

    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=2), executions=10_000)
    assert res.failure is None, res.failure and res.failure.report()
    assert res.exhausted and res.executions > 3
