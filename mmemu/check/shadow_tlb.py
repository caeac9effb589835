"""Secondary-MMU use-after-free checker: a shadow of every driver's TLB.

Emulates: nothing in the kernel; it is the sanitizer the kernel never had.
(The translations it shadows are KVM's sptes, GRU TLB entries, IOMMU
IOTLB entries: arch/x86/kvm/mmu.c, drivers/misc/sgi-gru (2.6.27).)

A driver keeps each translation it establishes in a framework-owned
``ShadowTLB`` (``install(key, page)``, ``zap(key)``, ``lookup(key)``), so
the checker sees every translation without trusting the driver's own
bookkeeping.  Two rules:

- **FreedPageStillMapped**: when a page returns to the allocator
  (``kernel.free_hooks``), no shadow TLB may map it.  This is the moment the
  mmu-notifier contract is about: the page is going to the freelist and the
  secondary MMU can still reach it.
- **SecondaryUseAfterFree**: a device/guest access (``access(key)``) through
  a translation whose page was freed, or freed and reused (``page.gen``
  changed), since it was installed.
- **SecondaryWriteToReadOnly**: a device/guest write (``access(key,
  write=True)``) through a translation installed read-only
  (``install(..., writable=False)``), or to a page whose CPU pte is present
  but read-only or maps another page (COW, KSM, mprotect: the secondary MMU
  must lose write access before the CPU does).  A cleared CPU pte is not
  judged: 2.6.27's ``ptep_clear_flush_notify`` clears the pte first and
  tells the driver right after, and the page's dirty bit is taken after that.
  Nor is a pte whose change is still being told (the notifier checker's
  pending change: 2.6.32's set_pte_at_notify sets the read-only pte, then
  calls ->change_pte; the notifier checker fails if it never comes, or
  comes after the page was freed).
  The CPU pte is found through ``tlb.mm`` and ``tlb.address_of(key)`` (set
  when the driver's notifier registers; see mmemu.check.notifier).

Reports name the driver, the key, the page (``page.dump()``, which lists
"mapped by: kvm gfn 3"), the step that installed the translation and the
step that freed the page.

Accesses: the slot of ``key`` is ``tlb.slot(key)``; a driver step that
installs or zaps declares a write to it and a read of the page's ``_count``
(``install_accesses`` / ``zap_accesses``), so the explorer orders
installs and zaps against the step that drops the page's last reference, in
which the free hook runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs

from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import _sim_or_none, current_simulation, loaded, reach, wrote
from mmemu.kernel.locking import guarded_by
from mmemu.mm.page import Page, page_site


class SecondaryMmuViolation(InvariantViolation):
    """A secondary MMU can reach a page it must not."""


class FreedPageStillMapped(SecondaryMmuViolation):
    """A page went back to the allocator while a shadow TLB still mapped it."""


class SecondaryUseAfterFree(SecondaryMmuViolation):
    """The device/guest used a translation to a page freed (or reused) since."""


class SecondaryWriteToReadOnly(SecondaryMmuViolation):
    """A secondary MMU can write a page that the CPU maps read-only."""


@attrs.define(eq=False)
class Translation:
    """One entry of a shadow TLB."""

    key: Hashable
    page: Page
    gen: int
    site: str
    young: bool = True
    #: can the device write through it?  None: the driver did not say (no
    #: write-permission check applies to it)
    writable: bool | None = None


def _last_free_site(page: Page) -> str:
    for event, site in reversed(page.history):
        if event == "free":
            return site
    return "?"


class ShadowTLB:
    """The translations of one driver instance (keys are the driver's: a gfn,
    a virtual address, an IOVA)."""

    def __init__(self, driver: str, *, key_name: str = "key") -> None:
        self.driver = driver
        self.key_name = key_name
        self.entries: dict[Hashable, Translation] = {}
        self.__mmemu_name__ = f"{driver}.tlb"
        #: the mm whose addresses the keys translate, and key -> user address
        #: (None: unknown; the write check against the CPU pte is skipped)
        self.mm: Any = None
        self.address_of: Callable[[Hashable], int | None] | None = None
        #: the lock the driver holds whenever it installs or zaps a
        #: translation (KVM's ``mmu_lock``); None: the driver serialises
        #: them otherwise (GRU's ms_range_active, an IOMMU's hardware).  Set,
        #: the lockset checker holds every install and zap of a key that two
        #: CPUs touched to it -- where the call runs, so a zap moved past the
        #: unlock is seen.  The device's own accesses never need it.
        self.lock: Any = None

    def __repr__(self) -> str:
        return f"<ShadowTLB {self.driver} {len(self.entries)} entries>"

    # ------------------------------------------------------------- accesses

    def slot(self, key: Hashable) -> tuple[Any, Hashable]:
        """The access key of one entry."""
        return (self, key)

    def install_accesses(self, key: Hashable, page: Page, *, reads: Iterable[Hashable] = (),
                         writes: Iterable[Hashable] = ()) -> dict[str, tuple[Hashable, ...]]:
        """``step(label, **tlb.install_accesses(key, page))``; the step's other
        accesses go in ``reads=`` / ``writes=`` and are added."""
        return {"reads": (page._count, *reads), "writes": (self.slot(key), *writes)}

    def zap_accesses(self, keys: Iterable[Hashable], *, reads: Iterable[Hashable] = (),
                     writes: Iterable[Hashable] = ()) -> dict[str, tuple[Hashable, ...]]:
        """Accesses of a step that zaps ``keys`` (reads the counts of the pages
        they map now); the step's other accesses go in ``reads=`` /
        ``writes=``: ``step(label, **tlb.zap_accesses(keys, writes=(seq_key,)))``."""
        ks = list(keys)
        r = tuple(e.page._count for k in ks if (e := self.entries.get(k)) is not None)
        return {"reads": r + tuple(reads), "writes": tuple(self.slot(k) for k in ks) + tuple(writes)}

    # ------------------------------------------------------------ operations

    def describe(self, key: Hashable) -> str:
        k = f"{key:#x}" if isinstance(key, int) and key >= 4096 else str(key)
        return f"{self.driver} {self.key_name} {k}"

    def install(self, key: Hashable, page: Page, *, writable: bool | None = None) -> None:
        """Record a translation ``key -> page`` (replacing any previous one).
        ``writable``: whether the device may write through it (declare it: a
        writable translation to a page the CPU maps read-only is a bug the
        checkers look for; None leaves the translation unchecked)."""
        if page.free:
            current_simulation().fail(SecondaryUseAfterFree(
                f"{self.describe(key)} installs a translation to free page{page.pfn} at "
                f"{page_site()} (freed at {_last_free_site(page)})",
                details=page.dump()))
        self._stored(key, "install")
        self.entries[key] = Translation(key, page, page.gen, page_site(), writable=writable)
        reach("secondary MMU: a translation was installed")

    def _stored(self, key: Hashable, what: str) -> None:
        """The running step changes the entry of ``key``: a store under
        ``lock``, when the driver declared one (see ``lock``)."""
        if self.lock is not None:
            wrote((self, "entries", key), f"{self.describe(key)}: {what}")

    def zap(self, key: Hashable) -> Translation | None:
        """Drop the translation of ``key`` (None if there was none)."""
        self._stored(key, "zap")
        e = self.entries.pop(key, None)
        if e is not None:
            reach("secondary MMU: a live translation was zapped")
        return e

    def test_and_clear_young(self, key: Hashable) -> bool:
        """The aging side of the accessed bit (kvm_age_rmapp): was the
        translation of ``key`` used since the last aging?  Clears the bit;
        a store under ``lock`` like an install or a zap."""
        e = self.entries.get(key)
        if e is None:
            return False
        self._stored(key, "clear the accessed bit")
        young, e.young = e.young, False
        return young

    def test_young(self, key: Hashable) -> bool:
        """The aging side's read of the accessed bit (kvm_test_age_hva): was
        the translation of ``key`` used since the last aging?  A read under
        ``lock``: the entry it reads is what an install or a zap under the
        lock changes."""
        if self.lock is not None:
            loaded((self, "entries", key), f"{self.describe(key)}: test the accessed bit")
        e = self.entries.get(key)
        return e is not None and e.young

    def zap_all(self) -> list[Translation]:
        for k in self.entries:
            self._stored(k, "zap_all")
        out = [self.entries[k] for k in list(self.entries)]
        self.entries.clear()
        return out

    def lookup(self, key: Hashable) -> Page | None:
        e = self.entries.get(key)
        return e.page if e is not None else None

    def keys(self) -> list[Hashable]:
        return list(self.entries)

    def access(self, key: Hashable, *, write: bool = False) -> Page | None:
        """The device/guest uses the translation of ``key`` (None: TLB miss);
        ``write``: it writes through it."""
        e = self.entries.get(key)
        if e is None:
            return None
        page = e.page
        if page.free or page.gen != e.gen:
            what = "free" if page.free else f"reused (allocation #{page.gen}, was #{e.gen})"
            current_simulation().fail(SecondaryUseAfterFree(
                f"{self.describe(key)} accessed at {page_site()} through a translation to "
                f"page{page.pfn}, which is {what}\n"
                f"  translation installed at {e.site}\n"
                f"  page freed at {_last_free_site(page)}\n"
                f"  driver {self.driver}, {self.describe(key)}, page {page.pfn}",
                details=page.dump()))
        if write:
            self._check_write(key, e)
        e.young = True
        return page

    def _in_flight(self, address: int) -> bool:
        """Has a CPU changed the pte at ``address`` and not yet told the
        notifiers?  set_pte_at_notify of the 2.6.27 generation (2.6.32's
        order, 828502d30073) sets the pte, then calls ->change_pte: in
        between the driver still has its old, writable translation, and a
        write through it lands in the page before KSM compares the
        contents -- benign, as a write through a translation whose pte was
        cleared and not yet invalidated is.  The notifier checker's pending
        change judges that window: told too late (after the page is freed)
        or never, it fails there."""
        kernel = getattr(self.mm, "kernel", None)
        chk = kernel.data.get("notifier_contract") if kernel is not None else None
        pending: dict[Any, Any] = getattr(chk, "pending", None) or {}
        return (self.mm, address & ~0xFFF) in pending

    def _check_write(self, key: Hashable, e: Translation) -> None:
        if e.writable is False:
            current_simulation().fail(SecondaryWriteToReadOnly(
                f"{self.describe(key)} written at {page_site()} through a read-only "
                f"translation to page{e.page.pfn} (installed at {e.site})",
                details=e.page.dump()))
        if self.mm is None or self.address_of is None:
            return
        address = self.address_of(key)
        if address is None:
            return
        from mmemu.mm.memory import pte_get
        pte = pte_get(self.mm, address)
        if pte is None or not pte.present:
            return
        if (pte.page is not e.page or not pte.write) and not self._in_flight(address):
            what = ("read-only" if pte.page is e.page
                    else f"mapping page{pte.page.pfn if pte.page is not None else '?'}")
            current_simulation().fail(SecondaryWriteToReadOnly(
                f"{self.describe(key)} written at {page_site()} through a translation to "
                f"page{e.page.pfn} (installed at {e.site}) while the CPU pte at "
                f"{address:#x} is {what}: the secondary MMU kept write access the CPU lost "
                f"(COW, KSM or mprotect never reached driver {self.driver})",
                details=e.page.dump()))

    def mapping(self, page: Page) -> list[Translation]:
        """The live translations to ``page`` (same allocation)."""
        return [e for e in self.entries.values() if e.page is page and e.gen == page.gen]


# reads: only those reported with ``loaded`` (test_young); the device's
# own lookups are the hardware's, under no lock
guarded_by(ShadowTLB, "entries", lambda tlb: tlb.lock, reads=True,
           why="the driver's lock over its translations (ShadowTLB.lock)")


# ------------------------------------------------------------ kernel hooks


def _registry(kernel: Any) -> list[ShadowTLB]:
    tlbs = kernel.data.get("shadow_tlbs")
    if tlbs is None:
        tlbs = kernel.data["shadow_tlbs"] = []
        kernel.free_hooks.append(lambda page: _on_free(kernel, page))
        kernel.page_dumpers.append(lambda page: _dump(kernel, page))
    return tlbs  # type: ignore[no-any-return]


def register_tlb(kernel: Any, tlb: ShadowTLB) -> ShadowTLB:
    """Make the checker watch ``tlb`` on ``kernel``."""
    _registry(kernel).append(tlb)
    return tlb


def install(kernel: Any) -> None:
    """Checker installer for ``mmemu.check.boot_checked``: hook the kernel's
    free path and page dumps (TLBs are added as drivers attach)."""
    _registry(kernel)


def _dump(kernel: Any, page: Page) -> str:
    who = []
    for tlb in kernel.data.get("shadow_tlbs", ()):
        for e in tlb.entries.values():
            if e.page is page:
                stale = "" if e.gen == page.gen else f" (stale: allocation #{e.gen})"
                who.append(f"{tlb.describe(e.key)}{stale}")
    return ("mapped by: " + ", ".join(who)) if who else ""


def _on_free(kernel: Any, page: Page) -> None:
    for tlb in kernel.data.get("shadow_tlbs", ()):
        for e in tlb.entries.values():
            if e.page is page and e.gen == page.gen:
                sim = _sim_or_none()
                exc = FreedPageStillMapped(
                    f"page{page.pfn} freed at {page_site()} while {tlb.describe(e.key)} "
                    f"still maps it\n"
                    f"  translation installed at {e.site}\n"
                    f"  page freed at {page_site()}\n"
                    f"  driver {tlb.driver}, {tlb.describe(e.key)}, page {page.pfn}",
                    details=page.dump())
                if sim is None:
                    raise exc
                sim.fail(exc)


__all__ = [
    "FreedPageStillMapped", "SecondaryMmuViolation", "SecondaryUseAfterFree",
    "SecondaryWriteToReadOnly", "ShadowTLB",
    "Translation", "install", "register_tlb",
]
