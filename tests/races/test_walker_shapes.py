"""The unmapping and aging rmap walkers against a split of the vma they walk
(rmap:split-vs-walker in mmemu/races/walker_shapes.py): the correct model
passes and reaches the half of the split that does not cover the page; the
walk is forced before and after the split; and each walker that does not
skip vma_address's -EFAULT (the mutation benchmark's recheck operator, made
here in process) is caught as BadPteAddress within 2 preemptions."""

from __future__ import annotations

from typing import Any

import pytest

from mmemu.engine._registry import load_builtin
from mmemu.testing import force

from ._support import assert_caught_in_process, assert_passes_and_reaches, labels

load_builtin()

SUITE = "rmap:split-vs-walker"
SPLIT = "3. vma_adjust: vm_start/vm_end/vm_pgoff; __insert_vm_struct"
WALK_FILE = "1. walk i_mmap"
OLD_RECLAIM = {"driver": "kvm", "walker": "reclaim"}


@pytest.mark.parametrize("params", [
    OLD_RECLAIM,
    {"api": "modern", "driver": "kvm", "walker": "migrate"},
    {"api": "modern", "driver": "hmm", "walker": "idle"},
], ids=["reclaim-2.6.27", "migrate-modern", "idle-modern"])
def test_the_suite_passes_and_reaches_its_goals(params: dict[str, Any]) -> None:
    assert_passes_and_reaches(SUITE, critical=2, params=params)


def _skip_efault(monkeypatch: pytest.MonkeyPatch, fn_name: str = "__try_to_unmap_one") -> None:
    from mmemu.mm import rmap
    from tests.check.test_pte_vma import _mutant
    fn = getattr(rmap, fn_name)
    monkeypatch.setattr(fn, "__code__",
                        _mutant(fn, ("if address == -EFAULT:", "if False:")).__code__)


def test_a_walk_before_the_split_meets_one_vma(monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_efault(monkeypatch)  # harmless here: no vma fails to cover the page
    out = force(SUITE, [("reclaim", WALK_FILE), ("mprotect", SPLIT)], params=OLD_RECLAIM)
    assert out.failure is None, out.failure.report()
    assert "2. page_check_address: pte maps the page?" in labels(out, "reclaim")


def test_a_walk_after_the_split_meets_the_half_that_does_not_cover_the_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = force(SUITE, [("mprotect", SPLIT), ("reclaim", WALK_FILE)], params=OLD_RECLAIM)
    assert out.failure is None, out.failure.report()
    _skip_efault(monkeypatch)
    out = force(SUITE, [("mprotect", SPLIT), ("reclaim", WALK_FILE)], params=OLD_RECLAIM)
    assert out.failure is not None and out.failure.kind == "BadPteAddress"


@pytest.mark.parametrize("module,fn_name,params", [
    ("mmemu.mm.rmap", "__try_to_unmap_one", OLD_RECLAIM),
    ("mmemu.mm.rmap", "try_to_unmap_one", {"api": "modern", "driver": "kvm", "walker": "reclaim"}),
    ("mmemu.mm.migrate", "remove_migration_pte", {"driver": "kvm", "walker": "migrate"}),
    ("mmemu.mm.page_idle", "page_idle_clear_pte_refs_one",
     {"api": "modern", "driver": "kvm", "walker": "idle"}),
], ids=["try_to_unmap_one-2.6.27", "try_to_unmap_one-modern", "remove_migration_pte",
        "page_idle"])
def test_a_walker_that_uses_efault_as_an_address_is_caught(
        module: str, fn_name: str, params: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_caught_in_process(monkeypatch, SUITE, module, fn_name,
                             (("if address == -EFAULT:", "if False:"),), "BadPteAddress",
                             params=params)


MUNMAP = "rmap:munmap-vs-aging"


def test_munmap_vs_aging_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(MUNMAP, critical=2)


@pytest.mark.parametrize("fn_name,edits", [
    ("unlink_file_vma", (
        ("    _remove_identity(mapping.i_mmap, vma)\n", ""),
        ('label="unlink_file_vma: spin_unlock(i_mmap_lock)")',
         'label="unlink_file_vma: spin_unlock(i_mmap_lock)")\n'
         '    _remove_identity(mapping.i_mmap, vma)'))),
    ("anon_vma_unlink", (
        ("    _remove_identity(anon_vma.head, vma)\n", ""),
        ('label="anon_vma_unlink: spin_unlock(anon_vma->lock)")',
         'label="anon_vma_unlink: spin_unlock(anon_vma->lock)")\n'
         '    _remove_identity(anon_vma.head, vma)'))),
], ids=["unlink_file_vma", "anon_vma_unlink"])
def test_an_unlink_after_the_unlock_is_a_data_race(
        fn_name: str, edits: tuple[tuple[str, str], ...],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_caught_in_process(monkeypatch, MUNMAP, "mmemu.mm.mmap", fn_name, edits, "DataRace")


@pytest.mark.parametrize("module,fn_name,edit,params,kinds", [
    # try_to_unmap_one loses the dirty bit of a file page's pte
    ("mmemu.mm.rmap", "__try_to_unmap_one",
     ("                page.flags |= PG_dirty\n            if migration:",
      "                pass\n            if migration:"), OLD_RECLAIM, "DataLoss"),
    # migrate_page_copy leaves PG_active (and PG_dirty) on the old page
    ("mmemu.mm.migrate", "migrate_page_copy", ("page.flags &= ~(PG_active | PG_dirty)", "pass"),
     {"driver": "kvm", "walker": "migrate"}, "BadPageAtFree"),
    # page_referenced does not consume PG_referenced (KVM's GUP set it)
    ("mmemu.mm.rmap", "page_referenced", ("page.flags &= ~PG_referenced", "pass"), OLD_RECLAIM,
     "InvariantViolation"),
    # idle tracking drops the young pte's access instead of moving it to PG_young
    ("mmemu.mm.page_idle", "page_idle_clear_pte_refs",
     ("page.flags = (page.flags & ~PG_idle) | PG_young", "pass"),
     {"api": "modern", "driver": "kvm", "walker": "idle"}, "InvariantViolation"),
    # idle tracking never sets PG_idle
    ("mmemu.mm.page_idle", "page_idle_bitmap_write", ("page.flags |= PG_idle", "pass"),
     {"api": "modern", "driver": "kvm", "walker": "idle"}, "InvariantViolation"),
], ids=["unmap-dirty", "migrate-active", "referenced", "idle-young", "idle-set"])
def test_a_lost_page_flag_is_caught(module: str, fn_name: str, edit: tuple[str, str],
                                    params: dict[str, Any], kinds: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert_caught_in_process(monkeypatch, SUITE, module, fn_name, (edit,), kinds, params=params)
