"""MMU notifiers: how secondary MMUs hear about changes to a CPU page table.

Emulates: mm/mmu_notifier.c, include/linux/mmu_notifier.h in two API
generations: "2.6.27" (see "Eras" below for what that name covers exactly)
and, when the kernel is booted with ``api="modern"``, the later generation
(5.x-6.x: ``struct mmu_notifier_range``, non-blockable ranges, interval
notifiers, ``mmu_notifier_get/put``, ``arch_invalidate_secondary_tlbs``) --
see "The modern generation" below.

Eras: what the "2.6.27" generation is, and where it is not 2.6.27
-----------------------------------------------------------------
- Callbacks and call sites: 2.6.27's (cddb8a5c14aa "mmu-notifiers: core",
  2008): ``release``, ``invalidate_page``, ``invalidate_range_start/end``,
  ``clear_flush_young``.  Two later callbacks are in the same generation,
  for the call sites that need them, each with the first call sequence it
  had: ``change_pte`` (828502d30073, 2.6.32, for KSM, called by
  ``set_pte_at_notify`` without any start/end around it; a notifier without
  ``->change_pte`` gets ``->invalidate_page`` instead) and ``test_young``
  (8ee53820edfd, 2.6.38, for khugepaged).  2.6.27 itself had no KSM and no
  khugepaged: those paths run as in the first kernel that had them.
- The list walk: **SRCU**, as since 21a92735f660 (v3.7, "mm: mmu_notifier:
  have mmu_notifiers use a global SRCU so they may safely schedule").
  2.6.27 walked the list under plain RCU, so its callbacks could not sleep;
  ``unregister`` and ``release`` waited with ``synchronize_rcu``.  The
  drivers shipped with mmemu never sleep in a callback, so the two walks
  admit the same interleavings for them.
- ``__mmu_notifier_release`` and ``mmu_notifier_unregister``: the order of
  d34883d4e35c (v3.10): every ``->release`` runs while the notifiers are
  still hashed, then they are unhashed.  2.6.27 unhashed each notifier
  first and called its ``->release`` after (with the lock dropped): the bug
  3ad3d901bbcf fixed in 2012, which 751efd8610d3 (2013) brought back and
  d34883d4e35c fixed again.  That order is the mutant
  ``mmu_notifier:release-after-unhash``.

INTERFACE CONTRACT (call sites in memory.py, rmap.py, migrate.py, mmap.py use
exactly these; the notifier implementation fills in the bodies):

- ``mm.mmu_notifier_mm``: None until a notifier registers on ``mm``.
- ``mm_has_notifiers(mm) -> bool`` (sync).
- ``await mmu_notifier_invalidate_range_start(mm, start, end, *, event="UNMAP")``
- ``await mmu_notifier_invalidate_range_end(mm, start, end, *, event="UNMAP")``
- ``await mmu_notifier_invalidate_page(mm, address)``
- ``await mmu_notifier_clear_flush_young(mm, address) -> bool``
- ``await mmu_notifier_test_young(mm, address) -> bool``
- ``await mmu_notifier_change_pte(mm, address, page)``
- ``await mmu_notifier_release(mm)``            (exit_mmap, before unmapping)
- ``await arch_invalidate_secondary_tlbs(mm, start, end)`` (modern: under the PTL
  where the CPU TLB is flushed)

Each is a no-op returning quickly when ``mm`` has no notifiers: one step that
reads ``(mm, "mmu_notifier_mm")`` (the kernel's unlocked ``mm_has_notifiers``
test; the call sites hold a lock that mm_take_all_locks also takes, which is
what makes that read safe against a concurrent register).

Registration and the callbacks
------------------------------
``mmu_notifier_register`` takes ``mmap_sem`` for write and then every lock of
the mm (``mm_take_all_locks``) before it hashes the notifier.  Every path that
runs an ``invalidate_range_start`` ... ``invalidate_range_end`` section holds
one of those locks (``i_mmap_lock`` for truncate, ``mmap_sem`` for munmap,
``anon_vma->lock`` or ``i_mmap_lock`` for rmap walks) from before start until
after end, so register cannot land in the middle of a section::

      CPU0 (vmtruncate)                   CPU1 (mmu_notifier_register)
      spin_lock(i_mmap_lock)
      1. range_start: no notifier yet
                                          down_write(mmap_sem)
                                          mm_take_all_locks: waits i_mmap_lock
      2. zap the ptes, free the pages
      3. range_end
      spin_unlock(i_mmap_lock)
                                          ... takes it, hashes the notifier

Without ``mm_take_all_locks`` (mutant ``mmu_notifier:register-unlocked``) the
notifier is hashed between 1 and 3: the driver faults the page in before 2
(nothing tells it a range is being invalidated), 2 frees the page, and the
driver keeps a translation to a free page: nobody will ever notify it again.

The list is walked under SRCU (3.7+; see "Eras"): callbacks may sleep, and ``unregister`` /
``release`` wait with ``synchronize_srcu`` for walkers that may still call
an unhashed notifier.  A walker reads the list once, after
``srcu_read_lock``; an entry added later is not seen (``hlist_add_head_rcu``
puts it before the walker's position), an entry removed later may still be
called (that is what the grace period is for).

The modern generation (``kernel.api == "modern"``)
--------------------------------------------------
The same call sites, the kernel's later contract:

- ``invalidate_range_start/end`` take a ``MmuNotifierRange`` (start, end,
  event, flags, owner); ``->invalidate_range_start(mn, range)`` returns an
  int.  ``invalidate_page`` is gone: its 2.6.27 call sites (try_to_unmap_one,
  do_wp_page) bracket the pte change with start/end, and the pte clear
  itself calls ``arch_invalidate_secondary_tlbs`` under the PTL, where the
  CPU TLB is flushed (``->arch_invalidate_secondary_tlbs``: TLBs that walk the
  CPU page tables, e.g. an IOMMU doing SVA; no sleeping there).
- KSM's ``set_pte_at_notify`` runs inside a start/end bracket
  (6bdb913f0a70, 2012) and ``->change_pte`` has no ``->invalidate_page``
  fallback.  ``->change_pte`` is the 5.13-6.9 one: 997308f9ae72 (6.10)
  removed it, and set_pte_at_notify became set_pte_at; a notifier that
  ignores ``change_pte`` sees exactly what 6.10+ shows it (the bracket).
- Non-blockable ranges (``mmu_notifier_invalidate_range_start_nonblock``, the
  OOM reaper): every callback runs in non-block context (sleeping is
  reported as SleepingWhileAtomic: ``non_block_start`` sets the CPU's
  ``atomic_reason``); a start may return ``-EAGAIN``; then the notifiers
  whose start succeeded get their ``->invalidate_range_end`` at once and
  the caller must not call ``invalidate_range_end`` (it skips the range).
- Interval notifiers (``mmu_interval_notifier_insert``): a per-mm interval
  tree and a sequence count instead of a start/end pair for the driver (see
  ``mmu_interval_read_begin`` for the collision-retry protocol).
- ``mmu_notifier_get`` / ``mmu_notifier_put``: one refcounted notifier per
  (ops, mm), allocated by ``ops.alloc_notifier`` and freed by
  ``ops.free_notifier`` after an SRCU grace period.

Modelling note: the emulated mm still takes 2.6.27's *spinlock*
``i_mmap_lock`` and ``anon_vma->lock`` around blockable invalidations
(modern kernels have rwsems there), so a driver whose blockable callbacks
sleep is reported as sleeping under those spinlocks; the drivers shipped
with mmemu take spinlocks in their callbacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import current_simulation, reach, step, touch
from mmemu.kernel.locking import (
    READ_ONCE,
    GuardedList,
    SpinLock,
    WaitQueueHead,
    down_write,
    guarded_by,
    spin_lock,
    spin_unlock,
    up_write,
    wait_event,
    wake_up_all,
)
from mmemu.kernel.rcu import SrcuStruct, srcu_read_lock, srcu_read_unlock, synchronize_srcu

MUTANT_REGISTER_UNLOCKED = mmemu.register_mutant(
    "mmu_notifier:register-unlocked",
    "mmu_notifier_register hashes the notifier without mm_take_all_locks",
    caught_as="FreedPageStillMapped (the driver keeps a translation to a page freed by a "
              "range_start/range_end section that was in flight); drivers that count their "
              "ranges see the unmatched range_end first: KVM's BUG_ON(mmu_notifier_count < 0) "
              "(KvmBug), GRU/HMM sleep forever on a negative range count (Deadlock)",
    doc="The seed race of commit 7906d00c: register lands between a truncate's "
        "invalidate_range_start (not delivered) and the page being freed; the driver "
        "faults the page in meanwhile and is never told to drop it.")

MUTANT_RELEASE_AFTER_UNHASH = mmemu.register_mutant(
    "mmu_notifier:release-after-unhash",
    "__mmu_notifier_release unhashes each notifier before calling its ->release",
    caught_as="FreedPageStillMapped (reclaim's invalidate_page skips the unhashed notifier "
              "and frees a page the driver still maps)",
    doc="The order of the original code (2.6.27, cddb8a5c14aa 'mmu-notifiers: core'): "
        "under mmu_notifier_mm->lock take the first notifier off the list "
        "(hlist_del_init_rcu), drop the lock, call its ->release, repeat.  Between the "
        "unhash and ->release, try_to_unmap on another CPU clears the pte, walks a list "
        "without the notifier, and frees the page while the secondary MMU still maps it.  "
        "3ad3d901bbcf ('mm: mmu_notifier: fix freed page still mapped in secondary MMU', "
        "2012) fixed it by calling every ->release while the notifiers are still hashed and "
        "unhashing them afterwards; 751efd8610d3 ('mmu_notifier_unregister NULL Pointer "
        "deref and multiple ->release() callouts', 2013) went back to unhash-then-release "
        "(under SRCU by then) to fix a race with mmu_notifier_unregister, which brought "
        "this bug back; d34883d4e35c ('mm: mmu_notifier: re-fix freed page still mapped "
        "in secondary MMU', v3.10) restored the release-first order and made unregister "
        "use hlist_del_init_rcu instead.")

MUTANT_UNREGISTER_NO_SRCU = mmemu.register_mutant(
    "mmu_notifier:unregister-no-srcu",
    "mmu_notifier_unregister returns without synchronize_srcu",
    caught_as="NotifierUseAfterFree (a walker that read the notifier list before the unhash "
              "calls the notifier after its driver freed it)",
    doc="mmu_notifier_unregister's last step waits for every SRCU reader of the notifier "
        "list: exit_mmap's ->release walk, a truncate's range_start/end, reclaim's "
        "invalidate_page.  Any of them may have read the list before the unhash and still be "
        "about to call the notifier.  Returning without the grace period lets the driver "
        "free the structure that embeds the notifier (kvm_destroy_vm frees struct kvm right "
        "after mmu_notifier_unregister) while the walker calls into it.")

MUTANT_UNREGISTER_DEL_RCU = mmemu.register_mutant(
    "mmu_notifier:unregister-del-rcu",
    "mmu_notifier_unregister calls ->release of a notifier exit_mmap is releasing, then "
    "unhashes it with hlist_del_rcu",
    caught_as="NotifierListCorruption (hlist_del_rcu of a node __mmu_notifier_release already "
              "unhashed: a NULL pointer dereference)",
    doc="The unregister of 3ad3d901bbcf (2012) up to 751efd8610d3 ('mmu_notifier_unregister "
        "NULL Pointer deref and multiple ->release() callouts', 2013): it tests "
        "hlist_unhashed without the lock, calls ->release (a second time, if exit_mmap's "
        "walk already did), takes the lock and unhashes with hlist_del_rcu.  If "
        "__mmu_notifier_release unhashed the notifier in between (hlist_del_init_rcu sets "
        "pprev to NULL), hlist_del_rcu writes through that NULL pointer.  d34883d4e35c "
        "(v3.10) uses hlist_del_init_rcu there, a no-op on an unhashed node; the double "
        "->release stays, and drivers must handle it.")

MUTANT_NONBLOCK_NO_END = mmemu.register_mutant(
    "mmu_notifier:nonblock-no-end",
    "a non-blockable invalidate_range_start that fails in one notifier does not end the "
    "notifiers whose start succeeded",
    caught_as="Deadlock (KVM's mmu_notifier_count, GRU's ms_range_active stay raised: the "
              "next secondary-MMU fault waits forever for a range_end that never comes)",
    doc="The core from 93065ac753e4 (4.19, non-blockable ranges for the OOM reaper) to "
        "Sean Christopherson's fix of March 2021 ('mm/mmu_notifiers: ensure range_end() is "
        "paired with range_start()', v5.12): when one notifier returned -EAGAIN, "
        "mmu_notifier_invalidate_range_start_nonblock returned -EAGAIN, the reaper skipped "
        "the vma without range_end, and every notifier whose start had succeeded was left "
        "inside an invalidation.  The fix's own words: 'KVM's mmu_notifier_count would become "
        "imbalanced'.  Needs two notifiers on one mm, one that fails.")

MUTANT_ITREE_NONBLOCK_NO_END = mmemu.register_mutant(
    "mmu_notifier:itree-nonblock-no-end",
    "mn_itree_invalidate returns -EAGAIN without ending the interval invalidation it began",
    caught_as="Deadlock (invalidate_seq stays odd: every mmu_interval_read_begin of an interval "
              "that was hit waits forever)",
    doc="The interval-tree half of the same rule: mn_itree_inv_start_range raised "
        "active_invalidate_ranges and made invalidate_seq odd; when an interval's "
        "->invalidate refuses a non-blockable range, the caller will not call "
        "invalidate_range_end, so mn_itree_invalidate must call mn_itree_inv_end itself "
        "('On -EAGAIN the non-blocking caller is not allowed to call "
        "invalidate_range_end()').  Dropping that call is a deliberately removed step (the "
        "interval code had it from the start, 99cb252f5e68, 5.5).")

MUTANT_INTERVAL_NO_DEFER = mmemu.register_mutant(
    "mmu_notifier:interval-no-defer",
    "mmu_interval_notifier_insert puts the interval straight into the tree during an "
    "invalidation, with a seq that read_begin does not wait on",
    caught_as="FreedPageStillMapped (the new mirror maps a page that the invalidation it "
              "missed frees)",
    doc="__mmu_interval_notifier_insert must defer an insert that lands while "
        "active_invalidate_ranges != 0 and give the new interval the current (odd) "
        "invalidate_seq: the invalidation already walked the tree without it, so its first "
        "mmu_interval_read_begin has to wait for the end of that invalidation.  Inserted "
        "at once with seq - 1, the mirror's read_begin returns at once, the walk still sees "
        "the pte, and the device maps a page the invalidation then frees.")

MUTANT_INTERVAL_REMOVE_NOWAIT = mmemu.register_mutant(
    "mmu_notifier:interval-remove-nowait",
    "mmu_interval_notifier_remove returns during an invalidation without waiting for its end",
    caught_as="NotifierUseAfterFree (the invalidation calls ->invalidate of an interval its "
              "owner already freed)",
    doc="An invalidation walks the interval tree without the lock (I2); remove during it "
        "only defers the removal and must wait (wait_event on subscriptions->wq) until "
        "invalidate_seq moves on.  Returning at once lets the driver free the interval "
        "notifier while the invalidation is about to call it.")

MUTANT_ITREE_END_FIRST = mmemu.register_mutant(
    "mmu_notifier:itree-end-first",
    "mn_itree_inv_end ends the interval invalidation (invalidate_seq even, deferred "
    "inserts/removes, wake-up) at the end of any range, not only the last of those in flight",
    caught_as="FreedPageStillMapped / SecondaryUseAfterFree (a mirror's read_begin returns "
              "while a second range is still between its start and its zap, its walk maps "
              "a page that range then frees, and read_retry sees no change)",
    doc="An mm's interval invalidation is one state for all its ranges in flight: "
        "mn_itree_inv_start_range counts them in active_invalidate_ranges, and "
        "mn_itree_inv_end makes invalidate_seq even again only when the count drops to "
        "zero ('if (subscriptions->active_invalidate_ranges) { spin_unlock; return; }').  "
        "A second madvise(MADV_DONTNEED) or munmap of the same mm under mmap_sem for read "
        "overlaps the first; ending at the first end (a step removed on purpose; the count "
        "is in the interval tree code from the start, 99cb252f5e68, 5.5) wakes the readers "
        "while the second range has not zapped its ptes yet.")

#: ops callback signatures (all async, all optional)
ReleaseFn = Callable[["MmuNotifier", Any], Awaitable[None]]
InvalidatePageFn = Callable[["MmuNotifier", Any, int], Awaitable[None]]
#: 2.6.27 (mn, mm, start, end); modern start/end (mn, range) -> int
InvalidateRangeFn = Callable[..., Awaitable[Any]]
YoungFn = Callable[["MmuNotifier", Any, int], Awaitable[bool]]
ChangePteFn = Callable[["MmuNotifier", Any, int, Any], Awaitable[None]]


class MmuNotifierOps:
    """``struct mmu_notifier_ops``: every callback may be None.

    - ``release(mn, mm)``: the mm is going away (exit_mmap, before the pages
      are unmapped) or the notifier is unregistered: drop every translation.
    - ``invalidate_page(mn, mm, address)``: the pte is already cleared; the
      page stays allocated until the call returns.
    - ``invalidate_range_start(mn, mm, start, end)`` /
      ``invalidate_range_end(mn, mm, start, end)``: paired; pages may be freed
      between them, so no translation may be established in the range from
      start to end.
    - ``clear_flush_young(mn, mm, address) -> bool``,
      ``test_young(mn, mm, address) -> bool``: the accessed bit of the
      secondary pte (test and clear / test; test_young since 2.6.38);
      ``clear_young(mn, mm, start, end) -> bool`` (modern, 4.3): clear
      without a flush.
    - ``change_pte(mn, mm, address, page)``: the pte now maps ``page`` (KSM).
    - ``invalidate_range(mn, mm, start, end)`` or
      ``arch_invalidate_secondary_tlbs(mn, mm, start, end)``: modern only
      (TLBs that share the CPU page tables, under the PTL; must not sleep).

    In the modern generation ``invalidate_range_start(mn, range) -> int`` and
    ``invalidate_range_end(mn, range)`` take a ``MmuNotifierRange``;
    ``alloc_notifier(mm) -> MmuNotifier`` and ``free_notifier(mn)`` (plain
    functions: free_notifier runs as an SRCU callback) serve
    ``mmu_notifier_get`` / ``mmu_notifier_put``.
    """

    __slots__ = ("release", "invalidate_page", "invalidate_range_start",
                 "invalidate_range_end", "clear_flush_young", "clear_young", "test_young",
                 "change_pte",
                 "invalidate_range", "arch_invalidate_secondary_tlbs", "alloc_notifier",
                 "free_notifier")

    def __init__(self, *, release: ReleaseFn | None = None,
                 invalidate_page: InvalidatePageFn | None = None,
                 invalidate_range_start: InvalidateRangeFn | None = None,
                 invalidate_range_end: InvalidateRangeFn | None = None,
                 clear_flush_young: YoungFn | None = None,
                 clear_young: InvalidateRangeFn | None = None,
                 test_young: YoungFn | None = None,
                 change_pte: ChangePteFn | None = None,
                 invalidate_range: InvalidateRangeFn | None = None,
                 arch_invalidate_secondary_tlbs: InvalidateRangeFn | None = None,
                 alloc_notifier: Callable[[Any], MmuNotifier] | None = None,
                 free_notifier: Callable[[MmuNotifier], None] | None = None) -> None:
        self.release = release
        self.invalidate_page = invalidate_page
        self.invalidate_range_start = invalidate_range_start
        self.invalidate_range_end = invalidate_range_end
        self.clear_flush_young = clear_flush_young
        self.clear_young = clear_young
        self.test_young = test_young
        self.change_pte = change_pte
        self.invalidate_range = invalidate_range
        self.arch_invalidate_secondary_tlbs = arch_invalidate_secondary_tlbs
        self.alloc_notifier = alloc_notifier
        self.free_notifier = free_notifier


class MmuNotifier:
    """``struct mmu_notifier``: an ops table and its place in the mm's hlist.

    ``hashed`` is ``!hlist_unhashed(&mn->hlist)``; ``owner`` is free for the
    driver (the Driver object that embeds it).  Modern: ``mm`` and ``users``
    (mmu_notifier_get/put's refcount, under mmu_notifier_mm->lock);
    ``freed`` is set when ``free_notifier`` ran (a callback through a freed
    notifier is a use-after-free).
    """

    __slots__ = ("ops", "hashed", "owner", "mm", "users", "freed", "__mmemu_name__")

    def __init__(self, ops: MmuNotifierOps, *, name: str = "mmu_notifier",
                 owner: Any = None) -> None:
        self.ops = ops
        self.hashed = False
        self.owner = owner
        self.mm: Any = None
        self.users = 0
        self.freed = False
        self.__mmemu_name__ = name

    def __repr__(self) -> str:
        return f"<MmuNotifier {self.__mmemu_name__}{' hashed' if self.hashed else ''}>"


class MmuNotifierMm:
    """``struct mmu_notifier_mm``: the mm's notifier hlist and the lock that
    serialises its writers (readers walk it under SRCU).  The access key of
    the list is this object.

    Modern (``struct mmu_notifier_subscriptions``): the interval tree of
    ``MmuIntervalNotifier`` (``itree``, kept sorted by start), ``has_itree``,
    ``invalidate_seq`` (odd while an invalidation that hit the tree is in
    progress), ``active_invalidate_ranges``, the ``deferred_list`` of inserts
    and removes that wait for the last invalidation to end, and the wait
    queue ``wq`` of mmu_interval_read_begin and remove.  All of them are
    under ``lock``; their access key is ``itree_key(mmn)``.
    """

    __slots__ = ("list", "lock", "has_itree", "invalidate_seq", "active_invalidate_ranges",
                 "itree", "deferred_list", "wq", "__mmemu_name__", "__weakref__")

    def __init__(self, mm_name: str) -> None:
        #: hlist order: hlist_add_head puts new entries first
        self.list: list[MmuNotifier] = GuardedList(self, "list")
        self.lock = SpinLock(f"{mm_name}.mmu_notifier_mm->lock", "mmu_notifier_mm->lock")
        self.has_itree = False
        self.invalidate_seq = 2
        self.active_invalidate_ranges = 0
        self.itree: list[MmuIntervalNotifier] = GuardedList(self, "itree")
        self.deferred_list: list[MmuIntervalNotifier] = GuardedList(self, "itree")
        self.wq = WaitQueueHead(f"{mm_name}.notifier_subscriptions->wq")
        self.__mmemu_name__ = f"{mm_name}.mmu_notifier_mm"


# ------------------------------------------------------ modern: the types

EAGAIN = 11
ENOMEM = 12

#: enum mmu_notifier_event
MMU_NOTIFY_UNMAP = "UNMAP"
MMU_NOTIFY_CLEAR = "CLEAR"
MMU_NOTIFY_PROTECTION_VMA = "PROTECTION_VMA"
MMU_NOTIFY_PROTECTION_PAGE = "PROTECTION_PAGE"
MMU_NOTIFY_SOFT_DIRTY = "SOFT_DIRTY"
MMU_NOTIFY_RELEASE = "RELEASE"
MMU_NOTIFY_MIGRATE = "MIGRATE"
MMU_NOTIFY_EXCLUSIVE = "EXCLUSIVE"
MMU_NOTIFY_EVENTS = (MMU_NOTIFY_UNMAP, MMU_NOTIFY_CLEAR, MMU_NOTIFY_PROTECTION_VMA,
                     MMU_NOTIFY_PROTECTION_PAGE, MMU_NOTIFY_SOFT_DIRTY, MMU_NOTIFY_RELEASE,
                     MMU_NOTIFY_MIGRATE, MMU_NOTIFY_EXCLUSIVE)

MMU_NOTIFIER_RANGE_BLOCKABLE = 1 << 0

ULONG_MAX = (1 << 64) - 1


class MmuNotifierViolation(InvariantViolation):
    """A WARN_ON of mm/mmu_notifier.c: a driver or a caller broke the
    notifier contract (a blockable start that fails, an end after a failed
    non-blockable start, ...)."""


class NotifierUseAfterFree(MmuNotifierViolation):
    """A callback ran through a notifier (or interval notifier) whose memory
    its owner already freed."""


class NotifierListCorruption(MmuNotifierViolation):
    """A notifier list operation the kernel would oops on (a double unhash)."""


class MmuNotifierRange:
    """``struct mmu_notifier_range``: [start, end) of ``mm``, why (``event``),
    ``flags`` (MMU_NOTIFIER_RANGE_BLOCKABLE) and ``owner`` (a driver that
    causes the invalidation itself may ignore it)."""

    __slots__ = ("mm", "start", "end", "event", "flags", "owner", "failed")

    def __init__(self, mm: Any, start: int, end: int, *, event: str = MMU_NOTIFY_UNMAP,
                 flags: int = 0, owner: Any = None) -> None:
        if event not in MMU_NOTIFY_EVENTS:
            raise mmemu.ModelError(f"unknown mmu_notifier_event {event!r}")
        self.mm = mm
        self.start = start
        self.end = end
        self.event = event
        self.flags = flags
        self.owner = owner
        #: model-only: its non-blockable start failed (-EAGAIN), so its
        #: callers must not call invalidate_range_end for it
        self.failed = False

    def __repr__(self) -> str:
        b = "blockable" if self.flags & MMU_NOTIFIER_RANGE_BLOCKABLE else "non-blockable"
        end = "ULONG_MAX" if self.end >= ULONG_MAX else f"{self.end:#x}"
        return f"<mmu_notifier_range {self.event} [{self.start:#x}, {end}) {b}>"


def mmu_notifier_range_init(event: str, flags: int, mm: Any, start: int,
                            end: int) -> MmuNotifierRange:
    return MmuNotifierRange(mm, start, end, event=event, flags=flags)


def mmu_notifier_range_init_owner(event: str, flags: int, mm: Any, start: int, end: int,
                                  owner: Any) -> MmuNotifierRange:
    return MmuNotifierRange(mm, start, end, event=event, flags=flags, owner=owner)


def mmu_notifier_range_blockable(range: MmuNotifierRange) -> bool:
    return bool(range.flags & MMU_NOTIFIER_RANGE_BLOCKABLE)


#: ``mmu_interval_notifier_ops.invalidate(sub, range, cur_seq) -> bool``
IntervalInvalidateFn = Callable[["MmuIntervalNotifier", MmuNotifierRange, int], Awaitable[bool]]


class MmuIntervalNotifierOps:
    """``struct mmu_interval_notifier_ops``: ``invalidate`` must call
    ``mmu_interval_set_seq(sub, cur_seq)`` under the driver lock that the
    driver's ``mmu_interval_read_retry`` runs under; it returns False only
    for a non-blockable range (it would have had to sleep)."""

    __slots__ = ("invalidate",)

    def __init__(self, invalidate: IntervalInvalidateFn) -> None:
        self.invalidate = invalidate


class MmuIntervalNotifier:
    """``struct mmu_interval_notifier``: [start, last] of ``mm`` in the mm's
    interval tree (``in_tree``: ``!RB_EMPTY_NODE``), its own
    ``invalidate_seq`` (access key ``(sub, "invalidate_seq")``), and
    ``freed`` (its owner freed it: no callback may run any more)."""

    __slots__ = ("ops", "mm", "start", "last", "invalidate_seq", "in_tree", "owner", "freed",
                 "__mmemu_name__")

    def __init__(self, ops: MmuIntervalNotifierOps | None = None, *,
                 name: str = "mmu_interval_notifier", owner: Any = None) -> None:
        self.ops = ops
        self.mm: Any = None
        self.start = 0
        self.last = 0
        self.invalidate_seq = 0
        self.in_tree = False
        self.owner = owner
        self.freed = False
        self.__mmemu_name__ = name

    @property
    def seq_key(self) -> tuple[Any, str]:
        return (self, "invalidate_seq")

    def overlaps(self, start: int, end: int) -> bool:
        """Does [start, end) meet [self.start, self.last]?"""
        return self.start < end and start <= self.last

    def __repr__(self) -> str:
        return (f"<MmuIntervalNotifier {self.__mmemu_name__} [{self.start:#x}, {self.last:#x}] "
                f"seq {self.invalidate_seq}>")


def _mmn_lock(mm: Any) -> Any:
    mmn = mm.mmu_notifier_mm if mm is not None else None
    return mmn.lock if mmn is not None else None


# Which lock guards which field (mmemu.check.lockset): the hlist is changed
# under mmu_notifier_mm->lock and walked under SRCU ("hlist_add_head_rcu
# ... under the spinlock", mmu_notifier.c); a notifier's place in it
# (hlist_unhashed, read locklessly by unregister) and mmu_notifier_get's
# users count with it.  Modern: "subscriptions->lock protects
# invalidate_seq, active_invalidate_ranges, the interval tree and the
# deferred list" -- read and written only under it.
guarded_by(MmuNotifierMm, "list", lambda mmn: mmn.lock, reads=False,
           why="mmu_notifier_mm->lock serialises the hlist's writers")
guarded_by(MmuNotifierMm, "itree", lambda mmn: mmn.lock,
           stores=("invalidate_seq", "active_invalidate_ranges"),
           why="subscriptions->lock protects the interval tree and its seq")
guarded_by(MmuNotifier, "hlist", lambda mn: _mmn_lock(mn.mm), reads=False,
           stores=("hashed", "users"),
           why="mmu_notifier_mm->lock protects the notifier's hlist node and users")
guarded_by(MmuIntervalNotifier, "in_tree", lambda sub: _mmn_lock(sub.mm), reads=False,
           stores=("in_tree",), why="subscriptions->lock protects the interval tree")


def itree_key(mmn: MmuNotifierMm) -> tuple[Any, str]:
    """Access key of the interval tree, its seq, count and deferred list."""
    return (mmn, "itree")


def is_modern(mm: Any) -> bool:
    """Was the kernel that owns ``mm`` booted with the modern notifier API?"""
    kernel = getattr(mm, "kernel", None)
    return getattr(kernel, "api", "2.6.27") == "modern"


class non_block:
    """``non_block_start()`` / ``non_block_end()`` around a callback of a
    non-blockable range (and around arch_invalidate_secondary_tlbs): the CPU
    may not sleep, ``might_sleep`` reports it (``cpu.data["atomic_reason"]``)."""

    def __init__(self, why: str, active: bool = True) -> None:
        self.why = why
        self.active = active
        self.cpu: Any = None
        self.prev: Any = None

    def __enter__(self) -> non_block:
        if self.active:
            sim = current_simulation()
            self.cpu = sim.running
            if self.cpu is not None:
                self.prev = self.cpu.data.get("atomic_reason")
                if not self.prev:
                    self.cpu.data["atomic_reason"] = self.why
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cpu is not None:
            if self.prev:
                self.cpu.data["atomic_reason"] = self.prev
            else:
                self.cpu.data.pop("atomic_reason", None)


def _mm_name(mm: Any) -> str:
    return str(getattr(mm, "__mmemu_name__", "mm"))


def list_key(mmn: MmuNotifierMm) -> tuple[Any, str]:
    """Access key of the notifier hlist (and of each notifier's place in it)."""
    return (mmn, "list")


def list_change(mmn: MmuNotifierMm) -> dict[str, tuple[Any, ...]]:
    """The accesses of a step that changes the hlist (it reads it too):
    ``step(label, **list_change(mmn))``."""
    k = list_key(mmn)
    return {"reads": (k,), "writes": (k,)}


def mm_key(mm: Any) -> tuple[Any, str]:
    """The access key of ``mm->mmu_notifier_mm`` (the pointer itself)."""
    return (mm, "mmu_notifier_mm")


def mmu_notifier_srcu() -> SrcuStruct:
    """The SRCU domain the notifier lists are walked under (one per kernel)."""
    sim = current_simulation()
    kernel = sim.data.get("kernel")
    store: dict[str, Any] = kernel.data if kernel is not None else sim.data
    ss = store.get("mmu_notifier_srcu")
    if ss is None:
        ss = store["mmu_notifier_srcu"] = SrcuStruct("mmu_notifier_srcu")
        # call_srcu callbacks still queued run at the end of the execution
        sim.at_end(lambda _sim: ss.run_ready_callbacks())
    assert isinstance(ss, SrcuStruct)
    return ss


def mm_has_notifiers(mm: Any) -> bool:
    return getattr(mm, "mmu_notifier_mm", None) is not None


async def _has_notifiers(mm: Any, what: str) -> bool:
    """The call site's ``if (mm_has_notifiers(mm))``: one step."""
    await step(f"{what}: mm_has_notifiers", reads=(mm_key(mm),))
    return mm_has_notifiers(mm)


# ----------------------------------------------------- checker interface
#
# mm/ never imports mmemu/check: a checker appends an observer to
# ``kernel.notifier_hooks``, and the code below reports to it every callback
# it makes (``callback_begin`` / ``callback_end``) and what the call sites
# promise (``notifier_event``: a bracket begins or is established, a page or
# range was invalidated, a notifier is hashed or unregistered).


def _observers(mm: Any) -> list[Any]:
    kernel = getattr(mm, "kernel", None)
    return getattr(kernel, "notifier_hooks", None) or []


def _report(mm: Any, event: str, *args: Any) -> None:
    for o in _observers(mm):
        o.notifier_event(event, mm, *args)


async def _call(mm: Any, mn: Any, what: str, fn: Callable[..., Awaitable[Any]],
                *args: Any) -> Any:
    """``fn(mn, *args)``: the notifier's ->what, seen by the observers.

    The steps that enter and leave the callback read ``mn`` (mn->ops), so
    that the explorer orders them against the step of a driver that frees
    its notifier once unregister returned (it writes ``mn``)."""
    observers = _observers(mm)
    touch(reads=(mn,))
    for o in observers:
        o.callback_begin(mm, mn, what, args)
    ret = await fn(mn, *args)
    touch(reads=(mn,))
    for o in observers:
        o.callback_end(mm, mn, what, args, ret)
    return ret


async def _walk(mm: Any, what: str) -> tuple[SrcuStruct, int, list[MmuNotifier]]:
    """srcu_read_lock, then read the hlist once (hlist_for_each_entry_rcu)."""
    ss = mmu_notifier_srcu()
    idx = await srcu_read_lock(ss)
    mmn = mm.mmu_notifier_mm
    await step(f"{what}: hlist_for_each_entry_rcu", reads=(list_key(mmn),))
    return ss, idx, list(mmn.list)


# ------------------------------------------------------------- call sites


async def __mmu_notifier_invalidate_range_start(mm: Any, start: int, end: int) -> None:
    ss, idx, notifiers = await _walk(mm, "invalidate_range_start")
    for mn in notifiers:
        if mn.ops.invalidate_range_start is not None:
            _check_live(mn, "invalidate_range_start")
            await _call(mm, mn, "invalidate_range_start", mn.ops.invalidate_range_start,
                        mm, start, end)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_invalidate_range_end(mm: Any, start: int, end: int) -> None:
    ss, idx, notifiers = await _walk(mm, "invalidate_range_end")
    for mn in notifiers:
        if mn.ops.invalidate_range_end is not None:
            _check_live(mn, "invalidate_range_end")
            await _call(mm, mn, "invalidate_range_end", mn.ops.invalidate_range_end,
                        mm, start, end)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_invalidate_page(mm: Any, address: int) -> None:
    ss, idx, notifiers = await _walk(mm, "invalidate_page")
    for mn in notifiers:
        if mn.ops.invalidate_page is not None:
            _check_live(mn, "invalidate_page")
            await _call(mm, mn, "invalidate_page", mn.ops.invalidate_page, mm, address)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_clear_flush_young(mm: Any, address: int) -> bool:
    young = False
    ss, idx, notifiers = await _walk(mm, "clear_flush_young")
    for mn in notifiers:
        if mn.ops.clear_flush_young is not None:
            _check_live(mn, "clear_flush_young")
            young = bool(await _call(mm, mn, "clear_flush_young", mn.ops.clear_flush_young,
                                     mm, address)) or young
    await srcu_read_unlock(ss, idx)
    return young


async def __mmu_notifier_test_young(mm: Any, address: int) -> bool:
    young = False
    ss, idx, notifiers = await _walk(mm, "test_young")
    for mn in notifiers:
        if mn.ops.test_young is not None:
            _check_live(mn, "test_young")
            if await _call(mm, mn, "test_young", mn.ops.test_young, mm, address):
                young = True
                break
    await srcu_read_unlock(ss, idx)
    return young


async def __mmu_notifier_change_pte(mm: Any, address: int, page: Any) -> None:
    """Call every ``->change_pte``.  2.6.27 generation (2.6.32's code): a
    notifier without ``->change_pte`` gets ``->invalidate_page`` instead,
    since nothing else tells it (no start/end around KSM's pte changes yet).
    Modern: no fallback (6bdb913f0a70 removed it when it bracketed every
    set_pte_at_notify with start/end, which is what such a notifier sees)."""
    modern = is_modern(mm)
    ss, idx, notifiers = await _walk(mm, "change_pte")
    for mn in notifiers:
        if mn.ops.change_pte is not None:
            _check_live(mn, "change_pte")
            await _call(mm, mn, "change_pte", mn.ops.change_pte, mm, address, page)
        elif mn.ops.invalidate_page is not None and not modern:
            await _call(mm, mn, "invalidate_page", mn.ops.invalidate_page, mm, address)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_release(mm: Any) -> None:
    """exit_mmap, before the pages are unmapped: every ->release runs while
    its notifier is still hashed, then all are unhashed.

    1. srcu_read_lock; call ->release of every notifier on the list
    2. under mmu_notifier_mm->lock, unhash them all
    3. synchronize_srcu: no walker still calls one of them

    There is 1 critical interleaving that matters:
    - a reclaim's invalidate_page (rmap on another CPU) while 1 runs: the
      notifier is still hashed, so the walker calls it too, and the page stays
      allocated until that call returns.  Unhashing first (the 2012 bug,
      mutant ``mmu_notifier:release-after-unhash``) lets the walker miss the
      notifier between the unhash and ->release and free a page the secondary
      MMU still maps.

    ->release called twice (here and by a racing unregister) is harmless: the
    driver zaps an already empty TLB.
    """
    mmn = mm.mmu_notifier_mm
    ss = mmu_notifier_srcu()
    if mmemu.mutant(MUTANT_RELEASE_AFTER_UNHASH):
        # 3.7's loop: unhash one, drop the lock, ->release, retake the lock.
        await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
        while True:
            await step("2. hlist_del_init_rcu (before ->release)", **list_change(mmn))
            if not mmn.list:
                break
            mn = mmn.list.pop(0)
            mn.hashed = False
            await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
            idx = await srcu_read_lock(ss)
            if mn.ops.release is not None:
                _check_live(mn, "release")
                await _call(mm, mn, "release", mn.ops.release, mm)
            await srcu_read_unlock(ss, idx)
            await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
        await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
        await synchronize_srcu(ss)
        return
    idx = await srcu_read_lock(ss)
    await step("1. hlist_for_each_entry_rcu", reads=(list_key(mmn),))
    for mn in list(mmn.list):
        if mn.ops.release is not None:
            _check_live(mn, "release")
            await _call(mm, mn, "release", mn.ops.release, mm)
    await srcu_read_unlock(ss, idx)
    await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
    await step("2. hlist_del_init_rcu (all)", **list_change(mmn))
    for mn in mmn.list:
        mn.hashed = False
    mmn.list.clear()
    await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
    await synchronize_srcu(ss)


# ----------------------------------------------- modern: the hlist notifiers


def _check_live(mn: MmuNotifier, what: str) -> None:
    """KASAN for notifiers: a walker is about to call a callback of ``mn``
    (the running step reads the notifier: a free of it is ordered against
    this call)."""
    touch(reads=(mn,))
    if mn.freed and mn.ops.free_notifier is None:
        current_simulation().fail(NotifierUseAfterFree(
            f"{what} calls {mn.__mmemu_name__} after its driver freed it: the walker read "
            f"the notifier list before mmu_notifier_unregister unhashed it, and unregister "
            f"returned without waiting for that walker (synchronize_srcu)"))
    if mn.freed:
        current_simulation().fail(NotifierUseAfterFree(
            f"{what} calls {mn.__mmemu_name__} after its free_notifier ran (the SRCU grace "
            f"period of mmu_notifier_put did not cover this walker)"))


async def mn_hlist_invalidate_range_start(mmn: MmuNotifierMm, range: MmuNotifierRange) -> int:
    """Call every ``->invalidate_range_start(mn, range)``.

    A non-blockable range runs each callback in non-block context; a
    callback may then fail with -EAGAIN.  The walk goes on (every notifier
    is asked), and if one failed, the notifiers whose start succeeded get
    their ``->invalidate_range_end`` now: the caller sees -EAGAIN and must
    not call invalidate_range_end itself.  A blockable start that fails is a
    WARN_ON (MmuNotifierViolation).

    The end-on-failure loop is Sean Christopherson's "mm/mmu_notifiers:
    ensure range_end() is paired with range_start()" (March 2021, v5.12;
    Fixes: 93065ac753e4, 4.19, which introduced non-blockable ranges).
    Before it nothing ended the notifiers that had started: KVM's
    mmu_notifier_count stayed raised and the guest faulted forever (mutant
    ``mmu_notifier:nonblock-no-end``).  The kernel calls ->invalidate_range_end
    of *every* notifier that has one and forbids a notifier that can fail
    its start from having one (WARN_ON); mmemu ends the notifiers whose
    start succeeded, which is the same set for drivers that keep that rule.
    """
    blockable = mmu_notifier_range_blockable(range)
    ss, idx, notifiers = await _walk(range.mm, "invalidate_range_start")
    ret = 0
    started: list[MmuNotifier] = []
    for mn in notifiers:
        if mn.ops.invalidate_range_start is None:
            started.append(mn)
            continue
        _check_live(mn, "invalidate_range_start")
        with non_block(f"inside {mn.__mmemu_name__}->invalidate_range_start of a "
                       f"non-blockable range {range!r}", not blockable):
            _ret = int(await _call(range.mm, mn, "invalidate_range_start",
                                   mn.ops.invalidate_range_start, range) or 0)
        if _ret:
            if blockable or _ret != -EAGAIN:
                current_simulation().fail(MmuNotifierViolation(
                    f"WARN_ON: {mn.__mmemu_name__}->invalidate_range_start returned {_ret} "
                    f"for a {'blockable' if blockable else 'non-blockable'} range {range!r} "
                    f"(only a non-blockable start may fail, and only with -EAGAIN)"))
            ret = _ret
        else:
            started.append(mn)
    if ret:
        range.failed = True
        if mmemu.mutant(MUTANT_NONBLOCK_NO_END):
            started = []
        elif started:
            reach("mmu_notifier: -EAGAIN: ->invalidate_range_end of the notifiers that started")
        for mn in started:
            if mn.ops.invalidate_range_end is not None:
                with non_block(f"inside {mn.__mmemu_name__}->invalidate_range_end of a "
                               f"non-blockable range {range!r}"):
                    await _call(range.mm, mn, "invalidate_range_end",
                                mn.ops.invalidate_range_end, range)
    await srcu_read_unlock(ss, idx)
    return ret


async def mn_hlist_invalidate_end(mmn: MmuNotifierMm, range: MmuNotifierRange) -> None:
    blockable = mmu_notifier_range_blockable(range)
    ss, idx, notifiers = await _walk(range.mm, "invalidate_range_end")
    for mn in notifiers:
        if mn.ops.invalidate_range_end is not None:
            _check_live(mn, "invalidate_range_end")
            with non_block(f"inside {mn.__mmemu_name__}->invalidate_range_end of a "
                           f"non-blockable range {range!r}", not blockable):
                await _call(range.mm, mn, "invalidate_range_end", mn.ops.invalidate_range_end,
                            range)
    await srcu_read_unlock(ss, idx)


# ---------------------------------------------- modern: interval notifiers


def _mn_itree_is_invalidating(mmn: MmuNotifierMm) -> bool:
    return bool(mmn.invalidate_seq & 1)


def _itree_insert(mmn: MmuNotifierMm, sub: MmuIntervalNotifier) -> None:
    """interval_tree_insert: the list stays sorted by (start, last); equal
    intervals keep insertion order (deterministic)."""
    k = 0
    while k < len(mmn.itree) and (mmn.itree[k].start, mmn.itree[k].last) <= (sub.start, sub.last):
        k += 1
    mmn.itree.insert(k, sub)
    sub.in_tree = True


def _itree_remove(mmn: MmuNotifierMm, sub: MmuIntervalNotifier) -> None:
    mmn.itree.remove(sub)
    sub.in_tree = False


async def mn_itree_inv_start_range(mmn: MmuNotifierMm, range: MmuNotifierRange,
                                   ) -> tuple[list[MmuIntervalNotifier], int]:
    """I1. under the lock: active_invalidate_ranges++; if an interval meets
    the range, make invalidate_seq odd.  Returns the intervals that meet the
    range (interval_tree_iter_first/next: the tree cannot change while
    active_invalidate_ranges > 0, inserts and removes are deferred) and the
    seq the callbacks must store (``cur_seq``)."""
    key = itree_key(mmn)
    await spin_lock(mmn.lock, label="I1. spin_lock(subscriptions->lock)")
    await step("I1. active_invalidate_ranges++; interval_tree_iter_first", reads=(key,),
               writes=(key,))
    mmn.active_invalidate_ranges += 1
    if mmn.active_invalidate_ranges >= 2:
        reach("two invalidations of one mm in flight at once")
    hits = [sub for sub in mmn.itree if sub.overlaps(range.start, range.end)]
    if hits:
        mmn.invalidate_seq |= 1
    seq = mmn.invalidate_seq
    await spin_unlock(mmn.lock, label="I1. spin_unlock(subscriptions->lock)")
    return hits, seq


async def mn_itree_inv_end(mmn: MmuNotifierMm) -> None:
    """I3. under the lock: --active_invalidate_ranges; the last one ends the
    invalidation (invalidate_seq even again), runs the deferred inserts and
    removes, and wakes read_begin and remove waiters."""
    key = itree_key(mmn)
    await spin_lock(mmn.lock, label="I3. spin_lock(subscriptions->lock)")
    await step("I3. --active_invalidate_ranges", reads=(key,), writes=(key,))
    mmn.active_invalidate_ranges -= 1
    if (mmn.active_invalidate_ranges and not mmemu.mutant(MUTANT_ITREE_END_FIRST)) \
            or not _mn_itree_is_invalidating(mmn):
        await spin_unlock(mmn.lock, label="I3. spin_unlock(subscriptions->lock)")
        return
    mmn.invalidate_seq += 1
    deferred = list(mmn.deferred_list)
    mmn.deferred_list.clear()
    for sub in deferred:
        if not sub.in_tree:
            _itree_insert(mmn, sub)
        else:
            _itree_remove(mmn, sub)
    await spin_unlock(mmn.lock, label="I3. spin_unlock(subscriptions->lock)")
    await wake_up_all(mmn.wq, label="I3. wake_up_all(subscriptions->wq)")


async def mn_itree_invalidate(mmn: MmuNotifierMm, range: MmuNotifierRange) -> int:
    """I1, then I2: ``->invalidate(sub, range, cur_seq)`` of every interval
    that meets the range.  A non-blockable range whose callback returns
    False ends the invalidation here (I3) and returns -EAGAIN."""
    blockable = mmu_notifier_range_blockable(range)
    hits, cur_seq = await mn_itree_inv_start_range(mmn, range)
    for sub in hits:
        await step("I2. interval_sub->ops->invalidate", reads=(sub,))
        if sub.freed:
            current_simulation().fail(NotifierUseAfterFree(
                f"invalidate of {range!r} calls {sub.__mmemu_name__}->invalidate after its "
                f"owner freed it (mmu_interval_notifier_remove returned while this "
                f"invalidation was still in progress)"))
        assert sub.ops is not None
        with non_block(f"inside {sub.__mmemu_name__}->invalidate of a non-blockable range "
                       f"{range!r}", not blockable):
            ok = bool(await _call(range.mm, sub, "invalidate", sub.ops.invalidate, range,
                                  cur_seq))
        if not ok:
            if blockable:
                current_simulation().fail(MmuNotifierViolation(
                    f"WARN_ON: {sub.__mmemu_name__}->invalidate returned false for a "
                    f"blockable range {range!r}"))
            # "On -EAGAIN the non-blocking caller is not allowed to call
            # invalidate_range_end()": end the invalidation here.
            if not mmemu.mutant(MUTANT_ITREE_NONBLOCK_NO_END):
                reach("mmu_notifier: -EAGAIN: mn_itree_inv_end of the failed interval invalidation")
                await mn_itree_inv_end(mmn)
            return -EAGAIN
    return 0


async def mn_itree_release(mmn: MmuNotifierMm, mm: Any) -> None:
    """exit_mmap: every interval is invalidated with a RELEASE range over
    the whole address space (blockable; a callback may not fail)."""
    range = MmuNotifierRange(mm, 0, ULONG_MAX, event=MMU_NOTIFY_RELEASE,
                             flags=MMU_NOTIFIER_RANGE_BLOCKABLE)
    if await mn_itree_invalidate(mmn, range) == 0:
        await mn_itree_inv_end(mmn)


async def mmu_interval_read_begin(sub: MmuIntervalNotifier) -> int:
    """Begin a read side critical section against a VA range.

    The collision-retry protocol of a mirror (HMM, ODP) against invalidations
    of its interval::

      mirror (map)                              invalidation (any CPU)
      R1. seq = mmu_interval_read_begin(sub)    I1. subscriptions->invalidate_seq
          (waits while an invalidation                odd (under its lock)
          that hit sub is in progress)          I2. ->invalidate: driver lock;
      R2. walk/fault the CPU page table             mmu_interval_set_seq(sub,
          (hmm_range_fault; no page refs)             cur_seq); zap; unlock
      R3. driver lock                           (ptes cleared, pages freed)
      R4. if mmu_interval_read_retry(sub, seq): I3. invalidate_seq even;
          unlock, goto R1                           wake R1's waiters
      R5. program the device; unlock

    There are 3 critical interleavings that matter:
    - I2 between R1 and R4: set_seq changed sub's seq, R4 retries (the pages
      R2 saw may be freed);
    - R1 between I1 and I3: sub's seq equals the odd invalidate_seq (I2
      already stored it, or the sub was inserted during the invalidation),
      R1 sleeps until I3 so R2 sees the cleared ptes;
    - R4 before I2's set_seq: I2 takes the driver lock after R5, so its zap
      removes what R5 installed.
    Harmless: an invalidation that does not meet sub (I1 leaves the seq
    even; R1 does not wait, R4 does not retry).
    """
    mmn: MmuNotifierMm = sub.mm.mmu_notifier_mm
    key = itree_key(mmn)
    await spin_lock(mmn.lock, label="R1. spin_lock(subscriptions->lock)")
    await step("R1. seq = interval_sub->invalidate_seq; is_invalidating?",
               reads=(sub.seq_key, key))
    seq = sub.invalidate_seq
    is_invalidating = seq == mmn.invalidate_seq
    await spin_unlock(mmn.lock, label="R1. spin_unlock(subscriptions->lock)")
    if is_invalidating:
        reach("mmu_interval_read_begin waited for an invalidation of its interval")
        await wait_event(mmn.wq, lambda: mmn.invalidate_seq != seq,
                         label="R1. wait_event(subscriptions->wq, invalidate_seq != seq)",
                         reads=(READ_ONCE(key),))
    return seq


async def mmu_interval_read_retry(sub: MmuIntervalNotifier, seq: int) -> bool:
    """R4: True if an invalidation hit ``sub`` since read_begin returned
    ``seq``.  Call it under the lock the driver's ->invalidate takes around
    mmu_interval_set_seq."""
    await step("R4. mmu_interval_read_retry", reads=(sub.seq_key,))
    return sub.invalidate_seq != seq


async def mmu_interval_check_retry(sub: MmuIntervalNotifier, seq: int) -> bool:
    """An unlocked hint (READ_ONCE): True means read_retry will say retry."""
    await step("mmu_interval_check_retry", reads=(sub.seq_key,))
    return sub.invalidate_seq != seq


async def mmu_interval_set_seq(sub: MmuIntervalNotifier, cur_seq: int,
                               *, label: str | None = None) -> None:
    """I2: from ->invalidate, under the driver lock: store the (odd) seq."""
    await step(label or "I2. mmu_interval_set_seq", writes=(sub.seq_key,))
    sub.invalidate_seq = cur_seq


async def __mmu_interval_notifier_insert(sub: MmuIntervalNotifier, mm: Any,
                                         mmn: MmuNotifierMm, start: int, length: int,
                                         ops: MmuIntervalNotifierOps) -> int:
    """N1. under the lock: during an invalidation the insert is deferred to
    its end (the tree must not change under I2's walk) and the new interval
    takes the odd seq, so its first read_begin waits for that end -- it
    missed the ->invalidate of a range that may cover it.  Otherwise it goes
    into the tree with seq = invalidate_seq - 1 (odd, never current)."""
    sub.mm = mm
    sub.start = start
    sub.last = start + length - 1
    sub.ops = ops
    key = itree_key(mmn)
    await spin_lock(mmn.lock, label="N1. spin_lock(subscriptions->lock)")
    await step("N1. interval_tree_insert (or defer)", reads=(key,), writes=(key, sub.seq_key))
    if mmn.active_invalidate_ranges:
        reach("mmu_interval_notifier_insert during an invalidation")
    if mmn.active_invalidate_ranges and not mmemu.mutant(MUTANT_INTERVAL_NO_DEFER):
        if not _mn_itree_is_invalidating(mmn):
            mmn.invalidate_seq |= 1
        mmn.deferred_list.insert(0, sub)
        sub.invalidate_seq = mmn.invalidate_seq
    else:
        sub.invalidate_seq = (mmn.invalidate_seq | 1) - 2
        _itree_insert(mmn, sub)
    await spin_unlock(mmn.lock, label="N1. spin_unlock(subscriptions->lock)")
    _report(mm, "hashed", sub)
    return 0


async def mmu_interval_notifier_insert(sub: MmuIntervalNotifier, mm: Any, start: int,
                                       length: int, ops: MmuIntervalNotifierOps) -> int:
    """Insert ``sub`` over [start, start + length) of ``mm``.  The first
    interval of an mm registers the (NULL) notifier with mm_take_all_locks,
    so it cannot split a start/end section; later ones only take the lock."""
    with mmemu.span("mmu_interval_notifier_insert"):
        await step("N0. mm->notifier_subscriptions && has_itree?", reads=(mm_key(mm),))
        mmn = mm.mmu_notifier_mm
        if mmn is None or not mmn.has_itree:
            ret = await mmu_notifier_register(None, mm)
            if ret:
                return ret
            mmn = mm.mmu_notifier_mm
        return await __mmu_interval_notifier_insert(sub, mm, mmn, start, length, ops)


async def mmu_interval_notifier_remove(sub: MmuIntervalNotifier) -> None:
    """Remove ``sub``; on return no ->invalidate of it runs or will run.

    M1. under the lock: during an invalidation the removal is deferred to
        its end (or, for an insert still deferred, simply cancelled);
    M2. wait_event(subscriptions->wq, invalidate_seq != seq): the
        invalidation that may be calling sub->invalidate ends.
    Returning before M2 (mutant ``mmu_notifier:interval-remove-nowait``)
    lets the owner free the interval while I2 is about to call it.
    """
    mm = sub.mm
    mmn: MmuNotifierMm = mm.mmu_notifier_mm
    key = itree_key(mmn)
    seq = 0
    with mmemu.span("mmu_interval_notifier_remove"):
        await spin_lock(mmn.lock, label="M1. spin_lock(subscriptions->lock)")
        await step("M1. interval_tree_remove (or defer)", reads=(key,), writes=(key,))
        if _mn_itree_is_invalidating(mmn):
            if not sub.in_tree:
                mmn.deferred_list.remove(sub)
            else:
                mmn.deferred_list.insert(0, sub)
                seq = mmn.invalidate_seq
        else:
            _itree_remove(mmn, sub)
        await spin_unlock(mmn.lock, label="M1. spin_unlock(subscriptions->lock)")
        if seq and not mmemu.mutant(MUTANT_INTERVAL_REMOVE_NOWAIT):
            reach("mmu_interval_notifier_remove: waits for the invalidation in progress")
            await wait_event(mmn.wq, lambda: mmn.invalidate_seq != seq,
                             label="M2. wait_event(subscriptions->wq, invalidate_seq != seq)",
                             reads=(READ_ONCE(key),))


# ----------------------------------------------------- modern: call sites


async def __mmu_notifier_invalidate_range_start_modern(range: MmuNotifierRange) -> int:
    mmn: MmuNotifierMm = range.mm.mmu_notifier_mm
    await step("invalidate_range_start: has_itree? hlist_empty?", reads=(mm_key(range.mm),))
    if mmn.has_itree:
        ret = await mn_itree_invalidate(mmn, range)
        if ret:
            range.failed = True
            return ret
    return await mn_hlist_invalidate_range_start(mmn, range)


async def __mmu_notifier_invalidate_range_end_modern(range: MmuNotifierRange) -> None:
    mmn: MmuNotifierMm = range.mm.mmu_notifier_mm
    if range.failed:
        current_simulation().fail(MmuNotifierViolation(
            f"invalidate_range_end of {range!r} after its non-blockable start failed with "
            f"-EAGAIN (the callers must skip the range: the started notifiers were ended "
            f"already)"))
    if mmn.has_itree:
        await mn_itree_inv_end(mmn)
    await mn_hlist_invalidate_end(mmn, range)


def _as_range(mm: Any, start: int | None, end: int | None, event: str) -> MmuNotifierRange:
    if isinstance(mm, MmuNotifierRange):
        return mm
    assert start is not None and end is not None
    return MmuNotifierRange(mm, start, end, event=event)


async def mmu_notifier_invalidate_range_start_nonblock(range: MmuNotifierRange) -> int:
    """The OOM reaper's start: the range is non-blockable; 0 or -EAGAIN (then
    do not call mmu_notifier_invalidate_range_end for it)."""
    range.flags &= ~MMU_NOTIFIER_RANGE_BLOCKABLE
    if not await _has_notifiers(range.mm, "mmu_notifier_invalidate_range_start_nonblock"):
        return 0
    if not is_modern(range.mm):
        raise mmemu.ModelError("mmu_notifier_invalidate_range_start_nonblock needs the "
                               "modern notifier API (boot the kernel with api='modern')")
    _report(range.mm, "range_start_begin", range.start, range.end)
    with mmemu.span("mmu_notifier_invalidate_range_start_nonblock"):
        ret = await __mmu_notifier_invalidate_range_start_modern(range)
    _report(range.mm, "range_start_done", range.start, range.end, bool(ret))
    return ret


# ------------------------------------------------- modern: get/put


async def call_srcu(ss: SrcuStruct, arg: Any, func: Callable[[Any], None]) -> None:
    """Run ``func(arg)`` after an SRCU grace period of ``ss`` (kernel/rcu/srcutree.c)."""
    sim = current_simulation()
    await step(f"call_srcu({ss.name})", reads=tuple(ss.key(c.id) for c in sim.cpu_list))
    ss.callbacks.append((ss.snapshot(), func, arg))
    ss.run_ready_callbacks()


async def find_get_mmu_notifier(mm: Any, ops: MmuNotifierOps) -> MmuNotifier | None:
    mmn: MmuNotifierMm = mm.mmu_notifier_mm
    await spin_lock(mmn.lock, label="G1. spin_lock(mmu_notifier_mm->lock)")
    await step("G1. find_get_mmu_notifier: users++", **list_change(mmn))
    found = None
    for mn in mmn.list:
        if mn.ops is ops and mn.mm is mm:
            mn.users += 1
            found = mn
            break
    await spin_unlock(mmn.lock, label="G1. spin_unlock(mmu_notifier_mm->lock)")
    return found


async def mmu_notifier_get_locked(ops: MmuNotifierOps, mm: Any) -> MmuNotifier | int:
    """The notifier of ``ops`` on ``mm``, shared and refcounted (caller holds
    mmap_sem for write).  G1. an existing one: users++; else G2. allocate it
    with ``ops.alloc_notifier(mm)`` and register it (users = 1).  Returns
    the notifier or a negative errno."""
    await step("G0. mm->mmu_notifier_mm?", reads=(mm_key(mm),))
    if mm.mmu_notifier_mm is not None:
        mn = await find_get_mmu_notifier(mm, ops)
        if mn is not None:
            return mn
    if ops.alloc_notifier is None:
        raise mmemu.ModelError("mmu_notifier_get: ops has no alloc_notifier")
    mn = ops.alloc_notifier(mm)
    mn.ops = ops
    _report(mm, "get_alloc", mn)
    ret = await __mmu_notifier_register(mn, mm)  # mm, users = 1
    if ret:
        if ops.free_notifier is not None:
            ops.free_notifier(mn)
        mn.freed = True
        return ret
    return mn


async def mmu_notifier_get(ops: MmuNotifierOps, mm: Any) -> MmuNotifier | int:
    with mmemu.span("mmu_notifier_get"):
        await down_write(mm.mmap_sem, label="mmu_notifier_get: down_write(mmap_sem)")
        ret = await mmu_notifier_get_locked(ops, mm)
        await up_write(mm.mmap_sem, label="mmu_notifier_get: up_write(mmap_sem)")
        return ret


#: mmu_notifier_synchronize found a free_notifier still queued
SYNCHRONIZE_WAITED = "mmu_notifier_synchronize: waited for a queued free_notifier"


def module_unloaded(module: str) -> None:
    """Model-only: the code of ``module`` (the Python module of a driver's
    callbacks) is gone, as a kernel module's text is after its exit
    function returned.  A ``free_notifier`` of it that an SRCU callback
    runs afterwards is a use-after-free: what mmu_notifier_synchronize in
    the module's exit is for."""
    current_simulation().data.setdefault("mmu_notifier.unloaded", set()).add(module)


def _mmu_notifier_free_rcu(mn: MmuNotifier) -> None:
    free = mn.ops.free_notifier
    if free is not None:
        module = getattr(free, "__module__", None)
        if module in current_simulation().data.get("mmu_notifier.unloaded", ()):
            current_simulation().fail(NotifierUseAfterFree(
                f"the SRCU callback of mmu_notifier_put runs {mn.__mmemu_name__}'s "
                f"free_notifier after its module {module} was unloaded (the module's exit "
                f"must wait for it: mmu_notifier_synchronize)"))
            return
        free(mn)
    mn.freed = True


async def mmu_notifier_put(mn: MmuNotifier) -> None:
    """Drop a reference from mmu_notifier_get.  The last one unhashes the
    notifier (no ->release: the driver has stopped using it) and frees it
    with ``ops.free_notifier`` after an SRCU grace period, when no walker
    that read the list before the unhash can still call it.

    P1. under mmu_notifier_mm->lock: --users; not the last: done
    P2. hlist_del_init_rcu
    P3. call_srcu(free_notifier)
    """
    mm = mn.mm
    mmn: MmuNotifierMm = mm.mmu_notifier_mm
    with mmemu.span("mmu_notifier_put"):
        await spin_lock(mmn.lock, label="P1. spin_lock(mmu_notifier_mm->lock)")
        await step("P1. --users; P2. hlist_del_init_rcu", **list_change(mmn))
        if mn.users <= 0:
            await spin_unlock(mmn.lock, label="P1. spin_unlock(mmu_notifier_mm->lock)")
            current_simulation().fail(MmuNotifierViolation(
                f"WARN_ON(!subscription->users): mmu_notifier_put of {mn.__mmemu_name__} "
                f"with no reference"))
            return
        mn.users -= 1
        last = mn.users == 0
        if last and mn.hashed:
            mmn.list.remove(mn)
            mn.hashed = False
        await spin_unlock(mmn.lock, label="P1. spin_unlock(mmu_notifier_mm->lock)")
        if last:
            await call_srcu(mmu_notifier_srcu(), mn, _mmu_notifier_free_rcu)


async def mmu_notifier_synchronize() -> None:
    """srcu_barrier: every free_notifier queued by mmu_notifier_put has run.
    A module whose notifiers come from mmu_notifier_get calls it in its exit
    function (2c7933f53f6b, v5.4), so that no free_notifier runs after its
    code is gone."""
    ss = mmu_notifier_srcu()
    if ss.callbacks:
        reach(SYNCHRONIZE_WAITED)
    while ss.callbacks:
        await synchronize_srcu(ss)


# The call-site functions (include/linux/mmu_notifier.h's inline wrappers).


async def mmu_notifier_invalidate_range_start(mm: Any, start: int | None = None,
                                              end: int | None = None, *,
                                              event: str = "UNMAP") -> None:
    """``(mm, start, end)`` or, modern, a ``MmuNotifierRange`` (made
    blockable, as the kernel's wrapper does)."""
    range = _as_range(mm, start, end, event)
    if await _has_notifiers(range.mm, "mmu_notifier_invalidate_range_start"):
        _report(range.mm, "range_start_begin", range.start, range.end)
        with mmemu.span("mmu_notifier_invalidate_range_start"):
            if is_modern(range.mm):
                range.flags |= MMU_NOTIFIER_RANGE_BLOCKABLE
                await __mmu_notifier_invalidate_range_start_modern(range)
            else:
                await __mmu_notifier_invalidate_range_start(range.mm, range.start, range.end)
        _report(range.mm, "range_start_done", range.start, range.end, range.failed)


async def mmu_notifier_invalidate_range_end(mm: Any, start: int | None = None,
                                            end: int | None = None, *,
                                            event: str = "UNMAP") -> None:
    range = _as_range(mm, start, end, event)
    if await _has_notifiers(range.mm, "mmu_notifier_invalidate_range_end"):
        _report(range.mm, "range_end_begin", range.start, range.end)
        with mmemu.span("mmu_notifier_invalidate_range_end"):
            if is_modern(range.mm):
                await __mmu_notifier_invalidate_range_end_modern(range)
            else:
                await __mmu_notifier_invalidate_range_end(range.mm, range.start, range.end)


async def mmu_notifier_invalidate_page(mm: Any, address: int) -> None:
    """2.6.27 only: ->invalidate_page was removed in v4.13, when its call
    sites (try_to_unmap_one, page_mkclean_one, KSM's write_protect_page,
    replace_page) started bracketing the pte change with range start/end.
    In the modern generation a call is a ModelError, not a silent bracket:
    the modern call sites of the model bracket themselves."""
    if is_modern(mm):
        raise mmemu.ModelError("mmu_notifier_invalidate_page does not exist in the modern "
                               "notifier API (removed in v4.13): bracket the pte change with "
                               "mmu_notifier_invalidate_range_start/end")
    if await _has_notifiers(mm, "mmu_notifier_invalidate_page"):
        with mmemu.span("mmu_notifier_invalidate_page"):
            await __mmu_notifier_invalidate_page(mm, address)
        _report(mm, "page_invalidated", address)


async def mmu_notifier_clear_flush_young(mm: Any, address: int) -> bool:
    if await _has_notifiers(mm, "mmu_notifier_clear_flush_young"):
        return await __mmu_notifier_clear_flush_young(mm, address)
    return False


async def mmu_notifier_clear_young(mm: Any, start: int, end: int) -> bool:
    """->clear_young (1d7715c676a1, 4.3): clear the accessed bits of [start,
    end) without a TLB flush (idle page tracking).  Modern generation only:
    in the 2.6.27 one it does not exist (a ModelError, not a silent no-op)."""
    if not is_modern(mm):
        raise mmemu.ModelError("mmu_notifier_clear_young (4.3) needs the modern notifier API "
                               "(boot the kernel with api='modern')")
    if await _has_notifiers(mm, "mmu_notifier_clear_young"):
        young = False
        ss, idx, notifiers = await _walk(mm, "clear_young")
        for mn in notifiers:
            if mn.ops.clear_young is not None:
                _check_live(mn, "clear_young")
                young = bool(await _call(mm, mn, "clear_young", mn.ops.clear_young,
                                         mm, start, end)) or young
        await srcu_read_unlock(ss, idx)
        return young
    return False


async def mmu_notifier_test_young(mm: Any, address: int) -> bool:
    if await _has_notifiers(mm, "mmu_notifier_test_young"):
        return await __mmu_notifier_test_young(mm, address)
    return False


async def mmu_notifier_change_pte(mm: Any, address: int, page: Any) -> None:
    if await _has_notifiers(mm, "mmu_notifier_change_pte"):
        await __mmu_notifier_change_pte(mm, address, page)
        _report(mm, "change_pte", address)


async def mmu_notifier_release(mm: Any) -> None:
    """exit_mmap.  Modern: the intervals first get a RELEASE invalidation
    (mn_itree_release), then the hlist notifiers their ->release."""
    if await _has_notifiers(mm, "mmu_notifier_release"):
        with mmemu.span("__mmu_notifier_release"):
            mmn: MmuNotifierMm = mm.mmu_notifier_mm
            if is_modern(mm) and mmn.has_itree:
                await mn_itree_release(mmn, mm)
            await __mmu_notifier_release(mm)


async def arch_invalidate_secondary_tlbs(mm: Any, start: int, end: int) -> None:
    """Modern API only: flush the TLBs that walk the CPU page tables
    (``->arch_invalidate_secondary_tlbs``, before 6.6 ``->invalidate_range``).
    Called where the CPU TLB is flushed, under the PTL, before the pages are
    freed: the callbacks run in non-block context."""
    if not await _has_notifiers(mm, "arch_invalidate_secondary_tlbs"):
        return
    with mmemu.span("arch_invalidate_secondary_tlbs"):
        ss, idx, notifiers = await _walk(mm, "arch_invalidate_secondary_tlbs")
        for mn in notifiers:
            fn = mn.ops.arch_invalidate_secondary_tlbs or mn.ops.invalidate_range
            if fn is not None:
                _check_live(mn, "arch_invalidate_secondary_tlbs")
                with non_block(f"inside {mn.__mmemu_name__}->arch_invalidate_secondary_tlbs "
                               f"(under the page-table lock)"):
                    await _call(mm, mn, "arch_invalidate_secondary_tlbs", fn, mm, start, end)
        await srcu_read_unlock(ss, idx)
    _report(mm, "secondary_tlbs_invalidated", start, end)


# ------------------------------------------------------ register/unregister


async def do_mmu_notifier_register(mn: MmuNotifier | None, mm: Any, take_mmap_sem: bool) -> int:
    """Hash ``mn`` on ``mm`` with every lock of the mm held.

    1. down_write(mmap_sem) (unless the caller holds it)
    2. mm_take_all_locks: waits for every start/end section in flight and
       holds off new ones (-EINTR on a pending signal)
    3. install mm->mmu_notifier_mm if it is the first notifier
    4. under mmu_notifier_mm->lock, hlist_add_head_rcu
    5. mm_drop_all_locks; up_write

    There are 2 critical interleavings that matter (a truncate, munmap or
    rmap walk on another CPU holds one of the mm's locks from range_start to
    range_end):
    - the section starts before 2: 2 waits for its lock, the section ends
      without calling the new notifier at all (start and end both missed:
      consistent);
    - 2 runs before the section starts: it sees the notifier at start and
      end (both delivered).
    Register never splits a start/end pair, so the driver's
    ``mmu_notifier_count`` stays balanced and no page is freed under a
    translation it established.

    Modern: ``mn`` None (mmu_interval_notifier_insert's first interval)
    only installs the subscriptions and sets ``has_itree`` at 4.
    """
    from mmemu.mm.mmap import mm_drop_all_locks, mm_take_all_locks

    if take_mmap_sem:
        await down_write(mm.mmap_sem, label="1. down_write(mmap_sem)")
    ret = 0
    locked = not mmemu.mutant(MUTANT_REGISTER_UNLOCKED)
    if locked:
        ret = await mm_take_all_locks(mm)
    if ret == 0:
        await step("3. mm->mmu_notifier_mm = mmu_notifier_mm", reads=(mm_key(mm),),
                   writes=(mm_key(mm),))
        if not mm_has_notifiers(mm):
            mm.mmu_notifier_mm = MmuNotifierMm(_mm_name(mm))
        mmn: MmuNotifierMm = mm.mmu_notifier_mm
        if mn is None:
            await step("4. has_itree = true", writes=(mm_key(mm),))
            mmn.has_itree = True
        else:
            # modern __mmu_notifier_register sets mm and users = 1 before the
            # lock (the notifier is not visible yet); 2.6.27's struct has no
            # mm field: the model keeps one in both generations.  users is
            # stored under the lock here, where the lockset checker (which
            # has no happens-before) sees it with the list change that
            # publishes it -- the same thing, since nobody can see it before
            mn.mm = mm
            await spin_lock(mmn.lock, label="4. spin_lock(mmu_notifier_mm->lock)")
            await step("4. hlist_add_head_rcu", **list_change(mmn))
            mmn.list.insert(0, mn)
            mn.hashed = True
            mn.users = 1
            _report(mm, "hashed", mn)
            await spin_unlock(mmn.lock, label="4. spin_unlock(mmu_notifier_mm->lock)")
        if locked:
            await mm_drop_all_locks(mm)
    if take_mmap_sem:
        await up_write(mm.mmap_sem, label="5. up_write(mmap_sem)")
    return ret


async def mmu_notifier_register(mn: MmuNotifier | None, mm: Any) -> int:
    """Register ``mn`` on ``mm``; 0 or -EINTR.  After it returns the notifier
    sees every invalidation, including the end of any section that will
    run, and none was in flight (see do_mmu_notifier_register)."""
    with mmemu.span("mmu_notifier_register"):
        return await do_mmu_notifier_register(mn, mm, True)


async def __mmu_notifier_register(mn: MmuNotifier | None, mm: Any) -> int:
    """As mmu_notifier_register; the caller holds ``mm->mmap_sem`` for write."""
    with mmemu.span("__mmu_notifier_register"):
        return await do_mmu_notifier_register(mn, mm, False)


async def mmu_notifier_unregister(mn: MmuNotifier, mm: Any) -> None:
    """Remove ``mn`` from ``mm``.  Calls ->release if ``mn`` is still hashed
    (exit_mmap has not unhashed it yet); after return no callback of ``mn``
    runs or will run, so the driver may free it.

    The order of d34883d4e35c (v3.10, and of today's kernel)::

      CPU0 (mmu_notifier_unregister)          CPU1 (exit_mmap: __mmu_notifier_release,
                                              or any walker: invalidate_*)
      1. hlist_unhashed(&mn->hlist)?          W1. srcu_read_lock; read the list
         no: srcu_read_lock; ->release;       W2. call mn's callbacks (->release)
         srcu_read_unlock                     W3. exit only: under the lock,
      2. under mmu_notifier_mm->lock:              hlist_del_init_rcu of them all
         hlist_del_init_rcu                   W4. srcu_read_unlock
      3. synchronize_srcu

    There are 2 critical interleavings that matter:
    - W1 before 2: the walker holds mn and may call it after 2; 3 waits for
      its W4, so nothing runs after unregister returns.  Without the grace
      period (mutant ``mmu_notifier:unregister-no-srcu``) the driver frees
      mn while the walker is about to call it.
    - W3 between 1 and 2: exit unhashed mn after unregister saw it hashed.
      2 must be hlist_del_init_rcu (a no-op on an unhashed node); the
      hlist_del_rcu of 3ad3d901bbcf..751efd8610d3 (mutant
      ``mmu_notifier:unregister-del-rcu``) dereferences the NULL pprev that
      hlist_del_init_rcu left: the oops of 751efd8610d3's title.
    Harmless: ->release called twice, by W2 and by 1 (both saw mn hashed):
    "if ->release runs before mmu_notifier_unregister it must be handled";
    drivers zap an already empty TLB.  (751efd8610d3 made the two exclusive
    by unhashing first, which let reclaim free a page a secondary MMU still
    mapped -- mutant ``mmu_notifier:release-after-unhash``.)
    (2.6.27's original unregister also unhashed first -- hlist_del_rcu under
    the lock, then ->release under rcu_read_lock, then synchronize_rcu -- as
    its __mmu_notifier_release did; see the module's "Eras".)  A driver's
    ``detach`` (mmemu.driver.Driver) calls this.
    """
    with mmemu.span("mmu_notifier_unregister"):
        mmn: MmuNotifierMm | None = mm.mmu_notifier_mm
        if mmn is None:
            return
        ss = mmu_notifier_srcu()
        await step("1. hlist_unhashed(&mn->hlist)", reads=(list_key(mmn),))
        _report(mm, "unregister_begin", mn)
        if mn.hashed:
            idx = await srcu_read_lock(ss)
            if mn.ops.release is not None:
                _check_live(mn, "release")
                await _call(mm, mn, "release", mn.ops.release, mm)
            await srcu_read_unlock(ss, idx)
            await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
            if mmemu.mutant(MUTANT_UNREGISTER_DEL_RCU):
                await step("2. hlist_del_rcu", **list_change(mmn))
                if not mn.hashed:
                    await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
                    current_simulation().fail(NotifierListCorruption(
                        f"mmu_notifier_unregister: hlist_del_rcu of {mn.__mmemu_name__}, which "
                        f"exit_mmap's __mmu_notifier_release already took off the list with "
                        f"hlist_del_init_rcu: *pprev = next through a NULL pprev (BUG: unable "
                        f"to handle kernel NULL pointer dereference)"))
            else:
                await step("2. hlist_del_init_rcu", **list_change(mmn))
            if mn.hashed:
                mmn.list.remove(mn)
                mn.hashed = False
            await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
        if not mmemu.mutant(MUTANT_UNREGISTER_NO_SRCU):
            await synchronize_srcu(ss)
        _report(mm, "unregister_end", mn)

__all__ = [
    "EAGAIN", "MMU_NOTIFIER_RANGE_BLOCKABLE", "MMU_NOTIFY_CLEAR", "MMU_NOTIFY_EVENTS",
    "MMU_NOTIFY_EXCLUSIVE", "MMU_NOTIFY_MIGRATE", "MMU_NOTIFY_PROTECTION_PAGE",
    "MMU_NOTIFY_PROTECTION_VMA", "MMU_NOTIFY_RELEASE", "MMU_NOTIFY_SOFT_DIRTY",
    "MMU_NOTIFY_UNMAP", "MUTANT_INTERVAL_NO_DEFER", "MUTANT_INTERVAL_REMOVE_NOWAIT",
    "MmuIntervalNotifier", "MmuIntervalNotifierOps", "MmuNotifierRange",
    "MUTANT_ITREE_END_FIRST", "MUTANT_ITREE_NONBLOCK_NO_END", "MUTANT_NONBLOCK_NO_END",
    "MUTANT_UNREGISTER_DEL_RCU", "MUTANT_UNREGISTER_NO_SRCU", "MmuNotifierViolation",
    "NotifierListCorruption", "NotifierUseAfterFree", "call_srcu", "is_modern", "itree_key",
    "mmu_interval_check_retry", "mmu_interval_notifier_insert", "mmu_interval_notifier_remove",
    "mmu_interval_read_begin", "mmu_interval_read_retry", "mmu_interval_set_seq",
    "mmu_notifier_get", "mmu_notifier_get_locked", "mmu_notifier_invalidate_range_start_nonblock",
    "mmu_notifier_put", "mmu_notifier_range_blockable", "mmu_notifier_range_init",
    "mmu_notifier_range_init_owner", "mmu_notifier_synchronize", "module_unloaded", "SYNCHRONIZE_WAITED", "non_block",
    "MUTANT_REGISTER_UNLOCKED", "MUTANT_RELEASE_AFTER_UNHASH", "MmuNotifier", "MmuNotifierMm",
    "MmuNotifierOps", "__mmu_notifier_register", "arch_invalidate_secondary_tlbs",
    "do_mmu_notifier_register", "mm_has_notifiers", "mm_key", "mmu_notifier_change_pte",
    "mmu_notifier_clear_flush_young", "mmu_notifier_clear_young", "mmu_notifier_invalidate_page",
    "mmu_notifier_invalidate_range_end", "mmu_notifier_invalidate_range_start",
    "mmu_notifier_register", "mmu_notifier_release", "mmu_notifier_srcu",
    "mmu_notifier_test_young", "mmu_notifier_unregister",
]
