"""khugepaged's ->test_young against MADV_DONTNEED's zap of the same page
(aging:scan-vs-zap in mmemu/races/young_shapes.py): the correct model
passes for KVM in both generations and reaches both the zap and the
question; KVM's test_young without mmu_lock (made here in process, as the
mutation benchmark's lock-pair operator makes it) is a DataRace on the
spte."""

from __future__ import annotations

from typing import Any

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from ._support import assert_passes_and_reaches, explore

load_builtin()

SUITE = "aging:scan-vs-zap"


@pytest.mark.parametrize("params", [{"driver": "kvm"}, {"driver": "kvm", "api": "modern"}],
                         ids=["2.6.27", "modern"])
def test_the_suite_passes_and_reaches_its_goals(params: dict[str, Any]) -> None:
    assert_passes_and_reaches(SUITE, critical=1, params=params)


def test_only_drivers_with_test_young_run() -> None:
    drivers = {p["driver"] for p in get_scenario(SUITE).combinations()}
    assert drivers == {"kvm"}


def test_test_young_without_mmu_lock_is_a_data_race(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.drivers.kvm import KvmDriver
    from tests.check.test_pte_vma import _mutant
    fn = KvmDriver.test_young
    lock = 'await spin_lock(self.mmu_lock, label="kvm_test_age_hva: spin_lock(kvm->mmu_lock)")'
    unlock = lock.replace("spin_lock", "spin_unlock")
    mutant = _mutant(fn, (lock, "pass"), (unlock, "pass"))
    monkeypatch.setattr(fn, "__code__", mutant.__code__)
    f = explore(SUITE, params={"driver": "kvm"}, bound=None).failure
    assert f is not None and f.kind == "DataRace", f and f.report()
    assert "test the accessed bit" in f.message, f.message
    assert f.preemptions <= 2, f.report()
