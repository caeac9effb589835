"""struct page: reference count, map count, flags, mapping and index.

Emulates: include/linux/mm_types.h, include/linux/mm.h, include/linux/page-flags.h,
mm/filemap.c (lock_page / unlock_page) (2.6.27)

``_count`` is an ``atomic_t``: every change is one step of the CPU making it.
A page whose ``_count`` is zero is either free (in the allocator) or frozen
(``page_freeze_refs`` by reclaim or migration, which own every reference);
``get_page`` on such a page is the kernel's ``VM_BUG_ON`` and is reported.
``_mapcount`` starts at -1 (no pte maps the page), as in the kernel.

Access keys: the count is the ``atomic_t`` object itself; the other fields are
``(page, "flags")``, ``(page, "mapping")``, so that reports print
``page3.flags`` and DPOR sees which field a step touches.
"""

from __future__ import annotations

from typing import Any

from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import (
    _sim_or_none,
    annotate,
    block,
    current_simulation,
    recording,
    step,
    wake_all,
)
# atomic_inc is not called here: benchmarks/mutation.py's plain-get mutant of
# get_page_unless_zero (atomic_inc_not_zero -> atomic_inc) needs it in scope
from mmemu.kernel.atomic import atomic_dec_and_test, atomic_inc, atomic_inc_not_zero, atomic_t  # noqa: F401
from mmemu.kernel.locking import (
    _Lock,
    _lockdep_acquire,
    _lockdep_acquired,
    _lockdep_release,
    might_sleep,
)

# page->flags bits (only those the model uses)
PG_locked = 1 << 0
PG_referenced = 1 << 1
PG_uptodate = 1 << 2
PG_dirty = 1 << 3
PG_lru = 1 << 4
PG_active = 1 << 5
PG_swapcache = 1 << 6
PG_reclaim = 1 << 7
PG_anon = 1 << 8  # the kernel encodes this in page->mapping's low bit (PAGE_MAPPING_ANON)
PG_ksm = 1 << 9   # a KSM page: PAGE_MAPPING_KSM in page->mapping's low bits since 2.6.33
PG_young = 1 << 10  # idle page tracking (4.3, 64-bit page flags)
PG_idle = 1 << 11

_FLAG_NAMES = [(PG_locked, "locked"), (PG_referenced, "referenced"), (PG_uptodate, "uptodate"),
               (PG_dirty, "dirty"), (PG_lru, "lru"), (PG_active, "active"),
               (PG_swapcache, "swapcache"), (PG_reclaim, "reclaim"), (PG_anon, "anon"),
               (PG_ksm, "ksm"), (PG_young, "young"), (PG_idle, "idle")]


class BadPageState(InvariantViolation):
    """A VM_BUG_ON on a page, or a page in a state the kernel never allows."""


class PageCountUnderflow(BadPageState):
    """put_page on a page whose count is already zero."""


class GetPageOnFreePage(BadPageState):
    """get_page on a free or frozen page (VM_BUG_ON(page_count(page) == 0))."""


class UnfreezeMismatch(BadPageState):
    """page_unfreeze_refs on a page whose count is not zero, or to zero."""


class _PageLock(_Lock):
    """The page lock (PG_locked) as lockdep sees it: one class for all pages."""

    kind = "page lock"
    sleeps = True

    def __init__(self, page: Page) -> None:
        super().__init__(f"PG_locked({page.__mmemu_name__})", "PG_locked")


class Page:
    """``struct page``."""

    __slots__ = ("pfn", "_count", "_mapcount", "flags", "mapping", "index", "private",
                 "free", "gen", "lock_owner", "__mmemu_name__", "_lock", "lru_owner",
                 "history")

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.__mmemu_name__ = f"page{pfn}"
        self._count = atomic_t(0, f"page{pfn}._count")
        self._mapcount = atomic_t(-1, f"page{pfn}._mapcount")
        self.flags = 0
        self.mapping: Any = None
        self.index = 0
        self.private: Any = None
        self.free = True
        self.gen = 0          # bumped at every allocation: tells reuse apart
        self.lock_owner: Any = None
        self._lock = _PageLock(self)
        self.lru_owner: Any = None
        #: (event, site) pairs: "alloc", "free", for reports
        self.history: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"<Page {self.pfn} count={self._count.counter}>"

    # keys for declared accesses
    @property
    def flags_key(self) -> tuple[Page, str]:
        return (self, "flags")

    @property
    def mapping_key(self) -> tuple[Page, str]:
        return (self, "mapping")

    def flag_names(self) -> str:
        names = [n for bit, n in _FLAG_NAMES if self.flags & bit]
        return "|".join(names) or "0"

    def dump(self) -> str:
        """One line: what the kernel's dump_page would say, plus mmemu's view."""
        mapping = getattr(self.mapping, "__mmemu_name__", None) if self.mapping is not None else None
        state = "free" if self.free else ("frozen" if self._count.counter == 0 else "in use")
        line = (f"page pfn={self.pfn} flags={self.flag_names()} count={self._count.counter} "
                f"mapcount={self._mapcount.counter + 1} mapping={mapping or 'NULL'} "
                f"index={self.index} ({state}, allocation #{self.gen})")
        sim = _sim_or_none()
        kernel = sim.data.get("kernel") if sim is not None else None
        if kernel is not None:
            for dumper in kernel.page_dumpers:
                extra = dumper(self)
                if extra:
                    line += "\n    " + extra
        return line


def PageLocked(page: Page) -> bool:
    return bool(page.flags & PG_locked)


def PageAnon(page: Page) -> bool:
    return bool(page.flags & PG_anon)


def PageKsm(page: Page) -> bool:
    return bool(page.flags & PG_ksm)


def page_count(page: Page) -> int:
    """The count as it is now (for checks; protocol code uses atomic_read)."""
    return page._count.counter


def page_mapcount(page: Page) -> int:
    return page._mapcount.counter + 1


def page_site() -> str:
    """Where the running step is: "#12 'label' on cpu1 (truncate)"."""
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        return "scenario setup"
    return f"#{sim.steps - 1} {cpu.pending[0]!r} on {cpu.title}"


async def get_page(page: Page, *, label: str | None = None) -> None:
    """Take a reference the caller knows is safe (it already holds one, or a
    lock that pins the page): VM_BUG_ON a free or frozen page."""
    c = page._count
    await step(label or f"get_page({page.__mmemu_name__})", writes=(c,))
    if c.counter <= 0:
        sim = current_simulation()
        what = "free" if page.free else "frozen (count 0)"
        sim.fail(GetPageOnFreePage(
            f"get_page on a {what} page at {page_site()}: VM_BUG_ON(page_count(page) == 0)",
            details=page.dump()))
    c.counter += 1
    if recording():
        annotate("counter", name="page counts", values={page.__mmemu_name__: c.counter})


def get_page_locked(page: Page) -> None:
    """``get_page`` inside a step the caller already runs, which declares a
    write to ``page._count``: the caller holds a lock that pins the page (the
    PTL of a pte that maps it, as copy_one_pte does)."""
    c = page._count
    if c.counter <= 0:
        what = "free" if page.free else "frozen (count 0)"
        current_simulation().fail(GetPageOnFreePage(
            f"get_page on a {what} page at {page_site()}: VM_BUG_ON(page_count(page) == 0)",
            details=page.dump()))
    c.counter += 1
    if recording():
        annotate("counter", name="page counts", values={page.__mmemu_name__: c.counter})


async def get_page_unless_zero(page: Page, *, label: str | None = None) -> bool:
    return await atomic_inc_not_zero(page._count,
                                     label=label or f"get_page_unless_zero({page.__mmemu_name__})")


async def put_page(page: Page, *, label: str | None = None) -> None:
    """Drop a reference; the last one frees the page (hot, to the allocator)."""
    c = page._count
    # The last reference frees the page onto the allocator's free list: the
    # step may write the allocator, so it conflicts with alloc_page (which
    # page a concurrent allocation gets depends on the order).
    sim = _sim_or_none()
    kernel = sim.data.get("kernel") if sim is not None else None
    writes = (c,) if kernel is None else (c, kernel.page_alloc)
    await step(label or f"put_page({page.__mmemu_name__})", writes=writes)
    if c.counter <= 0:
        current_simulation().fail(PageCountUnderflow(
            f"put_page on a page whose count is {c.counter} at {page_site()}",
            details=page.dump()))
    c.counter -= 1
    if recording():
        annotate("counter", name="page counts", values={page.__mmemu_name__: c.counter})
    if c.counter == 0:
        if page.flags & PG_lru:
            # __page_cache_release: the last reference of a page still on
            # the LRU takes it off first (del_page_from_lru under
            # zone->lru_lock; the LRU is a flag here, and the lock is not
            # taken: its other users, isolate_lru_page and putback, each
            # hold it for one step and fail on a zero count anyway).
            await step(f"__page_cache_release: del_page_from_lru({page.__mmemu_name__})",
                       writes=(page.flags_key,) + writes[1:])
            page.flags &= ~(PG_lru | PG_active)
        from mmemu.mm.page_alloc import __free_page
        __free_page(page)


page_cache_get = get_page
page_cache_release = put_page


async def lock_page(page: Page, *, label: str | None = None) -> None:
    """Sleep until PG_locked is ours."""
    sim = current_simulation()
    if sim.running is not None:
        might_sleep(f"lock_page({page.__mmemu_name__})")
    key = page.flags_key
    await step(label or f"lock_page({page.__mmemu_name__})", writes=(key,))
    cpu = sim.running
    if cpu is None:
        page.flags |= PG_locked
        page.lock_owner = "setup"
        return
    _lockdep_acquire(cpu, page._lock)
    while page.flags & PG_locked:
        await block(key, f"lock_page({page.__mmemu_name__}) acquired", writes=(key,),
                    why=f"page lock of {page.__mmemu_name__} (held by "
                        f"{getattr(page.lock_owner, 'title', page.lock_owner)})")
    page.flags |= PG_locked
    page.lock_owner = cpu
    _lockdep_acquired(cpu, page._lock)


async def trylock_page(page: Page, *, label: str | None = None) -> bool:
    key = page.flags_key
    await step(label or f"trylock_page({page.__mmemu_name__})", writes=(key,))
    if page.flags & PG_locked:
        return False
    sim = current_simulation()
    page.flags |= PG_locked
    cpu = sim.running
    page.lock_owner = cpu if cpu is not None else "setup"
    if cpu is not None:
        _lockdep_acquire(cpu, page._lock, trylock=True)
        _lockdep_acquired(cpu, page._lock)
    return True


async def unlock_page(page: Page, *, label: str | None = None) -> None:
    key = page.flags_key
    await step(label or f"unlock_page({page.__mmemu_name__})", writes=(key,))
    sim = current_simulation()
    if not page.flags & PG_locked:
        sim.fail(BadPageState(f"unlock_page of an unlocked page at {page_site()}",
                              details=page.dump()))
    cpu = sim.running
    page.flags &= ~PG_locked
    if cpu is not None and page.lock_owner is cpu:
        _lockdep_release(cpu, page._lock)
    page.lock_owner = None
    wake_all(key)


def SetPageLocked(page: Page) -> None:
    """Non-atomic set: only for a page nobody else can see yet
    (add_to_page_cache on a new page).  The caller's step writes page.flags."""
    page.flags |= PG_locked
    sim = _sim_or_none()
    cpu = sim.running if sim is not None else None
    page.lock_owner = cpu if cpu is not None else "setup"
    if cpu is not None:
        _lockdep_acquired(cpu, page._lock)


def ClearPageLocked(page: Page) -> None:
    page.flags &= ~PG_locked
    sim = _sim_or_none()
    cpu = sim.running if sim is not None else None
    if cpu is not None and page.lock_owner is cpu:
        _lockdep_release(cpu, page._lock)
    page.lock_owner = None


async def put_page_testzero(page: Page, *, label: str | None = None) -> bool:
    return await atomic_dec_and_test(page._count, label=label)
