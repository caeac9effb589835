"""Exploration over several processes, shards and Dask clusters.

Design
------
An exploration is cut into *units* that run anywhere and whose results are
merged deterministically:

- Random and PCT: a unit is a range of execution indexes.  Execution ``i``
  draws from its own generator seeded with ``(seed, i)`` (see
  ``_strategies._rng``), so which process runs it never changes what it does.
  PCT normally learns its step-count estimate from earlier executions, which
  would make execution ``i`` depend on what ran before it in the same
  process; here the estimate is fixed once, by a probe the parent runs
  (the longest of 16 Random executions on a separate seed stream), so a
  parallel PCT exploration is the same whatever the number of workers — but
  not the same as a sequential ``explore(strategy="pct")``.
- DFS with optimal DPOR (the default, unbounded): the exact split of
  ``_split.py``.  The coordinator (``_SplitRun``) applies the units in
  single-DFS order and speculates on the next ones; the result is the
  single DFS's (executions, blocked, traces, first failure) for any number
  of workers and any backend.  Work stealing: a pool of worker processes
  shares a *stop board* (``STOP_SLOTS`` integers of shared memory) with
  the coordinator; a unit polls its slot after each execution.  When a
  worker is idle and no branch waits, the unit in order is asked to cede
  (it hands the rest of its subtree back once a branch besides its next
  one waits in it); a speculative unit that can no longer be used is asked
  to stop at once.
- DFS with another reduction or a preemption bound: one unit (the
  reductions' state spans the whole tree), exact.
- DFS with ``reduction="none"``, and any DFS under ``--shard``: a unit is a
  *schedule prefix*: the CPUs chosen at the first ``d`` choice points.  The
  parent lists the prefixes (a DFS that never branches at or beyond choice
  point ``d``, with no reduction, so every prefix is listed once, in the
  order a single DFS visits them); each unit runs a DFS below its prefix.
  With ``reduction="none"`` the units partition the executions of a single
  DFS: same total, same first failure.  With a reduction (shards only)
  each prefix gets its own full reduction below it; the cross-branch
  information is lost, so the total is usually higher than a single DFS's,
  never lower in coverage.  ``d`` is the smallest depth giving at least
  ``32 × shards`` prefixes.

The reported failure is the one with the lowest *order* (the execution index
for Random/PCT; the prefix's position, then the execution within it, for
DFS), then shrunk by the parent in a fresh runner.  Shrinking is
deterministic, so the token is the same for any ``jobs``, any sharding and
any backend.  A failure cancels every unit ordered after it; units ordered
before it still run, since they may hold a lower one.

What crosses a process boundary is plain data: the scenario's registered
name, params, mutants, a strategy description, index ranges, prefixes; back
come dicts.  Workers look the scenario up by name.

Processes are started with ``forkserver`` (``spawn`` where there is none),
never ``fork``: the caller may be inside a trio run (signal wakeup fd, CPU
pool, I/O manager) or have threads (Dask, pytest plugins), and a forked copy
of either is undefined behaviour.  The forkserver is started once per
process with ``mmemu`` preloaded, so later pools start fast.  Workers ignore
SIGINT: a Ctrl-C in the terminal reaches the whole process group, and the
parent alone decides to stop (it cancels pending units and terminates the
workers, leaving no orphan).

Caveats: state an exploration keeps across executions (lockdep's order
graph) starts afresh in each unit, so a failure that needs an earlier
execution's state may be found at another index, or not at all; its token
still replays (it carries the earlier execution as a prelude).  Failures of
other kinds than the first are not collected (``stop_on_failure`` only).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import gc
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any

import attrs
import trio

from ._errors import ModelError
from ._coverage import Coverage, Goals, needs_recording
from ._explore import (
    Failure,
    Result,
    _check_mutants,
    _disposes,
    _resolve,
    _Runner,
    as_thorough_as_the_suite,
    check_vacuity,
    exploration_goals,
    UNGUARDED_MAIN,
    failure_kind,
    refuse_while_a_worker_starts,
)
from ._registry import Scenario, load_builtin, resolve_scenario
from ._settings import UNSET, Settings, given, resolve_settings
from ._dpor import wu_from_wire
from ._split import SplitSearch, UnitKey, unit_strategy
from ._strategies import DFS, PCT, Random, Strategy, make_strategy
from ._watchdog import WATCHDOG, Hang

#: the exact split (optimal DPOR, see _split.py), on a backend that cannot
#: ask a running unit to stop (Dask, one process): a unit runs at most this
#: many executions, then hands the rest of its subtree back.  A unit costs
#: about one execution more than its executions (a trio run, a runner, a
#: race analysis from scratch, IPC).  Worker processes are asked instead
#: (work stealing, see ``_SplitRun``): their units run uncapped.
UNIT_EXECUTIONS = 32
#: slots of the stop board a process pool shares with its workers: a unit
#: numbered ``uid`` is asked to stop when slot ``uid % STOP_SLOTS`` holds
#: ``uid`` (two requests for one slot at once: the older is lost, which
#: costs parallelism, never exactness)
STOP_SLOTS = 1024
#: choice-point prefixes per shard the DFS split aims for
PREFIXES_PER_SHARD = 32
#: deepest split tried (2 CPUs: up to 2**12 prefixes)
MAX_SPLIT_DEPTH = 12
#: executions per Random/PCT unit: big enough that a unit's fixed cost
#: (a trio run, a runner, IPC) is small, small enough that a failure
#: cancels the rest promptly
MAX_CHUNK = 500
MIN_CHUNK = 25
PCT_PROBE = 16

# Dask may run several tasks of one worker process in threads; the engine
# runs one execution per process at a time (module-level current
# simulation), so units in one process take turns.
_UNIT_LOCK = threading.Lock()


# ----------------------------------------------------------- descriptions

def strategy_spec(strategy: str | Strategy, *, seed: int,
                  max_preemptions: int | None) -> dict[str, Any]:
    """A picklable description of ``strategy`` (seed bound)."""
    strat = make_strategy(strategy, max_preemptions=max_preemptions)
    if isinstance(strat, Random):
        return {"name": "random", "seed": strat.seed if strat.seed is not None else seed}
    if isinstance(strat, PCT):
        return {"name": "pct", "depth": strat.depth,
                "seed": strat.seed if strat.seed is not None else seed}
    if isinstance(strat, DFS):
        if strat.checkpoint:
            raise ModelError("DFS checkpoints are not supported by a parallel exploration")
        return {"name": "dfs", "max_preemptions": strat.max_preemptions,
                "reduction": strat.reduction}
    raise ModelError(f"a parallel exploration needs Random, PCT or DFS (got {strat.describe()})")


def _make(spec: dict[str, Any]) -> Strategy:
    name = spec["name"]
    if name == "random":
        return Random(spec["seed"])
    if name == "pct":
        p = PCT(spec["depth"], spec["seed"])
        p.k = spec["k"]
        p.learn = False  # execution i must not depend on what ran before it here
        return p
    d = DFS(max_preemptions=spec["max_preemptions"], reduction=spec["reduction"])
    d.prefix = tuple(spec.get("prefix", ()))
    frontier = spec.get("frontier")
    d.frontier = frontier
    split = spec.get("split")
    if split is not None:
        # a unit of the exact split (see _split.py)
        d.prefix = tuple(split["prefix"])
        d.frozen = int(split["frozen"])
        d.log = []
        if split["sleep"] is not None:
            d.split_sleep = tuple(split["sleep"])
            d.split_follow = [wu_from_wire(w) for w in split["follow"]]
            d.split_extra = {int(q): x for q, x in split.get("extra") or ()}
            d.branch_event = split["j"]
        d.split_above = [(frozenset(int(q) for q in sleep), {int(q): x for q, x in extra})
                         for sleep, extra in split.get("above") or ()]
    return d


def describe_spec(spec: dict[str, Any]) -> str:
    name = spec["name"]
    if name == "random":
        return f"random(seed={spec['seed']})"
    if name == "pct":
        return f"pct(depth={spec['depth']}, seed={spec['seed']})"
    b = "∞" if spec["max_preemptions"] is None else str(spec["max_preemptions"])
    return f"dfs(max_preemptions={b}, reduction={spec['reduction']})"


def _scenario_ref(scenario: Any) -> str:
    """The name a worker process can look the scenario up by."""
    if isinstance(scenario, str):
        resolve_scenario(scenario)  # fails here, in the parent, with suggestions
        return scenario
    fn, name, _sc = _resolve(scenario)
    try:
        if resolve_scenario(name) is not fn and not isinstance(scenario, Scenario):
            raise ModelError("")
    except ModelError:
        raise ModelError(
            f"a parallel exploration runs the scenario in other processes, which look it up "
            f"by name: register {name!r} with @mmemu.scenario in an importable module") from None
    return name


# ----------------------------------------------------------------- units

def _unit_key(unit: dict[str, Any]) -> int:
    return int(unit["order"])


async def _watched(step_timeout: float, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``fn(*args)`` under the watchdog, in whichever process runs it: a
    foreign await or a step that never yields fails its execution there
    instead of hanging the worker (or the parent's prefix listing)."""
    with WATCHDOG.guard(step_timeout):
        return await fn(*args)


#: in a worker process: the pool's stop board (``STOP_SLOTS`` integers in
#: shared memory, written by the coordinator, see ``_Processes.request_stop``)
_BOARD: Any = None


def _stop_requested(unit: dict[str, Any]) -> Callable[[], int] | None:
    """How a unit of the exact split learns that the coordinator asked it to
    stop: the callable gives 0 (not asked), ``CEDE`` or ``ABANDON`` (None:
    it cannot be asked)."""
    uid = unit.get("uid")
    board = _BOARD
    if uid is None or board is None:
        return None
    slot = int(uid) % STOP_SLOTS

    def asked() -> int:
        v = board[slot]
        return CEDE if v == uid else ABANDON if v == -uid else 0
    return asked


#: stop requests: hand the rest of the subtree back once a branch besides
#: the next one waits in it (work stealing); stop at once (the result will
#: be discarded: speculation that can no longer come true)
CEDE, ABANDON = 1, 2


async def _run_unit_async(unit: dict[str, Any]) -> dict[str, Any]:
    fn = resolve_scenario(unit["scenario"])
    runner = _Runner(fn, unit["scenario"], dict(unit["params"]), tuple(unit["mutants"]),
                     unit["max_steps"], cover=bool(unit.get("coverage")))
    strat = _make(unit["strategy"])
    cov = Coverage()
    done = 0
    t0 = time.perf_counter()
    out: dict[str, Any] = {"order": unit["order"], "failure": None, "exhausted": False,
                           "worker": _worker_name()}
    index = unit["lo"]
    cap = min(unit["hi"] - unit["lo"], unit.get("cap") or (1 << 62))
    asked = _stop_requested(unit)
    ceded = stopped = False
    # Executions are disposed of once the strategy has seen them, as in
    # explore (else the cyclic collector frees them, at a sixth of the
    # unit's time); a unit of the exact split keeps its last one for
    # ``DFS.rest``, so it disposes of the one before.
    keeps_last = isinstance(strat, DFS) and strat.log is not None and type(strat).end is DFS.end
    disposable = _disposes(strat)
    last: Any = None
    while done < cap:
        chooser = strat.begin(index)
        index += 1
        if chooser is None:
            break
        sim = await runner.run(chooser, record=strat.record, trace=False)
        strat.end(sim)
        if keeps_last:
            if last is not None:
                last.dispose()
            last = sim
        if sim.abandoned:
            if disposable:
                sim.dispose()
            continue  # sleep-set blocked: not an execution (as in explore)
        done += 1
        index_done = done - 1
        cov.add(sim.reached)
        if sim.failure is not None:
            # Random/PCT: the execution index alone (units are index ranges,
            # so it orders failures across any chunking); DFS: the prefix's
            # position, then the execution below it
            at = ([index - 1] if unit["strategy"]["name"] != "dfs"
                  else [unit["order"], index_done])
            out["failure"] = {"at": at, "choices": list(sim.choices),
                              "kind": failure_kind(sim.failure)}
            break
        if disposable:
            sim.dispose()
        if asked is not None and isinstance(strat, DFS):
            how = asked()
            if how == ABANDON or (how == CEDE and strat.can_cede()):
                # work stealing: another worker is idle; hand the rest of
                # this subtree back now (its waiting branches go to it)
                ceded = how == CEDE
                stopped = True
                break
    out["executions"] = done
    out["ceded"] = ceded
    out["coverage"] = cov.to_json()
    out["exhausted"] = bool(strat.exhausted) and out["failure"] is None
    out["elapsed_s"] = time.perf_counter() - t0
    if isinstance(strat, DFS):
        out["blocked"] = strat.blocked
        if strat.log is not None:
            # dfs_exhausted: nothing left below, failure or not
            stopped = stopped or done == cap < unit["hi"] - unit["lo"]
            out["rest"] = (strat.rest() if stopped and out["failure"] is None
                           and not strat.exhausted else None)
            out["exhausted"] = out["exhausted"] or out["rest"] is not None
            out.update(log=strat.log, log_steps=strat.logged_steps(),
                       dfs_exhausted=bool(strat.exhausted), top=strat.top or [],
                       branch_extra=strat.branch_extra, tree_misses=strat.tree_misses,
                       traces=sorted(strat._traces))
    return out


_WORKER_NAME: list[str] = []


def _worker_name() -> str:
    """Who ran a unit: the Dask worker, else the process."""
    if not _WORKER_NAME:
        name = f"pid {os.getpid()}"
        if "distributed" in sys.modules:
            try:
                name = f"dask {sys.modules['distributed'].get_worker().name}"
            except ValueError:
                pass  # not in a Dask worker
        _WORKER_NAME.append(name)
    return _WORKER_NAME[0]


def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """Run one unit (in any process); plain dict in, plain dict out."""
    load_builtin()
    with _UNIT_LOCK:
        result: dict[str, Any] = trio.run(_watched, float(unit.get("step_timeout", 10.0)),
                                          _run_unit_async, unit)
    return result


def _started() -> None:
    """A no-op a new pool runs once per worker (see ``_Processes``)."""


def _worker_init(main: int, board: Any = None) -> None:
    global _BOARD
    _BOARD = board
    # The parent handles Ctrl-C for everyone (see the module docstring).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(main)
    load_builtin()
    # Everything imported so far lives as long as the worker: keep it out
    # of the collector's passes (each full pass would walk it all again)
    gc.collect()
    gc.freeze()


#: how often a worker looks whether its parent is still there (seconds),
#: where it cannot wait for it (no pidfd)
PARENT_POLL = 0.5


def _die_with_parent(main: int) -> None:
    """End this worker process soon after ``main``, the process whose pool
    it serves.

    A parent that is killed (SIGKILL, or SIGTERM / SIGHUP with their default
    action) runs no atexit handler and never shuts its pool down, and a pool
    worker waits on its task queue forever: it holds that queue's write end
    itself, so no end-of-file ever comes.  Nor does the fork server end (its
    children hold its liveness pipe), so watching the parent would not do.
    A daemon thread watches ``main`` instead and exits the worker when it is
    gone: with a pidfd where the system has them (readable once the process
    has exited; immune to pid reuse), else by polling.
    """
    try:
        fd = os.pidfd_open(main) if hasattr(os, "pidfd_open") else -1
    except ProcessLookupError:
        os._exit(1)
    except OSError:
        fd = -1

    def watch() -> None:
        if fd >= 0:
            import select

            select.select([fd], [], [])
            os._exit(1)
        while True:
            time.sleep(PARENT_POLL)
            try:
                os.kill(main, 0)
            except ProcessLookupError:
                os._exit(1)
            except OSError:
                pass  # alive, another user's: not ours to judge

    threading.Thread(target=watch, name="mmemu parent watch", daemon=True).start()


def _chunk_size(budget: int, jobs: int) -> int:
    return max(MIN_CHUNK, min(MAX_CHUNK, budget // max(1, jobs * 8)))


def _range_units(base: dict[str, Any], lo: int, hi: int, chunk: int) -> list[dict[str, Any]]:
    units = []
    for a in range(lo, hi, chunk):
        units.append(dict(base, lo=a, hi=min(hi, a + chunk), order=a))
    return units


async def _pct_probe(ref: str, params: dict[str, Any], mutants: tuple[str, ...], max_steps: int,
                     seed: int, depth: int) -> int:
    """PCT's step-count estimate, fixed for the whole exploration."""
    runner = _Runner(resolve_scenario(ref), ref, params, mutants, max_steps)
    probe = Random(seed)
    k = 50  # PCT's own initial estimate
    for j in range(PCT_PROBE):
        sim = await runner.run(probe.begin(-1 - j), record=False)
        k = max(k, sim.steps)
    return max(k, depth)


async def _dfs_prefixes(ref: str, params: dict[str, Any], mutants: tuple[str, ...],
                        max_steps: int, max_preemptions: int | None,
                        want: int) -> list[tuple[int, ...]]:
    """The schedule prefixes to split a DFS at, in single-DFS order.

    Iterative deepening: depth 1, 2, ... until there are ``want`` prefixes,
    every execution ends before the depth (the tree is listed whole), or
    ``MAX_SPLIT_DEPTH``.
    """
    runner = _Runner(resolve_scenario(ref), ref, params, mutants, max_steps)
    prefixes: list[tuple[int, ...]] = [()]
    for depth in range(1, MAX_SPLIT_DEPTH + 1):
        lister = DFS(max_preemptions=max_preemptions, reduction="none")
        lister.frontier = depth
        found: list[tuple[int, ...]] = []
        deeper = False
        n = 0
        while True:
            chooser = lister.begin(n)
            if chooser is None:
                break
            sim = await runner.run(chooser, record=True, trace=False)
            lister.end(sim)
            n += 1
            # an execution with fewer choice points (it ended, or failed)
            # is a leaf: its whole schedule is a prefix nothing else extends
            p = tuple(sim.choices[:depth])
            if len(sim.choices) >= depth:
                deeper = True
            if not found or found[-1] != p:
                found.append(p)
            if sim.failure is not None:
                # the first failure in DFS order is at or before this leaf:
                # later prefixes could never hold the reported one, and
                # listing on could cost a watchdog wait per execution (hangs)
                return found
        prefixes = found
        if len(prefixes) >= want or not deeper:
            break
    return prefixes


# -------------------------------------------------------------- backends

class _Backend:
    """Runs units; ``submit`` returns an object ``wait`` hands back when done."""

    def submit(self, unit: dict[str, Any]) -> Any:
        raise NotImplementedError

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        raise NotImplementedError

    def result(self, fut: Any) -> dict[str, Any]:
        raise NotImplementedError

    def cancel(self, futs: Iterable[Any]) -> set[Any]:
        """Cancel what has not started; returns those (they never finish)."""
        raise NotImplementedError

    def close(self, *, kill: bool) -> None:
        pass

    def request_stop(self, fut: Any, how: int = CEDE) -> None:
        """Ask the unit of ``fut`` (a unit of the exact split, with a
        ``uid``) to stop at an execution boundary and hand the rest of its
        subtree back: ``CEDE``, once a branch besides its next one waits in
        it; ``ABANDON``, at once.  Only where ``stops``."""

    slots = 1
    #: ``request_stop`` reaches a running unit (work stealing)
    stops = False


class _Inline(_Backend):
    """``jobs=1``: units run in this process, one after the other."""

    def __init__(self) -> None:
        self._queue: list[tuple[Any, dict[str, Any]]] = []

    def submit(self, unit: dict[str, Any]) -> Any:
        fut = object()
        self._queue.append((fut, unit))
        return fut

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        for i, (fut, unit) in enumerate(self._queue):
            if fut in pending:
                del self._queue[i]
                self._done = (fut, run_unit_here(unit))
                return {fut}
        return set()

    def result(self, fut: Any) -> dict[str, Any]:
        f, res = self._done
        assert f is fut
        return res

    def cancel(self, futs: Iterable[Any]) -> set[Any]:
        drop = set(futs)
        gone = {f for f, _u in self._queue if f in drop}
        self._queue = [(f, u) for f, u in self._queue if f not in drop]
        return gone


def run_unit_here(unit: dict[str, Any]) -> dict[str, Any]:
    """A unit in the calling thread (which may not be inside trio)."""
    load_builtin()
    result: dict[str, Any] = trio.run(_run_unit_async, unit)
    return result


def mp_context() -> Any:
    """The start method: forkserver (mmemu preloaded) where it exists, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["mmemu", "mmemu.engine._parallel"])
        return ctx
    return multiprocessing.get_context("spawn")


#: worker pools kept from one exploration to the next (``shared``), by size:
#: ``mmemu run --jobs N`` explores one suite after the other, and starting
#: N workers costs about a second each time
_POOLS: dict[int, cf.ProcessPoolExecutor] = {}


def _close_pools() -> None:
    """At exit: the kept pools end before the interpreter tears down."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


atexit.register(_close_pools)


class _Processes(_Backend):
    stops = True

    def __init__(self, jobs: int, *, shared: bool = False) -> None:
        self.slots = jobs
        self.shared = shared
        pool = _POOLS.get(jobs) if shared else None
        if pool is None or getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread",
                                                                          False):
            ctx = mp_context()
            # the stop board: shared memory the workers map at start-up
            board = ctx.RawArray("q", STOP_SLOTS)
            pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                          initializer=_worker_init,
                                          initargs=(os.getpid(), board))
            pool._mmemu_board = board  # type: ignore[attr-defined]
            # the pool starts a worker only when no other is idle: start
            # them all now, or the first (busy) one takes every unit while
            # the next is still importing
            for _ in range(jobs):
                pool.submit(_started)
            if shared:
                _POOLS[jobs] = pool
        self.pool = pool
        self.board: Any = getattr(pool, "_mmemu_board", None)
        self._uids: dict[Any, int] = {}

    def submit(self, unit: dict[str, Any]) -> Any:
        fut = self.pool.submit(run_unit, unit)
        if "uid" in unit:
            self._uids[fut] = int(unit["uid"])
        return fut

    def request_stop(self, fut: Any, how: int = CEDE) -> None:
        uid = self._uids.get(fut)
        if uid is not None and self.board is not None:
            self.board[uid % STOP_SLOTS] = uid if how == CEDE else -uid

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        done, _ = cf.wait(pending, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return set(done)

    def result(self, fut: Any) -> dict[str, Any]:
        self._uids.pop(fut, None)
        try:
            res: dict[str, Any] = fut.result()
        except cf.process.BrokenProcessPool:
            raise ModelError(
                "a worker process ended abruptly (killed, out of memory, or it failed while "
                "starting: " + UNGUARDED_MAIN + ")") from None
        return res

    def cancel(self, futs: Iterable[Any]) -> set[Any]:
        gone = {f for f in futs if f.cancel()}
        for f in gone:
            self._uids.pop(f, None)
        return gone

    def close(self, *, kill: bool) -> None:
        if not kill:
            if not self.shared:
                self.pool.shutdown(wait=True)
            return
        if self.shared and _POOLS.get(self.slots) is self.pool:
            del _POOLS[self.slots]
        # Running units cannot be cancelled: end their processes.
        procs = list(getattr(self.pool, "_processes", {}).values())
        terminate = getattr(self.pool, "terminate_workers", None)  # Python >= 3.14
        self.pool.shutdown(wait=False, cancel_futures=True)
        if terminate is not None:
            terminate()
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()


class _Dask(_Backend):
    def __init__(self, address: Any) -> None:
        try:
            import distributed
        except ImportError:
            raise ModelError("--dask needs dask.distributed: pip install 'mmemu[dask]'") from None
        self._distributed: Any = distributed  # untyped library: kept as Any
        self.client: Any
        if isinstance(address, distributed.Client):
            self.client = address
            self._own = False
        else:
            try:
                self.client = distributed.Client(address, timeout="5s")  # type: ignore[no-untyped-call]
            except OSError as exc:
                raise ModelError(f"cannot connect to the Dask scheduler at {address!r}: "
                                 f"{exc}") from None
            self._own = True
        self._submitted: list[Any] = []
        workers = self.client.scheduler_info().get("workers", {})
        self.slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    def submit(self, unit: dict[str, Any]) -> Any:
        # pure=False: two units never share a result by key
        fut = self.client.submit(run_unit, unit, pure=False)
        self._submitted.append(fut)
        return fut

    def wait(self, pending: set[Any], timeout: float) -> set[Any]:
        try:
            res = self._distributed.wait(list(pending), timeout=timeout,
                                         return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        return set(res.done)

    def result(self, fut: Any) -> dict[str, Any]:
        res: dict[str, Any] = fut.result()
        return res

    def cancel(self, futs: Iterable[Any]) -> set[Any]:
        futs = list(futs)
        if futs:
            self.client.cancel(futs)
        return set(futs)  # a cancelled Dask future is done at once

    def close(self, *, kill: bool) -> None:
        if kill:
            # units already running finish on their worker (a thread cannot
            # be killed); nothing queued starts
            self.client.cancel(self._submitted)
        if self._own:
            self.client.close()


# ------------------------------------------------------------- the driver

def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N; ModelError naming what is wrong."""
    k_s, slash, n_s = text.partition("/")
    try:
        if not slash:
            raise ValueError
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise ModelError(f"--shard must be K/N, e.g. 0/4 (got {text!r})") from None
    if n < 1 or not 0 <= k < n:
        raise ModelError(f"--shard K/N needs 0 <= K < N (got {text!r})")
    return k, n


def explore_parallel(
    scenario: str | Scenario | Callable[..., Any],
    *,
    strategy: str | Strategy | None = None,
    executions: int | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    max_preemptions: int | None = UNSET,
    shrink: bool = True,
    mutants: Iterable[str] = (),
    params: dict[str, Any] | None = None,
    start: int = 0,
    jobs: int | None = None,
    shard: tuple[int, int] | str | None = None,
    dask: Any = None,
    progress: Callable[[int, int | None], None] | None = None,
    settings: Settings | None = None,
    stop_on_failure: bool = True,
    coverage: bool = False,
    reaches: Goals | None = None,
    time_limit: float | None = None,
) -> Result:
    """Explore ``scenario`` with its executions spread over processes.

    ``jobs``: worker processes (default ``os.cpu_count()``; 1 runs the units
    in this process).  ``shard=(K, N)`` or ``"K/N"``: run only slice K of N
    (Random/PCT: the K-th contiguous range of the execution indexes; DFS:
    every N-th prefix starting at K); results of all slices merge into the
    unsharded result (``merge_results``).  ``dask``: a scheduler address or
    a ``distributed.Client``; the units run there instead.

    The same seed finds the same failure, with the same token, whatever
    ``jobs``, ``shard`` or backend (see the module docstring for PCT and the
    DFS reductions).  Must not be called from inside a trio run.
    """
    refuse_while_a_worker_starts()
    if not stop_on_failure:
        raise ModelError("a parallel exploration stops at its first failure "
                         "('stop_on_failure=False' is not supported)")
    _fn, _name, sc = _resolve(scenario)
    # flag, then environment (or ``settings``), then the suite's default
    s = resolve_settings(sc, base=settings, **given(
        strategy=strategy, executions=executions, seed=seed, max_steps=max_steps,
        max_preemptions=max_preemptions))
    ref = _scenario_ref(scenario)
    mut = _check_mutants(mutants)
    prm = dict(params or {})
    seed_ = s.seed
    spec = strategy_spec(strategy if isinstance(strategy, Strategy) else s.strategy, seed=seed_,
                         max_preemptions=s.max_preemptions)
    budget = s.executions
    steps_cap = s.max_steps
    if jobs is not None and jobs < 1:
        raise ModelError(f"'jobs' must be at least 1 (got {jobs})")
    if isinstance(shard, str):
        shard = parse_shard(shard)
    k_shard, n_shard = shard if shard is not None else (0, 1)
    if n_shard < 1 or not 0 <= k_shard < n_shard:
        raise ModelError(f"'shard' must be (K, N) with 0 <= K < N (got {shard!r})")
    goals = exploration_goals(scenario, prm, reaches)
    base: dict[str, Any] = {"scenario": ref, "params": prm, "mutants": list(mut),
                            "max_steps": steps_cap,
                            "coverage": coverage or needs_recording(goals),
                            "step_timeout": s.step_timeout}
    t0 = time.perf_counter()
    n_jobs = jobs if jobs is not None else (os.cpu_count() or 1)

    # 1. the units, in order (a Ctrl-C here ends the run with nothing run)
    interrupted = False
    units: list[dict[str, Any]] = []
    # DFS in one piece, split exactly (optimal DPOR), or split by prefixes
    # (no reduction: exact; the other reductions only under --shard)
    how = "units"
    if spec["name"] == "dfs" and n_shard == 1 and spec["reduction"] != "none":
        how = "split" if spec["reduction"] == "dpor" and spec["max_preemptions"] is None \
            else "whole"
    try:
        if how == "whole":
            # sleep sets, source sets and the bounded search's cache carry
            # information across the whole tree: one unit keeps it exact
            units = [dict(base, strategy=spec, lo=0, hi=budget, order=0)]
        elif how == "split":
            pass
        elif spec["name"] == "dfs":
            prefixes = trio.run(_watched, s.step_timeout, _dfs_prefixes, ref, prm, mut, steps_cap,
                                spec["max_preemptions"], PREFIXES_PER_SHARD * n_shard)
            units = [dict(base, strategy=dict(spec, prefix=list(p)), lo=0, hi=budget, order=i)
                     for i, p in enumerate(prefixes) if i % n_shard == k_shard]
        else:
            if spec["name"] == "pct":
                spec = dict(spec, k=trio.run(_watched, s.step_timeout, _pct_probe, ref, prm, mut,
                                             steps_cap, spec["seed"], spec["depth"]))
            lo = start + k_shard * budget // n_shard
            hi = start + (k_shard + 1) * budget // n_shard
            units = _range_units(dict(base, strategy=spec), lo, hi,
                                 _chunk_size(hi - lo, n_jobs if dask is None else 8))
    except KeyboardInterrupt:
        interrupted = True
    # 2. run them
    backend: _Backend
    if dask is not None:
        backend = _Dask(dask)
    elif n_jobs == 1:
        backend = _Inline()
    else:
        backend = (_Processes(n_jobs, shared=True) if how == "split"
                   else _Processes(min(n_jobs, max(1, len(units)))))
    deadline = time.monotonic() + time_limit if time_limit is not None else None
    if how == "split":
        split = _SplitRun(backend, base, spec, budget, progress)
        if not interrupted:
            try:
                split.run(deadline)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                backend.close(kill=split.kill or interrupted)
        else:
            backend.close(kill=True)
        if progress is not None and not interrupted:
            try:
                progress(split.executed, budget)
            except KeyboardInterrupt:
                interrupted = True
        return _finish_split(split, scenario, ref, prm, mut, steps_cap, goals, spec, s,
                             shrink, interrupted, t0)
    results: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    executed = 0
    over_budget = False
    todo = list(units)
    todo.reverse()  # pop() takes the lowest order first
    pending: dict[Any, dict[str, Any]] = {}
    kill = False
    time_limited = False
    try:
        while todo or pending:
            if deadline is not None and time.monotonic() >= deadline:
                # out of time: no more units; what runs is abandoned
                time_limited = True
                todo.clear()
                if pending:
                    backend.cancel(list(pending))
                    pending.clear()
                    kill = True
                break
            # keep every slot busy, plus one queued unit so none idles on IPC
            while todo and len(pending) < backend.slots + 1 and not over_budget:
                unit = todo.pop()
                if best is not None and unit["order"] > best["at"][0]:
                    continue
                pending[backend.submit(unit)] = unit
            if not pending:
                break
            finished = backend.wait(set(pending), 0.2)
            for fut in sorted(finished, key=lambda f: pending[f]["order"]):
                if pending.pop(fut, None) is None:
                    continue  # dropped after a lower failure, while we looked
                res = backend.result(fut)
                results.append(res)
                executed += res["executions"]
                fail = res["failure"]
                if fail is not None and (best is None or fail["at"] < best["at"]):
                    best = fail
                    # units after it cannot hold a lower failure
                    drop = [f for f, u in pending.items() if u["order"] > fail["at"][0]]
                    backend.cancel(drop)
                    for f in drop:
                        pending.pop(f)
                    if drop:
                        kill = True
                if spec["name"] == "dfs" and executed >= budget and best is None:
                    over_budget = True
                if progress is not None:
                    progress(executed, budget)
            if over_budget and pending:
                backend.cancel(list(pending))
                pending.clear()
                kill = True
    except KeyboardInterrupt:
        interrupted = True
        kill = True
    finally:
        backend.close(kill=kill or interrupted)
    if progress is not None and not interrupted:
        try:
            progress(executed, budget)
        except KeyboardInterrupt:
            interrupted = True

    # 3. merge: every unit ran to its end, without a failure
    ran = {r["order"] for r in results}
    complete = (not interrupted and not over_budget and not time_limited and best is None
                and all(u["order"] in ran for u in units))
    exhausted = (spec["name"] == "dfs" and complete
                 and all(r["exhausted"] for r in results))
    cov = Coverage(goals=goals)
    for r in sorted(results, key=_unit_key):
        cov.merge(Coverage.from_json(r.get("coverage") or {}))
    failures: tuple[Failure, ...] = ()
    if best is not None:
        # found before a Ctrl-C: kept, reported as found (not shrunk)
        failures = (trio.run(_watched, s.step_timeout, _shrink_and_finish, ref, prm, mut,
                             steps_cap, best, shrink and not interrupted, s.shrink_budget,
                             spec),)
    result = Result(scenario=ref, params=prm, mutants=mut, strategy=describe_spec(spec),
                    executions=executed, exhausted=exhausted, failures=failures,
                    elapsed_s=time.perf_counter() - t0, interrupted=interrupted, coverage=cov,
                    time_limited=time_limited)
    # one shard of N saw only its slice: its goals are judged once merged
    if n_shard > 1:
        return result
    bound = spec.get("max_preemptions") if spec["name"] == "dfs" else None
    return check_vacuity(result, thorough=as_thorough_as_the_suite(scenario, bound))


def _explore_whole(kwargs: dict[str, Any]) -> Result | None:
    """One run of ``explore_runs``, in a worker: a whole exploration, as
    ``explore`` without ``jobs`` runs it.  ``deadline`` (wall clock, shared
    by the runs) becomes its time limit; None: it had run out already."""
    from ._explore import explore

    load_builtin()
    kw = dict(kwargs)
    deadline = kw.pop("deadline", None)
    if deadline is not None:
        left = deadline - time.time()
        if left <= 0:
            return None
        kw["time_limit"] = left
    return explore(kw.pop("scenario"), **kw)


def explore_runs(runs: Sequence[dict[str, Any]], jobs: int, deadline: float | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Generator[Result | None, None, None]:
    """Explore several runs at once, ``jobs`` at a time, each whole in one
    worker process (exactly what ``explore(**run)`` without ``jobs`` does),
    and yield their results in the order of ``runs`` (None: not started,
    ``deadline`` -- a ``time.time()`` value -- had passed).  ``mmemu run
    --jobs N`` with several runs: their executions are independent, so this
    is exact and keeps every worker busy.  ``should_stop`` is polled while
    waiting (True: KeyboardInterrupt); closing the generator early ends the
    workers."""
    backend = _Processes(jobs, shared=True)
    futs = [backend.pool.submit(_explore_whole, dict(r, deadline=deadline)) for r in runs]
    done = False
    try:
        for fut in futs:
            while True:
                try:
                    res: Result | None = fut.result(timeout=0.2)
                    break
                except cf.TimeoutError:
                    if should_stop is not None and should_stop():
                        raise KeyboardInterrupt from None
            yield res
        done = True
    finally:
        if not done:
            backend.cancel(futs)
        backend.close(kill=not done)


#: unit numbers for the stop board (unique in this process)
_UIDS = itertools.count(1)


class _SplitRun:
    """The coordinator of an exact optimal-DPOR split (see _split.py): runs
    the units in single-DFS order, speculating on the next ones while idle
    workers are available, and commits their results in order."""

    def __init__(self, backend: _Backend, base: dict[str, Any], spec: dict[str, Any],
                 budget: int, progress: Callable[[int, int | None], None] | None) -> None:
        self.backend = backend
        self.base = base
        self.spec = spec
        self.budget = budget
        self.progress = progress
        self.search = SplitSearch()
        #: committed results, in single-DFS order
        self.results: list[dict[str, Any]] = []
        self.executed = 0
        self.blocked = 0
        self.traces: set[tuple[int, ...]] = set()
        self.best: dict[str, Any] | None = None
        self.exhausted = False
        self.over_budget = False
        self.time_limited = False
        self.kill = False
        #: speculative units whose description changed before their turn:
        #: their executions were not used (units, executions)
        self.discarded = [0, 0]
        #: committed units that handed their subtree's rest back because an
        #: idle worker asked (work stealing)
        self.steals = 0

    def run(self, deadline: float | None) -> None:
        backend = self.backend
        search = self.search
        futs: dict[Any, UnitKey] = {}
        ready: dict[UnitKey, dict[str, Any]] = {}
        stale: set[Any] = set()
        #: units asked to stop (work stealing), so each is asked once
        asked: set[Any] = set()
        # in flight at once: every slot, plus one queued so none idles on
        # IPC; one process (or the inline backend) does not speculate
        cap = backend.slots + 1 if backend.slots > 1 else 1
        current = search.next_unit()
        while current is not None:
            if deadline is not None and time.monotonic() >= deadline:
                self.time_limited = True
                break
            left = self.budget - self.executed
            if current not in ready and current not in futs.values():
                futs[self._submit(current, left)] = current
            if len(futs) < cap:
                for key in search.upcoming(cap):
                    if len(futs) >= cap:
                        break
                    if key not in ready and key not in futs.values():
                        futs[self._submit(key, left)] = key
            if current not in ready:
                if backend.stops and len(futs) < cap:
                    # Work stealing: a worker is idle and no branch waits in
                    # the top nodes.  The unit in order is asked to hand the
                    # rest of its subtree back at its next execution that
                    # leaves a waiting branch besides the one it takes next;
                    # its committed rest then offers those branches here.
                    for f, k in futs.items():
                        if k == current and f not in asked:
                            asked.add(f)
                            backend.request_stop(f)
                for fut in backend.wait(set(futs), 0.2):
                    key = futs.pop(fut)
                    asked.discard(fut)
                    if fut in stale:
                        stale.discard(fut)
                        self._discard(backend.result(fut))
                        continue
                    ready[key] = backend.result(fut)
                continue
            res = ready.pop(current)
            if not self._commit(current, res):
                break
            current = search.next_unit()
            # speculation that can no longer come true is dropped
            alive = set(search.upcoming(1 << 30))
            if current is not None:
                alive.add(current)
            for key in [k for k in ready if k not in alive]:
                self._discard(ready.pop(key))
            drop = [f for f, k in futs.items() if k not in alive and f not in stale]
            if drop:
                for f in backend.cancel(drop):
                    del futs[f]
                for f in drop:
                    if f in futs:
                        # running: stop it at its next execution (its result
                        # is discarded whatever it holds)
                        stale.add(f)
                        backend.request_stop(f, ABANDON)
        else:
            self.exhausted = True
        if futs:
            for f in backend.cancel(list(futs)):
                del futs[f]
            if futs and (self.best is not None or self.time_limited) and not backend.stops:
                self.kill = True  # speculation past a failure may run long
                return
            # speculation that came to nothing: stop it and let it end (the
            # workers stay for the next exploration)
            for f in futs:
                backend.request_stop(f, ABANDON)
            while futs:
                for fut in backend.wait(set(futs), 0.2):
                    futs.pop(fut)
                    self._discard(backend.result(fut))

    def _submit(self, key: UnitKey, left: int) -> Any:
        # Where a running unit can be asked to stop, units run uncapped: the
        # unit in order hands its rest back when a worker is idle, and a
        # speculative one whose description changed is stopped at once
        # (measured: capping speculative units at UNIT_EXECUTIONS instead
        # cost more in unit overhead than it saved in discarded work)
        unit = dict(self.base, strategy=unit_strategy(self.spec, key, self.search.above(key)),
                    lo=0, hi=left,
                    order=0, cap=None if self.backend.stops else UNIT_EXECUTIONS,
                    uid=next(_UIDS))
        return self.backend.submit(unit)

    def _discard(self, res: dict[str, Any]) -> None:
        self.discarded[0] += 1
        self.discarded[1] += int(res["executions"])

    def _commit(self, key: UnitKey, res: dict[str, Any]) -> bool:
        """Take the result of the unit in order; False: the search stops."""
        left = self.budget - self.executed
        n = int(res["executions"])
        order = len(self.results)
        res = dict(res, order=order)
        fail = res["failure"]
        cut = n > left
        if cut:
            # speculated with a larger budget: a single DFS stops at its end
            n = left
            res["executions"] = n
            if fail is not None and fail["at"][1] >= left:
                fail = res["failure"] = None
            res["exhausted"] = False
        self.results.append(res)
        self.steals += bool(res.get("ceded"))
        self.executed += n
        self.blocked += int(res.get("blocked", 0))
        self.traces.update(tuple(t) for t in res.get("traces", ()))
        if self.progress is not None:
            self.progress(self.executed, self.budget)
        if fail is not None:
            self.best = dict(fail, at=[order, fail["at"][1]])
            if res.get("dfs_exhausted") and not cut:
                # the failure was the unit's last execution: a single DFS
                # reports exhausted when nothing is left after it anywhere
                self.search.commit(key, res["top"], res["log"], None, res.get("branch_extra"),
                                   res.get("log_steps"))
                self.exhausted = self.search.next_unit() is None
            return False
        if not res["exhausted"] and res.get("rest") is None:
            self.over_budget = True  # the budget ran out inside this unit
            return False
        self.search.commit(key, res["top"], res["log"], res.get("rest"), res.get("branch_extra"),
                          res.get("log_steps"))
        return True

    def workers(self) -> tuple[tuple[str, int, int], ...]:
        """(worker, units, executions) of the committed units, by worker."""
        per: dict[str, list[int]] = {}
        for r in self.results:
            w = per.setdefault(str(r.get("worker", "?")), [0, 0])
            w[0] += 1
            w[1] += int(r["executions"])
        return tuple((name, u, e) for name, (u, e) in sorted(per.items()))


def _finish_split(split: _SplitRun, scenario: Any, ref: str, prm: dict[str, Any],
                  mut: tuple[str, ...], steps_cap: int, goals: tuple[str, ...],
                  spec: dict[str, Any], s: Settings, shrink: bool, interrupted: bool,
                  t0: float) -> Result:
    cov = Coverage(goals=goals)
    for r in split.results:
        cov.merge(Coverage.from_json(r.get("coverage") or {}))
    failures: tuple[Failure, ...] = ()
    if split.best is not None:
        failures = (trio.run(_watched, s.step_timeout, _shrink_and_finish, ref, prm, mut,
                             steps_cap, split.best, shrink and not interrupted,
                             s.shrink_budget, spec),)
    exhausted = split.exhausted and not interrupted
    result = Result(scenario=ref, params=prm, mutants=mut, strategy=describe_spec(spec),
                    executions=split.executed, exhausted=exhausted, failures=failures,
                    elapsed_s=time.perf_counter() - t0, interrupted=interrupted, coverage=cov,
                    time_limited=split.time_limited, blocked=split.blocked,
                    traces=len(split.traces), workers=split.workers(),
                    discarded=split.discarded[1], steals=split.steals)
    return check_vacuity(result, thorough=as_thorough_as_the_suite(scenario, None))


async def _shrink_and_finish(ref: str, params: dict[str, Any], mutants: tuple[str, ...],
                             max_steps: int, found: dict[str, Any], shrink: bool,
                             shrink_budget: int, spec: dict[str, Any]) -> Failure:
    """Shrink a failure found by a unit, in a fresh runner (deterministic)."""
    runner = _Runner(resolve_scenario(ref), ref, params, mutants, max_steps)
    with WATCHDOG.replaying(found["kind"]):  # a known StepTimeout: no second long wait
        sim = await runner.guided(found["choices"], record=True, defer_interrupt=True)
    raw = runner.raw(sim)
    if raw.kind != found["kind"]:
        raise ModelError(
            f"scenario {ref!r} did not fail the same way when its failing schedule was re-run "
            f"in another process (expected {found['kind']}, got {raw.kind or 'no failure'}): "
            f"the failure depends on earlier executions or the model is not deterministic")
    if shrink and not isinstance(sim.failure, Hang):  # each run of a hang costs a timeout
        raw = await runner.shrink(raw, shrink_budget)
    at = tuple(found["at"])
    failure = await runner.finish(raw, at[-1] + 1 if spec["name"] != "dfs" else 0)
    return attrs.evolve(failure, found_at=at)


# ------------------------------------------------------------------ merging

def merge_results(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge the JSON rows of the shards of one run (``mmemu run --json``):
    executions add up, exhausted only if every shard exhausted its slice,
    the failure is the one with the lowest order."""
    if not rows:
        raise ModelError("nothing to merge")
    first = rows[0]
    key = ("suite", "params", "mutant", "strategy")
    for r in rows[1:]:
        for k in key:
            if r.get(k) != first.get(k):
                raise ModelError(f"cannot merge runs with different {k!r}: "
                                 f"{first.get(k)!r} and {r.get(k)!r}")
    shards = sorted(str(r.get("shard")) for r in rows)
    if any(r.get("shard") for r in rows):
        ks = [parse_shard(str(r.get("shard"))) for r in rows]
        n = ks[0][1]
        if any(kn[1] != n for kn in ks) or sorted(k for k, _ in ks) != list(range(n)):
            raise ModelError(f"cannot merge shards {', '.join(shards)}: need each of 0/{n} .. "
                             f"{n - 1}/{n} exactly once")
    failures = [r["failure"] for r in rows if r.get("failure")]
    best = min(failures, key=lambda f: tuple(f.get("found_at") or (1 << 62,)), default=None)
    merged = dict(first)
    merged.update(
        executions=sum(int(r["executions"]) for r in rows),
        exhausted=all(bool(r["exhausted"]) for r in rows) and best is None,
        elapsed_s=round(max(float(r.get("elapsed_s", 0.0)) for r in rows), 3),
        interrupted=any(bool(r.get("interrupted")) for r in rows),
        failure=best,
        shard=None,
        shards=shards,
    )
    return merged
