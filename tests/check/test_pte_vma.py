"""The pte/vma checker: each rule broken on purpose (a fault without mmap_sem,
a pte to the wrong page, a writable pte the vma or COW forbids, a pte left in
a dead mm) and the correct paths silent."""

from __future__ import annotations

import __future__
import inspect
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
import pytest

from mmemu.check import INSTALLERS, boot_checked
from mmemu.kernel.locking import down_write, spin_lock, spin_unlock, up_write
from mmemu.mm.filemap import AddressSpace, add_to_page_cache
from mmemu.mm.memory import (
    fault_in,
    handle_mm_fault,
    make_migration_entry,
    mk_pte,
    pte_get,
    pte_key,
    set_pte_at,
)
from mmemu.mm.mmap import (
    PAGE_SIZE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    do_mmap,
    do_munmap,
    exit_mmap,
    find_vma,
    mm_alloc,
)
from mmemu.mm.page import PG_uptodate, get_page, put_page, unlock_page
from mmemu.mm.page_alloc import alloc_page, alloc_page_setup


def test_boot_checked_installs_the_pte_vma_and_notifier_checkers() -> None:
    assert "mmemu.check.pte_vma:install" in INSTALLERS
    assert "mmemu.check.notifier:install" in INSTALLERS


class World:
    kernel: Any
    mm: Any
    file: Any
    pages: list[Any]


async def _world(sim: Any, *, file_flags: int = VM_READ | VM_WRITE | VM_SHARED) -> World:
    """A file with two cached pages, mapped (two pages) at ``w.file_vma``,
    and an anonymous vma at ``w.anon_vma``."""
    w = World()
    w.kernel = boot_checked(sim, npages=8)
    w.file = AddressSpace(w.kernel, "file", i_size=2 * PAGE_SIZE)
    w.pages = []
    for i in range(2):
        p = alloc_page_setup()
        await add_to_page_cache(p, w.file, i)
        p.flags |= PG_uptodate  # "read" before the unlock, as page_cache_read does
        await unlock_page(p)
        await put_page(p)
        w.pages.append(p)
    w.mm = mm_alloc(w.kernel)
    await down_write(w.mm.mmap_sem)
    w.file_vma = await do_mmap(w.mm, 0, 2 * PAGE_SIZE, file_flags, file=w.file, pgoff=0)
    w.anon_vma = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(w.mm.mmap_sem)
    return w


def explore(body: Callable[..., Awaitable[None]], *others: Callable[..., Awaitable[None]],
            bound: int | None = 2, **world: Any) -> mmemu.Result:
    async def scenario(sim: Any) -> None:
        w = await _world(sim, **world)
        async with sim.cpus() as cpus:
            cpus.start(body, w, name="cpu0")
            for k, other in enumerate(others):
                cpus.start(other, w, name=f"cpu{k + 1}")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=bound), executions=5000)


# --------------------------------------------------------- outside a vma


async def _munmap(w: World) -> None:
    await down_write(w.mm.mmap_sem)
    await do_munmap(w.mm, w.anon_vma.vm_start, PAGE_SIZE)
    await up_write(w.mm.mmap_sem)


async def _fault_without_mmap_sem(w: World) -> None:
    """A fault that does not hold mmap_sem (the KVM-GUP-without-mmap_sem and
    down_write-not-waiting survivors): its vma may be unmapped under it."""
    addr = w.anon_vma.vm_start
    await mmemu.step("fault: find_vma (no mmap_sem)", reads=((w.mm, "mmap"),))
    vma = find_vma(w.mm, addr)
    if vma is not None and vma.vm_start <= addr:
        await handle_mm_fault(w.mm, vma, addr, True)


async def _fault_with_mmap_sem(w: World) -> None:
    await fault_in(w.mm, w.anon_vma.vm_start, write=True)


def test_a_fault_racing_munmap_without_mmap_sem_leaves_a_pte_outside_every_vma() -> None:
    res = explore(_fault_without_mmap_sem, _munmap)
    f = res.failure
    assert f is not None and f.kind == "PteOutsideVma", f.report() if f else res
    assert "no vma covers" in f.message and "mmap_sem" in f.message
    assert f.preemptions <= 2


# The two survivors of issue 11 this checker is for, as source mutants of the
# real code run through the real suite (notifier:munmap-vs-fault, KVM): each
# leaves a pte in no vma, and nothing else in the suite notices it.


def _mutant(fn: Any, *edits: tuple[str, str]) -> Any:
    """``fn`` recompiled from its source with each (old, new) edit made (in
    ``fn``'s module globals): a mutant of the real code."""
    src = textwrap.dedent(inspect.getsource(fn))
    for old, new in edits:
        assert old in src, f"{fn.__qualname__} no longer contains {old!r}"
        src = src.replace(old, new)
    ns: dict[str, Any] = {}
    exec(compile(src, inspect.getsourcefile(fn) or "<mutant>", "exec",
                 flags=__future__.annotations.compiler_flag, dont_inherit=True),
         fn.__globals__, ns)
    return ns[fn.__name__]


def _munmap_vs_kvm_fault(without_pte_vma: bool = False, *,
                         without_lockset: bool = True) -> mmemu.Result:
    # the lockset checker reports the GUP without mmap_sem first, as a data
    # race on the vma list (tests/check/test_lockset.py); left out here, the
    # test shows what this checker sees of it
    import mmemu.check as check
    installers = [i for i in check.INSTALLERS
                  if not (without_pte_vma and i.startswith("mmemu.check.pte_vma:"))
                  and not (without_lockset and i.startswith("mmemu.check.lockset:"))]
    saved = list(check.INSTALLERS)
    check.INSTALLERS[:] = installers
    try:
        return mmemu.explore("notifier:munmap-vs-fault", strategy=mmemu.DFS(max_preemptions=1),
                             executions=5000, params={"driver": "kvm"})
    finally:
        check.INSTALLERS[:] = saved


@pytest.mark.parametrize("mutant", ["down_write ignores readers", "KVM GUP without mmap_sem"])
def test_the_survivors_leave_a_pte_outside_every_vma(mutant: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.drivers.kvm import KvmDriver
    from mmemu.kernel import locking

    if mutant == "down_write ignores readers":
        # the engine's rw lock decides when a writer may take an
        # rw_semaphore: mutated, a writer no longer waits for readers, for
        # every rw_semaphore (munmap's mmap_sem among them)
        from mmemu.engine._locks import RwLock
        mutated = _mutant(RwLock._available, ("return self.writer is None and not self.readers",
                                              "return self.writer is None"))
        monkeypatch.setattr(locking.RwSemaphore, "_available", mutated)
    else:
        gup = _mutant(KvmDriver.gfn_to_pfn,
                      ('await down_read(mm.mmap_sem, label="2. gfn_to_pfn: down_read(mmap_sem)")',
                       "pass"),
                      ('await up_read(mm.mmap_sem, label="2. gfn_to_pfn: up_read(mmap_sem)")',
                       "pass"))
        monkeypatch.setattr(KvmDriver, "gfn_to_pfn", gup)
    f = _munmap_vs_kvm_fault().failure
    assert f is not None and f.kind == "PteOutsideVma", f
    assert "no vma covers" in f.message and f.preemptions <= 2
    # ... and only this checker sees it: without it the suite passes (bound 1)
    assert _munmap_vs_kvm_fault(without_pte_vma=True).failure is None


def test_the_same_race_under_mmap_sem_is_clean() -> None:
    res = explore(_fault_with_mmap_sem, _munmap)
    assert res.failure is None, res.failure.report()
    assert res.exhausted


# ------------------------------------------------------------ wrong page


async def _set_pte(w: World, vma: Any, address: int, page: Any, label: str, *,
                   write: bool = False) -> None:
    """A broken kernel path: maps ``page`` at ``address`` under the PTL,
    with its rmap and reference, whatever the vma says."""
    mm = w.mm
    await spin_lock(mm.page_table_lock)
    await mmemu.step(label, writes=(pte_key(mm, address),))
    from mmemu.mm.rmap import page_add_file_rmap
    await page_add_file_rmap(page)
    set_pte_at(mm, address, mk_pte(page, vma, write=write))
    await spin_unlock(mm.page_table_lock)


async def _map_wrong_index(w: World) -> None:
    """A broken file fault: maps the file's page 1 at the address of page 0."""
    await _set_pte(w, w.file_vma, w.file_vma.vm_start, w.pages[1], "buggy fault: set_pte_at")


def test_a_file_pte_must_map_the_page_at_linear_page_index() -> None:
    f = explore(_map_wrong_index, bound=0).failure
    assert f is not None and f.kind == "WrongPageInPte"
    assert "file[1]" in f.message and "index 0 (linear_page_index) is page0" in f.message


def test_a_correct_file_fault_is_clean() -> None:
    async def body(w: World) -> None:
        await fault_in(w.mm, w.file_vma.vm_start + PAGE_SIZE, write=True)
        pte = pte_get(w.mm, w.file_vma.vm_start + PAGE_SIZE)
        assert pte is not None and pte.page is w.pages[1]

    assert explore(body, bound=0).failure is None


async def _map_file_page_in_anon_vma(w: World) -> None:
    await _set_pte(w, w.anon_vma, w.anon_vma.vm_start, w.pages[0], "buggy: set_pte_at")


def test_an_anonymous_vma_maps_only_anonymous_pages() -> None:
    f = explore(_map_file_page_in_anon_vma, bound=0).failure
    assert f is not None and f.kind == "WrongPageInPte"
    assert "in an anonymous vma" in f.message


# ------------------------------------------------------------ permissions


def test_a_writable_pte_to_the_file_in_a_private_mapping_is_no_cow() -> None:
    async def body(w: World) -> None:
        await _set_pte(w, w.file_vma, w.file_vma.vm_start, w.pages[0],
                       "buggy: writable pte to the pagecache page", write=True)

    f = explore(body, bound=0, file_flags=VM_READ | VM_WRITE).failure
    assert f is not None and f.kind == "BadPtePermission"
    assert "private mapping" in f.message and "no COW" in f.message

    async def cow(w: World) -> None:  # the real private write fault copies
        await fault_in(w.mm, w.file_vma.vm_start, write=True)

    assert explore(cow, bound=0, file_flags=VM_READ | VM_WRITE).failure is None


def test_a_writable_pte_to_a_cow_shared_anonymous_page() -> None:
    async def body(w: World) -> None:
        await fault_in(w.mm, w.anon_vma.vm_start, write=True)
        pte = pte_get(w.mm, w.anon_vma.vm_start)
        assert pte is not None and pte.write
        # a broken fork: a second pte to the page, the first left writable
        mm2 = mm_alloc(w.kernel)
        await down_write(mm2.mmap_sem)
        vma2 = await do_mmap(mm2, w.anon_vma.vm_start, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm2.mmap_sem)
        vma2.anon_vma = w.anon_vma.anon_vma
        await spin_lock(mm2.page_table_lock)
        await mmemu.step("buggy copy_one_pte: page_dup_rmap, set_pte_at",
                         writes=(pte_key(mm2, vma2.vm_start), pte.page._mapcount))
        pte.page._mapcount.counter += 1
        pte.page._count.counter += 1
        set_pte_at(mm2, vma2.vm_start, pte.replace(write=False))
        await spin_unlock(mm2.page_table_lock)

    f = explore(body, bound=0).failure
    assert f is not None and f.kind == "BadPtePermission"
    assert "COW-shared page written in place" in f.message


def test_a_writable_pte_in_a_vma_without_vm_write() -> None:
    async def body(w: World) -> None:
        await down_write(w.mm.mmap_sem)
        vma = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ)
        await up_write(w.mm.mmap_sem)
        await fault_in(w.mm, vma.vm_start, write=False)
        await spin_lock(w.mm.page_table_lock)
        await mmemu.step("buggy mprotect: make it writable", writes=(pte_key(w.mm, vma.vm_start),))
        pte = pte_get(w.mm, vma.vm_start)
        assert pte is not None
        set_pte_at(w.mm, vma.vm_start, pte.replace(write=True))
        await spin_unlock(w.mm.page_table_lock)

    f = explore(body, bound=0).failure
    assert f is not None and f.kind == "BadPtePermission" and "no VM_WRITE" in f.message


# ------------------------------------------------------------- left behind


def test_a_pte_set_in_an_exited_mm_is_left_behind() -> None:
    async def body(w: World) -> None:
        await exit_mmap(w.mm)
        await get_page(w.pages[0])  # the pte's reference
        await _set_pte(w, w.file_vma, 0x1000, w.pages[0], "late: set_pte_at after exit")

    f = explore(body, bound=0).failure
    assert f is not None and f.kind == "PteLeftBehind" and "has exited" in f.message


def test_a_migration_entry_that_outlives_its_migration() -> None:
    async def body(w: World) -> None:
        await fault_in(w.mm, w.file_vma.vm_start, write=False)
        await spin_lock(w.mm.page_table_lock)
        await mmemu.step("try_to_unmap_one(migration) without remove_migration_ptes",
                         writes=(pte_key(w.mm, w.file_vma.vm_start),))
        set_pte_at(w.mm, w.file_vma.vm_start, make_migration_entry(w.pages[0], False))
        await spin_unlock(w.mm.page_table_lock)
        from mmemu.mm.rmap import page_remove_rmap
        await page_remove_rmap(w.pages[0], w.file_vma)
        await put_page(w.pages[0])

    f = explore(body, bound=0).failure
    assert f is not None and f.kind == "PteLeftBehind"
    assert "remove_migration_ptes never restored it" in f.message


def test_every_suite_of_the_main_job_is_clean_under_the_new_checkers() -> None:
    """The correct model keeps the rules in a real race (fault vs truncate,
    exhaustively): the checkers are on in every suite."""
    res = mmemu.explore("mm:fault-vs-truncate", strategy=mmemu.DFS(max_preemptions=2),
                        executions=5000)
    assert res.failure is None and res.exhausted



# ------------------------------------------- mprotect's vm_flags window
#
# mprotect_fixup stores the new vm_flags before change_protection rewrites
# the ptes (2.6.27 and today; both under mmap_sem for write), so for a few
# steps a writable pte sits in a vma without VM_WRITE.  Reclaim's
# try_to_unmap_one / page_referenced_one clear the young bit in that window
# (ptep_clear_flush_young: PTL only, no mmap_sem).  The default `mmemu fuzz`
# found the false positive this caused (fixed in 6b8f4db).

_WINDOW = "drivers=kvm vmas=s1; cpu0: fault(0,{rw}); cpu1: reclaim(0); cpu2: mprotect(0,none)"


def _young_clear_in_mprotect_window(rw: str) -> Any:
    from mmemu.testing import force
    return force("workload:run", [
        (0, f"fault(0,{rw}): kvm device file done"),
        (2, "mprotect_fixup: vma->vm_flags = newflags"),
        (1, "ptep_clear_flush_young"),
    ], params={"workload": _WINDOW.format(rw=rw)})


def test_a_young_clear_between_mprotects_vm_flags_and_change_protection_is_no_bad_pte() -> None:
    out = _young_clear_in_mprotect_window("w")
    assert out.failure is None, out.failure.report()
    events = out.trace.events
    labels = [(e.cpu, e.label) for e in events]
    # the window was really reached: the pte was young and writable, and
    # cleared after the vm_flags store, before change_pte_range
    i_flags = labels.index((2, "mprotect_fixup: vma->vm_flags = newflags"))
    i_young = labels.index((1, "ptep_clear_flush_young"))
    i_modify = next(i for i, (c, lb) in enumerate(labels)
                    if c == 2 and lb.startswith("3. change_pte_range: pte_modify"))
    assert i_flags < i_young < i_modify
    assert (0, "do_wp_page: reuse, ptep_set_access_flags") in labels[:i_flags]


def test_a_rewrite_in_that_window_that_grants_write_is_still_flagged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken aging that makes a read-only pte writable in the same window:
    the rewrite grants write in a vma without VM_WRITE, flagged at once."""
    from mmemu.mm import memory

    def buggy_test_and_clear_young(mm: Any, address: int) -> bool:
        pte = pte_get(mm, address)
        if pte is not None and pte.present:
            set_pte_at(mm, address, pte.replace(young=False, write=True))
            return True
        return False

    monkeypatch.setattr(memory, "_ptep_test_and_clear_young", buggy_test_and_clear_young)
    f = _young_clear_in_mprotect_window("r").failure
    assert f is not None and f.kind == "BadPtePermission", f
    assert "no VM_WRITE" in f.message and "'ptep_clear_flush_young' on cpu1" in f.message


# ------------------------------------------------------------- uptodate


def test_a_page_whose_read_is_in_flight_must_not_be_mapped() -> None:
    """A fault that looks the page up without waiting on its lock (the
    mutant memory:fault-unlocked: find_get_page, no lock_page) finds the
    reader's page while its read is in flight, and maps it."""

    async def reader(w: World) -> None:  # page_cache_read of index 0, slow I/O
        p = await alloc_page()
        if await add_to_page_cache(p, w.file2, 0):
            await put_page(p)  # the fault read it first
            return
        await mmemu.step("readpage: I/O in flight")
        await mmemu.step("readpage: SetPageUptodate", writes=(p.flags_key,))
        p.flags |= PG_uptodate
        await unlock_page(p)
        await put_page(p)

    async def fault(w: World) -> None:
        await fault_in(w.mm, w.vma2.vm_start, write=False)

    async def scenario(sim: Any) -> None:
        w = await _world(sim)
        w.file2 = AddressSpace(w.kernel, "file2", i_size=PAGE_SIZE)
        await down_write(w.mm.mmap_sem)
        w.vma2 = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ | VM_SHARED, file=w.file2, pgoff=0)
        await up_write(w.mm.mmap_sem)
        async with sim.cpus() as cpus:
            cpus.start(reader, w, name="reader")
            cpus.start(fault, w, name="fault")

    def run(*mutants: str) -> mmemu.Result:
        return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=2), executions=5000,
                             mutants=list(mutants))

    ok = run()
    assert ok.failure is None and ok.exhausted, ok.failure.report() if ok.failure else ok
    f = run("memory:fault-unlocked").failure
    assert f is not None and f.kind == "NotUptodatePageMapped", f
    assert "which is not PG_uptodate: its read has not finished" in f.message


def test_a_write_fault_copies_a_page_that_migration_holds_locked() -> None:
    """Found by `mmemu fuzz --seed 2 --cpus 3 --ops 4` (BadPtePermission):
    fork copies a pte while migration has it as a migration entry, the
    parent's pte is restored to the new page first, and the parent writes.
    The mapcount counts no migration entry, so it says "mapped once"; 2.6.27's
    do_wp_page reuses the page only if TestSetPageLocked succeeds, and
    migration holds the new page locked until every entry is restored, so
    the write copies.  Reusing it wrote a COW-shared page in place."""
    res = mmemu.explore("workload:run", strategy=mmemu.DFS(max_preemptions=2), executions=5000,
                        params={"workload": "drivers=kvm vmas=a1; cpu0: migrate(0); "
                                            "cpu1: fork cpufault(0,w)"})
    assert res.failure is None, res.failure.report()
    assert res.exhausted
