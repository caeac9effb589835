"""The operations a workload is made of: every kernel path and driver action,
named and parameterised over the world (``mmemu.workload._world``).

Each operation runs the kernel model's own functions; nothing here
re-implements a kernel path.  Operations come in three contexts, which say
what the caller holds (see the World's docstring):

- ``driver``: a user of driver ``dN`` (a guest vCPU, a device's fault
  handler, the ioctl that binds it).  It holds the driver's device file;
  when it touches the process's memory it holds ``mm_users``
  (``mmget_not_zero``) and does nothing once the process exited.  A
  detached driver does not fault (its file is closed) -- except through
  ``access``: a device may use whatever its TLB still holds, at any time.
- ``process``: a thread of the process (a CPU fault, munmap...), holding
  ``mm_users`` the same way.
- ``kernel``: a kernel thread (kswapd's reclaim and aging, migration, a
  truncate by another process, the OOM reaper, a signal).  Pages are picked
  by what is mapped at a page of the process when the operation starts,
  standing for what an LRU scan would find.

The catalogue (``OPERATIONS``) is what the parser accepts, what the
generator draws from and what ``mmemu fuzz --help`` and docs/workloads.md
list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import attrs

from mmemu.driver import Driver, guarded
from mmemu.engine._execution import current_simulation, step
from mmemu.kernel.locking import down_read, down_write, up_read, up_write
from mmemu.kernel.signal import _key as sigpending_key, current, send_sig
from mmemu.mm.fork import dup_mm
from mmemu.mm.khugepaged import khugepaged_scan_referenced
from mmemu.mm.ksm import ksm_merge_page
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.filemap import add_to_page_cache, find_get_page
from mmemu.mm.memory import fault_in, get_user_pages, i_size_pages, set_page_dirty
from mmemu.mm.mmap import EINTR, PAGE_SIZE, do_munmap, find_vma, mmput
from mmemu.mm.mmu_notifier import MmuNotifierOps, mmu_notifier_get, mmu_notifier_put
from mmemu.mm.mprotect import PROT_NONE, PROT_READ, PROT_WRITE, sys_mprotect
from mmemu.mm.page import (
    PG_dirty,
    PG_uptodate,
    PageAnon,
    lock_page,
    get_page_unless_zero,
    page_site,
    put_page,
    unlock_page,
)
from mmemu.mm.pagemap import page_cache_alloc
from mmemu.mm.page_idle import page_idle_bitmap_read, page_idle_bitmap_write, page_is_idle
from mmemu.mm.rmap import page_referenced
from mmemu.mm.truncate import vmtruncate
from mmemu.mm.vmscan import PageLRU, isolate_lru_page, putback_lru_page, reclaim_page
from mmemu.races.aging_shapes import PageNeverIdle
from mmemu.races.notifier_shapes import SignalIgnored
from mmemu.workload._text import Op
from mmemu.workload._world import World

RunFn = Callable[[World, int, Op], Awaitable[None]]


@attrs.frozen
class OpSpec:
    """One kind of operation.

    ``args`` are argument kinds: ``page`` (a page number), ``range`` (pages
    ``lo-hi``), ``rw`` (``r`` or ``w``), ``count`` (a number of pages),
    ``cpu`` (a CPU number).  ``apis``: the notifier API generations that have
    it (None: every one).  ``applies(cls)``: the driver classes a driver
    operation makes sense for (None: every driver).
    """

    name: str
    args: tuple[str, ...]
    context: str
    kernel: str
    summary: str
    run: RunFn
    apis: tuple[str, ...] | None = None
    applies: Callable[[type[Driver]], bool] | None = None
    #: how many trailing ``args`` may be left out (``access(0)`` is ``access(0,r)``)
    optional: int = 0

    @property
    def driver_op(self) -> bool:
        return self.context == "driver"

    def usage(self) -> str:
        if not self.args:
            return self.name
        required = len(self.args) - self.optional
        text = ",".join(self.args[:required])
        if self.optional:
            text += "[," + ",".join(self.args[required:]) + "]"
        return f"{self.name}({text})"


def _is_interval(cls: type[Driver]) -> bool:
    return bool(getattr(cls, "interval_notifier", False))


def _in_interval(d: Driver, address: int) -> bool:
    """Is ``address`` inside the interval an interval-notifier driver
    registered (``start``/``length``, set by ``insert(lo-hi)``)?"""
    start = int(getattr(d, "start", 0))
    length = getattr(d, "length", None)
    return address >= start and (length is None or address < start + int(length))


def _uses_get(cls: type[Driver]) -> bool:
    """A driver whose notifier comes from mmu_notifier_get: it keeps the
    shared ops in ``self.ops`` with an ``alloc_notifier``."""
    return bool(getattr(cls, "notifier_get", False))


# ------------------------------------------------------------ driver ops


async def _fault(w: World, c: int, op: Op) -> None:
    page, rw = op.args
    assert isinstance(page, int)
    who = str(op)
    await w.file_get(op.driver, who)
    # the instance attached now (read under the file: a re-attach replaces it)
    d = w.drivers[op.driver]
    addr = w.addr(page)
    if _is_interval(type(d)) and not _in_interval(d, addr):
        # a mirror faults only what its interval notifier covers (test_hmm
        # faults inside the range it registered): outside it, no
        # invalidation would ever reach the translation
        await w.file_put(op.driver, who)
        return
    mm = w.mm_of(op.driver)
    if w.attached[op.driver] and await w.mmget_not_zero(who, mm):
        w.ran("fault")
        await guarded(d, "fault", d.fault, w.addr(page), rw == "w")
        await w.mmput(mm)
    await w.file_put(op.driver, who)


async def _access(w: World, c: int, op: Op) -> None:
    page = op.args[0]
    assert isinstance(page, int)
    write = op.args[1:] == ("w",)
    d = w.drivers[op.driver]
    w.ran("access")
    # write= only when writing: a driver's own access(address) reads
    await guarded(d, "access", d.access, w.addr(page), *((True,) if write else ()))


async def _attach(w: World, c: int, op: Op, *, start: int | None = None,
                  end: int | None = None) -> None:
    i = op.driver
    who = str(op)
    await w.file_get(i, who, write=True)
    mm = w.mm_of(i)
    if not w.attached[i] and await w.mmget_not_zero(who, mm):
        # a new VM / a new device: a fresh instance of the driver
        w.retired.append(w.drivers[i])
        d = w.drivers[i] = w.new_driver(i)
        if start is not None and end is not None:
            # an interval notifier over [start, end) only
            d.start = start  # type: ignore[attr-defined]
            d.length = end - start  # type: ignore[attr-defined]
        w.ran(op.name)
        # a task being killed does not register: mm_take_all_locks tests
        # signal_pending(current) before each vma (-EINTR).  Only a plain
        # mmu_notifier_register is sure to take all locks: an interval
        # insert, or an mmu_notifier_get that finds the mm's notifier, on an
        # mm that already has notifiers, does not
        me = current()
        await step(f"{who}: a signal already pending?", reads=(sigpending_key(me),))
        pending = bool(me.data.get("sigpending")) and not (_is_interval(type(d)) or
                                                           _uses_get(type(d)))
        ret = await guarded(d, op.name, d.attach, w.kernel, mm)
        if pending:
            # mm_take_all_locks tests the signal once per vma: an mm whose
            # vmas are all unmapped registers.  (Nothing maps a vma in a
            # workload, so a vma there now was there during the register.)
            # (under mmap_sem, as any reader of the vma list: the lockset
            # checker holds the harness to the kernel's rules too)
            await down_read(mm.mmap_sem, label=f"{who}: down_read(mmap_sem)")
            await step(f"{who}: the mm still has a vma?", reads=((mm, "mmap"),))
            pending = mm.mmap is not None
            await up_read(mm.mmap_sem, label=f"{who}: up_read(mmap_sem)")
        if pending and ret != -EINTR:
            current_simulation().fail(SignalIgnored(
                f"{d.name}: {op.name} returned {ret} although a signal was pending before it "
                f"started: mm_take_all_locks must check signal_pending(current) and return "
                f"-EINTR"))
        if ret == 0:
            w.attached[i] = True
        else:
            w.ran(f"{op.name} failed ({ret})")
        await w.mmput(mm)
    await w.file_put(i, who, write=True)


async def _insert(w: World, c: int, op: Op) -> None:
    (rng,) = op.args
    assert isinstance(rng, tuple)
    await _attach(w, c, op, start=w.addr(rng[0]), end=w.addr(rng[1]) + PAGE_SIZE)


async def _detach(w: World, c: int, op: Op) -> None:
    i = op.driver
    who = str(op)
    await w.file_get(i, who, write=True)
    d = w.drivers[i]
    if w.attached[i]:
        w.ran(op.name)
        await guarded(d, op.name, d.detach)
        w.attached[i] = False
        if d.detach_waits_for_callbacks(w.api):
            # unregister (or interval remove) has returned: from here on no
            # callback may run (CallbackAfterDetach).  A mmu_notifier_put
            # does not wait for walkers: its notifier is freed after an SRCU
            # grace period, and the core checks callbacks against that.
            await step(f"{who}: {d.name} detach returned", writes=(d.detached_key,))
            d.detached_at = page_site()
    await w.file_put(i, who, write=True)


async def _get(w: World, c: int, op: Op) -> None:
    """Another device binds to the process through the same driver:
    mmu_notifier_get finds the driver's notifier and takes a reference."""
    i = op.driver
    who = str(op)
    await w.file_get(i, who, write=True)
    ops: MmuNotifierOps = getattr(w.drivers[i], "ops")
    mm = w.mm_of(i)
    if await w.mmget_not_zero(who, mm):
        w.ran("get")
        ret = await mmu_notifier_get(ops, mm)
        if not isinstance(ret, int):
            w.extra_mns[i].append(ret)
        await w.mmput(mm)
    await w.file_put(i, who, write=True)


async def _put(w: World, c: int, op: Op) -> None:
    """That device unbinds: mmu_notifier_put of its reference."""
    i = op.driver
    who = str(op)
    await w.file_get(i, who, write=True)
    if w.extra_mns[i]:
        w.ran("put")
        await mmu_notifier_put(w.extra_mns[i].pop())
    await w.file_put(i, who, write=True)


# ----------------------------------------------------------- process ops


async def _cpufault(w: World, c: int, op: Op) -> None:
    page, rw = op.args
    assert isinstance(page, int)
    who = str(op)
    if await w.mmget_not_zero(who):
        w.ran("cpufault")
        await fault_in(w.mm, w.addr(page), write=rw == "w")
        await w.mmput()


async def _munmap(w: World, c: int, op: Op) -> None:
    (rng,) = op.args
    assert isinstance(rng, tuple)
    who = str(op)
    mm = w.mm
    if await w.mmget_not_zero(who):
        w.ran("munmap")
        await down_write(mm.mmap_sem, label=f"{who}: down_write(mmap_sem)")
        await do_munmap(mm, w.addr(rng[0]), (rng[1] - rng[0] + 1) * PAGE_SIZE)
        await up_write(mm.mmap_sem, label=f"{who}: up_write(mmap_sem)")
        await w.mmput()


async def _exit(w: World, c: int, op: Op) -> None:
    """The process exits: it drops its own mm_users reference; the last
    mmput runs exit_mmap (mmu_notifier_release, then the unmapping)."""
    w.ran("exit")
    await mmput(w.mm)


# ------------------------------------------------------------ kernel ops


async def _reclaim(w: World, c: int, op: Op) -> None:
    (p,) = op.args
    assert isinstance(p, int)
    page = await w.page_at(p, str(op))
    if page is not None:
        w.ran("reclaim")
        if await reclaim_page(page):
            w.ran("reclaim freed the page")


async def _age(w: World, c: int, op: Op) -> None:
    """shrink_active_list on one page: isolate it, page_referenced (the
    accessed bits of every pte and every secondary MMU), put it back."""
    (p,) = op.args
    assert isinstance(p, int)
    page = await w.page_at(p, str(op))
    if page is not None and await isolate_lru_page(page) == 0:
        w.ran("age")
        if await page_referenced(page, False):
            w.ran("age: referenced")
        await putback_lru_page(page)


async def _migrate(w: World, c: int, op: Op) -> None:
    from mmemu.races.notifier import migrate

    (p,) = op.args
    assert isinstance(p, int)
    page = await w.page_at(p, str(op))
    if page is not None:
        w.ran("migrate")
        await migrate(page)


async def _truncate(w: World, c: int, op: Op) -> None:
    (n,) = op.args
    assert isinstance(n, int)
    w.ran("truncate")
    await vmtruncate(w.mapping, n * PAGE_SIZE)


async def _signal(w: World, c: int, op: Op) -> None:
    (target,) = op.args
    assert isinstance(target, int)
    w.ran("signal")
    await send_sig(w.sim.cpu_list[target], label=f"{op}: send_sig(cpu{target})")


async def _oomreap(w: World, c: int, op: Op) -> None:
    """The OOM reaper on the process.  Modelling note: it holds mm_users
    here (the kernel's reaper holds only mm_count, and exit_mmap waits for it
    by taking mmap_sem for write after marking the mm MMF_OOM_SKIP, which the
    model's exit_mmap does not do): exit_mmap never runs under it."""
    from mmemu.mm.oom_kill import oom_reap_task

    who = str(op)
    if await w.mmget_not_zero(who):
        w.ran("oomreap")
        await oom_reap_task(w.mm)
        await w.mmput()


# ------------------------------------------------ new call sites (process)


async def _read(w: World, c: int, op: Op) -> None:
    """The process read()s the file page that page p maps: 2.6.27
    do_generic_file_read (mm/filemap.c) for one page, step by step.

    find_page: a lockless find_get_page.  On a miss (no_cached_page):
    page_cache_alloc_cold, add_to_page_cache_lru -- the page comes back
    locked; -EEXIST (another reader added it first): release it and go back
    to find_page --, readpage (the model's read completes at once:
    SetPageUptodate, unlock_page), and on to page_ok with that same page and
    the reference the allocation gave.  A page found not uptodate has its
    read in flight: wait on its lock, then it is uptodate (wait_uptodate).

    page_ok: "i_size must be checked after we know the page is Uptodate" --
    i_size_read again, and a page at or beyond the new end of file is
    released without copying anything (a truncate that ran while the page
    was being found or read in); only then is the page copied to the user.
    2.6.27 has no i_size test before the lookup (readahead stops at EOF, but
    no_cached_page adds the page regardless): a read past EOF instantiates
    a pagecache page beyond EOF and returns nothing, as the kernel does."""
    from mmemu.races.pagecache import wait_uptodate

    (p,) = op.args
    assert isinstance(p, int)
    index = w.file_index(p)
    if index is None:
        return
    who = str(op)
    mapping = w.mapping
    w.ran("read")
    while True:  # find_page:
        page = await find_get_page(mapping, index)
        if page is not None:
            if await wait_uptodate(mapping, index, page):
                w.ran("read: waited for the read in flight")
            break
        # no_cached_page:
        new = await page_cache_alloc(mapping, label=f"{who}: page_cache_alloc_cold")
        if await add_to_page_cache(new, mapping, index) != 0:
            w.ran("read: -EEXIST")
            await put_page(new, label=f"{who}: -EEXIST: page_cache_release")
            continue
        # readpage: the read completes and unlocks the page
        await step(f"{who}: readpage: SetPageUptodate", writes=(new.flags_key,))
        new.flags |= PG_uptodate
        await unlock_page(new, label=f"{who}: readpage done: unlock_page")
        page = new
        break
    # page_ok: the page is uptodate; only now is i_size read
    await step(f"{who}: page_ok: i_size_read", reads=(mapping.i_size_key,))
    if index >= i_size_pages(mapping):
        w.ran("read: page beyond EOF at page_ok (nothing copied)")
        await put_page(page, label=f"{who}: beyond EOF: page_cache_release")
        return
    # file_read_actor copies the page to the user: no step (page contents
    # are not modelled; the reference held keeps the page from being freed)
    w.ran("read: copied")
    await put_page(page, label=f"{who}: page_cache_release")


async def _userptr(w: World, c: int, op: Op) -> None:
    """A GPU driver of the process registers a userptr notifier on its mm:
    an object over the process's memory whose invalidation must take the
    object's lock, so a non-blockable range fails (i915/amdgpu userptr:
    -EAGAIN from ->invalidate_range_start, 4.19-5.3; false from an interval
    notifier's ->invalidate since 5.4).  It is an interval notifier when an
    interval-notifier driver is attached (the two then meet on the interval
    tree), a notifier on the mm's list otherwise; it stays to the end."""
    from mmemu.races.notifier_shapes import UserptrNotifier

    who = str(op)
    if await w.mmget_not_zero(who):
        w.ran("userptr")
        interval = any(_is_interval(type(d)) for d in w.drivers)
        userptr = UserptrNotifier(interval=interval)
        if await userptr.register(w.mm) == 0:
            w.notifiers.append(userptr)
        else:
            w.ran("userptr: register failed")
        await w.mmput()



async def _dma(w: World, c: int, op: Op) -> None:
    """A device driver of the process DMAs into page p: get_user_pages for
    write pins the page (FOLL_TOUCH dirties it then), the device writes it,
    and the driver releases it dirty: an anonymous page the way
    kvm_release_pfn_dirty does (kvm_set_pfn_dirty: SetPageDirty without the
    page lock), a file page with set_page_dirty_lock; then put_page.
    The pin does not keep reclaim from unmapping the page, and the write
    lands whenever the device is done: __remove_mapping's comment ('Must be
    careful with the order of the tests') is about exactly this holder."""
    (p,) = op.args
    assert isinstance(p, int)
    who = str(op)
    mm = w.mm
    if not await w.mmget_not_zero(who):
        return
    await down_read(mm.mmap_sem, label=f"{who}: down_read(mmap_sem)")
    page = await get_user_pages(mm, w.addr(p), write=True)
    await up_read(mm.mmap_sem, label=f"{who}: up_read(mmap_sem)")
    await w.mmput()
    if page is None:
        return
    w.ran("dma")
    if PageAnon(page):
        # guest RAM, a DMA buffer: kvm_set_pfn_dirty's SetPageDirty, no lock
        await step(f"{who}: the device wrote page{page.pfn}: SetPageDirty",
                   writes=(page.flags_key,))
        page.flags |= PG_dirty
    else:
        # a file page (MAP_SHARED): set_page_dirty_lock, as dio_bio_complete
        # and bio_set_pages_dirty do -- under the page lock, so it cannot
        # land between truncation's cancel_dirty_page and the removal
        # (set_page_dirty on an unlocked file page races with truncate:
        # page-writeback.c's comment on set_page_dirty_lock)
        await lock_page(page, label=f"{who}: set_page_dirty_lock: lock_page")
        await set_page_dirty(page, label=f"{who}: the device wrote page{page.pfn}: "
                                         f"set_page_dirty")
        await unlock_page(page, label=f"{who}: set_page_dirty_lock: unlock_page")
    await put_page(page, label=f"{who}: put_page (the get_user_pages pin)")


async def _fork(w: World, c: int, op: Op) -> None:
    """The process forks: dup_mm copies its mm (dup_mmap, copy_page_range
    write-protects the parent's private ptes inside a notifier bracket).
    The child lives on (its mm holds the COW-shared pages) to the end."""
    who = str(op)
    if await w.mmget_not_zero(who):
        w.ran("fork")
        w.children.append(await dup_mm(w.mm))
        await w.mmput()


async def _mprotect(w: World, c: int, op: Op) -> None:
    rng, prot = op.args
    assert isinstance(rng, tuple) and isinstance(prot, str)
    who = str(op)
    if await w.mmget_not_zero(who):
        w.ran("mprotect")
        ret = await sys_mprotect(w.mm, w.addr(rng[0]), (rng[1] - rng[0] + 1) * PAGE_SIZE,
                                 PROTS[prot])
        if ret:
            w.ran(f"mprotect failed ({ret})")
        await w.mmput()


async def _madvise(w: World, c: int, op: Op) -> None:
    (rng,) = op.args
    assert isinstance(rng, tuple)
    who = str(op)
    if await w.mmget_not_zero(who):
        w.ran("madvise")
        await sys_madvise(w.mm, w.addr(rng[0]), (rng[1] - rng[0] + 1) * PAGE_SIZE,
                          MADV_DONTNEED)
        await w.mmput()


# ------------------------------------------------ new call sites (kernel)


async def _ksm(w: World, c: int, op: Op) -> None:
    """ksmd merges the page at p into the KSM page at q (made one by the
    world's setup: ``World.ksm_pages``).  Modelling note: ksmd's mm_slot and
    its ksm_test_exit are a mm_users reference here (mmget_not_zero), as
    for the world's other users."""
    p, q = op.args
    assert isinstance(p, int) and isinstance(q, int)
    if await w.mmget_not_zero(str(op)):
        w.ran("ksm")
        if await ksm_merge_page(w.mm, w.addr(p), w.ksm_pages[q]) == 0:
            w.ran("ksm: merged")
        await w.mmput()


async def _idle(w: World, c: int, op: Op) -> None:
    """Idle page tracking on the page mapped at p: mark it idle, then read
    the bit back (each clears the accessed bits of the ptes and, through
    ->clear_young, of the secondary MMUs).  The marking must leave the page
    idle (``PageNeverIdle``, the aging suite's failure)."""
    (p,) = op.args
    assert isinstance(p, int)
    who = str(op)
    page = await w.page_at(p, who)
    # page_idle_get_page: an LRU page, and a reference unless it is being freed
    if page is None or not PageLRU(page):
        return
    if not await get_page_unless_zero(page, label=f"{who}: page_idle_get_page"):
        return
    w.ran("idle")
    await page_idle_bitmap_write(page)
    # The write's postcondition, tested in its last step (set_page_idle:
    # nothing ran in between): the page is idle now.  Only a use *after*
    # the marking may clear PG_idle; accessed bits from before it are
    # folded into PG_young first (page_idle_clear_pte_refs, then
    # set_page_idle).  A mark that a use from before already undid makes a
    # page nobody touched since read back as used.
    if not page_is_idle(page):
        current_simulation().fail(PageNeverIdle(
            f"page{page.pfn}: page_idle_bitmap_write returned with PG_idle clear: an "
            f"accessed bit from before the marking cleared the new mark (references must "
            f"be cleared before set_page_idle), so a page nobody used since reads back as "
            f"used", details=page.dump()))
    if not await page_idle_bitmap_read(page):
        w.ran("idle: referenced")
    await put_page(page, label=f"{who}: put_page(page{page.pfn})")


async def _scan(w: World, c: int, op: Op) -> None:
    """khugepaged looks at pages lo-hi (within the vma of lo): are they
    referenced (the ptes' young bits and ->test_young)?"""
    (rng,) = op.args
    assert isinstance(rng, tuple)
    who = str(op)
    mm = w.mm
    if not await w.mmget_not_zero(who):
        return
    start = w.addr(rng[0])
    await down_read(mm.mmap_sem, label=f"{who}: down_read(mmap_sem)")
    await step(f"{who}: find_vma({start:#x})", reads=((mm, "mmap"),))
    vma = find_vma(mm, start)
    if vma is not None and vma.vm_start <= start:
        w.ran("scan")
        end = min(vma.vm_end, w.addr(rng[1]) + PAGE_SIZE)
        if await khugepaged_scan_referenced(vma, start, end):
            w.ran("scan: referenced")
    await up_read(mm.mmap_sem, label=f"{who}: up_read(mmap_sem)")
    await w.mmput()


#: mprotect's protections by their text (``prot`` arguments)
PROTS = {"none": PROT_NONE, "r": PROT_READ, "rw": PROT_READ | PROT_WRITE}


OPERATIONS: dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("fault", ("page", "rw"), "driver", "driver.fault",
           "the guest/device faults page p in for read or write (KVM guest fault, GRU "
           "dropin, HMM range fault, IOMMU page request)", _fault),
    OpSpec("access", ("page", "rw"), "driver", "driver.access",
           "the guest/device reads (or writes: w) page p through its translation (a miss "
           "does nothing)", _access, optional=1),
    OpSpec("attach", (), "driver", "driver.attach -> mmu_notifier_register",
           "attach a fresh instance of a detached driver (a new VM, a new device): "
           "register its notifier (mm_take_all_locks)", _attach),
    OpSpec("detach", (), "driver", "driver.detach -> mmu_notifier_unregister",
           "detach the driver: unregister its notifier (->release if still hashed)",
           _detach),
    OpSpec("insert", ("range",), "driver", "mmu_interval_notifier_insert",
           "insert a fresh instance of a detached interval-notifier driver over pages "
           "lo-hi only", _insert, apis=("modern",), applies=_is_interval),
    OpSpec("remove", (), "driver", "mmu_interval_notifier_remove",
           "remove the interval-notifier driver (its detach)", _detach, apis=("modern",),
           applies=_is_interval),
    OpSpec("get", (), "driver", "mmu_notifier_get",
           "a second device binds through the driver: mmu_notifier_get takes another "
           "reference on its notifier", _get, apis=("modern",), applies=_uses_get),
    OpSpec("put", (), "driver", "mmu_notifier_put",
           "that device unbinds: mmu_notifier_put (the last one frees the notifier after "
           "an SRCU grace period)", _put, apis=("modern",), applies=_uses_get),
    OpSpec("cpufault", ("page", "rw"), "process", "handle_mm_fault",
           "the process touches page p (a write to a private or read-only pte copies "
           "it: COW)", _cpufault),
    OpSpec("read", ("page",), "process", "do_generic_file_read",
           "the process read()s the file page that page p maps (a lockless pagecache "
           "lookup; a miss reads the page in; a page not yet uptodate is waited for on its "
           "lock; i_size is read once the page is uptodate: nothing is copied from a page a "
           "truncate cut off); nothing for an anonymous page", _read),
    OpSpec("dma", ("page",), "process",
           "get_user_pages(write) ... SetPageDirty; put_page",
           "a device driver of the process DMAs into page p: get_user_pages pins it for "
           "write, the device writes it, the driver sets PG_dirty without the page lock "
           "(as kvm_release_pfn_dirty does) and drops the pin", _dma),
    OpSpec("munmap", ("range",), "process", "do_munmap",
           "munmap pages lo-hi (a partial range splits the vma)", _munmap),
    OpSpec("fork", (), "process", "dup_mm -> dup_mmap, copy_page_range",
           "the process forks: the child's mm copies the vmas, private ptes become "
           "COW-shared and read-only in both (a notifier bracket over each private vma)",
           _fork),
    OpSpec("mprotect", ("range", "prot"), "process", "sys_mprotect -> change_protection",
           "mprotect pages lo-hi to none, r or rw (a partial range splits the vma; "
           "dropping write write-protects the ptes inside a notifier bracket)", _mprotect),
    OpSpec("madvise", ("range",), "process", "sys_madvise(MADV_DONTNEED) -> zap_page_range",
           "madvise(MADV_DONTNEED) pages lo-hi: zap them (the next touch faults them in "
           "again)", _madvise),
    OpSpec("exit", (), "process", "mmput -> exit_mmap",
           "the process exits: exit_mmap (mmu_notifier_release, unmap, free) once the "
           "last mm_users reference goes", _exit),
    OpSpec("reclaim", ("page",), "kernel", "shrink_page_list",
           "kswapd reclaims the page mapped at p (try_to_unmap, __remove_mapping)",
           _reclaim),
    OpSpec("age", ("page",), "kernel", "page_referenced",
           "kswapd ages the page mapped at p (clear_flush_young of the ptes and the "
           "secondary MMUs)", _age),
    OpSpec("idle", ("page",), "kernel", "page_idle_bitmap_write/read",
           "idle page tracking marks the page mapped at p idle and reads it back (the "
           "ptes' and secondary MMUs' young bits: ->clear_young)", _idle, apis=("modern",)),
    OpSpec("scan", ("range",), "kernel", "khugepaged_scan_pmd",
           "khugepaged asks whether pages lo-hi were referenced (the ptes' young bits and "
           "->test_young)", _scan),
    OpSpec("ksm", ("page", "page"), "kernel", "ksm_merge_page -> try_to_merge_one_page",
           "ksmd merges the anonymous page at p into the KSM page at q (anonymous; the "
           "world's setup makes it the KSM page): write_protect_page, replace_page "
           "(->change_pte or a bracket)",
           _ksm),
    OpSpec("migrate", ("page",), "kernel", "migrate_pages",
           "migrate the page mapped at p to a new page (migration entries)", _migrate),
    OpSpec("truncate", ("count",), "kernel", "vmtruncate",
           "truncate the file to n pages (0: whole; otherwise partial)", _truncate),
    OpSpec("signal", ("cpu",), "kernel", "send_sig",
           "send a signal to cpu N (mm_take_all_locks returns -EINTR on it)", _signal),
    OpSpec("userptr", (), "process", "mmu_notifier_register / mmu_interval_notifier_insert",
           "a GPU driver registers a userptr notifier (i915/amdgpu) on the process: its "
           "invalidations fail when they may not sleep (a list notifier's -EAGAIN, or an "
           "interval notifier's false next to an interval-notifier driver)", _userptr,
           apis=("modern",)),
    OpSpec("oomreap", (), "kernel", "oom_reap_task",
           "the OOM reaper unmaps the process's private memory with non-blockable "
           "notifier ranges", _oomreap, apis=("modern",)),
)}


def applicable(spec: OpSpec, cls: type[Driver] | None) -> bool:
    """Does a driver operation make sense for a driver of class ``cls``?"""
    return spec.applies is None or cls is None or spec.applies(cls)


def describe_operations() -> list[tuple[str, str, str, str]]:
    """(usage, context, kernel path, summary) of every operation, for help texts."""
    return [(s.usage(), s.context, s.kernel, s.summary) for s in OPERATIONS.values()]


__all__ = ["OPERATIONS", "OpSpec", "applicable", "describe_operations"]
