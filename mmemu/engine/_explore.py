"""Exploration: run a scenario many times, shrink the first failure, report it.

``explore`` is the engine's front door.  It creates a fresh ``Simulation`` per
execution (stateless model checking: the scenario rebuilds all its state each
time), asks the strategy for a chooser, and keeps going until the budget is
spent, the strategy is exhausted, or a failure is found.

Shrinking.  A failure is minimised before it is shown, lexicographically on
(preemptions, steps):

1. iterative context bounding: a DFS bounded at 0, 1, ... preemptions (with
   DPOR) looks for a failure of the same kind with fewer preemptions than the
   one found, within the shrink budget;
2. local search: from the best schedule, try each other choice at each choice
   point (the rest of the run guided by the old choices, then without
   preemptions) and keep any run that fails the same way with fewer
   (preemptions, steps).

The final schedule is replayed once more with full recording to produce the
trace, the report and the token.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import attrs
import structlog
import trio

from ._errors import (
    InvariantViolation,
    MmemuError,
    ModelError,
    NondeterminismError,
    UnexpectedException,
)
from ._coverage import (
    Coverage,
    Goals,
    VacuousSuite,
    needs_recording,
    resolve_goals,
    vacuity_error,
)
from ._execution import Chooser, CpuPool, Simulation
from ._locate import display_name
from ._registry import Scenario, get_mutant, get_scenario, is_registered, resolve_scenario, scenario_name
from ._report import Trace, build_trace, render_timeline
from ._schedule import Schedule
from ._settings import UNSET, Settings, given, resolve_settings
from ._strategies import DFS, PCT, Guided, Strategy, make_strategy
from ._watchdog import WATCHDOG, Hang



class _Silent:
    """Stands in for a logger when the application has not configured
    structlog: the library never configures it, and never prints unasked."""

    def bind(self, **_kw: Any) -> _Silent:
        return self

    def debug(self, *_a: Any, **_kw: Any) -> None:
        pass

    info = debug


def _logger() -> Any:
    return structlog.get_logger("mmemu") if structlog.is_configured() else _Silent()

ScenarioFn = Callable[[Simulation], Awaitable[Any]]


def failure_kind(exc: MmemuError) -> str:
    return type(exc).__name__


@attrs.frozen
class RawRun:
    """What one execution produced (before shrinking)."""

    kind: str | None
    exc: MmemuError | None
    choices: tuple[int, ...]
    steps: int
    preemptions: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.preemptions, self.steps)


@attrs.frozen(eq=False)
class Failure:
    """A failing execution, shrunk.  ``schedule`` is its replay token."""

    kind: str
    message: str
    schedule: str
    preemptions: int
    steps: int
    trace: Trace
    scenario: str
    params: dict[str, Any]
    mutants: tuple[str, ...]
    exception: MmemuError
    failure_step: int
    found_after: int = 0
    #: where a parallel exploration found it: (unit order, execution index);
    #: the lowest wins when shards merge
    found_at: tuple[int, ...] = ()

    @property
    def details(self) -> str:
        d = getattr(self.exception, "details", "")
        if isinstance(self.exception, UnexpectedException):
            d = self.exception.traceback_text.rstrip()
        return d

    def replay_command(self) -> str:
        """The command that replays this failure: ``mmemu replay TOKEN``
        when the CLI can find the scenario, else the Python call."""
        from ._locate import replay_command

        return replay_command(self.scenario, self.schedule)

    def report(self) -> str:
        head = f"mmemu: {display_name(self.scenario)}"
        if self.params:
            head += " [" + ", ".join(f"{k}={v}" for k, v in sorted(self.params.items())) + "]"
        if self.mutants:
            head += " with mutant " + ", ".join(self.mutants)
        plural = "" if self.preemptions == 1 else "s"
        lines = [head,
                 f"{self.kind} after {self.steps} steps, {self.preemptions} preemption{plural} "
                 f"(* marks a preemption)",
                 "",
                 render_timeline(self.trace, failure_step=self.failure_step),
                 "",
                 f"{self.kind}: {self.message}"]
        if self.details:
            lines.append(self.details.rstrip())
        lines += ["", "replay with:", f"  {self.replay_command()}"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "message": self.message,
                             "schedule": self.schedule, "preemptions": self.preemptions,
                             "steps": self.steps}
        if self.found_at:
            d["found_at"] = list(self.found_at)
        return d


@attrs.frozen(eq=False)
class VacuousFailure(Failure):
    """A complete exploration that never reached one of its suite's goals
    (``exception`` is the VacuousSuite).  It has no schedule: no single
    execution is at fault, the whole explored space is."""

    def replay_command(self) -> str:
        return f"mmemu run {self.scenario} --coverage"

    def report(self) -> str:
        head = f"mmemu: {self.scenario}"
        if self.params:
            head += " [" + ", ".join(f"{k}={v}" for k, v in sorted(self.params.items())) + "]"
        if self.mutants:
            head += " with mutant " + ", ".join(self.mutants)
        return "\n".join([head, f"{self.kind}: {self.message}", "",
                          "see what the exploration did reach with:",
                          f"  {self.replay_command()}"])


def vacuous_failure(exc: VacuousSuite, scenario: str, params: dict[str, Any],
                    mutants: tuple[str, ...]) -> VacuousFailure:
    return VacuousFailure(kind=type(exc).__name__, message=exc.message, schedule="",
                          preemptions=0, steps=0, trace=Trace(cpus=(), events=()),
                          scenario=scenario, params=dict(params), mutants=mutants,
                          exception=exc, failure_step=-1, found_after=exc.executions)


def _suite(scenario: ScenarioFn | Scenario | str) -> Scenario | None:
    """The registered suite ``scenario`` is (None for a raw scenario)."""
    if isinstance(scenario, Scenario):
        return scenario
    from ._registry import is_registered

    name = scenario if isinstance(scenario, str) else getattr(scenario, "__mmemu_scenario__", None)
    if isinstance(name, str) and is_registered(name):
        return get_scenario(name)
    return None


def exploration_goals(scenario: ScenarioFn | Scenario | str, params: dict[str, Any],
                      reaches: Goals | None = None) -> tuple[str, ...]:
    """The coverage goals of an exploration: ``reaches`` if given, else the
    registered suite's for these parameters (none for a raw scenario)."""
    if reaches is not None:
        return resolve_goals(reaches, params)
    sc = _suite(scenario)
    return sc.goals(params) if sc is not None else ()


def as_thorough_as_the_suite(scenario: ScenarioFn | Scenario | str,
                             bound: int | None) -> bool:
    """Does a DFS bounded at ``bound`` preemptions (None: unbounded) explore
    at least what the suite's own bound does?  A suite's goals are reachable
    within its own bound; an exhausted search under a smaller one is not a
    complete exploration of the suite (its misses are only noted)."""
    sc = _suite(scenario)
    if sc is None or bound is None:
        return True
    return sc.max_preemptions is not None and bound >= sc.max_preemptions


def check_vacuity(result: Result, *, thorough: bool = True) -> Result:
    """``result`` with a VacuousFailure if it explored its whole space (at
    least as thoroughly as the suite's own bound: ``thorough``), found
    nothing and never reached a goal (see mmemu.engine._coverage)."""
    cov = result.coverage
    if (cov is None or not result.exhausted or not thorough or result.failures
            or result.interrupted):
        return result
    exc = vacuity_error(result.scenario, result.params, cov)
    if exc is None:
        return result
    return attrs.evolve(result, failures=(vacuous_failure(exc, result.scenario, result.params,
                                                          result.mutants),))


@attrs.frozen(eq=False)
class Result:
    """What an exploration found."""

    scenario: str
    params: dict[str, Any]
    mutants: tuple[str, ...]
    strategy: str
    executions: int
    exhausted: bool
    failures: tuple[Failure, ...]
    elapsed_s: float = 0.0
    interrupted: bool = False
    #: what the executions reached, and the suite's goals (see _coverage)
    coverage: Coverage | None = None
    #: executions abandoned by the strategy (sleep-set blocked DPOR runs,
    #: states a bounded search had seen); not counted in ``executions``
    blocked: int = 0
    #: distinct Mazurkiewicz traces of the declared accesses among the
    #: executions (DFS only; None otherwise)
    traces: int | None = None
    #: the exploration stopped because its ``time_limit`` ran out (what it
    #: explored is in the other fields; it is not exhausted)
    time_limited: bool = False
    #: a parallel exploration split exactly (optimal DPOR): per worker, the
    #: units it ran and their executions (worker, units, executions)
    workers: tuple[tuple[str, int, int], ...] = ()
    #: ... and the executions of speculative units it had to discard (a
    #: unit's description changed before its turn; not in ``executions``)
    discarded: int = 0
    #: ... and how many of its units handed the rest of their subtree back
    #: early because a worker was idle (work stealing)
    steals: int = 0

    @property
    def failure(self) -> Failure | None:
        return self.failures[0] if self.failures else None

    @property
    def ok(self) -> bool:
        return not self.failures


@attrs.frozen(eq=False)
class Outcome:
    """What one replayed execution did."""

    scenario: str
    steps: int
    preemptions: int
    trace: Trace
    failure: Failure | None


class _Runner:
    """Runs executions of one scenario (inside a trio run)."""

    def __init__(self, fn: ScenarioFn, name: str, params: dict[str, Any],
                 mutants: tuple[str, ...], max_steps: int, *, cover: bool = False) -> None:
        self.fn = fn
        #: record every step label and span for coverage (explore(coverage=True))
        self.cover = cover
        self.name = name
        self.params = params
        self.mutants = mutants
        self.mutant_set = frozenset(mutants)
        self.max_steps = max_steps
        self.exploration: dict[str, Any] = {}
        self.prelude: tuple[tuple[int, ...], ...] = ()
        #: the trio run's CPU tasks, shared by the executions
        self.pool: CpuPool | None = CpuPool.current()

    async def run(self, chooser: Chooser, *, record: bool, trace: bool | None = None,
                  defer_interrupt: bool = False) -> Simulation:
        sim = Simulation(chooser=chooser, params=self.params, mutants=self.mutant_set,
                         max_steps=self.max_steps, record=record, trace=trace, pool=self.pool,
                         exploration=self.exploration, cover=self.cover)
        sim.defer_interrupt = defer_interrupt
        await sim.run(self.fn)
        exc = sim.failure
        if isinstance(exc, (ModelError, NondeterminismError)):
            raise exc
        return sim

    def raw(self, sim: Simulation) -> RawRun:
        exc = sim.failure
        return RawRun(kind=failure_kind(exc) if exc is not None else None, exc=exc,
                      choices=tuple(sim.choices), steps=sim.steps,
                      preemptions=sim.preemptions)

    async def guided(self, choices: Sequence[int], *, strict: bool = False,
                     record: bool = False, defer_interrupt: bool = False) -> Simulation:
        chooser = Guided(choices, strict=strict).begin(0)
        sim = await self.run(chooser, record=record, defer_interrupt=defer_interrupt)
        if strict and len(sim.choices) < len(choices):
            # The chooser only sees choice points that happen: a scenario
            # that now runs fewer CPUs (or fails earlier) never reaches the
            # rest of the schedule, and only this count reveals it.
            ended = "failed" if sim.failure is not None else "finished"
            raise NondeterminismError(
                f"at step {sim.steps} the execution {ended} with "
                f"{len(choices) - len(sim.choices)} of the schedule's {len(choices)} choices "
                f"unused: the scenario does not behave as when the token was recorded")
        return sim

    def schedule(self, choices: Sequence[int]) -> Schedule:
        return Schedule(scenario=self.name, choices=tuple(choices), params=self.params,
                        mutants=self.mutants, max_steps=self.max_steps, prelude=self.prelude)

    async def shrink(self, found: RawRun, budget: int) -> RawRun:
        best = found
        spent = 0
        # 1. fewer preemptions: bounded DFS, bound 0, 1, ...
        for bound in range(best.preemptions):
            dfs = DFS(max_preemptions=bound, reduction="dpor")
            per_bound = max(1, (budget - spent) // max(1, best.preemptions - bound))
            hit = None
            n = 0
            while n < per_bound:
                chooser = dfs.begin(n)
                if chooser is None:
                    break
                sim = await self.run(chooser, record=True, trace=False)
                n += 1
                dfs.end(sim)
                r = self.raw(sim)
                if r.kind == best.kind and r.key < best.key:
                    hit = r
                    break
            spent += n
            if hit is not None:
                best = hit
                break
            if spent >= budget:
                break
        # 2. local search for fewer (preemptions, steps)
        improved = True
        while improved and spent < budget:
            improved = False
            sim = await self.guided(best.choices, record=True)
            spent += 1
            points = [(k, e) for k, e in enumerate(_choice_enabled(sim))]
            for c in range(len(points) - 1, -1, -1):
                if spent >= budget:
                    break
                for alt in points[c][1]:
                    if alt == best.choices[c]:
                        continue
                    cand = best.choices[:c] + (alt,) + best.choices[c + 1:]
                    r = self.raw(await self.guided(cand))
                    spent += 1
                    if r.kind == best.kind and r.key < best.key:
                        best = r
                        improved = True
                        break
                    trunc = best.choices[:c] + (alt,)
                    r = self.raw(await self.guided(trunc))
                    spent += 1
                    if r.kind == best.kind and r.key < best.key:
                        best = r
                        improved = True
                        break
                if improved:
                    break
        return best

    async def finish(self, raw: RawRun, found_after: int) -> Failure:
        """Replay the final schedule with full recording and build the Failure
        (a Ctrl-C meanwhile is left to the caller: the failure is kept)."""
        sim = await self.guided(raw.choices, record=True, defer_interrupt=True)
        exc = sim.failure
        if exc is None or failure_kind(exc) != raw.kind:
            raise NondeterminismError(
                f"scenario {self.name!r} did not fail again when its failing schedule was "
                f"replayed (expected {raw.kind}, got "
                f"{failure_kind(exc) if exc else 'no failure'}): the model is not deterministic")
        return self.make_failure(sim, found_after)

    def make_failure(self, sim: Simulation, found_after: int) -> Failure:
        exc = sim.failure
        assert exc is not None
        trace = build_trace(sim)
        sched = self.schedule(sim.choices)
        witness = getattr(exc, "prelude", ())
        if witness:
            # the failure depends on state an earlier execution of this
            # exploration left behind (lockdep's order graph): replay those first
            sched = attrs.evolve(sched, prelude=tuple(tuple(p) for p in witness))
        token = sched.to_token()
        message = getattr(exc, "message", None) or str(exc)
        return Failure(kind=failure_kind(exc), message=message, schedule=token,
                       preemptions=sim.preemptions, steps=sim.steps, trace=trace,
                       scenario=self.name, params=self.params, mutants=self.mutants,
                       exception=exc, failure_step=sim.failure_step, found_after=found_after)


def _choice_enabled(sim: Simulation) -> list[tuple[int, ...]]:
    """The runnable CPU ids at each choice point of a recorded execution."""
    return [e for e in sim.enabled if len(e) > 1]


def _resolve(scenario: ScenarioFn | Scenario | str) -> tuple[ScenarioFn, str, Scenario | None]:
    if isinstance(scenario, str):
        sc = get_scenario(scenario)
        return sc.fn, sc.name, sc
    if isinstance(scenario, Scenario):
        return scenario.fn, scenario.name, scenario
    if not callable(scenario):
        raise ModelError(f"'scenario' must be an async function or a scenario name (got {scenario!r})")
    # a registered function passed as itself keeps its registration (budget)
    registered = getattr(scenario, "__mmemu_scenario__", None)
    if isinstance(registered, str) and is_registered(registered):
        return scenario, registered, get_scenario(registered)
    return scenario, scenario_name(scenario), None


#: the ``end`` of the engine's strategies other than DFS (they keep nothing)
_OWN_ENDS = (Strategy.end, PCT.end)


def _disposes(strat: Strategy) -> bool:
    """May an execution be disposed of (``Simulation.dispose``) once the
    strategy's ``end`` has seen it?  Yes for the engine's own strategies,
    which keep nothing of it; a strategy that overrides ``end`` may keep the
    Simulation, so its executions are left to the garbage collector."""
    end = type(strat).end
    if isinstance(strat, DFS):
        # a unit of a parallel split keeps its last execution (DFS.rest)
        return end is DFS.end and strat.log is None
    return end in _OWN_ENDS


def _check_mutants(mutants: Iterable[str]) -> tuple[str, ...]:
    out = []
    for m in mutants:
        get_mutant(m)  # raises with suggestions
        out.append(m)
    return tuple(sorted(set(out)))


async def explore_async(
    scenario: ScenarioFn | Scenario | str,
    *,
    strategy: str | Strategy | None = None,
    executions: int | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    max_preemptions: int | None = UNSET,
    shrink: bool = True,
    mutants: Iterable[str] = (),
    params: dict[str, Any] | None = None,
    stop_on_failure: bool = True,
    start: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
    settings: Settings | None = None,
    coverage: bool = False,
    reaches: Goals | None = None,
    step_timeout: float | None = None,
    time_limit: float | None = None,
) -> Result:
    """``explore`` for code already running inside trio (pytest-trio)."""
    if time_limit is not None and not time_limit > 0:
        raise ModelError(f"'time_limit' must be a number of seconds > 0 (got {time_limit!r})")
    fn, name, sc = _resolve(scenario)
    # flag, then environment (or ``settings``), then the suite's default
    s = resolve_settings(sc, base=settings, **given(
        strategy=strategy, executions=executions, seed=seed, max_steps=max_steps,
        max_preemptions=max_preemptions, step_timeout=step_timeout))
    mut = _check_mutants(mutants)
    if sc is not None:
        sc.check_params(dict(params or {}))
    strat = make_strategy(strategy if isinstance(strategy, Strategy) else s.strategy,
                          max_preemptions=s.max_preemptions)
    strat.bind(s.seed)
    if isinstance(strat, DFS):
        strat.identity = {"scenario": name, "params": dict(params or {}), "mutants": list(mut)}
    budget = s.executions  # validated by resolve_settings
    steps_cap = s.max_steps
    cov = Coverage(goals=exploration_goals(scenario, dict(params or {}), reaches))
    runner = _Runner(fn, name, dict(params or {}), mut, steps_cap,
                     cover=coverage or needs_recording(cov.goals))
    log = _logger().bind(scenario=name, strategy=strat.describe())
    log.debug("exploration started", executions=budget)
    clock = trio.current_time()
    failures: list[Failure] = []
    kinds_seen: set[str] = set()
    done = 0
    interrupted = False
    stopped = False
    time_limited = False
    blocked0 = strat.blocked
    index = start
    # The time budget is checked between executions only: what ran is
    # complete, and the result says it stopped on time, not exhausted.
    deadline = time.monotonic() + time_limit if time_limit is not None else None
    disposable = _disposes(strat)
    watch = WATCHDOG.guard(s.step_timeout)  # hangs and Ctrl-C: see _watchdog
    watch.__enter__()
    try:
        while done < budget:
            if deadline is not None and time.monotonic() >= deadline:
                time_limited = True
                break
            chooser = strat.begin(index)
            index += 1
            if chooser is None:
                break
            # A Ctrl-C during the execution is acted upon once it is
            # accounted for: it counts, and a failure it found is kept.
            sim = await runner.run(chooser, record=strat.record, trace=False,
                                   defer_interrupt=True)
            strat.end(sim)
            if sim.abandoned:
                if sim.interrupted:
                    raise KeyboardInterrupt
                if disposable:
                    sim.dispose()
                continue
            done += 1
            cov.add(sim.reached)
            if progress is not None and (done & 63) == 0 and not sim.interrupted:
                progress(done, budget)
            if sim.failure is None:
                if sim.interrupted:
                    raise KeyboardInterrupt
                if disposable:
                    sim.dispose()
                continue
            raw = runner.raw(sim)
            assert raw.kind is not None
            if raw.kind in kinds_seen:
                if sim.interrupted:
                    raise KeyboardInterrupt
                continue
            kinds_seen.add(raw.kind)
            log.debug("failure found", kind=raw.kind, execution=index - 1)
            # a hang is not shrunk: each run of it costs a timeout
            if shrink and not sim.interrupted and not isinstance(sim.failure, Hang):
                try:
                    raw = await runner.shrink(raw, s.shrink_budget)
                except KeyboardInterrupt:
                    stopped = True  # Ctrl-C while shrinking: keep the failure as found
            if isinstance(sim.failure, Hang) and sim.record:
                # recorded already, and a replay would hang once more
                failures.append(runner.make_failure(sim, done))
            else:
                with WATCHDOG.replaying(raw.kind):
                    failures.append(await runner.finish(raw, done))
            if sim.interrupted or stopped:
                raise KeyboardInterrupt
            if stop_on_failure:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        watch.__exit__(None, None, None)
    if progress is not None:
        # The CLI's callback raises KeyboardInterrupt for a Ctrl-C it caught:
        # this last call is as much a safe point as the ones in the loop.
        try:
            progress(done, budget)
        except KeyboardInterrupt:
            interrupted = True
    # exhausted: the strategy explored its whole space (failures or not)
    exhausted = bool(strat.exhausted)
    if isinstance(strat, DFS) and strat.checkpoint:
        strat.save_checkpoint()
    elapsed = trio.current_time() - clock
    log.debug("exploration finished", executions=done, failures=len(failures))
    bound = strat.max_preemptions if isinstance(strat, DFS) else None
    return check_vacuity(Result(
        scenario=name, params=dict(params or {}), mutants=mut, strategy=strat.describe(),
        executions=done, exhausted=exhausted, failures=tuple(failures), elapsed_s=elapsed,
        interrupted=interrupted, coverage=cov, blocked=strat.blocked - blocked0,
        traces=strat.traces, time_limited=time_limited and not exhausted),
        thorough=as_thorough_as_the_suite(scenario, bound))


def explore(scenario: ScenarioFn | Scenario | str, **kwargs: Any) -> Result:
    """Explore the interleavings of ``scenario``; see ``explore_async`` for options.

    ``strategy`` is a Strategy or ``"random" | "pct" | "dfs"``; ``executions``
    caps the executions; ``seed`` seeds Random/PCT; ``max_steps`` bounds each
    execution (Livelock beyond); ``shrink`` minimises the failure;
    ``mutants`` switches named protocol variants on; ``params`` is passed to
    the scenario as ``sim.params``; ``time_limit`` (seconds) stops the
    exploration after the execution that runs past it (``Result.time_limited``).  ``coverage`` also counts every step
    label and kernel function (``Result.coverage``); ``reaches`` gives
    coverage goals (default: the registered suite's): an exhausted
    exploration that finds nothing and misses one fails with VacuousSuite.  ``jobs``, ``shard`` or ``dask`` spread
    the executions over processes (``mmemu.parallel.explore_parallel``).
    """
    refuse_while_a_worker_starts()
    if any(kwargs.get(k) is not None for k in ("jobs", "shard", "dask")):
        from ._parallel import explore_parallel

        return explore_parallel(scenario, **kwargs)
    for k in ("jobs", "shard", "dask"):
        kwargs.pop(k, None)
    result: Result = trio.run(_call_explore, scenario, kwargs)
    return result


#: what a worker process that imports a script's unguarded explorations says
UNGUARDED_MAIN = ("a worker process of a parallel exploration imports the main module: a script "
                  "that explores with jobs must keep its code under "
                  "`if __name__ == \"__main__\":`")


def refuse_while_a_worker_starts() -> None:
    """Refuse to explore while this process is a starting worker.

    Worker processes (forkserver, spawn) import the main module before they
    serve.  A script whose explorations are not under ``if __name__ ==
    "__main__":`` would run every one of them again in each worker first --
    minutes for a big suite, which looks like a hang -- and then fail on the
    nested pool.  Raised there, the worker fails at once and the parent
    reports it in one line (``_parallel``: a pool that broke).
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ModelError(UNGUARDED_MAIN)


async def _call_explore(scenario: Any, kwargs: dict[str, Any]) -> Result:
    return await explore_async(scenario, **kwargs)


async def replay_async(scenario: ScenarioFn | Scenario | str | None, token: str) -> Outcome:
    sched = Schedule.from_token(token)
    if scenario is None:
        fn: ScenarioFn = resolve_scenario(sched.scenario)
        name = sched.scenario
        if is_registered(name):
            get_scenario(name).check_params(sched.params)
    else:
        fn, name, _sc = _resolve(scenario)
        if name != sched.scenario:
            raise ModelError(f"token is for scenario {sched.scenario!r}, not {name!r}")
    mut = _check_mutants(sched.mutants)
    runner = _Runner(fn, name, dict(sched.params), mut, sched.max_steps)
    runner.prelude = sched.prelude
    # the token of a hang replays as that hang again, not as a hung replay
    with WATCHDOG.guard(Settings.from_env().step_timeout):
        for pre in sched.prelude:
            # a prelude is the prefix of an earlier execution that left state
            # behind (a lockdep edge): follow it, then run without preemptions
            await runner.guided(pre, strict=False)
        sim = await runner.guided(sched.choices, strict=True, record=True)
    failure = runner.make_failure(sim, 1) if sim.failure is not None else None
    return Outcome(scenario=name, steps=sim.steps, preemptions=sim.preemptions,
                   trace=build_trace(sim), failure=failure)


def replay(scenario: ScenarioFn | Scenario | str | None, token: str) -> Outcome:
    """Run ``scenario`` once under the schedule in ``token``, exactly.

    ``scenario`` may be None: the token names it.  Raises ScheduleFormatError
    for a malformed token and NondeterminismError if the scenario diverges.
    """
    outcome: Outcome = trio.run(replay_async, scenario, token)
    return outcome


def executions_for_two_cpus(k: int) -> int:
    """C(2k+2, k+1): interleavings of two CPUs of k steps (plus their start)."""
    return math.comb(2 * k + 2, k + 1)
