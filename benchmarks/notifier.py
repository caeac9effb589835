"""Benchmarks of the notifier area: executions/s of each notifier suite
under Random (KVM driver), and mm_take_all_locks time against the vma count.

Run: python benchmarks/notifier.py [--executions N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import mmemu
from mmemu.engine import all_scenarios
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.init import boot
from mmemu.mm.mmap import mm_drop_all_locks, mm_take_all_locks
from mmemu.races.locks import build_mm


def suites(executions: int) -> None:
    print(f"{'suite':36} {'executions':>10} {'time s':>8} {'exec/s':>9}")
    for sc in all_scenarios():
        if not sc.name.startswith(("notifier:", "locks:")):
            continue
        params = {"driver": "kvm"} if "driver" in sc.axes else {}
        t = time.perf_counter()
        res = mmemu.explore(sc.name, strategy="random", executions=executions, seed=1,
                            params=params)
        dt = time.perf_counter() - t
        status = "" if res.failure is None else f"  FAILED: {res.failure.kind}"
        print(f"{sc.name:36} {res.executions:>10} {dt:>8.2f} {res.executions / dt:>9.0f}{status}")


def take_all_locks(nvmas: int) -> tuple[float, float, int]:
    """(take s, drop s, steps) for an mm of ``nvmas`` vmas sharing 10 anon_vmas
    and 10 mappings (one CPU, one execution)."""
    times: dict[str, float] = {}

    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2)
        mm, _, _ = build_mm(kernel, nvmas, 10, 10)

        async def cpu() -> None:
            await down_write(mm.mmap_sem)
            t0 = time.perf_counter()
            assert await mm_take_all_locks(mm) == 0
            t1 = time.perf_counter()
            await mm_drop_all_locks(mm)
            t2 = time.perf_counter()
            await up_write(mm.mmap_sem)
            times["take"], times["drop"] = t1 - t0, t2 - t1
            times["steps"] = sim.steps

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="register")

    res = mmemu.explore(scenario, executions=1, max_steps=20 * nvmas + 1000)
    assert res.failure is None, res.failure.report()
    return times["take"], times["drop"], int(times["steps"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--executions", type=int, default=2000)
    args = ap.parse_args()
    suites(args.executions)
    print()
    print(f"{'vmas':>8} {'take s':>8} {'drop s':>8} {'steps':>8} {'us/vma (take)':>14}")
    for n in (1_000, 10_000, 100_000):
        take, drop, steps = take_all_locks(n)
        print(f"{n:>8} {take:>8.3f} {drop:>8.3f} {steps:>8} {take / n * 1e6:>14.2f}")


if __name__ == "__main__":
    main()
