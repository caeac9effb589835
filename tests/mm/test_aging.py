"""Page aging and the secondary MMUs: page_referenced (->clear_flush_young),
idle page tracking (->clear_young, modern), khugepaged's scan
(->test_young): the interleavings of aging:referenced-vs-guest-fault forced
both ways, the mutant, and each call site's effect."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.drivers.kvm import KvmDriver
from mmemu.mm.khugepaged import khugepaged_scan_referenced
from mmemu.mm.memory import pte_get, set_pte_at
from mmemu.mm.page import PG_referenced
from mmemu.mm.page_idle import page_idle_bitmap_read, page_idle_bitmap_write
from mmemu.testing import force
from tests.mm._helpers import anon_mm, labels, run_setup

KVM = {"driver": "kvm"}


def test_guest_access_before_aging_is_counted() -> None:
    out = force("aging:referenced-vs-guest-fault", [
        ("kvm", "kvm: access gfn 0"),
        ("kswapd", "kvm_age_hva"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()


def test_aging_before_the_guest_fault_counts_the_translation_from_before() -> None:
    out = force("aging:referenced-vs-guest-fault", [
        ("kswapd", "page_referenced_one: pte_unmap_unlock"),
        ("kvm", "1. mmu_seq = kvm->mmu_notifier_seq"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert "kvm_age_hva" in labels(out, "kswapd")


@pytest.mark.parametrize("api", [None, "modern"])
def test_young_no_notify_is_caught_minimally(api: str | None) -> None:
    params = dict(KVM, **({"api": api} if api else {}))
    res = mmemu.explore("aging:referenced-vs-guest-fault", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, params=params, mutants=["memory:young-no-notify"])
    f = res.failure
    assert f is not None and f.kind == "AgingMissedSecondaryReference", f
    assert f.preemptions <= 2
    assert "->clear_flush_young" in f.message


async def _guest_page(sim: Any, api: str) -> tuple[Any, Any, Any, int]:
    kernel, mm, vma = await anon_mm(sim, api=api)
    a = vma.vm_start
    pte = pte_get(mm, a)
    assert pte is not None and pte.page is not None
    set_pte_at(mm, a, pte.replace(young=False))
    pte.page.flags &= ~PG_referenced
    kvm = KvmDriver()
    assert await kvm.attach(kernel, mm) == 0
    return kvm, vma, pte.page, a


def test_idle_page_tracking_asks_the_secondary_mmu_with_clear_young() -> None:
    async def scenario(sim: Any) -> None:
        kvm, vma, page, a = await _guest_page(sim, "modern")
        await page_idle_bitmap_write(page)
        sim.check(await page_idle_bitmap_read(page), "nobody touched it: idle")
        await kvm.fault(a, False)
        await kvm.access(a)                      # only the guest touches it
        sim.check(not await page_idle_bitmap_read(page),
                  "the guest's access, reported by ->clear_young, makes it not idle")
        sim.check(not kvm.tlb.entries[0].young, "->clear_young cleared the spte's bit")

    run_setup(scenario)


def test_clear_young_does_not_exist_in_the_2_6_27_generation() -> None:
    async def scenario(sim: Any) -> None:
        kvm, vma, page, a = await _guest_page(sim, "2.6.27")
        await page_idle_bitmap_write(page)

    with pytest.raises(mmemu.ModelError, match="modern notifier API"):
        mmemu.explore(scenario, strategy="dfs", executions=1)


@pytest.mark.parametrize("api", ["2.6.27", "modern"])
def test_khugepaged_counts_a_page_only_the_guest_used_through_test_young(api: str) -> None:
    async def scenario(sim: Any) -> None:
        kvm, vma, page, a = await _guest_page(sim, api)
        sim.check(await khugepaged_scan_referenced(vma, vma.vm_start, vma.vm_end) == 0, "old")
        await kvm.fault(a, False)
        page.flags &= ~PG_referenced             # the GUP's mark_page_accessed
        sim.check(await khugepaged_scan_referenced(vma, vma.vm_start, vma.vm_end) == 1,
                  "->test_young reports the spte's accessed bit")
        sim.check(kvm.tlb.entries[0].young, "->test_young only looks")

    run_setup(scenario)
