"""Two isolations of one page (mmemu/races/lru_shapes.py): the correct model
passes and reaches its goals; the putback-then-isolate order is forced; the
LRU mutants are caught within 2 preemptions; the LRU's VM_BUG_ON fires on a
page added twice."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.check import boot_checked
from mmemu.engine._registry import get_scenario, load_builtin
from mmemu.mm.page_alloc import alloc_page
from mmemu.mm.vmscan import lru_cache_add
from mmemu.testing import force

from ._support import assert_caught, explore, labels

load_builtin()

SUITE = "migrate:isolate-vs-reclaim"


def test_the_suite_passes_and_reaches_its_goals() -> None:
    res = explore(SUITE)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and not res.coverage.unreached, res.coverage.unreached
    doc = get_scenario(SUITE).doc
    assert "critical interleavings that matter" in doc and "Harmless" in doc


def test_migration_takes_the_page_reclaim_put_back() -> None:
    out = force(SUITE, [("kswapd", "putback: put_page (isolation reference)"),
                        ("migrate", "PageLRU && get_page_unless_zero: ClearPageLRU")])
    assert out.failure is None, out.failure.report()
    assert "4. set_pte_at(new page)" in labels(out, "migrate")
    bad = force(SUITE, [("kswapd", "putback: put_page (isolation reference)"),
                        ("migrate", "PageLRU && get_page_unless_zero: ClearPageLRU")],
                mutants=["vmscan:putback-no-lru"])
    assert bad.failure is not None and bad.failure.kind == "InvariantViolation"


def test_the_second_isolation_fails() -> None:
    out = force(SUITE, [("kswapd", "PageLRU && get_page_unless_zero: ClearPageLRU"),
                        ("migrate", "PageLRU && get_page_unless_zero: ClearPageLRU")])
    assert out.failure is None, out.failure.report()
    assert "migrate: alloc_page(newpage)" not in labels(out, "migrate")  # -EBUSY


def test_the_mutants_are_caught() -> None:
    assert_caught(SUITE, "vmscan:isolate-keeps-lru", "BadPageState")
    assert_caught(SUITE, "vmscan:putback-no-lru", "InvariantViolation")


async def _added_twice(sim: Any) -> None:
    boot_checked(sim, npages=2)
    page = await alloc_page()
    await lru_cache_add(page)

    async def again() -> None:
        await lru_cache_add(page)
    async with sim.cpus() as cpus:
        cpus.start(again)


def test_adding_a_page_to_the_lru_twice_is_a_bug() -> None:
    res = mmemu.explore(_added_twice, strategy=mmemu.DFS(max_preemptions=0), executions=10)
    assert res.failure is not None and res.failure.kind == "BadPageState"
    assert "VM_BUG_ON(PageLRU(page))" in res.failure.report()


DROP_LRU_LOCK = (("        await spin_lock(lock)\n", ""), ("        await spin_unlock(lock)\n", ""))


@pytest.mark.parametrize("fn_name", ["isolate_lru_page", "putback_lru_page"])
def test_the_lru_list_without_lru_lock_is_a_data_race(monkeypatch: pytest.MonkeyPatch,
                                                      fn_name: str) -> None:
    """page->lru (the LRU list) is guarded by zone->lru_lock: an isolation or
    putback without it is reported by the lockset checker."""
    from ._support import assert_caught_in_process
    f = assert_caught_in_process(monkeypatch, SUITE, "mmemu.mm.vmscan", fn_name,
                                 DROP_LRU_LOCK, "DataRace")
    assert "lru" in f.report() and "zone.lru_lock" in f.report()
