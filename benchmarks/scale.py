"""Exploration at scale: suites, mutants, peers, parallel speed-up.

Run:  python benchmarks/scale.py [--full] [--only SECTION ...]

Sections (each prints one table):
  suites    executions/s per registered suite and strategy (small budget)
  mutants   time and executions to first failure for every registered mutant
            under Random, PCT and DFS (median over seeds)
  frontrun  the two-CPU counter race explored exhaustively by mmemu (DPOR)
            and by frontrun (DPOR), in one run; frontrun is installed into
            benchmarks/.venv-frontrun if missing and runs in that interpreter
  stress    the lost update under real threads with random preemption
            (sys.setswitchinterval tiny) against mmemu: time to first detection
  parallel  --jobs 1 against --jobs 2 on a run of ~10 s or more, and the
            overhead of a Dask LocalCluster

A script, not a test: it prints numbers and asserts nothing.  The machine is
shared; compare ratios from the same run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import mmemu
from mmemu.engine import DFS, PCT, Random, all_mutants, all_scenarios
from mmemu.parallel import explore_parallel

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-frontrun"


def _table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _strategies(bound: int | None) -> list[tuple[str, Any]]:
    return [("random", lambda: Random(0)), ("pct", lambda: PCT(3, 0)),
            ("dfs", lambda: DFS(max_preemptions=bound))]


# ------------------------------------------------------------------ suites

def suites(full: bool) -> None:
    budget = 2000 if full else 300
    rows = []
    for sc in all_scenarios():
        combos = sc.combinations()
        if not combos:
            continue  # workload:run: nothing to run without a workload of its own
        params = combos[0]
        for name, make in _strategies(sc.max_preemptions):
            t0 = time.perf_counter()
            res = mmemu.explore(sc.name, strategy=make(), executions=budget, params=params,
                                shrink=False, stop_on_failure=False)
            dt = time.perf_counter() - t0
            rows.append([sc.name, name, res.executions, "yes" if res.exhausted else "no",
                         f"{res.executions / dt:,.0f}"])
    _table(f"executions/s per suite (budget {budget}, first parameter combination)",
           ["suite", "strategy", "executions", "exhausted", "ex/s"], rows)


# ----------------------------------------------------------------- mutants

def mutants(full: bool) -> None:
    seeds = list(range(7 if full else 5))
    budget = 20_000 if full else 5000
    # the first run of `mmemu mutants` for each mutant: a suite that must
    # catch it, with a driver and API generation the mutant applies to
    from mmemu._mutants import plan

    first: dict[str, tuple[Any, dict[str, Any]]] = {}
    for mutant, sc, params in plan(include_correct=False):
        assert mutant is not None
        first.setdefault(mutant, (sc, params))
    rows = []
    for mut in all_mutants():
        if mut.name not in first:
            continue
        sc, params = first[mut.name]
        for name in ("random", "pct", "dfs"):
            times, execs, found = [], [], 0
            for seed in seeds if name != "dfs" else [0]:
                strat: Any = {"random": Random(seed), "pct": PCT(3, seed),
                              "dfs": DFS(max_preemptions=sc.max_preemptions)}[name]
                t0 = time.perf_counter()
                res = mmemu.explore(sc.name, strategy=strat, executions=budget, params=params,
                                    mutants=[mut.name], shrink=False)
                times.append(time.perf_counter() - t0)
                execs.append(res.executions)
                found += res.failure is not None
            n = len(times)
            where = sc.name + "".join(f" {v}" for v in params.values())
            rows.append([mut.name, where, name, f"{found}/{n}",
                         f"{statistics.median(execs):,.0f}", f"{statistics.median(times) * 1e3:,.1f}"])
    _table(f"first failure per mutant (median over {len(seeds)} seeds; DFS is deterministic: 1 run; "
           f"budget {budget}, no shrinking)",
           ["mutant", "suite", "strategy", "found", "executions", "ms"], rows)


# ---------------------------------------------------------------- frontrun

FRONTRUN_SIDE = textwrap.dedent("""
    import json, sys, time
    import frontrun
    K = int(sys.argv[1])

    class Counter:
        def __init__(self):
            self.value = 0

        def increment(self):
            for _ in range(K):
                temp = self.value          # load
                self.value = temp + 1      # store

    t0 = time.perf_counter()
    r = frontrun.explore(setup=Counter, workers=Counter.increment, count=2,
                         invariant=lambda c: c.value == 2 * K, strategy="dpor",
                         stop_on_first=False, preemption_bound=None,
                         reproduce_on_failure=0, max_executions=10**7)
    dt = time.perf_counter() - t0
    print(json.dumps({"executions": r.num_explored, "seconds": dt,
                      "failures": len(r.failures or [])}))
""")


def _frontrun_python() -> tuple[Path | None, str]:
    py = VENV / "bin" / "python"
    if not py.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                           capture_output=True, text=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"cannot create {VENV}: {exc}"
    ok = subprocess.run([str(py), "-c", "import frontrun"], capture_output=True)
    if ok.returncode != 0:
        inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "frontrun"],
                              capture_output=True, text=True, timeout=600)
        if inst.returncode != 0:
            return None, "pip install frontrun failed: " + (inst.stderr.strip().splitlines() or ["?"])[-1]
    return py, ""


async def _counter(sim: Any) -> None:
    k = sim.params["k"]

    class Counter:
        __mmemu_name__ = "counter"
        value = 0

    c = Counter()

    async def inc() -> None:
        for _ in range(k):
            await mmemu.step("load", reads=(c,))
            tmp = c.value
            await mmemu.step("store", writes=(c,))
            c.value = tmp + 1

    async with sim.cpus() as cpus:
        cpus.start(inc)
        cpus.start(inc)
    sim.check(c.value == 2 * k, "lost update")


def frontrun(full: bool) -> None:
    py, why = _frontrun_python()
    ks = [1, 2, 3, 4] if full else [1, 2, 3]
    rows = []
    for k in ks:
        reps = 3
        mm = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res = mmemu.explore(_counter, strategy=DFS(reduction="dpor"), executions=10**7,
                                params={"k": k}, shrink=False, stop_on_failure=False)
            mm.append((time.perf_counter() - t0, res.executions))
        mm_t = statistics.median(t for t, _ in mm)
        mm_n = mm[0][1]
        if py is None:
            rows.append([k, mm_n, f"{mm_n / mm_t:,.0f}", "-", "-", "-"])
            continue
        fr = []
        for _ in range(reps):
            out = subprocess.run([str(VENV / "bin" / "frontrun"), str(py), "-c", FRONTRUN_SIDE, str(k)],
                                 capture_output=True, text=True, timeout=1200)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if not line:
                why = "frontrun run failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
                break
            fr.append(json.loads(line[-1]))
        if not fr:
            rows.append([k, mm_n, f"{mm_n / mm_t:,.0f}", "-", "-", "-"])
            continue
        fr_t = statistics.median(f["seconds"] for f in fr)
        fr_n = fr[0]["executions"]
        rows.append([k, mm_n, f"{mm_n / mm_t:,.0f}", fr_n, f"{fr_n / fr_t:,.0f}",
                     f"{(mm_n / mm_t) / (fr_n / fr_t):.1f}x"])
    _table("two-CPU counter race, exhaustive DPOR (k increments each; median of 3)",
           ["k", "mmemu executions", "mmemu ex/s", "frontrun executions", "frontrun ex/s",
            "ex/s ratio"], rows)
    if why:
        print(f"  frontrun: {why}")


# ------------------------------------------------------------------ stress

def _stress_once(seed: int, budget_s: float) -> tuple[float | None, int]:
    """Two real threads do the lost-update increment until it is lost."""
    import random as _random

    rng = _random.Random(seed)
    t0 = time.perf_counter()
    runs = 0
    while time.perf_counter() - t0 < budget_s:
        runs += 1
        box = [0]
        spin = rng.randrange(50)

        def inc() -> None:
            tmp = box[0]
            for _ in range(spin):  # a window for the interpreter to switch threads
                pass
            box[0] = tmp + 1

        ts = [threading.Thread(target=inc) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if box[0] != 2:
            return time.perf_counter() - t0, runs
    return None, runs


def stress(full: bool) -> None:
    seeds = range(7 if full else 5)
    budget_s = 10.0 if full else 3.0
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        st = [_stress_once(s, budget_s) for s in seeds]
    finally:
        sys.setswitchinterval(old)
    mm = []
    for s in seeds:
        t0 = time.perf_counter()
        res = mmemu.explore("demo:lost-update", strategy=Random(s), executions=10**6, shrink=False)
        mm.append((time.perf_counter() - t0, res.executions, res.failure is not None))
    found = [t for t, _ in st if t is not None]
    rows = [
        ["threads + setswitchinterval(1e-6)", f"{len(found)}/{len(st)}",
         f"{statistics.median(r for _, r in st):,.0f}",
         f"{statistics.median(found) * 1e3:,.1f}" if found else f"> {budget_s * 1e3:,.0f}"],
        ["mmemu random", f"{sum(f for *_, f in mm)}/{len(mm)}",
         f"{statistics.median(n for _, n, _ in mm):,.0f}",
         f"{statistics.median(t for t, _, _ in mm) * 1e3:,.1f}"],
    ]
    _table("lost update: time to first detection (median over seeds; no shrinking)",
           ["method", "found", "runs", "ms to detect"], rows)


# ---------------------------------------------------------------- parallel

def parallel(full: bool) -> None:
    target_s = 20.0 if full else 10.0
    # size the run so that --jobs 1 takes about target_s
    t0 = time.perf_counter()
    probe = explore_parallel("demo:lost-update-locked", strategy="random", executions=2000, jobs=1)
    rate = probe.executions / (time.perf_counter() - t0)
    n = int(rate * target_s)
    rows = []
    times: dict[str, float] = {}
    for label, kw in (("--jobs 1", {"jobs": 1}), ("--jobs 2", {"jobs": 2})):
        t0 = time.perf_counter()
        res = explore_parallel("demo:lost-update-locked", strategy="random", executions=n, **kw)
        times[label] = time.perf_counter() - t0
        rows.append([label, res.executions, f"{times[label]:.2f}", f"{res.executions / times[label]:,.0f}",
                     f"{times['--jobs 1'] / times[label]:.2f}x"])
    try:
        import distributed
    except ImportError:
        rows.append(["dask", "-", "-", "-", "dask[distributed] not installed"])
    else:
        t0 = time.perf_counter()
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None) as cluster:
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = explore_parallel("demo:lost-update-locked", strategy="random", executions=n,
                                   dask=cluster.scheduler_address)
            dt = time.perf_counter() - t0
        rows.append([f"dask LocalCluster (2 procs; start {start_s:.1f}s not counted)",
                     res.executions, f"{dt:.2f}", f"{res.executions / dt:,.0f}",
                     f"{times['--jobs 1'] / dt:.2f}x"])
    _table(f"parallel speed-up, demo:lost-update-locked random, {n:,} executions "
           f"(os.cpu_count()={os.cpu_count()})",
           ["run", "executions", "seconds", "ex/s", "speed-up vs --jobs 1"], rows)


SECTIONS = {"suites": suites, "mutants": mutants, "frontrun": frontrun, "stress": stress,
            "parallel": parallel}
QUICK = ["suites", "frontrun", "stress"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="every section, bigger budgets")
    ap.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="these sections")
    args = ap.parse_args(argv)
    chosen = args.only or (list(SECTIONS) if args.full else QUICK)
    for name in chosen:
        SECTIONS[name](args.full)


if __name__ == "__main__":
    main()
