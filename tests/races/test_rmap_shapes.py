"""kswapd's aging walk against a split, a fork and a new mapping of the vma
it walks (rmap:vma-change-vs-aging in mmemu/races/rmap_shapes.py): the
correct model passes each change exhaustively and reaches what only a walk
after the change meets; the walk is forced before and after the split; and
each list update or walk without its lock (vma_adjust's i_mmap_lock and
anon_vma->lock, __vma_link_file's and dup_mmap's i_mmap_lock,
page_referenced_file's i_mmap_lock -- made here in process, the way the
mutation benchmark's lock-pair operator makes them) is a DataRace within 2
preemptions."""

from __future__ import annotations


import pytest

from mmemu.engine._registry import load_builtin
from mmemu.mm.rmap import REFERENCED_VMA_NOT_COVERING
from mmemu.testing import force

from ._support import assert_caught_in_process, assert_passes_and_reaches, explore, labels

load_builtin()

SUITE = "rmap:vma-change-vs-aging"
SPLIT = "3. vma_adjust: vm_start/vm_end/vm_pgoff; __insert_vm_struct"
WALK_ANON = "walk anon_vma->head"


@pytest.mark.parametrize("change", ["split", "fork", "mmap"])
def test_the_suite_passes_and_reaches_its_goals(change: str) -> None:
    assert_passes_and_reaches(SUITE, critical=2, params={"change": change})


def test_the_walk_before_the_split_sees_one_vma() -> None:
    out = force(SUITE, [("kswapd", WALK_ANON), ("mprotect", SPLIT)], params={"change": "split"})
    assert out.failure is None, out.failure.report()
    assert "page_referenced_one: pte maps the page?" in labels(out, "kswapd")


def test_the_walk_after_the_split_finds_the_page_through_its_half() -> None:
    out = force(SUITE, [("mprotect", SPLIT), ("kswapd", WALK_ANON)], params={"change": "split"})
    assert out.failure is None, out.failure.report()
    # both pages: one half covers the page, the other does not (-EFAULT)
    assert labels(out, "kswapd").count("page_referenced_one: pte maps the page?") == 2
    res = explore(SUITE, params={"change": "split"}, bound=None)
    assert res.coverage.executions_reaching(REFERENCED_VMA_NOT_COVERING) >= 1


@pytest.mark.parametrize("change,module,fn_name,calls", [
    ("split", "mmemu.mm.mmap", "vma_adjust", (
        'await spin_lock(mapping.i_mmap_lock, label="1. vma_adjust: spin_lock(i_mmap_lock)")',
        'await spin_unlock(mapping.i_mmap_lock,\n'
        '                              label="4. vma_adjust: spin_unlock(i_mmap_lock)")')),
    ("split", "mmemu.mm.mmap", "vma_adjust", (
        'await spin_lock(anon_vma.lock, label="2. vma_adjust: spin_lock(anon_vma->lock)")',
        'await spin_unlock(anon_vma.lock, label="4. vma_adjust: spin_unlock(anon_vma->lock)")')),
    ("mmap", "mmemu.mm.mmap", "__vma_link_file", (
        'await spin_lock(mapping.i_mmap_lock, label="vma_link: spin_lock(i_mmap_lock)")',
        'await spin_unlock(mapping.i_mmap_lock, label="vma_link: spin_unlock(i_mmap_lock)")')),
    ("fork", "mmemu.mm.fork", "dup_mmap", (
        'await spin_lock(mapping.i_mmap_lock,\n'
        '                                label="dup_mmap: spin_lock(i_mmap_lock)")',
        'await spin_unlock(mapping.i_mmap_lock,\n'
        '                                  label="dup_mmap: spin_unlock(i_mmap_lock)")')),
    ("mmap", "mmemu.mm.rmap", "page_referenced", (
        'await spin_lock(mapping.i_mmap_lock, label="page_referenced_file: spin_lock(i_mmap_lock)")',
        'await spin_unlock(mapping.i_mmap_lock, label="page_referenced_file: spin_unlock(i_mmap_lock)")')),
], ids=["vma_adjust-i_mmap", "vma_adjust-anon_vma", "vma_link_file", "dup_mmap", "page_referenced"])
def test_a_dropped_lock_is_a_data_race(change: str, module: str, fn_name: str,
                                       calls: tuple[str, ...],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert_caught_in_process(monkeypatch, SUITE, module, fn_name,
                             tuple((c, "pass") for c in calls), "DataRace",
                             params={"change": change})


AGING = "rmap:aging-vs-truncate"


def test_aging_vs_truncate_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(AGING, critical=2)


def test_aging_leaves_a_page_truncation_holds_locked() -> None:
    out = force(AGING, [("kswapd", "page_referenced: page_mapped?"),
                        ("truncate", "trylock_page(page0)"),
                        ("kswapd", "trylock_page(page0)")])
    assert out.failure is None, out.failure.report()
    assert "walk i_mmap" not in labels(out, "kswapd")


def test_truncation_waits_for_the_aging_walk_that_holds_the_page() -> None:
    out = force(AGING, [("kswapd", "trylock_page(page0)"),
                        ("truncate", "unmap_mapping_range: walk i_mmap")])
    assert out.failure is None, out.failure.report()
    assert "walk i_mmap" in labels(out, "kswapd")


def test_aging_that_ignores_a_failed_trylock_unlocks_truncations_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_caught_in_process(monkeypatch, AGING, "mmemu.mm.rmap", "page_referenced",
                             (("return referenced + 1", "pass"),),
                             ("BadPageState", "UnlockNotOwner"))


COW = "rmap:reclaim-vs-file-cow"


def test_reclaim_vs_file_cow_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(COW, critical=2)


def test_reclaim_between_the_copy_and_the_recheck_drops_the_copy() -> None:
    out = force(COW, [("writer", "do_wp_page: pte_unmap_unlock"),
                      ("kswapd", "ptep_clear_flush"),
                      ("writer", "do_wp_page: pte_same?")])
    assert out.failure is None, out.failure.report()
    assert "do_wp_page: set_pte_at, page_add_new_anon_rmap" not in labels(out, "writer")


def test_the_copy_before_reclaim_is_mapped_and_the_file_page_unmapped() -> None:
    out = force(COW, [("writer", "do_wp_page: set_pte_at, page_add_new_anon_rmap"),
                      ("kswapd", "page_mapped(page)? PageDirty(page)?")])
    assert out.failure is None, out.failure.report()


def test_a_cow_of_a_file_page_without_its_rss_move_is_bad_rss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_caught_in_process(monkeypatch, COW, "mmemu.mm.memory", "do_wp_page",
                             (("mm.file_rss -= 1", "pass"),), "BadRssCounter")
