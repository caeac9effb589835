"""Race suite for vfork: the parent sleeps on a completion while the child
runs on the parent's mm and exits.

Emulates: kernel/fork.c (do_fork with CLONE_VM | CLONE_VFORK: copy_mm's
shared mm, the vfork completion, mm_release), kernel/exit.c (exit_mm),
mm/mmap.c (mmput -> exit_mmap) (2.6.27)

The protocol is mmemu.mm.fork's vfork comment: copy_mm takes a second
``mm_users`` reference for the child; the parent sleeps in
wait_for_completion until the child's mm_release completes it; the
child's mmput comes after that, so it races the parent's own exit, and
whichever drops the last reference tears the mm down.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.engine._execution import reach, step, wake_all
from mmemu.kernel.locking import WaitQueueHead, down_write, up_write, wait_event
from mmemu.mm.exit import exit_mm
from mmemu.mm.fork import CLONE_VFORK, CLONE_VM, TaskStruct, do_fork
from mmemu.mm.memory import VM_FAULT_ERROR, fault_in, pte_get
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, mm_alloc


class VforkParentRanEarly(mmemu.InvariantViolation):
    """The vfork parent ran on the shared mm before the child released it."""


#: coverage goals: the parent slept on the completion and was woken ...
PARENT_SLEPT = "step:wait_for_completion(vfork(child)) done"
#: ... and each side's mmput was, in some execution, the last one
CHILD_TORE_DOWN = "vfork: the child's mmput dropped the last mm_users (exit_mmap)"
PARENT_TORE_DOWN = "vfork: the parent's mmput dropped the last mm_users (exit_mmap)"


@mmemu.scenario("fork:vfork-vs-exit", catches=["fork:vfork-no-complete"],
                reaches=[PARENT_SLEPT, CHILD_TORE_DOWN, PARENT_TORE_DOWN])
async def vfork_vs_exit(sim: Any) -> None:
    """A process vforks; the child writes a page of its own on the shared mm
    and exits; the parent, once woken, reads its page and exits too.

    Setup: one mm with a two-page anonymous vma; the parent wrote page 0.

    CPU0 (the parent)                         CPU1 (the child, once woken)
    V1. do_fork: copy_mm(CLONE_VM): mmget     C1. write fault on page 1 (a new
        (mm_users 2); p->vfork_done = &vfork      anonymous page, in the parent's
    V2. wake_up_new_task(child)                   mm)
    V3. wait_for_completion(&vfork)           C2. exit_mm: mm_release:
    V4. tsk->vfork_done of the child is           vfork_done = NULL;
        NULL (it released the mm); read           complete(vfork_done)
        page 0                                C3. down_read/up_read(mmap_sem),
    V5. exit_mm: mmput                            tsk->mm = NULL; mmput

    There are 2 critical interleavings that matter:
    - C2 before V3 (the completion is done when the parent waits: it does
      not sleep) or after it (goal: the parent slept, complete() woke it);
      either way V4 runs after C2.  A wait that does not wait lets V4 run
      on the mm while the child still uses it (VforkParentRanEarly); a
      complete() that does not count or does not wake leaves the parent
      asleep (a deadlock);
    - C3 against V5: whichever mmput comes last runs exit_mmap (goals:
      each side, in some execution) and frees both pages; the other must
      not.  A copy_mm that did not take the child's reference lets the
      first mmput tear the mm down under the other task (V4's read of
      page 0 fails, or the second mmput runs with mm_users below zero).
    Harmless: C1 against V1-V3 (the parent only sleeps meanwhile).

    The checks: V4 found the child's vfork_done cleared and page 0 mapped;
    at the end the mm is torn down exactly once (mm_users 0, no vma, every
    page freed: the leak and page-state checkers of ``boot_checked``).
    """
    kernel = boot_checked(sim, npages=8)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    a0, a1 = vma.vm_start, vma.vm_start + PAGE_SIZE
    await fault_in(mm, a0, write=True)
    parent = TaskStruct("parent", mm)
    runqueue = WaitQueueHead("runqueue")
    woken: list[TaskStruct] = []
    read: dict[str, Any] = {}

    async def wake_up_new_task(child: TaskStruct) -> None:
        await step("V2. wake_up_new_task(child)", writes=(runqueue,))
        woken.append(child)
        wake_all(runqueue)

    async def parent_side() -> None:
        child = await do_fork(parent, CLONE_VM | CLONE_VFORK, "child", wake_up_new_task)
        await step("V4. the parent runs again", reads=((child, "vfork_done"),))
        if child.vfork_done is not None:
            raise VforkParentRanEarly(
                "the vfork parent returned from do_fork while the child had not yet "
                "released the shared mm (mm_release): both run on one address space")
        read["ret"] = await fault_in(mm, a0, write=False)
        read["pte"] = pte_get(mm, a0)
        if await exit_mm(parent):
            reach(PARENT_TORE_DOWN)

    async def child_side() -> None:
        await wait_event(runqueue, lambda: bool(woken), label="child: scheduled in")
        child = woken[0]
        await fault_in(mm, a1, write=True)
        if await exit_mm(child):
            reach(CHILD_TORE_DOWN)

    async with sim.cpus() as cpus:
        cpus.start(parent_side, name="parent")
        cpus.start(child_side, name="child")
    pte = read.get("pte")
    sim.check(not read["ret"] & VM_FAULT_ERROR and pte is not None
              and pte.present, f"the parent's read of its page after vfork returned "
              f"{read['ret']:#x}, pte {pte!r}: its memory went away under it")
    sim.check(mm.mm_users.counter == 0 and not list(mm.vmas()),
              f"after both tasks exited mm_users is {mm.mm_users.counter}, "
              f"vmas {list(mm.vmas())}: not torn down exactly once")


__all__ = ["CHILD_TORE_DOWN", "PARENT_SLEPT", "PARENT_TORE_DOWN", "VforkParentRanEarly",
           "vfork_vs_exit"]
