"""2.6.27's ->change_pte against a guest fault, unbounded
(ksm:change-pte-vs-guest-fault in mmemu/races/change_pte_shapes.py): the
correct model passes for KVM; KVM's change_pte without its seq bump (made
here in process, as the mutation benchmark's seq-update operator makes it)
leaves an spte to the page the merge frees -- an interleaving of two
preemptions, which ksm:merge-vs-guest-fault's bound of one does not reach."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from ._support import assert_passes_and_reaches, explore

load_builtin()

SUITE = "ksm:change-pte-vs-guest-fault"


def test_the_suite_passes_for_kvm_only() -> None:
    assert get_scenario(SUITE).combinations() == [{"driver": "kvm"}]
    assert_passes_and_reaches(SUITE, critical=1, params={"driver": "kvm"})


def test_change_pte_without_the_seq_bump_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.drivers.kvm import KvmDriver
    from tests.check.test_pte_vma import _mutant
    fn = KvmDriver.change_pte
    monkeypatch.setattr(fn, "__code__", _mutant(fn, ("self.mmu_notifier_seq += 1", "pass")).__code__)
    f = explore(SUITE, params={"driver": "kvm"}, bound=None).failure
    assert f is not None and f.kind == "FreedPageStillMapped", f and f.report()
    assert f.preemptions == 2, f.report()
    # within one preemption the bounded suite misses it
    assert explore("ksm:merge-vs-guest-fault", params={"driver": "kvm"}, bound=1).failure is None
