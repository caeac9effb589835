"""KSM merges against the owner's write fault and zap
(mmemu/races/ksm_shapes.py): both pass on the correct model and reach a
merge; replace_page without its pte_same test is caught by the zap race
within 2 preemptions."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from mmemu.testing import force

from ._support import assert_caught, assert_passes_and_reaches, explore, labels

load_builtin()


@pytest.mark.parametrize("suite", ["ksm:merge-vs-write-fault", "ksm:merge-vs-zap"])
def test_correct_model_passes_and_merges(suite: str) -> None:
    res = explore(suite)
    assert res.failure is None, res.failure.report()
    assert not res.coverage.unreached, res.coverage.unreached
    doc = get_scenario(suite).doc
    assert "critical interleavings that matter" in doc and "Harmless" in doc


def test_replace_page_without_pte_same_is_caught_by_the_zap() -> None:
    assert_caught("ksm:merge-vs-zap", "ksm:replace-no-pte-same", ("BadPageState",
                                                                 "InvariantViolation"))


def test_replace_page_without_pte_same_is_caught_by_the_write_fault() -> None:
    """do_wp_page's trylock fails while ksmd holds the page lock, so the
    writer copies; the merge without pte_same then unmaps the old page a
    second time."""
    assert_caught("ksm:merge-vs-write-fault", "ksm:replace-no-pte-same", "BadPageState")


# the write fault between write_protect_page (W3) and replace_page (R1)
_WRITE_BETWEEN = [
    ("ksmd", "W3. pte_unmap_unlock"),
    ("writer", "do_wp_page: trylock_page(old_page)"),
    ("writer", "do_wp_page: set_pte_at, page_add_new_anon_rmap"),
    ("ksmd", "R1. pte_same(*ptep, orig_pte)?"),
]


def test_a_write_between_protect_and_replace_copies_and_stops_the_merge() -> None:
    out = force("ksm:merge-vs-write-fault", _WRITE_BETWEEN)
    assert out.failure is None, out.failure.report()
    writer = labels(out, "writer")
    assert "do_wp_page: can_share_swap_page" not in writer  # the trylock failed
    assert "do_wp_page: cow_user_page" in writer
    assert "R2. get_page(kpage); page_add_anon_rmap(kpage)" not in labels(out, "ksmd")


def test_a_write_after_the_merge_copies_the_ksm_page() -> None:
    out = force("ksm:merge-vs-write-fault", [
        ("ksmd", "try_to_merge_one_page: unlock_page(page)"),
        ("writer", "do_wp_page: cow_user_page"),
    ])
    assert out.failure is None, out.failure.report()
    assert "R2. get_page(kpage); page_add_anon_rmap(kpage)" in labels(out, "ksmd")
    # a KSM page is never reused: no trylock, straight to the copy
    assert "do_wp_page: trylock_page(old_page)" not in labels(out, "writer")


def test_without_pte_same_the_forced_write_between_is_caught() -> None:
    out = force("ksm:merge-vs-write-fault", _WRITE_BETWEEN,
                mutants=["ksm:replace-no-pte-same"])
    assert out.failure is not None and out.failure.kind == "BadPageState", out


# ----------------------------------------------------- ksm:merge-vs-reclaim

RECLAIM = "ksm:merge-vs-reclaim"


def test_merge_vs_reclaim_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(RECLAIM, critical=3)


def test_ksmd_leaves_a_page_reclaim_has_locked() -> None:
    out = force(RECLAIM, [("kswapd", "trylock_page(page1)"),
                          ("ksmd", "try_to_merge_one_page: trylock_page(page)")])
    assert out.failure is None, out.failure.report()
    ksmd = labels(out, "ksmd")
    assert "try_to_merge_one_page: unlock_page(page)" not in ksmd


def test_ksmd_ignoring_the_failed_trylock_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The source mutant ksm:try_to_merge_one_page:recheck:2, made in
    process: ksmd merges a page reclaim holds locked and unlocks it."""
    from mmemu.mm import ksm
    from tests.check.test_pte_vma import _mutant
    fn = ksm.try_to_merge_one_page
    edit = ('        if not await trylock_page(page, label="try_to_merge_one_page: trylock_page(page)"):',
            '        if not await trylock_page(page, label="try_to_merge_one_page: trylock_page(page)") and False:')
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(RECLAIM, bound=None)
    f = res.failure
    assert f is not None and f.kind == "BadPageState", f and f.report()
    assert f.preemptions <= 2, f.report()
