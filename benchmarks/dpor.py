"""DPOR benchmark: executions and time on the programs of the DPOR
literature next to their published counts, the cost of an unbounded-DPOR
execution against a Random one, and the main job's wall time.

Run:  python benchmarks/dpor.py [--quick] [--no-main-job] [--only-parallel] [--jobs N]

Everything is measured in this one run (the main job in child processes:
one plain ``mmemu run``, one with ``--jobs N``; the exact split of single
suites with a worker pool started beforehand), so ratios are
meaningful even on a loaded machine.  CPU seconds are printed beside wall
seconds: on a busy machine the CPU figure is what one idle core would take.
This is a script, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import mmemu
from mmemu.benchmarks import dpor_programs as P


def _explore(sc: Any, reduction: str = "dpor") -> tuple[mmemu.Result, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    res = mmemu.explore(sc, strategy=mmemu.DFS(reduction=reduction), executions=10_000_000,
                        stop_on_failure=False, shrink=False)
    return res, time.perf_counter() - wall, time.process_time() - cpu


def programs(quick: bool) -> None:
    print("Published DPOR benchmarks: optimal DPOR (reduction='dpor') and source-DPOR")
    print(f"{'program':28s} {'published':>9s} {'dpor':>7s} {'blocked':>7s} {'ratio':>6s} "
          f"{'cpu s':>7s} {'source':>7s} {'blocked':>7s} {'cpu s':>7s}  source of the count")
    for name, make, sizes, want, where in P.PROGRAMS:
        for n in sizes[:2] if quick else sizes:
            sc = make(n)
            res, _w, cpu = _explore(sc)
            src, _w2, cpu2 = _explore(sc, "source")
            published = want(n)
            total = res.executions + res.blocked
            print(f"{name + f'({n})':28s} {published:9d} {res.executions:7d} {res.blocked:7d} "
                  f"{total / published:6.3f} {cpu:7.2f} {src.executions:7d} {src.blocked:7d} "
                  f"{cpu2:7.2f}  {where}", flush=True)


class _Count:
    steps = 0


def _per_step(name: str, strategy: Any, n: int, params: dict[str, Any]) -> tuple[float, float, int]:
    count = _Count()
    inner_end = strategy.end

    def end(sim: Any) -> None:
        if not sim.abandoned:
            count.steps += sim.steps
        inner_end(sim)

    strategy.end = end  # type: ignore[method-assign]
    cpu = time.process_time()
    res = mmemu.explore(name, strategy=strategy, executions=n, params=params)
    spent = time.process_time() - cpu
    return spent / res.executions, spent / max(count.steps, 1), res.executions


def cost_per_execution(quick: bool) -> None:
    print()
    print("Cost of an execution: unbounded DPOR against Random, same suite, same process")
    print(f"{'suite':42s} {'random ms/ex':>12s} {'dpor ms/ex':>10s} {'ratio':>6s} "
          f"{'random us/step':>14s} {'dpor us/step':>12s} {'ratio':>6s}")
    n = 150 if quick else 400
    for name, params in (("mm:fault-vs-truncate", {}), ("migrate:fault-vs-migration", {}),
                         ("notifier:reclaim-vs-fault", {"driver": "kvm"}),
                         ("pagecache:lookup-vs-migration", {})):
        rows = []
        for _ in range(3):
            r = _per_step(name, mmemu.Random(1), n, params)
            d = _per_step(name, mmemu.DFS(), n, params)
            rows.append((r, d))
        r_ex = statistics.median(x[0][0] for x in rows) * 1e3
        d_ex = statistics.median(x[1][0] for x in rows) * 1e3
        r_st = statistics.median(x[0][1] for x in rows) * 1e6
        d_st = statistics.median(x[1][1] for x in rows) * 1e6
        label = name + (f" {params}" if params else "")
        print(f"{label:42s} {r_ex:12.2f} {d_ex:10.2f} {d_ex / r_ex:6.2f} {r_st:14.1f} "
              f"{d_st:12.1f} {d_st / r_st:6.2f}", flush=True)
    print("(an unbounded search also reaches long executions a random one rarely "
          "draws: the per-step figures compare the bookkeeping)")


def main_job(jobs: int) -> None:
    print()
    print("The main job (mmemu run: every suite, exhaustive unless the suite declares a bound)")
    counts = {}
    for j in (1, jobs) if jobs > 1 else (1,):
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "mmemu.cli", "run", "--json"]
        if j > 1:
            cmd += ["--jobs", str(j)]  # N runs at a time, each whole in one worker
        before = os.times()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        after = os.times()
        wall = time.perf_counter() - t0
        cpu = (after.children_user - before.children_user) + \
            (after.children_system - before.children_system)
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        counts[j] = [(r["suite"], json.dumps(r["params"], sort_keys=True), r["executions"])
                     for r in rows]
        print(f"  {'one process' if j == 1 else f'--jobs {j}':>11}: exit {out.returncode}, "
              f"{len(rows)} runs, {sum(r['executions'] for r in rows)} executions, "
              f"wall {wall:.1f} s, cpu {cpu:.1f} s (all processes)", flush=True)
    if len(counts) == 2:
        print(f"  same runs and executions per run: {counts[1] == counts[jobs]}")


#: suites the exact split is measured on (unbounded optimal DPOR)
SPLIT_SUITES = [("migrate:fault-vs-migration", {}),
                ("notifier:exit-vs-reclaim", {"api": "modern", "driver": "hmm"}),
                ("cow:wp-fault-vs-guest-read", {"api": "modern", "driver": "kvm"})]


def split(jobs: int) -> None:
    """One suite split over ``jobs`` workers against one process, CPU of
    every process counted (the pool is started before timing)."""
    from mmemu.engine import _parallel

    print()
    print(f"One suite split exactly over --jobs {jobs} (optimal DPOR) against one process")
    print(f"{'suite':<44} {'executions':>10} {'1 proc s':>9} {'split s':>8} {'speed-up':>8} "
          f"{'cpu ratio':>9} {'units':>6} {'discarded':>9} same")
    _parallel.explore_parallel("demo:lost-update-locked", strategy=mmemu.DFS(), jobs=jobs)
    for name, params in SPLIT_SUITES:
        t0, c0 = time.perf_counter(), time.process_time()
        one = mmemu.explore(name, strategy=mmemu.DFS(), executions=10**6, params=params)
        t1, c1 = time.perf_counter() - t0, time.process_time() - c0
        before = _worker_cpu(jobs)
        t0, c0 = time.perf_counter(), time.process_time()
        par = _parallel.explore_parallel(name, strategy=mmemu.DFS(), executions=10**6, params=params,
                                         jobs=jobs)
        t2, c2 = time.perf_counter() - t0, time.process_time() - c0
        c2 += _worker_cpu(jobs) - before
        same = (par.executions, par.blocked, par.traces) == (one.executions, one.blocked,
                                                               one.traces)
        label = name + ("" if not params else f" [{params.get('driver')}]")
        print(f"{label:<44} {one.executions:>10} {t1:>9.2f} {t2:>8.2f} {t1 / t2:>7.2f}x "
              f"{c2 / c1:>8.2f}x {sum(u for _w, u, _e in par.workers):>6} "
              f"{par.discarded:>9} {same}", flush=True)


def _worker_cpu(jobs: int) -> float:
    """CPU seconds of the kept worker pool's processes so far (Linux /proc)."""
    from mmemu.engine import _parallel

    pool = _parallel._POOLS.get(jobs)
    total = 0.0
    for pid in list(getattr(pool, "_processes", {}) or {}):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run() -> None:
    quick = "--quick" in sys.argv
    jobs = 2
    if "--jobs" in sys.argv:
        jobs = int(sys.argv[sys.argv.index("--jobs") + 1])
    if "--only-parallel" in sys.argv:
        split(jobs)
        main_job(jobs)
        return
    programs(quick)
    cost_per_execution(quick)
    split(jobs)
    if "--no-main-job" not in sys.argv:
        main_job(jobs)


if __name__ == "__main__":
    run()
