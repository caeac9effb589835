"""fork's half of memory management: a new mm that copies the parent's vmas and ptes.

Emulates: kernel/fork.c (dup_mm, dup_mmap) (2.6.27); the pte copy itself is
mmemu.mm.memory.copy_page_range (mm/memory.c)

dup_mmap, with the parent's ``mmap_sem`` held for write (no fault, munmap or
mprotect of the parent runs meanwhile; rmap walkers -- reclaim, truncate --
still do, since they take only the anon_vma / i_mmap / page-table locks)::

  down_write(oldmm->mmap_sem)
  down_write_nested(mm->mmap_sem)        the child's: nobody can see it yet
  for each vma of the parent (not VM_DONTCOPY):
    tmp = *vma; tmp->vm_mm = mm
    anon_vma_link(tmp)                   the child's vma joins the parent's
                                         anon_vma (rmap walks find it now)
    file: spin_lock(i_mmap_lock); vma_prio_tree_add(tmp, vma); unlock
    link tmp into mm's list
    copy_page_range(mm, oldmm, vma)      COW: write-protect the parent's
                                         ptes inside invalidate_range_start
                                         / end (see copy_page_range)
  up_write(mm->mmap_sem); flush_tlb_mm(oldmm); up_write(oldmm->mmap_sem)

The child's vma is visible to rmap walkers (through the anon_vma and
i_mmap) before its ptes exist: a walker that looks at the child's pte
before copy_pte_range finds it none and moves on; one that looks after
takes the child's PTL like any other.  That's OK: page_dup_rmap raised the
mapcount under both PTLs, so try_to_unmap's final page_mapped() test sees
the new pte.

vfork (CLONE_VM | CLONE_VFORK: copy_mm shares the parent's mm, one more
``mm_users``; do_fork sleeps on a completion until the child lets go of the
mm)::

  parent (do_fork)                          child
  V1. copy_mm: CLONE_VM: atomic_inc(
      mm_users) (mmget); the child's mm is
      the parent's; p->vfork_done = &vfork
      (init_completion)
  V2. wake_up_new_task(p)                   C1. runs on the parent's mm (faults,
  V3. wait_for_completion(&vfork)               writes: the parent's memory)
                                            C2. exit_mm -> mm_release: vfork_done
                                                = NULL; complete(vfork_done)
  V4. the parent runs again: its mm is      C3. exit_mm: mmput (the child's
      its own                                   mm_users reference)

The completion is the whole protocol: the parent must not run on the mm
before C2 (POSIX: "the parent is suspended until the child execs or
exits").  mm_release comes before mmput, so the parent's own exit may
race the child's C3: whoever drops the last ``mm_users`` runs exit_mmap.

Not modelled: the task itself (scheduling, signals, the freezer around
the wait, ptrace's vfork-done event), exec (exec_mmap's mm_release), the
futex and TLB cleanup of mm_release; anon_vma chains (2.6.34+: the child gets an anon_vma of its
own linked to the parent's; here, as in 2.6.27, the child's vmas join the
parent's anon_vma, in both notifier generations); VM_ACCOUNT, mempolicy,
VM_DONTCOPY (no scenario sets it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

import mmemu
from mmemu.engine._execution import span, step
from mmemu.kernel.locking import (
    SINGLE_DEPTH_NESTING,
    Completion,
    complete,
    down_write,
    down_write_nested,
    spin_lock,
    spin_unlock,
    up_write,
    wait_for_completion,
)
from mmemu.mm import mmu_notifier
from mmemu.mm.memory import copy_page_range
from mmemu.mm.mmap import (
    TASK_SIZE,
    VM_LOCKED,
    MmStruct,
    VmAreaStruct,
    _link_list,
    anon_vma_link,
    mm_alloc,
    mmget,
)

CLONE_VM = 0x00000100
CLONE_VFORK = 0x00004000


@attrs.define(eq=False)
class TaskStruct:
    """The part of ``struct task_struct`` that fork and exit_mm touch."""

    comm: str
    mm: MmStruct | None
    #: ``tsk->vfork_done``: the parent's completion, until mm_release
    vfork_done: Completion | None = None

    @property
    def __mmemu_name__(self) -> str:
        return self.comm

NO_OLDMM_LOCK = mmemu.register_mutant(
    "fork:dup-mmap-no-mmap-sem",
    "dup_mmap copies the parent's vmas and ptes without taking oldmm->mmap_sem",
    caught_as="ForkLostPage (the child gets a vma whose page munmap freed meanwhile) / "
              "RmapMissesPte (a child pte of a page whose anon_vma does not list the "
              "child's vma: a fault gave the parent's vma its anon_vma after dup_mmap "
              "copied the vma and before copy_page_range read it again)",
    doc="dup_mmap has taken the parent's mmap_sem for write since the first dup_mmap "
        "(2.4; 2.6.27 kernel/fork.c): it copies each vma (*tmp = *mpnt, anon_vma "
        "included) and then, in copy_page_range, reads mpnt->anon_vma and the parent's "
        "ptes again.  Without the lock a munmap or a fault of the parent runs between "
        "those reads (a step removed on purpose).")

VFORK_NO_COMPLETE = mmemu.register_mutant(
    "fork:vfork-no-complete",
    "mm_release forgets complete(vfork_done): the vfork parent is never woken",
    caught_as="Deadlock (the parent sleeps in do_fork's wait_for_completion forever)",
    doc="A vfork parent sleeps in do_fork until the child is done with the shared mm; "
        "mm_release, on the child's exit or exec, is the only place that wakes it "
        "(complete(vfork_done), 2.6.27 kernel/fork.c).  A step removed on purpose, not "
        "a kernel bug: the parent never runs again.")


async def dup_mmap(mm: MmStruct, oldmm: MmStruct) -> int:
    """Copy ``oldmm``'s vmas and ptes into the new, empty ``mm`` (0)."""
    locked = not mmemu.mutant(NO_OLDMM_LOCK)
    with span("dup_mmap"):
        if locked:
            await down_write(oldmm.mmap_sem, label="dup_mmap: down_write(oldmm->mmap_sem)")
        await down_write_nested(mm.mmap_sem, SINGLE_DEPTH_NESTING,
                                label="dup_mmap: down_write_nested(mm->mmap_sem)")
        await step("dup_mmap: walk oldmm->mmap", reads=((oldmm, "mmap"),))
        retval = 0
        for mpnt in oldmm.vmas():
            # *tmp = *mpnt: the copy reads mpnt->anon_vma (copy_page_range
            # reads it again after the link step below)
            await step("dup_mmap: *tmp = *mpnt", reads=((mpnt, "anon_vma"),))
            tmp = VmAreaStruct(mm, mpnt.vm_start, mpnt.vm_end, mpnt.vm_flags & ~VM_LOCKED,
                               mpnt.vm_pgoff, mpnt.vm_file)
            if mpnt.anon_vma is not None:
                await anon_vma_link(tmp, mpnt.anon_vma)
            mapping = tmp.mapping
            if mapping is not None:
                # insert tmp into the share list, just after mpnt
                await spin_lock(mapping.i_mmap_lock,
                                label="dup_mmap: spin_lock(i_mmap_lock)")
                await step("dup_mmap: vma_prio_tree_add(tmp, mpnt)",
                           writes=((mapping, "i_mmap"),))
                at = next(k for k, v in enumerate(mapping.i_mmap) if v is mpnt)
                mapping.i_mmap.insert(at + 1, tmp)
                await spin_unlock(mapping.i_mmap_lock,
                                  label="dup_mmap: spin_unlock(i_mmap_lock)")
            await step("dup_mmap: link tmp into mm", reads=((mpnt, "anon_vma"),),
                       writes=((mm, "mmap"),))
            _link_list(mm, tmp)
            retval = await copy_page_range(mm, oldmm, mpnt)
            if retval:
                break
        mm.free_area_cache = oldmm.free_area_cache
        await up_write(mm.mmap_sem, label="dup_mmap: up_write(mm->mmap_sem)")
        await flush_tlb_mm(oldmm)
        if locked:
            await up_write(oldmm.mmap_sem, label="dup_mmap: up_write(oldmm->mmap_sem)")
    return retval


async def flush_tlb_mm(mm: MmStruct) -> None:
    """Flush every CPU TLB entry of ``mm`` (after the parent's ptes were
    write-protected).  Modern: the flush reaches the TLBs that walk the CPU
    page tables too (arch_invalidate_secondary_tlbs over the whole space,
    as x86 and arm64 do from flush_tlb_mm_range); 2.6.27's told nobody."""
    if mmu_notifier.is_modern(mm):
        await mmu_notifier.arch_invalidate_secondary_tlbs(mm, 0, TASK_SIZE)


async def dup_mm(oldmm: MmStruct) -> MmStruct:
    """fork's copy_mm without CLONE_VM: a new mm (mm_alloc) filled by dup_mmap."""
    mm = mm_alloc(oldmm.kernel)
    with span("dup_mm"):
        await dup_mmap(mm, oldmm)
    return mm


async def copy_mm(clone_flags: int, oldmm: MmStruct) -> MmStruct:
    """copy_process's copy_mm: CLONE_VM shares the parent's mm (one more
    user, ``atomic_inc(&oldmm->mm_users)``); otherwise dup_mm copies it."""
    if clone_flags & CLONE_VM:
        await mmget(oldmm)
        return oldmm
    return await dup_mm(oldmm)


async def do_fork(parent: TaskStruct, clone_flags: int, comm: str,
                  wake_up_new_task: Callable[[TaskStruct], Awaitable[None]]) -> TaskStruct:
    """V1-V3 of the comment at the top: create the child (its mm only) and
    let it run (``wake_up_new_task``: the scenario's scheduler); with
    CLONE_VFORK, sleep until the child releases the mm.  Returns the child."""
    assert parent.mm is not None
    with span("do_fork"):
        mm = await copy_mm(clone_flags, parent.mm)
        child = TaskStruct(comm, mm)
        vfork = None
        if clone_flags & CLONE_VFORK:
            vfork = Completion(f"vfork({comm})")  # init_completion(&vfork)
            child.vfork_done = vfork
        await wake_up_new_task(child)
        if vfork is not None:
            await wait_for_completion(vfork, label="V3. do_fork: wait_for_completion(&vfork)")
    return child


async def mm_release(tsk: TaskStruct, mm: MmStruct) -> None:
    """C2: the task is done with ``mm`` (exit or exec): a vfork parent
    sleeping on ``tsk->vfork_done`` runs again."""
    vfork_done = tsk.vfork_done
    if vfork_done is not None:
        await step("C2. mm_release: tsk->vfork_done = NULL", writes=((tsk, "vfork_done"),))
        tsk.vfork_done = None
        if not mmemu.mutant(VFORK_NO_COMPLETE):
            await complete(vfork_done, label="C2. mm_release: complete(vfork_done)")


__all__ = ["CLONE_VFORK", "CLONE_VM", "NO_OLDMM_LOCK", "TaskStruct", "VFORK_NO_COMPLETE", "copy_mm", "do_fork",
           "dup_mm", "dup_mmap", "flush_tlb_mm", "mm_release"]
