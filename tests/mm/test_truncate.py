"""truncate_inode_pages and vmtruncate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.mm.filemap import PAGE_SIZE, AddressSpace, add_to_page_cache, find_get_page
from mmemu.mm.page import Page, lock_page, put_page, unlock_page
from mmemu.mm.page_alloc import alloc_page_setup
from mmemu.mm.truncate import truncate_inode_pages, vmtruncate

Body = Callable[[Any, AddressSpace, list[Page]], Awaitable[Any]]


def run(*bodies: Body, npages: int = 3, preemptions: int = 0) -> tuple[mmemu.Result, dict[str, Any]]:
    got: dict[str, Any] = {}

    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8)
        mapping = AddressSpace(kernel, "file", i_size=npages * PAGE_SIZE)
        pages = []
        for i in range(npages):
            page = alloc_page_setup()
            await add_to_page_cache(page, mapping, i)
            await unlock_page(page)
            await put_page(page)
            pages.append(page)
        async with sim.cpus() as c:
            for n, body in enumerate(bodies):
                c.start(body, sim, mapping, pages, name=f"cpu{n}")
        got["indices"] = sorted(mapping.page_tree)
        got["nrpages"] = mapping.nrpages
        got["i_size"] = mapping.i_size
        got["free"] = [p.free for p in pages]

    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=preemptions),
                        executions=100_000)
    return res, got


def test_truncate_everything() -> None:
    async def body(sim: Any, mapping: AddressSpace, pages: list[Page]) -> None:
        await truncate_inode_pages(mapping, 0)

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got["indices"] == [] and got["nrpages"] == 0 and got["free"] == [True] * 3


def test_truncate_from_a_partial_page_keeps_it() -> None:
    async def body(sim: Any, mapping: AddressSpace, pages: list[Page]) -> None:
        await truncate_inode_pages(mapping, PAGE_SIZE + 1)  # page 1 is partly kept

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got["indices"] == [0, 1] and got["nrpages"] == 2
    assert got["free"] == [False, False, True]


def test_vmtruncate_sets_i_size_then_drops_pages() -> None:
    async def body(sim: Any, mapping: AddressSpace, pages: list[Page]) -> None:
        assert await vmtruncate(mapping, PAGE_SIZE) == 0

    res, got = run(body)
    assert res.failure is None, res.failure and res.failure.report()
    assert got["i_size"] == PAGE_SIZE and got["indices"] == [0]


def test_vmtruncate_growing_only_sets_i_size() -> None:
    async def body(sim: Any, mapping: AddressSpace, pages: list[Page]) -> None:
        await vmtruncate(mapping, 10 * PAGE_SIZE)

    res, got = run(body)
    assert res.failure is None
    assert got["i_size"] == 10 * PAGE_SIZE and got["indices"] == [0, 1, 2]


def test_truncate_waits_for_a_locked_page_in_pass_2() -> None:
    """A page locked by someone else is skipped by pass 1 (trylock) and
    taken by pass 2 once it is unlocked, in every interleaving."""

    async def holder(sim: Any, mapping: AddressSpace, pages: list[Page]) -> None:
        p = await find_get_page(mapping, 1)
        if p is None:
            return
        await lock_page(p)
        await mmemu.step("write to the page")
        await unlock_page(p)
        await put_page(p)

    async def trunc(sim: Any, mapping: AddressSpace, pages: list[Page]) -> None:
        await truncate_inode_pages(mapping, 0)

    res, got = run(holder, trunc, npages=2, preemptions=2)
    assert res.failure is None, res.failure and res.failure.report()
    assert res.exhausted
    assert got["indices"] == [] and got["free"] == [True, True]
