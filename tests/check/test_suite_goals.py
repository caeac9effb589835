"""The suites' coverage goals: declared on every suite, reached by the
correct model, and missed -- VacuousSuite -- when a mutation takes the
interesting path away although no checker objects."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.engine import all_scenarios, get_scenario
from mmemu.engine._coverage import parse_goal


#: scenarios that take their shape from a parameter: no fixed goal applies
#: (a workload's paths are what the fuzzer reports as reached)
SHAPELESS = {"workload:run"}


def test_every_suite_of_the_main_job_declares_goals() -> None:
    missing = [s.name for s in all_scenarios()
               if s.expect == "pass" and s.name not in SHAPELESS
               and not any(s.goals(c) for c in s.combinations())]
    assert not missing, f"suites without reaches=: {missing}"
    for s in all_scenarios():
        for c in s.combinations():
            for g in s.goals(c):
                parse_goal(g)


def test_a_signal_ignored_by_mm_take_all_locks_leaves_its_suite_vacuous(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue-11 survivor 'mm_take_all_locks ignoring signals': every
    checker is happy (the locks are taken and dropped), only the goal
    "-EINTR" is never reached."""
    import mmemu.mm.mmap as mmap

    async def never_pending() -> bool:
        return False

    ok = mmemu.explore("locks:take-all-signal")  # the suite's own search
    assert ok.failure is None and ok.exhausted
    assert ok.coverage is not None
    assert ok.coverage.executions_reaching(
        "mm_take_all_locks returned -EINTR (a signal was pending)") > 0
    monkeypatch.setattr(mmap, "_signal_pending_current", never_pending)
    res = mmemu.explore("locks:take-all-signal")  # the suite's own search
    f = res.failure
    assert f is not None and f.kind == "VacuousSuite"
    assert "never reached: mm_take_all_locks returned -EINTR" in f.message
    assert f.exception.unreached == ("mm_take_all_locks returned -EINTR (a signal was pending)",)


def test_a_reclaim_that_never_frees_leaves_its_suite_vacuous(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """__remove_mapping that always finds the page busy: nothing breaks,
    nothing is ever reclaimed, and the suite says so."""
    import mmemu.mm.vmscan as vmscan

    async def always_busy(page: Any, count: int) -> bool:
        await mmemu.step("A. page_freeze_refs (always busy)", writes=(page._count,))
        return False

    monkeypatch.setattr(vmscan, "page_freeze_refs", always_busy)
    res = mmemu.explore("pagecache:reinsert-aba")  # the suite's own search
    f = res.failure
    assert f is not None and f.kind == "VacuousSuite", f
    assert "never reached: vmscan: __remove_mapping froze and freed the page" in f.message


def test_goals_of_a_driver_suite_follow_the_driver() -> None:
    sc = get_scenario("notifier:truncate-vs-fault")
    kvm = sc.goals({"driver": "kvm"})
    sva = sc.goals({"driver": "sva", "api": "modern"})
    user = sc.goals({"driver": "tests/drivers/sample_drivers.py:SeqDriver"})
    assert "step:4. kvm_release_pfn_clean (retry)" in kvm
    assert not any("kvm" in g for g in sva)
    assert user == sva  # a user's driver: the kernel-side goals only
    assert "secondary MMU: a live translation was zapped" in user
