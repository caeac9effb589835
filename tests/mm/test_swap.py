"""Reclaim of anonymous memory: add_to_swap, swap ptes, the swap cache,
do_swap_page; fork and zap of swap ptes; the race of reclaim against a CPU
fault forced both ways; the driver suite and its mutants."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.fork import dup_mm
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import PAGE_SIZE, do_munmap
from mmemu.mm.page import PG_swapcache
from mmemu.mm.swap_state import swapper_space
from mmemu.mm.swapfile import swap_count
from mmemu.mm.vmscan import lru_cache_add, reclaim_page
from mmemu.testing import force
from tests.mm._helpers import anon_mm, labels, run_setup


async def _anon_page(sim: Any) -> tuple[Any, Any, int, Any]:
    kernel, mm, vma = await anon_mm(sim)
    a = vma.vm_start
    pte = pte_get(mm, a)
    assert pte is not None and pte.page is not None
    from mmemu.mm.memory import set_pte_at
    set_pte_at(mm, a, pte.replace(young=False))  # old: reclaim may take it
    await lru_cache_add(pte.page)
    return kernel, mm, a, pte.page


def test_reclaim_swaps_an_anon_page_out_and_a_fault_swaps_it_back_in() -> None:
    async def scenario(sim: Any) -> None:
        kernel, mm, a, page = await _anon_page(sim)
        sim.check(await reclaim_page(page), "reclaimed")
        pte = pte_get(mm, a)
        sim.check(pte is not None and not pte.present and pte.swp is not None
                  and pte.swp.type == "swap", f"a swap pte: {pte!r}")
        slot = pte.swp.offset  # type: ignore[union-attr]
        sim.check(page.free and swap_count(slot) == 1, "the pte holds the only slot reference")
        sim.check(not swapper_space().page_tree, "the page left the swap cache")
        await fault_in(mm, a, write=False)
        p = pte_get(mm, a)
        sim.check(p is not None and p.present and p.page is not None and not p.write,
                  f"swapped in read-only: {p!r}")
        new = p.page  # type: ignore[union-attr]
        sim.check(new.flags & PG_swapcache and swap_count(slot) == 1
                  and swapper_space().page_tree.get(slot) is new,
                  "the swapped-in page stays in the swap cache, which holds the slot")
        sim.check(new._count.counter == 2, f"the cache's and the pte's reference: {new.dump()}")
        await fault_in(mm, a, write=True)
        p = pte_get(mm, a)
        sim.check(p is not None and p.write and p.page is new,
                  "a write reuses it: nobody else holds the slot (can_share_swap_page)")
        await down_write(mm.mmap_sem)
        await do_munmap(mm, a, PAGE_SIZE)
        await up_write(mm.mmap_sem)

    run_setup(scenario)


def test_fork_duplicates_a_swap_entry_and_munmap_frees_it() -> None:
    async def scenario(sim: Any) -> None:
        kernel, mm, a, page = await _anon_page(sim)
        await reclaim_page(page)
        slot = pte_get(mm, a).swp.offset  # type: ignore[union-attr]
        child = await dup_mm(mm)
        sim.check(swap_count(slot) == 2 and pte_get(child, a).swp.offset == slot,  # type: ignore[union-attr]
                  "both ptes hold the slot")
        await down_write(mm.mmap_sem)
        await do_munmap(mm, a, PAGE_SIZE)
        await up_write(mm.mmap_sem)
        sim.check(swap_count(slot) == 1, "the parent's zap freed its reference")
        await down_write(child.mmap_sem)
        await do_munmap(child, a, PAGE_SIZE)
        await up_write(child.mmap_sem)
        sim.check(swap_count(slot) == 0, "free_swap_and_cache freed the slot")

    run_setup(scenario)


async def _reclaim_vs_fault(sim: Any) -> None:
    kernel, mm, a, page = await _anon_page(sim)

    async def fault() -> None:
        await fault_in(mm, a, write=False)

    async with sim.cpus() as cpus:
        cpus.start(reclaim_page, page, name="kswapd")
        cpus.start(fault, name="fault")
    pte = pte_get(mm, a)
    sim.check(pte is not None and pte.present, f"after the fault the pte is {pte!r}")
    p = pte.page  # type: ignore[union-attr]
    slot = p.private if p is not None and p.flags & PG_swapcache else None
    sim.check(slot is None or swapper_space().page_tree.get(slot) is p,
              "a swap cache page is in the swap cache at its slot")
    expected = 1 + (slot is not None)
    sim.check(p is not None and p._count.counter == expected,
              f"page refs: {p.dump() if p else None}, expected {expected}")


def test_reclaim_vs_a_cpu_fault_passes_exhaustively() -> None:
    res = mmemu.explore(_reclaim_vs_fault, strategy=mmemu.DFS(max_preemptions=2),
                        executions=20_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions > 10


def test_fault_on_the_swap_pte_before_the_free_keeps_the_page() -> None:
    """do_swap_page's lookup reference makes the freeze fail."""
    out = force(_reclaim_vs_fault, [
        ("kswapd", "5. swap_duplicate; set_pte_at(swp_entry_to_pte)"),
        ("fault", "2. page_cache_get_speculative"),
        ("kswapd", "A. page_freeze_refs"),
    ])
    assert out.failure is None, out.failure.report()
    k = labels(out, "kswapd")
    assert "cannot_free: spin_unlock(tree_lock)" in k or \
        "cannot_free: spin_unlock(swapper_space.tree_lock)" in k
    assert "C. free the page (free_hot_cold_page)" not in k


def test_fault_after_the_free_reads_the_slot_into_a_new_page() -> None:
    out = force(_reclaim_vs_fault, [
        ("kswapd", "C. free the page (free_hot_cold_page)"),
        ("fault", "handle_pte_fault: entry = *pte"),
    ])
    assert out.failure is None, out.failure.report()
    f = labels(out, "fault")
    assert "read_swap_cache_async: alloc_page_vma" in f
    assert "swap_readpage: SetPageUptodate (the I/O is not modelled)" in f


# (the mutant matrix of tests/cli/test_main_jobs.py runs every mutant the
# suite claims; this one is the cheapest to find)
@pytest.mark.parametrize("params,mutant,kind", [
    ({"driver": "sva", "api": "modern"}, "sva:no-flush", "FreedPageStillMapped"),
])
def test_driver_mutants_are_caught_by_the_swap_suite(params: dict[str, str], mutant: str,
                                                     kind: str) -> None:
    res = mmemu.explore("swap:reclaim-anon-vs-guest-fault",
                        strategy=mmemu.DFS(max_preemptions=2), executions=100_000,
                        params=params, mutants=[mutant])
    f = res.failure
    assert f is not None and f.kind == kind, f
    assert f.preemptions <= 2


def test_the_swap_suite_frees_the_page_in_some_execution() -> None:
    """Not vacuous: with KVM some execution really swaps the page out."""
    out = force("swap:reclaim-anon-vs-guest-fault", [
        ("kswapd", "C. free the page (free_hot_cold_page)"),
        ("kvm", "1. mmu_seq = kvm->mmu_notifier_seq"),
    ], params={"driver": "kvm"})
    assert out.failure is None, out.failure.report()
    assert "A. kvm_unmap_hva" in labels(out, "kswapd")
