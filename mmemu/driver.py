"""The driver API: how a secondary MMU plugs into the emulated kernel.

A driver is a class derived from ``Driver``.  It implements the mmu-notifier
callbacks it needs (all ``async``, all optional) and the four operations the
race suites drive:

``await attach(kernel, mm)``
    create the shadow TLB and register the driver's notifier on ``mm``
    (``mmu_notifier_register``: mmap_sem for write + mm_take_all_locks).
``await fault(address, write) -> bool``
    the secondary MMU establishes a translation for a user address (a KVM
    guest fault, a GRU TLB dropin); False if the address cannot be mapped.
``await access(address) -> Page | None``
    the device/guest uses its translation (None: a miss).
``await detach()``
    unregister (``->release`` runs if the mm has not gone away yet).

Notifier callbacks, as methods (``mn`` is the driver itself)::

    async def release(self, mm)
    async def invalidate_page(self, mm, address)
    async def invalidate_range_start(self, mm, start, end)
    async def invalidate_range_end(self, mm, start, end)
    async def clear_flush_young(self, mm, address) -> bool
    async def test_young(self, mm, address) -> bool
    async def change_pte(self, mm, address, page)
    async def arch_invalidate_secondary_tlbs(self, mm, start, end)   (modern)

Notifier API generations: a driver lists the generations it supports in
``apis`` (default ``("2.6.27",)``; the kernel's is ``kernel.api``, chosen
by the suite's ``api`` axis).  In the modern generation
``invalidate_range_start`` / ``invalidate_range_end`` are called with the
2.6.27 arguments ``(mm, start, end)`` (start's None counts as 0) unless the
class sets ``range_callbacks = True``: then they get the
``MmuNotifierRange`` and start returns an int (0 or -EAGAIN for a
non-blockable range).  ``invalidate_page`` is never called in the modern
generation.  Drivers that do not use the hlist notifier (an interval
notifier mirror, a ``mmu_notifier_get`` user) override ``attach`` and
``detach``.  ``supports_api(params)`` is the suites' combination filter.

Translations live in ``self.tlb`` (a ``mmemu.check.shadow_tlb.ShadowTLB``):
``install(key, page)``, ``zap(key)``, ``lookup(key)``, ``access(key)``.  The
checker sees them all: a page freed while a translation maps it is
``FreedPageStillMapped``, an access through a stale translation is
``SecondaryUseAfterFree``.  Declare the TLB slots a step touches
(``**self.tlb.install_accesses(key, page)``, ``**self.tlb.zap_accesses(keys)``).

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
from collections.abc import Awaitable, Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

from mmemu.check.shadow_tlb import ShadowTLB, register_tlb
from mmemu.engine._errors import MmemuError, ModelError, UnexpectedException
from mmemu.engine._execution import _sim_or_none, current_simulation
from mmemu.mm.mmu_notifier import (
    MmuNotifier,
    MmuNotifierOps,
    MmuNotifierRange,
    mmu_notifier_register,
    mmu_notifier_unregister,
)
from mmemu.mm.page import Page, page_site

ENTRY_POINT_GROUP = "mmemu.drivers"
DEFAULT_DRIVER = "kvm"

CALLBACKS = ("release", "invalidate_page", "invalidate_range_start", "invalidate_range_end",
             "clear_flush_young", "test_young", "change_pte", "arch_invalidate_secondary_tlbs")


class DriverError(UnexpectedException):
    """A driver raised inside a notifier callback or a driver operation."""

    def __init__(self, message: str, *, driver: str, callback: str, site: str,
                 original: BaseException, traceback_text: str) -> None:
        super().__init__(message, original=original, traceback_text=traceback_text)
        self.driver = driver
        self.callback = callback
        self.site = site


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

    release: Callable[..., Awaitable[None]] | None = None
    invalidate_page: Callable[..., Awaitable[None]] | None = None
    invalidate_range_start: Callable[..., Awaitable[None]] | None = None
    invalidate_range_end: Callable[..., Awaitable[None]] | None = None
    clear_flush_young: Callable[..., Awaitable[bool]] | None = None
    test_young: Callable[..., Awaitable[bool]] | None = None
    change_pte: Callable[..., Awaitable[None]] | None = None
    arch_invalidate_secondary_tlbs: Callable[..., Awaitable[None]] | None = None

    def __init__(self) -> None:
        self.kernel: Any = None
        self.mm: Any = None
        self.tlb = ShadowTLB(self.name, key_name=self.key_name)
        self.mn = MmuNotifier(self._build_ops(), name=f"{self.name}.mmu_notifier", owner=self)
        self.__mmemu_name__ = self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ---------------------------------------------------------- operations

    async def attach(self, kernel: Any, mm: Any) -> int:
        """Register the notifier on ``mm`` (0, or -EINTR)."""
        self.kernel = kernel
        self.mm = mm
        self.check_api(kernel)
        register_tlb(kernel, self.tlb)
        return await mmu_notifier_register(self.mn, mm)

    def check_api(self, kernel: Any) -> None:
        """A driver attached to a kernel whose notifier API it does not support."""
        api = getattr(kernel, "api", "2.6.27")
        if api not in self.apis:
            raise ModelError(f"driver {self.name} supports the notifier API "
                             f"{', '.join(self.apis)}, not {api!r}")

    async def fault(self, address: int, write: bool = False) -> bool:
        raise NotImplementedError(f"driver {self.name} does not implement fault()")

    async def access(self, address: int) -> Page | None:
        """Default: the translation is keyed by the page-aligned address."""
        from mmemu.engine._execution import step
        key = self.key_of(address)
        e = self.tlb.entries.get(key)
        reads: tuple[Hashable, ...] = (self.tlb.slot(key),)
        if e is not None:
            reads += (e.page._count,)
        # the same words as the shadow TLB's reports ("kvm va 0x10000000")
        await step(f"{self.name}: access {self.tlb.describe(key).split(' ', 1)[1]}", reads=reads)
        return self.tlb.access(key)

    async def detach(self) -> None:
        await mmu_notifier_unregister(self.mn, self.mm)

    def key_of(self, address: int) -> Hashable:
        return address & ~0xFFF

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
    """Run a driver's code; an exception fails the execution as DriverError."""
    try:
        return await fn(*args)
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
    "CALLBACKS", "DEFAULT_DRIVER", "Driver", "DriverError", "DriverLoadError",
    "ENTRY_POINT_GROUP", "available_drivers", "guarded", "load_driver", "new_driver",
    "register_driver", "supports_api",
]
