"""Page tables, page faults, zapping and get_user_pages.

Emulates: mm/memory.c, include/asm-generic/tlb.h (mmu_gather),
include/linux/swapops.h (swap and migration entries) (2.6.27)

Page tables have four levels, as on x86-64 (pgd -> pud -> pmd -> pte); each
level is a dict indexed by the 9 address bits of that level, populated
lazily (only where something was faulted).  A pte table maps a 9-bit index
to a ``Pte``; an absent index is ``pte_none``.  ``Pte`` objects are values: a
change replaces the object, so ``pte_same(a, b)`` is ``a is b``.

Every pte is read and written under ``mm->page_table_lock`` (the PTL), except
the lockless first read of ``handle_pte_fault`` (``entry = *pte``), which the
fault then re-checks under the PTL.  Access keys: a pte is
``(mm, "pte", address)``; a pmd entry (a pte table hanging or not) is
``(mm, "pmd", address >> PMD_SHIFT)``.

Checks (installed on the kernel by mm_alloc): the model keeps a reverse index
page -> the ptes that hold it (present or as a migration entry) and reports

- ``FreePageInPageTable`` when a page returns to the allocator while a pte
  still holds it, or when a pte is set to a free page;
- ``MappedTruncatedPage`` when a present pte maps a pagecache page whose
  ``page->mapping`` is NULL (truncate removed it from the cache), checked when
  the pte is set and at the end of every execution.

Pages freed by a zap are gathered in an ``MmuGather`` and released at
``tlb_finish_mmu``, *between* mmu_notifier_invalidate_range_start and
range_end (as when the 2.6.27 gather fills up mid-zap): a secondary MMU
must not use a translation of the range after range_start returned.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import mmemu
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import (
    current_cpu,
    current_simulation,
    reach,
    span,
    step,
    wake_all,
    wrote,
)
from mmemu.kernel.locking import (
    SINGLE_DEPTH_NESTING,
    guarded_by,
    spin_lock,
    spin_lock_nested,
    spin_unlock,
)
from mmemu.mm import mmu_notifier
from mmemu.mm.mmap import (
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_LOCKED,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
    anon_vma_prepare,
    anon_vma_unlink,
    find_vma,
    linear_page_index,
    unlink_file_vma,
)
from mmemu.mm.page import (
    PG_dirty,
    PG_idle,
    PG_referenced,
    PG_swapcache,
    PG_uptodate,
    BadPageState,
    Page,
    PageAnon,
    PageKsm,
    PageLocked,
    get_page,
    get_page_locked,
    page_site,
    put_page,
    trylock_page,
    unlock_page,
)
from mmemu.mm.page_alloc import alloc_page

if TYPE_CHECKING:
    from mmemu.mm.init import Kernel

PMD_SHIFT = 21
PUD_SHIFT = 30
PGDIR_SHIFT = 39
PTRS_PER_TABLE = 512
_IDX = PTRS_PER_TABLE - 1

# handle_mm_fault's return bits (include/linux/mm.h)
VM_FAULT_OOM = 0x0001
VM_FAULT_SIGBUS = 0x0002
VM_FAULT_MAJOR = 0x0004
VM_FAULT_WRITE = 0x0008
VM_FAULT_NOPAGE = 0x0100
VM_FAULT_LOCKED = 0x0200
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS

# follow_page flags
FOLL_WRITE = 0x01
FOLL_TOUCH = 0x02
FOLL_GET = 0x04

FAULT_UNLOCKED = mmemu.register_mutant(
    "memory:fault-unlocked",
    "the file fault maps the page without the page lock and without re-checking "
    "page->mapping (the 2007 truncate race)",
    caught_as="MappedTruncatedPage",
    doc="Before Nick Piggin's 2007 fix (d00806b183152af6d2, \"mm: fix fault vs invalidate "
        "race for linear mappings\", 2.6.23), the file fault looked the page up with find_get_page, checked i_size, "
        "and installed the pte without holding the page lock.  vmtruncate can run entirely "
        "between the lookup and the pte: unmap_mapping_range finds nothing mapped yet, "
        "truncate_inode_pages finds the page unmapped, removes it from the pagecache "
        "(page->mapping = NULL) and drops the cache's reference -- then the fault maps it.  "
        "The process now maps a page that no longer belongs to the file: its writes are "
        "lost, and the page outlives the file's pagecache.  With the fix, the page stays "
        "locked from lookup to pte (find_lock_page rechecks page->mapping and filemap_fault "
        "rechecks i_size under the lock), and truncate_inode_pages, which locks the page, "
        "unmaps it again if it finds it mapped.")


class MappedTruncatedPage(BadPageState):
    """A present pte maps a pagecache page that truncate removed from the cache."""


class FreePageInPageTable(BadPageState):
    """A page table still holds a page that was freed (or a pte is set to a free page)."""


# --------------------------------------------------------------------- ptes


class SwpEntry:
    """A non-present pte's payload: a swap entry, or a migration entry that
    points at the page under migration (``is_migration_entry``)."""

    __slots__ = ("type", "page", "write", "offset")

    def __init__(self, type: str, page: Page | None, write: bool = False, offset: int = 0) -> None:
        self.type = type          # "migration" | "swap"
        self.page = page
        self.write = write
        self.offset = offset

    def __repr__(self) -> str:
        if self.type == "migration":
            return f"migration({'write' if self.write else 'read'}, page{self.page.pfn if self.page else '?'})"
        return f"swap({self.offset})"


class Pte:
    """One page-table entry (a value: never mutated once installed)."""

    __slots__ = ("page", "present", "write", "young", "dirty", "swp")

    def __init__(self, page: Page | None, *, present: bool = True, write: bool = False,
                 young: bool = True, dirty: bool = False, swp: SwpEntry | None = None) -> None:
        self.page = page
        self.present = present
        self.write = write
        self.young = young
        self.dirty = dirty
        self.swp = swp

    def replace(self, **kw: Any) -> Pte:
        d: dict[str, Any] = {"present": self.present, "write": self.write,
                             "young": self.young, "dirty": self.dirty, "swp": self.swp}
        d.update(kw)
        return Pte(self.page, **d)

    def __repr__(self) -> str:
        if not self.present:
            return f"<pte {self.swp!r}>"
        bits = "".join(c for c, on in (("w", self.write), ("y", self.young), ("d", self.dirty)) if on)
        pfn = self.page.pfn if self.page is not None else "?"
        return f"<pte page{pfn} {bits or '-'}>"


def mk_pte(page: Page, vma: VmAreaStruct, *, write: bool = False, dirty: bool = False,
           young: bool = True) -> Pte:
    return Pte(page, write=write and bool(vma.vm_flags & VM_WRITE), dirty=dirty, young=young)


def make_migration_entry(page: Page, write: bool) -> Pte:
    return Pte(page, present=False, write=False, young=False,
               swp=SwpEntry("migration", page, write))


def is_migration_entry(pte: Pte | None) -> bool:
    return pte is not None and pte.swp is not None and pte.swp.type == "migration"


def is_swap_pte(pte: Pte | None) -> bool:
    return pte is not None and not pte.present and pte.swp is not None


def pte_key(mm: MmStruct, address: int) -> tuple[Hashable, ...]:
    return (mm, "pte", address & ~(PAGE_SIZE - 1))


# A pte is changed only under its page table lock (the model has one per
# mm, as 2.6.27 without split PTLs); the MMU and gup-fast read it without.
guarded_by(MmStruct, "pte", lambda mm: mm.page_table_lock, reads=False,
           why="the PTL serialises pte updates")


def pmd_key(mm: MmStruct, address: int) -> tuple[Hashable, ...]:
    return (mm, "pmd", address >> PMD_SHIFT)


def pte_table(mm: MmStruct, address: int) -> dict[int, Pte] | None:
    """The pte table covering ``address``, or None (pmd_none somewhere above)."""
    pud = mm.pgd.get((address >> PGDIR_SHIFT) & _IDX)
    if pud is None:
        return None
    pmd = pud.get((address >> PUD_SHIFT) & _IDX)
    if pmd is None:
        return None
    return pmd.get((address >> PMD_SHIFT) & _IDX)  # type: ignore[no-any-return]


def pte_get(mm: MmStruct, address: int) -> Pte | None:
    """``*pte`` (None: pte_none).  The caller's step declares the pte key."""
    t = pte_table(mm, address)
    if t is None:
        return None
    return t.get((address >> PAGE_SHIFT) & _IDX)


def _pte_alloc_table(mm: MmStruct, address: int) -> dict[int, Pte]:
    pud: Any = mm.pgd.get((address >> PGDIR_SHIFT) & _IDX)
    if pud is None:
        pud = mm.pgd[(address >> PGDIR_SHIFT) & _IDX] = {}
    pmd: Any = pud.get((address >> PUD_SHIFT) & _IDX)
    if pmd is None:
        pmd = pud[(address >> PUD_SHIFT) & _IDX] = {}
    t: Any = pmd.get((address >> PMD_SHIFT) & _IDX)
    if t is None:
        t = pmd[(address >> PMD_SHIFT) & _IDX] = {}
    return t  # type: ignore[no-any-return]


async def pte_alloc_map(mm: MmStruct, address: int) -> None:
    """pud_alloc / pmd_alloc / pte_alloc_map: make sure a pte table covers
    ``address``.  One step: the kernel's allocate-then-populate-under-the-lock
    (a racing populater frees its own table) has the same effect."""
    if pte_table(mm, address) is not None:
        return
    await step("__pte_alloc: pmd_populate", writes=(pmd_key(mm, address),))
    _pte_alloc_table(mm, address)


def set_pte_at(mm: MmStruct, address: int, pte: Pte) -> None:
    """Write a pte (caller holds the PTL; its step declared the pte key).

    Keeps the page -> ptes index, runs the page-table checks and wakes a
    fault that waits for this pte to change (migration_entry_wait)."""
    address &= ~(PAGE_SIZE - 1)
    wrote((mm, "pte", address), "set_pte_at")
    t = pte_table(mm, address)
    if t is None:
        t = _pte_alloc_table(mm, address)
    i = (address >> PAGE_SHIFT) & _IDX
    old = t.get(i)
    if old is not None and old.page is not None:
        _index_del(mm, address, old.page)
    t[i] = pte
    page = pte.page
    if page is not None:
        _index_add(mm, address, page)
        _check_pte_install(mm, address, page, pte)
    for hook in mm.kernel.pte_hooks:
        hook(mm, address, old, pte)
    wake_all(pte_key(mm, address))


def pte_clear(mm: MmStruct, address: int) -> Pte | None:
    """``ptep_get_and_clear``: returns the old entry (caller holds the PTL)."""
    address &= ~(PAGE_SIZE - 1)
    wrote((mm, "pte", address), "ptep_get_and_clear")
    t = pte_table(mm, address)
    if t is None:
        return None
    old = t.pop((address >> PAGE_SHIFT) & _IDX, None)
    if old is not None:
        if old.page is not None:
            _index_del(mm, address, old.page)
        for hook in mm.kernel.pte_hooks:
            hook(mm, address, old, None)
        wake_all(pte_key(mm, address))
    return old


def populated_ptes(mm: MmStruct, start: int, end: int) -> list[int]:
    """Addresses in [start, end) whose pte is not none, in address order."""
    out: list[int] = []
    for gi in sorted(mm.pgd):
        gbase = gi << PGDIR_SHIFT
        if gbase >= end or gbase + (1 << PGDIR_SHIFT) <= start:
            continue
        pud = mm.pgd[gi]
        for ui in sorted(pud):
            ubase = gbase | (ui << PUD_SHIFT)
            if ubase >= end or ubase + (1 << PUD_SHIFT) <= start:
                continue
            pmd = pud[ui]
            for mi in sorted(pmd):
                mbase = ubase | (mi << PMD_SHIFT)
                if mbase >= end or mbase + (1 << PMD_SHIFT) <= start:
                    continue
                for pi in sorted(pmd[mi]):
                    a = mbase | (pi << PAGE_SHIFT)
                    if start <= a < end:
                        out.append(a)
    return out


# ------------------------------------------------------------------ checks


def _index(mm: MmStruct) -> dict[Page, list[tuple[MmStruct, int]]]:
    return mm.kernel.data["pte_index"]  # type: ignore[no-any-return]


def _index_add(mm: MmStruct, address: int, page: Page) -> None:
    idx = _index(mm)
    lst = idx.get(page)
    if lst is None:
        idx[page] = [(mm, address)]
    else:
        lst.append((mm, address))


def _index_del(mm: MmStruct, address: int, page: Page) -> None:
    idx = _index(mm)
    lst = idx.get(page)
    if lst is None:
        return
    for k, (m, a) in enumerate(lst):
        if m is mm and a == address:
            del lst[k]
            break
    if not lst:
        del idx[page]


def ptes_mapping(kernel: Kernel, page: Page) -> list[tuple[MmStruct, int]]:
    """Every (mm, address) whose pte holds ``page`` (present or migration entry)."""
    return list(kernel.data.get("pte_index", {}).get(page, ()))


def _where(kernel: Kernel, page: Page) -> str:
    return ", ".join(f"{m.__mmemu_name__}@{a:#x}" for m, a in ptes_mapping(kernel, page))


def _check_pte_install(mm: MmStruct, address: int, page: Page, pte: Pte) -> None:
    if page.free:
        current_simulation().fail(FreePageInPageTable(
            f"{mm.__mmemu_name__} pte at {address:#x} set to free page{page.pfn} at {page_site()}",
            details=page.dump()))
    if pte.present and not PageAnon(page) and page.mapping is None:
        current_simulation().fail(MappedTruncatedPage(
            f"{mm.__mmemu_name__} maps page{page.pfn} at {address:#x} ({page_site()}) but the "
            f"page is no longer in the pagecache (page->mapping is NULL: truncated)",
            details=page.dump()))


def _free_hook(page: Page) -> None:
    sim = current_simulation()
    kernel = sim.data.get("kernel")
    if kernel is None:
        return
    holders = kernel.data["pte_index"].get(page)
    if holders:
        sim.fail(FreePageInPageTable(
            f"page{page.pfn} freed at {page_site()} while page tables still hold it "
            f"({_where(kernel, page)})", details=page.dump()))


def _end_check(sim: Any) -> None:
    kernel = sim.data.get("kernel")
    if kernel is None:
        return
    index: dict[Page, list[tuple[MmStruct, int]]] = kernel.data["pte_index"]
    for page, holders in index.items():
        for mm, address in holders:
            pte = pte_get(mm, address)
            if pte is None or pte.page is not page:
                continue
            if page.free:
                sim.fail(FreePageInPageTable(
                    f"at the end: {mm.__mmemu_name__} pte at {address:#x} holds free page{page.pfn}",
                    details=page.dump()))
            if pte.present and not PageAnon(page) and page.mapping is None:
                sim.fail(MappedTruncatedPage(
                    f"at the end: {mm.__mmemu_name__} maps page{page.pfn} at {address:#x} but "
                    f"the page is no longer in the pagecache (page->mapping is NULL: truncated)",
                    details=page.dump()))


def _dumper(kernel: Kernel) -> Any:
    def dump(page: Page) -> str:
        where = _where(kernel, page)
        return f"page tables: {where}" if where else ""
    return dump


def install_page_table_checks(kernel: Kernel) -> None:
    """Hook the page-table checks into this kernel (once; mm_alloc calls it)."""
    if "pte_index" in kernel.data:
        return
    kernel.data["pte_index"] = {}
    kernel.free_hooks.append(_free_hook)
    kernel.page_dumpers.append(_dumper(kernel))
    kernel.sim.at_end(_end_check)
    # for mmemu.check.page_state: "which pte still maps this page?"
    kernel.data.setdefault("page_table_scanners", []).append(
        lambda page: _where(kernel, page) or None)


# --------------------------------------------------------------- mmu_gather


class MmuGather:
    """``struct mmu_gather``: pages whose ptes were cleared, freed only after
    the TLB flush (tlb_finish_mmu)."""

    __slots__ = ("mm", "fullmm", "pages")

    def __init__(self, mm: MmStruct, fullmm: bool) -> None:
        self.mm = mm
        self.fullmm = fullmm
        self.pages: list[Page] = []


def tlb_gather_mmu(mm: MmStruct, *, fullmm: bool = False) -> MmuGather:
    return MmuGather(mm, fullmm)


def tlb_remove_page(tlb: MmuGather, page: Page) -> None:
    tlb.pages.append(page)


async def tlb_flush_mmu(tlb: MmuGather) -> None:
    """Flush the TLB, then free the gathered pages (free_pages_and_swap_cache)."""
    pages, tlb.pages = tlb.pages, []
    for page in pages:
        await put_page(page, label=f"tlb_finish_mmu: put_page(page{page.pfn})")


async def tlb_finish_mmu(tlb: MmuGather) -> None:
    await tlb_flush_mmu(tlb)


# ----------------------------------------------------------------- rmap glue


def _rmap() -> Any:
    from mmemu.mm import rmap
    return rmap


async def set_page_dirty(page: Page, *, label: str | None = None) -> None:
    await step(label or f"set_page_dirty(page{page.pfn})", writes=(page.flags_key,))
    page.flags |= PG_dirty


# ------------------------------------------------------------------- faults


#: The fault / truncate retry chase, and the model's fairness assumption.
#:
#: A fault that passed filemap_fault's first i_size check before a
#: truncate's i_size_write reads the page in (page_cache_read) and looks it
#: up again (2.6.27 ``goto retry_find``); truncate_inode_pages_range's
#: second pass loops until it finds no page.  If truncate locks each page
#: the fault has just read in before the fault does, and removes it, the
#: fault finds it gone (find_lock_page: ->mapping NULL, look up again:
#: none) and reads it in again, and the truncate finds a page again::
#:
#:     CPU0 (filemap_fault)               CPU1 (truncate_inode_pages, pass 2)
#:     page_cache_read: add, unlock
#:                                        pagevec_lookup: the page
#:                                        lock_page; truncate_complete_page;
#:                                        unlock_page
#:     find_lock_page: lock_page,
#:       ->mapping NULL: look up again,
#:       none
#:     page_cache_read: add, unlock       pagevec_lookup: ... (and so on)
#:
#: That is the kernel's code (2.6.27; the same loops until 5.15's
#: invalidate_lock, 730633f0b7f9, serialised filling the page cache against
#: truncation for the filesystems that take it), and the loop is endless
#: only if the scheduler lets truncate win the page lock every time: each
#: round the fault's lock_page could win, lock a page that is still in the
#: cache, recheck i_size and return SIGBUS.  A fair scheduler ends it, and no
#: round reaches a state an earlier round did not.  The engine schedules
#: adversarially (it explores every order, forever if asked), so the model
#: makes the fairness explicit: after FAIR_FAULT_ROUNDS pages read in and
#: taken away, the fault waits for the truncations in progress on the file
#: to end before it reads the page in again (_give_way_to_truncate; not
#: kernel code).  Without it an unbounded search of a fault against a
#: truncate ends in Livelock at max_steps on the correct model.
FAIR_FAULT_ROUNDS = 1


async def _give_way_to_truncate(mapping: Any, pgoff: int) -> None:
    """The fairness assumption of FAIR_FAULT_ROUNDS: wait until no
    vmtruncate that drops page ``pgoff`` is in progress on ``mapping``
    (vmtruncate wakes ``mapping.truncate_wq`` when it ends)."""
    from mmemu.kernel.locking import wait_event
    if any(first <= pgoff for first in mapping.truncating):
        reach("memory: filemap_fault gave way to truncate (the retry chase, fairness)")
    # (the test is wait_event's first step: it declares the read)
    await wait_event(mapping.truncate_wq,
                     lambda: not any(first <= pgoff for first in mapping.truncating),
                     label="fairness: wait for the truncation that keeps taking the page",
                     reads=((mapping, "truncating"),))


def i_size_pages(mapping: Any) -> int:
    """i_size in pages, rounded up (the caller's step reads ``(mapping, "i_size")``)."""
    host = getattr(mapping, "host", mapping)
    return (int(host.i_size) + PAGE_SIZE - 1) >> PAGE_SHIFT


async def filemap_fault(vma: VmAreaStruct, pgoff: int) -> tuple[int, Page | None]:
    """The file's page at ``pgoff``, returned LOCKED with a reference
    (``VM_FAULT_LOCKED``), or VM_FAULT_SIGBUS beyond EOF.

    The part of mm/filemap.c's filemap_fault the model needs: find_lock_page
    (which rechecks page->mapping after locking: a page truncated meanwhile
    is dropped and looked up again); a page found not uptodate is read again
    under its lock (page_not_uptodate); if the page is not cached, allocate it,
    add_to_page_cache (it comes back locked), "read" it (PG_uptodate),
    unlock, drop our reference and look up again; then recheck i_size under
    the page lock.
    """
    from mmemu.mm import filemap
    mapping = vma.mapping
    await step("filemap_fault: i_size_read", reads=((mapping, "i_size"),))
    if pgoff >= i_size_pages(mapping):
        return VM_FAULT_SIGBUS, None
    ret = 0
    read_in = 0  # pages this fault read in (each found gone if it loops)
    while True:
        page = await filemap.find_lock_page(mapping, pgoff)
        if page is None and read_in >= FAIR_FAULT_ROUNDS:
            await _give_way_to_truncate(mapping, pgoff)
        if page is not None:
            # (PG_uptodate is stable under the page lock we hold: no step)
            if page.flags & PG_uptodate:
                break
            # page_not_uptodate: an earlier read failed (or a page was cached
            # and never read): re-read it once, synchronously, under the page
            # lock -- readpage unlocks it when done -- and look it up again
            # (the read itself, and its -EIO, are not modelled: it succeeds)
            await step("page_not_uptodate: readpage", writes=(page.flags_key,))
            page.flags |= PG_uptodate
            await unlock_page(page, label="page_not_uptodate: readpage done, unlock_page")
            await put_page(page, label="page_not_uptodate: page_cache_release")
            continue
        ret = VM_FAULT_MAJOR
        new = await alloc_page(label="page_cache_read: page_cache_alloc")
        err = await filemap.add_to_page_cache(new, mapping, pgoff)
        if err == 0:
            await step("readpage: SetPageUptodate", writes=(new.flags_key,))
            new.flags |= PG_uptodate
            await unlock_page(new, label="readpage done: unlock_page")
            read_in += 1
        await put_page(new, label="page_cache_read: page_cache_release")
    await step("2. filemap_fault: recheck i_size under the page lock",
               reads=((mapping, "i_size"),))
    if pgoff >= i_size_pages(mapping):
        await unlock_page(page, label="beyond EOF: unlock_page")
        await put_page(page, label="beyond EOF: page_cache_release")
        return VM_FAULT_SIGBUS, None
    return ret | VM_FAULT_LOCKED, page


async def _filemap_fault_unlocked(vma: VmAreaStruct, pgoff: int) -> tuple[int, Page | None]:
    """The mutant's lookup: i_size check, find_get_page, no lock, no recheck."""
    from mmemu.mm import filemap
    mapping = vma.mapping
    await step("filemap_fault: i_size_read", reads=((mapping, "i_size"),))
    if pgoff >= i_size_pages(mapping):
        return VM_FAULT_SIGBUS, None
    while True:
        page = await filemap.find_get_page(mapping, pgoff)
        if page is not None:
            return 0, page
        new = await alloc_page(label="page_cache_read: page_cache_alloc")
        err = await filemap.add_to_page_cache(new, mapping, pgoff)
        if err == 0:
            await step("readpage: SetPageUptodate", writes=(new.flags_key,))
            new.flags |= PG_uptodate
            await unlock_page(new, label="readpage done: unlock_page")
        await put_page(new, label="page_cache_read: page_cache_release")


async def __do_fault(mm: MmStruct, vma: VmAreaStruct, address: int, write: bool,
                     orig_pte: Pte | None) -> int:
    """A file fault: map the file's page (or a private copy on a write to a
    private mapping).

    The protocol with truncate (the 2007 fix), page lock held from 1 to 5::

      fault (__do_fault)                    vmtruncate
      1. find_lock_page: lookup, lock_page, a. i_size = offset
         page->mapping == mapping?          b. unmap_mapping_range: zap the ptes
         (else unlock, put, look up again)  c. truncate_inode_pages: lock_page;
      2. i_size recheck under the lock         page_mapped? unmap_mapping_range;
         (beyond EOF: unlock, SIGBUS)          remove_from_page_cache
      3. PTL: pte still none?                  (page->mapping = NULL);
         (page locked, ->mapping unchanged)    unlock_page; put_page
      4. page_add_file_rmap; set_pte_at
      5. unlock PTL; unlock_page

    There are 2 critical interleavings that matter:
     - 1 before c's lock_page: c waits for the page lock until 5, then finds
       the page mapped and zaps the new pte before removing the page;
     - c before 1: find_lock_page finds no page (or locks it, sees
       page->mapping NULL and looks again), and 2 sees the new i_size: SIGBUS.

    b before 4 finds nothing to zap: that's OK, c's page_mapped recheck
    covers it.  A fault between a and b maps the page and b zaps it.

    Mutant memory:fault-unlocked: 1 is find_get_page (no lock), 2 and the
    recheck in 3 are gone, so a-b-c can run between 1 and 4 and 4 maps a
    page that is no longer in the pagecache.
    """
    mapping = vma.mapping
    pgoff = linear_page_index(vma, address)
    unlocked = mmemu.mutant(FAULT_UNLOCKED)
    with span("__do_fault"):
        if unlocked:
            ret, vmf_page = await _filemap_fault_unlocked(vma, pgoff)
        else:
            ret, vmf_page = await filemap_fault(vma, pgoff)
        if ret & VM_FAULT_ERROR or vmf_page is None:
            return ret
        page = vmf_page
        anon = False
        dirty_page: Page | None = None
        if write and not vma.vm_flags & VM_SHARED:
            # a private copy (COW at fault time)
            anon = True
            await anon_vma_prepare(vma)
            page = await alloc_page(label="__do_fault: alloc_page_vma (COW)")
            await step("__do_fault: copy_user_highpage", reads=(vmf_page.flags_key,),
                       writes=(page.flags_key,))
            page.flags |= PG_uptodate
        ptl = mm.page_table_lock
        k = pte_key(mm, address)
        await spin_lock(ptl, label="3. pte_offset_map_lock")
        await step("3. pte_same(*pte, orig_pte)?", reads=(k, vmf_page.flags_key, vmf_page.mapping_key))
        if pte_get(mm, address) is orig_pte:
            if not unlocked and (not PageLocked(vmf_page) or vmf_page.mapping is not mapping):
                current_simulation().fail(BadPageState(
                    f"__do_fault at {page_site()}: the faulted page must be locked and still "
                    f"in {getattr(mapping, '__mmemu_name__', mapping)} (VM_BUG_ON)",
                    details=vmf_page.dump()))
            if anon:
                await step("4. page_add_new_anon_rmap",
                           writes=(page._mapcount, page.mapping_key, page.flags_key))
                _rmap().__page_set_anon_rmap(page, vma, address, new=True)
                reach(PRIVATE_COPY)
            else:
                await _rmap().page_add_file_rmap(page, label="4. page_add_file_rmap")
                if write:
                    dirty_page = page
            # the pte is a reference: the step conflicts with a free of the page
            await step("4. set_pte_at", reads=(page.mapping_key, page._count), writes=(k,))
            set_pte_at(mm, address, mk_pte(page, vma, write=write, dirty=write))
            if anon:
                mm.anon_rss += 1
            else:
                mm.file_rss += 1
        else:
            reach(FAULT_PTE_CHANGED)
            if anon:
                await put_page(page, label="pte changed: page_cache_release(copy)")
            else:
                anon = True  # release the faulted page below
        await spin_unlock(ptl, label="5. pte_unmap_unlock")
        if not unlocked:
            await unlock_page(vmf_page, label="5. unlock_page")
        if anon:
            await put_page(vmf_page, label="__do_fault: page_cache_release")
        elif dirty_page is not None:
            await set_page_dirty(dirty_page)
    return ret & ~VM_FAULT_LOCKED


async def do_anonymous_page(mm: MmStruct, vma: VmAreaStruct, address: int, write: bool) -> int:
    """Map a new zeroed page at ``address`` (pte_none, anonymous vma).

    1. anon_vma_prepare; 2. alloc a zeroed page; 3. PTL: still pte_none?
    then page_add_new_anon_rmap + set_pte_at (the page is new: nobody else
    can see it until the pte is set); otherwise another fault won: free ours.
    """
    with span("do_anonymous_page"):
        await anon_vma_prepare(vma)
        page = await alloc_page(label="do_anonymous_page: alloc_zeroed_user_highpage")
        ptl = mm.page_table_lock
        k = pte_key(mm, address)
        await spin_lock(ptl, label="do_anonymous_page: pte_offset_map_lock")
        await step("do_anonymous_page: pte_none? page_add_new_anon_rmap, set_pte_at",
                   reads=((vma, "anon_vma"),),
                   writes=(k, page._mapcount, page.mapping_key, page.flags_key))
        if pte_get(mm, address) is None:
            page.flags |= PG_uptodate
            _rmap().__page_set_anon_rmap(page, vma, address, new=True)
            set_pte_at(mm, address, mk_pte(page, vma, write=True, dirty=True))
            mm.anon_rss += 1
        else:
            await put_page(page, label="do_anonymous_page: lost the race, page_cache_release")
        await spin_unlock(ptl, label="do_anonymous_page: pte_unmap_unlock")
    return 0


COW_NO_NOTIFY = mmemu.register_mutant(
    "memory:cow-no-notify",
    "do_wp_page replaces the COWed pte without telling the secondary MMUs "
    "(ptep_clear_flush instead of ptep_clear_flush_notify; modern: no start/end bracket)",
    caught_as="PteChangeNotNotified (the cleared pte was never reported to the notifiers), "
              "or IncoherentTranslation (a secondary MMU keeps reading the old page after "
              "the process's pte moved to its private copy)",
    doc="The COW fault is the one place where the CPU pte moves from one *live* page to "
        "another: the old page stays allocated (the child, or the page cache, still has "
        "it), so no page is freed under the secondary MMU -- it just keeps translating to "
        "the wrong page, and the process and the guest stop seeing each other's writes.  "
        "2.6.27's do_wp_page clears the pte with ptep_clear_flush_notify "
        "(->invalidate_page) before setting the new one; modern kernels bracket the "
        "replacement with an MMU_NOTIFY_CLEAR range (wp_page_copy).  Before mmu notifiers "
        "it was a plain ptep_clear_flush, which is this mutant.  (A related 2012 race: "
        "set_pte_at_notify, used by do_wp_page between 2.6.32 and 3.x, set the writable "
        "pte before ->change_pte reached the secondary MMU, see the Xiao Guangrong / "
        "Andrea Arcangeli thread 'mmu_notifier: fix inconsistent memory between secondary "
        "MMU and host'.)")


#: coverage event: the write fault found the page locked (ksmd, reclaim...) and copies
WP_TRYLOCK_FAILED = "memory: do_wp_page found the anonymous page locked and copies it"
#: coverage event (modern): somebody else holds a reference to the page (reclaim's
#: isolation, a GUP pin, another pte): wp_can_reuse_anon_folio copies it
WP_EXTRA_REFERENCE = ("memory: do_wp_page (modern) found another reference to the anonymous "
                      "page and copies it")
#: coverage event: the write fault reused an anonymous page in place (it was this pte's alone)
WP_REUSED = "memory: do_wp_page reused the anonymous page in place (no copy)"
#: coverage event: the pte changed while do_wp_page copied (the copy is dropped, the fault retried)
WP_PTE_CHANGED = "memory: do_wp_page found the pte changed after the copy (drops it)"


def _slot_key(page: Page) -> Hashable:
    """What can_share_swap_page reads of the page's swap slot (its count)."""
    from mmemu.mm.swapfile import swap_info
    offset = page.private
    return swap_info().key(offset) if isinstance(offset, int) else page.flags_key


async def _wp_can_reuse_anon_folio(page: Page) -> bool:
    """Modern do_wp_page's reuse test (wp_can_reuse_anon_folio, small folios):
    only our pte's reference (and the swap cache's, which it drops) may be
    left, checked again under the page lock taken with trylock.  Caller
    holds the PTL."""
    from mmemu.mm.swapfile import swap_count
    from mmemu.mm.swap_state import delete_from_swap_cache
    await step("do_wp_page: PageKsm || folio_ref_count > 1 + PageSwapCache?",
               reads=(page._count, page.flags_key))
    swapcache = 1 if page.flags & PG_swapcache else 0
    if PageKsm(page) or page._count.counter > 1 + swapcache:
        if not PageKsm(page):
            reach(WP_EXTRA_REFERENCE)
        return False
    if not await trylock_page(page, label="do_wp_page: folio_trylock"):
        reach(WP_TRYLOCK_FAILED)
        return False
    if page.flags & PG_swapcache:
        # folio_free_swap: no other swap pte holds the slot (the model's
        # swap_map counts the cache's reference too)
        offset = page.private
        await step("do_wp_page: folio_free_swap: folio_swapped?", reads=(_slot_key(page),))
        if isinstance(offset, int) and swap_count(offset) == 1:
            await delete_from_swap_cache(page)
            page.flags |= PG_dirty
    await step("do_wp_page: PageKsm || folio_ref_count != 1?",
               reads=(page._count, page.flags_key))
    reuse = not PageKsm(page) and page._count.counter == 1
    if not reuse and not PageKsm(page):
        reach(WP_EXTRA_REFERENCE)  # (the same event as the early test's)
    await unlock_page(page, label="do_wp_page: folio_unlock")
    return reuse


async def do_wp_page(mm: MmStruct, vma: VmAreaStruct, address: int, orig: Pte) -> int:
    """A write to a present, read-only pte.  Called with the PTL held; returns
    with it released.  Reuses the page when it is this vma's own (anonymous
    and mapped once, or a shared writable mapping); otherwise copies it.

    The copy, against a secondary MMU that maps the old page::

      do_wp_page (the process writes)           secondary MMU
      1. get_page(old); unlock the PTL;         F. a read fault maps the
         allocate and copy the new page            old page (read-only)
         (modern: invalidate_range_start)
      2. PTL; pte_same?  ptep_clear_flush_notify:
         the pte is cleared, then
         ->invalidate_page (2.6.27)
      3. set_pte_at(new page, writable); page_add_new_anon_rmap;
         page_remove_rmap(old); unlock (modern: invalidate_range_end)

    There is 1 critical interleaving that matters:
     - F before 2: the secondary MMU maps the old page; 2 (or the modern
       start) zaps it, and a later fault maps the new page.  Without the
       notification (mutant ``memory:cow-no-notify``) the translation to
       the old page stays: the process writes its new copy, the guest
       reads the old one.
    Harmless: F after 3 (GUP sees the new pte); F between 1 and 2 waits for
    (modern) the range, or is zapped at 2 (2.6.27).

    The reuse test, under the page lock taken with trylock (never waited
    for: the fault holds the PTL)::

      2.6.27 ("2.6.27" generation; 2.6.32 the same, with !PageKsm):
        if (trylock_page(old_page)) {
                reuse = can_share_swap_page(old_page);
                unlock_page(old_page);
        }                               /* locked by somebody: copy */
      modern (wp_can_reuse_anon_folio):
        PageKsm or page_count > 1 + PageSwapCache: copy;
        !trylock: copy; PageSwapCache: free the slot (folio_free_swap);
        PageKsm or page_count != 1: unlock, copy; else unlock, reuse

    KSM depends on the trylock: ksmd holds the page lock from
    write_protect_page to replace_page, so a writer in between copies the
    page instead of writing the one being merged (ksm:merge-vs-write-fault
    reaches that copy; modern: ksmd's reference alone makes it copy).  Modern kernels' PageAnonExclusive fast
    path is not modelled (KSM's write_protect_page clears it anyway), nor
    later 2.6 kernels' sleeping lock_page + pte_same recheck when the
    trylock fails.  A KSM page is never reused (PageKsm), as since 2.6.32."""
    ptl = mm.page_table_lock
    k = pte_key(mm, address)
    old_page = orig.page
    assert old_page is not None
    reuse = False
    if PageAnon(old_page) and not PageKsm(old_page):
        if mmu_notifier.is_modern(mm):
            reuse = await _wp_can_reuse_anon_folio(old_page)
        elif await trylock_page(old_page, label="do_wp_page: trylock_page(old_page)"):
            from mmemu.mm.swapfile import can_share_swap_page
            await step("do_wp_page: can_share_swap_page",
                       reads=(old_page._mapcount, _slot_key(old_page)))
            reuse = can_share_swap_page(old_page)
            await unlock_page(old_page, label="do_wp_page: unlock_page(old_page)")
        else:
            reach(WP_TRYLOCK_FAILED)
    elif vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE:
        reuse = True
    if reuse:
        if PageAnon(old_page):
            reach(WP_REUSED)
        await step("do_wp_page: reuse, ptep_set_access_flags", writes=(k, old_page.flags_key))
        set_pte_at(mm, address, orig.replace(write=True, dirty=True, young=True))
        if not PageAnon(old_page):
            # the shared file page: dirty_page -> set_page_dirty_balance.  An
            # anonymous page reused in place stays clean: only the pte's
            # dirty bit says that a swap-cache page's slot is now stale
            # (try_to_unmap_one hands it to the page: set_page_dirty).
            old_page.flags |= PG_dirty
        await spin_unlock(ptl, label="do_wp_page: pte_unmap_unlock")
        return VM_FAULT_WRITE
    # copy on write
    no_notify = mmemu.mutant(COW_NO_NOTIFY)
    await get_page(old_page, label="do_wp_page: page_cache_get(old_page)")
    await spin_unlock(ptl, label="do_wp_page: pte_unmap_unlock")
    await anon_vma_prepare(vma)
    new_page = await alloc_page(label="do_wp_page: alloc_page_vma")
    await step("do_wp_page: cow_user_page", reads=(old_page.flags_key,), writes=(new_page.flags_key,))
    new_page.flags |= PG_uptodate
    modern = mmu_notifier.is_modern(mm) and not no_notify
    if modern:  # wp_page_copy: MMU_NOTIFY_CLEAR over the page, outside the PTL
        await mmu_notifier.mmu_notifier_invalidate_range_start(
            mm, address & ~(PAGE_SIZE - 1), (address & ~(PAGE_SIZE - 1)) + PAGE_SIZE,
            event="CLEAR")
    await spin_lock(ptl, label="do_wp_page: pte_offset_map_lock")
    await step("do_wp_page: pte_same?", reads=(k,))
    release = new_page
    if pte_get(mm, address) is orig:
        if not PageAnon(old_page):
            mm.file_rss -= 1
            mm.anon_rss += 1
        if no_notify:
            await ptep_clear_flush(vma, address)
        else:
            await ptep_clear_flush_notify(vma, address)
        await step("do_wp_page: set_pte_at, page_add_new_anon_rmap",
                   writes=(k, new_page._mapcount, new_page.mapping_key, new_page.flags_key))
        _rmap().__page_set_anon_rmap(new_page, vma, address, new=True)
        set_pte_at(mm, address, mk_pte(new_page, vma, write=True, dirty=True))
        reach(COW_COPIED)
        await _rmap().page_remove_rmap(old_page, vma)
        release = old_page  # the old pte's reference
    else:
        reach(WP_PTE_CHANGED)
    await put_page(release, label="do_wp_page: page_cache_release")
    await spin_unlock(ptl, label="do_wp_page: pte_unmap_unlock")
    if modern:
        await mmu_notifier.mmu_notifier_invalidate_range_end(
            mm, address & ~(PAGE_SIZE - 1), (address & ~(PAGE_SIZE - 1)) + PAGE_SIZE,
            event="CLEAR")
    await put_page(old_page, label="do_wp_page: page_cache_release(old_page)")
    return VM_FAULT_WRITE


async def ptep_clear_flush(vma: VmAreaStruct, address: int) -> Pte | None:
    """Clear the pte and flush the CPU TLB, telling no secondary MMU that
    has its own page table (2.6.27's ptep_clear_flush).  Modern: the TLB
    flush itself reaches the TLBs that walk these page tables
    (arch_invalidate_secondary_tlbs).  Caller holds the PTL."""
    mm = vma.vm_mm
    cur = pte_get(mm, address)  # stable: the caller holds the PTL
    reads = (cur.page._count,) if cur is not None and cur.page is not None else ()
    await step("ptep_clear_flush", reads=reads, writes=(pte_key(mm, address),))
    old = pte_clear(mm, address)
    if mmu_notifier.is_modern(mm):
        a = address & ~(PAGE_SIZE - 1)
        await mmu_notifier.arch_invalidate_secondary_tlbs(mm, a, a + PAGE_SIZE)
    return old


async def set_pte_at_notify(vma: VmAreaStruct, address: int, pte: Pte, *,
                            label: str = "set_pte_at_notify") -> None:
    """Set a pte to a new page (or new permissions) and tell every secondary
    MMU with ->change_pte (KSM).  Caller holds the PTL.

    2.6.27 generation (2.6.32's, 828502d30073): set_pte_at, then
    mmu_notifier_change_pte; modern (until 6.10): change_pte first (so no
    secondary MMU sees the old page after the CPU can use the new one), and
    the caller brackets it with invalidate_range_start/end."""
    mm = vma.vm_mm
    page = pte.page
    reads = (page._count,) if page is not None else ()
    if mmu_notifier.is_modern(mm):
        await mmu_notifier.mmu_notifier_change_pte(mm, address, page)
        await step(f"{label}: set_pte_at", reads=reads, writes=(pte_key(mm, address),))
        set_pte_at(mm, address, pte)
    else:
        await step(f"{label}: set_pte_at", reads=reads, writes=(pte_key(mm, address),))
        set_pte_at(mm, address, pte)
        await mmu_notifier.mmu_notifier_change_pte(mm, address, page)


async def ptep_clear_flush_notify(vma: VmAreaStruct, address: int) -> Pte | None:
    """ptep_clear_flush, then mmu_notifier_invalidate_page (2.6.27).  Caller
    holds the PTL; the page is still allocated (the pte's reference is
    dropped only after this returns).  Modern: no ->invalidate_page (the
    callers bracket with range start/end); ptep_clear_flush's TLB flush
    reaches the TLBs that walk these page tables."""
    old = await ptep_clear_flush(vma, address)
    if not mmu_notifier.is_modern(vma.vm_mm):
        await mmu_notifier.mmu_notifier_invalidate_page(vma.vm_mm, address)
    return old


YOUNG_NO_NOTIFY = mmemu.register_mutant(
    "memory:young-no-notify",
    "page aging clears the pte's accessed bit without asking the secondary MMUs "
    "(ptep_clear_flush_young instead of ptep_clear_flush_young_notify)",
    caught_as="AgingMissedSecondaryReference (mmemu.check.young: aging answers 'old' for a "
              "page a secondary MMU used since the last aging)",
    doc="Before mmu notifiers the VM could not see a KVM guest's use of a page: the guest "
        "touches it through an spte, the CPU pte's accessed bit stays clear, and reclaim "
        "swaps out the guest's hottest memory.  ->clear_flush_young (2.6.27) is how "
        "page_referenced_one and try_to_unmap_one ask: KVM tests and clears the sptes' "
        "accessed bits (kvm_age_hva).  Without the call (the pre-2.6.27 "
        "ptep_clear_flush_young, as a removed step) aging only sees the CPU's accesses.")


def _ptep_test_and_clear_young(mm: MmStruct, address: int) -> bool:
    """The pte's own accessed bit: test and clear (inside the caller's step,
    which writes the pte key; the caller holds the PTL)."""
    pte = pte_get(mm, address)
    if pte is not None and pte.present and pte.young:
        set_pte_at(mm, address, pte.replace(young=False))
        return True
    return False


def report_aging(phase: str, mm: MmStruct, address: int, callback: str,
                 young: bool | None = None) -> None:
    """Tell the checkers (``kernel.aging_hooks``) that an aging question
    about ``address`` begins, or what it answered."""
    for hook in mm.kernel.aging_hooks:
        hook(phase, mm, address, callback, young)


async def ptep_clear_flush_young_notify(vma: VmAreaStruct, address: int) -> bool:
    """Test and clear the accessed bit of the pte and of every secondary MMU
    (->clear_flush_young: clear, and flush the secondary TLB so that the next
    access sets it again).  Caller holds the PTL."""
    mm = vma.vm_mm
    await step("ptep_clear_flush_young", writes=(pte_key(mm, address),))
    report_aging("begin", mm, address, "clear_flush_young")
    young = _ptep_test_and_clear_young(mm, address)
    if not mmemu.mutant(YOUNG_NO_NOTIFY) and \
            await mmu_notifier.mmu_notifier_clear_flush_young(mm, address):
        reach(SECONDARY_YOUNG)
        young = True
    report_aging("end", mm, address, "clear_flush_young", young)
    return young


CLEAR_YOUNG_NO_NOTIFY = mmemu.register_mutant(
    "memory:clear-young-no-notify",
    "idle page tracking clears only the CPU ptes' accessed bits, asking no secondary MMU "
    "(ptep_test_and_clear_young instead of ptep_clear_young_notify)",
    caught_as="AgingMissedSecondaryReference (page_idle's question answered 'old' while a "
              "driver implementing ->clear_young holds a young translation: the guest used "
              "the page after it was marked idle)",
    doc="Idle page tracking (33c3fc71c8cf, 4.3) came with ->clear_young (1d7715c676a1, "
        "the same series): a KVM guest touches its memory through sptes whose accessed "
        "bits the CPU ptes never see, so without asking the secondary MMUs every page a "
        "guest uses looks idle to the tracker (and to the proactive reclaim built on it).  "
        "The mutant is page_idle_clear_pte_refs_one with the CPU-only test (a step "
        "removed on purpose).")


async def ptep_clear_young_notify(vma: VmAreaStruct, address: int) -> bool:
    """Test and clear the accessed bit of the pte and of every secondary MMU
    without flushing TLBs (->clear_young, 4.3: idle page tracking, where a
    stale TLB entry only makes a page look idle a little longer).  Caller
    holds the PTL."""
    mm = vma.vm_mm
    await step("ptep_test_and_clear_young", writes=(pte_key(mm, address),))
    report_aging("begin", mm, address, "clear_young")
    young = _ptep_test_and_clear_young(mm, address)
    if not mmemu.mutant(CLEAR_YOUNG_NO_NOTIFY) and \
            await mmu_notifier.mmu_notifier_clear_young(mm, address, address + PAGE_SIZE):
        young = True
    report_aging("end", mm, address, "clear_young", young)
    return young


def vm_swap_full() -> bool:
    """More than half of swap is in use (then a swapped-in page leaves the
    swap cache at once, freeing its slot)."""
    from mmemu.mm.swapfile import swap_info
    si = swap_info()
    return len(si.swap_map) * 2 > si.nr_slots


SWAP_NO_PTE_SAME = mmemu.register_mutant(
    "memory:swap-no-pte-same",
    "do_swap_page maps the swapped-in page without re-checking, under the PTL, that the "
    "pte still holds the swap entry it faulted on",
    caught_as="BadPtePermission / InvariantViolation (two faults on one swap pte both map "
              "the page: mapcount 2 for one pte, writable; the slot freed twice)",
    doc="do_swap_page looks the slot up (or reads it in) without the PTL, so a second fault "
        "on the same pte can get there first; 2.6.27 then takes the page lock and the PTL "
        "and tests pte_same(*page_table, orig_pte), going to out_nomap if the pte changed.  "
        "Without that test (a step removed on purpose) the loser maps the page again over "
        "the winner's pte: page_add_anon_rmap twice for one pte, swap_free twice for one "
        "slot reference, anon_rss counted twice.")


async def do_swap_page(mm: MmStruct, vma: VmAreaStruct, address: int, entry: Pte,
                       write: bool) -> int:
    """A fault on a non-present, non-none pte.

    A migration entry: wait for the migration to finish (the access is
    retried).  A swap entry (2.6.27)::

      1. lookup_swap_cache(slot), else read_swap_cache_async: a new page
         added to the swap cache and "read" (the I/O is not modelled); None:
         the slot was freed meanwhile -- back out if the pte changed
      2. lock_page; PTL; pte_same(*pte, orig)?  (else somebody faulted it in
         first: unlock, put, done)
      3. set_pte_at(the page; writable if the write can share it:
         can_share_swap_page); page_add_anon_rmap -- the reference from 1
         becomes the pte's
      4. swap_free(slot) (the pte's slot reference); vm_swap_full or
         VM_LOCKED: remove_exclusive_swap_page; unlock_page
      5. a write that could not share: do_wp_page (copy)

    The page lock orders 2-4 against reclaim, which takes it before
    try_to_unmap and __remove_mapping: reclaim either finds the new pte
    (and unmaps it again) or freezes the page first, and then 1's reference
    makes the freeze fail.
    """
    if is_migration_entry(entry):
        from mmemu.mm.migrate import migration_entry_wait
        await migration_entry_wait(mm, address)
        return 0
    if entry.swp is None or entry.swp.type != "swap":
        return VM_FAULT_SIGBUS
    from mmemu.mm.page import lock_page
    from mmemu.mm.swap_state import lookup_swap_cache, read_swap_cache_async
    from mmemu.mm.swapfile import can_share_swap_page, remove_exclusive_swap_page, swap_free
    offset = entry.swp.offset
    ptl = mm.page_table_lock
    k = pte_key(mm, address)
    ret = 0
    with span("do_swap_page"):
        page = await lookup_swap_cache(offset)
        if page is None:
            page = await read_swap_cache_async(offset, vma, address)
            if page is None:
                # back out if somebody else faulted in this pte meanwhile
                await spin_lock(ptl, label="do_swap_page: pte_offset_map_lock (no page)")
                await step("do_swap_page: pte_same? (no page)", reads=(k,))
                if pte_get(mm, address) is entry:
                    ret = VM_FAULT_OOM
                else:
                    reach(SWAPIN_SLOT_GONE)
                await spin_unlock(ptl, label="do_swap_page: pte_unmap_unlock (no page)")
                return ret
            ret = VM_FAULT_MAJOR
        await lock_page(page, label="2. do_swap_page: lock_page")
        await spin_lock(ptl, label="2. do_swap_page: pte_offset_map_lock")
        await step("2. do_swap_page: pte_same(*page_table, orig_pte)?",
                   reads=(k, page._mapcount, page.flags_key))
        if pte_get(mm, address) is not entry and not mmemu.mutant(SWAP_NO_PTE_SAME):
            reach(SWAPIN_PTE_CHANGED)
            await spin_unlock(ptl, label="out_nomap: pte_unmap_unlock")
            await unlock_page(page, label="out_nomap: unlock_page")
            await put_page(page, label="out_nomap: page_cache_release")
            return ret
        mm.anon_rss += 1
        shared = write and can_share_swap_page(page)
        await step("3. do_swap_page: set_pte_at; page_add_anon_rmap",
                   reads=(page._count,),
                   writes=(k, page._mapcount, page.mapping_key, page.flags_key))
        first = page._mapcount.counter < 0
        page._mapcount.counter += 1
        if first:
            _rmap().__page_set_anon_rmap(page, vma, address)
        pte = mk_pte(page, vma, write=shared, dirty=shared)
        set_pte_at(mm, address, pte)
        reach(SWAPPED_IN)
        await swap_free(offset, label="4. do_swap_page: swap_free (the pte's slot)")
        if vm_swap_full() or vma.vm_flags & VM_LOCKED:
            await remove_exclusive_swap_page(page)
        await unlock_page(page, label="4. do_swap_page: unlock_page")
        if write and not shared:
            return ret | await do_wp_page(mm, vma, address, pte)
        await spin_unlock(ptl, label="do_swap_page: pte_unmap_unlock")
    return ret


async def handle_pte_fault(mm: MmStruct, vma: VmAreaStruct, address: int, write: bool) -> int:
    k = pte_key(mm, address)
    await step("handle_pte_fault: entry = *pte", reads=(k, pmd_key(mm, address)))
    entry = pte_get(mm, address)
    if entry is None:
        if vma.vm_file is not None:
            return await __do_fault(mm, vma, address, write, None)
        return await do_anonymous_page(mm, vma, address, write)
    if not entry.present:
        return await do_swap_page(mm, vma, address, entry, write)
    ptl = mm.page_table_lock
    await spin_lock(ptl, label="handle_pte_fault: spin_lock(ptl)")
    extra: tuple[Hashable, ...] = ()
    if write and entry.page is not None:
        extra = (entry.page._mapcount, entry.page.flags_key)
        if isinstance(entry.page.private, int):
            from mmemu.mm.swapfile import swap_info
            extra += (swap_info().key(entry.page.private),)
    await step("handle_pte_fault: pte_same(*pte, entry)?", reads=extra, writes=(k,))
    if pte_get(mm, address) is not entry:
        await spin_unlock(ptl, label="handle_pte_fault: pte changed, unlock")
        return 0
    if write and not entry.write:
        return await do_wp_page(mm, vma, address, entry)
    new = entry.replace(young=True, dirty=entry.dirty or write)
    if new.young != entry.young or new.dirty != entry.dirty:
        set_pte_at(mm, address, new)
    await spin_unlock(ptl, label="handle_pte_fault: pte_unmap_unlock")
    return 0


class VmaChangedUnderFault(InvariantViolation):
    """handle_mm_fault was given a vma that no longer covers the address: the
    vma was split, shrunk or unmapped between the caller's find_vma and the
    fault -- the caller did not hold mmap_sem across both (in the kernel: a
    fault on a stale or freed vm_area_struct)."""


async def handle_mm_fault(mm: MmStruct, vma: VmAreaStruct, address: int, write: bool) -> int:
    """Resolve a fault at ``address`` in ``vma``; returns VM_FAULT_* bits (0: the
    access can be retried).  Caller holds ``mm->mmap_sem`` for read (from
    its find_vma on: without it the vma can change under the fault, which
    fails the execution as VmaChangedUnderFault; a wrong vma passed by
    scenario setup code is a ModelError)."""
    address &= ~(PAGE_SIZE - 1)
    if not vma.vm_start <= address < vma.vm_end:
        if current_cpu() is None:  # scenario setup: the scenario passed a wrong vma
            raise mmemu.ModelError(f"handle_mm_fault: {address:#x} is not in {vma!r}")
        current_simulation().fail(VmaChangedUnderFault(
            f"handle_mm_fault({address:#x}) at {page_site()} with {vma!r}, which no longer "
            f"covers it: the vma changed between find_vma and the fault (was mmap_sem held "
            f"across both?)"))
    with span("handle_mm_fault"):
        await pte_alloc_map(mm, address)
        return await handle_pte_fault(mm, vma, address, write)


# ------------------------------------------------------------------ zapping


class ZapDetails:
    """``struct zap_details``: set by unmap_mapping_range.  ``check_mapping``
    (not None unless even_cows) skips private COW pages; non-present ptes
    (migration entries) are left alone."""

    __slots__ = ("check_mapping", "first_index", "last_index")

    def __init__(self, check_mapping: Any, first_index: int, last_index: int) -> None:
        self.check_mapping = check_mapping
        self.first_index = first_index
        self.last_index = last_index


async def unmap_page_range(tlb: MmuGather, vma: VmAreaStruct, start: int, end: int,
                           details: ZapDetails | None = None) -> None:
    """zap_pte_range over [start, end) of ``vma``, under the PTL: clear each
    pte, drop its rmap, gather its page in ``tlb`` (freed at tlb_finish_mmu)."""
    mm = vma.vm_mm
    ptl = mm.page_table_lock
    with span("zap_pte_range"):
        await spin_lock(ptl, label="zap_pte_range: pte_offset_map_lock")
        for address in populated_ptes(mm, start, end):
            k = pte_key(mm, address)
            cur = pte_get(mm, address)  # stable: we hold the PTL
            keys: tuple[Hashable, ...] = (k,)
            reads: tuple[Hashable, ...] = ()
            if cur is not None and cur.page is not None:
                reads = (cur.page._count,)
                if cur.present:
                    keys = (k, cur.page.flags_key, cur.page.mapping_key)
            await step(f"zap_pte_range: ptep_get_and_clear({address:#x})", reads=reads,
                       writes=keys)
            pte = pte_get(mm, address)
            if pte is None:
                continue
            if pte.present:
                page = pte.page
                assert page is not None
                if details is not None and details.check_mapping is not None \
                        and page.mapping is not details.check_mapping:
                    continue  # unmap_shared_mapping_pages keeps the private COW copies
                pte_clear(mm, address)
                if PageAnon(page):
                    mm.anon_rss -= 1
                else:
                    if pte.dirty:
                        page.flags |= PG_dirty
                    if pte.young:
                        page.flags |= PG_referenced
                    mm.file_rss -= 1
                await _rmap().page_remove_rmap(page, vma, label=f"zap_pte_range: page_remove_rmap(page{page.pfn})")
                tlb_remove_page(tlb, page)
            else:
                if details is not None:
                    continue  # unmap_mapping_range leaves swap entries alone
                pte_clear(mm, address)
                if pte.swp is not None and pte.swp.type == "swap":
                    from mmemu.mm.swapfile import free_swap_and_cache
                    await free_swap_and_cache(pte.swp)  # nothing for a migration entry
                elif pte.swp is not None and pte.swp.page is not None:
                    # a migration entry carries its page's rss count.  2.6.27
                    # forgot it here (an rss leak nothing checked before
                    # v3.5's check_mm); later kernels decrement it
                    # (zap_pte_range's is_migration_entry branch), as here.
                    if PageAnon(pte.swp.page):
                        mm.anon_rss -= 1
                    else:
                        mm.file_rss -= 1
        if mmu_notifier.is_modern(mm):
            # tlb_flush_mmu_tlbonly under the PTL, before the gathered pages go
            await mmu_notifier.arch_invalidate_secondary_tlbs(mm, start, end)
        await spin_unlock(ptl, label="zap_pte_range: pte_unmap_unlock")


async def unmap_vmas(tlb: MmuGather, vmas: list[VmAreaStruct], start: int, end: int,
                     details: ZapDetails | None = None, *,
                     event: str = mmu_notifier.MMU_NOTIFY_UNMAP) -> None:
    """Zap [start, end) of each vma inside one invalidate_range bracket::

        1. mmu_notifier_invalidate_range_start(mm, start, end)
        2. zap_pte_range for each vma (ptes cleared, pages gathered)
        3. tlb flush: the gathered pages are freed      <- between start and end
        4. mmu_notifier_invalidate_range_end(mm, start, end)
    """
    if not vmas:
        return
    mm = vmas[0].vm_mm
    with span("unmap_vmas"):
        await mmu_notifier.mmu_notifier_invalidate_range_start(mm, start, end, event=event)
        for vma in vmas:
            s = max(start, vma.vm_start)
            e = min(end, vma.vm_end)
            if s < e:
                await unmap_page_range(tlb, vma, s, e, details)
        await tlb_flush_mmu(tlb)
        await mmu_notifier.mmu_notifier_invalidate_range_end(mm, start, end, event=event)


async def zap_page_range(vma: VmAreaStruct, address: int, size: int,
                         details: ZapDetails | None = None, *,
                         event: str = mmu_notifier.MMU_NOTIFY_UNMAP) -> None:
    """Remove the user pages of [address, address + size) of ``vma``:
    range_start, clear the ptes, free the gathered pages (tlb_finish_mmu),
    range_end.  ``event``: the modern range's reason (madvise: CLEAR)."""
    with span("zap_page_range"):
        tlb = tlb_gather_mmu(vma.vm_mm)
        await unmap_vmas(tlb, [vma], address, address + size, details, event=event)
        await tlb_finish_mmu(tlb)


async def unmap_mapping_range(mapping: Any, holebegin: int, holelen: int,
                              even_cows: bool = False) -> None:
    """Zap every user mapping of the file range [holebegin, holebegin + holelen)
    (bytes; holelen 0: to the end of the file), under ``mapping->i_mmap_lock``.
    ``even_cows``: also zap private COW copies (truncate) -- otherwise only
    the pagecache pages themselves (invalidation)."""
    hba = holebegin >> PAGE_SHIFT
    hlen = (holelen + PAGE_SIZE - 1) >> PAGE_SHIFT
    first = hba
    last = hba + hlen - 1 if holelen else (1 << 62)
    details = ZapDetails(None if even_cows else mapping, first, last)
    with span("unmap_mapping_range"):
        await spin_lock(mapping.i_mmap_lock, label="unmap_mapping_range: spin_lock(i_mmap_lock)")
        await step("unmap_mapping_range: walk i_mmap", reads=((mapping, "i_mmap"),))
        for vma in list(mapping.i_mmap):
            vba = vma.vm_pgoff
            vea = vba + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT) - 1
            zba = max(first, vba)
            zea = min(last, vea)
            if zba > zea:
                continue
            start = vma.vm_start + ((zba - vba) << PAGE_SHIFT)
            end = vma.vm_start + ((zea - vba + 1) << PAGE_SHIFT)
            await zap_page_range(vma, start, end - start, details)
        await spin_unlock(mapping.i_mmap_lock, label="unmap_mapping_range: spin_unlock(i_mmap_lock)")


async def free_pgtables(mm: MmStruct, vmas: list[VmAreaStruct], floor: int, ceiling: int) -> None:
    """Unlink each vma from its anon_vma and i_mmap (rmap walkers can no
    longer find it), then free the pte tables of its range that are empty."""
    with span("free_pgtables"):
        for vma in vmas:
            await anon_vma_unlink(vma)
            await unlink_file_vma(vma)
        for vma in vmas:
            s = max(vma.vm_start, floor) & ~((1 << PMD_SHIFT) - 1)
            keys = tuple(pmd_key(mm, a) for a in range(s, min(vma.vm_end, ceiling), 1 << PMD_SHIFT))
            if not keys:
                continue
            await step("free_pgtables: free_pte_range", writes=keys)
            for a in range(s, min(vma.vm_end, ceiling), 1 << PMD_SHIFT):
                _free_empty_table(mm, a)


def _free_empty_table(mm: MmStruct, address: int) -> None:
    gi = (address >> PGDIR_SHIFT) & _IDX
    ui = (address >> PUD_SHIFT) & _IDX
    mi = (address >> PMD_SHIFT) & _IDX
    pud = mm.pgd.get(gi)
    if pud is None:
        return
    pmd = pud.get(ui)
    if pmd is None:
        return
    t = pmd.get(mi)
    if t is not None and not t:
        del pmd[mi]
        if not pmd:
            del pud[ui]
            if not pud:
                del mm.pgd[gi]


# -------------------------------------------------------------------- fork

FORK_NO_NOTIFY = mmemu.register_mutant(
    "memory:fork-no-notify",
    "copy_page_range write-protects the parent's COW ptes without the "
    "invalidate_range_start/end bracket around the copy",
    caught_as="PteChangeNotNotified (the write protection was never reported to the "
              "notifiers), or SecondaryWriteToReadOnly (a secondary MMU keeps write access "
              "to a page that the parent now shares read-only with the child)",
    doc="copy_page_range has bracketed the copy of a COW vma with "
        "mmu_notifier_invalidate_range_start/end since the first mmu-notifier kernel "
        "(2.6.27, cddb8a5c14aa): 'We need to invalidate the secondary MMU mappings only "
        "when there could be a permission downgrade on the ptes of the parent mm.'  "
        "Without it (a protocol step removed on purpose), ptep_set_wrprotect makes the "
        "parent's pte read-only while a KVM spte or a device TLB entry keeps write access: "
        "the guest's writes land in a page the child now shares, and the parent's next "
        "write COWs away from the page the secondary MMU keeps writing.")


#: coverage events (mmemu.lowlevel.reach) of the paths below
WRPROTECTED_FOR_FORK = "memory: copy_page_range write-protected a COW pte"
#: coverage event: fork copied a migration entry (the page is being migrated)
FORK_COPIED_MIGRATION_ENTRY = "memory: copy_one_pte copied a migration entry"
COW_COPIED = "memory: do_wp_page copied the page (COW)"
SWAPPED_IN = "memory: do_swap_page mapped a page from the swap cache"
SWAPIN_PTE_CHANGED = "memory: do_swap_page found the pte changed (somebody swapped it in first)"
SWAPIN_SLOT_GONE = "memory: do_swap_page found the slot freed and the pte changed (backs out)"
PRIVATE_COPY = "memory: __do_fault mapped a private COW copy of a file page"
#: coverage event: __do_fault found the pte changed under the PTL (another
#: fault of the same pte won) and drops what it prepared
FAULT_PTE_CHANGED = "memory: __do_fault found the pte changed (another fault won): drops its page"
SECONDARY_YOUNG = "memory: a secondary MMU reported the page young (->clear_flush_young)"


def is_cow_mapping(flags: int) -> bool:
    """A private, writable-some-day mapping: its pages are shared copy-on-write."""
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def copy_one_pte(dst_mm: MmStruct, src_mm: MmStruct, vma: VmAreaStruct,
                 address: int) -> None:
    """Step 3 of copy_page_range for one pte (inside the caller's step, both
    PTLs held): a COW pte is write-protected in the parent *and* copied
    read-only; a shared one copied clean; the child's copy is old.  The page
    gains a reference and a mapcount (page_dup_rmap).  A migration entry is
    copied (made a read entry for a COW mapping); a swap entry is copied
    with swap_duplicate."""
    pte = pte_get(src_mm, address)
    assert pte is not None
    if not pte.present:
        entry = pte.swp
        assert entry is not None
        if entry.type == "migration":
            reach(FORK_COPIED_MIGRATION_ENTRY)
            if entry.write and is_cow_mapping(vma.vm_flags):
                # COW mappings require pages in both parent and child to be set to read
                pte = make_migration_entry(entry.page, False) if entry.page is not None else pte
                set_pte_at(src_mm, address, pte)
            # the child's entry carries the page's rss count, as in later
            # kernels' copy_one_pte (2.6.27 forgot it: see zap_pte_range)
            if entry.page is not None:
                if PageAnon(entry.page):
                    dst_mm.anon_rss += 1
                else:
                    dst_mm.file_rss += 1
        else:
            from mmemu.mm.swapfile import swap_duplicate
            swap_duplicate(entry.offset)  # the child's pte holds the slot too
        set_pte_at(dst_mm, address, pte)
        return
    if is_cow_mapping(vma.vm_flags):
        # ptep_set_wrprotect(src_mm, addr, src_pte); pte = pte_wrprotect(pte)
        if pte.write:
            pte = pte.replace(write=False)
            set_pte_at(src_mm, address, pte)
            reach(WRPROTECTED_FOR_FORK)
    child = pte.replace(young=False, dirty=pte.dirty and not vma.vm_flags & VM_SHARED)
    page = pte.page
    if page is not None:
        get_page_locked(page)
        page._mapcount.counter += 1  # page_dup_rmap
        if PageAnon(page):
            dst_mm.anon_rss += 1
        else:
            dst_mm.file_rss += 1
    set_pte_at(dst_mm, address, child)


async def copy_pte_range(dst_mm: MmStruct, src_mm: MmStruct, vma: VmAreaStruct,
                         addr: int, end: int) -> None:
    """Steps 2-4 of copy_page_range: both PTLs (the child's first, the
    parent's nested under it), copy each pte that is not none."""
    await pte_alloc_map(dst_mm, addr)
    dst_ptl, src_ptl = dst_mm.page_table_lock, src_mm.page_table_lock
    with span("copy_pte_range"):
        await spin_lock(dst_ptl, label="2. pte_alloc_map_lock(dst_mm)")
        await spin_lock_nested(src_ptl, SINGLE_DEPTH_NESTING,
                               label="2. spin_lock_nested(src_ptl)")
        for address in populated_ptes(src_mm, addr, end):
            cur = pte_get(src_mm, address)  # stable: we hold the src PTL
            reads: tuple[Hashable, ...] = ()
            writes: tuple[Hashable, ...] = (pte_key(src_mm, address), pte_key(dst_mm, address))
            if cur is not None and cur.present and cur.page is not None:
                writes += (cur.page._count, cur.page._mapcount)
            elif cur is not None and cur.swp is not None and cur.swp.type == "swap":
                from mmemu.mm.swapfile import swap_info
                writes += (swap_info().key(cur.swp.offset),)
            await step(f"3. copy_one_pte({address:#x}): ptep_set_wrprotect, get_page, "
                       f"page_dup_rmap", reads=reads, writes=writes)
            if pte_get(src_mm, address) is not None:
                copy_one_pte(dst_mm, src_mm, vma, address)
        await spin_unlock(src_ptl, label="4. spin_unlock(src_ptl)")
        await spin_unlock(dst_ptl, label="4. pte_unmap_unlock(dst_mm)")


async def copy_page_range(dst_mm: MmStruct, src_mm: MmStruct, vma: VmAreaStruct) -> int:
    """Copy the ptes of ``vma`` (of ``src_mm``) into ``dst_mm`` (fork).

    Nothing to copy for a vma without anonymous pages (no anon_vma, not
    VM_PFNMAP): the child faults the file pages in itself.  A COW vma's
    copy write-protects the parent's ptes, so it is bracketed for the
    secondary MMUs (modern: MMU_NOTIFY_PROTECTION_PAGE)::

      fork (copy_page_range)                   secondary MMU (KVM guest write)
      1. invalidate_range_start(src_mm,        F1. mmu_seq = mmu_notifier_seq
         vma) (KVM: count++, zap the range)    F2. GUP(write): the pte is
      2. lock the child's PTL, then the            writable: a page reference
         parent's (nested)                     F3. mmu_lock; retry if count
      3. per pte: ptep_set_wrprotect (the          != 0 or seq changed
         parent's), a read-only copy for the   F4. install a writable spte;
         child; get_page; page_dup_rmap            unlock; put the page
      4. unlock both PTLs
      5. invalidate_range_end (KVM: seq++, count--)

    There are 2 critical interleavings that matter:
     - F2 before 3 and F3 between 1 and 5: count != 0, the fault waits for
       5 and retries; GUP(write) then finds the pte read-only and breaks
       the COW (do_wp_page): the guest gets the parent's own copy;
     - F2 before 3 and F3 after 5: the seq changed, the same retry.
    Without 1 and 5 (mutant ``memory:fork-no-notify``) a writable
    translation made before 3 (F4, or one the guest had all along)
    survives: the secondary MMU writes a page that the parent's pte maps
    read-only and the child shares.

    Harmless: F2 after 3 (GUP sees the read-only pte and COWs first); F4
    before 1 (1 zaps it).

    Not modelled: hugetlb and nonlinear vmas; modern kernels' eager copy
    of a page that may be DMA-pinned (folio_needs_cow_for_dma: the model
    has no FOLL_PIN); the modern write_protect_seq that lockless GUP-fast
    checks (the model has no GUP-fast).
    """
    if not vma.vm_flags & VM_PFNMAP and vma.anon_vma is None:
        return 0
    start, end = vma.vm_start, vma.vm_end
    notify = is_cow_mapping(vma.vm_flags) and not mmemu.mutant(FORK_NO_NOTIFY)
    with span("copy_page_range"):
        if notify:
            await mmu_notifier.mmu_notifier_invalidate_range_start(
                src_mm, start, end, event=mmu_notifier.MMU_NOTIFY_PROTECTION_PAGE)
        await copy_pte_range(dst_mm, src_mm, vma, start, end)
        if notify:
            await mmu_notifier.mmu_notifier_invalidate_range_end(
                src_mm, start, end, event=mmu_notifier.MMU_NOTIFY_PROTECTION_PAGE)
    return 0


# ---------------------------------------------------------- get_user_pages


async def follow_page(vma: VmAreaStruct, address: int, flags: int) -> Page | None:
    """The page mapped at ``address`` if the pte allows the access (FOLL_WRITE
    needs a writable pte), with a reference taken under the PTL when
    FOLL_GET; None if a fault is needed."""
    mm = vma.vm_mm
    ptl = mm.page_table_lock
    k = pte_key(mm, address)
    await spin_lock(ptl, label="follow_page: pte_offset_map_lock")
    await step("follow_page: pte present?", reads=(k, pmd_key(mm, address)))
    pte = pte_get(mm, address)
    page: Page | None = None
    if pte is not None and pte.present and (pte.write or not flags & FOLL_WRITE):
        page = pte.page
        assert page is not None
        if flags & FOLL_GET:
            await get_page(page, label=f"follow_page: get_page(page{page.pfn})")
        if flags & FOLL_TOUCH:
            await step("follow_page: mark_page_accessed", writes=(page.flags_key,))
            # since idle page tracking (33c3fc71c8cf, 4.3) mark_page_accessed
            # also clears PG_idle: a GUP (a driver's fault) counts as a use
            page.flags = (page.flags | PG_referenced) & ~PG_idle
            if flags & FOLL_WRITE and not pte.dirty:
                page.flags |= PG_dirty
    await spin_unlock(ptl, label="follow_page: pte_unmap_unlock")
    return page


async def get_user_pages(mm: MmStruct, address: int, write: bool = False) -> Page | None:
    """Pin the page at user ``address``: fault it in if needed, then take a
    reference the caller drops with put_page.  None for a bad address or a
    fault error (-EFAULT).  Caller holds ``mm->mmap_sem`` for read."""
    address &= ~(PAGE_SIZE - 1)
    with span("get_user_pages"):
        await step("get_user_pages: find_extend_vma", reads=((mm, "mmap"),))
        vma = find_vma(mm, address)
        if vma is None or vma.vm_start > address:
            return None
        if write and not vma.vm_flags & VM_WRITE:
            return None
        foll = FOLL_GET | FOLL_TOUCH | (FOLL_WRITE if write else 0)
        while True:
            page = await follow_page(vma, address, foll)
            if page is not None:
                return page
            ret = await handle_mm_fault(mm, vma, address, write)
            if ret & VM_FAULT_ERROR:
                return None


async def fault_in(mm: MmStruct, address: int, write: bool = False) -> int:
    """A user access to ``address``: take mmap_sem for read, fault until the
    pte allows the access, release mmap_sem.  Returns the last VM_FAULT_* bits
    (an error stops).  For scenarios and setup code."""
    from mmemu.kernel.locking import down_read, up_read
    address &= ~(PAGE_SIZE - 1)
    await down_read(mm.mmap_sem)
    await step("fault: find_vma", reads=((mm, "mmap"),))
    vma = find_vma(mm, address)
    ret = VM_FAULT_SIGBUS
    # arch/x86/mm/fault.c do_page_fault, good_area: a write to a vma without
    # VM_WRITE is a bad_area (SIGSEGV), never handle_mm_fault -- which would
    # make the pte writable (iommu_sva_handle_iopf checks the same
    # access_flags against vm_flags)
    if vma is not None and vma.vm_start <= address and \
            not (write and not vma.vm_flags & VM_WRITE):
        while True:
            ret = await handle_mm_fault(mm, vma, address, write)
            if ret & VM_FAULT_ERROR:
                break
            await step("fault: retry the access", reads=(pte_key(mm, address),))
            pte = pte_get(mm, address)
            if pte is not None and pte.present and (pte.write or not write):
                break
    await up_read(mm.mmap_sem)
    return ret


def page_table_dump(mm: MmStruct) -> str:
    lines = [f"{mm.__mmemu_name__} page table:"]
    for a in populated_ptes(mm, 0, 1 << 48):
        lines.append(f"  {a:#x}: {pte_get(mm, a)!r}")
    return "\n".join(lines)


__all__ = [
    "CLEAR_YOUNG_NO_NOTIFY", "COW_NO_NOTIFY", "YOUNG_NO_NOTIFY", "FAULT_UNLOCKED", "FORK_NO_NOTIFY", "FOLL_GET", "FOLL_TOUCH", "FOLL_WRITE", "FreePageInPageTable",
    "MappedTruncatedPage", "MmuGather", "Pte", "SwpEntry", "VM_FAULT_ERROR",
    "VM_FAULT_SIGBUS", "VmaChangedUnderFault", "ZapDetails", "do_anonymous_page", "fault_in", "filemap_fault",
    "copy_page_range", "copy_pte_range", "follow_page", "free_pgtables", "is_cow_mapping", "get_user_pages", "handle_mm_fault", "is_migration_entry",
    "make_migration_entry", "mk_pte", "pte_clear", "pte_get", "pte_key", "ptes_mapping",
    "ptep_clear_flush_young_notify", "ptep_clear_young_notify", "set_pte_at", "set_pte_at_notify", "tlb_finish_mmu", "tlb_gather_mmu", "unmap_mapping_range", "unmap_vmas",
    "zap_page_range",
]
