"""The counters checker: _mapcount against the ptes, the rss counters
against the page tables, map_count against the vma list -- each broken on
purpose (a raw broken path, and mutants of the real code), and the correct
paths silent, migration included (a migration entry keeps its rss count)."""

from __future__ import annotations

import inspect
from typing import Any

import mmemu
import pytest

from mmemu.check import INSTALLERS, boot_checked
from mmemu.kernel.locking import down_write, spin_lock, spin_unlock, up_write
from mmemu.mm.memory import fault_in, pte_get, pte_key, set_pte_at
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, do_munmap, mm_alloc

from tests.check.test_pte_vma import _mutant


def test_boot_checked_installs_the_counters_checker() -> None:
    assert "mmemu.check.counters:install" in INSTALLERS


def run(body: Any, *, mutate: tuple[Any, str, tuple[str, str]] | None = None) -> mmemu.Result:
    """``body(kernel, mm)`` on a booted, checked kernel, as one CPU."""

    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8)
        mm = mm_alloc(kernel)
        async with sim.cpus() as cpus:
            cpus.start(body, kernel, mm, name="cpu0")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)


async def _anon_vma(mm: Any, npages: int = 1) -> Any:
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, npages * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    return vma


async def _fault_and_unmap(kernel: Any, mm: Any) -> None:
    vma = await _anon_vma(mm, 2)
    await fault_in(mm, vma.vm_start, write=True)
    await fault_in(mm, vma.vm_start + PAGE_SIZE, write=False)
    await down_write(mm.mmap_sem)
    await do_munmap(mm, vma.vm_start + PAGE_SIZE, PAGE_SIZE)
    await up_write(mm.mmap_sem)


def _fault_and_unmap_mutated(monkeypatch: pytest.MonkeyPatch, fn: Any,
                             edit: tuple[str, str]) -> Any:
    """The failure of ``_fault_and_unmap`` with ``fn`` (real code) edited."""
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    return run(_fault_and_unmap).failure


def test_faults_and_munmap_keep_every_counter() -> None:
    res = run(_fault_and_unmap)
    assert res.failure is None, res.failure.report()


# ------------------------------------------------------------ _mapcount


def test_a_mapcount_with_no_pte_is_flagged() -> None:
    async def body(kernel: Any, mm: Any) -> None:
        vma = await _anon_vma(mm)
        await fault_in(mm, vma.vm_start, write=True)
        pte = pte_get(mm, vma.vm_start)
        assert pte is not None and pte.page is not None
        page = pte.page
        # a broken copy_one_pte: write-protects the parent's pte, then
        # page_dup_rmap and get_page, but no pte in the child
        await spin_lock(mm.page_table_lock)
        await mmemu.step("buggy copy_one_pte: page_dup_rmap without set_pte_at",
                         writes=(pte_key(mm, vma.vm_start), page._mapcount, page._count))
        set_pte_at(mm, vma.vm_start, pte.replace(write=False))
        page._mapcount.counter += 1
        page._count.counter += 1
        await spin_unlock(mm.page_table_lock)

    f = run(body).failure
    assert f is not None and f.kind == "MapcountMismatch", f
    assert "_mapcount 1 (2 mapping(s)) but 1 present pte(s) map it (mm1@" in f.message


def test_a_pte_cleared_without_page_remove_rmap_is_flagged() -> None:
    async def body(kernel: Any, mm: Any) -> None:
        vma = await _anon_vma(mm)
        await fault_in(mm, vma.vm_start, write=True)
        # a broken zap: the pte goes, its reference and rss with it, but
        # the mapcount stays (the page would be freed "still mapped")
        from mmemu.mm.memory import pte_clear
        await spin_lock(mm.page_table_lock)
        await mmemu.step("buggy zap: pte_clear, no page_remove_rmap",
                         writes=(pte_key(mm, vma.vm_start),))
        pte_clear(mm, vma.vm_start)
        mm.anon_rss -= 1
        await spin_unlock(mm.page_table_lock)

    f = run(body).failure
    assert f is not None and f.kind == "MapcountMismatch", f
    assert "but 0 present pte(s) map it (none)" in f.message


# ------------------------------------------------------------------ rss


def test_do_anonymous_page_without_inc_mm_counter_is_bad_rss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.mm import memory
    f = _fault_and_unmap_mutated(monkeypatch, memory.do_anonymous_page,
                                 ("mm.anon_rss += 1", "pass"))
    assert f is not None and f.kind == "BadRssCounter", f
    assert "mm1 (live): anon_rss is -1, but its page tables map 1" in f.message
    assert "Bad rss-counter state" in f.message


def test_an_exited_mm_with_a_count_left_is_bad_rss() -> None:
    async def body(kernel: Any, mm: Any) -> None:
        from mmemu.mm.mmap import exit_mmap
        vma = await _anon_vma(mm)
        await fault_in(mm, vma.vm_start, write=True)
        mm.file_rss += 1  # a broken path counted a page it never mapped
        await exit_mmap(mm)

    f = run(body).failure
    assert f is not None and f.kind == "BadRssCounter", f
    assert "mm1 (exited): file_rss is 1, but its page tables map 0" in f.message


def test_migration_keeps_the_rss_counters() -> None:
    """A migration entry keeps its page's count (2.6.27's try_to_unmap_one
    and remove_migration_pte); before the fix the model decremented it at
    unmap and never gave it back."""
    res = mmemu.explore("migrate:fault-vs-migration", strategy=mmemu.DFS(max_preemptions=0),
                        executions=50)
    assert res.failure is None, res.failure.report()


def test_try_to_unmap_one_dropping_rss_for_a_migration_entry_is_bad_rss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's old rule (decrement for a migration entry too), as a mutant."""
    from mmemu.mm import rmap
    mutated = _mutant(rmap.__try_to_unmap_one, ("        if not migration:\n", "        if True:\n"))
    monkeypatch.setattr(rmap.__try_to_unmap_one, "__code__", mutated.__code__)
    f = mmemu.explore("migrate:fault-vs-migration", strategy=mmemu.DFS(max_preemptions=0),
                      executions=50).failure
    assert f is not None and f.kind == "BadRssCounter", f
    assert "file_rss is 0, but its page tables map 1" in f.message


# ------------------------------------------------------------ map_count


def test_link_list_without_map_count_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.mm import mmap
    f = _fault_and_unmap_mutated(monkeypatch, mmap._link_list,
                                 ("    mm.map_count += 1\n", "    pass\n"))
    assert f is not None and f.kind == "BadMapCount", f
    assert "mm1->map_count is -1 but its vma list holds 1 vma(s)" in f.message
    assert "validate_mm" in f.message


def test_a_broken_vm_next_chain_is_flagged() -> None:
    async def body(kernel: Any, mm: Any) -> None:
        vma = await _anon_vma(mm)
        await _anon_vma(mm)
        vma.vm_next = None  # a broken __vma_link_list: the tree has it, the list not

    f = run(body).failure
    assert f is not None and f.kind == "BadMapCount", f
    assert "vm_next chain from mm->mmap is [" in f.message


def test_source_of_the_mutated_lines_is_still_there() -> None:
    """The mutants above edit real lines; a rename must update them."""
    from mmemu.mm import memory, mmap, rmap
    assert "mm.anon_rss += 1" in inspect.getsource(memory.do_anonymous_page)
    assert "mm.map_count += 1" in inspect.getsource(mmap._link_list)
    assert "if not migration:" in inspect.getsource(rmap.__try_to_unmap_one)


# -------------------------------------------------------------- nrpages


def test_an_nrpages_that_drifted_is_flagged() -> None:
    async def body(kernel: Any, mm: Any) -> None:
        from mmemu.mm.filemap import AddressSpace
        mapping = AddressSpace(kernel, "file", i_size=PAGE_SIZE)
        mapping.nrpages += 1  # a broken add_to_page_cache: counted, never inserted

    f = run(body).failure
    assert f is not None and f.kind == "BadNrPages", f
    assert "file->nrpages is 1 but its radix tree holds 0 page(s)" in f.message


def test_swap_cache_nrpages_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """__delete_from_swap_cache without its nrpages update (the source
    mutant swap_state:__delete_from_swap_cache:seq-update:1)."""
    from mmemu.mm import swap_state

    async def body(kernel: Any, mm: Any) -> None:
        await _swap_out(kernel, mm)

    assert run(body).failure is None
    fn = swap_state.__delete_from_swap_cache
    monkeypatch.setattr(fn, "__code__", _mutant(fn, ("    sp.nrpages -= 1\n", "")).__code__)
    f = run(body).failure
    assert f is not None and f.kind == "BadNrPages", f
    assert "swapper_space->nrpages is 1 but its radix tree holds 0" in f.message


# ------------------------------------------------------------- swap_map


async def _swap_out(kernel: Any, mm: Any) -> tuple[Any, int]:
    """An anonymous page written, then swapped out: its pte holds slot
    ``offset``, whose count (1) is that pte's."""
    from mmemu.mm.vmscan import lru_cache_add, reclaim_page
    vma = await _anon_vma(mm)
    await fault_in(mm, vma.vm_start, write=True)
    pte = pte_get(mm, vma.vm_start)
    assert pte is not None and pte.page is not None
    set_pte_at(mm, vma.vm_start, pte.replace(young=False))
    await lru_cache_add(pte.page)
    assert await reclaim_page(pte.page)
    swp = pte_get(mm, vma.vm_start)
    assert swp is not None and swp.swp is not None
    return vma, swp.swp.offset


def test_swap_counts_of_the_correct_paths_are_silent() -> None:
    """Swap-out, swap-in by a read (the page stays in the swap cache with
    its slot), and a zap of the pte: the counts agree at every end."""
    from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise

    async def body(kernel: Any, mm: Any) -> None:
        vma, _ = await _swap_out(kernel, mm)
        await fault_in(mm, vma.vm_start, write=False)

    async def zapped(kernel: Any, mm: Any) -> None:
        vma, _ = await _swap_out(kernel, mm)
        assert await sys_madvise(mm, vma.vm_start, PAGE_SIZE, MADV_DONTNEED) == 0

    assert run(body).failure is None
    assert run(zapped).failure is None


def test_a_leaked_swap_slot_reference_is_flagged() -> None:
    """A zap that forgets free_swap_and_cache: the slot stays in use with
    no swap pte and no swap-cache page."""
    from mmemu.mm.memory import pte_clear

    async def body(kernel: Any, mm: Any) -> None:
        vma, _ = await _swap_out(kernel, mm)
        await spin_lock(mm.page_table_lock)
        await mmemu.step("zap without free_swap_and_cache", writes=(pte_key(mm, vma.vm_start),))
        pte_clear(mm, vma.vm_start)
        await spin_unlock(mm.page_table_lock)

    f = run(body).failure
    assert f is not None and f.kind == "BadSwapCount", f
    assert "swap slot 1 has count 1 but 0 swap pte(s) (none) and no page in the swap " \
           "cache hold it: a slot reference was never dropped" in f.message


def test_a_swap_pte_holding_a_freed_slot_is_flagged() -> None:
    """A slot reference dropped twice: the pte still holds swap entry 1,
    whose slot is free."""
    from mmemu.mm.swapfile import swap_free

    async def body(kernel: Any, mm: Any) -> None:
        _, offset = await _swap_out(kernel, mm)
        await swap_free(offset)

    f = run(body).failure
    assert f is not None and f.kind == "BadSwapCount", f
    assert "swap slot 1 has count 0 but 1 swap pte(s)" in f.message
    assert "a swap pte holds a slot reference that was dropped" in f.message


# ------------------------------------------------------------ rmap lists


async def _file_vma_fault_and_unmap(kernel: Any, mm: Any) -> None:
    """A private file vma (on i_mmap) written once (an anon_vma), then split
    by a partial munmap: the correct paths keep both lists right."""
    from mmemu.races.mm import file_with_pages
    mapping, _ = await file_with_pages(kernel, "file", 2)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    await fault_in(mm, vma.vm_start, write=True)
    await down_write(mm.mmap_sem)
    await do_munmap(mm, vma.vm_start + PAGE_SIZE, PAGE_SIZE)
    await up_write(mm.mmap_sem)


def test_the_rmap_lists_of_the_correct_paths_are_silent() -> None:
    assert run(_file_vma_fault_and_unmap).failure is None
    assert run(_fault_and_unmap).failure is None


def test_an_unmapped_vma_left_on_i_mmap_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.mm import memory
    monkeypatch.setattr(memory.free_pgtables, "__code__", _mutant(
        memory.free_pgtables, ("            await unlink_file_vma(vma)\n", "")).__code__)
    f = run(_file_vma_fault_and_unmap).failure
    assert f is not None and f.kind == "BadRmapList", f
    assert "is on file->i_mmap but it is on no mm's vma list any more" in f.message


def test_a_split_half_without_its_anon_vma_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    # vma_adjust linking the new half on anon_vma->head without setting
    # insert->anon_vma (the mutation benchmark's mmap:vma_adjust:store:1)
    from mmemu.mm import mmap
    monkeypatch.setattr(mmap.vma_adjust, "__code__", _mutant(
        mmap.vma_adjust, ("                insert.anon_vma = anon_vma\n", "")).__code__)
    f = run(_file_vma_fault_and_unmap).failure
    assert f is not None and f.kind == "BadRmapList", f
    assert "anon_vma1->head but it points to None" in f.message


def test_a_vma_missing_from_its_anon_vma_is_flagged() -> None:
    async def body(kernel: Any, mm: Any) -> None:
        vma = await _anon_vma(mm)
        await fault_in(mm, vma.vm_start, write=True)
        assert vma.anon_vma is not None
        vma.anon_vma.head.remove(vma)  # a broken anon_vma_prepare: never linked

    f = run(body).failure
    assert f is not None and f.kind == "BadRmapList", f
    assert "is on anon_vma1->head 0 times: its ptes are invisible" in f.message
