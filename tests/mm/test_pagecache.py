"""The speculative pagecache protocol, forced interleaving by interleaving.

Each test forces the steps the seed's comment talks about (by CPU name and
step label) and checks the branch the comment predicts, through the trace
and ``sim.data["outcome"]`` of the pagecache suites.
"""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.engine import Strategy
from mmemu.engine._registry import load_builtin
from mmemu.engine._execution import CPU, Simulation

load_builtin()


class ByLabel(Strategy):
    """One execution that follows ``plan``: (cpu name, label prefix) pairs
    that must run in this order.  Steps not in the plan run whenever the plan
    allows, preferring no preemption; a CPU whose next planned step is
    pending is held back until that step's turn."""

    name = "by-label"
    record = True

    def __init__(self, plan: list[tuple[str, str]]) -> None:
        self.plan = plan
        self.sim: Simulation | None = None
        self.matched = 0

    def _matched(self, sim: Simulation) -> int:
        k = 0
        for cpu_id, label, _r, _w, _p in sim.events:
            if k < len(self.plan):
                name, want = self.plan[k]
                if sim.cpu_list[cpu_id].name == name and label.startswith(want):
                    k += 1
        return k

    def begin(self, index: int) -> Any:
        if index > 0:
            return None
        plan = self.plan

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            k = self._matched(sim)
            if k < len(plan):
                name, want = plan[k]
                for c in run:
                    if c.name == name and c.pending[0].startswith(want):
                        return c

            def held(c: CPU) -> bool:
                for name, want in plan[k:]:
                    if name == c.name:
                        return c.pending[0].startswith(want)
                return False

            free = [c for c in run if not held(c)] or run
            if prev is not None and prev in free:
                return prev
            return free[0]

        return choose

    def end(self, sim: Simulation) -> None:
        self.sim = sim
        self.matched = self._matched(sim)


def force(suite: str, plan: list[tuple[str, str]], **params: Any) -> tuple[Any, ByLabel]:
    strat = ByLabel(plan)
    res = mmemu.explore(suite, strategy=strat, executions=1, params=params, shrink=False)
    assert strat.sim is not None
    assert strat.matched == len(plan), (
        f"the forced interleaving did not happen: matched {strat.matched} of {plan}\n"
        + "\n".join(f"{strat.sim.cpu_list[e[0]].name}: {e[1]}" for e in strat.sim.events))
    return res, strat


def labels(strat: ByLabel, cpu_name: str) -> list[str]:
    sim = strat.sim
    assert sim is not None
    return [e[1] for e in sim.events if sim.cpu_list[e[0]].name == cpu_name]


def outcome(strat: ByLabel) -> dict[str, Any]:
    assert strat.sim is not None
    return strat.sim.data["outcome"]  # type: ignore[no-any-return]


# ------------------------------------------------- the 2 critical interleavings


def test_2_before_A_reclaim_sees_the_elevated_count_and_bails() -> None:
    res, strat = force("pagecache:lookup-vs-reclaim",
                       [("find_get_page", "2. page_cache_get_speculative"),
                        ("reclaim", "A. page_freeze_refs"),
                        ("find_get_page", "page_cache_release (the lookup's reference)")],
                       lookup="find_get_page")
    assert res.failure is None, res.failure.report()
    out = outcome(strat)
    assert out["reclaimed"] is False
    assert out["lookup"] == "page0#1"
    assert "cannot_free: spin_unlock(tree_lock)" in labels(strat, "reclaim")
    assert not any(lb.startswith("B.") for lb in labels(strat, "reclaim"))
    # the reclaimer's next allocation is another page: page0 stayed cached
    assert out["reused"] == "page1#1"


def test_A_before_2_lookup_retries_then_finds_nothing() -> None:
    res, strat = force("pagecache:lookup-vs-reclaim",
                       [("find_get_page", "1. radix_tree_lookup"),
                        ("reclaim", "A. page_freeze_refs"),
                        ("find_get_page", "2. page_cache_get_speculative"),
                        ("reclaim", "B. __remove_from_page_cache")],
                       lookup="find_get_page")
    assert res.failure is None, res.failure.report()
    out = outcome(strat)
    assert out["reclaimed"] is True
    assert out["lookup"] is None
    reader = labels(strat, "find_get_page")
    # 2 failed on the frozen count, the lookup waited for B, then 1 found nothing
    assert "2. failed: page frozen or free, retry" in reader
    i = reader.index("2. failed: page frozen or free, retry")
    assert reader[i + 1] == "1. radix_tree_lookup (retry)"
    assert reader[i + 2] == "1. radix_tree_lookup"
    assert reader.count("2. page_cache_get_speculative") == 1
    assert not any(lb.startswith("3.") for lb in reader)


def test_A_before_2_then_unfreeze_lets_the_lookup_succeed() -> None:
    """Reclaim freezes, finds the page dirty, unfreezes: the waiting lookup
    is woken by page_unfreeze_refs and takes its reference after all."""

    async def scenario(sim: Any) -> None:
        from mmemu.check import boot_checked
        from mmemu.mm.filemap import AddressSpace, add_to_page_cache, find_get_page
        from mmemu.mm.page import PG_dirty, put_page, unlock_page
        from mmemu.mm.page_alloc import alloc_page_setup
        from mmemu.mm.vmscan import lru_cache_add, reclaim_page

        kernel = boot_checked(sim, npages=4)
        mapping = AddressSpace(kernel, "file")
        page = alloc_page_setup()
        await add_to_page_cache(page, mapping, 0)
        await lru_cache_add(page)
        await unlock_page(page)
        await put_page(page)
        out = sim.data["outcome"] = {}

        async def reader() -> None:
            p = await find_get_page(mapping, 0)
            out["lookup"] = p
            if p is not None:
                await put_page(p)

        async def reclaim() -> None:
            out["reclaimed"] = await reclaim_page(page)

        async def dirtier() -> None:
            await mmemu.step("set_page_dirty", writes=(page.flags_key,))
            page.flags |= PG_dirty

        async with sim.cpus() as cpus:
            cpus.start(reader, name="find_get_page")
            cpus.start(reclaim, name="reclaim")
            cpus.start(dirtier, name="dirty")
        sim.check(mapping.page_tree.get(0) is page and page._count.counter == 1,
                  f"page0 should be cached with count 1: {page.dump()}")

    strat = ByLabel([("find_get_page", "1. radix_tree_lookup"),
                     ("reclaim", "A. page_freeze_refs"),
                     ("find_get_page", "2. page_cache_get_speculative"),
                     ("dirty", "set_page_dirty"),
                     ("reclaim", "PageDirty? (after the freeze)"),
                     ("reclaim", "page_unfreeze_refs"),
                     ("find_get_page", "1. radix_tree_lookup (retry)")])
    res = mmemu.explore(scenario, strategy=strat, executions=1, shrink=False)
    assert res.failure is None, res.failure.report()
    assert strat.matched == len(strat.plan)
    assert strat.sim is not None
    out = strat.sim.data["outcome"]
    assert out["reclaimed"] is False
    assert out["lookup"] is not None and out["lookup"].pfn == 0


# --------------------------------------------------------- the harmless cases


def test_reinsertion_of_the_same_page_between_1_and_2_is_harmless() -> None:
    res, strat = force("pagecache:reinsert-aba",
                       [("find_get_page", "1. radix_tree_lookup"),
                        ("reclaim", "C. free the page"),
                        ("reclaim", "page_cache_release (the allocation reference)"),
                        ("find_get_page", "2. page_cache_get_speculative")])
    assert res.failure is None, res.failure.report()
    out = outcome(strat)
    assert out["reclaimed"] is True
    # the hot allocator handed page0 back: allocation #2 of pfn 0, at file[0] again
    assert out["reinserted"] == "page0#2"
    # ... and the lookup returns it: 3 finds the same page in the slot
    assert out["lookup"] == "page0#2"
    reader = labels(strat, "find_get_page")
    assert "3. recheck: page still in the slot?" in reader
    assert "3. page moved: put_page, goto 1" not in reader


def test_reinsertion_the_other_way_lookup_first() -> None:
    res, strat = force("pagecache:reinsert-aba",
                       [("find_get_page", "3. recheck"),
                        ("reclaim", "A. page_freeze_refs"),
                        ("find_get_page", "page_cache_release (the lookup's reference)")])
    assert res.failure is None, res.failure.report()
    out = outcome(strat)
    assert out["reclaimed"] is False and "reinserted" not in out
    assert out["lookup"] == "page0#1"


def test_page_reused_elsewhere_between_1_and_2_is_dropped_by_step_3() -> None:
    res, strat = force("pagecache:lookup-vs-reclaim",
                       [("find_get_page", "1. radix_tree_lookup"),
                        ("reclaim", "page_cache_release (the allocation reference)"),
                        ("find_get_page", "2. page_cache_get_speculative")],
                       lookup="find_get_page")
    assert res.failure is None, res.failure.report()
    out = outcome(strat)
    assert out["reclaimed"] is True and out["reused"] == "page0#2"
    assert out["lookup"] is None
    reader = labels(strat, "find_get_page")
    assert "3. page moved: put_page, goto 1" in reader
    # the speculative reference on the reused page was dropped: file2[1] keeps count 1
    sim = strat.sim
    assert sim is not None
    kernel = sim.data["kernel"]
    file2 = kernel.mappings[1]
    assert file2.page_tree[1]._count.counter == 1


def test_lookup_racing_insertion_finds_the_page_locked_and_waits() -> None:
    res, strat = force("pagecache:add-vs-lookup",
                       [("add", "spin_unlock(file.tree_lock)"),
                        ("read", "3. recheck"),
                        ("read", "PageUptodate(page)? (else it must be locked)"),
                        ("add", "readpage: SetPageUptodate")])
    assert res.failure is None, res.failure.report()
    out = outcome(strat)
    assert out["lookup"] == "page0" and out["waited"] is True


def test_find_lock_page_sees_truncation_and_looks_again() -> None:
    res, strat = force("pagecache:lookup-vs-truncate",
                       [("find_lock_page", "3. recheck"),
                        ("truncate", "unlock_page"),
                        ("find_lock_page", "lock_page")],
                       lookup="find_lock_page")
    assert res.failure is None, res.failure.report()
    reader = labels(strat, "find_lock_page")
    assert "truncated: page_cache_release, repeat" in reader
    assert outcome(strat)["lookup"] is None


# ------------------------------------------------------------- the suites


SUITES = ["pagecache:lookup-vs-reclaim", "pagecache:lookup-vs-truncate",
          "pagecache:add-vs-lookup", "pagecache:reinsert-aba"]


def _combos(suite: str) -> list[dict[str, Any]]:
    return mmemu.engine.get_scenario(suite).combinations()


@pytest.mark.parametrize("suite,params", [(s, p) for s in SUITES for p in _combos(s)],
                         ids=lambda v: v if isinstance(v, str) else ",".join(map(str, v.values())))
def test_suite_passes_exhaustively_with_2_preemptions(suite: str, params: dict[str, Any]) -> None:
    res = mmemu.explore(suite, strategy=mmemu.DFS(max_preemptions=2), executions=100_000,
                        params=params)
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert res.executions > 10


@pytest.mark.parametrize("suite,params", [(s, p) for s in SUITES for p in _combos(s)],
                         ids=lambda v: v if isinstance(v, str) else ",".join(map(str, v.values())))
def test_suite_passes_exhaustively_without_a_preemption_bound(suite: str,
                                                               params: dict[str, Any]) -> None:
    res = mmemu.explore(suite, strategy=mmemu.DFS(max_preemptions=None), executions=100_000,
                        params=params)
    assert res.failure is None, res.failure.report()
    assert res.exhausted


def test_suites_have_protocol_docstrings() -> None:
    for s in SUITES:
        sc = mmemu.engine.get_scenario(s)
        assert "1. radix_tree_lookup" in sc.doc or "radix_tree_lookup" in sc.doc
        if sc.catches:
            assert "critical interleaving" in sc.doc
    assert "That's OK" in mmemu.engine.get_scenario("pagecache:reinsert-aba").doc
