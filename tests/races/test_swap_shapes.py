"""Two CPU faults on one swapped-out pte of a full swap device
(swap:fault-vs-fault in mmemu/races/swap_shapes.py): the correct model
passes and reaches its goals; the loser's two ways out (out_nomap while
the page is still in the swap cache, the back-out once the winner freed the
slot) are forced; the missing pte_same recheck is caught within 2
preemptions."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import load_builtin
from mmemu.testing import force

from ._support import assert_caught, assert_passes_and_reaches, explore, labels

load_builtin()

SUITE = "swap:fault-vs-fault"
OLD = {"api": "2.6.27"}
# the reader reads the swap pte; the writer swaps the page in, frees the
# slot (remove_exclusive_swap_page: the device is full) and unlocks it
SLOT_FREED = [("read", "handle_pte_fault: entry = *pte"),
              ("write", "4. do_swap_page: unlock_page")]
# the reader has found the page in the swap cache (a reference) before the
# writer maps it: the writer leaves it in the cache, the reader's recheck fails
PAGE_HELD = [("write", "2. do_swap_page: lock_page"),
             ("read", "2. do_swap_page: lock_page"),
             ("write", "4. do_swap_page: unlock_page")]


@pytest.mark.parametrize("api", ["2.6.27", "modern"])
def test_the_suite_passes_and_reaches_its_goals(api: str) -> None:
    res = explore(SUITE, params={"api": api})
    assert res.failure is None, res.failure.report()
    assert res.exhausted and not res.coverage.unreached, res.coverage.unreached


SLOT_GONE_BACK_OUT = "do_swap_page: pte_same? (no page)"
OUT_NOMAP = "out_nomap: pte_unmap_unlock"


@pytest.mark.parametrize("order,way_out,not_taken", [
    # the winner freed the slot: the loser's read_swap_cache_async fails
    (SLOT_FREED, SLOT_GONE_BACK_OUT, OUT_NOMAP),
    # the loser holds the page: it stays in the swap cache, pte_same fails
    (PAGE_HELD, OUT_NOMAP, SLOT_GONE_BACK_OUT),
])
def test_the_loser_backs_out_each_way(order: list[tuple[str, str]], way_out: str,
                                      not_taken: str) -> None:
    out = force(SUITE, order, params=OLD)
    assert out.failure is None, out.failure.report()
    read = labels(out, "read")
    assert way_out in read and not_taken not in read


def test_without_the_recheck_the_loser_maps_the_page_again() -> None:
    bad = force(SUITE, PAGE_HELD, params=OLD, mutants=["memory:swap-no-pte-same"])
    assert bad.failure is not None, "the loser's second mapping went unnoticed"


@pytest.mark.parametrize("api", ["2.6.27", "modern"])
def test_the_missing_recheck_is_caught(api: str) -> None:
    assert_caught(SUITE, "memory:swap-no-pte-same", ("BadPtePermission", "InvariantViolation",
                                                     "BadSwapEntry", "BadPageState"),
                  params={"api": api})



# ----------------------------------------------- swap:write-vs-reclaim

WRITE = "swap:write-vs-reclaim"
PAGEOUT = "pageout: swap_writepage (the I/O is not modelled): clean"


@pytest.mark.parametrize("api", ["2.6.27", "modern"])
def test_write_vs_reclaim_passes_and_reaches_its_goals(api: str) -> None:
    from mmemu.mm.memory import WP_EXTRA_REFERENCE, WP_REUSED, WP_TRYLOCK_FAILED
    from mmemu.races.swap_shapes import REFERENCED_KEPT, SWAPPED_OUT_DIRTY
    busy = WP_TRYLOCK_FAILED if api == "2.6.27" else WP_EXTRA_REFERENCE
    assert_passes_and_reaches(WRITE, critical=3, bound=1, params={"api": api},
                              goals=(SWAPPED_OUT_DIRTY, REFERENCED_KEPT, busy, WP_REUSED))


def test_a_modern_reuse_test_that_never_reuses_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """memory:_wp_can_reuse_anon_folio:wrong-count:2 of benchmarks/mutation.py:
    the write then never reuses the page it owns alone (the goal)."""
    from mmemu.mm import memory
    from tests.check.test_pte_vma import _mutant
    fn = memory._wp_can_reuse_anon_folio
    edit = ("reuse = not PageKsm(page) and page._count.counter == 1",
            "reuse = not PageKsm(page) and page._count.counter == 0")
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(WRITE, params={"api": "modern"}, bound=1)
    assert res.failure is not None and res.failure.kind == "VacuousSuite", res.failure
    assert "reused the anonymous page in place" in res.failure.report()


def test_a_write_before_kswapd_is_written_to_the_slot() -> None:
    out = force(WRITE, [("write", "do_wp_page: reuse, ptep_set_access_flags"),
                        ("kswapd", "page_referenced: TestClearPageReferenced")])
    assert out.failure is None, out.failure.report()
    kswapd = labels(out, "kswapd")
    # the dirty pte's bit went to the page, so pageout wrote the slot
    assert PAGEOUT in kswapd and "C. free the page (free_hot_cold_page)" in kswapd


def test_a_write_between_aging_and_unmap_keeps_the_page() -> None:
    out = force(WRITE, [("kswapd", "page_referenced: TestClearPageReferenced"),
                        ("kswapd", "page_referenced_one: pte_unmap_unlock"),
                        ("write", "do_wp_page: reuse, ptep_set_access_flags"),
                        ("kswapd", "3. referenced or mlocked: SWAP_FAIL")])
    assert out.failure is None, out.failure.report()
    assert PAGEOUT not in labels(out, "kswapd")


def test_the_lost_dirty_bit_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """try_to_unmap_one that does not hand a dirty pte's bit to an
    anonymous page (the source mutant rmap:__try_to_unmap_one:seq-update:1
    of benchmarks/mutation.py, made here in process)."""
    from mmemu.mm import rmap
    from tests.check.test_pte_vma import _mutant
    fn = rmap.__try_to_unmap_one
    edit = ("            if pteval.dirty:\n                page.flags |= PG_dirty\n"
            "            swap_duplicate(offset)",
            "            swap_duplicate(offset)")
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(WRITE, bound=1)
    f = res.failure
    assert f is not None and f.kind == "DataLoss", f and f.report()
    assert f.preemptions <= 2
    assert "a dirty pte cleared without set_page_dirty" in f.message


# ----------------------------------------------- swap:dontneed-vs-reclaim

DONTNEED = "swap:dontneed-vs-reclaim"
# kswapd has put the swap entry in the pte (and still holds the page lock)
UNMAPPED = ("kswapd", "6. pte_unmap_unlock")
# the zap's lookup of the swap-cache page holds a reference
LOOKED_UP = ("madvise", "3. recheck: page still in the slot?")
DELETED = "delete_from_swap_cache: swap_free"


def test_dontneed_vs_reclaim_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(DONTNEED, critical=3)


def test_the_zap_leaves_a_locked_page_to_reclaim() -> None:
    out = force(DONTNEED, [UNMAPPED, ("madvise", "free_swap_and_cache: trylock_page"),
                           ("madvise", "free_swap_and_cache: page_cache_release (locked)")])
    assert out.failure is None, out.failure.report()
    assert "C. free the page (free_hot_cold_page)" in labels(out, "kswapd")
    assert DELETED not in labels(out, "madvise")


def test_the_zap_frees_the_page_reclaim_gave_up() -> None:
    """The zap's reference makes reclaim's freeze fail; once reclaim has put
    the page back, the zap's trylock succeeds at count 2 and the zap takes
    the page out of the swap cache itself."""
    out = force(DONTNEED, [UNMAPPED, LOOKED_UP,
                           ("kswapd", "putback: put_page (isolation reference)"),
                           ("madvise", "free_swap_and_cache: trylock_page")])
    assert out.failure is None, out.failure.report()
    assert "C. free the page (free_hot_cold_page)" not in labels(out, "kswapd")
    assert DELETED in labels(out, "madvise")


def test_the_zap_leaves_a_busy_page_in_the_swap_cache() -> None:
    """The trylock between reclaim's unlock and its putback: count 3."""
    out = force(DONTNEED, [UNMAPPED, LOOKED_UP, ("kswapd", "keep_locked: unlock_page"),
                           ("madvise", "free_swap_and_cache: trylock_page"),
                           ("madvise", "free_swap_and_cache: page_cache_release")])
    assert out.failure is None, out.failure.report()
    assert DELETED not in labels(out, "madvise")


@pytest.mark.parametrize("edit,kinds", [
    # the dropped put_page after a failed trylock (swapfile:...:get-put:1)
    (('        await put_page(page, label="free_swap_and_cache: page_cache_release (locked)")\n',
      ""), ("PageLeak",)),
    # the failed trylock ignored (swapfile:...:recheck:2): the zap unlocks
    # reclaim's lock
    (('    if not await trylock_page(page, label="free_swap_and_cache: trylock_page"):',
      '    if not await trylock_page(page, label="free_swap_and_cache: trylock_page") and False:'),
     ("BadPageState",)),
])
def test_free_swap_and_cache_mutants_are_caught(monkeypatch: pytest.MonkeyPatch,
                                                 edit: tuple[str, str],
                                                 kinds: tuple[str, ...]) -> None:
    from mmemu.mm import swapfile
    from tests.check.test_pte_vma import _mutant
    fn = swapfile.free_swap_and_cache
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(DONTNEED, bound=None)
    f = res.failure
    assert f is not None and f.kind in kinds, f and f.report()
    assert f.preemptions <= 2, f.report()


def test_a_page_swapped_in_from_a_full_device_is_dirty() -> None:
    """remove_exclusive_swap_page frees the slot of a page swapped in from a
    full device and marks the page dirty (2.6.27's SetPageDirty under
    tree_lock): it is now the only copy of its data, so reclaim writes it to
    a new slot even if add_to_swap's own SetPageDirty were missing."""
    import mmemu
    from mmemu.mm.memory import fault_in, pte_get, set_pte_at
    from mmemu.mm.page import PG_dirty, PG_swapcache
    from mmemu.mm.vmscan import lru_cache_add, reclaim_page
    from mmemu.races.swap_shapes import _swapped_out
    from tests.check.test_pte_vma import _mutant
    from mmemu.mm import swap_state

    seen: list[int] = []

    async def scenario(sim: object) -> None:
        mm, addr, _ = await _swapped_out(sim, slots=1)

        async def body() -> None:
            await fault_in(mm, addr, False)
            pte = pte_get(mm, addr)
            assert pte is not None and pte.page is not None and not pte.dirty
            seen.append(pte.page.flags)
            set_pte_at(mm, addr, pte.replace(young=False))
            await lru_cache_add(pte.page)
            assert await reclaim_page(pte.page)

        async with sim.cpus() as cpus:  # type: ignore[attr-defined]
            cpus.start(body, name="cpu0")

    def run() -> mmemu.Result:
        return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=5)

    assert run().failure is None
    assert seen and all(f & PG_dirty and not f & PG_swapcache for f in seen)
    # add_to_swap without its SetPageDirty (swap_state:add_to_swap:seq-update:1)
    # is then harmless here: the page is dirty already, pageout writes the slot
    fn = swap_state.add_to_swap
    orig = fn.__code__
    try:
        fn.__code__ = _mutant(fn, ("                page.flags |= PG_dirty\n", "")).__code__
        assert run().failure is None
    finally:
        fn.__code__ = orig


# ---------------------------------------------- swap:fork-swapin-vs-write

FORK = "swap:fork-swapin-vs-write"


@pytest.mark.parametrize("api", ["2.6.27", "modern"])
def test_fork_swapin_vs_write_passes_and_reaches_its_goals(api: str) -> None:
    res = explore(FORK, params={"api": api}, bound=None)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and not res.coverage.unreached, res.coverage.unreached


@pytest.mark.parametrize("api,fn_name,edit", [
    # today's final refcount test made == 2 (memory:_wp_can_reuse_anon_folio:wrong-count:1)
    ("modern", "_wp_can_reuse_anon_folio",
     ("reuse = not PageKsm(page) and page._count.counter == 1",
      "reuse = not PageKsm(page) and page._count.counter == 2")),
])
def test_a_reuse_the_childs_swap_pte_still_reaches_is_caught(
        monkeypatch: pytest.MonkeyPatch, api: str, fn_name: str, edit: tuple[str, str]) -> None:
    from mmemu.mm import memory
    from tests.check.test_pte_vma import _mutant
    fn = getattr(memory, fn_name)
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(FORK, params={"api": api}, bound=None)
    f = res.failure
    assert f is not None, "the parent reused a page the child's swap pte still reaches"
    assert f.preemptions <= 2, f.report()


def test_can_share_swap_page_must_count_the_childs_swap_pte(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """2.6.27's can_share_swap_page without the swap count (mapcount only)."""
    from mmemu.mm import swapfile
    from tests.check.test_pte_vma import _mutant
    fn = swapfile.can_share_swap_page
    edit = ("        count += page_swapcount(page) - 1\n", "        pass\n")
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(FORK, params={"api": "2.6.27"}, bound=None)
    f = res.failure
    assert f is not None, "the parent reused a page the child's swap pte still reaches"
    assert f.preemptions <= 2, f.report()
