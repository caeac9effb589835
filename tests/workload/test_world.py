"""Workloads explored: the world's checks, several drivers on one mm, the
driver's own check() hook, and user drivers with historical bugs."""

from __future__ import annotations

import pytest

from mmemu import DFS, PCT
from mmemu.workload import explore_workload

FIX = "tests/workload/fixtures.py:"


def _dfs(wl: str, *, drivers: list[str] | None = None, mutants: tuple[str, ...] = (),
         executions: int = 3000, bound: int | None = None,
         shrink: bool = False):  # type: ignore[no-untyped-def]
    # unbounded optimal DPOR by default: on these two-CPU workloads it
    # exhausts in fewer executions than a search bounded at 2 preemptions
    # (each of its executions is a new Mazurkiewicz trace) and meets the
    # mutants' failures sooner.  The schedule is shrunk only where a test
    # looks at it (shrinking costs more than finding, here)
    return explore_workload(wl, drivers=drivers, strategy=DFS(max_preemptions=bound),
                            executions=executions, mutants=mutants, shrink=shrink)


@pytest.mark.parametrize("wl", [
    # every shipped driver, on both generations it supports, in a world with
    # every vma kind; a driver fault and access against an invalidation
    "drivers=kvm; cpu0: fault(2,w) access(2); cpu1: truncate(0)",
    "drivers=gru; cpu0: fault(4,r) access(4); cpu1: migrate(4)",
    "drivers=kvm api=modern; cpu0: fault(1,w) access(1); cpu1: munmap(0-1)",
    "drivers=hmm api=modern; cpu0: fault(0,w) access(0); cpu1: oomreap",
    "drivers=sva api=modern; cpu0: fault(3,r) access(3); cpu1: reclaim(3)",
    # a device write that meets the read-only translation a read fault on
    # another CPU installed after the access began: the hardware refuses it
    # (Driver.access reads the entry when the access runs, not before)
    "drivers=kvm vmas=a1; cpu0: access(0,w); cpu1: fault(0,r)",
    # a mirror re-inserted over page 1 only does not fault page 0 (no
    # invalidation would reach it; found by checks' fuzz run, seed 2)
    "drivers=hmm api=modern vmas=p1,p1; cpu0: remove insert(1) fault(0,w); cpu1: exit",
])
def test_correct_drivers_pass_exhaustively(wl: str) -> None:
    res = _dfs(wl, bound=1)
    assert res.ok, res.failure.report() if res.failure else ""
    assert res.exhausted


@pytest.mark.parametrize("who, mutant, words", [
    ("d1.", "gru:no-range-active", "gru va 0x10000000"),
    ("", "kvm:no-retry", "kvm gfn 0"),
])
def test_two_drivers_of_different_classes_are_both_checked(who: str, mutant: str,
                                                            words: str) -> None:
    # both notifiers are on the mm's list; the one whose protocol is broken
    # faults while a truncate invalidates
    wl = f"drivers=kvm,gru vmas=p1; cpu0: {who}fault(0,w); cpu1: truncate(0)"
    assert _dfs(wl, bound=1).ok
    res = _dfs(wl, mutants=(mutant,))
    assert res.failure is not None and res.failure.kind == "FreedPageStillMapped"
    assert words in res.failure.message, res.failure.message


@pytest.mark.parametrize("wl, mutant", [
    # the new call sites as operations: each is the one that notifies there
    ("vmas=a1; cpu0: fault(0,w) access(0,w); cpu1: fork", "memory:fork-no-notify"),
    ("vmas=a1; cpu0: fault(0,w) access(0,w); cpu1: mprotect(0,r)", "mprotect:no-notify"),
    ("vmas=a2; cpu0: fault(1,w) access(1); cpu1: ksm(1,0)", "ksm:replace-no-notify"),
    ("api=modern vmas=a2; cpu0: fault(1,w) access(1); cpu1: ksm(1,0)",
     "ksm:change-pte-outside-range"),
    # a fresh (capital) vma: two first touches add the same pagecache page
    ("vmas=S1; cpu0: fault(0,r); cpu1: cpufault(0,r)", "filemap:eexist-no-undo"),
    # two processes sharing the file: two mm_take_all_locks at once
    ("drivers=kvm,kvm@2 vmas=s1; cpu0: detach attach; cpu1: d1.detach d1.attach",
     "mmap:no-all-locks-mutex"),
    # a userptr notifier refuses the OOM reaper's non-blockable range while
    # the driver's start succeeded: the core must end the driver's range
    ("api=modern vmas=a1; cpu0: fault(0,w); cpu1: userptr oomreap",
     "mmu_notifier:nonblock-no-end"),
    ("drivers=hmm api=modern vmas=a1; cpu0: fault(0,w); cpu1: userptr oomreap",
     "mmu_notifier:itree-nonblock-no-end"),
    # a read() meets the migration of the page it looks up
    ("vmas=s1; cpu0: migrate(0); cpu1: read(0)", "migrate:newpage-unlocked"),
    # a private copy made between truncate's two unmaps (MappedBeyondEof)
    ("vmas=P1; cpu0: cpufault(0,w); cpu1: truncate(0)", "truncate:single-unmap"),
    # aging isolates and puts back a setup page: it must be on the LRU at
    # the end (LostFromLru)
    ("vmas=a1; cpu0: fault(0,w); cpu1: age(0)", "vmscan:putback-no-lru"),
    # the marking leaves the page idle although the CPU used it just before
    ("api=modern vmas=a1; cpu0: cpufault(0,r) idle(0)", "page_idle:set-idle-before-clear"),
    # two faults of one swapped-out pte (the process's swap-in after reclaim)
    ("vmas=a1; cpu0: fault(0,r); cpu1: reclaim(0) cpufault(0,w)", "memory:swap-no-pte-same"),
])
def test_new_call_sites_as_operations(wl: str, mutant: str) -> None:
    assert _dfs(wl, bound=1).ok
    res = _dfs(wl, bound=1, mutants=(mutant,))
    assert res.failure is not None, mutant


@pytest.mark.parametrize("wl, mutant", [
    # a device's pin dirties the page between reclaim's PageDirty test and
    # its freeze: the swap-cache page is freed with the data (DataLoss)
    ("vmas=a1; cpu0: dma(0); cpu1: reclaim(0)", "vmscan:dirty-before-freeze"),
    # a mirror re-inserted while a truncate's invalidation hits the other
    # one: the insert is deferred and its first read_begin waits
    ("drivers=hmm,hmm api=modern vmas=s1; cpu0: remove insert(0) fault(0,r); cpu1: truncate(0)",
     "mmu_notifier:interval-no-defer"),
])
def test_shapes_that_need_two_preemptions(wl: str, mutant: str) -> None:
    # unbounded optimal DPOR exhausts the correct model (211-521
    # executions) and meets the mutant's failure within 14-74
    res = _dfs(wl, bound=None)
    assert res.ok and res.exhausted, res.failure.report() if res.failure else ""
    res = _dfs(wl, bound=None, mutants=(mutant,))
    assert res.failure is not None, mutant


def test_migration_of_a_page_truncated_under_it_frees_it() -> None:
    # found by the fuzzer (PageLeak): unmap_and_move's "freed under us"
    # path must drop the isolation reference (putback_lru_page)
    res = _dfs("drivers=kvm vmas=s2; cpu0: migrate(1); cpu1: truncate(0)", bound=1)
    assert res.ok and res.exhausted, res.failure.report() if res.failure else ""


def test_the_fault_truncate_retry_chase_ends_under_a_fair_scheduler() -> None:
    """2.6.27's filemap_fault reads in a page that truncate_inode_pages'
    second pass takes away, and reads it in again: endless only if truncate
    wins every page-lock race (mm/memory.py FAIR_FAULT_ROUNDS).  With the
    model's fairness assumption the unbounded search of the correct model
    ends (985 executions); without it, it ended in Livelock at max_steps
    after 2,099 executions."""
    res = _dfs("vmas=S1; cpu0: cpufault(0,w); cpu1: truncate(0)", executions=3000)
    assert res.ok and res.exhausted, res.failure.report() if res.failure else ""
    assert res.coverage is not None and res.coverage.executions_reaching(
        "memory: filemap_fault gave way to truncate (the retry chase, fairness)") > 0


def test_the_same_driver_class_twice_is_two_notifiers() -> None:
    # only the second instance faults: the failure names it
    wl = "drivers=kvm,kvm vmas=a2; cpu0: d1.fault(1,w) d1.access(1); cpu1: munmap(1)"
    assert _dfs(wl).ok
    res = _dfs(wl, mutants=("kvm:no-count",))
    assert res.failure is not None
    assert "kvm#2 gfn 1" in res.failure.message, res.failure.message


def test_the_driver_check_hook_failure_is_reported_naming_the_driver() -> None:
    res = _dfs("cpu0: munmap(0-1)", drivers=[FIX + "LeakyCountDriver"])
    assert res.failure is not None and res.failure.kind == "DriverCheckFailed"
    assert "driver leakycount" in res.failure.message
    assert "1 invalidation range(s) still active" in res.failure.message
    # the correct driver's check() passes on the same workload
    assert _dfs("cpu0: munmap(0-1)", drivers=[FIX + "SeqDriver"]).ok


@pytest.mark.parametrize("driver, wl, kind, words", [
    ("PinCacheDriver", "cpu0: fault(0,w); cpu1: munmap(0)", "IncoherentTranslation",
     "pincache.pfncache va 0x10000000 maps page0"),
    ("LateReleaseDriver", "cpu0: detach; cpu1: exit", "CallbackAfterDetach",
     "->release still running"),
])
def test_historical_bug_drivers_are_caught(driver: str, wl: str, kind: str, words: str) -> None:
    res = _dfs(wl, drivers=[FIX + driver], shrink=True)
    assert res.failure is not None and res.failure.kind == kind, res.failure
    assert words in res.failure.message, res.failure.message
    assert res.failure.preemptions <= 2


@pytest.mark.parametrize("driver, wl", [
    ("PinCacheDriverFixed", "cpu0: fault(0,w); cpu1: munmap(0)"),
    ("SeqDriver", "cpu0: detach; cpu1: exit"),
    ("HwTlbDriver", "cpu0: fault(0,w) access(0); cpu1: munmap(0)"),
])
def test_their_correct_twins_pass(driver: str, wl: str) -> None:
    res = _dfs(wl, drivers=[FIX + driver])
    assert res.ok, res.failure.report() if res.failure else ""
    assert res.exhausted


def test_a_second_cache_is_watched() -> None:
    """HwTlbDriver's hardware TLB is a second ShadowTLB: a translation left in
    it after the table was zapped is caught like one in the table."""
    import tests.workload.fixtures as fx

    class Forgetful(fx.HwTlbDriver):
        name = "forgetful"

        async def zap(self, start: int, end: int, why: str) -> None:
            await fx.SeqDriver.zap(self, start, end, why)  # the hw TLB is never flushed

    from mmemu.driver import register_driver
    old = register_driver("forgetful-hwtlb", Forgetful)
    try:
        res = explore_workload("vmas=a1; cpu0: fault(0,w) access(0); cpu1: munmap(0)",
                               drivers=["forgetful-hwtlb"], strategy=PCT(3, 0), executions=200)
    finally:
        register_driver("forgetful-hwtlb", old)
    assert res.failure is not None
    assert "forgetful.hw va" in res.failure.message, res.failure.message


@pytest.mark.parametrize("order", ["kvm,EAGAIN", "EAGAIN,kvm"])
def test_a_failed_nonblockable_start_ends_exactly_the_notifiers_that_started(order: str) -> None:
    """Two notifiers on one mm; the OOM reaper's non-blockable start fails in
    one (its mutex is busy: -EAGAIN).  The other, whose start succeeded, gets
    its end at once from the core, and the failed one gets none: KVM's
    check() (its count back to 0) and EagainDev's (starts == ends) hold in
    every explored interleaving, and the failure was reached."""
    drivers = order.replace("EAGAIN", FIX + "EagainDev").split(",")
    d = drivers.index(FIX + "EagainDev")
    wl = f"api=modern vmas=a1; cpu0: d{d}.fault(0,w); cpu1: oomreap"
    res = explore_workload(wl.replace("d0.", ""), drivers=drivers,
                           strategy=DFS(max_preemptions=1), executions=3000)
    assert res.ok, res.failure.report() if res.failure else ""
    assert res.exhausted
    assert res.coverage is not None and res.coverage.executions_reaching("eagain: -EAGAIN") > 0
    assert res.coverage.executions_reaching("callback:kvm->invalidate_range_end") > 0


def test_kvm_check_wants_its_count_back_to_zero() -> None:
    from mmemu.driver import load_driver

    kvm = load_driver("kvm")()
    kvm.check()  # not registered: nothing to hold
    kvm.mn.hashed = True
    kvm.mmu_notifier_count = 1
    with pytest.raises(AssertionError, match="mmu_notifier_count is 1"):
        kvm.check()


def test_a_read_rechecks_the_end_of_file_once_its_page_is_uptodate() -> None:
    """2.6.27 do_generic_file_read reads i_size at page_ok, after the page
    was found or read in: a truncate that ran meanwhile leaves the read
    with a page it must not copy.  Both ends are reached: the page cut off
    (nothing copied) and the page copied before the truncate."""
    res = _dfs("vmas=s1; cpu0: read(0); cpu1: truncate(0)", bound=1)
    assert res.ok and res.exhausted, res.failure.report() if res.failure else ""
    assert res.coverage is not None
    assert res.coverage.executions_reaching(
        "workload: read: page beyond EOF at page_ok (nothing copied)") > 0
    assert res.coverage.executions_reaching("workload: read: copied") > 0
