"""The driver API: how a secondary MMU plugs into the emulated kernel.

Everything a driver author needs is importable from here (and the engine
primitives from ``mmemu.lowlevel``); ``docs/driver.md`` explains each piece
with a tested example.  A driver is a class derived from ``Driver``.  It
implements the mmu-notifier callbacks it needs (all ``async``, all optional)
and the operations the race suites and the fuzzer drive:

``await attach(kernel, mm) -> int``
    bind to ``mm`` (``self.bind``: the translation caches go under the
    checkers' watch) and register the driver's notifier
    (``mmu_notifier_register``: mmap_sem for write + mm_take_all_locks);
    0, or -EINTR when a signal interrupted ``mm_take_all_locks``.
``await fault(address, write) -> bool``
    the secondary MMU establishes a translation for a user address (a KVM
    guest fault, a GRU TLB dropin); False if the address cannot be mapped.
``await access(address) -> Page | None``
    the device/guest uses its translation (None: a miss).
``await detach()``
    unregister (``->release`` runs if the mm has not gone away yet).

Contexts (what the caller holds): the suites and the workload fuzzer call
``attach``, ``detach`` and ``fault`` from a CPU of their own holding no
lock; ``fault`` only while the driver is attached and with a reference on
``mm_users`` (``mmget_not_zero``: never after the process exited);
``attach`` and ``detach`` never concurrently with the driver's own
``fault`` (a device file is not released under an ioctl that uses it), but
concurrently with anything the kernel does, including ``exit_mmap``.
``access`` may come at any time, even after ``detach``.  The notifier
callbacks run on whichever CPU runs the kernel path that invalidates.

``await device_fault(address, write=False) -> bool`` (optional)
    a fault the device raises on its own, not on behalf of one of the
    process's threads: GRU's TLB-miss interrupt, an IOMMU page request, a
    mirror driven from another process.  It can come while the process
    exits (suite ``notifier:exit-vs-device-fault``), with no reference on
    ``mm_users``: a driver that faults pages in takes one
    (``mmget_not_zero``, then ``mmput``), and one whose ``->release`` ran
    must install nothing.  Leave it None when every fault comes from a
    thread of the process (KVM's vcpus): then none can race exit_mmap.

Notifier callbacks, as methods::

    async def release(self, mm)
    async def invalidate_page(self, mm, address)                     (2.6.27)
    async def invalidate_range_start(self, mm, start, end)
    async def invalidate_range_end(self, mm, start, end)
    async def clear_flush_young(self, mm, address) -> bool
    async def clear_young(self, mm, start, end) -> bool                (modern)
    async def test_young(self, mm, address) -> bool
    async def change_pte(self, mm, address, page)
    async def arch_invalidate_secondary_tlbs(self, mm, start, end)   (modern)

Notifier API generations: a driver lists the generations it supports in
``apis`` (default ``("2.6.27",)``; the kernel's is ``kernel.api``).  In the
modern generation ``invalidate_range_start`` / ``invalidate_range_end`` get
the 2.6.27 arguments ``(mm, start, end)`` unless the class sets
``range_callbacks = True``: then they get the ``MmuNotifierRange`` (event,
``mmu_notifier_range_blockable(range)``) and start returns 0 or ``-EAGAIN``
(only for a non-blockable range).  ``invalidate_page`` is never called in
the modern generation.  Drivers that do not use the hlist notifier (an
interval-notifier mirror, a ``mmu_notifier_get`` user) override ``attach``
and ``detach`` and call ``self.bind(kernel, mm)`` first.

Translation caches: ``self.tlb`` (a ``ShadowTLB``: ``install(key, page)``,
``zap(key)``, ``lookup(key)``, ``access(key)``); a second cache (a hardware
TLB behind the sptes, a pfn cache) comes from ``self.add_tlb("hwtlb")``.
The checkers watch every cache in ``self.tlbs``: a page freed while one maps
it is ``FreedPageStillMapped``, an access through a stale translation is
``SecondaryUseAfterFree``.  ``address_of(key)`` turns a key back into the
user address it translates (the inverse of ``key_of``), so an end-of-run
check can compare each translation with the CPU pte.  Declare the slots a
step touches: ``**self.tlb.install_accesses(key, page)``,
``**self.tlb.zap_accesses(keys, reads=(...), writes=(...))`` (the extra
accesses are added to the cache's own).

Page references: a driver that keeps a reference on a page it translates
(2.6.27 KVM's sptes did) takes it with ``await self.pin(page)`` and drops it
with ``await self.unpin(page)``; ``held_pages()`` tells the leak checker
about them at the end of an execution.

The driver's own invariants: ``check(self)`` is called at the end of every
execution in which the driver was bound (every CPU has finished, nothing is
in flight); an ``AssertionError`` (or any exception) there fails the
execution as ``DriverCheckFailed`` naming the driver.

A driver that raises inside a callback or an operation fails the execution
with ``DriverError`` (driver, callback, step, traceback); exploration goes on
to shrink and report it.  A driver that blocks forever is a ``Deadlock``.

Loading: ``load_driver("kvm")`` looks the name up in the entry-point group
``mmemu.drivers``; ``load_driver("path/to/file.py:ClassName")`` imports a file;
``register_driver(name, cls)`` makes a name load a class object directly.
Suites take ``axes={"driver": available_drivers}`` and build their instance
with ``new_driver(sim)`` (the driver named by ``sim.params["driver"]``, so a
replay token knows the driver).
"""

from __future__ import annotations

import importlib.metadata
import os
import importlib.util
import sys
import traceback
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mmemu.check.shadow_tlb import ShadowTLB, Translation, register_tlb
from mmemu.engine._errors import InvariantViolation, MmemuError, ModelError, UnexpectedException
from mmemu.engine._execution import _sim_or_none, current_simulation, reach, step
from mmemu.kernel.atomic import (
    atomic_dec,
    atomic_dec_and_test,
    atomic_inc,
    atomic_inc_not_zero,
    atomic_inc_return,
    atomic_read,
    atomic_set,
    atomic_t,
)
from mmemu.kernel.locking import (
    READ_ONCE,
    Completion,
    GuardedList,
    Mutex,
    RwSemaphore,
    SpinLock,
    WaitQueueHead,
    complete,
    complete_all,
    down_read,
    down_read_trylock,
    down_write,
    guarded_by,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
    spin_lock,
    spin_trylock,
    spin_unlock,
    up_read,
    up_write,
    wait_event,
    wait_for_completion,
    wake_up_all,
)
from mmemu.kernel.rcu import (
    SrcuStruct,
    rcu_read_lock,
    rcu_read_unlock,
    srcu_read_lock,
    srcu_read_unlock,
    synchronize_rcu,
    synchronize_srcu,
)
from mmemu.mm.memory import (
    VM_FAULT_ERROR,
    VM_FAULT_SIGBUS,
    fault_in,
    get_user_pages,
    handle_mm_fault,
    pmd_key,
    pte_get,
    pte_key,
)
from mmemu.mm.mmap import (
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    TASK_SIZE,
    VM_WRITE,
    find_vma,
    mmget_not_zero,
    mmput,
)
from mmemu.mm.mmu_notifier import (
    EAGAIN,
    MMU_NOTIFY_CLEAR,
    MMU_NOTIFY_EXCLUSIVE,
    MMU_NOTIFY_MIGRATE,
    MMU_NOTIFY_PROTECTION_PAGE,
    MMU_NOTIFY_PROTECTION_VMA,
    MMU_NOTIFY_RELEASE,
    MMU_NOTIFY_SOFT_DIRTY,
    MMU_NOTIFY_UNMAP,
    MmuIntervalNotifier,
    MmuIntervalNotifierOps,
    MmuNotifier,
    MmuNotifierOps,
    MmuNotifierRange,
    mmu_interval_notifier_insert,
    mmu_interval_notifier_remove,
    mmu_interval_read_begin,
    mmu_interval_read_retry,
    mmu_interval_set_seq,
    mmu_notifier_get,
    mmu_notifier_get_locked,
    mmu_notifier_put,
    mmu_notifier_synchronize,
    mmu_notifier_range_blockable,
    mmu_notifier_register,
    mmu_notifier_unregister,
)
from mmemu.mm.page import Page, get_page, get_page_unless_zero, page_site, put_page

ENTRY_POINT_GROUP = "mmemu.drivers"
DEFAULT_DRIVER = "kvm"

CALLBACKS = ("release", "invalidate_page", "invalidate_range_start", "invalidate_range_end",
             "clear_flush_young", "clear_young", "test_young", "change_pte",
             "arch_invalidate_secondary_tlbs")


class DriverError(UnexpectedException):
    """A driver raised inside a notifier callback or a driver operation."""

    def __init__(self, message: str, *, driver: str, callback: str, site: str,
                 original: BaseException, traceback_text: str) -> None:
        super().__init__(message, original=original, traceback_text=traceback_text)
        self.driver = driver
        self.callback = callback
        self.site = site


class DriverCheckFailed(InvariantViolation):
    """A driver's own invariant (its ``check()`` hook) failed at the end of
    an execution."""

    def __init__(self, message: str, *, driver: str, details: str = "") -> None:
        super().__init__(message, details=details)
        self.driver = driver


class CallbackAfterDetach(InvariantViolation):
    """A notifier callback of a driver ran (or was still running) after the
    driver's detach -- its mmu_notifier_unregister -- had returned."""


class DriverLoadError(ModelError):
    """A driver could not be found or imported."""


class Driver:
    """Base class of secondary-MMU drivers (see the module docstring)."""

    #: short name used in reports ("kvm gfn 3")
    name = "driver"
    #: what the shadow TLB's keys are ("gfn", "va", "iova")
    key_name = "va"
    #: the notifier API generations the driver supports ("2.6.27", "modern")
    apis: tuple[str, ...] = ("2.6.27",)
    #: modern generation: invalidate_range_start/end take the MmuNotifierRange
    range_callbacks = False
    #: the driver is an interval notifier over [self.start, self.start +
    #: self.length) (mmu_interval_notifier_insert in attach) instead of a
    #: notifier on the mm's hlist; workloads may ``insert(lo-hi)`` it
    interval_notifier = False
    #: the driver's notifier comes from ``mmu_notifier_get(self.ops, mm)``
    #: (shared, refcounted); workloads may ``get``/``put`` more references
    notifier_get = False
    #: the generations in which the driver has no ->release and nothing else
    #: models how its translations end when the process exits (modern GRU):
    #: suites and workloads that check a driver through exit skip it there
    no_release_apis: tuple[str, ...] = ()
    #: the generations whose ``detach`` is mmu_notifier_unregister (or an
    #: interval remove), which returns only when no callback runs any more;
    #: None: every generation (unless ``notifier_get``: mmu_notifier_put
    #: returns at once and frees after an SRCU grace period)
    unregister_apis: tuple[str, ...] | None = None

    #: see the module docstring: None, or a fault the device raises on its
    #: own and that may race the process's exit
    device_fault: Callable[..., Awaitable[bool]] | None = None

    release: Callable[..., Awaitable[None]] | None = None
    invalidate_page: Callable[..., Awaitable[None]] | None = None
    invalidate_range_start: Callable[..., Awaitable[None]] | None = None
    invalidate_range_end: Callable[..., Awaitable[None]] | None = None
    clear_flush_young: Callable[..., Awaitable[bool]] | None = None
    clear_young: Callable[..., Awaitable[bool]] | None = None
    test_young: Callable[..., Awaitable[bool]] | None = None
    change_pte: Callable[..., Awaitable[None]] | None = None
    arch_invalidate_secondary_tlbs: Callable[..., Awaitable[None]] | None = None

    def __init__(self) -> None:
        self.kernel: Any = None
        self.mm: Any = None
        self.tlb = ShadowTLB(self.name, key_name=self.key_name)
        #: every translation cache of the driver; the checkers watch them all
        self.tlbs: list[ShadowTLB] = [self.tlb]
        #: pages the driver holds a reference on (pin/unpin), one entry per reference
        self.pins: list[Page] = []
        self.mn = MmuNotifier(self._build_ops(), name=f"{self.name}.mmu_notifier", owner=self)
        self.__mmemu_name__ = self.name
        self._bound_to: Any = None
        #: where the driver's detach returned (set by whoever detaches it:
        #: the workload world); None while attached.  A notifier callback
        #: that runs -- or is still running -- after that is a
        #: CallbackAfterDetach: unregister promised none would.
        self.detached_at: str | None = None
        #: access key of ``detached_at``; with ``_watch_detach`` set (by a
        #: workload that detaches), every callback ends with a step that
        #: reads it, so the explorer orders callbacks against the detach
        self.detached_key = (self, "detached")
        self._watch_detach = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ---------------------------------------------------------- operations

    async def attach(self, kernel: Any, mm: Any) -> int:
        """Register the notifier on ``mm`` (0, or -EINTR)."""
        self.bind(kernel, mm)
        return await mmu_notifier_register(self.mn, mm)

    async def module_exit(self) -> None:
        """The driver's module is unloaded, after its last ``detach``.  A
        driver whose detach does not wait for its callbacks (its notifiers
        come from ``mmu_notifier_get``: modern GRU, SVA) waits here for
        the ``free_notifier`` callbacks that ``mmu_notifier_put`` queued
        (``mmu_notifier_synchronize``, as gru_exit and the SMMUv3 SVA code
        do): once this returns the module's code is gone
        (``notifier:put-vs-module-exit``).  Others have nothing to wait for:
        ``mmu_notifier_unregister`` returned only after every callback."""
        if not self.detach_waits_for_callbacks(getattr(self.kernel, "api", "2.6.27")):
            await mmu_notifier_synchronize()

    def bind(self, kernel: Any, mm: Any) -> None:
        """Make the driver ``mm``'s (``self.kernel``, ``self.mm``), check the
        notifier API generation, and put its translation caches and page
        references under the checkers' watch and its ``check()`` hook on the
        end of the execution.  ``attach`` calls it; a driver that overrides
        ``attach`` calls it first.  Binding again to the same kernel (a
        re-attach) only updates ``mm``."""
        self.kernel = kernel
        self.mm = mm
        self.check_api(kernel)
        if self._bound_to is kernel:
            return
        self._bound_to = kernel
        for tlb in self.tlbs:
            register_tlb(kernel, tlb)
        page_state = kernel.data.get("page_state")
        if page_state is not None:
            page_state.add_holder(self.held_pages)
        sim = _sim_or_none()
        if sim is not None:
            sim.at_end(self._run_check)

    def detach_waits_for_callbacks(self, api: str) -> bool:
        """Does ``detach`` promise, in generation ``api``, that no callback
        runs once it has returned (``CallbackAfterDetach`` is checked)?"""
        if self.notifier_get:
            return False
        return self.unregister_apis is None or api in self.unregister_apis

    def check_api(self, kernel: Any) -> None:
        """A driver attached to a kernel whose notifier API it does not support."""
        api = getattr(kernel, "api", "2.6.27")
        if api not in self.apis:
            raise ModelError(f"driver {self.name} supports the notifier API "
                             f"{', '.join(self.apis)}, not {api!r}")

    async def fault(self, address: int, write: bool = False) -> bool:
        raise NotImplementedError(f"driver {self.name} does not implement fault()")

    async def access(self, address: int, write: bool = False) -> Page | None:
        """The guest/device reads (``write``: writes) ``address`` through its
        translation; the page, or None on a miss.  Default: the translation
        is keyed by ``key_of(address)`` in ``self.tlb``."""
        key = self.key_of(address)
        e = self.tlb.entries.get(key)
        reads: tuple[Hashable, ...] = ()
        if e is not None:
            reads += (e.page._count,)
        # a hit sets the translation's accessed bit: a write of the slot
        # (->test_young / ->clear_young read or clear it; an entry installed
        # between this declaration and the step is hit too)
        writes: tuple[Hashable, ...] = (self.tlb.slot(key),)
        # the same words as the shadow TLB's reports ("kvm va 0x10000000")
        await step(f"{self.name}: access {self.tlb.describe(key).split(' ', 1)[1]}",
                   reads=reads, writes=writes)
        # what the hardware finds when the access runs (a fault on another
        # CPU may have installed or replaced the entry since it was read)
        e = self.tlb.entries.get(key)
        # a write is checked against the translation and the CPU pte, except
        # in a TLB that caches the CPU page tables (arch_invalidate_secondary_
        # tlbs): it is flushed after the pte changes, like the CPU's own TLB,
        # so a write in between goes through a stale entry as a CPU's may.  A
        # driver with its own page tables zaps them in invalidate_range_start,
        # before the pte changes: a write after that is a bug.
        # A write through a read-only translation is refused by the hardware
        # (the device takes a write fault): nothing is written.
        if write and e is not None and e.writable is False:
            return None
        checked = write and self.arch_invalidate_secondary_tlbs is None
        return self.tlb.access(key, write=checked)

    async def detach(self) -> None:
        await mmu_notifier_unregister(self.mn, self.mm)

    def key_of(self, address: int) -> Hashable:
        """The TLB key that translates ``address`` (default: the page address)."""
        return address & ~0xFFF

    def address_of(self, key: Hashable) -> int | None:
        """The user address a TLB key translates (the inverse of ``key_of``;
        None if the key is not an address the driver can name)."""
        return key if isinstance(key, int) else None

    # ------------------------------------------------- caches, references

    def add_tlb(self, what: str, *, key_name: str | None = None) -> ShadowTLB:
        """A second translation cache (``"hwtlb"``, ``"pfncache"``), watched
        by the checkers like ``self.tlb``; call it in ``__init__``."""
        tlb = ShadowTLB(f"{self.name}.{what}", key_name=key_name or self.key_name)
        self.tlbs.append(tlb)
        if self._bound_to is not None:
            register_tlb(self._bound_to, tlb)
        return tlb

    async def pin(self, page: Page, *, label: str | None = None) -> None:
        """Take a page reference the driver keeps (``get_page``)."""
        await get_page(page, label=label or f"{self.name}: get_page(page{page.pfn})")
        self.pins.append(page)

    async def unpin(self, page: Page, *, label: str | None = None) -> None:
        """Drop a reference taken with ``pin`` (``put_page``: may free the page)."""
        for k, p in enumerate(self.pins):
            if p is page:
                del self.pins[k]
                break
        else:
            raise ModelError(f"driver {self.name} unpins page{page.pfn}, which it did not pin")
        await put_page(page, label=label or f"{self.name}: put_page(page{page.pfn})")

    def held_pages(self) -> Iterable[Page]:
        """The page references the driver holds now, one entry per reference
        (the leak checker counts them at the end of an execution)."""
        return list(self.pins)

    def check(self) -> None:
        """The driver's own invariants, checked when every CPU has finished
        (override it: ``assert self.count == 0, "..."``)."""

    def _run_check(self, sim: Any) -> None:
        try:
            self.check()
        except MmemuError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failed invariant is a finding
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DriverCheckFailed(
                f"driver {self.name}: its check() failed at the end of the execution: {what}",
                driver=self.name, details=traceback.format_exc().rstrip()) from None

    def rename(self, name: str) -> None:
        """Give this instance another report name (a second driver of the same
        class on one mm: "kvm#2")."""
        old = self.name
        self.name = name
        self.__mmemu_name__ = name
        self.mn.__mmemu_name__ = f"{name}.mmu_notifier"
        for tlb in self.tlbs:
            rest = tlb.driver[len(old):] if tlb.driver.startswith(old) else ""
            tlb.driver = name + rest
            tlb.__mmemu_name__ = f"{tlb.driver}.tlb"

    # ------------------------------------------------------------ plumbing

    def _build_ops(self) -> MmuNotifierOps:
        ops: dict[str, Any] = {}
        for cb in CALLBACKS:
            if getattr(self, cb, None) is not None:
                ops[cb] = self._guard_callback(cb)
        return MmuNotifierOps(**ops)

    def _guard_callback(self, cb: str) -> Callable[..., Awaitable[Any]]:
        async def call(mn: MmuNotifier, mm: Any, *args: Any) -> Any:
            if isinstance(mm, MmuNotifierRange):  # modern start/end: (mn, range)
                if self.range_callbacks:
                    return await guarded(self, f"->{cb}", getattr(self, cb), mm)
                ret = await guarded(self, f"->{cb}", getattr(self, cb), mm.mm, mm.start, mm.end)
                return ret or 0
            return await guarded(self, f"->{cb}", getattr(self, cb), mm, *args)
        call.__name__ = f"{self.name}_{cb}"
        return call


async def guarded(driver: Driver, what: str, fn: Callable[..., Awaitable[Any]],
                  *args: Any) -> Any:
    """Run a driver's code; an exception fails the execution as DriverError.

    ``what`` names the operation, or the callback as ``"->release"``: a
    callback that starts, or returns, after the driver's detach returned
    (``driver.detached_at``) is a CallbackAfterDetach."""
    callback = what.startswith("->")
    # coverage: "kvm->invalidate_range_start" (a callback), "kvm fault" (an operation)
    name = driver.name.partition("#")[0]
    if callback:
        reach(f"{name}{what}", kind="callback")
    else:
        reach(f"{name} {what}")
    if callback and driver.detached_at is not None:
        _after_detach(driver, what, "called")
    try:
        ret = await fn(*args)
        if callback and driver._watch_detach:
            await step(f"{driver.name} {what} returns", reads=(driver.detached_key,))
    except MmemuError:
        raise
    except Exception as exc:  # noqa: BLE001 - any bug in a driver is a finding
        sim = current_simulation()
        site = page_site()
        sim.fail(DriverError(
            f"driver {driver.name} raised {type(exc).__name__}: {exc} in {what} at {site}",
            driver=driver.name, callback=what, site=site, original=exc,
            traceback_text=traceback.format_exc()))
        raise  # not reached: sim.fail unwinds
    if callback and driver.detached_at is not None:
        _after_detach(driver, what, "still running")
    return ret


def _after_detach(driver: Driver, what: str, how: str) -> None:
    current_simulation().fail(CallbackAfterDetach(
        f"driver {driver.name}: {what} {how} at {page_site()}, after its detach returned "
        f"at {driver.detached_at} (once mmu_notifier_unregister has returned no callback "
        f"may run: the driver may already have freed what the callback uses)"))


# --------------------------------------------------------------- loading


_LOADED: dict[str, type[Driver]] = {}


def available_drivers() -> list[str]:
    """The names registered in the ``mmemu.drivers`` entry-point group."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def _load_path(spec: str) -> type[Driver]:
    path_s, _, cls_name = spec.rpartition(":")
    path = Path(path_s)
    if not cls_name:
        raise DriverLoadError(f"driver {spec!r}: give the class as 'path/to/file.py:ClassName'")
    if not path.is_file():
        raise DriverLoadError(f"driver {spec!r}: no such file {path_s!r}")
    mod_name = "mmemu_driver_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    module = sys.modules.get(mod_name)
    if module is None:
        ispec = importlib.util.spec_from_file_location(mod_name, path)
        if ispec is None or ispec.loader is None:
            raise DriverLoadError(f"driver {spec!r}: cannot import {path_s!r}")
        module = importlib.util.module_from_spec(ispec)
        sys.modules[mod_name] = module
        try:
            ispec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - reported as a one-liner
            del sys.modules[mod_name]
            raise DriverLoadError(f"driver {spec!r}: importing {path_s!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise DriverLoadError(f"driver {spec!r}: {path_s!r} has no class {cls_name!r}")
    return _check_class(spec, cls)


def _check_class(spec: str, cls: Any) -> type[Driver]:
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverLoadError(f"driver {spec!r}: {cls!r} is not a subclass of mmemu.driver.Driver")
    return cls


def load_driver(spec: str) -> type[Driver]:
    """The driver class named ``spec``: an entry-point name or 'file.py:Class'."""
    is_path = _is_path(spec)
    key = _cache_key(spec)
    cls = _LOADED.get(key)
    if cls is not None:
        return cls
    if is_path:
        cls = _load_path(spec)
    else:
        eps = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
               if ep.name == spec]
        if not eps:
            known = ", ".join(available_drivers()) or "none"
            raise DriverLoadError(f"unknown driver {spec!r} (installed: {known}; or give "
                                  f"'path/to/file.py:ClassName')")
        try:
            obj = eps[0].load()
        except Exception as exc:  # noqa: BLE001 - reported as a one-liner
            raise DriverLoadError(f"driver {spec!r} ({eps[0].value}) failed to import: "
                                  f"{type(exc).__name__}: {exc}") from None
        cls = _check_class(spec, obj)
    _LOADED[key] = cls
    return cls


def _is_path(spec: str) -> bool:
    return ":" in spec and (spec.rpartition(":")[0].endswith(".py") or "/" in spec)


def _cache_key(spec: str) -> str:
    """The key of ``spec`` in the loader's cache: a relative 'file.py:Class'
    means another file from another directory, so paths are made absolute."""
    if not _is_path(spec):
        return spec
    path, _, clsname = spec.rpartition(":")
    return f"{os.path.abspath(path)}:{clsname}"


def absolute_spec(spec: str) -> str:
    """``spec`` with a ``file.py:Class`` path made absolute (installed names
    unchanged): what a token records, so that it replays from any directory."""
    return _cache_key(spec)


def register_driver(name: str, cls: type[Driver] | None) -> type[Driver] | None:
    """Make ``load_driver(name)`` return ``cls`` in this process (ahead of
    the entry points and of importing a file); ``cls=None`` removes it.

    Returns the class ``name`` loaded to before (None if it was not loaded
    yet), so a caller can put it back.  It is what lets a suite, which finds
    its driver by name in ``sim.params["driver"]`` (so that a token can say
    which driver to reload), run a class object that no entry point names:
    ``mmemu.testing.check_driver`` registers it for the duration of the run.
    A token naming a registered-only name replays only while it is
    registered; a ``'file.py:Class'`` name replays anywhere.
    """
    key = _cache_key(name)
    old = _LOADED.pop(key, None)
    if cls is not None:
        _LOADED[key] = _check_class(name, cls)
    return old


def supports_api(params: Mapping[str, Any]) -> bool:
    """Scenario filter: does the driver ``params["driver"]`` support the
    notifier API generation ``params["api"]`` (default 2.6.27)?  A driver
    that fails to load is kept (the run reports the error)."""
    spec = params.get("driver")
    if not spec:
        return True
    try:
        cls = load_driver(str(spec))
    except DriverLoadError:
        return True
    return str(params.get("api", "2.6.27")) in cls.apis


def new_driver(sim: Any = None, default: str = DEFAULT_DRIVER) -> Driver:
    """An instance of the driver named by ``sim.params["driver"]`` (default kvm)."""
    sim = sim if sim is not None else _sim_or_none()
    spec = default
    if sim is not None:
        spec = sim.params.get("driver", default) or default
    return load_driver(spec)()


__all__ = [
    "absolute_spec", "available_drivers", "CallbackAfterDetach", "CALLBACKS", "DEFAULT_DRIVER",
    "Driver", "DriverCheckFailed", "DriverError", "DriverLoadError", "ENTRY_POINT_GROUP",
    "guarded", "KERNEL_API", "load_driver", "new_driver", "register_driver", "register_tlb",
    "ShadowTLB", "supports_api", "Translation",
]
_FRAMEWORK_NAMES = len(__all__)

# the driver-facing kernel API re-exported here (include/linux/*.h for a
# driver author): locks and waits, atomics, RCU/SRCU, pages, the mm
# helpers a fault path uses, and the mmu-notifier API of both generations
# (a literal `__all__ +=`: mypy reads re-exports from it)
__all__ += [
    "Completion", "EAGAIN", "GuardedList", "MMU_NOTIFY_CLEAR", "MMU_NOTIFY_EXCLUSIVE", "MMU_NOTIFY_MIGRATE",
    "MMU_NOTIFY_PROTECTION_PAGE", "MMU_NOTIFY_PROTECTION_VMA", "MMU_NOTIFY_RELEASE",
    "MMU_NOTIFY_SOFT_DIRTY", "MMU_NOTIFY_UNMAP", "MmuIntervalNotifier",
    "MmuIntervalNotifierOps", "MmuNotifier", "MmuNotifierOps", "MmuNotifierRange", "Mutex",
    "PAGE_MASK", "PAGE_SHIFT", "PAGE_SIZE", "Page", "READ_ONCE", "RwSemaphore", "SpinLock", "SrcuStruct",
    "TASK_SIZE", "VM_FAULT_ERROR", "VM_FAULT_SIGBUS", "VM_WRITE", "WaitQueueHead",
    "atomic_dec", "atomic_dec_and_test", "atomic_inc", "atomic_inc_not_zero",
    "atomic_inc_return", "atomic_read", "atomic_set", "atomic_t", "complete", "complete_all",
    "down_read", "down_read_trylock", "down_write", "fault_in", "find_vma", "get_page",
    "get_page_unless_zero", "get_user_pages", "guarded_by", "handle_mm_fault",
    "mmget_not_zero", "mmput", "mmu_interval_notifier_insert", "mmu_interval_notifier_remove",
    "mmu_interval_read_begin", "mmu_interval_read_retry", "mmu_interval_set_seq",
    "mmu_notifier_get", "mmu_notifier_get_locked", "mmu_notifier_put",
    "mmu_notifier_range_blockable", "mmu_notifier_register", "mmu_notifier_synchronize",
    "mmu_notifier_unregister", "mutex_lock", "mutex_trylock", "mutex_unlock", "page_site", "pmd_key", "pte_get", "pte_key", "put_page", "rcu_read_lock",
    "rcu_read_unlock", "spin_lock", "spin_trylock", "spin_unlock", "srcu_read_lock",
    "srcu_read_unlock", "synchronize_rcu", "synchronize_srcu", "up_read", "up_write",
    "wait_event", "wait_for_completion", "wake_up_all",
]
#: the names of that kernel API
KERNEL_API = __all__[_FRAMEWORK_NAMES:]
