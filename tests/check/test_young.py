"""The aging checker: page aging must fold every secondary MMU's accessed
bit into its answer (->clear_flush_young, ->test_young, ->clear_young).
Broken on purpose -- the call site's mutant, drivers that ignore the
question -- and the correct model silent."""

from __future__ import annotations

from typing import Any

import mmemu
import pytest

from mmemu.check import INSTALLERS

# kvm faults the page in (its spte is young); aging asks twice: the first
# question clears the CPU pte's accessed bit, so the second one is answered
# by the spte alone
RECLAIM_TWICE = "drivers=kvm vmas=s1; cpu0: fault(0,w); cpu1: reclaim(0) access(0) reclaim(0)"
IDLE_TWICE = "drivers=kvm api=modern vmas=a1; cpu0: fault(0,w); cpu1: idle(0) idle(0)"


def workload(w: str, *, mutants: list[str] | None = None, bound: int = 1) -> mmemu.Result:
    return mmemu.explore("workload:run", params={"workload": w}, mutants=mutants or [],
                         strategy=mmemu.DFS(max_preemptions=bound), executions=2000)


def test_boot_checked_installs_the_young_checker() -> None:
    assert "mmemu.check.young:install" in INSTALLERS


def test_aging_without_clear_flush_young_is_caught_in_the_aging_suite() -> None:
    f = mmemu.explore("aging:referenced-vs-guest-fault", strategy=mmemu.DFS(max_preemptions=1),
                      executions=2000, params={"driver": "kvm"},
                      mutants=["memory:young-no-notify"]).failure
    assert f is not None and f.kind == "AgingMissedSecondaryReference", f
    assert "kvm gfn 0 of driver kvm was a young translation of page" in f.message
    assert "(->clear_flush_young)" in f.message


def test_aging_without_clear_flush_young_is_caught_in_a_workload() -> None:
    f = workload(RECLAIM_TWICE, mutants=["memory:young-no-notify"]).failure
    assert f is not None and f.kind == "AgingMissedSecondaryReference", f
    assert "'ptep_clear_flush_young' on cpu1" in f.message
    assert workload(RECLAIM_TWICE).failure is None


def _khugepaged_after_a_guest_fault() -> mmemu.Result:
    """The guest faults a page in; khugepaged asks whether it is young (the
    CPU pte is old, PG_referenced clear: only ->test_young can tell)."""
    from mmemu.mm.khugepaged import khugepaged_scan_referenced
    from mmemu.mm.page import PG_referenced
    from tests.mm.test_aging import _guest_page

    async def scenario(sim: Any) -> None:
        kvm, vma, page, a = await _guest_page(sim, "modern")

        async def cpu() -> None:
            await kvm.fault(a, False)
            page.flags &= ~PG_referenced  # the GUP's mark_page_accessed
            await khugepaged_scan_referenced(vma, vma.vm_start, vma.vm_end)

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="khugepaged")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)


def test_a_driver_that_answers_test_young_wrongly(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.drivers.kvm import KvmDriver

    assert _khugepaged_after_a_guest_fault().failure is None

    async def never_young(self: Any, mm: Any, address: int) -> bool:
        return False

    monkeypatch.setattr(KvmDriver, "test_young", never_young)
    f = _khugepaged_after_a_guest_fault().failure
    assert f is not None and f.kind == "AgingMissedSecondaryReference", f
    assert "(->test_young)" in f.message


def test_a_driver_that_ignores_clear_young(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.drivers.kvm import KvmDriver

    assert workload(IDLE_TWICE).failure is None

    async def keeps_it_young(self: Any, mm: Any, start: int, end: int) -> bool:
        return False  # neither clears the sptes' accessed bits nor reports them

    monkeypatch.setattr(KvmDriver, "clear_young", keeps_it_young)
    f = workload(IDLE_TWICE, bound=0).failure
    assert f is not None and f.kind == "AgingMissedSecondaryReference", f
    assert "(->clear_young)" in f.message


def test_a_driver_without_aging_callbacks_cannot_be_asked() -> None:
    """GRU has no ->clear_flush_young (in the kernel too): its young TLB
    entries are not the aging's business."""
    from mmemu.drivers.gru import GruDriver
    assert getattr(GruDriver, "clear_flush_young", None) is None
    w = RECLAIM_TWICE.replace("drivers=kvm", "drivers=gru")
    assert workload(w, mutants=["memory:young-no-notify"], bound=0).failure is None
