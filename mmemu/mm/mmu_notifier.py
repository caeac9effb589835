"""MMU notifiers: how secondary MMUs hear about changes to a CPU page table.

Emulates: mm/mmu_notifier.c, include/linux/mmu_notifier.h (2.6.27; the list is
walked under SRCU as since 3.7, and ``__mmu_notifier_release`` has the 2012
ordering fix)

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

The list is walked under SRCU: callbacks may sleep, and ``unregister`` /
``release`` wait with ``synchronize_srcu`` for walkers that may still call
an unhashed notifier.  A walker reads the list once, after
``srcu_read_lock``; an entry added later is not seen (``hlist_add_head_rcu``
puts it before the walker's position), an entry removed later may still be
called (that is what the grace period is for).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mmemu
from mmemu.engine._execution import current_simulation, step
from mmemu.kernel.locking import SpinLock, down_write, spin_lock, spin_unlock, up_write
from mmemu.kernel.rcu import SrcuStruct, srcu_read_lock, srcu_read_unlock, synchronize_srcu

MUTANT_REGISTER_UNLOCKED = mmemu.register_mutant(
    "mmu_notifier:register-unlocked",
    "mmu_notifier_register hashes the notifier without mm_take_all_locks",
    caught_as="FreedPageStillMapped (the driver keeps a translation to a page freed by a "
              "range_start/range_end section that was in flight)",
    doc="The seed race of commit 7906d00c: register lands between a truncate's "
        "invalidate_range_start (not delivered) and the page being freed; the driver "
        "faults the page in meanwhile and is never told to drop it.")

MUTANT_RELEASE_AFTER_UNHASH = mmemu.register_mutant(
    "mmu_notifier:release-after-unhash",
    "__mmu_notifier_release unhashes each notifier before calling its ->release",
    caught_as="FreedPageStillMapped (reclaim's invalidate_page skips the unhashed notifier "
              "and frees a page the driver still maps)",
    doc="The bug fixed in 2012 (751efd8610d3, 'mmu_notifier_unregister NULL Pointer "
        "deref and multiple ->release() callouts'): between the unhash and ->release, "
        "try_to_unmap on another CPU clears the pte, finds no notifier to tell, and frees "
        "the page while the secondary MMU still maps it.")

#: ops callback signatures (all async, all optional)
ReleaseFn = Callable[["MmuNotifier", Any], Awaitable[None]]
InvalidatePageFn = Callable[["MmuNotifier", Any, int], Awaitable[None]]
InvalidateRangeFn = Callable[["MmuNotifier", Any, int, int], Awaitable[None]]
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
      secondary pte (test and clear / test).
    - ``change_pte(mn, mm, address, page)``: the pte now maps ``page`` (KSM).
    - ``invalidate_range(mn, mm, start, end)``: modern only (TLBs that share
      the CPU page tables, under the PTL).
    """

    __slots__ = ("release", "invalidate_page", "invalidate_range_start",
                 "invalidate_range_end", "clear_flush_young", "test_young", "change_pte",
                 "invalidate_range")

    def __init__(self, *, release: ReleaseFn | None = None,
                 invalidate_page: InvalidatePageFn | None = None,
                 invalidate_range_start: InvalidateRangeFn | None = None,
                 invalidate_range_end: InvalidateRangeFn | None = None,
                 clear_flush_young: YoungFn | None = None,
                 test_young: YoungFn | None = None,
                 change_pte: ChangePteFn | None = None,
                 invalidate_range: InvalidateRangeFn | None = None) -> None:
        self.release = release
        self.invalidate_page = invalidate_page
        self.invalidate_range_start = invalidate_range_start
        self.invalidate_range_end = invalidate_range_end
        self.clear_flush_young = clear_flush_young
        self.test_young = test_young
        self.change_pte = change_pte
        self.invalidate_range = invalidate_range


class MmuNotifier:
    """``struct mmu_notifier``: an ops table and its place in the mm's hlist.

    ``hashed`` is ``!hlist_unhashed(&mn->hlist)``; ``owner`` is free for the
    driver (the Driver object that embeds it).
    """

    __slots__ = ("ops", "hashed", "owner", "__mmemu_name__")

    def __init__(self, ops: MmuNotifierOps, *, name: str = "mmu_notifier",
                 owner: Any = None) -> None:
        self.ops = ops
        self.hashed = False
        self.owner = owner
        self.__mmemu_name__ = name

    def __repr__(self) -> str:
        return f"<MmuNotifier {self.__mmemu_name__}{' hashed' if self.hashed else ''}>"


class MmuNotifierMm:
    """``struct mmu_notifier_mm``: the mm's notifier hlist and the lock that
    serialises its writers (readers walk it under SRCU).  The access key of
    the list is this object."""

    __slots__ = ("list", "lock", "__mmemu_name__")

    def __init__(self, mm_name: str) -> None:
        #: hlist order: hlist_add_head puts new entries first
        self.list: list[MmuNotifier] = []
        self.lock = SpinLock(f"{mm_name}.mmu_notifier_mm->lock", "mmu_notifier_mm->lock")
        self.__mmemu_name__ = f"{mm_name}.mmu_notifier_mm"


def _mm_name(mm: Any) -> str:
    return str(getattr(mm, "__mmemu_name__", "mm"))


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
    assert isinstance(ss, SrcuStruct)
    return ss


def mm_has_notifiers(mm: Any) -> bool:
    return getattr(mm, "mmu_notifier_mm", None) is not None


async def _has_notifiers(mm: Any, what: str) -> bool:
    """The call site's ``if (mm_has_notifiers(mm))``: one step."""
    await step(f"{what}: mm_has_notifiers", reads=(mm_key(mm),))
    return mm_has_notifiers(mm)


async def _walk(mm: Any, what: str) -> tuple[SrcuStruct, int, list[MmuNotifier]]:
    """srcu_read_lock, then read the hlist once (hlist_for_each_entry_rcu)."""
    ss = mmu_notifier_srcu()
    idx = await srcu_read_lock(ss)
    mmn = mm.mmu_notifier_mm
    await step(f"{what}: hlist_for_each_entry_rcu", reads=(mmn,))
    return ss, idx, list(mmn.list)


# ------------------------------------------------------------- call sites


async def __mmu_notifier_invalidate_range_start(mm: Any, start: int, end: int) -> None:
    ss, idx, notifiers = await _walk(mm, "invalidate_range_start")
    for mn in notifiers:
        if mn.ops.invalidate_range_start is not None:
            await mn.ops.invalidate_range_start(mn, mm, start, end)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_invalidate_range_end(mm: Any, start: int, end: int) -> None:
    ss, idx, notifiers = await _walk(mm, "invalidate_range_end")
    for mn in notifiers:
        if mn.ops.invalidate_range_end is not None:
            await mn.ops.invalidate_range_end(mn, mm, start, end)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_invalidate_page(mm: Any, address: int) -> None:
    ss, idx, notifiers = await _walk(mm, "invalidate_page")
    for mn in notifiers:
        if mn.ops.invalidate_page is not None:
            await mn.ops.invalidate_page(mn, mm, address)
    await srcu_read_unlock(ss, idx)


async def __mmu_notifier_clear_flush_young(mm: Any, address: int) -> bool:
    young = False
    ss, idx, notifiers = await _walk(mm, "clear_flush_young")
    for mn in notifiers:
        if mn.ops.clear_flush_young is not None:
            young = bool(await mn.ops.clear_flush_young(mn, mm, address)) or young
    await srcu_read_unlock(ss, idx)
    return young


async def __mmu_notifier_test_young(mm: Any, address: int) -> bool:
    young = False
    ss, idx, notifiers = await _walk(mm, "test_young")
    for mn in notifiers:
        if mn.ops.test_young is not None:
            if await mn.ops.test_young(mn, mm, address):
                young = True
                break
    await srcu_read_unlock(ss, idx)
    return young


async def __mmu_notifier_change_pte(mm: Any, address: int, page: Any) -> None:
    """Drivers without ->change_pte get invalidate_page instead (2.6.32)."""
    ss, idx, notifiers = await _walk(mm, "change_pte")
    for mn in notifiers:
        if mn.ops.change_pte is not None:
            await mn.ops.change_pte(mn, mm, address, page)
        elif mn.ops.invalidate_page is not None:
            await mn.ops.invalidate_page(mn, mm, address)
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
            await step("2. hlist_del_init_rcu (before ->release)", reads=(mmn,), writes=(mmn,))
            if not mmn.list:
                break
            mn = mmn.list.pop(0)
            mn.hashed = False
            await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
            idx = await srcu_read_lock(ss)
            if mn.ops.release is not None:
                await mn.ops.release(mn, mm)
            await srcu_read_unlock(ss, idx)
            await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
        await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
        await synchronize_srcu(ss)
        return
    idx = await srcu_read_lock(ss)
    await step("1. hlist_for_each_entry_rcu", reads=(mmn,))
    for mn in list(mmn.list):
        if mn.ops.release is not None:
            await mn.ops.release(mn, mm)
    await srcu_read_unlock(ss, idx)
    await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
    await step("2. hlist_del_init_rcu (all)", reads=(mmn,), writes=(mmn,))
    for mn in mmn.list:
        mn.hashed = False
    mmn.list.clear()
    await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
    await synchronize_srcu(ss)


# The call-site functions (include/linux/mmu_notifier.h's inline wrappers).


async def mmu_notifier_invalidate_range_start(mm: Any, start: int, end: int, *,
                                              event: str = "UNMAP") -> None:
    if await _has_notifiers(mm, "mmu_notifier_invalidate_range_start"):
        with mmemu.span("mmu_notifier_invalidate_range_start"):
            await __mmu_notifier_invalidate_range_start(mm, start, end)


async def mmu_notifier_invalidate_range_end(mm: Any, start: int, end: int, *,
                                            event: str = "UNMAP") -> None:
    if await _has_notifiers(mm, "mmu_notifier_invalidate_range_end"):
        with mmemu.span("mmu_notifier_invalidate_range_end"):
            await __mmu_notifier_invalidate_range_end(mm, start, end)


async def mmu_notifier_invalidate_page(mm: Any, address: int) -> None:
    if await _has_notifiers(mm, "mmu_notifier_invalidate_page"):
        with mmemu.span("mmu_notifier_invalidate_page"):
            await __mmu_notifier_invalidate_page(mm, address)


async def mmu_notifier_clear_flush_young(mm: Any, address: int) -> bool:
    if await _has_notifiers(mm, "mmu_notifier_clear_flush_young"):
        return await __mmu_notifier_clear_flush_young(mm, address)
    return False


async def mmu_notifier_test_young(mm: Any, address: int) -> bool:
    if await _has_notifiers(mm, "mmu_notifier_test_young"):
        return await __mmu_notifier_test_young(mm, address)
    return False


async def mmu_notifier_change_pte(mm: Any, address: int, page: Any) -> None:
    if await _has_notifiers(mm, "mmu_notifier_change_pte"):
        await __mmu_notifier_change_pte(mm, address, page)


async def mmu_notifier_release(mm: Any) -> None:
    if await _has_notifiers(mm, "mmu_notifier_release"):
        with mmemu.span("__mmu_notifier_release"):
            await __mmu_notifier_release(mm)


async def arch_invalidate_secondary_tlbs(mm: Any, start: int, end: int) -> None:
    """Modern API only: TLBs sharing the CPU page tables (->invalidate_range)."""
    if not mm_has_notifiers(mm):
        return
    ss, idx, notifiers = await _walk(mm, "arch_invalidate_secondary_tlbs")
    for mn in notifiers:
        if mn.ops.invalidate_range is not None:
            await mn.ops.invalidate_range(mn, mm, start, end)
    await srcu_read_unlock(ss, idx)


# ------------------------------------------------------ register/unregister


async def do_mmu_notifier_register(mn: MmuNotifier, mm: Any, take_mmap_sem: bool) -> int:
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
        await spin_lock(mmn.lock, label="4. spin_lock(mmu_notifier_mm->lock)")
        await step("4. hlist_add_head_rcu", reads=(mmn,), writes=(mmn,))
        mmn.list.insert(0, mn)
        mn.hashed = True
        await spin_unlock(mmn.lock, label="4. spin_unlock(mmu_notifier_mm->lock)")
        if locked:
            await mm_drop_all_locks(mm)
    if take_mmap_sem:
        await up_write(mm.mmap_sem, label="5. up_write(mmap_sem)")
    return ret


async def mmu_notifier_register(mn: MmuNotifier, mm: Any) -> int:
    """Register ``mn`` on ``mm``; 0 or -EINTR.  After it returns the notifier
    sees every invalidation, including the end of any section that will
    run, and none was in flight (see do_mmu_notifier_register)."""
    with mmemu.span("mmu_notifier_register"):
        return await do_mmu_notifier_register(mn, mm, True)


async def __mmu_notifier_register(mn: MmuNotifier, mm: Any) -> int:
    """As mmu_notifier_register; the caller holds ``mm->mmap_sem`` for write."""
    with mmemu.span("__mmu_notifier_register"):
        return await do_mmu_notifier_register(mn, mm, False)


async def mmu_notifier_unregister(mn: MmuNotifier, mm: Any) -> None:
    """Remove ``mn`` from ``mm``.  Calls ->release if ``mn`` is still hashed
    (exit_mmap has not done it); after return no callback of ``mn`` runs or
    will run.

    1. if hashed: srcu_read_lock; ->release; srcu_read_unlock
    2. under mmu_notifier_mm->lock: hlist_del_rcu
    3. synchronize_srcu: walkers that read the list before 2 are done
    """
    with mmemu.span("mmu_notifier_unregister"):
        mmn: MmuNotifierMm | None = mm.mmu_notifier_mm
        if mmn is None:
            return
        ss = mmu_notifier_srcu()
        await step("1. hlist_unhashed(&mn->hlist)", reads=(mmn,))
        if mn.hashed:
            idx = await srcu_read_lock(ss)
            if mn.ops.release is not None:
                await mn.ops.release(mn, mm)
            await srcu_read_unlock(ss, idx)
            await spin_lock(mmn.lock, label="2. spin_lock(mmu_notifier_mm->lock)")
            await step("2. hlist_del_rcu", reads=(mmn,), writes=(mmn,))
            if mn.hashed:
                mmn.list.remove(mn)
                mn.hashed = False
            await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")
        await synchronize_srcu(ss)


__all__ = [
    "MUTANT_REGISTER_UNLOCKED", "MUTANT_RELEASE_AFTER_UNHASH", "MmuNotifier", "MmuNotifierMm",
    "MmuNotifierOps", "__mmu_notifier_register", "arch_invalidate_secondary_tlbs",
    "do_mmu_notifier_register", "mm_has_notifiers", "mm_key", "mmu_notifier_change_pte",
    "mmu_notifier_clear_flush_young", "mmu_notifier_invalidate_page",
    "mmu_notifier_invalidate_range_end", "mmu_notifier_invalidate_range_start",
    "mmu_notifier_register", "mmu_notifier_release", "mmu_notifier_srcu",
    "mmu_notifier_test_young", "mmu_notifier_unregister",
]
