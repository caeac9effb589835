"""Page-state sanitizer: pages freed while still reachable, lookups that return
the wrong page, references leaked at the end of an execution.

Emulates: the kernel's own page checks -- free_pages_check/bad_page in
mm/page_alloc.c, the VM_BUG_ONs of include/linux/mm.h and pagemap.h (2.6.27) --
plus what only a model can check: that a lockless lookup returned the page
it was asked for.

Install it on a booted kernel (``boot_checked`` in mmemu.check does it)::

    kernel = mmemu.mm.init.boot(sim, npages=8)
    install_page_state_checker(kernel)

What it checks, and when:

- at every free (``kernel.free_hooks``): the page is in no radix tree
  (``FreePageInPageCache``), no pte maps it (``FreePageInPageTable``: a
  non-zero ``_mapcount``, or a scanner the page-table model registers), its
  count is zero (``FreeOfReferencedPage``), and the rest of 2.6.27's
  free_pages_check holds (``BadPageAtFree``): ``page->mapping`` is NULL (an
  anonymous page's anon_vma pointer is cleared by free_hot_cold_page
  itself), ``_mapcount`` is exactly -1, and none of PG_lru, PG_locked,
  PG_active, PG_swapcache is set (the kernel's bad_page() list of the era
  also has PG_private, PG_slab, PG_writeback, PG_reserved and PG_buddy,
  which the model does not use; PG_dirty is cleared, not reported:
  ``DataLoss`` below is what a dirty page means);
- whenever a page leaves a pagecache (``page_removed``, from
  __remove_from_page_cache): it is not dirty (``DataLoss``: its data was
  never written back, and now nobody can).  Truncation throws the data away
  on purpose and cancels the dirty bit first (cancel_dirty_page); reclaim
  refuses a dirty page; migration moves the bit to the new page.  A pte
  cleared while dirty must pass its dirty bit to a file page first
  (set_page_dirty in zap_pte_range / try_to_unmap_one / KSM): a page whose
  dirty pte was cleared without it, and that then leaves the pagecache
  without PG_dirty and without truncation, is ``DataLoss`` too;
- whenever reclaim takes an anonymous page out of the swap cache to free it
  (``swap_page_removed``, from __remove_mapping): if a swap pte still refers
  to its slot, the slot must hold the page's data -- the page is not dirty,
  and no dirty pte of it was cleared since pageout last wrote it
  (``swap_page_written``), nor since add_to_swap gave it a new slot
  (``swap_page_new``) -- else ``DataLoss``: the next swap-in reads the
  data from before the process's writes.  try_to_unmap_one moves a dirty
  pte's bit to the page (set_page_dirty) before it puts the swap entry in;
  a page swapped in by a write fault is mapped dirty while the page itself
  is clean (do_swap_page), so that bit is all that says the slot is stale;
- whenever find_get_page / find_get_pages / find_lock_page decides to return
  a page (the pagecache calls ``lookup_returned`` inside that step): the page
  is not free and belongs to the (mapping, index) asked for
  (``WrongPageFromLookup``); a page that is in the asked slot but whose
  mapping/index are not set yet is ``HalfInitialisedPage``;
- at the end of an execution (every CPU has finished, so no CPU-local
  variable holds a reference any more), for each page in use -- pagecache
  pages and anonymous pages alike (any page the allocator handed out after
  the CPUs started, or that is in a pagecache or mapped; pages the
  scenario's setup allocated and kept for itself are its business): its
  count equals the references the model can name -- one per radix slot
  holding it (the swap cache's is its slot in swapper_space), one per pte
  mapping it (``_mapcount``), plus those declared with ``expect_held`` or by a
  registered holder.  More is a leak (``PageLeak``); fewer means somebody
  will drop a reference it does not own (``PageCountTooLow``).

Page counts that underflow, get_page on a free page and unfreezing to a
different count are reported where they happen (mmemu.mm.page,
mmemu.mm.pagemap).

Interface for other models (all optional):

- ``kernel.data["page_table_scanners"]``: callables ``fn(page) -> str | None``
  that describe a pte still mapping ``page`` (None if none); called at free.
- ``checker.add_holder(fn)``: ``fn() -> Iterable[Page]``, one entry per
  reference that a structure other than the pagecache and the page tables
  still holds at the end of the execution (a driver's pinned pages).
- ``checker.expect_held(page, n=1)``: the scenario keeps ``n`` references
  on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mmemu.check import install_once
from mmemu.engine._execution import Simulation, current_simulation
from mmemu.mm.page import (
    PG_active,
    PG_anon,
    PG_dirty,
    PG_locked,
    PG_lru,
    PG_swapcache,
    BadPageState,
    Page,
    PageLocked,
    page_site,
)

#: the flags 2.6.27's free_pages_check rejects, among those the model has
FLAGS_CHECK_AT_FREE = ((PG_lru, "PG_lru"), (PG_locked, "PG_locked"), (PG_active, "PG_active"),
                       (PG_swapcache, "PG_swapcache"))


class FreePageInPageCache(BadPageState):
    """A page was freed while a radix-tree slot still points to it."""


class FreePageInPageTable(BadPageState):
    """A page was freed while a pte still maps it."""


class FreeOfReferencedPage(BadPageState):
    """A page reached the allocator with a non-zero count (free_pages_check)."""


class WrongPageFromLookup(BadPageState):
    """A pagecache lookup returned a free page, or one that belongs to another
    (mapping, index)."""


class HalfInitialisedPage(BadPageState):
    """A lockless reader found a page in the pagecache before add_to_page_cache
    had locked and initialised it."""


class PageLeak(BadPageState):
    """At the end of an execution a page holds references nobody owns."""


class BadPageAtFree(BadPageState):
    """A page reached the allocator with a mapping, a mapcount or a flag that
    free_pages_check rejects (the kernel's "Bad page state" report)."""


class DataLoss(BadPageState):
    """A dirty page left the pagecache without being written back."""


class PageCountTooLow(BadPageState):
    """At the end of an execution a page has fewer references than the
    pagecache and page tables that point to it."""


_HISTORY_SHOWN = 4


class PageStateChecker:
    """The checker's per-execution state (``kernel.data["page_state"]``)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        #: pages ever added to a pagecache, in order (no duplicates)
        self.file_pages: list[Page] = []
        self._seen: dict[Page, bool] = {}
        self.holders: list[Callable[[], Iterable[Page]]] = []
        self.expected: dict[Page, int] = {}
        #: pages handed out while the CPUs ran (setup allocations are the scenario's)
        self.allocated: list[Page] = []
        self._allocated: dict[Page, bool] = {}
        #: file pages a dirty pte was cleared from, and where (the bit is owed
        #: to the page until PG_dirty is set or truncation cancels it)
        self.dirty_owed: dict[Page, str] = {}
        #: pages truncation is removing (cancel_dirty_page ran, the removal
        #: follows under the same page lock): their data is thrown away on
        #: purpose, even if something dirtied them since -- 2.6.27's
        #: __do_fault calls set_page_dirty after unlock_page, so a write
        #: fault's dirty bit can land between cancel_dirty_page and the
        #: removal (found by `vmas=S1; cpu0: cpufault(0,w); cpu1: truncate(0)`)
        self.truncating: dict[Page, bool] = {}
        #: anonymous swap-cache pages with data newer than their swap slot's:
        #: a dirty pte of theirs was cleared, and where (pageout's write
        #: to the slot, or the page's free, forgets it)
        self.swap_unwritten: dict[Page, str] = {}

    # ------------------------------------------------------------- interface

    def add_holder(self, fn: Callable[[], Iterable[Page]]) -> None:
        self.holders.append(fn)

    def expect_held(self, page: Page, n: int = 1) -> None:
        self.expected[page] = self.expected.get(page, 0) + n

    # -------------------------------------------------------- pagecache hooks

    def page_added(self, mapping: Any, page: Page) -> None:
        if page not in self._seen:
            self._seen[page] = True
            self.file_pages.append(page)

    def lookup_returned(self, fn: str, mapping: Any, index: int, page: Page) -> None:
        asked = f"{fn}({mapping.name}, {index})"
        if page.free:
            self._fail(WrongPageFromLookup,
                f"{asked} at {page_site()} returned page{page.pfn}, which is free", page)
        from mmemu.mm.filemap import page_index, page_mapping
        # page_mapping/page_index: a swap cache page is found in swapper_space
        # at its slot, while page->mapping stays its anon_vma (mm/swap_state.c)
        if page_mapping(page) is mapping and page_index(page) == index:
            return
        where = self._where(page)
        if mapping.page_tree.get(index) is page:
            locked = "set" if PageLocked(page) else "clear"
            self._fail(HalfInitialisedPage,
                f"{asked} at {page_site()} returned page{page.pfn}, found in "
                f"{mapping.name}[{index}] before it was initialised: page->mapping={where}, "
                f"PG_locked {locked}", page)
        self._fail(WrongPageFromLookup,
            f"{asked} at {page_site()} returned page{page.pfn}, which is not "
            f"{mapping.name}[{index}] but {where} (allocation #{page.gen})", page)

    def page_removed(self, mapping: Any, page: Page) -> None:
        """Called inside the step that takes ``page`` out of ``mapping``'s tree
        (truncation has cancelled the dirty bit before: dirty_cancelled)."""
        owed = self.dirty_owed.pop(page, None)
        if self.truncating.pop(page, False):
            return
        if page.flags & PG_dirty:
            self._fail(DataLoss,
                f"page{page.pfn} ({mapping.name}[{page.index}]) left the pagecache at "
                f"{page_site()} while dirty: its data was never written back and now "
                f"nobody can (data loss)", page)
        if owed is not None:
            self._fail(DataLoss,
                f"page{page.pfn} ({mapping.name}[{page.index}]) left the pagecache at "
                f"{page_site()} clean, but a dirty pte mapping it was cleared at {owed} "
                f"without set_page_dirty: the process's writes are lost (data loss)", page)

    def swap_page_removed(self, page: Page, offset: int, slot_users: int) -> None:
        """Called inside the step in which reclaim takes ``page`` out of the
        swap cache (slot ``offset``) to free it; ``slot_users``: the
        references to the slot besides the cache's own (swap ptes)."""
        unwritten = self.swap_unwritten.pop(page, None)
        if slot_users <= 0:
            return  # nobody will read the slot: the data is garbage
        if page.flags & PG_dirty:
            self._fail(DataLoss,
                f"page{page.pfn} (swap slot {offset}) left the swap cache at {page_site()} "
                f"while dirty: its data was never written to the slot, which "
                f"{slot_users} swap pte(s) will read back (data loss)", page)
        if unwritten is not None:
            self._fail(DataLoss,
                f"page{page.pfn} (swap slot {offset}) left the swap cache at {page_site()} "
                f"clean, but its data has not been written to the slot since {unwritten} "
                f"(a dirty pte cleared without set_page_dirty, or a new slot never "
                f"written): the {slot_users} swap pte(s) of the slot read back stale data "
                f"(data loss)", page)

    def swap_page_new(self, page: Page) -> None:
        """add_to_swap gave ``page`` a new slot, not yet written."""
        self.swap_unwritten[page] = f"{page_site()} (add_to_swap: a new swap slot)"

    def swap_page_written(self, page: Page) -> None:
        """pageout wrote ``page`` to its swap slot."""
        self.swap_unwritten.pop(page, None)

    def dirty_cancelled(self, page: Page) -> None:
        """cancel_dirty_page: truncation drops the data on purpose (and
        removes the page next)."""
        self.dirty_owed.pop(page, None)
        self.truncating[page] = True

    def pte_changed(self, mm: Any, address: int, old: Any, new: Any) -> None:
        """A pte hook (``kernel.pte_hooks``): a dirty pte of a file page that is
        cleared, or replaced by a clean one, owes the page its dirty bit."""
        if old is None or not old.present or not old.dirty:
            return
        page = old.page
        if page is None:
            return
        if new is not None and new.present and new.page is page and new.dirty:
            return
        if page.flags & PG_anon:
            # anonymous: the dirty bit matters only with a swap slot behind
            # the page (PG_dirty or not: pageout clears both)
            if page.flags & PG_swapcache:
                self.swap_unwritten.setdefault(
                    page, f"{page_site()} ({getattr(mm, '__mmemu_name__', 'mm')} pte "
                          f"{address:#x})")
            return
        if page.mapping is None or getattr(page.mapping, "page_tree", None) is None:
            return
        if page.flags & PG_dirty:
            return
        self.dirty_owed.setdefault(
            page, f"{page_site()} ({getattr(mm, '__mmemu_name__', 'mm')} pte {address:#x})")

    # ------------------------------------------------------------ allocator

    def on_alloc(self, page: Page) -> None:
        if current_simulation().running is None or page in self._allocated:
            return
        self._allocated[page] = True
        self.allocated.append(page)

    def on_free(self, page: Page) -> None:
        self.swap_unwritten.pop(page, None)
        for m in self.kernel.mappings:
            tree = getattr(m, "page_tree", None)
            if tree is None:
                continue
            for index, p in sorted(tree.items()):
                if p is page:
                    self._fail(FreePageInPageCache,
                        f"page{page.pfn} freed at {page_site()} while still in the pagecache "
                        f"at {m.name}[{index}]", page, extra=m.dump())
        mapcount = page._mapcount.counter + 1
        if mapcount > 0:
            self._fail(FreePageInPageTable,
                f"page{page.pfn} freed at {page_site()} while {mapcount} pte(s) map it "
                f"(_mapcount {page._mapcount.counter})", page)
        for scan in self.kernel.data.get("page_table_scanners", ()):
            pte = scan(page)
            if pte:
                self._fail(FreePageInPageTable,
                    f"page{page.pfn} freed at {page_site()} while {pte} maps it", page)
        if page._count.counter != 0:
            self._fail(FreeOfReferencedPage,
                f"page{page.pfn} freed at {page_site()} with count {page._count.counter} "
                f"(free_pages_check: bad page state)", page)
        bad = []
        if page.mapping is not None and not page.flags & PG_anon:
            bad.append(f"page->mapping is {self._where(page)}, not NULL")
        if page._mapcount.counter < -1:
            bad.append(f"_mapcount is {page._mapcount.counter} (more unmaps than maps)")
        bad += [f"{name} set" for bit, name in FLAGS_CHECK_AT_FREE if page.flags & bit]
        if bad:
            self._fail(BadPageAtFree,
                f"page{page.pfn} freed at {page_site()} in a bad state: " + "; ".join(bad)
                + " (free_pages_check -> bad_page)", page)
        self.expected.pop(page, None)
        self.dirty_owed.pop(page, None)

    # -------------------------------------------------------------- the end

    def pages_to_account(self) -> list[Page]:
        """Pages whose references the end-of-execution check counts: those ever
        in a pagecache, those handed out while the CPUs ran, and any page
        still mapped (anonymous pages of the setup's faults included), in a
        stable order (pfn)."""
        seen: dict[Page, bool] = {}
        for page in self.file_pages + self.allocated:
            seen[page] = True
        for page in self.kernel.page_alloc.pages:
            if not page.free and (page._mapcount.counter >= 0 or page.flags & PG_anon):
                seen[page] = True
        return sorted((p for p in seen if not p.free), key=lambda p: p.pfn)

    def at_end(self, sim: Simulation) -> None:
        held: dict[Page, int] = {}
        for fn in self.holders:
            for p in fn():
                held[p] = held.get(p, 0) + 1
        for page in self.pages_to_account():
            slots = [f"{m.name}[{i}]" for m in self.kernel.mappings
                     for i, p in sorted(getattr(m, "page_tree", {}).items()) if p is page]
            ptes = max(page._mapcount.counter + 1, 0)
            pins = held.get(page, 0) + self.expected.get(page, 0)
            known = len(slots) + ptes + pins
            count = page._count.counter
            kind = "anonymous " if page.flags & PG_anon else ""
            what = (f"pagecache {len(slots)}{' (' + ', '.join(slots) + ')' if slots else ''}, "
                    f"ptes {ptes}, declared holders {pins}")
            if count > known:
                self._fail(PageLeak,
                    f"{kind}page{page.pfn} leaked at the end of the execution: count {count} but the "
                    f"model knows {known} reference(s) ({what}); every CPU has finished, so "
                    f"{count - known} reference(s) were never dropped", page, at_end=True)
            if count < known:
                self._fail(PageCountTooLow,
                    f"page{page.pfn} at the end of the execution: count {count} but {known} "
                    f"reference(s) point to it ({what})", page, at_end=True)

    # ------------------------------------------------------------- plumbing

    @staticmethod
    def _where(page: Page) -> str:
        if page.free:
            return "a free page"
        name = getattr(page.mapping, "name", None)
        if page.mapping is None:
            return "NULL"
        return f"{name}[{page.index}]"

    def _fail(self, cls: type[BadPageState], message: str, page: Page, *, extra: str = "",
              at_end: bool = False) -> None:
        details = page.dump()
        if extra:
            details += "\n    " + extra
        exc = cls(message, details=details)
        if at_end:
            raise exc  # the scenario has returned: an at_end hook reports by raising
        current_simulation().fail(exc)


def _history(page: Page) -> str:
    h = page.history[-_HISTORY_SHOWN:]
    if not h:
        return ""
    return "history: " + "; ".join(f"{ev} at {site}" for ev, site in h)


def install_page_state_checker(kernel: Any) -> PageStateChecker:
    """Install the page-state checker on a booted kernel (once per execution)."""
    return install_once(kernel, "page_state", _hook)


def _hook(kernel: Any) -> PageStateChecker:
    chk = PageStateChecker(kernel)
    kernel.data.setdefault("page_table_scanners", [])
    kernel.free_hooks.append(chk.on_free)
    kernel.alloc_hooks.append(chk.on_alloc)
    pte_hooks = getattr(kernel, "pte_hooks", None)
    if pte_hooks is not None:
        pte_hooks.append(chk.pte_changed)
    kernel.page_dumpers.append(_history)
    kernel.sim.at_end(chk.at_end)
    return chk


__all__ = [
    "BadPageAtFree", "DataLoss", "FLAGS_CHECK_AT_FREE", "FreeOfReferencedPage",
    "FreePageInPageCache", "FreePageInPageTable", "HalfInitialisedPage",
    "PageCountTooLow", "PageLeak", "PageStateChecker", "WrongPageFromLookup",
    "install_page_state_checker",
]
