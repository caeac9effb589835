"""Reclaim: isolate_lru_page, shrink_page_list's keep paths, __remove_mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.mm.filemap import AddressSpace, add_to_page_cache
from mmemu.mm.page import PG_dirty, PG_lru, Page, lock_page, put_page, unlock_page
from mmemu.mm.page_alloc import alloc_page_setup
from mmemu.mm.vmscan import (
    isolate_lru_page,
    lru_cache_add,
    putback_lru_page,
    reclaim_page,
    shrink_page_list,
)

Body = Callable[[Any, AddressSpace, Page], Awaitable[Any]]


def run(body: Body, *, on_lru: bool = True) -> tuple[mmemu.Result, dict[str, Any]]:
    got: dict[str, Any] = {}

    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=4)
        mapping = AddressSpace(kernel, "file")
        page = alloc_page_setup()
        await add_to_page_cache(page, mapping, 0)
        if on_lru:
            await lru_cache_add(page)
        await unlock_page(page)
        await put_page(page)

        async def cpu() -> None:
            got["ret"] = await body(sim, mapping, page)

        async with sim.cpus() as c:
            c.start(cpu, name="reclaim")
        got["cached"] = mapping.page_tree.get(0) is page
        got["count"] = page._count.counter
        got["free"] = page.free
        got["lru"] = bool(page.flags & PG_lru)

    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)
    return res, got


def test_reclaim_frees_a_clean_unmapped_page() -> None:
    async def body(sim: Any, mapping: AddressSpace, page: Page) -> bool:
        return await reclaim_page(page)

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got == {"ret": True, "cached": False, "count": 0, "free": True, "lru": False}


def test_isolate_takes_the_reclaim_reference_and_putback_drops_it() -> None:
    async def body(sim: Any, mapping: AddressSpace, page: Page) -> Any:
        assert await isolate_lru_page(page) == 0
        c = page._count.counter
        assert await isolate_lru_page(page) == -16  # no longer on the LRU: -EBUSY
        await putback_lru_page(page)
        return c

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got["ret"] == 2 and got["count"] == 1 and got["lru"] and got["cached"]


def test_page_not_on_lru_is_not_reclaimed() -> None:
    async def body(sim: Any, mapping: AddressSpace, page: Page) -> bool:
        return await reclaim_page(page)

    res, got = run(body, on_lru=False)
    assert res.failure is None
    assert got["ret"] is False and got["cached"] and got["count"] == 1


def test_dirty_page_is_kept() -> None:
    async def body(sim: Any, mapping: AddressSpace, page: Page) -> bool:
        page.flags |= PG_dirty
        return await reclaim_page(page)

    res, got = run(body)
    assert res.failure is None
    assert got["ret"] is False and got["cached"] and got["count"] == 1 and got["lru"]


def test_locked_page_is_kept() -> None:
    async def body(sim: Any, mapping: AddressSpace, page: Page) -> Any:
        await lock_page(page)
        assert await isolate_lru_page(page) == 0
        nr, kept = await shrink_page_list([page])
        for p in kept:
            await putback_lru_page(p)
        await unlock_page(page)
        return nr, kept

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    nr, kept = got["ret"]
    assert nr == 0 and len(kept) == 1 and got["cached"] and got["count"] == 1


def test_busy_page_is_kept_by_the_freeze() -> None:
    """An extra reference (a lookup's) makes A fail: cannot_free."""

    async def body(sim: Any, mapping: AddressSpace, page: Page) -> bool:
        from mmemu.mm.page import get_page
        await get_page(page)
        freed = await reclaim_page(page)
        await put_page(page)
        return freed

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got["ret"] is False and got["cached"] and got["count"] == 1


def test_mapped_page_is_kept_without_try_to_unmap_success() -> None:
    async def body(sim: Any, mapping: AddressSpace, page: Page) -> bool:
        from mmemu.mm import vmscan
        page._mapcount.counter = 0
        await mmemu.step("pretend one pte maps it", writes=(page._count,))
        page._count.counter += 1
        orig = vmscan._rmap
        vmscan._rmap = lambda: None  # the rmap model absent: mapped pages stay
        try:
            freed = await reclaim_page(page)
        finally:
            vmscan._rmap = orig
        page._mapcount.counter = -1
        await put_page(page)
        return freed

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got["ret"] is False and got["cached"] and got["count"] == 1
