"""The mmu-notifier contract, checked on both sides: what the kernel promises
the secondary MMUs, and what a driver may rely on.

Emulates: nothing in the kernel; it checks the contract of
include/linux/mmu_notifier.h (2.6.27, and the modern generation) the way a
sanitizer would, from the calls the emulated mm/mmu_notifier.c reports
(``kernel.notifier_hooks``) and the pte writes of mm/memory.c
(``kernel.pte_hooks``).

Kernel side -- the secondary MMUs are told before a page they may map goes:

- **the range_start contract** (``RangeStartAfterUnmap``,
  ``PageFreedBeforeNotify``, ``PteChangeNotNotified``): a pte that maps a
  page (present) and is cleared, pointed at another page or made read-only,
  in an mm that has notifiers, must be covered: either by an
  ``invalidate_range_start`` ... ``invalidate_range_end`` bracket whose start
  *returned before* the change (the pages of the range are still mapped when
  start runs; they may be freed between start and end, never before start),
  or (2.6.27) by an ``invalidate_page`` of that address that returns before
  the page is freed (the pte is cleared first: ``ptep_clear_flush_notify``),
  or by a ``change_pte`` of it (``set_pte_at_notify`` tells before it sets),
  or (modern) by ``arch_invalidate_secondary_tlbs`` under the PTL.  A start
  that begins on a CPU which already cleared a pte of its range without
  telling anyone, a page freed while such a change is untold, and a change
  still untold when every CPU has finished, are violations.
- **balanced start/end per notifier** (``UnbalancedRange``): every
  ``->invalidate_range_start`` a notifier receives is followed by exactly
  one ``->invalidate_range_end`` of the same range, except a non-blockable
  start that the notifier itself failed (-EAGAIN), and a bracket that
  exit_mmap's ``__mmu_notifier_release`` overtook (the end walks a list the
  notifier has left; its ->release has torn everything down); no end comes
  without its start (a register that lands inside a bracket: the seed race).
- **release** (``ReleaseTwice``, ``NotifierUseAfterFree``), era by era.
  Both generations of the model run ``__mmu_notifier_release`` in the
  release-first order (every ``->release`` while still hashed, then unhash
  all: 3ad3d901bbcf, 2012; again d34883d4e35c, v3.10, after 751efd8610d3
  had reverted it), and ``mmu_notifier_unregister`` calls ``->release``
  when its ``hlist_unhashed`` test finds the notifier hashed.  So an
  unregister racing exit_mmap may legally call ``->release`` a second time
  (drivers make it idempotent: KVM flushes again) -- that, and only that,
  is allowed: a ``->release`` from an unregister whose own test found the
  notifier already unhashed, or a second one from the same path, is
  ``ReleaseTwice``.  (2.6.27's own code, cddb8a5c14aa, had exactly one
  ``->release`` per registration: both __mmu_notifier_release and
  unregister unhashed under ``mmu_notifier_mm->lock`` and only the one that
  unhashed called it; 751efd8610d3 went back to that in 2013 to end the
  "multiple ->release() callouts" of 3ad3d901bbcf's unlocked test, and
  d34883d4e35c accepted them again with release-first.  The model's
  unhash-first order survives only as the ``mmu_notifier:release-after-unhash``
  mutant, whose unregister is still the v3.10 one.)  In every era no
  callback, ``->release`` included, runs -- or is still running -- after
  ``mmu_notifier_unregister`` returned.
- **one notifier per ops and mm** (``DuplicateNotifier``): ``mmu_notifier_get``
  allocates a notifier only when none of its ops is registered on the mm
  (the kernel's promise since 2c7933f53f6b, v5.4: a second get returns the
  first with one more user).
- **use-after-free of the notifier** (``NotifierUseAfterFree``): no callback,
  ``->release`` and the 2.6.27 ones included, after ``mmu_notifier_unregister``
  returned (the driver may free the notifier then) -- reported here; a
  callback through a notifier whose ``free_notifier`` ran, or an interval
  its owner freed, is the model's own check (``_check_live`` in
  mmemu.mm.mmu_notifier, and mn_itree_invalidate).

Driver side -- at the end of every execution (``IncoherentTranslation``,
``SecondaryWriteToReadOnly``): every translation that a registered driver
keeps, in every shadow TLB it has (``driver.tlbs``, else ``driver.tlb``: a
driver may keep a hardware TLB behind its sptes), maps the page the CPU pte
of that address maps now, and is writable only if the CPU pte is; a driver
whose mm exited or that unregistered keeps none.  Keys are turned into user
addresses by ``driver.address_of(key)`` (a TLB keyed by virtual address,
``key_name == "va"``, needs none; a TLB whose keys cannot be mapped is not
judged).  A device write through a translation (``ShadowTLB.access(key,
write=True)``) is checked when it happens: see mmemu.check.shadow_tlb.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import Simulation, _sim_or_none, current_simulation, reach
from mmemu.mm.mmu_notifier import (
    MmuNotifierViolation,
    NotifierUseAfterFree,
)
from mmemu.check import install_once
from mmemu.check.shadow_tlb import SecondaryWriteToReadOnly
from mmemu.mm.page import Page, page_site

PAGE_MASK = ~0xFFF
EAGAIN = 11


class RangeStartAfterUnmap(MmuNotifierViolation):
    """invalidate_range_start began after its own CPU had already changed a
    pte of the range without telling the notifiers."""


class PageFreedBeforeNotify(MmuNotifierViolation):
    """A page was freed while the unmapping of one of its ptes had not been
    reported to the mm's notifiers."""


class PteChangeNotNotified(MmuNotifierViolation):
    """A pte of an mm with notifiers was cleared, remapped or write-protected
    and no notifier was ever told."""


class UnbalancedRange(MmuNotifierViolation):
    """A notifier got an invalidate_range_end without its start, or a start
    never ended."""


class ReleaseTwice(MmuNotifierViolation):
    """->release ran twice for one notifier outside the exit/unregister race."""


class DuplicateNotifier(MmuNotifierViolation):
    """mmu_notifier_get allocated a second notifier of one ops on one mm
    while the first was still registered."""


class IncoherentTranslation(InvariantViolation):
    """At the end, a driver translation maps a page the CPU pte does not (or a
    driver that the mm no longer notifies still has translations)."""


def _name(obj: Any) -> str:
    return str(getattr(obj, "__mmemu_name__", obj))


def _range_key(args: tuple[Any, ...]) -> tuple[Hashable, str]:
    """The identity of a start/end pair -- (start, end): a call site may
    build its end's range anew -- and how to print it."""
    if len(args) == 1:  # modern (range,)
        r = args[0]
        return (r.start, r.end), f"{r.event} [{r.start:#x}, {r.end:#x})"
    _mm, start, end = args[:3]
    return (start, end), f"[{start:#x}, {end:#x})"


class _Pending:
    __slots__ = ("mm", "address", "page", "gen", "what", "site", "cpu")

    def __init__(self, mm: Any, address: int, page: Page, what: str, site: str,
                 cpu: int | None) -> None:
        self.mm = mm
        self.address = address
        self.page = page
        self.gen = page.gen
        self.what = what
        self.site = site
        self.cpu = cpu

    def describe(self) -> str:
        return (f"{_name(self.mm)} pte {self.address:#x} ({self.what} page{self.page.pfn} "
                f"at {self.site})")


class _NotifierState:
    __slots__ = ("mn", "mm", "releases", "unregistering", "hashed_at_unregister",
                 "unregistered", "outstanding")

    def __init__(self, mn: Any, mm: Any) -> None:
        self.mn = mn
        self.mm = mm
        #: the paths ("exit", "unregister") that called ->release, in order
        self.releases: list[str] = []
        #: CPU ids inside mmu_notifier_unregister(mn)
        self.unregistering: dict[int | None, bool] = {}
        self.hashed_at_unregister = True
        self.unregistered = False
        #: range key -> starts not yet ended
        self.outstanding: dict[Hashable, int] = {}


class NotifierChecker:
    """Per-execution state (``kernel.data["notifier_contract"]``)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        #: mm -> [start, end) brackets whose start returned and whose end has not begun
        self.active: dict[Any, list[tuple[int, int]]] = {}
        #: (mm, address) -> an untold pte change
        self.pending: dict[tuple[Any, int], _Pending] = {}
        #: (mm, address, cpu) announced by change_pte (set_pte_at_notify tells first)
        self.announced: dict[tuple[Any, int, int | None], bool] = {}
        #: every notifier (or interval notifier) seen, in order of first sight
        self.notifiers: dict[Any, _NotifierState] = {}

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _cpu() -> int | None:
        sim = _sim_or_none()
        cpu = sim.running if sim is not None else None
        return cpu.id if cpu is not None else None

    def _state(self, mn: Any, mm: Any) -> _NotifierState:
        st = self.notifiers.get(mn)
        if st is None:
            st = self.notifiers[mn] = _NotifierState(mn, mm)
        return st

    def _fail(self, exc: InvariantViolation) -> None:
        current_simulation().fail(exc)

    def _covered(self, mm: Any, address: int) -> bool:
        return any(s <= address < e for s, e in self.active.get(mm, ()))

    # ------------------------------------------------------- pte changes

    def pte_changed(self, mm: Any, address: int, old: Any, new: Any) -> None:
        if old is None or not old.present or old.page is None:
            return
        if getattr(mm, "mmu_notifier_mm", None) is None:
            return  # nobody can map it: no notifier to tell
        if new is None or not new.present:
            what = "cleared, was"
        elif new.page is not old.page:
            what = "remapped, was"
        elif old.write and not new.write:
            what = "write-protected, maps"
        else:
            return
        address &= PAGE_MASK
        cpu = self._cpu()
        if self.announced.pop((mm, address, cpu), False):
            return  # set_pte_at_notify: ->change_pte already told them
        if self._covered(mm, address):
            return
        if (mm, address) not in self.pending:
            self.pending[(mm, address)] = _Pending(mm, address, old.page, what, page_site(), cpu)

    def on_free(self, page: Page) -> None:
        for p in list(self.pending.values()):
            if p.page is page and p.gen == page.gen:
                self._fail(PageFreedBeforeNotify(
                    f"page{page.pfn} freed at {page_site()} while {p.describe()} was never "
                    f"reported to the notifiers of {_name(p.mm)}: a secondary MMU may still "
                    f"map it (the range_start contract: start before the pages go; 2.6.27's "
                    f"invalidate_page before the page is freed)", details=page.dump()))

    # ------------------------------------------------ kernel-side events

    def notifier_event(self, event: str, mm: Any, *args: Any) -> None:
        """Reported by mmemu.mm.mmu_notifier (see ``_report`` there)."""
        getattr(self, "_ev_" + event)(mm, *args)

    def _ev_range_start_begin(self, mm: Any, start: int, end: int) -> None:
        cpu = self._cpu()
        for p in self.pending.values():
            if p.mm is mm and p.cpu == cpu and start <= p.address < end:
                self._fail(RangeStartAfterUnmap(
                    f"invalidate_range_start of {_name(mm)} [{start:#x}, {end:#x}) began at "
                    f"{page_site()} after this CPU had already changed a pte of the range: "
                    f"{p.describe()}; the pages of the range must still be mapped when start "
                    f"runs", details=p.page.dump()))

    def _ev_range_start_done(self, mm: Any, start: int, end: int, failed: bool) -> None:
        if not failed:
            self.active.setdefault(mm, []).append((start, end))
        else:
            reach("a non-blockable invalidate_range_start failed (-EAGAIN)")

    def _ev_range_end_begin(self, mm: Any, start: int, end: int) -> None:
        lst = self.active.get(mm)
        if lst and (start, end) in lst:
            lst.remove((start, end))

    def _told(self, mm: Any, start: int, end: int) -> None:
        for key in [k for k, p in self.pending.items()
                    if p.mm is mm and start <= p.address < end]:
            del self.pending[key]

    def _ev_page_invalidated(self, mm: Any, address: int) -> None:
        a = address & PAGE_MASK
        self._told(mm, a, a + 0x1000)

    def _ev_secondary_tlbs_invalidated(self, mm: Any, start: int, end: int) -> None:
        self._told(mm, start, end)

    def _ev_change_pte(self, mm: Any, address: int) -> None:
        a = address & PAGE_MASK
        self._told(mm, a, a + 0x1000)
        self.announced[(mm, a, self._cpu())] = True

    def _ev_unregister_begin(self, mm: Any, mn: Any) -> None:
        """Reported right after unregister's hlist_unhashed test: its decision."""
        st = self._state(mn, mm)
        st.unregistering[self._cpu()] = True
        st.hashed_at_unregister = bool(getattr(mn, "hashed", True))

    def _ev_unregister_end(self, mm: Any, mn: Any) -> None:
        st = self._state(mn, mm)
        st.unregistering.pop(self._cpu(), None)
        st.unregistered = True

    def _ev_get_alloc(self, mm: Any, mn: Any) -> None:
        """mmu_notifier_get_locked found no notifier of ``mn.ops`` and is
        about to register ``mn``: there must be none (the caller holds
        mmap_sem for write, so no other get runs; a put unhashes under the
        list lock in the step that drops its last user)."""
        mmn = getattr(mm, "mmu_notifier_mm", None)
        for other in getattr(mmn, "list", ()):
            if other.ops is mn.ops and other.hashed and other.users > 0:
                self._fail(DuplicateNotifier(
                    f"mmu_notifier_get on {_name(mm)} allocated {_name(mn)} at {page_site()} "
                    f"while {_name(other)} of the same ops is registered with "
                    f"{other.users} user(s): the get must return the registered one "
                    f"(one notifier per ops and mm)"))

    def _ev_hashed(self, mm: Any, mn: Any) -> None:
        st = self._state(mn, mm)
        st.unregistered = False
        # tell the driver's shadow TLBs which addresses their keys are, for
        # the write check at access (ShadowTLB._check_write)
        owner = getattr(mn, "owner", None)
        address_of = _address_of(owner)
        for tlb in _tlbs(owner):
            if tlb.mm is None:
                tlb.mm = mm
                tlb.address_of = address_of

    # ----------------------------------------------------- the callbacks

    def callback_begin(self, mm: Any, mn: Any, what: str, args: tuple[Any, ...]) -> None:
        st = self._state(mn, mm)
        name = _name(mn)
        # (the coverage event "DRIVER->what" is counted by mmemu.driver.guarded)
        if what != "release" and st.releases and getattr(mn, "hashed", False):
            reach("a notifier was called after its ->release, before exit_mmap unhashed it")
        # (a callback through a freed notifier or interval is the model's own
        # NotifierUseAfterFree: mmu_notifier._check_live, mn_itree_invalidate)
        if st.unregistered:
            self._fail(NotifierUseAfterFree(
                f"->{what} of {name} called at {page_site()} after "
                f"mmu_notifier_unregister({name}) returned: the driver may already have freed "
                f"it (after unregister no callback runs or will run)"))
        if what == "release":
            via = "unregister" if st.unregistering.get(self._cpu()) else "exit"
            if via == "unregister" and not st.hashed_at_unregister:
                self._fail(ReleaseTwice(
                    f"mmu_notifier_unregister({name}) called ->release at {page_site()}, but "
                    f"the notifier was already unhashed when unregister began "
                    f"(released by {', '.join(st.releases) or 'nobody'}): unregister calls "
                    f"->release only if it is still hashed"))
            if via in st.releases:
                self._fail(ReleaseTwice(
                    f"->release of {name} called a second time by {via} at {page_site()} "
                    f"(earlier: {', '.join(st.releases)})"))
            st.releases.append(via)
        elif what == "invalidate_range_start":
            if getattr(getattr(mn, "ops", None), "invalidate_range_end", None) is not None:
                key, _ = _range_key(args)
                st.outstanding[key] = st.outstanding.get(key, 0) + 1
        elif what == "invalidate_range_end":
            if getattr(getattr(mn, "ops", None), "invalidate_range_start", None) is not None:
                key, shown = _range_key(args)
                n = st.outstanding.get(key, 0)
                if n <= 0:
                    self._fail(UnbalancedRange(
                        f"->invalidate_range_end {shown} of {name} at {page_site()} without "
                        f"its ->invalidate_range_start (was the notifier registered inside "
                        f"the bracket?)"))
                if n <= 1:
                    st.outstanding.pop(key, None)
                else:
                    st.outstanding[key] = n - 1

    def callback_end(self, mm: Any, mn: Any, what: str, args: tuple[Any, ...], ret: Any) -> None:
        st = self.notifiers.get(mn)
        if st is not None and st.unregistered:
            self._fail(NotifierUseAfterFree(
                f"->{what} of {_name(mn)} was still running at {page_site()}, after "
                f"mmu_notifier_unregister({_name(mn)}) returned: the driver may already have "
                f"freed it (unregister must wait for every walker: synchronize_srcu)"))
        if what == "invalidate_range_start" and isinstance(ret, int) and ret == -EAGAIN:
            # a non-blockable start this notifier failed: no end for it
            st = self._state(mn, mm)
            key, _ = _range_key(args)
            n = st.outstanding.get(key, 0)
            if n <= 1:
                st.outstanding.pop(key, None)
            else:
                st.outstanding[key] = n - 1

    # ---------------------------------------------------------- the end

    def at_end(self, sim: Simulation) -> None:
        for st in self.notifiers.values():
            if st.releases or not getattr(st.mn, "hashed", True):
                # exit_mmap released and unhashed it while a bracket was in
                # flight (reclaim's try_to_unmap_one): its end walks a list
                # without the notifier.  The kernel allows it -- the driver
                # has torn down everything in ->release.
                continue
            for key, n in st.outstanding.items():
                shown = f"[{key[0]:#x}, {key[1]:#x})"  # type: ignore[index]
                raise UnbalancedRange(
                    f"at the end: {_name(st.mn)} got {n} ->invalidate_range_start {shown} "
                    f"never followed by ->invalidate_range_end (every start gets exactly one "
                    f"end, except a non-blockable start that failed)")
        for p in self.pending.values():
            raise PteChangeNotNotified(
                f"at the end: {p.describe()} was never reported to the notifiers of "
                f"{_name(p.mm)}: a secondary MMU keeps the old translation",
                details=p.page.dump())
        self.check_coherence()

    def owners(self) -> list[tuple[Any, Any, _NotifierState | None]]:
        """(driver, mm, state) for every driver that registered a notifier
        or interval notifier in this execution, in order of first sight."""
        out: list[tuple[Any, Any, _NotifierState | None]] = []
        seen: dict[Any, bool] = {}
        for st in self.notifiers.values():
            owner = getattr(st.mn, "owner", None)
            if owner is not None and owner not in seen:
                seen[owner] = True
                out.append((owner, st.mm, st))
        for mm in self.kernel.mms:
            mmn = getattr(mm, "mmu_notifier_mm", None)
            if mmn is None:
                continue
            for mn in list(getattr(mmn, "list", ())) + list(getattr(mmn, "itree", ())):
                owner = getattr(mn, "owner", None)
                if owner is not None and owner not in seen:
                    seen[owner] = True
                    out.append((owner, mm, self.notifiers.get(mn)))
        return out

    def check_coherence(self) -> None:
        from mmemu.mm.memory import pte_get

        for owner, mm, st in self.owners():
            tlbs = _tlbs(owner)
            address_of = _address_of(owner)
            gone = getattr(mm, "dead", False) or (st is not None and st.unregistered)
            for tlb in tlbs:
                for key in tlb.keys():
                    e = tlb.entries[key]
                    if gone:
                        why = "exited" if getattr(mm, "dead", False) else "was unregistered from"
                        raise IncoherentTranslation(
                            f"at the end: {tlb.describe(key)} still maps page{e.page.pfn} "
                            f"(installed at {e.site}) but driver {_name(owner)} "
                            f"{why} {_name(mm)}: nothing will ever zap it",
                            details=e.page.dump())
                    if address_of is None:
                        continue
                    address = address_of(key)
                    if address is None:
                        continue
                    pte = pte_get(mm, address)
                    page: Page = e.page
                    cpu_page = pte.page if pte is not None and pte.present else None
                    if pte is None or cpu_page is not page or e.gen != page.gen:
                        where = f"page{cpu_page.pfn}" if cpu_page is not None else "nothing"
                        raise IncoherentTranslation(
                            f"at the end: {tlb.describe(key)} maps page{e.page.pfn} (installed "
                            f"at {e.site}) but the CPU pte of {_name(mm)} at {address:#x} maps "
                            f"{where}: an invalidation never reached driver {_name(owner)}",
                            details=e.page.dump())
                    if e.writable and not pte.write:
                        raise SecondaryWriteToReadOnly(
                            f"at the end: {tlb.describe(key)} is a writable translation to "
                            f"page{e.page.pfn} (installed at {e.site}) but the CPU pte of "
                            f"{_name(mm)} at {address:#x} is read-only (COW, KSM or mprotect "
                            f"never reached driver {_name(owner)})", details=e.page.dump())


def _tlbs(owner: Any) -> list[Any]:
    """Every shadow TLB of a driver: ``driver.tlbs`` (a driver may keep a
    hardware TLB behind its sptes), else ``driver.tlb``."""
    tlbs = getattr(owner, "tlbs", None) or [getattr(owner, "tlb", None)]
    return [t for t in tlbs if t is not None and hasattr(t, "entries")]


def _address_of(owner: Any) -> Callable[[Hashable], int | None] | None:
    fn = getattr(owner, "address_of", None)
    if callable(fn):
        return fn  # type: ignore[no-any-return]
    if getattr(owner, "key_name", None) == "va":
        return lambda key: key if isinstance(key, int) else None
    return None


def install(kernel: Any) -> NotifierChecker:
    """Checker installer for ``mmemu.check.boot_checked``."""
    return install_once(kernel, "notifier_contract", _hook)


def _hook(kernel: Any) -> NotifierChecker:
    chk = NotifierChecker(kernel)
    kernel.notifier_hooks.append(chk)
    kernel.pte_hooks.append(chk.pte_changed)
    kernel.free_hooks.append(chk.on_free)
    kernel.sim.at_end(chk.at_end)
    return chk


__all__ = ["DuplicateNotifier", "IncoherentTranslation", "NotifierChecker",
           "PageFreedBeforeNotify", "PteChangeNotNotified", "RangeStartAfterUnmap",
           "ReleaseTwice", "SecondaryWriteToReadOnly", "UnbalancedRange", "install"]
