"""KSM (write_protect_page + replace_page): the merge itself, the pin check,
the interleavings of ksm:merge-vs-guest-fault forced both ways, and its two
mutants caught with short reports."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.kernel.locking import down_read, up_read
from mmemu.mm.ksm import ksm_make_stable, ksm_merge_page
from mmemu.mm.memory import fault_in, get_user_pages, pte_get
from mmemu.mm.mmap import PAGE_SIZE
from mmemu.mm.page import PageKsm, put_page
from mmemu.testing import force
from tests.mm._helpers import anon_mm, labels, run_setup

KVM = {"driver": "kvm"}


async def _two_pages(sim: Any) -> tuple[Any, Any, int, int]:
    kernel, mm, vma = await anon_mm(sim, 2)
    return mm, vma, vma.vm_start, vma.vm_start + PAGE_SIZE


def test_merge_points_the_pte_at_the_ksm_page_and_frees_the_old_page() -> None:
    async def scenario(sim: Any) -> None:
        mm, vma, a0, a1 = await _two_pages(sim)
        kpage, page = pte_get(mm, a0).page, pte_get(mm, a1).page  # type: ignore[union-attr]
        sim.check(await ksm_make_stable(vma, kpage) == 0 and PageKsm(kpage), "stable")
        sim.check(not pte_get(mm, a0).write, "a KSM page is mapped read-only")  # type: ignore[union-attr]
        sim.check(await ksm_merge_page(mm, a1, kpage) == 0, "merge")
        p = pte_get(mm, a1)
        sim.check(p is not None and p.page is kpage and not p.write, f"pte {p!r}")
        sim.check(page.free, page.dump())
        sim.check(kpage._count.counter == 2 and kpage._mapcount.counter + 1 == 2, kpage.dump())
        # a write to a KSM page always copies (never reused, even if mapped once)
        await fault_in(mm, a1, write=True)
        p = pte_get(mm, a1)
        sim.check(p is not None and p.write and p.page is not kpage, f"after the write {p!r}")

    run_setup(scenario)


def test_a_pinned_page_is_not_merged() -> None:
    async def scenario(sim: Any) -> None:
        mm, vma, a0, a1 = await _two_pages(sim)
        kpage, page = pte_get(mm, a0).page, pte_get(mm, a1).page  # type: ignore[union-attr]
        await ksm_make_stable(vma, kpage)
        await down_read(mm.mmap_sem)
        pinned = await get_user_pages(mm, a1, False)           # O_DIRECT in flight
        await up_read(mm.mmap_sem)
        sim.check(pinned is page, "GUP")
        sim.check(await ksm_merge_page(mm, a1, kpage) != 0, "a pinned page must not be merged")
        p = pte_get(mm, a1)
        sim.check(p is not None and p.page is page and p.write, f"pte restored: {p!r}")
        assert pinned is not None
        await put_page(pinned)

    run_setup(scenario)


# ------------------------------------------------ merge vs a guest fault


def test_guest_gup_before_the_pin_check_stops_the_merge() -> None:
    out = force("ksm:merge-vs-guest-fault", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("ksmd", "W2. page_mapcount + 1 + swapped == page_count?"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    k = labels(out, "ksmd")
    assert "W2. pinned: set_pte_at" in k
    assert "R1. pte_same(*ptep, orig_pte)?" not in k


def test_guest_gup_after_the_wrprotect_retries_and_maps_the_ksm_page() -> None:
    out = force("ksm:merge-vs-guest-fault", [
        ("ksmd", "W3. set_pte_at_notify(pte_wrprotect): set_pte_at"),
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("ksmd", "R3. set_pte_at_notify(kpage): set_pte_at"),
        ("kvm", "4. mmu_notifier_retry"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    k = labels(out, "kvm")
    assert "4. spin_unlock(kvm->mmu_lock) (retry)" in k   # ->change_pte bumped the seq
    assert "kvm_set_spte_hva: seq++" in labels(out, "ksmd")


def test_replace_without_notify_frees_the_page_under_the_spte_when_forced() -> None:
    out = force("ksm:merge-vs-guest-fault", [
        ("ksmd", "ksmd: up_read(mmap_sem)"),
        ("kvm", "1. mmu_seq = kvm->mmu_notifier_seq"),
    ], params=KVM, mutants=["ksm:replace-no-notify"])
    assert out.failure is not None and out.failure.kind == "FreedPageStillMapped"
    assert "kvm gfn 1" in out.failure.message


@pytest.mark.parametrize("params,mutant,kind", [
    ({"driver": "kvm"}, "ksm:replace-no-notify", "FreedPageStillMapped"),
    ({"driver": "gru"}, "ksm:replace-no-notify", "FreedPageStillMapped"),
    ({"driver": "kvm", "api": "modern"}, "ksm:replace-no-notify", "FreedPageStillMapped"),
    ({"driver": "kvm", "api": "modern"}, "ksm:change-pte-outside-range", "KvmBug"),
    ({"driver": "hmm", "api": "modern"}, "ksm:change-pte-outside-range", "FreedPageStillMapped"),
])
def test_ksm_mutants_are_caught_minimally(params: dict[str, str], mutant: str, kind: str) -> None:
    res = mmemu.explore("ksm:merge-vs-guest-fault", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, params=params, mutants=[mutant])
    f = res.failure
    assert f is not None and f.kind == kind, f
    assert f.preemptions <= 2


def test_change_pte_outside_the_range_is_the_2_6_32_sequence_and_applies_only_to_modern() -> None:
    from mmemu.engine import get_mutant
    m = get_mutant("ksm:change-pte-outside-range")
    assert m.applies_to({"driver": "kvm", "api": "modern"})
    assert not m.applies_to({"driver": "kvm"})           # that *is* the 2.6.27 generation
    assert not m.applies_to({"driver": "sva", "api": "modern"})  # flushed under the PTL


def test_a_correct_pinning_driver_is_not_a_vacuous_run() -> None:
    """A driver that keeps a long-term page reference (a pfn cache) makes
    write_protect_page refuse every merge: correct kernel behaviour, so the
    suite's goal is the pin check itself, not the merge."""
    from pathlib import Path
    fixture = Path(__file__).resolve().parents[1] / "workload" / "fixtures.py"
    res = mmemu.explore("ksm:merge-vs-guest-fault", strategy="dfs", max_preemptions=2,
                        params={"driver": f"{fixture}:PinCacheDriverFixed"})
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert not res.coverage.unreached, res.coverage.unreached
    # the shipped KVM still has to meet both outcomes
    res = mmemu.explore("ksm:merge-vs-guest-fault", strategy="dfs", max_preemptions=2,
                        params={"driver": "kvm"})
    assert res.failure is None and not res.coverage.unreached
    assert len(res.coverage.goals) == 3
