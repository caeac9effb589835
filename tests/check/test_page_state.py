"""The page-state checker: each violation forced on purpose, and silence on
correct code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
from mmemu.check import INSTALLERS, boot_checked
from mmemu.check.page_state import PageStateChecker, install_page_state_checker
from mmemu.mm.filemap import AddressSpace, add_to_page_cache, find_get_page
from mmemu.mm.page import Page, get_page, put_page, unlock_page
from mmemu.mm.page_alloc import __free_page, alloc_page_setup
from mmemu.mm.pagemap import page_freeze_refs, page_unfreeze_refs

Body = Callable[[Any, Any, AddressSpace, Page], Awaitable[None]]


def run(body: Body, *, cpus: int = 1) -> mmemu.Result:
    """Boot with the checkers, cache page0 at file[0] (count 1), run
    ``body(sim, kernel, mapping, page)`` on one CPU."""

    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=4)
        mapping = AddressSpace(kernel, "file")
        page = alloc_page_setup()
        await add_to_page_cache(page, mapping, 0)
        await unlock_page(page)
        await put_page(page)
        async with sim.cpus() as c:
            c.start(body, sim, kernel, mapping, page, name="cpu")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)


def kind(res: mmemu.Result) -> str | None:
    return res.failure.kind if res.failure is not None else None


def test_boot_checked_installs_the_page_state_checker() -> None:
    assert "mmemu.check.page_state:install_page_state_checker" in INSTALLERS
    seen: list[Any] = []

    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        seen.append(kernel.data.get("page_state"))
        assert install_page_state_checker(kernel) is kernel.data["page_state"]  # idempotent

    assert run(body).failure is None
    assert isinstance(seen[0], PageStateChecker)


def test_correct_use_is_silent() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        p = await find_get_page(mapping, 0)
        assert p is page
        await put_page(p)

    res = run(body)
    assert res.failure is None, res.failure and res.failure.report()


def test_free_page_in_page_cache() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        await put_page(page)  # drops the pagecache's own reference: freed while cached

    res = run(body)
    assert kind(res) == "FreePageInPageCache"
    assert "still in the pagecache at file[0]" in res.failure.message
    assert "page pfn=0" in res.failure.details and "file: nrpages=1" in res.failure.details


def test_free_page_in_page_table_by_mapcount() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        q = alloc_page_setup()
        q._mapcount.counter = 0  # one pte maps it
        await put_page(q)

    res = run(body)
    assert kind(res) == "FreePageInPageTable"
    assert "1 pte(s) map it" in res.failure.message


def test_free_page_in_page_table_by_scanner() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        q = alloc_page_setup()
        kernel.data["page_table_scanners"].append(
            lambda p: "mm1 pte 0x1000" if p is q else None)
        await put_page(q)

    res = run(body)
    assert kind(res) == "FreePageInPageTable"
    assert "mm1 pte 0x1000" in res.failure.message


def test_free_of_referenced_page() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        q = alloc_page_setup()
        await mmemu.step("bogus free", writes=(q._count,))
        __free_page(q)

    res = run(body)
    assert kind(res) == "FreeOfReferencedPage"
    assert "with count 1" in res.failure.message


def test_wrong_page_from_lookup_other_index_and_free_page() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        await mmemu.step("lookup")
        kernel.data["page_state"].lookup_returned("find_get_page", mapping, 3, page)

    res = run(body)
    assert kind(res) == "WrongPageFromLookup"
    assert "find_get_page(file, 3)" in res.failure.message
    assert "not file[3] but file[0]" in res.failure.message

    async def body2(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        q = alloc_page_setup()
        await put_page(q)
        await mmemu.step("lookup")
        kernel.data["page_state"].lookup_returned("find_get_page", mapping, 0, q)

    res = run(body2)
    assert kind(res) == "WrongPageFromLookup"
    assert "which is free" in res.failure.message


def test_half_initialised_page() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        await mmemu.step("lookup")
        q = alloc_page_setup()
        mapping.page_tree[1] = q  # in the slot, mapping and PG_locked not set
        kernel.data["page_state"].lookup_returned("find_get_page", mapping, 1, q)

    res = run(body)
    assert kind(res) == "HalfInitialisedPage"
    assert "PG_locked clear" in res.failure.message


def test_page_leak_at_the_end() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        await get_page(page)  # never dropped

    res = run(body)
    assert kind(res) == "PageLeak"
    assert "count 2 but the model knows 1 reference(s)" in res.failure.message
    assert "file[0]" in res.failure.message


def test_a_removed_page_still_referenced_is_a_leak() -> None:
    from mmemu.mm.filemap import remove_from_page_cache
    from mmemu.mm.page import lock_page

    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        await lock_page(page)
        await remove_from_page_cache(page)
        await unlock_page(page)  # and the pagecache's reference is never dropped

    res = run(body)
    assert kind(res) == "PageLeak"
    assert "pagecache 0" in res.failure.message


def test_declared_holders_are_not_leaks() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        await get_page(page)
        await get_page(page)
        kernel.data["page_state"].expect_held(page)
        kernel.data["page_state"].add_holder(lambda: [page])

    assert run(body).failure is None


def test_page_count_too_low_when_left_frozen() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        assert await page_freeze_refs(page, 1)

    res = run(body)
    assert kind(res) == "PageCountTooLow"
    assert "count 0 but 1 reference(s)" in res.failure.message


@pytest.mark.parametrize("case", ["other-count", "not-frozen", "to-zero"])
def test_unfreeze_mismatch(case: str) -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        if case == "not-frozen":
            await page_unfreeze_refs(page, 1)
            return
        assert await page_freeze_refs(page, 1)
        await page_unfreeze_refs(page, 2 if case == "other-count" else 0)

    res = run(body)
    assert kind(res) == "UnfreezeMismatch"
    msg = res.failure.message
    if case == "other-count":
        assert "frozen at 1; unfreezing to 2 creates 1 reference(s)" in msg
    elif case == "not-frozen":
        assert "count is 1, not 0" in msg
    else:
        assert "unfreezing to 0" in msg


def test_unfreeze_to_the_frozen_count_is_fine() -> None:
    async def body(sim: Any, kernel: Any, mapping: AddressSpace, page: Page) -> None:
        assert await page_freeze_refs(page, 1)
        assert not await page_freeze_refs(page, 1)  # already 0
        await page_unfreeze_refs(page, 1)

    assert run(body).failure is None


# ------------------------------------------------- DataLoss: the swap cache


def _swap_data_loss(monkeypatch: pytest.MonkeyPatch, *, clean_pte: bool,
                    add_clean: bool) -> Any:
    """Reclaim an anonymous page to swap; ``clean_pte``: its pte is made
    clean before (setup: nothing is owed, the page is not in the swap cache
    yet); ``add_clean``: add_to_swap forgets SetPageDirty (the source mutant
    swap_state:add_to_swap:seq-update:1)."""
    import mmemu
    from mmemu.mm import swap_state
    from mmemu.mm.memory import pte_get, set_pte_at
    from mmemu.mm.vmscan import reclaim_page
    from mmemu.races.migrate_shapes import _anon_page
    from tests.check.test_pte_vma import _mutant

    if add_clean:
        fn = swap_state.add_to_swap
        monkeypatch.setattr(fn, "__code__", _mutant(
            fn, ("                page.flags |= PG_dirty\n", "")).__code__)

    async def scenario(sim: Any) -> None:
        _kernel, mm, addr, page = await _anon_page(sim)  # written, on the LRU
        pte = pte_get(mm, addr)
        assert pte is not None
        set_pte_at(mm, addr, pte.replace(young=False, dirty=not clean_pte))
        async with sim.cpus() as cpus:
            cpus.start(reclaim_page, page, name="kswapd")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=5).failure


def test_swap_out_writes_the_new_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _swap_data_loss(monkeypatch, clean_pte=True, add_clean=False) is None
    assert _swap_data_loss(monkeypatch, clean_pte=False, add_clean=False) is None


def test_a_new_slot_never_written_is_data_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    f = _swap_data_loss(monkeypatch, clean_pte=True, add_clean=True)
    assert f is not None and f.kind == "DataLoss", f
    assert "left the swap cache" in f.message and "a new slot never written" in f.message
    assert "add_to_swap: a new swap slot" in f.message
