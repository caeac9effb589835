"""The main job's cost: every suite, every parameter combination, its default
budget (what ``mmemu run`` does), on one core.

Run:  python benchmarks/main_job.py [--family AREA ...] [--top N]

Prints, per suite family (the part of the name before the colon), the runs,
executions, whether every run was exhausted, and the CPU time (process time,
so a busy machine inflates it less than wall time), then the totals; with
``--top N``, also the N suites that cost the most CPU (all their runs).  A
script, not a test: it asserts nothing; compare figures from one run.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import mmemu
from mmemu.engine import all_scenarios
from mmemu.engine._strategies import make_strategy


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", nargs="*", help="only these families (cow, ksm, notifier, ...)")
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest suites")
    args = ap.parse_args(argv)
    per: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
    suites: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for sc in all_scenarios():
        if sc.expect != "pass":
            continue
        family = sc.name.split(":")[0]
        if args.family and family not in args.family:
            continue
        for params in sc.combinations():
            strategy = make_strategy(sc.strategy, max_preemptions=sc.max_preemptions)
            c, w = time.process_time(), time.perf_counter()
            res = mmemu.explore(sc.name, strategy=strategy, executions=sc.executions,
                                params=params)
            row = per[family]
            row[0] += 1
            row[1] += res.executions
            row[2] += int(res.exhausted and res.failure is None)
            row[3] += time.process_time() - c
            row[4] += time.perf_counter() - w
            srow = suites[sc.name]
            srow[0] += 1
            srow[1] += res.executions
            srow[2] += time.process_time() - c
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"{'family':<14} {'runs':>5} {'executions':>11} {'exhausted':>10} {'cpu s':>8} {'wall s':>8}")
    for family, (runs, execs, ok, c, w) in sorted(per.items()):
        print(f"{family:<14} {runs:>5} {execs:>11} {f'{ok}/{runs}':>10} {c:>8.2f} {w:>8.2f}")
    runs = sum(int(r[0]) for r in per.values())
    execs = sum(int(r[1]) for r in per.values())
    ok = sum(int(r[2]) for r in per.values())
    print(f"{'total':<14} {runs:>5} {execs:>11} {f'{ok}/{runs}':>10} {cpu:>8.2f} {wall:>8.2f}")
    if args.top:
        print()
        print(f"{'suite':<44} {'runs':>5} {'executions':>11} {'cpu s':>8}")
        costly = sorted(suites.items(), key=lambda kv: (-kv[1][2], kv[0]))[:args.top]
        for name, (n, ex, c) in costly:
            print(f"{name:<44} {int(n):>5} {int(ex):>11} {c:>8.2f}")


if __name__ == "__main__":
    main()
