"""The exact split's speed-up on an idle machine, measured in virtual time.

Run:  python benchmarks/split_sim.py [--jobs N] [--rounds R] [--quick] [SUITE ...]

The shared 2-core machine this project is developed on is rarely idle, so
wall-clock speed-ups of ``--jobs 2`` there say more about the other load
than about the split.  This benchmark runs the real coordinator
(``_parallel._SplitRun``) on the real units, in one process, with a
*virtual-time* backend: every unit runs in a thread of its own, and the
threads take turns one execution at a time, in the order a machine with N
idle cores would run them.  Each slice of a unit (the analysis of one
execution, the stop-board check, the next execution) advances its worker's
virtual clock by the CPU time the slice really took (``time.thread_time``);
the pickling of a unit and of its result is timed and added the same way,
and the coordinator's own CPU time delays its decisions.  A stop request
posted at virtual time T is seen by a unit's first check at or after T.

So the figure is: what the split would take on N otherwise idle cores,
against one process's CPU time for the same exploration (same run, same
machine state), with the split's real choices (speculation, discards,
steals).  The one process runs before and after each split (``--rounds R``
splits, alternating); the figures are medians, and "drift" is the spread of
the one-process runs (a busy machine changes what the same work costs).  It leaves out what a real machine adds: process start-up (the pool
is kept between explorations), IPC latency, cache effects, and the
coordinator competing with the workers for a core.  The benchmark also
checks that the split's executions, blocked executions and traces equal the
single process's.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import trio

import mmemu
from mmemu.benchmarks import dpor_programs as bp
from mmemu.engine import _explore, _parallel

#: the suites measured by default: each explores >= 1,500 executions under
#: unbounded optimal DPOR
SUITES: list[tuple[str, dict[str, Any]]] = [
    ("notifier:exit-vs-reclaim", {"api": "modern", "driver": "hmm"}),
    ("migrate:fault-vs-migration", {}),
]

_LASTZERO = bp.lastzero(10)


async def lastzero10(sim: Any) -> None:
    """lastzero(10) (benchmarks/dpor_programs.py): 3,328 executions."""
    await _LASTZERO(sim)


_here = threading.local()


class _Worker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.clock = 0.0
        self.fut: object | None = None
        self.thread: threading.Thread | None = None
        self.go = threading.Semaphore(0)
        self.paused = threading.Semaphore(0)
        self.slice_cpu = 0.0
        self.mark = 0.0
        self.done = False
        self.result: dict[str, Any] | None = None


class VirtualPool(_parallel._Backend):
    """``slots`` idle cores in virtual time (see the module docstring)."""

    stops = True

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.workers = [_Worker(f"virtual {i}") for i in range(slots)]
        self.queue: list[tuple[object, dict[str, Any]]] = []
        self.board = [0] * _parallel.STOP_SLOTS
        self.uids: dict[object, int] = {}
        self.now = 0.0
        self.finished: dict[object, dict[str, Any]] = {}
        self.coordinator_cpu = 0.0
        #: CPU time of every unit slice, every worker
        self.worker_cpu = 0.0
        self._mark = time.thread_time()

    # -- the coordinator's side

    def _coordinator_time(self) -> None:
        """The coordinator's CPU since it last waited delays it."""
        t = time.thread_time()
        self.coordinator_cpu += t - self._mark
        self.now += t - self._mark
        self._mark = t

    def submit(self, unit: dict[str, Any]) -> Any:
        self._coordinator_time()
        fut = object()
        self.uids[fut] = int(unit["uid"])
        self.queue.append((fut, unit))
        self._start_idle()
        self._mark = time.thread_time()
        return fut

    def request_stop(self, fut: Any, how: int = _parallel.CEDE) -> None:
        uid = self.uids.get(fut)
        if uid is not None:
            self.board[uid % _parallel.STOP_SLOTS] = uid if how == _parallel.CEDE else -uid

    def cancel(self, futs: Iterable[Any]) -> set[Any]:
        drop = set(futs)
        gone = {f for f, _u in self.queue if f in drop}
        self.queue = [(f, u) for f, u in self.queue if f not in drop]
        return gone

    def result(self, fut: Any) -> dict[str, Any]:
        return self.finished.pop(fut)

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        self._coordinator_time()
        try:
            return self._advance(pending)
        finally:
            self._mark = time.thread_time()

    # -- virtual time

    def _start_idle(self) -> None:
        for w in self.workers:
            if w.fut is None and self.queue:
                fut, unit = self.queue.pop(0)
                w.clock = max(w.clock, self.now)
                t0 = time.thread_time()
                unit = pickle.loads(pickle.dumps(unit))  # what IPC costs
                w.clock += time.thread_time() - t0
                self.worker_cpu += time.thread_time() - t0
                self._launch(w, fut, unit)

    def _launch(self, w: _Worker, fut: object, unit: dict[str, Any]) -> None:
        w.fut, w.done, w.result = fut, False, None

        def body() -> None:
            _here.worker = w
            w.go.acquire()
            w.mark = time.thread_time()
            res = trio.run(_parallel._run_unit_async, unit)
            res = pickle.loads(pickle.dumps(res))  # what IPC costs
            w.slice_cpu = time.thread_time() - w.mark
            w.result = res
            w.done = True
            w.paused.release()

        w.thread = threading.Thread(target=body, daemon=True)
        w.thread.start()
        self._resume(w)

    def _resume(self, w: _Worker) -> None:
        """Let ``w``'s unit run one slice (until its next execution ends)."""
        w.go.release()
        w.paused.acquire()
        w.clock += w.slice_cpu
        self.worker_cpu += w.slice_cpu

    def _advance(self, pending: set[Any]) -> set[Any]:
        """Run slices, earliest virtual clock first, until a unit of
        ``pending`` finishes; the coordinator then acts at that time."""
        while True:
            busy = [w for w in self.workers if w.fut is not None]
            if not busy:
                return set()
            w = min(busy, key=lambda x: (x.clock, x.name))
            if w.done:
                assert w.thread is not None and w.result is not None
                w.thread.join()
                self.now = max(self.now, w.clock)
                fut = w.fut
                self.finished[fut] = w.result
                w.fut = None
                self._start_idle()  # a queued unit starts without the coordinator
                if fut in pending:
                    return {fut}
                continue
            self._resume(w)


def _install() -> None:
    """Units pause after each execution (see the module docstring)."""
    run = _explore._Runner.run

    async def paused_run(self: Any, chooser: Any, **kw: Any) -> Any:
        sim = await run(self, chooser, **kw)
        w: _Worker | None = getattr(_here, "worker", None)
        if w is not None:
            # a slice ends with an execution; the next one starts with its
            # analysis and the unit's stop-board check
            w.slice_cpu = time.thread_time() - w.mark
            w.paused.release()
            w.go.acquire()
            w.mark = time.thread_time()
        return sim

    _explore._Runner.run = paused_run  # type: ignore[method-assign]


def _single(sc: Any, params: dict[str, Any]) -> tuple[Any, float]:
    t0 = time.process_time()
    one = mmemu.explore(sc, strategy=mmemu.DFS(), executions=10**6, params=params)
    return one, time.process_time() - t0


def _split(sc: Any, params: dict[str, Any], jobs: int) -> tuple[Any, VirtualPool]:
    pools: list[VirtualPool] = []

    def make() -> VirtualPool:
        pools.append(VirtualPool(jobs))
        _parallel._BOARD = pools[-1].board
        return pools[-1]

    inline = _parallel._Inline
    _parallel._Inline = make  # type: ignore[misc,assignment]
    try:
        par = _parallel.explore_parallel(sc, strategy=mmemu.DFS(), executions=10**6,
                                         params=params, jobs=1, shrink=False)
    finally:
        _parallel._Inline = inline  # type: ignore[misc]
        _parallel._BOARD = None
    return par, pools[-1]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def measure(sc: Any, params: dict[str, Any], jobs: int, rounds: int = 1) -> dict[str, Any]:
    # One process and the split alternate, the one process first and last:
    # on a busy machine the CPU time of the same work drifts with the load,
    # so the figures are medians (of ``rounds`` splits and ``rounds + 1``
    # single runs), and "drift" is the spread of the single runs.
    one, t = _single(sc, params)
    singles = [t]
    spans: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        par, pool = _split(sc, params, jobs)
        spans.append(max([pool.now] + [w.clock for w in pool.workers]))
        cpus.append(pool.worker_cpu)
        _one, t = _single(sc, params)
        singles.append(t)
    single = _median(singles)
    makespan = _median(spans)
    worker_cpu = _median(cpus)
    same = (par.executions, par.blocked, par.traces) == (one.executions, one.blocked, one.traces)
    return {"executions": one.executions, "single": single, "makespan": makespan,
            "speedup": single / makespan, "units": sum(u for _w, u, _e in par.workers),
            "steals": par.steals, "discarded": par.discarded, "same": same,
            "coordinator": pool.coordinator_cpu, "busy": worker_cpu / (jobs * makespan),
            "cpu_ratio": worker_cpu / single,
            "split": [e for _w, _u, e in par.workers],
            "drift": (max(singles) - min(singles)) / single}


def run() -> None:
    jobs = 2
    args = sys.argv[1:]
    if "--jobs" in args:
        k = args.index("--jobs")
        jobs = int(args[k + 1])
        del args[k:k + 2]
    rounds = 1
    if "--rounds" in args:
        k = args.index("--rounds")
        rounds = int(args[k + 1])
        del args[k:k + 2]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    _install()
    todo: list[tuple[str, Any, dict[str, Any]]] = []
    if args:
        todo = [(a, a, {}) for a in args]
    else:
        todo = [(f"{n} {p.get('driver', '')}".strip(), n, p) for n, p in SUITES]
        todo.append(("lastzero(10)", lastzero10, {}))
        if quick:
            todo = todo[:1]
    print(f"The exact split on {jobs} idle cores, in virtual time (load now "
          f"{os.getloadavg()[0]:.1f}; CPU times, so the load matters little)")
    print(f"{'exploration':<36} {'executions':>10} {'1 proc cpu s':>12} {'split s':>8} "
          f"{'speed-up':>8} {'cpu ratio':>9} {'busy':>5} {'units':>6} {'steals':>6} "
          f"{'discarded':>9} {'coord s':>7} {'drift':>5} same")
    for label, sc, params in todo:
        r = measure(sc, params, jobs, rounds)
        print(f"{label:<36} {r['executions']:>10} {r['single']:>12.2f} {r['makespan']:>8.2f} "
              f"{r['speedup']:>7.2f}x {r['cpu_ratio']:>8.2f}x {r['busy']:>5.0%} "
              f"{r['units']:>6} {r['steals']:>6} {r['discarded']:>9} "
              f"{r['coordinator']:>7.2f} {r['drift']:>5.0%} {r['same']}", flush=True)


if __name__ == "__main__":
    run()
