"""Idle page tracking and khugepaged's scan against a guest's use of the
page (mmemu/races/aging_shapes.py): every driver passes and reaches its
goals; each documented interleaving is forced with KVM, with and without
its mutant; each mutant is caught within 2 preemptions."""

from __future__ import annotations

import pytest

from mmemu.driver import available_drivers
from mmemu.engine._registry import get_scenario, load_builtin
from mmemu.testing import force

from ._support import assert_caught, explore, labels

load_builtin()

KVM = {"api": "modern", "driver": "kvm"}
IDLE = "aging:idle-vs-guest-access"
SCAN = "aging:scan-vs-guest-access"


@pytest.mark.parametrize("suite", [IDLE, SCAN])
def test_every_driver_passes_and_reaches_the_goals(suite: str) -> None:
    combos = get_scenario(suite).combinations()
    # every driver, under each API it supports (idle tracking: modern only)
    assert {c["driver"] for c in combos} == set(available_drivers())
    assert all(c.get("api") == "modern" for c in combos) == (suite == IDLE)
    for params in combos:
        res = explore(suite, params=params)
        assert res.failure is None, res.failure.report()
        assert res.exhausted and not res.coverage.unreached, params
    doc = get_scenario(suite).doc
    assert "critical interleaving" in doc and "Harmless" in doc


# (the guest's fault ends with an access of its own: the use is the second)
# the guest used the page before it was marked idle
USE_BEFORE = [("kvm", "kvm: access gfn 0"), ("kvm", "kvm: access gfn 0"),
              ("user", "0. open /sys/kernel/mm/page_idle/bitmap")]
# the guest faulted before the marking and used the page after it
USE_AFTER = [
    ("kvm", "kvm: access gfn 0"),
    ("user", "0. open /sys/kernel/mm/page_idle/bitmap"),
    ("user", "2. bitmap_write returned"),
    ("kvm", "kvm: access gfn 0"),
    ("user", "3. the workload runs"),
]


def test_a_use_before_the_marking_reads_back_idle() -> None:
    out = force(IDLE, USE_BEFORE, params=KVM)
    assert out.failure is None, out.failure.report()
    assert "kvm_age_hva (no flush)" in labels(out, "user")  # ->clear_young was asked
    bad = force(IDLE, USE_BEFORE, params=KVM, mutants=["page_idle:set-idle-before-clear"])
    assert bad.failure is not None and bad.failure.kind == "PageNeverIdle"


def test_a_use_after_the_marking_is_seen_through_clear_young() -> None:
    out = force(IDLE, USE_AFTER, params=KVM)
    assert out.failure is None, out.failure.report()
    bad = force(IDLE, USE_AFTER, params=KVM, mutants=["memory:clear-young-no-notify"])
    assert bad.failure is not None and bad.failure.kind == "AgingMissedSecondaryReference"
    assert "kvm_age_hva (no flush)" not in labels(bad, "user")


def test_a_guest_use_before_the_scan_counts_through_test_young() -> None:
    plan = [("kvm", "kvm: access gfn 0"), ("khugepaged", "1. khugepaged: find_vma")]
    out = force(SCAN, plan, params=KVM)
    assert out.failure is None, out.failure.report()
    assert "kvm_test_age_hva" in labels(out, "khugepaged")
    bad = force(SCAN, plan, params=KVM, mutants=["khugepaged:no-test-young"])
    assert bad.failure is not None and bad.failure.kind == "AgingMissedSecondaryReference"
    # the other order: the scan first finds nothing young, and nothing is wrong
    late = force(SCAN, [("khugepaged", "3. khugepaged: up_read(mmap_sem)"),
                        ("kvm", "kvm: access gfn 0")], params=KVM)
    assert late.failure is None, late.failure.report()


@pytest.mark.parametrize("suite, mutant, kind", [
    (IDLE, "memory:clear-young-no-notify", "AgingMissedSecondaryReference"),
    (IDLE, "page_idle:set-idle-before-clear", "PageNeverIdle"),
    (SCAN, "khugepaged:no-test-young", "AgingMissedSecondaryReference"),
])
def test_each_mutant_is_caught_with_kvm(suite: str, mutant: str, kind: str) -> None:
    assert_caught(suite, mutant, kind, params=KVM)
