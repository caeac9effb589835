"""The mmu-notifier contract checker (mmemu.check.notifier): each rule broken
on purpose -- by a kernel path that forgets or misorders its notifier call, a
broken unregister, or a driver that forgets a TLB -- and the correct paths
silent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
from mmemu.check import boot_checked
from mmemu.check.shadow_tlb import ShadowTLB, register_tlb
from mmemu.driver import Driver
from mmemu.kernel.locking import down_read, down_write, spin_lock, spin_unlock, up_read, up_write
from mmemu.kernel.rcu import srcu_read_lock, srcu_read_unlock, synchronize_srcu
from mmemu.mm import mmu_notifier as mn_mod
from mmemu.mm.memory import fault_in, get_user_pages, pte_clear, pte_get, pte_key, set_pte_at
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, exit_mmap, mm_alloc
from mmemu.mm.mmu_notifier import (
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_srcu,
    mmu_notifier_unregister,
)
from mmemu.mm.page import put_page
from mmemu.mm.rmap import page_remove_rmap


class VaDriver(Driver):
    """A minimal correct secondary MMU keyed by virtual address: faults pin
    nothing, every invalidation zaps its range (no retry protocol: the tests
    run the fault before the race)."""

    name = "vadev"
    key_name = "va"
    zap_on_start = True

    def __init__(self) -> None:
        super().__init__()
        #: a second translation cache behind the first (a hardware TLB)
        self.hw = ShadowTLB("vadev-hw", key_name="va")
        self.tlbs = [self.tlb, self.hw]
        self.hw_forgotten = False

    async def attach(self, kernel: Any, mm: Any) -> int:
        register_tlb(kernel, self.hw)
        return await super().attach(kernel, mm)

    async def fault(self, address: int, write: bool = False) -> bool:
        va = address & ~(PAGE_SIZE - 1)
        await down_read(self.mm.mmap_sem)
        page = await get_user_pages(self.mm, va, write)
        await up_read(self.mm.mmap_sem)
        if page is None:
            return False
        await mmemu.step("vadev: install", **self.tlb.install_accesses(va, page))
        self.tlb.install(va, page, writable=write)
        self.hw.install(va, page, writable=write)
        await put_page(page)
        return True

    async def _zap(self, start: int, end: int) -> None:
        for tlb in (self.tlb,) if self.hw_forgotten else (self.tlb, self.hw):
            keys = [k for k in tlb.keys() if start <= k < end]  # type: ignore[operator]
            await mmemu.step(f"vadev: zap {tlb.driver}", **tlb.zap_accesses(keys))
            for k in keys:
                tlb.zap(k)

    async def invalidate_page(self, mm: Any, address: int) -> None:
        await self._zap(address, address + PAGE_SIZE)

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        if self.zap_on_start:
            await self._zap(start, end)

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        await mmemu.step("vadev: range end")

    async def release(self, mm: Any) -> None:
        await self._zap(0, 1 << 62)


class World:
    kernel: Any
    mm: Any
    vma: Any
    addr: int
    driver: VaDriver


def explore(*bodies: Callable[[World], Awaitable[None]], bound: int | None = 2,
            driver: type[VaDriver] = VaDriver, fault: bool = True,
            write: bool = True, api: str = "2.6.27") -> mmemu.Result:
    """An mm with one anonymous page faulted in (writable) and a VaDriver
    attached that maps it; each body runs on a CPU."""

    async def scenario(sim: Any) -> None:
        w = World()
        w.kernel = boot_checked(sim, npages=8)
        w.mm = mm_alloc(w.kernel)
        await down_write(w.mm.mmap_sem)
        w.vma = await do_mmap(w.mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(w.mm.mmap_sem)
        w.addr = w.vma.vm_start
        await fault_in(w.mm, w.addr, write=True)
        w.driver = driver()
        assert await w.driver.attach(w.kernel, w.mm) == 0
        if fault:
            assert await w.driver.fault(w.addr, write)
        async with sim.cpus() as cpus:
            for k, body in enumerate(bodies):
                cpus.start(body, w, name=f"cpu{k}")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=bound), executions=5000,
                         params={"api": api})


def kind(res: mmemu.Result) -> str | None:
    return res.failure.kind if res.failure is not None else None


async def _zap_without_notifier(w: World) -> None:
    """A zap_pte_range with its invalidate_range_start/end forgotten."""
    mm, addr = w.mm, w.addr
    await spin_lock(mm.page_table_lock)
    await mmemu.step("buggy zap: ptep_get_and_clear", writes=(pte_key(mm, addr),))
    old = pte_clear(mm, addr)
    await spin_unlock(mm.page_table_lock)
    assert old is not None and old.page is not None
    await page_remove_rmap(old.page, w.vma)
    await put_page(old.page, label="buggy zap: free the page")


async def _real_zap(w: World) -> None:
    from mmemu.mm.memory import zap_page_range
    await zap_page_range(w.vma, w.addr, PAGE_SIZE)


# ------------------------------------------------------- the kernel side


def test_a_page_freed_before_any_notifier_heard_of_its_unmapping() -> None:
    # the driver does not map it (no fault): the page is freed under nobody,
    # and still the kernel broke its promise
    f = explore(_zap_without_notifier, fault=False).failure
    assert f is not None and f.kind == "PageFreedBeforeNotify", f
    assert "never reported to the notifiers of mm1" in f.message
    assert "'buggy zap: free the page'" in f.message


def test_the_real_zap_brackets_the_free() -> None:
    assert explore(_real_zap).failure is None


def test_a_range_start_after_its_own_cpu_already_cleared_a_pte() -> None:
    async def late_start(w: World) -> None:
        mm, addr = w.mm, w.addr
        await spin_lock(mm.page_table_lock)
        await mmemu.step("buggy: ptep_get_and_clear before range_start",
                         writes=(pte_key(mm, addr),))
        old = pte_clear(mm, addr)
        await spin_unlock(mm.page_table_lock)
        assert old is not None and old.page is not None
        await mmu_notifier_invalidate_range_start(mm, addr, addr + PAGE_SIZE)
        await page_remove_rmap(old.page, w.vma)
        await put_page(old.page)
        await mmu_notifier_invalidate_range_end(mm, addr, addr + PAGE_SIZE)

    f = explore(late_start).failure
    assert f is not None and f.kind == "RangeStartAfterUnmap"
    assert "must still be mapped when start runs" in f.message


async def _wrprotect(w: World, *, bracket: bool = True) -> None:
    """change_protection of the page: pte_wrprotect under the PTL, inside
    the PROTECTION_VMA bracket (or, broken, without it)."""
    mm, addr = w.mm, w.addr
    if bracket:
        await mmu_notifier_invalidate_range_start(mm, addr, addr + PAGE_SIZE,
                                                  event="PROTECTION_VMA")
    await spin_lock(mm.page_table_lock)
    await mmemu.step("change_protection: pte_wrprotect", writes=(pte_key(mm, addr),))
    pte = pte_get(mm, addr)
    assert pte is not None
    set_pte_at(mm, addr, pte.replace(write=False))
    await spin_unlock(mm.page_table_lock)
    if bracket:
        await mmu_notifier_invalidate_range_end(mm, addr, addr + PAGE_SIZE,
                                                event="PROTECTION_VMA")


async def _bracketed_wrprotect(w: World) -> None:
    await _wrprotect(w)


def test_a_write_protect_nobody_was_told_of() -> None:
    async def unbracketed(w: World) -> None:
        await _wrprotect(w, bracket=False)

    f = explore(unbracketed, fault=False).failure
    assert f is not None and f.kind == "PteChangeNotNotified"
    assert "write-protected" in f.message


def test_a_bracketed_write_protect_is_clean() -> None:
    res = explore(_bracketed_wrprotect)
    assert res.failure is None, res.failure.report()


def test_reclaims_invalidate_page_after_the_clear_is_the_2627_contract() -> None:
    """try_to_unmap_one: ptep_clear_flush_notify clears first, tells after,
    and the page stays allocated until the call returned."""
    async def reclaim(w: World) -> None:
        from mmemu.mm.rmap import try_to_unmap
        from mmemu.mm.page import lock_page, unlock_page
        pte = pte_get(w.mm, w.addr)
        assert pte is not None and pte.page is not None
        page = pte.page
        await lock_page(page)
        await try_to_unmap(page, False)
        await unlock_page(page)

    res = explore(reclaim)
    assert res.failure is None, res.failure.report()


@pytest.mark.parametrize("call,message", [
    (mmu_notifier_invalidate_range_start, "never followed by ->invalidate_range_end"),
    (mmu_notifier_invalidate_range_end, "without its ->invalidate_range_start")])
def test_a_start_never_ended_and_an_end_without_its_start(call: Any, message: str) -> None:
    async def body(w: World) -> None:
        await call(w.mm, w.addr, w.addr + PAGE_SIZE)

    f = explore(body).failure
    assert f is not None and f.kind == "UnbalancedRange" and message in f.message


# ------------------------------------------------- release and unregister


async def _broken_unregister(w: World, *, test_hashed: bool = True,
                             synchronize: bool = True) -> None:
    """mmu_notifier_unregister with one of its steps left out: the
    hlist_unhashed test (->release regardless), or synchronize_srcu (an
    issue-11 survivor: it returns while a walker may still call the
    notifier, and the driver frees it)."""
    mn, mm = w.driver.mn, w.mm
    mmn = mm.mmu_notifier_mm
    ss = mmu_notifier_srcu()
    await mmemu.step("1. hlist_unhashed(&mn->hlist)", reads=(mmn,))
    mn_mod._report(mm, "unregister_begin", mn)
    if mn.hashed or not test_hashed:
        idx = await srcu_read_lock(ss)
        await mn_mod._call(mm, mn, "release", mn.ops.release, mm)
        await srcu_read_unlock(ss, idx)
        await spin_lock(mmn.lock)
        await mmemu.step("2. hlist_del_init_rcu", writes=(mmn,))
        if mn.hashed:
            mmn.list.remove(mn)
            mn.hashed = False
        await spin_unlock(mmn.lock)
    if synchronize:
        await synchronize_srcu(ss)
    mn_mod._report(mm, "unregister_end", mn)
    # unregister returned: the driver frees the structure the notifier is in
    await mmemu.step("kfree(vadev)", writes=(mn,))


async def _unregister_no_hashed_check(w: World) -> None:
    await _broken_unregister(w, test_hashed=False)


async def _unregister_no_synchronize(w: World) -> None:
    await _broken_unregister(w, synchronize=False)


async def _exit(w: World) -> None:
    await exit_mmap(w.mm)


async def _unregister(w: World) -> None:
    await mmu_notifier_unregister(w.driver.mn, w.mm)
    await mmemu.step("kfree(vadev)", writes=(w.driver.mn,))


def test_exit_racing_unregister_may_release_twice_as_the_kernel_allows() -> None:
    res = explore(_exit, _unregister)
    assert res.failure is None, res.failure.report()
    assert res.exhausted


def test_unregister_that_releases_an_already_released_notifier() -> None:
    f = explore(_exit, _unregister_no_hashed_check).failure
    assert f is not None and f.kind == "ReleaseTwice"
    assert "already unhashed when unregister began" in f.message


async def _bracket(w: World) -> None:
    await mmu_notifier_invalidate_range_start(w.mm, w.addr, w.addr + PAGE_SIZE)
    await mmu_notifier_invalidate_range_end(w.mm, w.addr, w.addr + PAGE_SIZE)


def test_a_callback_after_unregister_returned() -> None:
    f = explore(_bracket, _unregister_no_synchronize, fault=False).failure
    assert f is not None and f.kind == "NotifierUseAfterFree"
    assert "mmu_notifier_unregister(vadev.mmu_notifier) returned" in f.message
    assert isinstance(f.exception, mn_mod.NotifierUseAfterFree)


class EveryCallback(VaDriver):
    """VaDriver with the aging and change_pte callbacks too (no-ops)."""

    name = "vadev"
    apis = ("2.6.27", "modern")

    async def clear_flush_young(self, mm: Any, address: int) -> bool:
        await mmemu.step("vadev: clear_flush_young")
        return False

    async def clear_young(self, mm: Any, start: int, end: int) -> bool:
        await mmemu.step("vadev: clear_young")
        return False

    async def test_young(self, mm: Any, address: int) -> bool:
        await mmemu.step("vadev: test_young")
        return False

    async def change_pte(self, mm: Any, address: int, page: Any) -> None:
        await mmemu.step("vadev: change_pte")


async def _walk(w: World, callback: str) -> None:
    """The kernel walker that calls ``callback`` of every notifier."""
    mm, addr = w.mm, w.addr
    if callback == "release":
        await exit_mmap(mm)
    elif callback == "invalidate_page":
        await mn_mod.mmu_notifier_invalidate_page(mm, addr)
    elif callback == "invalidate_range":
        await _bracket(w)
    elif callback == "clear_flush_young":
        await mn_mod.mmu_notifier_clear_flush_young(mm, addr)
    elif callback == "clear_young":
        await mn_mod.mmu_notifier_clear_young(mm, addr, addr + PAGE_SIZE)
    elif callback == "test_young":
        await mn_mod.mmu_notifier_test_young(mm, addr)
    elif callback == "change_pte":
        pte = pte_get(mm, addr)
        assert pte is not None
        await mn_mod.mmu_notifier_change_pte(mm, addr, pte.page)


@pytest.mark.parametrize("callback,api", [
    ("release", "2.6.27"), ("invalidate_page", "2.6.27"), ("invalidate_range", "2.6.27"),
    ("clear_flush_young", "2.6.27"), ("test_young", "2.6.27"), ("change_pte", "2.6.27"),
    ("invalidate_range", "modern"), ("clear_young", "modern")])
def test_every_callback_after_unregister_returned_is_a_use_after_free(callback: str,
                                                                      api: str) -> None:
    """A walker that read the list before an unregister without
    synchronize_srcu unhashed the notifier calls it after unregister
    returned and the driver freed it -- caught in every callback (each goes
    through mmu_notifier._call), ->release and the 2.6.27 ones included."""
    async def walker(w: World) -> None:
        await _walk(w, callback)

    f = explore(walker, _unregister_no_synchronize, driver=EveryCallback, api=api,
                bound=1).failure
    assert f is not None and f.kind == "NotifierUseAfterFree", f
    assert "mmu_notifier_unregister(vadev.mmu_notifier) returned" in f.message
    ok = explore(walker, _unregister, driver=EveryCallback, api=api, bound=1)
    assert ok.failure is None, ok.failure.report()


def test_the_real_unregister_waits_for_the_walker() -> None:
    res = explore(_bracket, _unregister, fault=False)
    assert res.failure is None, res.failure.report()


# ------------------------------------------------------------ driver side


def test_every_shadow_tlb_of_a_driver_is_checked_at_the_end() -> None:
    class ForgetsItsHardwareTlb(VaDriver):
        def __init__(self) -> None:
            super().__init__()
            self.hw_forgotten = True

    async def fail_free(w: World) -> None:
        w.kernel.free_hooks.clear()  # the free-time check would see hw too
        await _real_zap(w)

    f = explore(fail_free, driver=ForgetsItsHardwareTlb).failure
    assert f is not None and f.kind == "IncoherentTranslation", f
    assert "vadev-hw va 0x10000000" in f.message and "maps nothing" in f.message
    assert explore(_real_zap).failure is None


def test_a_writable_translation_left_after_a_write_protect() -> None:
    class NoZapOnStart(VaDriver):
        zap_on_start = False

    f = explore(_bracketed_wrprotect, driver=NoZapOnStart).failure
    assert f is not None and f.kind == "SecondaryWriteToReadOnly"
    assert "writable translation" in f.message and "is read-only" in f.message


def test_a_device_write_through_a_stale_writable_translation() -> None:
    class NoZapOnStart(VaDriver):
        zap_on_start = False

    async def wrprotect_then_write(w: World) -> None:
        await _bracketed_wrprotect(w)
        await mmemu.step("device write")
        w.driver.tlb.access(w.addr, write=True)

    f = explore(wrprotect_then_write, driver=NoZapOnStart).failure
    assert f is not None and f.kind == "SecondaryWriteToReadOnly"
    assert "written at" in f.message and "is read-only" in f.message


def test_a_device_write_through_a_read_only_translation() -> None:
    async def write(w: World) -> None:
        await mmemu.step("device write")
        w.driver.tlb.access(w.addr, write=True)

    f = explore(write, write=False).failure
    assert f is not None and f.kind == "SecondaryWriteToReadOnly"
    assert "through a read-only translation" in f.message
    ok = explore(write, write=True)
    assert ok.failure is None, ok.failure.report()
