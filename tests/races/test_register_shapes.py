"""A registration against another driver's unregister on the same mm
(notifier:register-vs-unregister in mmemu/races/register_shapes.py): the
correct model passes for every driver and generation and reaches the
registration during the detach; the registration's hlist_add without
mmu_notifier_mm->lock (made here in process, as the mutation benchmark's
lock-pair operator makes it) is a DataRace on the list."""

from __future__ import annotations

from typing import Any

import pytest

from mmemu.engine._registry import load_builtin

from ._support import assert_caught_in_process, assert_passes_and_reaches

load_builtin()

SUITE = "notifier:register-vs-unregister"
RUNS = [{"driver": "kvm"}, {"driver": "gru"}, {"driver": "kvm", "api": "modern"},
        {"driver": "gru", "api": "modern"}, {"driver": "hmm", "api": "modern"},
        {"driver": "sva", "api": "modern"}]


@pytest.mark.parametrize("params", RUNS, ids=lambda p: "-".join(p.values()))
def test_the_suite_passes_and_reaches_its_goal(params: dict[str, Any]) -> None:
    assert_passes_and_reaches(SUITE, critical=1, params=params)


@pytest.mark.parametrize("params", [{"driver": "kvm"}, {"driver": "sva", "api": "modern"}],
                         ids=["kvm-2.6.27", "sva-modern"])
def test_a_registration_adding_without_the_lock_is_a_data_race(
        params: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    f = assert_caught_in_process(
        monkeypatch, SUITE, "mmemu.mm.mmu_notifier", "do_mmu_notifier_register",
        (('await spin_lock(mmn.lock, label="4. spin_lock(mmu_notifier_mm->lock)")', "pass"),
         ('await spin_unlock(mmn.lock, label="4. spin_unlock(mmu_notifier_mm->lock)")', "pass")),
        "DataRace", params=params)
    assert "data race on mm1.mmu_notifier_mm->list" in f.message
    assert "'4. hlist_add_head_rcu' without holding spinlock mm1.mmu_notifier_mm->lock" \
        in f.message, f.message


def test_a_get_that_does_not_find_the_registered_notifier_is_a_duplicate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # find_get_mmu_notifier's match skipped: B's mmu_notifier_get allocates
    # a second notifier of GRU's ops while A's is still registered
    f = assert_caught_in_process(
        monkeypatch, SUITE, "mmemu.mm.mmu_notifier", "find_get_mmu_notifier",
        (("if mn.ops is ops and mn.mm is mm:", "if False:"),),
        "DuplicateNotifier", params={"driver": "gru", "api": "modern"})
    assert "one notifier per ops and mm" in f.message, f.message
