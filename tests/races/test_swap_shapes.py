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

from ._support import assert_caught, explore, labels

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

