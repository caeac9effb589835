"""Shared helpers of the tests of the kernel's call sites."""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.memory import fault_in
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, mm_alloc


def labels(outcome: mmemu.Outcome, cpu_name: str) -> list[str]:
    """The step labels one CPU ran, in order."""
    tr = outcome.trace
    return [e.label for e in tr.events if tr.cpu_name(e.cpu) == cpu_name]


def run_setup(fn: Any) -> None:
    """Run a scenario made of setup code only (no CPUs); its checks must hold."""
    res = mmemu.explore(fn, strategy="dfs", executions=1)
    assert res.failure is None, res.failure.report()


async def anon_mm(sim: Any, npages: int = 1, *, faulted: int | None = None,
                  api: str = "2.6.27") -> tuple[Any, Any, Any]:
    """Setup: a kernel, an mm with one anonymous read-write vma of ``npages``
    pages, the first ``faulted`` of them (default all) written once."""
    kernel = boot_checked(sim, npages=8, api=api)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, npages * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    for i in range(npages if faulted is None else faulted):
        await fault_in(mm, vma.vm_start + i * PAGE_SIZE, write=True)
    return kernel, mm, vma
