"""A task letting go of its address space when it exits.

Emulates: kernel/exit.c (exit_mm) (2.6.27)

exit_mm first tells a vfork parent (mm_release, kernel/fork.c), then, under
``mmap_sem`` for read (serialising with a core dump, not modelled),
clears ``tsk->mm``, and drops its ``mm_users`` reference with mmput: the
last user runs exit_mmap.  Not modelled: core dumps, ``mm_count`` (the
lazy-TLB reference exit_mm takes before mmput), mm_update_next_owner.
"""

from __future__ import annotations

from mmemu.engine._execution import span, step
from mmemu.kernel.locking import down_read, up_read
from mmemu.mm.fork import TaskStruct, mm_release
from mmemu.mm.mmap import mmput


async def exit_mm(tsk: TaskStruct) -> bool:
    """C2-C3 of mmemu.mm.fork's vfork comment: mm_release, then mmput.
    True: this task's mmput was the last and ran exit_mmap (the kernel's
    exit_mm returns nothing)."""
    mm = tsk.mm
    with span("exit_mm"):
        if mm is None:
            return False
        await mm_release(tsk, mm)
        await down_read(mm.mmap_sem, label="exit_mm: down_read(mmap_sem)")
        await step("exit_mm: tsk->mm = NULL", writes=((tsk, "mm"),))
        tsk.mm = None
        await up_read(mm.mmap_sem, label="exit_mm: up_read(mmap_sem)")
        return await mmput(mm)


__all__ = ["exit_mm"]
