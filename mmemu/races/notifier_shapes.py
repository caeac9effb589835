"""Race suites for mmu notifiers, second series: the shapes the first series
(mmemu.races.notifier) never builds -- a driver that goes away while the mm
exits or invalidates, two notifiers on one mm, two registrants on two mms,
nested invalidations of a multi-page range, and a signal that interrupts
mm_take_all_locks.

Emulates: mm/mmu_notifier.c (mmu_notifier_unregister, __mmu_notifier_release,
mn_hlist_invalidate_range_start's -EAGAIN path, mn_itree_invalidate),
mm/mmap.c (mm_take_all_locks: mm_all_locks_mutex, the -EINTR path), and
their callers in mm/memory.c, mm/truncate.c, mm/madvise.c, mm/oom_kill.c,
with each installed driver under each notifier API generation it supports
(``DRIVER_AXES`` of mmemu.races.notifier).

What every suite checks, besides the checkers every suite runs (no page
freed while a driver maps it, no access through a stale translation, page
and lock state): no callback runs through a notifier after its driver's
``detach`` returned and the driver freed it (NotifierUseAfterFree), and at
the end each translation left maps what the CPU pte maps.
"""

from __future__ import annotations

from typing import Any

import attrs

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import Driver, guarded, new_driver, supports_api
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._registry import set_mutant_applies
from mmemu.engine._execution import current_simulation, reach, step, touch
from mmemu.kernel.locking import down_read, down_write, up_read, up_write
from mmemu.kernel.signal import current, send_sig
from mmemu.mm.filemap import AddressSpace
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.memory import fault_in, pte_get
from mmemu.mm.mmap import (
    EINTR,
    PAGE_SIZE,
    TASK_SIZE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    do_mmap,
    exit_mmap,
    mm_alloc,
)
from mmemu.mm.mmu_notifier import (
    EAGAIN,
    MmuIntervalNotifier,
    MmuIntervalNotifierOps,
    MmuNotifier,
    MmuNotifierOps,
    MmuNotifierRange,
    NotifierUseAfterFree,
    itree_key,
    list_key as notifier_list_key,
    mmu_interval_notifier_insert,
    mmu_notifier_range_blockable,
    mmu_notifier_register,
)
from mmemu.mm.oom_kill import oom_reap_task
from mmemu.mm.truncate import vmtruncate
from mmemu.mm.vmscan import reclaim_page
from mmemu.races._filters import driver_class
from mmemu.races.mm import file_with_pages
from mmemu.races.notifier import DRIVER_AXES, _hears_exit, driver_of, guest, guest_fault

MODERN_AXES: dict[str, Any] = {"api": ["modern"], "driver": DRIVER_AXES["driver"]}


class SignalIgnored(InvariantViolation):
    """mm_take_all_locks ran to the end although a signal was pending before
    it started: it should have returned -EINTR."""


# --------------------------------------------------------- the notifier watch


UNHASHED_CALL = ("a walker's callback was still running when the notifier was unhashed "
                 "(unregister must wait for it)")
RELEASED_TWICE = "->release called twice (by exit_mmap and by mmu_notifier_unregister)"
DRIVER_FREED = "the driver detached and freed what it owns"
REMOVE_WAITED = "mmu_interval_notifier_remove: waits for the invalidation in progress"
NESTED = "two invalidations of one mm in flight at once"
NONBLOCK_ENDED = "mmu_notifier: -EAGAIN: ->invalidate_range_end of the notifiers that started"
ITREE_NONBLOCK_ENDED = ("mmu_notifier: -EAGAIN: mn_itree_inv_end of the failed interval "
                        "invalidation")
ALL_LOCKS_WAITED = "mm_take_all_locks: waits for mm_all_locks_mutex (another registrant)"
EINTR_AFTER_LOCKS = "mm_take_all_locks: -EINTR after taking some of the locks"
ATTACH_EINTR = "the driver's attach failed with -EINTR"
REGISTERED = "the driver registered and faulted"


@attrs.define(eq=False)
class NotifierWatch:
    """KASAN for one driver's notifiers: which of their callbacks are running,
    how often each was called, and whether the driver freed them.

    ``watch(driver)`` wraps the callbacks of every notifier the driver owns on
    its mm (hlist notifiers and interval notifiers alike).  A callback that
    starts after the driver freed its notifier, or a free while a callback
    runs, is ``NotifierUseAfterFree``.  The watch itself is the access key:
    every callback entry and exit reads it and the free writes it, so the
    search orders the free against each callback, and leaves callbacks on
    different CPUs unordered (the watch's own bookkeeping is instrumentation,
    not kernel state).
    """

    driver: Driver
    running: list[str] = attrs.field(factory=list)
    calls: dict[str, int] = attrs.field(factory=dict)
    freed: bool = False
    #: the structures the driver frees itself once detach has returned
    owned: list[Any] = attrs.field(factory=list)
    #: the CPU that runs the driver's detach
    detacher: Any = None

    @property
    def __mmemu_name__(self) -> str:
        return f"{self.driver.name}.notifier"

    def _wrap(self, ops: Any, field: str, hashed: Any, list_key: Any) -> None:
        fn = getattr(ops, field)
        if fn is None:
            return

        async def watched(*args: Any) -> Any:
            touch(reads=(self,))
            if self.freed:
                current_simulation().fail(NotifierUseAfterFree(
                    f"{field} of {self.driver.name} called after the driver freed its notifier "
                    f"(mmu_notifier_unregister / mmu_interval_notifier_remove had returned)"))
            n = self.calls[field] = self.calls.get(field, 0) + 1
            if field == "release" and n == 2:
                reach(RELEASED_TWICE)
            self.running.append(field)
            ret = await fn(*args)
            # the callback's last step: it reads whether the notifier is
            # still on its list (so the search orders the unhash against it)
            touch(reads=(list_key, self))
            self.running.remove(field)
            if not hashed() and current_simulation().running is not self.detacher:
                reach(UNHASHED_CALL)
            return ret

        setattr(ops, field, watched)

    def watch_notifiers(self, mm: MmStruct) -> None:
        mmn = mm.mmu_notifier_mm
        if mmn is None:
            return
        for mn in list(mmn.list):
            if mn.owner is self.driver:
                for field in MmuNotifierOps.__slots__:
                    if field not in ("alloc_notifier", "free_notifier"):
                        self._wrap(mn.ops, field, lambda mn=mn: mn.hashed,
                                   notifier_list_key(mmn))
                if mn.ops.free_notifier is None:
                    self.owned.append(mn)
        for sub in list(mmn.itree):
            if sub.owner is self.driver and sub.ops is not None:
                self._wrap(sub.ops, "invalidate", lambda sub=sub: sub.in_tree, itree_key(mmn))
                self.owned.append(sub)

    async def kfree(self) -> None:
        """The driver frees the structure that embeds its notifier(s), as
        kvm_destroy_vm frees struct kvm after mmu_notifier_unregister.  A
        notifier from mmu_notifier_get is not the driver's to free: the core
        frees it (``free_notifier``) after a grace period."""
        if not self.owned:
            reach(DRIVER_FREED)
            return
        await step(f"K. kfree({self.driver.name}): the notifier's memory",
                   writes=(self, *self.owned))
        if self.running:
            current_simulation().fail(NotifierUseAfterFree(
                f"{self.driver.name} frees its notifier while its {', '.join(self.running)} "
                f"callback is still running (detach returned too early)"))
        self.freed = True
        for obj in self.owned:
            obj.freed = True
        reach(DRIVER_FREED)


def watch(driver: Driver) -> NotifierWatch:
    w = NotifierWatch(driver)
    w.watch_notifiers(driver.mm)
    return w


async def detach_and_free(w: NotifierWatch) -> None:
    """The driver goes away: detach (unregister / remove / put), then free."""
    w.detacher = current()
    await guarded(w.driver, "detach", w.driver.detach)
    await w.kfree()


def _interval(params: dict[str, Any]) -> bool:
    """The driver is an interval notifier (on the mm's interval tree)."""
    return bool(getattr(driver_class(params), "interval_notifier", False))


def _unregisters(params: dict[str, Any]) -> bool:
    """The driver leaves with mmu_notifier_unregister of its own hlist
    notifier (the base class's detach)."""
    cls = driver_class(params)
    if cls is None or _interval(params):
        return False
    # a driver that overrides detach per generation lists where it still
    # leaves with mmu_notifier_unregister (GRU: 2.6.27; modern: mmu_notifier_put)
    apis = getattr(cls, "unregister_apis", None)
    if apis is not None:
        return str(params.get("api", "2.6.27")) in apis
    return cls.detach is Driver.detach


def _brackets(params: dict[str, Any]) -> bool:
    """The driver counts invalidate_range_start/end brackets on the hlist."""
    cls = driver_class(params)
    return (cls is not None and not _interval(params)
            and getattr(cls, "invalidate_range_start", None) is not None
            and getattr(cls, "invalidate_range_end", None) is not None)


def _modern_brackets(params: dict[str, Any]) -> bool:
    """try_to_unmap_one brackets its pte clear only in the modern generation
    (4.13+); only drivers that count brackets (or an interval tree) notice
    a bracket split."""
    return params.get("api") == "modern" and (_brackets(params) or _interval(params))


def _any_or(test: Any) -> Any:
    """A mutant filter: combinations without a driver, or whose driver passes."""
    def applies(params: dict[str, Any]) -> bool:
        return "driver" not in params or bool(test(params))
    return applies




# ------------------------------------------------------ unregister vs exit


@mmemu.scenario("notifier:unregister-vs-exit", axes=DRIVER_AXES, filter=_hears_exit,
                catches=["mmu_notifier:unregister-no-srcu", "mmu_notifier:unregister-del-rcu",
                         "mmu_notifier:interval-remove-nowait"],
                reaches=lambda p: ([REMOVE_WAITED] if _interval(p) else [UNHASHED_CALL])
                + ([RELEASED_TWICE] if _unregisters(p) else []) + [DRIVER_FREED])
async def unregister_vs_exit(sim: Any) -> None:
    """A driver detaches (mmu_notifier_unregister) and frees its notifier while
    the mm exits (exit_mmap calls every ->release first).

    CPU0 (exit_mmap: __mmu_notifier_release)   CPU1 (driver: detach, then kfree)
    srcu_read_lock                             1. hlist_unhashed(&mn->hlist)
    1. hlist_for_each_entry_rcu                   hashed: srcu_read_lock; ->release
    release: ... (->release of every              (zap everything); srcu_read_unlock
       notifier: zap everything)               2. hlist_del_init_rcu
    srcu_read_unlock                           synchronize_srcu
    2. hlist_del_init_rcu (all)                K. kfree(driver): the notifier's memory
    synchronize_srcu
    unmap_vmas: zap the ptes, free the pages

    There are 2 critical interleavings that matter:
    - CPU1's 2 while CPU0 runs mn's ->release (its 1 read the list before
      the unhash): CPU1's synchronize_srcu waits for CPU0's srcu_read_unlock,
      so K never frees a notifier exit is still calling.  Returning without
      the grace period (mutant ``mmu_notifier:unregister-no-srcu``) frees it
      under the callback: NotifierUseAfterFree.
    - CPU0's 2 between CPU1's 1 and 2: exit unhashed mn after unregister saw
      it hashed; CPU1's 2 must be a no-op on the unhashed node
      (hlist_del_init_rcu, d34883d4e35c).  The hlist_del_rcu of
      3ad3d901bbcf..751efd8610d3 (mutant ``mmu_notifier:unregister-del-rcu``)
      writes through the NULL pprev: the oops of 751efd8610d3's title.
    Harmless: ->release runs twice (CPU0's walk and CPU1's 1 both saw mn
    hashed; the second zaps an empty TLB) -- legal with the release-first
    order of 3ad3d901bbcf/d34883d4e35c.  Unregister entirely before CPU0's 1
    (exit finds no notifier), or after CPU0's 2 (CPU1's 1 sees mn unhashed
    and only waits).

    An interval notifier (HMM) is removed instead: exit's RELEASE
    invalidation (mn_itree_release) against mmu_interval_notifier_remove,
    which defers the removal and waits for the invalidation to end (mutant
    ``mmu_notifier:interval-remove-nowait`` frees it while exit calls it).
    A mmu_notifier_get notifier (SVA) is put: the core frees it after a
    grace period.

    At the end: no callback ran after the driver freed its notifier, and the
    driver holds no translation (exit's ->release or detach zapped them all
    before the pages were freed).
    """
    g = await guest(sim, kind="anon")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
    w = watch(g.driver)
    async with sim.cpus() as cpus:
        cpus.start(exit_mmap, g.mm, name="exit")
        cpus.start(detach_and_free, w, name=g.driver.name)


# ------------------------------------------------ unregister vs invalidate


@mmemu.scenario("notifier:unregister-vs-invalidate", axes=DRIVER_AXES, filter=supports_api,
                catches=["mmu_notifier:unregister-no-srcu",
                         "mmu_notifier:interval-remove-nowait"],
                reaches=lambda p: ([REMOVE_WAITED] if _interval(p) else [UNHASHED_CALL])
                + [DRIVER_FREED])
async def unregister_vs_invalidate(sim: Any) -> None:
    """A driver detaches and frees its notifier while a truncate invalidates
    the page it maps.

    CPU0 (vmtruncate: unmap_mapping_range)     CPU1 (driver: detach, then kfree)
    spin_lock(i_mmap_lock)                     1. hlist_unhashed(&mn->hlist)
    srcu_read_lock                                hashed: ->release (zap all)
    invalidate_range_start:                    2. hlist_del_init_rcu
       hlist_for_each_entry_rcu                synchronize_srcu
    B. (KVM: count++, zap; unlock)             K. kfree(driver): the notifier's memory
    srcu_read_unlock
    zap_pte_range; tlb_finish_mmu: free the page
    invalidate_range_end: ... C. (seq++, count--)
    truncate_inode_pages

    There are 2 critical interleavings that matter:
    - CPU1's 2 while CPU0 runs mn's range_start or range_end callback (the
      walk read the list before the unhash): synchronize_srcu waits for the
      walker.  Without the grace period (mutant
      ``mmu_notifier:unregister-no-srcu``) K frees mn while the callback
      runs: NotifierUseAfterFree.
    - CPU1's 2 between the range_start walk and the range_end walk: the
      driver gets a start without its end.  That's OK: ->release zapped
      everything, and nothing faults through a detached driver (KVM's
      mmu_notifier_count stays raised on a VM being destroyed).
    Harmless: detach before the range_start walk (the truncate finds an
    empty list) or after the range_end walk.

    An interval notifier (HMM) is removed with mmu_interval_notifier_remove:
    during the invalidation the removal is deferred and remove waits for its
    end (mutant ``mmu_notifier:interval-remove-nowait`` returns at once: K
    frees the interval while the invalidation calls it).

    At the end: no callback ran after the driver freed its notifier, no
    translation is left, and the truncated page is free.
    """
    g = await guest(sim, kind="shared")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
    w = watch(g.driver)
    async with sim.cpus() as cpus:
        cpus.start(vmtruncate, g.mapping, 0, name="truncate")
        cpus.start(detach_and_free, w, name=g.driver.name)
    sim.check(g.page.free or g.page.mapping is not g.mapping,
              f"page{g.page.pfn} is still file[0] after the truncate", details=g.page.dump())


# ---------------------------------------- two notifiers, one fails nonblock


class UserptrNotifier:
    """A second notifier on the mm that cannot invalidate without sleeping: an
    object that pins user pages, as i915's userptr notifier did (5.x,
    i915_gem_userptr.c): a range that meets one of its objects must wait for
    the object's lock, so a non-blockable start fails with -EAGAIN.  It has
    no ->invalidate_range_end -- a notifier whose start can fail must not
    (WARN_ON since 2021), nothing would tell it whether its start failed.

    On the interval tree (next to an interval-notifier driver) it is an
    interval notifier whose ->invalidate returns false for a non-blockable
    range."""

    def __init__(self, interval: bool) -> None:
        self.interval = interval
        self.mn = MmuNotifier(MmuNotifierOps(invalidate_range_start=self._start),
                              name="userptr.mmu_notifier", owner=self)
        self.sub = MmuIntervalNotifier(MmuIntervalNotifierOps(self._invalidate),
                                       name="userptr.interval_notifier", owner=self)
        self.__mmemu_name__ = "userptr"

    async def register(self, mm: MmStruct) -> int:
        if self.interval:
            ops = self.sub.ops
            assert ops is not None
            return await mmu_interval_notifier_insert(self.sub, mm, 0, TASK_SIZE, ops)
        return await mmu_notifier_register(self.mn, mm)

    async def _start(self, mn: MmuNotifier, range: MmuNotifierRange) -> int:
        if not mmu_notifier_range_blockable(range):
            await step("U. userptr: the object's lock would sleep: -EAGAIN")
            return -EAGAIN
        await step("U. userptr: cancel the object's user pages")
        return 0

    async def _invalidate(self, sub: MmuIntervalNotifier, range: MmuNotifierRange,
                          cur_seq: int) -> bool:
        if not mmu_notifier_range_blockable(range):
            await step("U. userptr: the object's lock would sleep: return false")
            return False
        await step("U. userptr: mmu_interval_set_seq; cancel the object's user pages",
                   writes=(sub.seq_key,))
        sub.invalidate_seq = cur_seq
        return True


async def _reap(sim: Any, mm: MmStruct) -> None:
    sim.data["outcome"]["reaped"] = await oom_reap_task(mm, retries=1)


@mmemu.scenario("notifier:two-notifiers-nonblock", axes=MODERN_AXES, filter=supports_api,
                catches=["mmu_notifier:nonblock-no-end", "mmu_notifier:itree-nonblock-no-end"],
                reaches=lambda p: [ITREE_NONBLOCK_ENDED if _interval(p) else NONBLOCK_ENDED])
async def two_notifiers_nonblock(sim: Any) -> None:
    """The OOM reaper's non-blockable invalidation on an mm with two notifiers:
    the driver's, which starts, and a userptr-like one, which fails.

    CPU0 (oom_reap_task, one attempt)           CPU1 (secondary-MMU fault)
    1. down_read_trylock(mmap_sem)              1. snapshot (KVM: mmu_seq)
    2. __oom_reap_task_mm: for each vma         2. GUP / walk (mmap_sem read)
    invalidate_range_start:                     3. driver lock
       hlist_for_each_entry_rcu                 4. retry? (KVM: mmu_notifier_retry:
    U. userptr: ... -EAGAIN                        count != 0 or seq moved)
    B. the driver's start (KVM: count++, zap)   5. install; unlock
    C. the driver's end, called by the core     access
       because a start failed (seq++, count--)
    3. up_read(mmap_sem); unable to reap

    There are 2 critical interleavings that matter:
    - CPU1's 4 between B and C: an invalidation is in flight, the fault
      waits for it (KVM: until count is 0) and retries; C, which the core
      calls for every notifier whose start succeeded, lets it through.
      Without that end (mutant ``mmu_notifier:nonblock-no-end``, the core
      from 4.19 to the 2021 fix) the count stays raised: the fault waits
      forever.
    - CPU1's 1 before C and 4 after C: seq moved, the fault retries.
    With an interval-notifier driver (HMM) both notifiers are on the
    interval tree: the driver's ->invalidate runs, the userptr interval
    refuses, and mn_itree_invalidate must end the invalidation it began
    (mutant ``mmu_notifier:itree-nonblock-no-end`` leaves invalidate_seq
    odd: the mirror's read_begin waits forever).

    Harmless: the fault entirely before 1 (B zaps what it installed; the
    reap fails, so the page and the next translation stay).

    At the end: the reap failed (the userptr notifier refused the
    non-blockable range), and the driver's translation, if any, maps the
    page the pte still maps.
    """
    g = await guest(sim, kind="anon")
    userptr = UserptrNotifier(interval=bool(getattr(g.driver, "interval_notifier", False)))
    sim.check(await userptr.register(g.mm) == 0, "userptr: register failed")
    sim.data["outcome"] = {}
    async with sim.cpus() as cpus:
        cpus.start(_reap, sim, g.mm, name="oom_reaper")
        cpus.start(guest_fault, g, name=g.driver.name)
    sim.check(sim.data["outcome"].get("reaped") is False,
              "the OOM reaper reaped the mm although the userptr notifier refused every "
              "non-blockable range")


# ------------------------------------------- two registrants on two mms


async def _shared_guest(sim: Any, kernel: Any, mapping: AddressSpace) -> Any:
    """An mm that maps file[0] shared, faulted in, and a driver for it (not attached)."""
    from mmemu.races.notifier import Guest
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    await fault_in(mm, vma.vm_start, write=False)
    pte = pte_get(mm, vma.vm_start)
    assert pte is not None and pte.page is not None
    return Guest(kernel, mm, mapping, vma.vm_start, pte.page, new_driver(sim))


async def _register_and_fault(g: Any) -> None:
    ret = await guarded(g.driver, "attach", g.driver.attach, g.kernel, g.mm)
    current_simulation().check(ret == 0, f"{g.driver.name}: attach returned {ret}")
    await guest_fault(g, write=False)


@mmemu.scenario("notifier:two-registrants", axes=DRIVER_AXES, filter=supports_api,
                catches=["mmap:no-all-locks-mutex"], reaches=[ALL_LOCKS_WAITED])
async def two_registrants(sim: Any) -> None:
    """Two drivers register at once on two mms that map the same file.

    CPU0 (register on mm1)                      CPU1 (register on mm2)
    1. down_write(mmap_sem) (mm1's)             1. down_write(mmap_sem) (mm2's)
    mutex_lock(&mm_all_locks_mutex)             mutex_lock(&mm_all_locks_mutex)
    vm_lock_mapping: test_bit(AS_MM_ALL_LOCKS)  vm_lock_mapping: test_bit(AS_MM_ALL_LOCKS)
    vm_lock_mapping: test_and_set_bit           vm_lock_mapping: test_and_set_bit
    vm_lock_mapping: spin_lock_nest_lock        vm_lock_mapping: spin_lock_nest_lock
    4. hlist_add_head_rcu                       4. hlist_add_head_rcu
    vm_unlock_mapping: spin_unlock;             vm_unlock_mapping: ...
       test_and_clear_bit(AS_MM_ALL_LOCKS)
    mutex_unlock(&mm_all_locks_mutex)           mutex_unlock(&mm_all_locks_mutex)
    5. up_write(mmap_sem); guest fault          5. up_write(mmap_sem); guest fault

    The two mms share no lock but the file's i_mmap_lock -- and the mark
    that says "mm_take_all_locks holds it", AS_MM_ALL_LOCKS in the file's
    mapping->flags, which is global.

    There is 1 critical interleaving that matters:
    - CPU1's mutex_lock while CPU0 holds the mutex: CPU1 waits, so its
      test_bit never sees CPU0's mark.  Without the mutex (mutant
      ``mmap:no-all-locks-mutex``) CPU1 finds AS_MM_ALL_LOCKS set by CPU0,
      takes it for its own and skips i_mmap_lock (a truncate of the file
      could now run inside CPU1's registration); its vm_unlock_mapping then
      unlocks an i_mmap_lock it does not hold (UnlockNotOwner), or both
      test_bits see the bit clear and CPU1's test_and_set_bit BUGs.
    Harmless: the registrations one after the other (the mutex is free).

    At the end: both drivers are registered, every lock and mark is
    dropped, and each driver's translation maps its mm's page.
    """
    kernel = boot_checked(sim, npages=6)
    mapping, _pages = await file_with_pages(kernel, "file", 1)
    g1 = await _shared_guest(sim, kernel, mapping)
    g2 = await _shared_guest(sim, kernel, mapping)
    async with sim.cpus() as cpus:
        cpus.start(_register_and_fault, g1, name=f"{g1.driver.name}@mm1")
        cpus.start(_register_and_fault, g2, name=f"{g2.driver.name}@mm2")
    sim.check(not mapping.flags, f"file's mapping->flags left set: {mapping.flags:#x}")


# --------------------------------------------------- register vs reclaim


@mmemu.scenario("notifier:register-vs-reclaim", axes=DRIVER_AXES, filter=supports_api,
                catches=["rmap:try-to-unmap-no-i-mmap-lock"],
                reaches=["vmscan: __remove_mapping froze and freed the page",
                         REGISTERED])
async def register_vs_reclaim(sim: Any) -> None:
    """A driver registers (mm_take_all_locks) while reclaim unmaps a file page
    of the mm.

    CPU0 (shrink_page_list of file[0])           CPU1 (driver attach, then a fault
                                                 on another file's page)
    isolate_lru_page; trylock_page               1. down_write(mmap_sem)
    1. try_to_unmap_file: spin_lock(i_mmap_lock) mutex_lock(&mm_all_locks_mutex)
    try_to_unmap_one: (modern) range_start;      vm_lock_mapping: spin_lock_nest_lock
       ptep_clear_flush (+ invalidate_page,         (waits while CPU0 holds i_mmap_lock)
       2.6.27); (modern) range_end               4. hlist_add_head_rcu; drop all locks
    try_to_unmap_file: spin_unlock(i_mmap_lock)  5. up_write(mmap_sem)
    __remove_mapping: freeze, remove; free       guest fault on file2[0]; access

    The rmap walk holds i_mmap_lock from before try_to_unmap_one's
    range_start to after its range_end, and mm_take_all_locks takes that
    lock: the registration lands before the bracket (the driver sees start
    and end) or after it (it sees neither).

    There is 1 critical interleaving that matters:
    - the registration's vm_lock_mapping while CPU0 is inside the bracket:
      it waits for i_mmap_lock.  A walk without the lock (mutant
      ``rmap:try-to-unmap-no-i-mmap-lock``) lets the notifier be hashed
      between range_start and range_end: the driver gets an end without its
      start (KVM: BUG_ON(mmu_notifier_count < 0); GRU's and HMM's counts go
      negative and their next fault waits forever).
    Harmless: the registration before CPU0 takes i_mmap_lock (both brackets
    delivered) or after it drops it; in the 2.6.27 generation there is no
    bracket (invalidate_page is one call), so the registration can land
    anywhere in the walk.

    At the end: the driver is attached, and its translation maps the page
    the pte maps.
    """
    g = await guest(sim, kind="shared", attach=False)
    other = AddressSpace(g.kernel, "file2", i_size=PAGE_SIZE)
    await down_write(g.mm.mmap_sem)
    ovma = await do_mmap(g.mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED, file=other, pgoff=0)
    await up_write(g.mm.mmap_sem)
    await fault_in(g.mm, ovma.vm_start, write=False)
    pte = pte_get(g.mm, ovma.vm_start)
    assert pte is not None and pte.page is not None
    from mmemu.races.notifier import Guest
    g2 = Guest(g.kernel, g.mm, other, ovma.vm_start, pte.page, g.driver)
    async with sim.cpus() as cpus:
        cpus.start(reclaim_page, g.page, name="kswapd")
        cpus.start(_attach_and_note, g2, name=g.driver.name)


async def _attach_and_note(g: Any) -> None:
    await _register_and_fault(g)
    reach(REGISTERED)


# ------------------------------------- nested invalidations of a range


async def madvise_dontneed(mm: MmStruct, start: int, length: int) -> None:
    """madvise(MADV_DONTNEED) of [start, start + length): mm/madvise.py's
    sys_madvise -- under mmap_sem for read, zap_page_range of each vma in
    the range, one invalidate_range_start/end bracket around the zap and
    the frees."""
    ret = await sys_madvise(mm, start, length, MADV_DONTNEED)
    current_simulation().check(ret == 0, f"madvise(MADV_DONTNEED) of a mapped range "
                                         f"returned {ret}")


def count_sections(driver: Driver) -> None:
    """Count the driver's invalidate_range_start ... end sections in flight
    (reach NESTED when two are): hlist notifiers only -- the interval tree
    counts its own (active_invalidate_ranges)."""
    mmn = driver.mm.mmu_notifier_mm
    state = {"in_flight": 0}
    for mn in list(mmn.list if mmn is not None else ()):
        ops = mn.ops
        if mn.owner is not driver or ops.invalidate_range_start is None \
                or ops.invalidate_range_end is None:
            continue
        start, end = ops.invalidate_range_start, ops.invalidate_range_end

        async def counted_start(mn: MmuNotifier, *args: Any, _start: Any = start) -> Any:
            state["in_flight"] += 1
            if state["in_flight"] >= 2:
                reach(NESTED)
            return await _start(mn, *args)

        async def counted_end(mn: MmuNotifier, *args: Any, _end: Any = end) -> Any:
            ret = await _end(mn, *args)
            state["in_flight"] -= 1
            return ret

        ops.invalidate_range_start = counted_start
        ops.invalidate_range_end = counted_end


@mmemu.scenario("notifier:range-nested", axes=DRIVER_AXES, filter=supports_api,
                catches=["kvm:zap-first-page-only"],
                reaches=lambda p: [NESTED] if _brackets(p) or _interval(p) else
                [f"callback:{driver_of(p)}->arch_invalidate_secondary_tlbs"]
                if getattr(driver_class(p), "arch_invalidate_secondary_tlbs", None) is not None else [])
async def range_nested(sim: Any) -> None:
    """Two threads madvise(MADV_DONTNEED) overlapping ranges of one two-page
    anonymous vma: two invalidations of the mm in flight at once, one
    nested in the other.

    CPU0 (madvise [page0, page2))              CPU1 (madvise [page1, page2))
    madvise: down_read(mmap_sem)               madvise: down_read(mmap_sem)
    invalidate_range_start [page0, page2):     invalidate_range_start [page1, page2):
       B. (KVM: count++, zap gfn 0 and 1)         B. (KVM: count++ -- 2 now, zap gfn 1)
    zap_pte_range: clear both ptes             zap_pte_range: clear page1's if left
    tlb_finish_mmu: free what it cleared       tlb_finish_mmu: free what it cleared
    invalidate_range_end: C. (seq++, count--)  invalidate_range_end: C.
    madvise: up_read(mmap_sem)                 madvise: up_read(mmap_sem)

    mmap_sem is taken for read: the two brackets exclude nothing of each
    other, so they nest and overlap, and a driver must count them, not
    flag them.

    There are 2 critical interleavings that matter:
    - CPU1's B between CPU0's B and C: two sections in flight (KVM's
      mmu_notifier_count is 2); after the first C the range is still being
      invalidated and no translation may be established until the second.
    - CPU0's B while both ptes still map their pages: range_start must zap
      every page of the range, because tlb_finish_mmu frees them all before
      range_end.  Zapping only the first page (mutant
      ``kvm:zap-first-page-only``) leaves page1's spte to the page CPU0
      frees.
    Harmless: one bracket after the other (the second finds nothing to zap
    or free); CPU1 clearing page1's pte first (CPU0's zap_pte_range skips
    it).

    At the end: nothing maps the vma, no translation is left, and both
    pages are free.
    """
    kernel = boot_checked(sim, npages=6)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    addrs = (vma.vm_start, vma.vm_start + PAGE_SIZE)
    pages = []
    for a in addrs:
        await fault_in(mm, a, write=True)
        pte = pte_get(mm, a)
        assert pte is not None and pte.page is not None
        pages.append(pte.page)
    driver = new_driver(sim)
    sim.check(await driver.attach(kernel, mm) == 0, f"{driver.name}: attach failed")
    for a in addrs:
        await guarded(driver, "fault", driver.fault, a, False)
    count_sections(driver)
    async with sim.cpus() as cpus:
        cpus.start(madvise_dontneed, mm, addrs[0], 2 * PAGE_SIZE, name="madvise0-2")
        cpus.start(madvise_dontneed, mm, addrs[1], PAGE_SIZE, name="madvise1-2")
    sim.check(all(p.free for p in pages), "a page the madvises dropped is still in use",
              details="\n".join(p.dump() for p in pages))


# ------------------------------------------ a signal in mm_take_all_locks


async def _attach_unless_signalled(sim: Any, g: Any) -> None:
    """The driver starts (its attach runs mmu_notifier_register, so
    mm_take_all_locks); a guest fault if that worked."""
    from mmemu.kernel.signal import _key as sigpending_key
    me = current()
    await step("A0. attach: a signal already pending?", reads=(sigpending_key(me),))
    pending = bool(me.data.get("sigpending"))
    ret = await guarded(g.driver, "attach", g.driver.attach, g.kernel, g.mm)
    sim.data["outcome"]["attach"] = ret
    if pending and ret != -EINTR:
        current_simulation().fail(SignalIgnored(
            f"{g.driver.name}: attach returned {ret} although a signal was pending before it "
            f"started: mm_take_all_locks must check signal_pending(current) and return "
            f"-EINTR"))
    if ret == -EINTR:
        reach(ATTACH_EINTR)
        return
    current_simulation().check(ret == 0, f"{g.driver.name}: attach returned {ret}")
    await guest_fault(g)


async def _kill_then_truncate(target: Any, mapping: AddressSpace) -> None:
    await send_sig(target, label="S. send_sig(driver's task)")
    await vmtruncate(mapping, 0)


@mmemu.scenario("notifier:take-all-locks-eintr", axes=DRIVER_AXES, filter=supports_api,
                catches=["mmap:ignore-signals", "mmap:eintr-leak"],
                reaches=[ATTACH_EINTR, EINTR_AFTER_LOCKS])
async def take_all_locks_eintr(sim: Any) -> None:
    """A signal interrupts a driver's registration (mm_take_all_locks) while a
    truncate waits for a lock it took.

    CPU0 (driver attach: mmu_notifier_register)  CPU1 (kill, then vmtruncate)
    A0. attach: a signal already pending?        S. send_sig(driver's task)
    1. down_write(mmap_sem)                      i_size_write(inode, offset)
    mutex_lock(&mm_all_locks_mutex)              unmap_mapping_range:
    signal_pending(current)  (file vma)             spin_lock(i_mmap_lock)
    vm_lock_mapping: ... spin_lock_nest_lock        (waits while CPU0 holds it)
    signal_pending(current)  (anon vma)          range_start; zap; free; range_end
       pending: -EINTR, mm_drop_all_locks        truncate_inode_pages
    vm_lock_anon_vma: ...
    4. hlist_add_head_rcu; mm_drop_all_locks
    5. up_write(mmap_sem); guest fault if attached

    There are 2 critical interleavings that matter:
    - S between the two signal_pending tests: CPU0 holds the file's
      i_mmap_lock, CPU1's spin_lock(i_mmap_lock) waits for it, and the
      second test returns -EINTR; mm_drop_all_locks must release
      i_mmap_lock so the truncate goes on.  Returning without the drop
      (mutant ``mmap:eintr-leak``) leaves the truncate waiting forever, and
      CPU0 exiting with the locks held.
    - S before A0: mm_take_all_locks' first test sees it and registration
      fails with -EINTR.  Never testing (mutant ``mmap:ignore-signals``)
      registers a driver whose task is being killed, after taking every
      lock of the mm: SignalIgnored.
    Harmless: S after the last test (the registration completes; the
    truncate then invalidates through the new notifier); CPU1's
    spin_lock(i_mmap_lock) before CPU0's (the registration waits for the
    truncate's section to end).

    At the end: a driver whose attach returned -EINTR is not registered;
    an attached one maps what the CPU maps; no lock is held.
    """
    kernel = boot_checked(sim, npages=6)
    mapping, _pages = await file_with_pages(kernel, "file", 1)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    fvma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE | VM_SHARED, file=mapping, pgoff=0)
    avma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    assert fvma.vm_start < avma.vm_start
    await fault_in(mm, fvma.vm_start, write=False)
    await fault_in(mm, avma.vm_start, write=True)  # gives the anon vma its anon_vma
    pte = pte_get(mm, fvma.vm_start)
    assert pte is not None and pte.page is not None
    from mmemu.races.notifier import Guest
    g = Guest(kernel, mm, mapping, fvma.vm_start, pte.page, new_driver(sim))
    sim.data["outcome"] = {}
    async with sim.cpus() as cpus:
        target = cpus.start(_attach_unless_signalled, sim, g, name=g.driver.name)
        cpus.start(_kill_then_truncate, target, mapping, name="truncate")
    ret = sim.data["outcome"].get("attach")
    if ret == -EINTR:
        mmn = mm.mmu_notifier_mm
        hashed = mmn is not None and any(n.owner is g.driver for n in mmn.list)
        sim.check(not hashed and not g.driver.tlb.keys(),
                  f"{g.driver.name}: attach failed with -EINTR but the driver is registered")


# Which combinations each core mutant of these suites can break (the mutant
# lives in mm/, which knows no driver; see set_mutant_applies).
for _name, _test in (("mmu_notifier:unregister-no-srcu", _unregisters),
                     ("mmu_notifier:unregister-del-rcu", _unregisters),
                     ("mmu_notifier:interval-remove-nowait", _interval),
                     ("mmu_notifier:nonblock-no-end", _brackets),
                     ("mmu_notifier:itree-nonblock-no-end", _interval),
                     ("rmap:try-to-unmap-no-i-mmap-lock", _modern_brackets)):
    set_mutant_applies(_name, _any_or(_test))


__all__ = ["NotifierWatch", "SignalIgnored", "UserptrNotifier", "count_sections",
           "detach_and_free", "madvise_dontneed", "watch"]
