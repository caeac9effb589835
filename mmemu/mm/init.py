"""Booting the emulated kernel: the per-execution state mm needs.

Emulates: init/main.c (2.6.27), the part that sets up memory management

A scenario boots one kernel per execution::

    kernel = boot(sim, npages=16)

The Kernel holds the page allocator, the global ``mm_all_locks_mutex``, the
notifier API generation in use, and the hooks through which the checkers
watch pages being freed and reused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmemu.engine._errors import ModelError
from mmemu.engine._execution import Simulation, current_simulation
from mmemu.kernel.locking import Mutex
from mmemu.mm.page import Page
from mmemu.mm.page_alloc import PageAllocator

API_GENERATIONS = ("2.6.27", "modern")


class Kernel:
    """One emulated machine's mm-wide state."""

    __mmemu_name__ = "kernel"

    def __init__(self, sim: Simulation, *, npages: int = 32, api: str = "2.6.27") -> None:
        if api not in API_GENERATIONS:
            raise ModelError(f"'api' must be one of {', '.join(API_GENERATIONS)} (got {api!r})")
        if npages < 1:
            raise ModelError(f"'npages' must be at least 1 (got {npages})")
        self.sim = sim
        self.api = api
        self.free_hooks: list[Callable[[Page], None]] = []
        self.alloc_hooks: list[Callable[[Page], None]] = []
        #: ``hook(mm, address, old, new)`` after every pte write or clear
        #: (mmemu.mm.memory set_pte_at / pte_clear; ``new`` None: cleared)
        self.pte_hooks: list[Callable[[Any, int, Any, Any], None]] = []
        #: observers of the mmu notifiers (mmemu.mm.mmu_notifier: every
        #: callback, and what the call sites promise; see _report there)
        self.notifier_hooks: list[Any] = []
        #: ``hook(phase, mm, address, callback, young)`` around every aging
        #: question a pte's accessed bit gets together with the secondary
        #: MMUs (mmemu.mm.memory, khugepaged): phase "begin" (young None),
        #: then "end" with the answer; callback names the notifier op asked
        #: ("clear_flush_young", "clear_young", "test_young")
        self.aging_hooks: list[Callable[[str, Any, int, str, bool | None], None]] = []
        #: extra lines for Page.dump() (which drivers map the page, ...)
        self.page_dumpers: list[Callable[[Page], str]] = []
        self.page_alloc = PageAllocator(self, npages)
        # static DEFINE_MUTEX(mm_all_locks_mutex) in mm/mmap.c
        self.mm_all_locks_mutex = Mutex("mm_all_locks_mutex")
        self.mappings: list[Any] = []
        self.mms: list[Any] = []
        self.data: dict[str, Any] = {}


def boot(sim: Simulation, *, npages: int = 32, api: str | None = None) -> Kernel:
    """Boot the emulated kernel for this execution (``api`` defaults to
    ``sim.params["api"]`` or "2.6.27")."""
    if "kernel" in sim.data:
        raise ModelError("the kernel is already booted in this execution")
    kernel = Kernel(sim, npages=npages, api=api or sim.params.get("api", "2.6.27"))
    sim.data["kernel"] = kernel
    return kernel


def kernel() -> Kernel:
    """The kernel booted in the running execution."""
    k = current_simulation().data.get("kernel")
    if k is None:
        raise ModelError("no emulated kernel: call mmemu.mm.init.boot(sim) first")
    return k  # type: ignore[no-any-return]
