"""Benchmark: the emulated kernel's suites, their cost per step, and building a big mm.

Run:  python benchmarks/kernel.py [--executions N] [--quick]

Prints, from one run:
1. executions/s of each kernel suite (pagecache:*, mm:*, migrate:*) under
   Random, with the median cost per step, next to the engine's own cost per
   step (two CPUs that switch at every step, no model) measured in the same
   process: the ratio is what the kernel model adds per step;
2. the time and memory to build an mm with 10,000 vmas over a 100,000-page
   file (benchmarks/kernel_build.py; targets: under 2 s, under 300 bytes per
   file page).

A script, not a test: it prints numbers and asserts nothing.  On a shared
machine figures are noisy; compare ratios printed by one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine as engine_bench  # noqa: E402  (benchmarks/engine.py)
import kernel_build  # noqa: E402  (benchmarks/kernel_build.py)

import mmemu  # noqa: E402
from mmemu.engine import all_scenarios  # noqa: E402

REPEATS = 5


def _kernel_suites() -> list[tuple[str, dict[str, object]]]:
    out = []
    for sc in all_scenarios():
        if sc.expect != "pass" or sc.name.split(":")[0] not in ("pagecache", "mm", "migrate"):
            continue
        for params in sc.combinations():
            out.append((sc.name, params))
    return out


def _suite_rate(name: str, params: dict[str, object], executions: int) -> tuple[float, float]:
    """(executions/s, seconds per step) of Random explorations, median of REPEATS;
    steps per execution are averaged over 20 executions run beforehand."""
    rates, per_step = [], []
    steps = _steps_per_execution(name, params)
    for rep in range(REPEATS):
        t0 = time.perf_counter()
        res = mmemu.explore(name, strategy=mmemu.Random(rep), executions=executions,
                            params=params, shrink=False)
        dt = time.perf_counter() - t0
        if res.failure is not None:
            raise SystemExit(f"{name} failed on the correct model:\n{res.failure.report()}")
        rates.append(res.executions / dt)
        per_step.append(dt / (res.executions * steps))
    return statistics.median(rates), statistics.median(per_step)


_STEPS: dict[tuple[str, str], float] = {}


def _steps_per_execution(name: str, params: dict[str, object]) -> float:
    key = (name, repr(sorted(params.items())))
    if key not in _STEPS:
        counts: list[int] = []
        strategy = mmemu.Random(12345)

        async def run() -> None:
            from mmemu.engine._explore import _Runner
            from mmemu.engine._registry import get_scenario
            runner = _Runner(get_scenario(name).fn, name, dict(params), (), 10_000)
            for i in range(20):
                sim = await runner.run(strategy.begin(i), record=False)
                counts.append(sim.steps)

        strategy.bind(12345)
        trio.run(run)
        _STEPS[key] = statistics.mean(counts)
    return _STEPS[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executions", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="fewer executions, no 100k-page build")
    a = ap.parse_args()
    executions = 100 if a.quick else a.executions

    bare = statistics.median(trio.run(engine_bench._engine_step, 20_000) for _ in range(REPEATS))
    rows = []
    for name, params in _kernel_suites():
        rate, per_step = _suite_rate(name, params, executions)
        rows.append((name, ",".join(f"{k}={v}" for k, v in params.items()) or "-", rate,
                     _steps_per_execution(name, params), per_step))
    print(f"kernel suites under Random ({executions} executions, median of {REPEATS})")
    print(f"  engine step alone (two CPUs switching every step): {bare * 1e6:.2f} us")
    print(f"  {'suite':<30} {'params':<22} {'exec/s':>8} {'steps/exec':>10} {'us/step':>8} {'x engine':>8}")
    for name, params, rate, steps, per_step in rows:
        print(f"  {name:<30} {params:<22} {rate:>8.0f} {steps:>10.1f} {per_step * 1e6:>8.2f} "
              f"{per_step / bare:>8.2f}")

    nvmas, npages = (1_000, 10_000) if a.quick else (10_000, 100_000)
    timed = kernel_build._run(nvmas, npages, nvmas, traced=False)
    tracemalloc.start()
    traced = kernel_build._run(nvmas, npages, nvmas, traced=True)
    tracemalloc.stop()
    print(f"building an mm with {timed['vmas']:,} vmas over a {npages:,}-page file")
    print(f"  build: {timed['build_s']:.3f} s (target < 2 s), "
          f"{traced['build_bytes'] / npages:.0f} bytes per file page (target < 300)")
    print(f"  fault in {timed['faulted']:,} pages: {timed['fault_s']:.3f} s, "
          f"{traced['fault_bytes'] / max(1, timed['faulted']):.0f} bytes per faulted page")


if __name__ == "__main__":
    main()
