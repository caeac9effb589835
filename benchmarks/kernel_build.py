"""Benchmark: the cost of building a big address space in the emulated kernel.

Run:  python benchmarks/kernel_build.py [--vmas N] [--pages N] [--fault N]

Boots a kernel with room for the file, creates one mm with ``--vmas`` file
vmas (default 10,000) that together map a ``--pages``-page file (default
100,000), then faults ``--fault`` pages in (default: one per vma).  Prints
the wall time of each phase (measured without tracemalloc) and the memory it
allocated (measured in a second run under tracemalloc), per file page for the
build and per faulted page for the faults.  Design targets: the build under
2 s and under 300 bytes per file page (page tables and Page objects are
created lazily, only for what is faulted).

A script, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

import mmemu
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.filemap import AddressSpace
from mmemu.mm.init import boot
from mmemu.mm.memory import handle_mm_fault, populated_ptes
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, mm_alloc


def _run(nvmas: int, npages: int, nfault: int, traced: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def mark() -> tuple[float, int]:
        gc.collect()
        mem = tracemalloc.get_traced_memory()[0] if traced else 0
        return time.perf_counter(), mem

    async def scenario(sim: Any) -> None:
        t0, m0 = mark()
        kernel = boot(sim, npages=npages + nfault + 16)
        mapping = AddressSpace(kernel, "bigfile", i_size=npages * PAGE_SIZE)
        mm = mm_alloc(kernel)
        per_vma = npages // nvmas
        await down_write(mm.mmap_sem)
        vmas = []
        for i in range(nvmas):
            vmas.append(await do_mmap(mm, 0, per_vma * PAGE_SIZE,
                                      VM_READ | VM_WRITE | VM_SHARED,
                                      file=mapping, pgoff=i * per_vma))
        await up_write(mm.mmap_sem)
        t1, m1 = mark()
        step = max(1, nvmas // max(1, nfault))
        faulted = 0
        for vma in vmas[::step][:nfault]:
            await handle_mm_fault(mm, vma, vma.vm_start, False)
            faulted += 1
        t2, m2 = mark()
        out.update(build_s=t1 - t0, build_bytes=m1 - m0, fault_s=t2 - t1,
                   fault_bytes=m2 - m1, faulted=faulted, vmas=mm.map_count,
                   ptes=len(populated_ptes(mm, 0, 1 << 48)),
                   pages_created=len(kernel.page_alloc.pages))

    res = mmemu.explore(scenario, strategy="random", executions=1, shrink=False)
    if res.failure is not None:
        raise SystemExit(res.failure.report())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmas", type=int, default=10_000)
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--fault", type=int, default=None, help="pages to fault in (default: one per vma)")
    a = ap.parse_args()
    nfault = a.vmas if a.fault is None else a.fault
    timed = _run(a.vmas, a.pages, nfault, traced=False)
    tracemalloc.start()
    traced = _run(a.vmas, a.pages, nfault, traced=True)
    tracemalloc.stop()
    print(f"mm with {timed['vmas']:,} vmas over a {a.pages:,}-page file")
    print(f"  build: {timed['build_s']:.3f} s, {traced['build_bytes'] / 1e6:.2f} MB "
          f"= {traced['build_bytes'] / a.pages:.0f} bytes per file page "
          f"({traced['build_bytes'] / max(1, timed['vmas']):.0f} bytes per vma)")
    nf = max(1, timed["faulted"])
    print(f"  fault in {timed['faulted']:,} pages: {timed['fault_s']:.3f} s "
          f"({timed['fault_s'] / nf * 1e6:.0f} us per fault), "
          f"{traced['fault_bytes'] / 1e6:.2f} MB = {traced['fault_bytes'] / nf:.0f} bytes per "
          f"faulted page (Page, pagecache slot, pte, page tables)")
    print(f"  Page objects created: {timed['pages_created']:,} "
          f"(of {a.pages + nfault + 16:,} the kernel was booted with); ptes: {timed['ptes']:,}")


if __name__ == "__main__":
    main()
