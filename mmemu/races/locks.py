"""Race suites for mm_take_all_locks / mm_drop_all_locks.

Emulates: mm/mmap.c mm_take_all_locks (2.6.27), against the rmap walkers and
truncate that take one anon_vma->lock or i_mmap_lock at a time.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.kernel.locking import down_write, spin_lock, spin_unlock, up_write
from mmemu.kernel.signal import send_sig
from mmemu.mm.filemap import AS_MM_ALL_LOCKS, AddressSpace
from mmemu.mm.init import Kernel, boot
from mmemu.mm.mmap import (
    EINTR,
    PAGE_SIZE,
    AnonVma,
    File,
    MmStruct,
    VmAreaStruct,
    _link_list,
    anon_vma_head_check,
    anon_vma_head_key,
    mapping_flags_key,
    mm_drop_all_locks,
    mm_take_all_locks,
)

VM_RW = 0x3


def build_mm(kernel: Kernel, nvmas: int, n_anon: int, n_mappings: int, *,
             file_every: int = 2, name: str = "mm1") -> tuple[MmStruct, list[AnonVma],
                                                              list[AddressSpace]]:
    """Setup helper (no steps): an mm of ``nvmas`` one-page vmas.  vma ``i``
    gets anon_vma ``i % n_anon``; every ``file_every``-th vma also maps file
    ``(i // file_every) % n_mappings`` (a private file vma with COWed pages has both).  The
    anon_vmas and mappings are shared by many vmas, which is what
    mm_take_all_locks must de-duplicate.  Built directly (not through
    do_mmap) so that 100,000 vmas take no time."""
    mm = MmStruct(kernel, name)
    kernel.mms.append(mm)
    anon = [AnonVma(f"anon_vma{i + 1}") for i in range(n_anon)]
    maps = [AddressSpace(kernel, f"file{i + 1}") for i in range(n_mappings)]
    files = [File(m) for m in maps]
    base = 0x10000000
    for i in range(nvmas):
        start = base + i * 2 * PAGE_SIZE
        f = files[(i // file_every) % n_mappings] if n_mappings and i % file_every == 0 else None
        vma = VmAreaStruct(mm, start, start + PAGE_SIZE, VM_RW, i, f)
        if n_anon:
            vma.anon_vma = anon[i % n_anon]
            anon[i % n_anon].head.append(vma)
        if f is not None:
            f.f_mapping.i_mmap.append(vma)
        _link_list(mm, vma)
    return mm, anon, maps


async def take_and_drop(mm: MmStruct, out: dict[str, Any]) -> None:
    """The registering side: what mmu_notifier_register does around its work."""
    await down_write(mm.mmap_sem, label="1. down_write(mmap_sem)")
    ret = await mm_take_all_locks(mm)
    out["ret"] = ret
    if ret == 0:
        await mmemu.step("2. everything locked: hash the notifier")
        await mm_drop_all_locks(mm)
    await up_write(mm.mmap_sem, label="3. up_write(mmap_sem)")


async def anon_vma_walker(anon_vma: AnonVma) -> None:
    """An rmap walk (page_referenced_anon / try_to_unmap_anon)."""
    await spin_lock(anon_vma.lock, label="A. spin_lock(&anon_vma->lock)")
    await mmemu.step("B. list_for_each_entry(vma, &anon_vma->head)",
                     reads=(anon_vma_head_key(anon_vma),))
    anon_vma_head_check(anon_vma)
    await spin_unlock(anon_vma.lock, label="C. spin_unlock(&anon_vma->lock)")


async def i_mmap_walker(mapping: AddressSpace) -> None:
    """A file rmap walk or unmap_mapping_range."""
    await spin_lock(mapping.i_mmap_lock, label="A. spin_lock(&mapping->i_mmap_lock)")
    await mmemu.step("B. vma_prio_tree_foreach(&mapping->i_mmap)",
                     reads=((mapping, "i_mmap"),))
    await spin_unlock(mapping.i_mmap_lock, label="C. spin_unlock(&mapping->i_mmap_lock)")


def _check_all_dropped(sim: Any, kernel: Kernel, anon: list[AnonVma],
                       maps: list[AddressSpace]) -> None:
    for av in anon:
        sim.check(not av.head_next_lsb, f"{av.__mmemu_name__}: head.next LSB left set")
        sim.check(av.lock.owner is None, f"{av.lock.name} left held")
    for m in maps:
        sim.check(not m.flags & AS_MM_ALL_LOCKS, f"{m.name}: AS_MM_ALL_LOCKS left set")
        sim.check(m.i_mmap_lock.owner is None, f"{m.i_mmap_lock.name} left held")
    sim.check(kernel.mm_all_locks_mutex.owner is None, "mm_all_locks_mutex left held")


@mmemu.scenario("locks:take-all-shared",
                catches=["mmap:no-dedup", "mmap:unmark-after-unlock"],
                reaches=["mm_take_all_locks: an anon_vma shared by two vmas is taken once",
                         "mm_take_all_locks: a mapping shared by two vmas is taken once"])
async def take_all_shared(sim: Any) -> None:
    """mm_take_all_locks on vmas that share an anon_vma and a mapping, against
    rmap walkers that take those locks one at a time.

    CPU0 (mmu_notifier_register)          CPU1 (rmap, anon)    CPU2 (rmap, file)
    1. down_write(mmap_sem)               A. lock anon_vma     A. lock i_mmap_lock
       mm_take_all_locks: mutex, then     B. walk head         B. walk i_mmap
       per vma: anon_vma->lock + set LSB  C. unlock            C. unlock
       (once), i_mmap_lock + set
       AS_MM_ALL_LOCKS (once)
    2. (everything locked)
       mm_drop_all_locks: per vma: clear
       the LSB *then* unlock; unlock then
       clear AS_MM_ALL_LOCKS; mutex
    3. up_write(mmap_sem)

    There are 2 critical interleavings that matter:
    - the second vma sharing anon_vma1 (or file1): the mark set by the first
      makes CPU0 skip the lock; ignoring it (mutant ``mmap:no-dedup``) takes
      the same spinlock twice: SelfDeadlock.
    - CPU1's B right after CPU0 unlocks anon_vma1 in drop: the LSB must
      already be clear.  Clearing it after the unlock (mutant
      ``mmap:unmark-after-unlock``) lets B see a marked head.next.

    Harmless: the walkers before 1 or after 3 (CPU0 waits for, or is waited
    for by, their single lock); AS_MM_ALL_LOCKS cleared after i_mmap_lock is
    released (only mm_take_all_locks reads that bit, under the mutex).
    """
    kernel = boot(sim, npages=4)
    mm, anon, maps = build_mm(kernel, 3, 1, 1)
    out: dict[str, Any] = {}
    async with sim.cpus() as cpus:
        cpus.start(take_and_drop, mm, out, name="register")
        cpus.start(anon_vma_walker, anon[0], name="rmap-anon")
        cpus.start(i_mmap_walker, maps[0], name="rmap-file")
    sim.check(out.get("ret") == 0, f"mm_take_all_locks returned {out.get('ret')}")
    _check_all_dropped(sim, kernel, anon, maps)


@mmemu.scenario("locks:take-all-signal", catches=["mmap:eintr-leak"],
                reaches=["mm_take_all_locks returned -EINTR (a signal was pending)",
                         "step:2. everything locked: hash the notifier"])
async def take_all_signal(sim: Any) -> None:
    """A signal interrupts mm_take_all_locks: -EINTR with every lock dropped.

    CPU0 (mm_take_all_locks)              CPU1                  CPU2 (rmap, file)
    1. down_write(mmap_sem), mutex        S. send_sig(cpu0)     A. lock i_mmap_lock
    2. per vma: signal_pending(current)?                        B. walk i_mmap
       -> -EINTR: mm_drop_all_locks                             C. unlock
       else lock anon_vma / i_mmap_lock
    3. up_write(mmap_sem)

    There is 1 critical interleaving that matters:
    - S lands between two vmas: 2 returns -EINTR after dropping the locks of
      the vmas before it.  Returning without dropping (mutant
      ``mmap:eintr-leak``) leaves the mutex and spinlocks held: CPU0 exits
      holding them (LockHeldAtExit), or CPU2 waits forever (Deadlock).

    Harmless: S before the first test (nothing taken yet, -EINTR at once) or
    after the last (the signal is left pending, 0 is returned).
    """
    kernel = boot(sim, npages=4)
    mm, anon, maps = build_mm(kernel, 3, 1, 1)
    out: dict[str, Any] = {}
    async with sim.cpus() as cpus:
        target = cpus.start(take_and_drop, mm, out, name="register")
        cpus.start(send_sig, target, name="kill")
        cpus.start(i_mmap_walker, maps[0], name="rmap-file")
    sim.check(out.get("ret") in (0, -EINTR), f"mm_take_all_locks returned {out.get('ret')}")
    _check_all_dropped(sim, kernel, anon, maps)


__all__ = ["anon_vma_walker", "build_mm", "i_mmap_walker", "take_and_drop"]
