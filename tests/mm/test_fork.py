"""fork (dup_mmap / copy_page_range) and the COW fault against a secondary
MMU: the copy itself, the interleavings the protocol comments name forced
both ways, and the two mutants caught with short reports."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.check import boot_checked
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.fork import dup_mm
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, mm_alloc
from mmemu.mm.filemap import AddressSpace
from mmemu.testing import force
from tests.mm._helpers import labels, run_setup


# ------------------------------------------------------------- the copy


def test_fork_write_protects_a_cow_pte_in_both_and_shares_the_page() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8)
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start, write=True)        # page 0: anon, writable
        before = pte_get(mm, vma.vm_start)
        assert before is not None and before.write and before.page is not None
        page = before.page
        child = await dup_mm(mm)
        p, c = pte_get(mm, vma.vm_start), pte_get(child, vma.vm_start)
        sim.check(p is not None and not p.write and p.page is page, f"parent pte {p!r}")
        sim.check(c is not None and not c.write and not c.young and c.page is page,
                  f"child pte {c!r}")
        sim.check(page._count.counter == 2 and page._mapcount.counter + 1 == 2, page.dump())
        sim.check(pte_get(child, vma.vm_start + PAGE_SIZE) is None, "nothing to copy at page 1")
        (cvma,) = child.vmas()
        sim.check(cvma.anon_vma is vma.anon_vma and cvma in vma.anon_vma.head,
                  "the child's vma joins the parent's anon_vma (2.6.27: no anon_vma chains)")
        # the parent's write now copies: the child keeps the old page
        await fault_in(mm, vma.vm_start, write=True)
        p2 = pte_get(mm, vma.vm_start)
        sim.check(p2 is not None and p2.write and p2.page is not page, f"after COW {p2!r}")
        sim.check(page._count.counter == 1 and pte_get(child, vma.vm_start).page is page,
                  page.dump())

    run_setup(scenario)


def test_fork_copies_no_pte_of_a_vma_without_anonymous_pages() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8)
        mm = mm_alloc(kernel)
        mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_SHARED, file=mapping, pgoff=0)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start)
        child = await dup_mm(mm)
        sim.check(pte_get(child, vma.vm_start) is None, "the child faults file pages itself")
        (cvma,) = child.vmas()
        sim.check(cvma in mapping.i_mmap, "the child's vma is on the file's i_mmap")

    run_setup(scenario)


# ----------------------------------------------- fork vs a guest write fault

KVM = {"driver": "kvm"}


def test_guest_gup_before_the_copy_retries_on_the_count_and_cows() -> None:
    """F2 before 3, F3 between 1 and 5: count != 0, retry, GUP(write) COWs."""
    out = force("cow:fork-vs-guest-write", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("fork", "B. kvm->mmu_notifier_count++"),
        ("kvm", "4. mmu_notifier_retry"),
        ("fork", "C. kvm->mmu_notifier_count--"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    k = labels(out, "kvm")
    assert "4. spin_unlock(kvm->mmu_lock) (retry)" in k
    assert "4. retry: mmu_notifier_count != 0" in k      # busy: wait for range_end
    retry = k.index("4. spin_unlock(kvm->mmu_lock) (retry)")
    assert "do_wp_page: alloc_page_vma" in k[retry:]     # the second GUP broke the COW
    assert k[-1].startswith("kvm: access")


def test_guest_gup_before_the_copy_and_check_after_it_retries_on_the_seq() -> None:
    """F2 before 3, F3 after 5: the seq changed, retry."""
    out = force("cow:fork-vs-guest-write", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("fork", "C. kvm->mmu_notifier_count--"),
        ("kvm", "4. mmu_notifier_retry"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    k = labels(out, "kvm")
    assert "4. spin_unlock(kvm->mmu_lock) (retry)" in k
    assert "4. retry: mmu_notifier_count != 0" not in k  # count was 0: a plain seq retry
    assert "do_wp_page: alloc_page_vma" in k


def test_fork_without_the_bracket_leaves_a_writable_translation_when_forced() -> None:
    out = force("cow:fork-vs-guest-write", [
        ("kvm", "2. gfn_to_pfn: up_read(mmap_sem)"),
        ("fork", "dup_mmap: up_write(oldmm->mmap_sem)"),
        ("kvm", "4. mmu_notifier_retry"),
    ], params=KVM, mutants=["memory:fork-no-notify"])
    # the range_start contract checker (mmemu.check.notifier) names the
    # write protection no notifier was told of
    assert out.failure is not None and out.failure.kind == "PteChangeNotNotified"
    assert "write-protected" in out.failure.message


@pytest.mark.parametrize("params", [{"driver": "kvm"}, {"driver": "gru"},
                                    {"driver": "hmm", "api": "modern"}])
def test_fork_no_notify_is_caught_minimally(params: dict[str, str]) -> None:
    res = mmemu.explore("cow:fork-vs-guest-write", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, params=params, mutants=["memory:fork-no-notify"])
    f = res.failure
    # PteChangeNotNotified where nothing told the notifiers; modern HMM is
    # "told" by fork's arch_invalidate_secondary_tlbs, which an interval
    # notifier does not get, so the end check finds its writable translation
    assert f is not None and f.kind in ("PteChangeNotNotified", "SecondaryWriteToReadOnly"), f
    assert f.preemptions <= 2
    assert "write-protected" in f.message or "never reached driver" in f.message


# ------------------------------------------ the COW fault vs a guest read


def test_guest_maps_the_old_page_first_and_the_cow_zaps_it() -> None:
    """F4 before 2: ptep_clear_flush_notify's invalidate_page zaps the spte."""
    out = force("cow:wp-fault-vs-guest-read", [
        ("kvm", "6. kvm_release_pfn_clean"),
        ("parent", "ptep_clear_flush"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    p = labels(out, "parent")
    assert p.index("A. kvm_unmap_hva") > p.index("ptep_clear_flush")


def test_cow_first_then_the_guest_maps_the_new_page() -> None:
    out = force("cow:wp-fault-vs-guest-read", [
        ("parent", "do_wp_page: page_cache_release(old_page)"),
        ("kvm", "1. mmu_seq = kvm->mmu_notifier_seq"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert "A. kvm_unmap_hva" in labels(out, "parent")  # nothing mapped yet: a no-op zap
    assert "do_wp_page: alloc_page_vma" not in labels(out, "kvm")


def test_cow_without_notify_leaves_the_guest_on_the_old_page_when_forced() -> None:
    out = force("cow:wp-fault-vs-guest-read", [
        ("kvm", "6. kvm_release_pfn_clean"),
        ("parent", "ptep_clear_flush"),
    ], params=KVM, mutants=["memory:cow-no-notify"])
    assert out.failure is not None and out.failure.kind == "PteChangeNotNotified"
    assert "A. kvm_unmap_hva" not in labels(out, "parent")


@pytest.mark.parametrize("params", [{"driver": "kvm"}, {"driver": "kvm", "api": "modern"},
                                    {"driver": "gru"}, {"driver": "hmm", "api": "modern"}])
def test_cow_no_notify_is_caught_minimally(params: dict[str, str]) -> None:
    res = mmemu.explore("cow:wp-fault-vs-guest-read", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, params=params, mutants=["memory:cow-no-notify"])
    f = res.failure
    assert f is not None and f.kind in ("PteChangeNotNotified", "IncoherentTranslation"), f
    assert f.preemptions <= 2
    assert "never reported to the notifiers" in f.message or "never reached driver" in f.message


def test_the_mutants_do_not_apply_to_an_iotlb_flushed_with_the_cpu_tlb() -> None:
    from mmemu.engine import get_mutant
    for name in ("memory:fork-no-notify", "memory:cow-no-notify"):
        assert not get_mutant(name).applies_to({"driver": "sva", "api": "modern"})
        assert get_mutant(name).applies_to({"driver": "kvm"})


# ------------------------------------ a private COW copy vs vmtruncate


def test_cow_copy_made_between_the_unmaps_is_zapped_by_the_second() -> None:
    out = force("mm:private-cow-vs-truncate", [
        ("fault", "2. filemap_fault: recheck i_size under the page lock"),
        ("truncate", "unmap_mapping_range: spin_unlock(i_mmap_lock)"),
        ("fault", "4. set_pte_at"),
        ("truncate", "remove_from_page_cache"),
    ])
    assert out.failure is None, out.failure.report()
    t = labels(out, "truncate")
    zaps = [x for x in t if x.startswith("zap_pte_range: ptep_get_and_clear")]
    assert len(zaps) == 1 and t.index(zaps[0]) > t.index("remove_from_page_cache")


def test_truncate_before_the_fault_rechecks_i_size_under_the_page_lock() -> None:
    out = force("mm:private-cow-vs-truncate", [
        ("fault", "filemap_fault: i_size_read"),
        ("truncate", "i_size_write(inode, offset)"),
        ("fault", "2. filemap_fault: recheck i_size under the page lock"),
    ])
    assert out.failure is None, out.failure.report()
    assert "4. set_pte_at" not in labels(out, "fault")


def test_single_unmap_leaves_the_copy_mapped_and_is_caught_minimally() -> None:
    res = mmemu.explore("mm:private-cow-vs-truncate", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, mutants=["truncate:single-unmap"])
    f = res.failure
    assert f is not None and f.kind == "InvariantViolation"
    assert f.preemptions <= 2 and "a private copy" in f.message
