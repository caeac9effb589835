"""The fuzzer: random workloads, explored, and the first failure shrunk.

``fuzz(...)`` runs workload after workload (``_generate.generate(seed, i)``
for i = 0, 1, ...), each explored by the *plan*: a PCT phase (a few random
schedules with priority-change points: shallow races with high probability
whatever the workload's length), for a small workload a DFS of the
schedules with one preemption, then an unbounded optimal-DPOR DFS, each up
to a cap (``Plan``).  It stops at the first failure,
or when the budget -- a number of workloads or a time -- is spent.

On a failure it shrinks the workload (``_shrink``) with the same plan: a
candidate is smaller if it fails with the same kind of failure within the
plan.  The minimal workload is then explored once more with the engine's
schedule shrinking on, which gives the report and the token of its
smallest schedule.

Determinism: workload ``i`` and its exploration depend only on the seed
and ``i``, and the workloads are taken in order, so ``--workloads W`` gives
the same result for a seed in any process and for any ``--jobs`` (workers
explore different workloads; the lowest failing index wins, and shrinking
runs in the parent).  A time budget stops after a number of workloads that
depends on the machine; what it finds is the same as ``--workloads`` with
that number.

Ctrl-C (``should_stop``) ends the run between two executions: what was found
is kept (a shrink in progress stops at the smallest workload so far).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

import mmemu
from mmemu.engine import Failure
from mmemu.engine._errors import ModelError
from mmemu.workload._generate import GenSettings, apis_of, generate
from mmemu.workload._scenario import SCENARIO, resolve
from mmemu.workload._shrink import shrink_workload
from mmemu.workload._text import Workload, WorkloadError

#: ``mmemu fuzz`` with no budget: a few minutes
DEFAULT_TIME = 180.0


@attrs.frozen
class Plan:
    """How each workload is explored: ``pct_executions`` PCT runs of depth
    ``pct_depth``, then up to ``bounded_executions`` runs of a DFS bounded at
    ``bounded_preemptions`` preemptions, then up to ``dfs_executions`` runs
    of a DFS bounded at ``dfs_preemptions`` (0 executions skips a phase).
    The last DFS is unbounded optimal DPOR by default: each of its
    executions is a new Mazurkiewicz trace.

    The one-preemption phase is there because unbounded DPOR explores the
    tree from its deep end: in a two-CPU workload whose operations are long
    (a device's fault through gfn_to_pfn, then its access) it spends
    hundreds of executions reordering the later steps before it preempts
    early, while every schedule with one preemption -- 30 to 80 executions,
    usually the whole set for two CPUs -- holds most races between two
    operations: a fault that meets a migration entry while the page is
    frozen (``migrate:plain-get``: 32-63 executions at one preemption,
    178-513 or not within 2,000 unbounded), two faults of one swapped-out
    pte (232 at one preemption in a three-CPU workload, none within 1,500
    at two).  Races that need two precise switch points stay with the
    unbounded DPOR.  A workload of more than ``bounded_max_ops`` operations
    skips the bounded phase: one preemption among many operations is a set
    of schedules far larger than the budget, spent on the tail of the tree.

    The split is measured (benchmarks/fuzz.py, docs/performance.md): PCT
    finds shallow races in a few runs whatever the workload, but not a
    race that needs its two CPUs interleaved at two precise points, which
    the DFS reaches in a two-CPU workload after 74 (an interval notifier
    re-inserted during a truncate) to 148 (GRU's fault against a
    truncate's range) executions; 60 DFS executions missed both.

    PCT runs 50 (20 until session 9): a PCT execution costs about half a
    DFS execution (no race analysis; seed 0's first 47 duels, kvm 2.6.27:
    2.5 ms against 4-5 ms), and a race of depth 3 that one run in ten meets
    is then missed by one workload in 200 instead of one in eight -- a
    device's fault, access and detach against the process's exit
    (->release still running when detach returned: PCT(3) run 12, where the
    one-preemption DFS needs 71 executions and unbounded DPOR 422)."""

    pct_executions: int = 50
    pct_depth: int = 3
    dfs_executions: int = 150
    dfs_preemptions: int | None = None
    bounded_executions: int = 80
    bounded_preemptions: int = 1
    #: the bounded phase only for workloads of at most this many operations
    bounded_max_ops: int = 5

    def phases(self, seed: int, wl: Workload | None = None) -> list[tuple[str, Any, int]]:
        out: list[tuple[str, Any, int]] = []
        if self.pct_executions > 0:
            out.append(("pct", mmemu.PCT(self.pct_depth, seed), self.pct_executions))
        if self.bounded_executions > 0 and (wl is None or wl.ops <= self.bounded_max_ops):
            out.append(("bounded", mmemu.DFS(max_preemptions=self.bounded_preemptions),
                        self.bounded_executions))
        if self.dfs_executions > 0:
            out.append(("dfs", mmemu.DFS(max_preemptions=self.dfs_preemptions),
                        self.dfs_executions))
        return out


@attrs.frozen
class Found:
    """A failing exploration: the failure's kind, the phase and the
    execution index it was found at."""

    kind: str
    phase: str
    executions: int


@attrs.frozen(eq=False)
class FuzzResult:
    """What a fuzzing run found.

    ``failure`` is the shrunk failure (report, token) of the minimal
    workload ``workload``; ``original`` the workload as drawn (number
    ``index``).  ``reached`` counts the coverage events of every execution
    of the search (not of the shrinking): ``"event:workload: munmap"`` (an
    operation ran), ``"event:kvm fault"`` (a driver operation),
    ``"callback:kvm->invalidate_range_start"``, and the model's own events
    (``"event:vmscan: __remove_mapping froze and freed the page"``).
    """

    seed: int
    workloads: int
    executions: int
    elapsed_s: float
    interrupted: bool
    reached: dict[str, int]
    failure: Failure | None = None
    workload: Workload | None = None
    original: Workload | None = None
    index: int | None = None
    shrink_tries: int = 0
    #: seconds and executions from the start until the failing workload was
    #: found (before any shrinking): the fuzzer's time to first failure
    found_s: float | None = None
    found_executions: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def report(self) -> str:
        if self.failure is None or self.workload is None:
            return (f"fuzz: nothing found in {self.workloads} workloads "
                    f"({self.executions} executions, seed {self.seed})")
        lines = [f"fuzz: workload #{self.index} of seed {self.seed} fails "
                 f"({self.failure.kind}); shrunk from {self.original.ops if self.original else '?'} "
                 f"to {self.workload.ops} operations on {len(self.workload.cpus)} CPUs:",
                 f"  {self.workload}",
                 "",
                 self.failure.report()]
        return "\n".join(lines)


@attrs.frozen
class Progress:
    """Passed to the progress callback after every workload."""

    workloads: int
    executions: int
    elapsed_s: float
    reached: dict[str, int]
    phase: str  # "fuzzing" | "shrinking" | "reporting"
    workload: str


def _seed_of(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def explore_plan(wl: Workload, plan: Plan, seed: int, *, mutants: Iterable[str] = (),
                 stop: Callable[[], bool] | None = None,
                 collect: dict[str, int] | None = None) -> tuple[Found | None, int, bool]:
    """Explore one workload by the plan: (what failed or None, executions,
    interrupted).  ``collect`` adds up the coverage events the executions
    reached (``"callback:kvm->release"``, ``"event:workload: munmap"``...)."""
    params = {"workload": str(wl)}
    total = 0

    def check(_done: int, _budget: int | None) -> None:
        if stop is not None and stop():
            raise KeyboardInterrupt

    for phase, strategy, budget in plan.phases(seed, wl):
        res = mmemu.explore(SCENARIO, strategy=strategy, executions=budget, seed=seed,
                            params=params, mutants=tuple(mutants), shrink=False,
                            progress=check)
        total += res.executions
        if collect is not None and res.coverage is not None:
            for (kind, name), (_execs, times) in res.coverage.counts.items():
                key = f"{kind}:{name}"
                collect[key] = collect.get(key, 0) + times
        if res.failure is not None:
            return Found(res.failure.kind, phase, res.executions), total, res.interrupted
        if res.interrupted:
            return None, total, True
    return None, total, False


def _replay_found(wl: Workload, plan: Plan, seed: int, found: Found,
                  mutants: Iterable[str], *, shrink: bool = True) -> Failure | None:
    """Explore the phase that found the failure again, with schedule
    shrinking (unless interrupted), for the report and the token."""
    params = {"workload": str(wl)}
    for phase, strategy, budget in plan.phases(seed, wl):
        if phase != found.phase:
            continue
        res = mmemu.explore(SCENARIO, strategy=strategy, executions=budget, seed=seed,
                            params=params, mutants=tuple(mutants), shrink=shrink)
        return res.failure
    return None


def fuzz(drivers: Iterable[str] | None = None, *, seed: int = 0, time: float | None = None,
         workloads: int | None = None, cpus: int = 3, ops: int = 3, api: str | None = None,
         max_drivers: int = 2, mutants: Iterable[str] = (), plan: Plan | None = None,
         shrink: bool = True, jobs: int | None = None, dask: Any = None,
         progress: Callable[[Progress], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> FuzzResult:
    """Draw random workloads over ``drivers`` (default: every installed
    driver), explore each by ``plan``, shrink the first failure.

    Budget: ``workloads`` (how many) or ``time`` (seconds); neither: ``time``
    = DEFAULT_TIME.  ``cpus`` / ``ops``: CPUs per workload and the most
    operations per CPU; ``max_drivers``: drivers attached at once;
    ``api``: one notifier API generation (default: any the drivers
    support); ``mutants``: switched on in every execution.  ``jobs`` /
    ``dask``: explore workloads in worker processes / on a Dask cluster
    (same result for ``workloads=W``).  ``progress(Progress)`` is called
    after every workload; ``should_stop()`` ends the run early (Ctrl-C),
    keeping what was found.
    """
    from mmemu.driver import absolute_spec, available_drivers
    from mmemu.engine import get_mutant

    if time is not None and workloads is not None:
        raise ModelError("fuzz: give a time or a number of workloads, not both")
    if time is None and workloads is None:
        time = DEFAULT_TIME
    if time is not None and time <= 0:
        raise ModelError(f"fuzz: 'time' must be positive (got {time})")
    if workloads is not None and workloads < 1:
        raise ModelError(f"fuzz: 'workloads' must be at least 1 (got {workloads})")
    if jobs is not None and jobs < 1:
        raise ModelError(f"fuzz: 'jobs' must be at least 1 (got {jobs})")
    # driver files by their absolute paths: workloads and tokens replay anywhere
    pool = tuple(absolute_spec(d) for d in drivers) if drivers is not None \
        else tuple(available_drivers())
    settings = GenSettings(drivers=pool, api=api, cpus=cpus, ops=ops, max_drivers=max_drivers)
    apis_of(settings)  # one line if no driver supports the API
    mutants = tuple(sorted(set(mutants)))
    for m in mutants:
        get_mutant(m)
    plan = plan or Plan()
    started = _time.monotonic()
    deadline = started + time if time is not None else None
    reached: dict[str, int] = {}
    stats = {"workloads": 0, "executions": 0}

    def stop() -> bool:
        return should_stop is not None and should_stop()

    def report(phase: str, wl: Workload | str) -> None:
        if progress is not None:
            progress(Progress(stats["workloads"], stats["executions"],
                              _time.monotonic() - started, dict(reached), phase, str(wl)))

    if (jobs is not None and jobs > 1) or dask is not None:
        from mmemu.workload._parallel import search_parallel

        hit, interrupted = search_parallel(settings, plan, seed, mutants, workloads=workloads,
                                           deadline=deadline, jobs=jobs, dask=dask,
                                           stats=stats, reached=reached, stop=stop,
                                           progress=lambda wl: report("fuzzing", wl))
    else:
        hit, interrupted = _search(settings, plan, seed, mutants, workloads=workloads,
                                   deadline=deadline, stats=stats, reached=reached, stop=stop,
                                   progress=lambda wl: report("fuzzing", wl))
    if hit is None:
        return FuzzResult(seed, stats["workloads"], stats["executions"],
                          _time.monotonic() - started, interrupted, reached)
    index, original, found = hit
    found_s = _time.monotonic() - started
    found_executions = stats["executions"]
    wseed = _seed_of(seed, index)
    best = original
    tries = 0
    if shrink and not interrupted:
        def fails(cand: Workload) -> bool:
            try:
                resolve(cand)
            except WorkloadError:
                return False
            report("shrinking", cand)
            got, n, _intr = explore_plan(cand, plan, wseed, mutants=mutants, stop=stop)
            stats["executions"] += n
            return got is not None and got.kind == found.kind

        best, tries = shrink_workload(original, fails, should_stop=stop)
        interrupted = interrupted or stop()
    report("reporting", best)
    failure = None
    if not stop():
        again, n, _intr = explore_plan(best, plan, wseed, mutants=mutants)
        stats["executions"] += n
        if again is not None:
            failure = _replay_found(best, plan, wseed, again, mutants)
    if failure is None:
        # interrupted: report the workload as drawn, without shrinking anything
        failure = _replay_found(original, plan, wseed, found, mutants, shrink=False)
        best = original
    return FuzzResult(seed, stats["workloads"], stats["executions"],
                      _time.monotonic() - started, interrupted, reached, failure, best,
                      original, index, tries, found_s, found_executions)


def _search(settings: GenSettings, plan: Plan, seed: int, mutants: tuple[str, ...], *,
            workloads: int | None, deadline: float | None, stats: dict[str, int],
            reached: dict[str, int], stop: Callable[[], bool],
            progress: Callable[[Workload], None],
            ) -> tuple[tuple[int, Workload, Found] | None, bool]:
    """Workloads 0, 1, ... in this process until one fails or the budget ends."""
    index = 0
    while True:
        if workloads is not None and index >= workloads:
            return None, False
        if deadline is not None and _time.monotonic() >= deadline:
            return None, False
        if stop():
            return None, True
        wl = generate(seed, index, settings)
        found, n, interrupted = explore_plan(wl, plan, _seed_of(seed, index),
                                             mutants=mutants, stop=stop, collect=reached)
        stats["workloads"] += 1
        stats["executions"] += n
        progress(wl)
        if found is not None:
            return (index, wl, found), interrupted
        if interrupted:
            return None, True
        index += 1


__all__ = ["DEFAULT_TIME", "Found", "FuzzResult", "Plan", "Progress", "explore_plan", "fuzz"]
