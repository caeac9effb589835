"""The second series of pagecache suites: add-vs-add, reclaim-unfreeze,
reclaim-vs-truncate, lookup-vs-migration.  Each passes exhaustively on the
correct model (bounded and unbounded), each documented interleaving is
forced both ways, and each mutant of the suite is caught with a shrunk
report of at most 2 preemptions."""

from __future__ import annotations

import pytest

import mmemu
from mmemu.engine._registry import get_mutant, get_scenario, load_builtin
from mmemu.testing import force

from ._support import assert_caught, explore, labels

load_builtin()

SUITES = ["pagecache:add-vs-add", "pagecache:reclaim-unfreeze",
          "pagecache:reclaim-vs-truncate", "pagecache:lookup-vs-migration"]


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("bound", [None])
def test_suite_passes_exhaustively(suite: str, bound: int | None) -> None:
    res = explore(suite, bound=bound)
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert res.executions > 20


@pytest.mark.parametrize("suite", SUITES)
def test_suite_docstring_is_a_protocol_comment(suite: str) -> None:
    sc = get_scenario(suite)
    assert "critical interleavings that matter:" in sc.doc
    assert "Harmless" in sc.doc or "That's OK" in sc.doc
    for m in sc.catches:
        assert f"``{m}``" in sc.doc, f"{suite} catches {m} but its comment does not say how"
        get_mutant(m)


CAUGHT = [
    ("pagecache:add-vs-add", "filemap:eexist-no-undo", "PageLeak"),
    ("pagecache:reclaim-unfreeze", "pagemap:unfreeze-no-wake", "Deadlock"),
    ("pagecache:reclaim-unfreeze", "vmscan:dirty-before-freeze", "DataLoss"),
    ("pagecache:reclaim-unfreeze", "vmscan:freeze-wrong-count", "PageCountUnderflow"),
    ("pagecache:reclaim-vs-truncate", "vmscan:no-freeze", "FreePageInPageCache"),
    ("pagecache:reclaim-vs-truncate", "vmscan:freeze-wrong-count", "FreePageInPageCache"),
    ("pagecache:lookup-vs-migration", "filemap:no-recheck", "WrongPageFromLookup"),
    ("pagecache:lookup-vs-migration", "filemap:plain-get", "GetPageOnFreePage"),
    ("pagecache:lookup-vs-migration", "migrate:newpage-unlocked", "HalfInitialisedPage"),
]


@pytest.mark.parametrize("suite,mutant,kind", CAUGHT, ids=[f"{s.split(':')[1]}-{m}"
                                                          for s, m, _k in CAUGHT])
def test_mutant_caught_minimally(suite: str, mutant: str, kind: str) -> None:
    assert mutant in get_scenario(suite).catches
    f = assert_caught(suite, mutant, kind)
    assert "page pfn=" in f.report() or "Deadlock" == kind


# ------------------------------------------------------------ add vs add


def test_both_lookups_before_either_insert_one_gets_eexist_and_frees_its_page() -> None:
    out = force("pagecache:add-vs-add", [
        ("read0", "1. radix_tree_lookup"), ("read1", "1. radix_tree_lookup"),
        ("read0", "radix_tree_insert"), ("read1", "radix_tree_insert"),
    ])
    assert out.failure is None, out.failure.report()
    r1 = labels(out, "read1")
    assert "-EEXIST: page_cache_release" in r1 and "ClearPageLocked" in r1
    assert "-EEXIST: page_cache_release" not in labels(out, "read0")
    assert r1.count("1. radix_tree_lookup") == 2  # it looked again and found pageA


def test_the_loser_waits_for_the_winners_read_on_the_page_lock() -> None:
    out = force("pagecache:add-vs-add", [
        ("read0", "1. radix_tree_lookup"), ("read1", "1. radix_tree_lookup"),
        ("read0", "radix_tree_insert"), ("read1", "radix_tree_insert"),
        ("read1", "PageUptodate(page)? (else it must be locked)"),
        ("read0", "readpage: SetPageUptodate"),
    ])
    assert out.failure is None, out.failure.report()
    r1 = labels(out, "read1")
    assert "lock_page(page0)" in r1 and "PageUptodate(page)? (after the read)" in r1


def test_a_lookup_after_the_insert_never_allocates() -> None:
    out = force("pagecache:add-vs-add", [
        ("read0", "radix_tree_insert"), ("read1", "1. radix_tree_lookup"),
    ])
    assert out.failure is None, out.failure.report()
    r1 = labels(out, "read1")
    assert "page_cache_alloc" not in r1 and "radix_tree_insert" not in r1


# ------------------------------------------------- reclaim changes its mind


def test_dirtied_between_the_test_and_the_freeze_reclaim_unfreezes_and_wakes_the_lookup() -> None:
    out = force("pagecache:reclaim-unfreeze", [
        ("reclaim", "page_mapped(page)? PageDirty(page)?"),
        ("pin", "W2. put_page (the get_user_pages pin)"),
        ("reclaim", "A. page_freeze_refs"),
        ("find_get_page", "2. page_cache_get_speculative"),
        ("find_get_page", "2. failed: page frozen or free, retry"),
        ("reclaim", "page_unfreeze_refs"),
    ])
    assert out.failure is None, out.failure.report()
    look = labels(out, "find_get_page")
    assert "1. radix_tree_lookup (retry)" in look  # woken by page_unfreeze_refs
    assert look.count("2. page_cache_get_speculative") == 2
    assert "3. recheck: page still in the slot?" in look
    assert "putback: put_page (isolation reference)" in labels(out, "reclaim")


def test_the_pin_still_held_at_the_freeze_reclaim_bails_out() -> None:
    out = force("pagecache:reclaim-unfreeze", [
        ("reclaim", "A. page_freeze_refs"),
        ("pin", "W1. write_to(page); SetPageDirty"),
    ])
    assert out.failure is None, out.failure.report()
    rec = labels(out, "reclaim")
    assert "page_unfreeze_refs" not in rec and "PageDirty? (after the freeze)" not in rec
    assert "cannot_free: spin_unlock(tree_lock)" in rec


def test_dirtied_before_reclaim_looks_the_page_is_kept_without_a_freeze() -> None:
    out = force("pagecache:reclaim-unfreeze", [
        ("pin", "W2. put_page (the get_user_pages pin)"),
        ("reclaim", "page_mapped(page)? PageDirty(page)?"),
    ])
    assert out.failure is None, out.failure.report()
    assert "A. page_freeze_refs" not in labels(out, "reclaim")


def test_without_the_wakeup_the_frozen_lookup_waits_forever_when_forced() -> None:
    out = force("pagecache:reclaim-unfreeze", [
        ("reclaim", "page_mapped(page)? PageDirty(page)?"),
        ("pin", "W2. put_page (the get_user_pages pin)"),
        ("reclaim", "A. page_freeze_refs"),
        ("find_get_page", "2. page_cache_get_speculative"),
        ("find_get_page", "2. failed: page frozen or free, retry"),
        ("reclaim", "page_unfreeze_refs"),
    ], mutants=["pagemap:unfreeze-no-wake"])
    assert out.failure is not None and out.failure.kind == "Deadlock"
    assert "frozen in the slot" in out.failure.message


# ------------------------------------------------------- reclaim vs truncate


def test_truncate_pins_first_reclaim_bails_and_truncate_removes() -> None:
    out = force("pagecache:reclaim-vs-truncate", [
        ("truncate", "2. page_cache_get_speculative"), ("reclaim", "A. page_freeze_refs"),
    ])
    assert out.failure is None, out.failure.report()
    assert "cannot_free: spin_unlock(tree_lock)" in labels(out, "reclaim")
    assert "remove_from_page_cache" in labels(out, "truncate")


def test_reclaim_freezes_first_truncate_waits_and_finds_nothing() -> None:
    out = force("pagecache:reclaim-vs-truncate", [
        ("reclaim", "A. page_freeze_refs"), ("truncate", "2. page_cache_get_speculative"),
        ("reclaim", "B. __remove_from_page_cache"),
    ])
    assert out.failure is None, out.failure.report()
    tr = labels(out, "truncate")
    assert "2. failed: page frozen or free, retry" in tr
    assert "remove_from_page_cache" not in tr
    assert "C. free the page (free_hot_cold_page)" in labels(out, "reclaim")


def test_no_freeze_frees_the_page_under_truncates_pagevec_when_forced() -> None:
    out = force("pagecache:reclaim-vs-truncate", [
        ("reclaim", "A. page_count(page) == 2?"), ("truncate", "2. page_cache_get_speculative"),
        ("reclaim", "B. __remove_from_page_cache"),
    ], mutants=["vmscan:no-freeze"])
    assert out.failure is not None
    assert out.failure.kind in ("FreePageInPageCache", "PageCountUnderflow"), out.failure.report()


# ------------------------------------------------------ lookup vs migration


def test_lookup_pins_first_migration_fails_with_eagain() -> None:
    out = force("pagecache:lookup-vs-migration", [
        ("read", "2. page_cache_get_speculative"), ("migrate", "A. page_freeze_refs(page, 2)"),
    ])
    assert out.failure is None, out.failure.report()
    mig = labels(out, "migrate")
    assert "A. busy, -EAGAIN: spin_unlock(tree_lock)" in mig
    assert "B. radix_tree_replace_slot(newpage)" not in mig


def test_migration_freezes_first_the_lookup_waits_then_waits_for_the_copy() -> None:
    out = force("pagecache:lookup-vs-migration", [
        ("migrate", "A. page_freeze_refs(page, 2)"),
        ("read", "1. radix_tree_lookup"), ("read", "2. page_cache_get_speculative"),
        ("migrate", "B. radix_tree_replace_slot(newpage)"),
        ("read", "1. radix_tree_lookup"),
        ("read", "PageUptodate(page)? (else it must be locked)"),
        ("migrate", "3. migrate_page_copy"),
    ])
    assert out.failure is None, out.failure.report()
    rd = labels(out, "read")
    assert "2. failed: page frozen or free, retry" in rd
    assert "lock_page(page1)" in rd and "PageUptodate(page)? (after the read)" in rd


def test_newpage_unlocked_is_read_before_the_copy_when_forced() -> None:
    out = force("pagecache:lookup-vs-migration", [
        ("migrate", "B. radix_tree_replace_slot(newpage)"),
        ("read", "PageUptodate(page)? (else it must be locked)"),
        ("migrate", "3. migrate_page_copy"),
    ], mutants=["migrate:newpage-unlocked"])
    assert out.failure is not None and out.failure.kind == "HalfInitialisedPage"


def test_mutants_are_in_the_catalogue() -> None:
    for name in ("filemap:eexist-no-undo", "pagemap:unfreeze-no-wake",
                 "vmscan:dirty-before-freeze", "vmscan:freeze-wrong-count",
                 "migrate:newpage-unlocked"):
        m = get_mutant(name)
        assert m.summary and m.caught_as and m.doc
        assert any(name in get_scenario(s).catches for s in SUITES)
    assert mmemu.engine.get_scenario("pagecache:add-vs-add").expect == "pass"


# -------------------------------------------------- punch hole vs fault

PUNCH = "pagecache:punch-hole-vs-fault"


def test_punch_hole_vs_fault_passes_and_reaches_its_goal() -> None:
    from ._support import assert_passes_and_reaches
    assert_passes_and_reaches(PUNCH, critical=2)


def _slots_read_by_pass_1(out: mmemu.Outcome) -> int:
    """How many slots the punch's first gang lookup returned (the
    radix_tree_lookup steps before its second gang lookup)."""
    punch = labels(out, "punch")
    first = punch.index("1. radix_tree_gang_lookup_slot")
    then = punch.index("1. radix_tree_gang_lookup_slot", first + 1)
    return punch[first + 1:then].count("1. radix_tree_lookup")


def test_the_fault_inserts_before_the_punchs_lookup_and_page_1_stays() -> None:
    out = force(PUNCH, [("fault", "radix_tree_insert"),
                        ("punch", "1. radix_tree_gang_lookup_slot")])
    assert out.failure is None, out.failure.report()
    # the gang lookup returned both slots: page 0 and page 1 (beyond the hole)
    assert _slots_read_by_pass_1(out) == 2


def test_the_punchs_lookups_before_the_insert_see_nothing_beyond() -> None:
    out = force(PUNCH, [("punch", "1. radix_tree_gang_lookup_slot"),
                        ("punch", "remove_from_page_cache"),
                        ("fault", "1. radix_tree_lookup")])
    assert out.failure is None, out.failure.report()
    # pass 1's lookup found page 0 alone: one slot read, no page beyond
    assert _slots_read_by_pass_1(out) == 1


@pytest.mark.parametrize("edit", [
    # pass 1's index test (truncate:truncate_inode_pages_range:recheck:1)
    ("                if page_index > end:\n", "                if False:\n"),
    # pass 2's test of the first page found (recheck:3): it looks again forever
    ("            if pvec[0].index > end:\n", "            if False:\n"),
    # (pass 2's test of each later page, recheck:4, needs page 0 to survive
    # pass 1 -- locked by somebody else -- which this suite does not run)
])
def test_the_range_end_tests_are_each_needed(monkeypatch: pytest.MonkeyPatch,
                                              edit: tuple[str, str]) -> None:
    from ._support import assert_caught_in_process
    assert_caught_in_process(monkeypatch, PUNCH, "mmemu.mm.truncate",
                             "truncate_inode_pages_range", (edit,),
                             ("InvariantViolation", "Livelock", "MappedTruncatedPage"))


# ------------------------------------------- two write faults of one page

WRITES = "pagecache:write-fault-vs-write-fault"


@pytest.mark.parametrize("map_", ["private", "shared"])
def test_write_fault_vs_write_fault_passes_and_reaches_its_goal(map_: str) -> None:
    from ._support import assert_passes_and_reaches
    assert_passes_and_reaches(WRITES, critical=1, params={"map": map_})


def test_the_loser_of_two_private_write_faults_drops_its_copy() -> None:
    for winner, loser in (("thread0", "thread1"), ("thread1", "thread0")):
        out = force(WRITES, [(loser, "handle_pte_fault: entry = *pte"),
                             (winner, "4. set_pte_at"),
                             (loser, "3. pte_same(*pte, orig_pte)?")],
                    params={"map": "private"})
        assert out.failure is None, out.failure.report()
        assert "pte changed: page_cache_release(copy)" in labels(out, loser)
        assert "pte changed: page_cache_release(copy)" not in labels(out, winner)


def test_a_loser_that_keeps_its_copy_leaks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """memory:__do_fault:get-put:1 of benchmarks/mutation.py."""
    from ._support import assert_caught_in_process
    edit = ('                await put_page(page, label="pte changed: page_cache_release(copy)")\n',
            "                pass\n")
    assert_caught_in_process(monkeypatch, WRITES, "mmemu.mm.memory", "__do_fault", (edit,),
                             "PageLeak", params={"map": "private"})
