"""Page aging must ask every secondary MMU: a page a driver's TLB used since
the last aging is young.

Emulates: the contract of the aging callbacks of include/linux/mmu_notifier.h
-- ``->clear_flush_young`` (cddb8a5c14aa, 2.6.27: page_referenced_one and
try_to_unmap_one through ptep_clear_flush_young_notify), ``->test_young``
(8ee53820edfd, 2.6.38: khugepaged) and ``->clear_young`` (1d7715c676a1, 4.3:
idle page tracking) -- as a sanitizer.

Why this is a rule of the notifier API and not only a performance hint: the
accessed bit is how the VM tells hot memory from cold.  A KVM guest (or a
device) touches a page through its own translation, so the CPU pte's
accessed bit stays clear; before 2.6.27 reclaim could not see those uses
and swapped out a guest's hottest pages.  The aging callbacks exist so that
``ptep_clear_flush_young_notify`` can fold the secondary MMUs' accessed
bits into its answer.  Nothing crashes when a call site forgets them -- the
kernel has no check -- the page is just reported old and evicted, and the
guest faults it straight back in.  The checker makes that visible.

The rule (``AgingMissedSecondaryReference``): when an aging question about
the pte at ``address`` of ``mm`` begins (``kernel.aging_hooks``, reported by
mmemu.mm.memory and mmemu.mm.khugepaged inside the step that reads the
pte), every driver registered on ``mm`` whose notifier implements the
callback being asked is looked at; if one of its shadow TLBs holds a young
translation of that address to the page the pte maps, the answer must be
"young" -- unless that translation was zapped or replaced in the meantime
(a concurrent invalidation takes the accessed bit with it; the driver
cannot be asked about a translation it no longer has).  Drivers that do not
implement the callback (GRU, HMM mirrors, an SVA IOTLB, and every driver's
``->clear_young`` before 4.3) cannot be asked, as in the kernel.  A young
translation means "used since the last aging": a shadow TLB entry is young
when installed, an access sets it, and the driver's aging callback clears
it (KVM's kvm_age_hva).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from mmemu.check import install_once
from mmemu.check.notifier import _address_of, _tlbs
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import _sim_or_none, current_simulation
from mmemu.mm.page import page_site

PAGE_MASK = ~0xFFF


class AgingMissedSecondaryReference(InvariantViolation):
    """Aging called a page old that a secondary MMU used since the last
    aging (its translation's accessed bit was set, and the driver's aging
    callback was never asked, or ignored it)."""


def _name(obj: Any) -> str:
    return str(getattr(obj, "__mmemu_name__", obj))


class YoungChecker:
    """Per-execution state (``kernel.data["young"]``): the young
    translations seen when each aging question began, per (cpu, mm, address)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.open: dict[tuple[int | None, Any, int], list[tuple[Any, Hashable, Any, str]]] = {}

    @staticmethod
    def _cpu() -> int | None:
        sim = _sim_or_none()
        cpu = sim.running if sim is not None else None
        return cpu.id if cpu is not None else None

    def young_translations(self, mm: Any, address: int,
                           callback: str) -> list[tuple[Any, Hashable, Any, str]]:
        """(tlb, key, translation, driver) for every young translation of
        ``address`` to the page its pte maps, in a driver whose notifier on
        ``mm`` implements ``callback``."""
        from mmemu.mm.memory import pte_get

        pte = pte_get(mm, address)
        if pte is None or not pte.present or pte.page is None:
            return []
        mmn = getattr(mm, "mmu_notifier_mm", None)
        out: list[tuple[Any, Hashable, Any, str]] = []
        for mn in list(getattr(mmn, "list", ())):
            if getattr(getattr(mn, "ops", None), callback, None) is None:
                continue
            owner = getattr(mn, "owner", None)
            address_of = _address_of(owner)
            if owner is None or address_of is None:
                continue
            for tlb in _tlbs(owner):
                for key, e in tlb.entries.items():
                    a = address_of(key)
                    if a is not None and a & PAGE_MASK == address & PAGE_MASK and e.young \
                            and e.page is pte.page and e.gen == pte.page.gen:
                        out.append((tlb, key, e, _name(owner)))
        return out

    def aging(self, phase: str, mm: Any, address: int, callback: str,
              young: bool | None) -> None:
        """``kernel.aging_hooks``."""
        k = (self._cpu(), mm, address & PAGE_MASK)
        if phase == "begin":
            self.open[k] = self.young_translations(mm, address, callback)
            return
        seen = self.open.pop(k, [])
        if young:
            return
        for tlb, key, e, driver in seen:
            if tlb.entries.get(key) is not e:
                continue  # zapped or replaced meanwhile: its accessed bit went with it
            current_simulation().fail(AgingMissedSecondaryReference(
                f"aging of {_name(mm)} pte {address:#x} at {page_site()} answered 'old', but "
                f"{tlb.describe(key)} of driver {driver} was a young translation of "
                f"page{e.page.pfn} when it began (installed at {e.site}): the secondary "
                f"MMU's use of the page was never asked about (->{callback}), and reclaim "
                f"would take the page from under it", details=e.page.dump()))


def install(kernel: Any) -> YoungChecker:
    """Checker installer for ``mmemu.check.boot_checked``."""
    return install_once(kernel, "young", _hook)


def _hook(kernel: Any) -> YoungChecker:
    chk = YoungChecker(kernel)
    kernel.aging_hooks.append(chk.aging)
    return chk


__all__ = ["AgingMissedSecondaryReference", "YoungChecker", "install"]
