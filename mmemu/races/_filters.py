"""Which suite parameter combinations a mutant can break: filters that know
about drivers.

The kernel model registers its mutants beside the code they change
(``mmemu/mm/``), but it must not know which drivers exist or how they are
built.  Whether a mutant of the core can hurt a given driver is a question
about that driver ("does it rely on start/end brackets?", "is it on the
notifier hlist?"), so the answer lives here, in the suites' layer, and is
attached to the mutant with ``set_mutant_applies`` when the suites load.
"""

from __future__ import annotations

from typing import Any

from mmemu.driver import DriverLoadError, load_driver
from mmemu.engine._registry import set_mutant_applies


def driver_class(params: dict[str, Any]) -> Any:
    """The driver class a suite combination names (None: no driver, or one
    that fails to load -- the run reports that)."""
    spec = params.get("driver")
    if not spec:
        return None
    try:
        return load_driver(str(spec))
    except DriverLoadError:
        return None


def brackets_matter(params: dict[str, Any]) -> bool:
    """The driver relies on invalidation brackets (start/end,
    invalidate_page, change_pte or an interval notifier): a core mutant that
    drops or splits a bracket can hurt it.  A TLB flushed only from
    arch_invalidate_secondary_tlbs, under the PTL at the pte change itself
    (SVA), cannot be hurt that way."""
    cls = driver_class(params)
    return cls is None or bool(getattr(cls, "interval_notifier", False)
                               or getattr(cls, "invalidate_range_start", None) is not None
                               or getattr(cls, "invalidate_page", None) is not None)


def on_hlist(params: dict[str, Any]) -> bool:
    """The driver is on the mm's notifier hlist (->release); interval
    notifiers are invalidated by mn_itree_release instead."""
    cls = driver_class(params)
    return cls is None or not getattr(cls, "interval_notifier", False)


def answers(params: dict[str, Any], callback: str) -> bool:
    """No driver, or one that implements ``callback``."""
    cls = driver_class(params)
    return cls is None or getattr(cls, callback, None) is not None


#: mutant name -> its filter; mutants of mm/ that need one
FILTERS = {
    "mmu_notifier:register-unlocked": brackets_matter,
    "mmu_notifier:release-after-unhash": on_hlist,
    # an IOTLB that walks the CPU page tables is flushed with the CPU TLB
    # (flush_tlb_mm, ptep_clear_flush): a missing bracket cannot hurt it
    "memory:fork-no-notify": brackets_matter,
    "memory:cow-no-notify": brackets_matter,
    "mprotect:no-notify": brackets_matter,
    "ksm:replace-no-notify": brackets_matter,
    # only a driver that answers ->clear_flush_young can be asked
    "memory:young-no-notify":
        lambda params: (cls := driver_class(params)) is None
        or getattr(cls, "clear_flush_young", None) is not None,
    "ksm:change-pte-outside-range":
        lambda params: params.get("api") == "modern" and brackets_matter(params),
    # likewise ->clear_young (idle page tracking) and ->test_young (khugepaged)
    "memory:clear-young-no-notify": lambda params: answers(params, "clear_young"),
    "khugepaged:no-test-young": lambda params: answers(params, "test_young"),
}


def attach_filters() -> None:
    for name, applies in FILTERS.items():
        set_mutant_applies(name, applies)


attach_filters()

__all__ = ["FILTERS", "answers", "attach_filters", "brackets_matter", "driver_class", "on_hlist"]
