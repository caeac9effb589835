"""Page migration against a zap, a guest fault and a truncate
(mmemu/races/migrate_shapes.py): the correct model passes and reaches every
goal; the documented interleavings are forced; the suites' mutants are
caught within 2 preemptions."""

from __future__ import annotations

import pytest

from mmemu.driver import available_drivers, load_driver
from mmemu.engine._registry import get_scenario, load_builtin
from mmemu.testing import force

from ._support import assert_caught, explore, labels

load_builtin()

ZAP = "migrate:anon-vs-zap"
GUEST = "migrate:anon-vs-guest-fault"
TRUNCATE = "migrate:file-vs-truncate"


def test_the_suites_document_their_interleavings() -> None:
    # (the main job, tests/cli/test_main_jobs.py, explores every suite and
    # combination on the correct model and fails one that misses a goal)
    for suite in (ZAP, GUEST, TRUNCATE):
        doc = get_scenario(suite).doc
        assert "critical interleavings that matter" in doc and "Harmless" in doc


def test_the_zap_suite_passes_and_reaches_its_goals() -> None:
    res = explore(ZAP)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and not res.coverage.unreached, res.coverage.unreached


def test_the_guest_suite_runs_every_driver_under_each_api() -> None:
    combos = get_scenario(GUEST).combinations()
    want = {(n, api) for n in available_drivers() for api in load_driver(n).apis}
    assert {(c["driver"], c.get("api", "2.6.27")) for c in combos} == want


def test_a_zap_between_unmap_and_remove_leaves_nothing_mapped() -> None:
    plan = [("migrate", "5. set_page_dirty / set_pte_at(migration entry)"),
            ("madvise", "zap_pte_range: ptep_get_and_clear(0x10000000)"),
            ("migrate", "4. migration entry for the old page?")]
    out = force(ZAP, plan)
    assert out.failure is None, out.failure.report()
    assert "4. set_pte_at(new page)" not in labels(out, "migrate")


def test_a_zap_before_migration_frees_the_page_under_it() -> None:
    out = force(ZAP, [("madvise", "madvise: up_read(mmap_sem)"),
                      ("migrate", "unmap_and_move: page_count(page) == 1?")])
    assert out.failure is None, out.failure.report()
    assert "move_newpage: putback_lru_page(page) (freed under us)" in labels(out, "migrate")


def test_a_fault_reference_makes_anon_migration_back_off() -> None:
    params = {"driver": "kvm"}
    out = force(GUEST, [("migrate", "5. set_page_dirty / set_pte_at(migration entry)"),
                        ("kvm", "c. pte_unmap_unlock"),
                        ("migrate", "3. migrate_page_move_mapping: page_count(page) == 1?")],
                params=params)
    assert out.failure is None, out.failure.report()
    assert "3. migrate_page_copy" not in labels(out, "migrate")  # -EAGAIN


def test_truncate_unmaps_the_page_migration_mapped_after_its_unmap() -> None:
    plan = [("migrate", "5. set_page_dirty / set_pte_at(migration entry)"),
            ("truncate", "i_size_write(inode, offset)"),
            ("truncate", "unmap_mapping_range: spin_unlock(i_mmap_lock)"),
            ("migrate", "4. set_pte_at(new page)")]
    out = force(TRUNCATE, plan)
    assert out.failure is None, out.failure.report()
    assert "page_mapped(page)?" in labels(out, "truncate")
    bad = force(TRUNCATE, plan, mutants=["truncate:no-remap-check"])
    assert bad.failure is not None and bad.failure.kind == "BadPageState"


@pytest.mark.parametrize("suite, mutant, kinds, params", [
    (ZAP, "migrate:remove-pte-unlocked", ("BadPageState", "InvariantViolation"), None),
    (TRUNCATE, "truncate:no-remap-check", ("BadPageState",), None),
    (GUEST, "gru:no-dropin-drop", ("SecondaryUseAfterFree",), {"driver": "gru"}),
])
def test_the_suites_catch_their_mutants(suite: str, mutant: str, kinds: tuple[str, ...],
                                        params: dict[str, str] | None) -> None:
    assert_caught(suite, mutant, kinds, params=params)


FORK = "migrate:page-vs-fork"


@pytest.mark.parametrize("page", ["anon", "file"])
def test_page_vs_fork_passes_and_reaches_its_goals(page: str) -> None:
    from ._support import assert_passes_and_reaches
    assert_passes_and_reaches(FORK, critical=2, params={"page": page})


@pytest.mark.parametrize("page", ["anon", "file"])
def test_fork_copies_a_migration_entry_that_migration_then_restores(page: str) -> None:
    out = force(FORK, [("migrate", "ptep_clear_flush"),
                       ("fork", "4. spin_unlock(src_ptl)"),
                       ("migrate", "4. set_pte_at(new page)")], params={"page": page})
    assert out.failure is None, out.failure.report()
    # the child's entry, then the parent's (or the other way): both restored
    assert labels(out, "migrate").count("4. set_pte_at(new page)") == 2


@pytest.mark.parametrize("page,line", [("anon", "dst_mm.anon_rss += 1"),
                                       ("file", "dst_mm.file_rss += 1")])
def test_a_copied_migration_entry_without_its_rss_is_bad_rss(
        page: str, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ._support import assert_caught_in_process
    # (20 spaces: only the migration-entry branch of copy_one_pte)
    src = "                    " + line + "\n"
    assert_caught_in_process(monkeypatch, FORK, "mmemu.mm.memory", "copy_one_pte",
                             ((src, "                    pass\n"),), "BadRssCounter",
                             params={"page": page})
