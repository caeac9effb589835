"""Process address spaces: the mm_struct, its vmas, mmap and munmap, exit.

Emulates: mm/mmap.c, kernel/fork.c (mm_alloc, mmput), include/linux/mm_types.h,
include/linux/rmap.h (struct anon_vma) (2.6.27)

An ``MmStruct`` owns:

- ``mmap_sem`` (an rw_semaphore): faults take it for read, mmap/munmap (and
  ``mm_take_all_locks``) for write;
- ``page_table_lock``: the one page-table lock (PTL) of this mm; every pte is
  read and written under it (the kernel's split PTLs are not modelled);
- ``mmap``: the first vma of the list ordered by address (``vma.vm_next``);
- ``pgd``: the root of the four-level page table (mmemu.mm.memory);
- ``mmu_notifier_mm``: None until a notifier registers (mmemu.mm.mmu_notifier);
- ``mm_users``: an ``atomic_t``; ``mmput`` runs ``exit_mmap`` at zero.

A ``VmAreaStruct`` covers [vm_start, vm_end) with ``vm_flags``; a file vma
has ``vm_file.f_mapping`` (the AddressSpace of mmemu.mm.filemap) and sits on
that mapping's ``i_mmap`` list; an anonymous (or privately written) vma has an
``anon_vma`` and sits on its ``head`` list.  Several vmas (of one mm or of
several) may share one ``AnonVma`` and one mapping: that is what
``mm_take_all_locks`` must de-duplicate.

Step keys: a vma list change is a write of ``(mm, "mmap")``; an anon_vma's vma
list is ``(anon_vma, "head")``; a mapping's vma list is ``(mapping, "i_mmap")``.
Building state in a scenario's setup code is the same calls (steps are no-ops
there): ``mm = mm_alloc(kernel)``, ``vma = await do_mmap(mm, 0, 4 * PAGE_SIZE,
VM_READ | VM_WRITE)``, ``await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_SHARED,
file=mapping, pgoff=0)``.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from mmemu.engine._errors import InvariantViolation, ModelError
from mmemu.engine._execution import _sim_or_none, current_simulation, reach, span, step
from mmemu.kernel.atomic import atomic_dec_and_test, atomic_inc, atomic_inc_not_zero, atomic_t
from mmemu.kernel.locking import (
    SETUP,
    GuardedList,
    RwSemaphore,
    SpinLock,
    guarded_by,
    spin_lock,
    spin_unlock,
)
from mmemu.mm import mmu_notifier

if TYPE_CHECKING:
    from mmemu.mm.init import Kernel

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
#: top of the user address space (x86-64, 47 bits)
TASK_SIZE = 1 << 47
#: the syscalls' lengths and ends are C ``unsigned long`` / ``size_t``: they
#: wrap at 2**64, which is what madvise's and mprotect's overflow checks test
ULONG_MAX = (1 << 64) - 1
#: where get_unmapped_area starts looking (bottom-up)
TASK_UNMAPPED_BASE = 0x10000000

EINTR = 4
ENOMEM = 12
EACCES = 13
EINVAL = 22
EFAULT = 14

# vma->vm_flags (include/linux/mm.h)
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_PFNMAP = 0x00000400
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_DONTCOPY = 0x00020000
VM_RESERVED = 0x00080000

_VM_FLAG_NAMES = [(VM_READ, "r"), (VM_WRITE, "w"), (VM_EXEC, "x"), (VM_SHARED, "s"),
                  (VM_LOCKED, "L"), (VM_IO, "io"), (VM_PFNMAP, "pfn")]


class BadVma(InvariantViolation):
    """A vma or mm in a state the kernel never allows (BUG_ON in mm/mmap.c)."""


class AnonVma:
    """``struct anon_vma``: the vmas that may map one set of anonymous pages.

    ``head`` is the list of vmas (``list_head head`` threaded through
    ``vma->anon_vma_node``); read and written only under ``lock``.

    ``head_next_lsb`` is **the LSB of anon_vma->head.next**: mm_take_all_locks()
    sets it *after* taking ``lock`` to mark the anon_vma as already locked (so
    that a second vma sharing it does not take the lock again), and
    mm_drop_all_locks() clears it *before* unlocking.  The bit itself is
    serialised by ``mm_all_locks_mutex``; anyone else walking ``head`` holds
    ``lock`` and so never sees it set.  Key: ``(anon_vma, "head")``.
    """

    __slots__ = ("lock", "head", "head_next_lsb", "__mmemu_name__", "__weakref__")

    def __init__(self, name: str, *, sleeping: bool = False) -> None:
        self.__mmemu_name__ = name
        self.lock = SpinLock(f"{name}->lock", "anon_vma->lock")
        # a mutex since 2b575eb64f7a (v3.0), anon_vma->rwsem since
        # 5a505085f043 (v3.8): a blockable range_start under it may sleep
        self.lock.sleeps = sleeping
        self.head: list[VmAreaStruct] = GuardedList(self, "head")
        self.head_next_lsb = False

    def __repr__(self) -> str:
        return f"<AnonVma {self.__mmemu_name__} vmas={len(self.head)}>"


class File:
    """``struct file``: only what mm needs (``f_mapping``)."""

    __slots__ = ("f_mapping", "__mmemu_name__")

    def __init__(self, mapping: Any) -> None:
        self.f_mapping = mapping
        self.__mmemu_name__ = f"file({getattr(mapping, '__mmemu_name__', 'mapping')})"


class VmAreaStruct:
    """``struct vm_area_struct``: [vm_start, vm_end) of one mm.

    ``vm_pgoff`` is the file offset (in pages) of ``vm_start`` for a file vma,
    and ``vm_start >> PAGE_SHIFT`` for an anonymous one, so that
    ``linear_page_index`` works for both.
    """

    __slots__ = ("vm_mm", "vm_start", "vm_end", "vm_pgoff", "vm_flags", "vm_file",
                 "anon_vma", "vm_next", "__mmemu_name__")

    def __init__(self, mm: MmStruct, start: int, end: int, flags: int, pgoff: int,
                 file: File | None) -> None:
        self.vm_mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.vm_pgoff = pgoff
        self.vm_file = file
        self.anon_vma: AnonVma | None = None
        self.vm_next: VmAreaStruct | None = None
        self.__mmemu_name__ = f"{mm.__mmemu_name__}.vma@{start:#x}"

    @property
    def mapping(self) -> Any:
        """``vma->vm_file->f_mapping``, or None for an anonymous vma."""
        f = self.vm_file
        return f.f_mapping if f is not None else None

    def flag_names(self) -> str:
        return "".join(n for bit, n in _VM_FLAG_NAMES if self.vm_flags & bit) or "-"

    def __repr__(self) -> str:
        return (f"<vma {self.__mmemu_name__} [{self.vm_start:#x}-{self.vm_end:#x}) "
                f"{self.flag_names()} pgoff={self.vm_pgoff}>")


class MmStruct:
    """``struct mm_struct``."""

    __slots__ = ("kernel", "mmap_sem", "page_table_lock", "mmap", "map_count", "pgd",
                 "mm_users", "mm_count", "mmu_notifier_mm", "free_area_cache", "_starts",
                 "_vmas", "anon_rss", "file_rss", "dead", "__mmemu_name__", "__weakref__")

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.__mmemu_name__ = name
        self.mmap_sem = RwSemaphore(f"{name}->mmap_sem", "mm->mmap_sem")
        self.page_table_lock = SpinLock(f"{name}->page_table_lock", "mm->page_table_lock")
        self.mmap: VmAreaStruct | None = None
        self.map_count = 0
        #: pgd index -> pud table (dict) -> pmd table (dict) -> pte table (dict)
        self.pgd: dict[int, Any] = {}
        self.mm_users = atomic_t(1, f"{name}->mm_users")
        self.mm_count = atomic_t(1, f"{name}->mm_count")
        #: set by mmu_notifier_register (mmemu.mm.mmu_notifier); None: no notifiers
        self.mmu_notifier_mm: Any = None
        self.free_area_cache = TASK_UNMAPPED_BASE
        # the vma list again, as sorted arrays (the kernel's rb-tree): find_vma in O(log n)
        self._starts: list[int] = []
        self._vmas: list[VmAreaStruct] = []
        self.anon_rss = 0
        self.file_rss = 0
        self.dead = False

    def __repr__(self) -> str:
        return f"<MmStruct {self.__mmemu_name__} vmas={self.map_count}>"

    def vmas(self) -> list[VmAreaStruct]:
        """The vmas in address order (a copy: for setup code, checks and reports)."""
        return list(self._vmas)


# Which lock guards which field (mmemu.check.lockset holds every declared
# access to it).  rmap.c: "anon_vma->lock ... serialize access to the list";
# the vma list and tree are changed under mmap_sem for write and read under
# it; vma->anon_vma is set under page_table_lock (anon_vma_prepare: read
# locklessly by faults, which is why only its writers are held to the lock).
guarded_by(AnonVma, "head", lambda av: av.lock, reads_also="mm_all_locks_mutex",
           # the LSB mark: set and cleared under anon_vma->lock by
           # vm_lock_anon_vma / vm_unlock_anon_vma
           stores=("head_next_lsb",), why="anon_vma->lock protects the vma list")
guarded_by(MmStruct, "mmap",
           # exit_mmap and the last mmput run with mm_users at 0: nobody else
           # may use the mm, and 2.6.27's exit_mmap takes no mmap_sem
           lambda mm: mm.mmap_sem if mm.mm_users.counter > 0 else None,
           stores=("mmap", "map_count"), why="mmap_sem protects the vma list")
guarded_by(VmAreaStruct, "anon_vma", lambda vma: vma.vm_mm.page_table_lock, reads=False,
           why="anon_vma_prepare sets vma->anon_vma under page_table_lock")


# ------------------------------------------------------------------ helpers


def mm_alloc(kernel: Kernel) -> MmStruct:
    """A new, empty mm (fork.c's mm_alloc + mm_init), registered in ``kernel.mms``."""
    from mmemu.mm import memory
    mm = MmStruct(kernel, f"mm{len(kernel.mms) + 1}")
    kernel.mms.append(mm)
    memory.install_page_table_checks(kernel)
    return mm


def _assert_mmap_sem_write(mm: MmStruct, what: str) -> None:
    """The caller must hold ``mm->mmap_sem`` for write (setup code counts)."""
    sim = current_simulation()
    me = sim.running if sim.running is not None else SETUP
    if mm.mmap_sem.writer is not me:
        sim.fail(BadVma(f"{what} without {mm.mmap_sem.name} held for write",
                        details=repr(mm)))


def find_vma(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """The first vma with ``vm_end > addr`` (it may start above ``addr``).
    Caller holds ``mmap_sem`` (either mode)."""
    i = bisect.bisect_right(mm._starts, addr) - 1
    if i >= 0 and mm._vmas[i].vm_end > addr:
        return mm._vmas[i]
    if i + 1 < len(mm._vmas):
        return mm._vmas[i + 1]
    return None


def find_vma_intersection(mm: MmStruct, start: int, end: int) -> VmAreaStruct | None:
    vma = find_vma(mm, start)
    if vma is not None and vma.vm_start < end:
        return vma
    return None


def linear_page_index(vma: VmAreaStruct, address: int) -> int:
    return ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


def vma_address(page: Any, vma: VmAreaStruct) -> int:
    """The user address of ``page`` in ``vma``, or -EFAULT (rmap.c)."""
    address: int = vma.vm_start + ((int(page.index) - vma.vm_pgoff) << PAGE_SHIFT)
    if address < vma.vm_start or address >= vma.vm_end:
        return -EFAULT
    return address


def get_unmapped_area(mm: MmStruct, length: int) -> int:
    """Bottom-up first fit above TASK_UNMAPPED_BASE (arch_get_unmapped_area)."""
    addr = max(mm.free_area_cache, TASK_UNMAPPED_BASE)
    while True:
        vma = find_vma(mm, addr)
        if vma is None or addr + length <= vma.vm_start:
            if addr + length > TASK_SIZE:
                return -ENOMEM
            return addr
        addr = vma.vm_end


def _link_list(mm: MmStruct, vma: VmAreaStruct) -> None:
    """__vma_link_list + the rb-tree insert."""
    i = bisect.bisect_left(mm._starts, vma.vm_start)
    prev = mm._vmas[i - 1] if i > 0 else None
    nxt = mm._vmas[i] if i < len(mm._vmas) else None
    if prev is not None and prev.vm_end > vma.vm_start or nxt is not None and nxt.vm_start < vma.vm_end:
        raise BadVma(f"vma [{vma.vm_start:#x}-{vma.vm_end:#x}) overlaps another in "
                     f"{mm.__mmemu_name__}", details=f"{prev!r}\n{nxt!r}")
    mm._starts.insert(i, vma.vm_start)
    mm._vmas.insert(i, vma)
    vma.vm_next = nxt
    if prev is None:
        mm.mmap = vma
    else:
        prev.vm_next = vma
    mm.map_count += 1


def _unlink_list(mm: MmStruct, vma: VmAreaStruct) -> None:
    i = bisect.bisect_left(mm._starts, vma.vm_start)
    if i >= len(mm._vmas) or mm._vmas[i] is not vma:
        raise BadVma(f"{vma!r} is not on {mm.__mmemu_name__}'s vma list")
    del mm._starts[i]
    del mm._vmas[i]
    if i == 0:
        mm.mmap = vma.vm_next
    else:
        mm._vmas[i - 1].vm_next = vma.vm_next
    vma.vm_next = None
    mm.map_count -= 1


async def __vma_link_file(vma: VmAreaStruct) -> None:
    """Put a file vma on its mapping's i_mmap list, under ``i_mmap_lock``."""
    mapping = vma.mapping
    if mapping is None:
        return
    await spin_lock(mapping.i_mmap_lock, label="vma_link: spin_lock(i_mmap_lock)")
    await step("vma_link: i_mmap insert", writes=((mapping, "i_mmap"),))
    mapping.i_mmap.append(vma)
    await spin_unlock(mapping.i_mmap_lock, label="vma_link: spin_unlock(i_mmap_lock)")


async def unlink_file_vma(vma: VmAreaStruct) -> None:
    """Take a file vma off its mapping's i_mmap list, under ``i_mmap_lock``."""
    mapping = vma.mapping
    if mapping is None:
        return
    await spin_lock(mapping.i_mmap_lock, label="unlink_file_vma: spin_lock(i_mmap_lock)")
    await step("unlink_file_vma: i_mmap remove", writes=((mapping, "i_mmap"),))
    _remove_identity(mapping.i_mmap, vma)
    await spin_unlock(mapping.i_mmap_lock, label="unlink_file_vma: spin_unlock(i_mmap_lock)")


def _remove_identity(lst: list[Any], obj: Any) -> None:
    for k, x in enumerate(lst):
        if x is obj:
            del lst[k]
            return
    raise BadVma(f"{obj!r} is not on the list it should be on")


def anon_vma_alloc(kernel: Kernel) -> AnonVma:
    n = kernel.data.get("anon_vma_seq", 0) + 1
    kernel.data["anon_vma_seq"] = n
    return AnonVma(f"anon_vma{n}", sleeping=kernel.api == "modern")


def find_mergeable_anon_vma(vma: VmAreaStruct) -> AnonVma | None:
    """An adjacent vma's anon_vma, if the two could be merged (same flags,
    contiguous, both anonymous): sharing it keeps one anon_vma per region."""
    mm = vma.vm_mm
    i = bisect.bisect_left(mm._starts, vma.vm_start)
    for j in (i - 1, i + 1):
        if 0 <= j < len(mm._vmas):
            near = mm._vmas[j]
            if (near.anon_vma is not None and near.vm_file is None and vma.vm_file is None
                    and near.vm_flags == vma.vm_flags
                    and (near.vm_end == vma.vm_start or vma.vm_end == near.vm_start)):
                return near.anon_vma
    return None


async def anon_vma_prepare(vma: VmAreaStruct) -> AnonVma:
    """Give ``vma`` an anon_vma before its first anonymous page (rmap.c).

    Caller holds ``mmap_sem`` for read (a fault) or write.  Two faults on one
    vma may race here: the anon_vma is installed under ``page_table_lock``
    and the loser frees its own.  Lock order: anon_vma->lock, then
    page_table_lock.
    """
    av = vma.anon_vma
    if av is not None:
        return av
    mm = vma.vm_mm
    with span("anon_vma_prepare"):
        anon_vma = find_mergeable_anon_vma(vma)
        locked = None
        if anon_vma is not None:
            locked = anon_vma
            await spin_lock(anon_vma.lock, label="anon_vma_prepare: spin_lock(anon_vma->lock)")
        else:
            anon_vma = anon_vma_alloc(mm.kernel)
        await spin_lock(mm.page_table_lock, label="anon_vma_prepare: spin_lock(page_table_lock)")
        await step("anon_vma_prepare: vma->anon_vma = anon_vma",
                   writes=((vma, "anon_vma"), (anon_vma, "head")))
        if vma.anon_vma is None:
            if locked is not None:
                anon_vma_head_check(anon_vma)
            vma.anon_vma = anon_vma
            anon_vma.head.append(vma)
        await spin_unlock(mm.page_table_lock, label="anon_vma_prepare: spin_unlock(page_table_lock)")
        if locked is not None:
            await spin_unlock(locked.lock, label="anon_vma_prepare: spin_unlock(anon_vma->lock)")
        return vma.anon_vma


async def anon_vma_link(vma: VmAreaStruct, anon_vma: AnonVma) -> None:
    """Put ``vma`` on ``anon_vma``'s list (fork, split_vma)."""
    await spin_lock(anon_vma.lock, label="anon_vma_link: spin_lock(anon_vma->lock)")
    await step("anon_vma_link: list_add", writes=((anon_vma, "head"), (vma, "anon_vma")))
    anon_vma_head_check(anon_vma)
    vma.anon_vma = anon_vma
    anon_vma.head.append(vma)
    await spin_unlock(anon_vma.lock, label="anon_vma_link: spin_unlock(anon_vma->lock)")


async def anon_vma_unlink(vma: VmAreaStruct) -> None:
    """Take ``vma`` off its anon_vma's list; the anon_vma goes when empty."""
    anon_vma = vma.anon_vma
    if anon_vma is None:
        return
    await spin_lock(anon_vma.lock, label="anon_vma_unlink: spin_lock(anon_vma->lock)")
    await step("anon_vma_unlink: list_del", writes=((anon_vma, "head"),))
    anon_vma_head_check(anon_vma)
    _remove_identity(anon_vma.head, vma)
    await spin_unlock(anon_vma.lock, label="anon_vma_unlink: spin_unlock(anon_vma->lock)")


# ------------------------------------------------------------- mmap, munmap


async def mmap_region(mm: MmStruct, addr: int, length: int, vm_flags: int, *,
                      file: Any = None, pgoff: int | None = None,
                      anon_vma: AnonVma | None = None) -> VmAreaStruct:
    """Create the vma [addr, addr + length) and link it (mm list, i_mmap).

    Caller holds ``mmap_sem`` for write.  ``file`` is a File or an
    AddressSpace; ``anon_vma`` (optional) shares an existing anon_vma with the
    new vma at once, as fork or a vma split does.
    """
    _assert_mmap_sem_write(mm, "mmap_region")
    if addr & ~PAGE_MASK or length <= 0 or length & ~PAGE_MASK:
        raise ModelError(f"'addr' and 'length' must be page-aligned and positive "
                         f"(got {addr:#x}, {length:#x})")
    if file is not None and not isinstance(file, File):
        file = File(file)
    if pgoff is None:
        pgoff = 0 if file is not None else addr >> PAGE_SHIFT
    vma = VmAreaStruct(mm, addr, addr + length, vm_flags, pgoff, file)
    await step("mmap_region: vma_link", writes=((mm, "mmap"),))
    _link_list(mm, vma)
    if addr + length > mm.free_area_cache:
        mm.free_area_cache = addr + length
    await __vma_link_file(vma)
    if anon_vma is not None:
        await anon_vma_link(vma, anon_vma)
    return vma


async def do_mmap(mm: MmStruct, addr: int, length: int, vm_flags: int, *,
                  file: Any = None, pgoff: int | None = None,
                  anon_vma: AnonVma | None = None) -> VmAreaStruct:
    """``do_mmap_pgoff``: choose an address when ``addr`` is 0, then mmap_region.

    Caller holds ``mmap_sem`` for write.  ``vm_flags`` are VM_* bits
    (VM_READ | VM_WRITE | VM_SHARED ...); VM_MAY* bits are added.
    """
    length = (length + PAGE_SIZE - 1) & PAGE_MASK
    if addr == 0:
        addr = get_unmapped_area(mm, length)
        if addr < 0:
            raise ModelError(f"no room for {length:#x} bytes in {mm.__mmemu_name__}")
    vm_flags |= VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if vm_flags & VM_SHARED:
        vm_flags |= VM_MAYSHARE
    return await mmap_region(mm, addr, length, vm_flags, file=file, pgoff=pgoff,
                             anon_vma=anon_vma)


async def vma_adjust(vma: VmAreaStruct, start: int, end: int, pgoff: int,
                     insert: VmAreaStruct | None = None) -> None:
    """Give ``vma`` the range [start, end) at file offset ``pgoff`` and link
    ``insert`` (the other half of a split) into the mm, the file's i_mmap and
    the anon_vma -- under the locks that rmap walkers hold while they turn a
    page's index into an address in this vma.  Caller holds mmap_sem for
    write (no fault or munmap runs; rmap walkers do).

    2.6.27's vma_adjust for a split (merging a neighbour -- remove_next,
    importer -- is not modelled: the model's vmas are never merged)::

      1. file: spin_lock(mapping->i_mmap_lock); vma_prio_tree_remove(vma)
      2. anon: spin_lock(anon_vma->lock)
      3. vm_start, vm_end, vm_pgoff = the new values; prio tree re-insert;
         __insert_vm_struct(insert): the mm's list and rb tree, i_mmap,
         anon_vma->head
      4. spin_unlock(anon_vma->lock); spin_unlock(i_mmap_lock)

    There is 1 critical interleaving that matters: an rmap walk
    (try_to_unmap, page_referenced: vma_address() under i_mmap_lock or
    anon_vma->lock, then the PTL) against 3.  The walker holds one of the
    locks 3 runs under, so it sees either the old vma alone or both halves
    with their new ranges, and finds the page's pte either way.  Without
    the locks it could compute an address from the new vm_start and the
    old vm_pgoff (or miss ``insert``) and leave a pte mapped.
    Lock order: i_mmap_lock, then anon_vma->lock (mm/rmap.c's tree).
    """
    mm = vma.vm_mm
    mapping = vma.mapping
    anon_vma = vma.anon_vma
    with span("vma_adjust"):
        if mapping is not None:
            await spin_lock(mapping.i_mmap_lock, label="1. vma_adjust: spin_lock(i_mmap_lock)")
        if anon_vma is not None:
            await spin_lock(anon_vma.lock, label="2. vma_adjust: spin_lock(anon_vma->lock)")
        writes: tuple[Any, ...] = ((mm, "mmap"), (vma, "vm_range"))
        if mapping is not None:
            writes += ((mapping, "i_mmap"),)
        if anon_vma is not None:
            writes += ((anon_vma, "head"),)
        await step("3. vma_adjust: vm_start/vm_end/vm_pgoff; __insert_vm_struct",
                   writes=writes)
        if anon_vma is not None:
            anon_vma_head_check(anon_vma)
        moved = start != vma.vm_start
        if moved:
            _unlink_list(mm, vma)
        vma.vm_start, vma.vm_end, vma.vm_pgoff = start, end, pgoff
        if moved:
            _link_list(mm, vma)
        if insert is not None:
            _link_list(mm, insert)
            if mapping is not None:
                at = next(k for k, v in enumerate(mapping.i_mmap) if v is vma)
                mapping.i_mmap.insert(at + 1, insert)
            if anon_vma is not None:
                insert.anon_vma = anon_vma
                anon_vma.head.append(insert)
        if anon_vma is not None:
            await spin_unlock(anon_vma.lock, label="4. vma_adjust: spin_unlock(anon_vma->lock)")
        if mapping is not None:
            await spin_unlock(mapping.i_mmap_lock,
                              label="4. vma_adjust: spin_unlock(i_mmap_lock)")


async def split_vma(mm: MmStruct, vma: VmAreaStruct, addr: int,
                    new_below: int = 0) -> VmAreaStruct:
    """Split ``vma`` at ``addr`` (2.6.27): a new vma takes [vma start, addr)
    when ``new_below``, else [addr, vma end); ``vma`` keeps the other part
    (vma_adjust).  Returns the new vma.  Caller holds ``mmap_sem`` for write."""
    _assert_mmap_sem_write(mm, "split_vma")
    if not vma.vm_start < addr < vma.vm_end or addr & ~PAGE_MASK:
        raise ModelError(f"cannot split {vma!r} at {addr:#x}")
    with span("split_vma"):
        if new_below:
            new = VmAreaStruct(mm, vma.vm_start, addr, vma.vm_flags, vma.vm_pgoff, vma.vm_file)
            await vma_adjust(vma, addr, vma.vm_end,
                             vma.vm_pgoff + ((addr - new.vm_start) >> PAGE_SHIFT), new)
        else:
            new = VmAreaStruct(mm, addr, vma.vm_end, vma.vm_flags,
                               vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT), vma.vm_file)
            await vma_adjust(vma, vma.vm_start, addr, vma.vm_pgoff, new)
    return new


async def do_munmap(mm: MmStruct, start: int, length: int) -> int:
    """Unmap [start, start + length).  Caller holds ``mmap_sem`` for write.

    Splits the vmas at the edges, takes the covered vmas off the mm's list
    (detach_vmas_to_be_unmapped), then unmap_region: zap their ptes inside one
    invalidate_range_start/end bracket (the gathered pages are freed inside
    it), unlink them from their anon_vma and i_mmap and free the page tables.
    """
    _assert_mmap_sem_write(mm, "do_munmap")
    if start & ~PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start:
        return -EINVAL
    length = (length + PAGE_SIZE - 1) & PAGE_MASK
    if length == 0:
        return -EINVAL
    end = start + length
    with span("do_munmap"):
        vma = find_vma(mm, start)
        if vma is None or vma.vm_start >= end:
            return 0
        if start > vma.vm_start:
            vma = await split_vma(mm, vma, start, 0)
        # Does it split the last one?
        last = find_vma(mm, end)
        if last is not None and last.vm_start < end < last.vm_end:
            low = await split_vma(mm, last, end, 1)
            if last is vma:
                vma = low
        # detach_vmas_to_be_unmapped
        await step("do_munmap: detach_vmas_to_be_unmapped", writes=((mm, "mmap"),))
        detached: list[VmAreaStruct] = []
        v: VmAreaStruct | None = vma
        while v is not None and v.vm_start < end:
            nxt = v.vm_next
            _unlink_list(mm, v)
            detached.append(v)
            v = nxt
        await unmap_region(mm, detached, start, end)
    return 0


async def unmap_region(mm: MmStruct, vmas: list[VmAreaStruct], start: int, end: int) -> None:
    """Zap the ptes of ``vmas`` in [start, end), then free_pgtables."""
    from mmemu.mm.memory import free_pgtables, tlb_finish_mmu, tlb_gather_mmu, unmap_vmas
    with span("unmap_region"):
        tlb = tlb_gather_mmu(mm, fullmm=False)
        await unmap_vmas(tlb, vmas, start, end)
        await free_pgtables(mm, vmas, start, end)
        await tlb_finish_mmu(tlb)


async def exit_mmap(mm: MmStruct) -> None:
    """Tear down every mapping of a dying mm (no mmap_sem: no users are left).

    1. mmu_notifier_release(mm): secondary MMUs drop every translation first;
    2. unmap_vmas over the whole address space (range_start, clear the ptes,
       free the gathered pages, range_end);
    3. free_pgtables (unlink each vma from its anon_vma / i_mmap), remove the vmas.
    """
    from mmemu.mm.memory import free_pgtables, tlb_finish_mmu, tlb_gather_mmu, unmap_vmas
    with span("exit_mmap"):
        await mmu_notifier.mmu_notifier_release(mm)
        await step("exit_mmap: take the vma list", reads=((mm, "mmap"),))
        vmas = list(mm._vmas)
        tlb = tlb_gather_mmu(mm, fullmm=True)
        await unmap_vmas(tlb, vmas, 0, TASK_SIZE)
        await free_pgtables(mm, vmas, 0, TASK_SIZE)
        await tlb_finish_mmu(tlb)
        await step("exit_mmap: remove_vma", writes=((mm, "mmap"),))
        for v in vmas:
            _unlink_list(mm, v)
        mm.dead = True


async def mmget(mm: MmStruct) -> None:
    await atomic_inc(mm.mm_users, label=f"mmget({mm.__mmemu_name__})")


async def mmget_not_zero(mm: MmStruct) -> bool:
    """A user reference on ``mm`` unless its last user is gone (exit_mmap
    has run or is running): a driver that faults pages into an mm on behalf
    of a device, not of one of the mm's own threads, takes one first
    (dmirror_fault, iommu_sva_handle_mm) and gives it back with mmput."""
    return await atomic_inc_not_zero(mm.mm_users, label=f"mmget_not_zero({mm.__mmemu_name__})")


async def mmput(mm: MmStruct) -> bool:
    """Drop a user; the last one runs exit_mmap.  True: this put was the
    last (for the caller's bookkeeping; the kernel's mmput returns nothing)."""
    if await atomic_dec_and_test(mm.mm_users, label=f"mmput({mm.__mmemu_name__})"):
        await exit_mmap(mm)
        return True
    return False


def vma_dump(vma: VmAreaStruct) -> str:
    av = vma.anon_vma.__mmemu_name__ if vma.anon_vma is not None else "-"
    mapping = vma.mapping
    m = getattr(mapping, "__mmemu_name__", "-") if mapping is not None else "-"
    return f"{vma!r} anon_vma={av} mapping={m}"


def _sim_running() -> Any:
    sim = _sim_or_none()
    return sim.running if sim is not None else None


# ----------------------------------------------------------------------------
# mm_take_all_locks() / mm_drop_all_locks() go here (written by the notifier
# engineer; see the seed patch "mmu-notifiers: add mm_take_all_locks()
# operation").  They walk ``mm.mmap`` / ``vma.vm_next``, use
# ``vma.anon_vma.lock`` + ``vma.anon_vma.head_next_lsb`` and
# ``vma.vm_file.f_mapping`` (i_mmap_lock + AS_MM_ALL_LOCKS), and
# ``kernel.mm_all_locks_mutex``.
# ----------------------------------------------------------------------------
# MM_TAKE_ALL_LOCKS_PLACEHOLDER
# ------------------------------------------------------------------------
# mm_take_all_locks / mm_drop_all_locks (mmu-notifier engineer's section)
#
# Emulates the seed patch "mmu-notifiers: add mm_take_all_locks() operation"
# (Andrea Arcangeli, 2008): mm/mmap.c, include/linux/rmap.h (the LSB of
# anon_vma->head.next), include/linux/pagemap.h (AS_MM_ALL_LOCKS).


import mmemu  # noqa: E402
from mmemu.kernel.locking import (  # noqa: E402
    SelfDeadlock,
    down_read_trylock,
    mutex_is_locked,
    mutex_lock,
    mutex_unlock,
    spin_lock_nest_lock,
    up_read,
)
from mmemu.kernel.signal import current, signal_pending  # noqa: E402
from mmemu.mm.filemap import AS_MM_ALL_LOCKS  # noqa: E402
from mmemu.mm.page import page_site  # noqa: E402

MUTANT_NO_DEDUP = mmemu.register_mutant(
    "mmap:no-dedup",
    "mm_take_all_locks ignores the anon_vma LSB / AS_MM_ALL_LOCKS marks",
    caught_as="SelfDeadlock (the same anon_vma->lock or i_mmap_lock taken twice when two "
              "vmas share it)")
MUTANT_EINTR_LEAK = mmemu.register_mutant(
    "mmap:eintr-leak",
    "mm_take_all_locks returns -EINTR on a pending signal without dropping what it took",
    caught_as="LockHeldAtExit (or a Deadlock of the next CPU that needs one of the locks)")
MUTANT_NO_ALL_LOCKS_MUTEX = mmemu.register_mutant(
    "mmap:no-all-locks-mutex",
    "mm_take_all_locks / mm_drop_all_locks do without mm_all_locks_mutex",
    caught_as="UnlockNotOwner (the second caller drops an i_mmap_lock it never took: it "
              "read AS_MM_ALL_LOCKS set by the first) or the BUG of vm_lock_mapping",
    doc="The marks mm_take_all_locks leaves on what it locked -- the LSB of "
        "anon_vma->head.next, AS_MM_ALL_LOCKS in mapping->flags -- are only meaningful to "
        "one caller at a time: 'AS_MM_ALL_LOCKS can't change from under us because we hold "
        "the mm_all_locks_mutex'.  Two registrants on two mms that map one file, without "
        "the mutex: the second finds the mapping marked by the first, takes it for its "
        "own mark and skips i_mmap_lock (so a truncate of that file can run inside its "
        "registration), and its mm_drop_all_locks then unlocks a lock another CPU holds.")
MUTANT_IGNORE_SIGNALS = mmemu.register_mutant(
    "mmap:ignore-signals",
    "mm_take_all_locks never checks signal_pending(current)",
    caught_as="SignalIgnored (mm_take_all_locks returned 0 although the task had a signal "
              "pending before it started)",
    doc="mm_take_all_locks can take a very long time on a large mm, so the seed patch "
        "checks signal_pending(current) before each vma and aborts with -EINTR after "
        "dropping what it took: a task being killed does not finish taking every lock of "
        "the mm first (and the registration it served fails with -EINTR).")
MUTANT_UNMARK_AFTER_UNLOCK = mmemu.register_mutant(
    "mmap:unmark-after-unlock",
    "mm_drop_all_locks clears the anon_vma mark after unlocking anon_vma->lock",
    caught_as="MarkedAnonVmaList (another CPU takes anon_vma->lock and reads a head.next "
              "whose LSB is still set)")



class MmapSemNotHeld(InvariantViolation):
    """mm_take_all_locks / mm_drop_all_locks called without mmap_sem held for
    write (BUG_ON(down_read_trylock(&mm->mmap_sem)))."""


class MarkedAnonVmaList(InvariantViolation):
    """A CPU holding anon_vma->lock read anon_vma->head.next with the LSB that
    mm_take_all_locks sets still set: a corrupt list pointer."""


def anon_vma_head_key(anon_vma: Any) -> tuple[Any, str]:
    """Access key of anon_vma->head (its next pointer and the LSB in it)."""
    return (anon_vma, "head")


def mapping_flags_key(mapping: Any) -> tuple[Any, str]:
    return (mapping, "flags")


def anon_vma_head_check(anon_vma: Any) -> None:
    """A reader that holds anon_vma->lock and is about to follow
    anon_vma->head.next: the LSB must be clear (the seed's rule: the mark is
    set after taking the lock and cleared before releasing it, so a lock
    holder never sees it).  Call it inside a step that reads
    ``anon_vma_head_key(anon_vma)``."""
    if anon_vma.head_next_lsb:
        sim = current_simulation()
        cpu = sim.running
        who = cpu.title if cpu is not None else "setup"
        sim.fail(MarkedAnonVmaList(
            f"{who} holds {anon_vma.lock.name} and reads "
            f"{getattr(anon_vma, '__mmemu_name__', 'anon_vma')}->head.next with the "
            f"mm_take_all_locks LSB still set (a corrupt list pointer)",
            details=f"anon_vma {getattr(anon_vma, '__mmemu_name__', anon_vma)}: lock held by "
                    f"{getattr(anon_vma.lock.owner, 'title', anon_vma.lock.owner)}, "
                    f"head.next LSB=1"))


def _vma_list(mm: Any) -> list[Any]:
    out = []
    vma = mm.mmap
    while vma is not None:
        out.append(vma)
        vma = vma.vm_next
    return out


def _vma_mapping(vma: Any) -> Any:
    """vma->vm_file->f_mapping (None for anonymous vmas)."""
    f = vma.vm_file
    return f.f_mapping if f is not None else None


async def _bug_on_mmap_sem_not_held(mm: Any, who: str) -> None:
    """BUG_ON(down_read_trylock(&mm->mmap_sem))."""
    if await down_read_trylock(mm.mmap_sem, label=f"{who}: BUG_ON(down_read_trylock(&mm->mmap_sem))"):
        await up_read(mm.mmap_sem, label=f"{who}: up_read(mmap_sem)")
        sim = current_simulation()
        sim.fail(MmapSemNotHeld(
            f"{who} called without mm->mmap_sem held for write "
            f"(down_read_trylock succeeded) at {page_site()}",
            details=f"mmap_sem: writer={getattr(mm.mmap_sem.writer, 'title', mm.mmap_sem.writer)} "
                    f"readers={len(mm.mmap_sem.readers)}"))


async def _signal_pending_current() -> bool:
    sim = current_simulation()
    if sim.running is None:
        return False  # scenario setup: no task, no signal
    return await signal_pending(current())


async def vm_lock_anon_vma(mm: Any, anon_vma: Any) -> None:
    """Take anon_vma->lock once per mm_take_all_locks, however many vmas share it."""
    key = anon_vma_head_key(anon_vma)
    await step("vm_lock_anon_vma: test_bit(0, &anon_vma->head.next)", reads=(key,))
    if anon_vma.head_next_lsb:
        reach("mm_take_all_locks: an anon_vma shared by two vmas is taken once")
    if not anon_vma.head_next_lsb or mmemu.mutant(MUTANT_NO_DEDUP):
        # The LSB of head.next can't change from under us: we hold
        # mm_all_locks_mutex.
        await spin_lock_nest_lock(anon_vma.lock, mm.mmap_sem,
                                  label="vm_lock_anon_vma: spin_lock_nest_lock(&anon_vma->lock)")
        # head.next can only be modified under anon_vma->lock, which we hold.
        await step("vm_lock_anon_vma: __test_and_set_bit(0, &anon_vma->head.next)",
                   reads=(key,), writes=(key,))
        if anon_vma.head_next_lsb and not mmemu.mutant(MUTANT_NO_DEDUP):
            current_simulation().fail(InvariantViolation(
                "BUG in vm_lock_anon_vma: the anon_vma LSB was already set"))
        anon_vma.head_next_lsb = True


async def vm_lock_mapping(mm: Any, mapping: Any) -> None:
    """Take mapping->i_mmap_lock once, marked by AS_MM_ALL_LOCKS."""
    key = mapping_flags_key(mapping)
    await step("vm_lock_mapping: test_bit(AS_MM_ALL_LOCKS, &mapping->flags)", reads=(key,))
    if mapping.flags & AS_MM_ALL_LOCKS:
        reach("mm_take_all_locks: a mapping shared by two vmas is taken once")
    if not (mapping.flags & AS_MM_ALL_LOCKS) or mmemu.mutant(MUTANT_NO_DEDUP):
        # Operations on ->flags are atomic: other CPUs change other bits.
        await step("vm_lock_mapping: test_and_set_bit(AS_MM_ALL_LOCKS)", reads=(key,),
                   writes=(key,))
        if mapping.flags & AS_MM_ALL_LOCKS and not mmemu.mutant(MUTANT_NO_DEDUP):
            current_simulation().fail(InvariantViolation(
                "BUG in vm_lock_mapping: AS_MM_ALL_LOCKS was already set"))
        mapping.flags |= AS_MM_ALL_LOCKS
        await spin_lock_nest_lock(mapping.i_mmap_lock, mm.mmap_sem,
                                  label="vm_lock_mapping: spin_lock_nest_lock(&mapping->i_mmap_lock)")


async def mm_take_all_locks(mm: Any) -> int:
    """Lock out every pte/vma/mm operation on ``mm`` (0, or -EINTR).

    The caller holds ``mm->mmap_sem`` for write and may not release it
    until ``mm_drop_all_locks`` returns.  Takes mm_all_locks_mutex, then for
    every vma its anon_vma->lock and its mapping's i_mmap_lock, each once
    (the LSB of anon_vma->head.next and AS_MM_ALL_LOCKS mark the ones
    taken).  The order among them does not matter: the VM never takes two
    of them in a row outside mmap_sem, and concurrent mm_take_all_locks
    callers are serialised by the mutex.  One task cannot call it twice in a
    row (self-deadlock on the mutex).  A pending signal aborts with -EINTR
    after dropping everything taken so far.

    Steps per vma: signal_pending(current); vm_lock_anon_vma; vm_lock_mapping.
    """
    from mmemu.mm.init import kernel as _kernel

    with mmemu.span("mm_take_all_locks"):
        await _bug_on_mmap_sem_not_held(mm, "mm_take_all_locks")
        k = _kernel()
        sim = current_simulation()
        if sim.running is not None and k.mm_all_locks_mutex.owner is sim.running:
            # What lockdep says when mutex_lock finds the mutex ours (it would
            # first warn about sleeping under the spinlocks we hold).
            sim.fail(SelfDeadlock(
                f"{sim.running.title} calls mm_take_all_locks at {page_site()} while it "
                f"already holds mm_all_locks_mutex from an earlier mm_take_all_locks: "
                f"self-deadlock (one task cannot take all locks twice in a row)"))
        locked = not mmemu.mutant(MUTANT_NO_ALL_LOCKS_MUTEX)
        if locked:
            await mutex_lock(k.mm_all_locks_mutex, label="mutex_lock(&mm_all_locks_mutex)",
                             contended="mm_take_all_locks: waits for mm_all_locks_mutex "
                                       "(another registrant)")
        ret = -EINTR
        took = False
        for vma in _vma_list(mm):
            if not mmemu.mutant(MUTANT_IGNORE_SIGNALS) and await _signal_pending_current():
                reach("mm_take_all_locks: -EINTR (a signal is pending)")
                if took:
                    reach("mm_take_all_locks: -EINTR after taking some of the locks")
                break
            took = True
            if vma.anon_vma is not None:
                await vm_lock_anon_vma(mm, vma.anon_vma)
            mapping = _vma_mapping(vma)
            if mapping is not None:
                await vm_lock_mapping(mm, mapping)
        else:
            ret = 0
        if ret:
            reach("mm_take_all_locks returned -EINTR (a signal was pending)")
        if ret and not mmemu.mutant(MUTANT_EINTR_LEAK):
            await mm_drop_all_locks(mm)
        return ret


async def vm_unlock_anon_vma(anon_vma: Any) -> None:
    key = anon_vma_head_key(anon_vma)
    await step("vm_unlock_anon_vma: test_bit(0, &anon_vma->head.next)", reads=(key,))
    if anon_vma.head_next_lsb:
        # Clear the mark *before* unlocking, so that anon_vma->head users,
        # who all take the lock, never see it.
        if mmemu.mutant(MUTANT_UNMARK_AFTER_UNLOCK):
            await spin_unlock(anon_vma.lock, label="vm_unlock_anon_vma: spin_unlock(&anon_vma->lock)")
            await step("vm_unlock_anon_vma: __test_and_clear_bit (after unlock)",
                       reads=(key,), writes=(key,))
            anon_vma.head_next_lsb = False
            return
        await step("vm_unlock_anon_vma: __test_and_clear_bit(0, &anon_vma->head.next)",
                   reads=(key,), writes=(key,))
        anon_vma.head_next_lsb = False
        await spin_unlock(anon_vma.lock, label="vm_unlock_anon_vma: spin_unlock(&anon_vma->lock)")


async def vm_unlock_mapping(mapping: Any) -> None:
    key = mapping_flags_key(mapping)
    await step("vm_unlock_mapping: test_bit(AS_MM_ALL_LOCKS, &mapping->flags)", reads=(key,))
    if mapping.flags & AS_MM_ALL_LOCKS:
        await spin_unlock(mapping.i_mmap_lock,
                          label="vm_unlock_mapping: spin_unlock(&mapping->i_mmap_lock)")
        await step("vm_unlock_mapping: test_and_clear_bit(AS_MM_ALL_LOCKS)", reads=(key,),
                   writes=(key,))
        mapping.flags &= ~AS_MM_ALL_LOCKS


async def mm_drop_all_locks(mm: Any) -> None:
    """Release what mm_take_all_locks took.  The caller still holds mmap_sem
    for write and releases it only after this returns."""
    from mmemu.mm.init import kernel as _kernel

    with mmemu.span("mm_drop_all_locks"):
        await _bug_on_mmap_sem_not_held(mm, "mm_drop_all_locks")
        k = _kernel()
        locked = not mmemu.mutant(MUTANT_NO_ALL_LOCKS_MUTEX)
        if locked and not mutex_is_locked(k.mm_all_locks_mutex):
            current_simulation().fail(InvariantViolation(
                "BUG_ON(!mutex_is_locked(&mm_all_locks_mutex)) in mm_drop_all_locks"))
        for vma in _vma_list(mm):
            if vma.anon_vma is not None:
                await vm_unlock_anon_vma(vma.anon_vma)
            mapping = _vma_mapping(vma)
            if mapping is not None:
                await vm_unlock_mapping(mapping)
        if locked:
            await mutex_unlock(k.mm_all_locks_mutex, label="mutex_unlock(&mm_all_locks_mutex)")
