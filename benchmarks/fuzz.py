"""Time to first failure of ``mmemu fuzz`` for every shipped mutant that
applies to a driver, from the fuzzer's default settings.

For each mutant: the drivers (and notifier API generation) it can break --
a driver's own mutants (``kvm:*``) on that driver, the core's mutants on
the drivers the suites that catch them run with (the mutant's ``applies``
filter) -- and ``fuzz([driver], mutants=[m], seed=S, time=LIMIT)`` with
everything else at its default, searching for at most ``--limit`` CPU
seconds (``--wall``: wall-clock seconds, ``fuzz(time=...)``).  Printed per
mutant: the workload index that failed, the seconds (wall and CPU) and
executions until it was found (the search),
the seconds including the workload and schedule shrinking (wall, and the
process's CPU: on a shared machine the wall time is the CPU time times the
load), the workloads drawn until the failing one (or in all, for a miss),
and the minimal workload -- checked to pass without the mutant (a
failure that does not need the mutant is a bug of the model, listed at the
end, and the mutant counts as missed for that seed).  ``--no-shrink``
checks the workload as drawn instead (about half the CPU per find).
``--seeds`` repeats the search with several seeds and prints the median
over every seed, a miss counting as later than any find ("-" when the
median is a miss).

Run: python benchmarks/fuzz.py [--limit 60] [--seeds 1] [--first-seed 0]
     [--only kvm:no-count ...] [--skip M ...] [--no-shrink]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from mmemu.driver import available_drivers, load_driver
from mmemu.engine import all_mutants, all_scenarios
from mmemu.workload._fuzz import Plan, _seed_of, explore_plan, fuzz


def _on_axes(sc: Any, params: dict[str, str]) -> bool:
    """Are ``params`` among the values of the suite's fixed axes (a suite of
    the modern generation only lists ``api: ["modern"]``)?"""
    for name, value in params.items():
        values = sc.axes.get(name)
        if isinstance(values, (list, tuple)):
            # the default generation is written None on the axes
            if value not in values and not (name == "api" and value == "2.6.27"
                                            and None in values):
                return False
    return True


def targets(core: bool = True) -> list[tuple[str, str, str | None]]:
    """(mutant, driver, api) for every mutant a driver suite catches or a
    driver carries, on the first driver/api it applies to (kvm first), and
    (``core``) every other mutant of a kernel path the workload operations
    run, on kvm."""
    drivers = available_drivers()
    order = sorted(drivers, key=lambda d: (d != "kvm", d))
    all_scenarios_by_name = {s.name: s for s in all_scenarios()}
    catching: dict[str, list[Any]] = {}
    for sc in all_scenarios():
        if "driver" not in sc.axes:
            continue
        for m in sc.catches:
            catching.setdefault(m, []).append(sc)
    interval = [s.name for s in all_scenarios() if s.name.startswith("interval:")]
    out: list[tuple[str, str, str | None]] = []
    for mut in all_mutants():
        area = mut.name.split(":")[0]
        candidates = [area] if area in drivers else order
        if area not in drivers and mut.name not in catching:
            caught_by_interval = any(mut.name in all_scenarios_by_name[n].catches
                                     for n in interval)
            if area == "mmu_notifier" and caught_by_interval:
                # a core mutant of the interval tree: the interval-notifier drivers
                candidates = [d for d in order
                              if getattr(load_driver(d), "interval_notifier", False)]
            elif core:
                # a core path no driver suite catches (pagecache, reclaim,
                # truncate, fork, KSM...): the workload operations run it
                # too, with any driver attached -- kvm
                candidates = order[:1]
            else:
                continue
        for d in candidates:
            cls = load_driver(d)
            for api in ("2.6.27", "modern"):
                if api not in cls.apis:
                    continue
                params = {"driver": d, "api": api}
                suites = catching.get(mut.name, [])
                if suites and not any(sc.accepts(params) and _on_axes(sc, params)
                                      for sc in suites):
                    continue
                if not mut.applies_to(params):
                    continue
                out.append((mut.name, d, api))
                break
            else:
                continue
            break
    return out


def _median_or_miss(values: list[float | None]) -> float | None:
    """The median of per-seed times, a miss (None) counting as later than
    any find; None when the median itself is a miss."""
    ordered = sorted(values, key=lambda v: (v is None, v or 0.0))
    mid = ordered[(len(ordered) - 1) // 2]
    if len(ordered) % 2 == 1 or mid is None:
        return mid
    upper = ordered[len(ordered) // 2]
    return None if upper is None else (mid + upper) / 2


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=float, default=60.0,
                    help="CPU seconds of search per mutant and seed")
    ap.add_argument("--wall", action="store_true",
                    help="--limit is wall-clock seconds (fuzz(time=...)), not CPU")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per mutant (median shown)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="the seeds are FIRST_SEED, FIRST_SEED+1, ...")
    ap.add_argument("--only", nargs="*", default=None,
                    help="these mutants only, in this order")
    ap.add_argument("--skip", nargs="*", default=(), help="all but these mutants")
    ap.add_argument("--no-shrink", action="store_true",
                    help="do not shrink what was found: check the drawn workload")
    ap.add_argument("--plan", default=None,
                    help="explore each workload by this plan instead of the default: "
                         "PCT_EXECUTIONS,PCT_DEPTH,DFS_EXECUTIONS,DFS_PREEMPTIONS"
                         "[,BOUNDED_EXECUTIONS,BOUNDED_PREEMPTIONS] "
                         "(DFS_PREEMPTIONS 'none': unbounded)")
    ap.add_argument("--drivers-only", action="store_true",
                    help="only the mutants a driver suite catches or a driver carries")
    args = ap.parse_args()
    rows = [t for t in targets(core=not args.drivers_only)
            if (args.only is None or t[0] in args.only) and t[0] not in args.skip]
    if args.only is not None:
        rows.sort(key=lambda t: args.only.index(t[0]))
    plan = Plan()
    if args.plan is not None:
        pe, pd, de, dp, *bounded = args.plan.split(",")
        plan = Plan(int(pe), int(pd), int(de), None if dp == "none" else int(dp),
                    *(int(b) for b in bounded))
    print(f"plan: {plan}")
    print(f"{'mutant':40} {'driver':6} {'api':7} {'found':>9} {'found s':>8} {'cpu s':>6} "
          f"{'execs':>7} {'drawn':>5} {'total s':>8} {'cpu s':>6}  minimal workload")
    missed = 0
    model_bugs: list[tuple[str, str]] = []
    for mutant, driver, api in rows:
        # per seed: CPU (or wall) seconds to the first failure, or None
        # (missed within the limit); the median counts a miss as "after the
        # limit", so it is a real median over every seed, not over the finds
        found_s: list[float | None] = []
        found_cpu_s: list[float | None] = []
        total_s: list[float] = []
        cpu_s: list[float] = []
        execs: list[int] = []
        drawn: list[int] = []
        last: Any = None
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t0 = time.perf_counter()
            c0 = time.process_time()
            # the budget is CPU seconds of this process (the search runs in
            # it): on a shared machine wall time depends on the load.  It
            # ends the search only; the shrink of what was found runs on.
            found_cpu: list[float] = []

            def progress(p: Any) -> None:
                if p.phase != "fuzzing" and not found_cpu:
                    found_cpu.append(time.process_time() - c0)

            def should_stop() -> bool:
                return not found_cpu and time.process_time() - c0 > args.limit

            if args.wall:
                res = fuzz([driver], seed=seed, time=args.limit, mutants=[mutant], api=api,
                           plan=plan, progress=progress, shrink=not args.no_shrink)
            else:
                res = fuzz([driver], seed=seed, workloads=10**6, mutants=[mutant], api=api,
                           plan=plan, progress=progress, should_stop=should_stop,
                           shrink=not args.no_shrink)
            total_s.append(time.perf_counter() - t0)
            cpu_s.append(time.process_time() - c0)
            # workloads drawn until the failing one (its index + 1), or all
            drawn.append(res.index + 1 if res.index is not None else res.workloads)
            if res.failure is None or res.workload is None:
                if args.seeds > 1:
                    print(f"  {mutant} seed {seed}: missed ({res.workloads} workloads)",
                          flush=True)
                found_s.append(None)
                found_cpu_s.append(None)
                execs.append(res.executions)
                continue
            # found because of the mutant?  The minimal workload must pass
            # without it (else the fuzzer found a bug of the model itself)
            # with the seed that found it (the fuzzer explored workload i, and
            # shrank it, with the plan seeded by _seed_of(seed, i)): another
            # seed may miss a false alarm of the model that this one met
            again, _n, _i = explore_plan(res.workload, plan, _seed_of(seed, res.index or 0))
            if again is not None and again.kind == res.failure.kind:
                print(f"  {mutant} seed {seed}: the model fails without the mutant: "
                      f"{res.workload}  ({res.failure.kind})", flush=True)
                model_bugs.append((mutant, str(res.workload)))
                found_s.append(None)
                found_cpu_s.append(None)
                execs.append(res.executions)
                continue
            found_s.append(res.found_s or 0.0)
            found_cpu_s.append(found_cpu[0] if found_cpu else 0.0)
            execs.append(res.found_executions or 0)
            last = res
            if args.seeds > 1:
                print(f"  {mutant} seed {seed}: #{res.index}, {found_cpu_s[-1]:.1f} CPU s, "
                      f"{res.workload}  ({res.failure.kind})", flush=True)
        hits = sum(1 for f in found_s if f is not None)
        med_cpu = _median_or_miss(found_cpu_s)
        med_wall = _median_or_miss(found_s)
        if med_cpu is None:
            missed += 1
        where = (f"#{last.index}" if args.seeds == 1 and last is not None
                 else "MISSED" if args.seeds == 1 else f"{hits}/{args.seeds}")
        print(f"{mutant:40} {driver:6} {api or '-':7} {where:>9} "
              f"{_fmt(med_wall):>8} {_fmt(med_cpu):>6} "
              f"{int(statistics.median(execs)):>7} {int(statistics.median(drawn)):>5} "
              f"{statistics.median(total_s):>8.1f} {statistics.median(cpu_s):>6.1f}  "
              + (f"{last.workload}  ({last.failure.kind})" if last is not None else ""),
              flush=True)
    print(f"{len(rows) - missed}/{len(rows)} mutants found within {args.limit:g}s "
          f"({'wall' if args.wall else 'CPU'})")
    for mutant, wl in model_bugs:
        print(f"  while fuzzing {mutant}: the model fails without any mutant: {wl}")


if __name__ == "__main__":
    main()
