"""The world a workload runs in: one process (or two), its vmas and pages,
one file, the attached drivers.

Built afresh for every execution by the scenario's own code (no steps), with
the kernel model's own functions:

- the kernel is booted with the checkers (``boot_checked``) and the
  workload's notifier API generation;
- the process (``mm1``) gets the workload's vmas in address order, back to
  back from ``TASK_UNMAPPED_BASE``: anonymous (``a``), MAP_SHARED of the
  file (``s``) and MAP_PRIVATE of the file (``p``); every file vma maps the
  file from offset 0, so a shared and a private vma share pagecache pages;
  the file is as long as the longest file vma;
- every page is faulted in (anonymous pages written, file pages read: a
  private vma maps the pagecache page read-only until a write COWs it),
  made old (accessed bit clear) and put on the LRU, so that reclaim,
  aging and migration have something to take -- except the pages of a
  *fresh* vma (kind in capitals), which the workload touches first;
- a driver named with ``@2`` (``drivers=kvm,kvm@2``) is attached to a
  *second process* (``mm2``) instead: it maps the same vmas at the same
  addresses (its file vmas map the same file, so the two processes share
  the pagecache pages and the file's ``i_mmap``; its anonymous pages are
  its own), faulted in the same way.  That driver's operations act on
  ``mm2`` (its faults, its registration); every other operation acts on
  the first process (``mm1``), and the kernel threads' page picks are
  ``mm1``'s -- a file page they take is also mapped by ``mm2``, so their
  rmap walks reach both processes and both drivers.  Two registrations on
  two mms that map one file race on the file's ``AS_MM_ALL_LOCKS`` mark
  (mm_take_all_locks' ``mm_all_locks_mutex``).
- each driver is instantiated (a second instance of the same class is
  renamed ``kvm#2``) and attached to its process, in order.  A re-attach
  after a detach attaches a *fresh* instance (a new VM, a new device bound
  to the process) under the same name; the detached one is kept and checked
  at the end like the others.

Pages are numbered across the vmas from 0; page ``p`` is at
``world.addr(p)``.

The world also stands for the *users* of the drivers and of the process,
which the kernel model does not have: a driver operation holds the driver's
device file (``file``, an rwsem taken for read; attach and detach take it
for write, as ``release`` of a file cannot run under an ioctl that uses it)
and, when it touches the mm, a reference on ``mm_users``
(``mmget_not_zero``, as HMM, GRU and the IOMMU fault handlers take it); a
process operation holds ``mm_users`` the same way.  ``exit`` drops the
process's own reference: the last ``mmput`` runs ``exit_mmap``.
"""

from __future__ import annotations

from typing import Any

from mmemu.check import boot_checked
from mmemu.driver import Driver, load_driver
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import reach, step
from mmemu.kernel.atomic import atomic_inc_not_zero
from mmemu.kernel.locking import RwSemaphore, down_read, down_write, up_read, up_write
from mmemu.mm.filemap import AddressSpace, slot_key
from mmemu.mm.ksm import ksm_make_stable
from mmemu.mm.memory import fault_in, i_size_pages, pte_get, pte_key, set_pte_at
from mmemu.mm.mmap import (
    PAGE_SIZE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    do_mmap,
    find_vma,
    mm_alloc,
    mmput,
)
from mmemu.mm.page import Page, get_page
from mmemu.mm.vmscan import PageLRU, lru_cache_add
from mmemu.workload._text import Workload, driver_process, vma_fresh


class IncoherentWorld(InvariantViolation):
    """At the end of a workload, a translation outlives the detach of its
    driver: no invalidation will ever reach it."""


class MappedBeyondEof(InvariantViolation):
    """At the end of a workload, a process still maps a page of the file
    beyond the file's end: a truncate must unmap every page it cuts off --
    the pagecache pages and the private copies of them (a COW in a
    MAP_PRIVATE vma) -- in every mm, so that a later touch gets SIGBUS."""


class LostFromLru(InvariantViolation):
    """At the end of a workload, a page that was on the LRU is still in use
    but on no LRU list: reclaim and migration can never take it again."""


class World:
    """The state one execution of a workload acts on (see the module docstring)."""

    def __init__(self, sim: Any, workload: Workload, drivers: tuple[str, ...],
                 api: str) -> None:
        self.sim = sim
        self.workload = workload
        self.driver_specs = drivers
        self.api = api
        self.kernel: Any = None
        self.mm: MmStruct = None  # type: ignore[assignment]
        #: the processes' mms: [mm1] or [mm1, mm2] (drivers named ``...@2``)
        self.mms: list[MmStruct] = []
        self.mapping: AddressSpace = None  # type: ignore[assignment]
        self.base = 0
        self.drivers: list[Driver] = []
        self.files: list[RwSemaphore] = []
        #: is driver i attached (its notifier registered)?  Written under its
        #: file rwsem for write, read under it for read.
        self.attached: list[bool] = []
        #: per driver, the notifiers of extra mmu_notifier_get references
        #: (get/put operations), under the driver's file rwsem for write
        self.extra_mns: list[list[Any]] = []
        #: drivers detached and replaced by a re-attach (checked at the end too)
        self.retired: list[Driver] = []
        #: mms created by fork
        self.children: list[MmStruct] = []
        #: other notifiers registered on mm1 (userptr operations), kept alive
        self.notifiers: list[Any] = []
        #: page number -> the KSM page there (built for ksm(p,q) operations)
        self.ksm_pages: dict[int, Page] = {}
        #: the pages the setup put on the LRU, with their allocation number
        #: (``Page.gen``: a page freed and allocated again is another page)
        self.lru_pages: list[tuple[Page, int]] = []

    # ------------------------------------------------------------ building

    async def build(self) -> None:
        wl = self.workload
        file_pages = max([n for kind, n in wl.vmas if kind.lower() in "sp"] or [1])
        nprocs = 1 + any(driver_process(d)[1] for d in self.driver_specs)
        npages = nprocs * 2 * (wl.npages + file_pages) + 8 + 4 * len(self.driver_specs)
        kernel = self.kernel = boot_checked(self.sim, npages=npages, api=self.api)
        self.mapping = AddressSpace(kernel, "file", i_size=file_pages * PAGE_SIZE)
        for proc in range(nprocs):
            mm = mm_alloc(kernel)
            self.mms.append(mm)
            await self._map(mm, first=proc == 0)
        self.mm = self.mms[0]
        mm = self.mm
        # the KSM pages that ksm(p,q) operations merge into: ksmd's stable
        # tree found page q first (write-protected, PageKsm); the world keeps
        # a reference, standing for the stable tree's hold on its page
        # (get_ksm_page's revalidation is not modelled)
        for q in sorted({op.args[1] for ops in wl.cpus for op in ops if op.name == "ksm"}):
            assert isinstance(q, int)
            addr = self.addr(q)
            stable_vma = find_vma(mm, addr)
            pte = pte_get(mm, addr)
            assert stable_vma is not None and pte is not None and pte.page is not None
            ret = await ksm_make_stable(stable_vma, pte.page)
            self.sim.check(ret == 0, f"ksm_make_stable(page at {q}) returned {ret} in setup")
            await get_page(pte.page, label=f"the stable tree's page {q}")
            self.ksm_pages[q] = pte.page
            page_state = kernel.data.get("page_state")
            if page_state is not None:
                page_state.expect_held(pte.page)
        seen: dict[str, int] = {}
        for i, spec in enumerate(self.driver_specs):
            d = self.new_driver(i)
            seen[d.name] = seen.get(d.name, 0) + 1
            if seen[d.name] > 1:
                d.rename(f"{d.name}#{seen[d.name]}")
            ret = await d.attach(kernel, self.mm_of(i))
            self.sim.check(ret == 0, f"{d.name}: attach returned {ret} in the world's setup")
            self.drivers.append(d)
            self.files.append(RwSemaphore(f"{d.name}->file", "workload device file"))
            self.attached.append(True)
            self.extra_mns.append([])

    async def _map(self, mm: MmStruct, *, first: bool) -> None:
        """The workload's vmas in ``mm`` (at the same addresses in every
        process), their pages faulted in, old and on the LRU (but a fresh
        vma's)."""
        wl = self.workload
        await down_write(mm.mmap_sem)
        for k, (kind, n) in enumerate(wl.vmas):
            flags = VM_READ | VM_WRITE
            if kind.lower() == "a":
                vma = await do_mmap(mm, 0, n * PAGE_SIZE, flags)
            else:
                if kind.lower() == "s":
                    flags |= VM_SHARED
                vma = await do_mmap(mm, 0, n * PAGE_SIZE, flags, file=self.mapping, pgoff=0)
            if k == 0:
                if first:
                    self.base = vma.vm_start
                assert vma.vm_start == self.base, "the processes' layouts differ"
        await up_write(mm.mmap_sem)
        for p in range(wl.npages):
            if vma_fresh(wl.vmas, p):
                continue  # a fresh vma: its first touch is the workload's
            addr = self.addr(p)
            await fault_in(mm, addr, write=self.kind(p) == "a")
            pte = pte_get(mm, addr)
            assert pte is not None and pte.page is not None
            set_pte_at(mm, addr, pte.replace(young=False))
            if not PageLRU(pte.page):
                await lru_cache_add(pte.page)
                self.lru_pages.append((pte.page, pte.page.gen))

    def mm_of(self, i: int) -> MmStruct:
        """The mm driver ``i`` is attached to (``@2``: the second process)."""
        return self.mms[driver_process(self.driver_specs[i])[1]]

    def new_driver(self, i: int) -> Driver:
        """A fresh instance of driver ``i`` (the world's setup, and a
        re-attach: a new VM or a new device bound to the process, with the
        first instance's report name)."""
        d = load_driver(driver_process(self.driver_specs[i])[0])()
        if i < len(self.drivers) and d.name != self.drivers[i].name:
            d.rename(self.drivers[i].name)
        # callbacks after a detach are checked (CallbackAfterDetach): the
        # explorer must see them end (one step more per callback)
        d._watch_detach = d.detach_waits_for_callbacks(self.api) and any(
            op.name in ("detach", "remove") for ops in self.workload.cpus for op in ops)
        return d

    # ------------------------------------------------------------- helpers

    def addr(self, page: int) -> int:
        return self.base + page * PAGE_SIZE

    def kind(self, page: int) -> str:
        return self.workload.page_kind(page)

    def ran(self, what: str) -> None:
        """A coverage event: the operation ran (it was not skipped)."""
        reach(f"workload: {what}")

    async def mmget_not_zero(self, who: str, mm: MmStruct | None = None) -> bool:
        """A user of the process's mm (or of ``mm``) takes a reference,
        unless it exited."""
        mm = mm or self.mm
        return await atomic_inc_not_zero(mm.mm_users,
                                         label=f"{who}: mmget_not_zero({mm.__mmemu_name__})")

    async def mmput(self, mm: MmStruct | None = None) -> None:
        await mmput(mm or self.mm)

    async def file_get(self, d: int, who: str, *, write: bool = False) -> None:
        label = f"{who}: {self.drivers[d].name} device file ({'release' if write else 'in use'})"
        if write:
            await down_write(self.files[d], label=label)
        else:
            await down_read(self.files[d], label=label)

    async def file_put(self, d: int, who: str, *, write: bool = False) -> None:
        label = f"{who}: {self.drivers[d].name} device file done"
        if write:
            await up_write(self.files[d], label=label)
        else:
            await up_read(self.files[d], label=label)

    async def page_at(self, p: int, who: str) -> Page | None:
        """What an LRU scan would find at page ``p`` of the process now: the
        page mapped there, else -- for a page of a file vma -- the file's
        pagecache page at that index (unmapped by munmap, madvise or
        reclaim, still cached: what lookups and faults race with), or None.
        Kernel threads pick pages this way."""
        mm = self.mm
        addr = self.addr(p)
        await step(f"{who}: the page at {addr:#x}", reads=(pte_key(mm, addr),))
        pte = pte_get(mm, addr)
        if pte is not None and pte.present:
            return pte.page
        index = self.file_index(p)
        if index is None:
            return None
        await step(f"{who}: the pagecache page at file[{index}]",
                   reads=(slot_key(self.mapping, index),))
        return self.mapping.page_tree.get(index)

    def file_index(self, p: int) -> int | None:
        """The file index page ``p`` maps (every file vma maps the file from
        offset 0), or None for an anonymous page."""
        first = 0
        for kind, n in self.workload.vmas:
            if p < first + n:
                return p - first if kind.lower() in "sp" else None
            first += n
        return None

    # -------------------------------------------------------- the end

    def check_truncated(self) -> None:
        """No process maps the file beyond its end (``MappedBeyondEof``).

        vmtruncate sets i_size first and then unmaps (unmap_mapping_range
        with even_cows, before and -- since d00806b183152af6d2 (2.6.27) --
        after truncate_inode_pages), and a fault rechecks i_size under the
        page lock: once the workload is over, whatever the schedule, no pte
        of any mm maps a file page at or after the last truncate's end.
        The pagecache pages are the page-state checker's
        (``MappedTruncatedPage``); this also covers the private copies,
        which are anonymous pages the file no longer knows."""
        eof = i_size_pages(self.mapping)
        for mm in self.mms + self.children:
            vma = mm.mmap
            while vma is not None:
                if vma.mapping is self.mapping:
                    for addr in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
                        index = vma.vm_pgoff + (addr - vma.vm_start) // PAGE_SIZE
                        pte = pte_get(mm, addr)
                        if index >= eof and pte is not None and pte.present \
                                and pte.page is not None:
                            raise MappedBeyondEof(
                                f"{mm.__mmemu_name__} still maps page{pte.page.pfn} at "
                                f"{addr:#x} (file[{index}], "
                                f"{'the pagecache page' if pte.page.mapping is self.mapping else 'a private copy'}) "
                                f"although the file now ends at {eof} page(s)",
                                details=pte.page.dump())
                vma = vma.vm_next

    def check_lru(self) -> None:
        """A page the setup put on the LRU is, at the end, either free
        (allocated again or not) or still on the LRU (``LostFromLru``).

        In the model only isolate_lru_page takes a page off the LRU (with a
        reference; reclaim, aging, migration, page_idle do not otherwise),
        and its owner either frees the page (reclaim, a successful
        migration: the last put clears PG_lru) or puts it back
        (putback_lru_page sets PG_lru, then drops the isolation reference).
        Once every operation has ended nobody holds a page isolated, so a
        page in use off the LRU was lost to reclaim for good.  Pages the
        workload allocated (faults, COW copies, swap-ins) are left out: the
        model's faults do not put new pages on the LRU (lru_cache_add of a
        new page is not modelled)."""
        for page, gen in self.lru_pages:
            if page.free or page.gen != gen or PageLRU(page):
                continue
            raise LostFromLru(
                f"page{page.pfn} is in use (count {page._count.counter}) but on no LRU list "
                f"after every operation ended: whoever isolated it did not put it back "
                f"(putback_lru_page must SetPageLRU before dropping its reference); reclaim "
                f"and migration can never take it again", details=page.dump())

    def check_detached(self) -> None:
        """A driver the workload detached keeps no translation: no
        invalidation will ever reach it again.

        The coherence of every *registered* driver's caches with the CPU
        page tables (and the emptiness of a driver that exited or
        unregistered) is the notifier checker's end-of-run rule
        (mmemu.check.notifier, IncoherentTranslation).  What only the world
        knows is which drivers its operations detached -- including through
        ``mmu_notifier_put`` and ``mmu_interval_notifier_remove``, which the
        checker does not see as an unregister."""
        gone = [d for i, d in enumerate(self.drivers) if not self.attached[i]]
        for d in gone + self.retired:
            for tlb in d.tlbs:
                for key in tlb.keys():
                    e = tlb.entries[key]
                    raise IncoherentWorld(
                        f"{tlb.describe(key)} still maps page{e.page.pfn} (installed at "
                        f"{e.site}) after driver {d.name} was detached: no invalidation "
                        f"will ever reach it", details=e.page.dump())


__all__ = ["IncoherentWorld", "LostFromLru", "MappedBeyondEof", "World"]
