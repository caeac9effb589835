"""Helpers for tests of protocols: Hypothesis-drawn schedules and forced
interleavings.

Three ways to run *one* execution of a scenario under a schedule you control:

``run_schedule(scenario, schedules_example)``
    Inside a Hypothesis test (``@given(schedule=mmemu.testing.schedules())``),
    every choice point asks Hypothesis which CPU runs next, in an encoding
    where shrinking the draws drops preemptions (``HypothesisSchedule``).
    The final (shrunk) example notes its replay token, for ``mmemu.replay``
    (and ``mmemu replay`` when the scenario is registered).

``run_schedule(scenario, [0, 0, 1])``
    One CPU id per choice point, then no preemptions.  A choice naming a CPU
    that cannot run is a ``ScheduleError``.

``force(scenario, [(0, "1. tmp = counter"), (1, "1. tmp = counter"), ...])``
    The interleaving written the way a protocol comment writes it: the steps
    that matter, by CPU and step label, in the order they must run.  Steps not
    named run whenever the named order allows (preferring no preemption).  An
    order the scenario cannot follow is an ``InterleavingError`` that says
    why.

Each returns the engine's ``Outcome`` (steps, preemptions, trace and the
``Failure`` if the execution failed); the async variants are for code that
already runs inside trio (pytest-trio).

And one way to test a secondary-MMU driver you wrote:

``check_driver(MyDriver)`` / ``assert_driver_passes(MyDriver)``
    Every driver suite (every scenario with a ``driver`` axis), for every
    notifier API generation the driver supports, under ``DFS`` with each
    suite's own bound (unbounded DPOR to exhaustion unless the suite declares
    one): a list of ``Result``, or an AssertionError
    carrying the first failure's report.  The driver may be a class object,
    an installed name (``"kvm"``) or ``"path/to/file.py:ClassName"``.

Implementation: each helper runs ``mmemu.explore_async`` for exactly one
execution with a one-shot strategy that wraps its chooser, then replays the
recorded choices with ``mmemu.replay_async`` so that the returned ``Outcome``
(and its trace) is exactly what the token reproduces.  From the engine's
private modules it uses only the ``Chooser`` type and the ``RUNNABLE`` state.
Hypothesis is imported only by ``schedules()`` and its examples, so the rest
works where only mmemu's runtime dependencies are installed.

Error tree (both are ``mmemu.ModelError``: the request was wrong, not the
protocol, so exploration does not catch them)::

    ModelError
    ├── ScheduleError        a choice list names a CPU that cannot run
    └── InterleavingError    a forced interleaving cannot happen
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from mmemu.engine import (
    CPU,
    ModelError,
    Outcome,
    Result,
    Scenario,
    Schedule,
    Settings,
    Simulation,
    Strategy,
    explore_async,
    replay_async,
)
from mmemu.engine._execution import RUNNABLE, Chooser
from mmemu.engine._locate import replay_command

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from mmemu.driver import Driver

__all__ = [
    "HypothesisSchedule",
    "InterleavingError",
    "ScheduleError",
    "assert_driver_passes",
    "assert_driver_passes_async",
    "check_driver",
    "check_driver_async",
    "driver_failure_message",
    "driver_name",
    "driver_suites",
    "force",
    "force_async",
    "registered_driver",
    "run_schedule",
    "run_schedule_async",
    "schedules",
]

ScenarioRef = Callable[[Simulation], Awaitable[Any]] | Scenario | str
#: how a test names a CPU: its id (``0``), its title prefix (``"cpu0"``) or
#: its ``name=`` when that is unique in the scenario (``"truncate"``)
CpuRef = int | str


class ScheduleError(ModelError):
    """A list of choices names a CPU that cannot run at that choice point."""


class InterleavingError(ModelError):
    """A forced interleaving cannot happen in this scenario (a named step
    never runs, or runs before the steps it was ordered after)."""


# ------------------------------------------------------------ running once


class _OneShot(Strategy):
    """Runs exactly one execution with a given chooser and keeps what it did.

    ``record`` asks the engine for the per-step event log (``force`` reads
    it to follow step labels).
    """

    name = "one-shot"

    def __init__(self, chooser: Chooser, *, record: bool = False,
                 on_end: Callable[[Simulation], None] | None = None) -> None:
        self._chooser = chooser
        self.record = record
        self._on_end = on_end
        self.choices: tuple[int, ...] | None = None

    def begin(self, index: int) -> Chooser | None:
        if index > 0:
            self.exhausted = True
            return None
        return self._chooser

    def end(self, sim: Simulation) -> None:
        self.choices = tuple(sim.choices)
        if self._on_end is not None:
            self._on_end(sim)

    def describe(self) -> str:
        return self.name


async def _run_once(scenario: ScenarioRef, strategy: _OneShot, *,
                    params: dict[str, Any] | None, mutants: Iterable[str],
                    max_steps: int | None) -> tuple[Outcome, str]:
    """One execution under ``strategy``; returns its replayed Outcome and token."""
    steps_cap = max_steps if max_steps is not None else Settings.from_env().max_steps
    result: Result = await explore_async(
        scenario, strategy=strategy, executions=1, shrink=False, params=params,
        mutants=mutants, max_steps=steps_cap)
    if strategy.choices is None:  # pragma: no cover - explore always runs one
        raise ModelError("the scenario was not run")
    if result.failure is not None:
        token = result.failure.schedule
    else:
        token = Schedule(scenario=result.scenario, choices=strategy.choices,
                         params=result.params, mutants=result.mutants,
                         max_steps=steps_cap).to_token()
    # The replay is strict: if the scenario is not deterministic this raises
    # NondeterminismError rather than returning an outcome the token would
    # not reproduce.
    outcome = await replay_async(scenario, token)
    return outcome, token


def _non_preemptive(prev: CPU | None, run: list[CPU]) -> CPU:
    if prev is not None and prev.state == RUNNABLE:
        return prev
    return run[0]


def _candidates(prev: CPU | None, run: list[CPU]) -> list[CPU]:
    """The runnable CPUs, the one that ran last (if still runnable) first.

    Index 0 is therefore "no preemption", and the others keep id order, so an
    index means the same thing in every process.
    """
    if prev is None or prev.state != RUNNABLE:
        return run
    return [prev] + [c for c in run if c is not prev]


# ------------------------------------------------------------- Hypothesis


#: at most this many priority change points (PCT's depth - 1): races that
#: need more preemptions than that are DFS's job
MAX_CHANGES = 3


@attrs.define(eq=False, repr=False)
class HypothesisSchedule:
    """A schedule drawn from Hypothesis: PCT-style priorities and change points.

    Made by ``schedules()``; give it to ``run_schedule``.  After a run,
    ``choices`` holds the CPU id chosen at each choice point, ``token`` the
    replay token and ``outcome`` what happened (for the last run only, if
    the example runs several scenarios).

    What is drawn, before the execution starts (``run_schedule`` first runs
    the scenario once without preemptions to learn its shape: how many CPUs,
    how many steps ``k``):

    1. ``c``, the number of *change points*, 0..``MAX_CHANGES``;
    2. ``c`` choice-point indices in ``0..k-1``;
    3. a priority order of the CPUs (a permutation).

    The execution then follows PCT (Burckhardt et al., ASPLOS 2010) with
    sticky CPUs: the running CPU keeps running while it can, except at a
    change point, where it drops below every other CPU and the
    highest-priority other runnable CPU takes over (a preemption); when the
    running CPU blocks or ends, the highest-priority runnable CPU runs.  So
    an execution has at most ``c`` preemptions, placed anywhere in it, and a
    race that needs one preemption at one of ``k`` places is drawn with
    probability about ``1/k`` per example with one change point -- where a
    per-choice-point coin would also have to *not* preempt at the other
    ``k - 1``.

    Shrinking: Hypothesis shrinks towards fewer change points, earlier
    ones and the identity order, so a failing example loses the preemptions
    it does not need, and the final one is the interleaving with the fewest.
    """

    data: st.DataObject
    choices: tuple[int, ...] = ()
    token: str | None = None
    outcome: Outcome | None = None

    def _draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        # DataObject.draw() prints every draw ("Draw 7: 13") under the
        # failing example: lines nobody can use.  The token noted after the
        # run says all of it, so draw through the ConjectureData the
        # DataObject wraps (Hypothesis calls that attribute semi-stable)
        # and fall back to the public draw if it ever goes away.
        conjecture = getattr(self.data, "conjecture_data", None)
        if conjecture is not None:
            return conjecture.draw(strategy)
        return self.data.draw(strategy)  # pragma: no cover - depends on the Hypothesis version

    def chooser(self, cpus: int, points: int) -> Chooser:
        """The chooser of one execution of a scenario with ``cpus`` CPUs and
        at most about ``points`` choice points (see the class docstring)."""
        from hypothesis import strategies as st

        changes = int(self._draw(st.integers(min_value=0, max_value=MAX_CHANGES)))
        at = frozenset(int(self._draw(st.integers(min_value=0, max_value=max(points - 1, 0))))
                       for _ in range(changes))
        order = list(self._draw(st.permutations(range(max(cpus, 1)))))
        # higher is chosen first; CPUs the probe did not see come last, by id
        prio = {cpu: len(order) - rank for rank, cpu in enumerate(order)}
        lowest = 0

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            nonlocal lowest
            current = prev if prev is not None and prev.state == RUNNABLE else None
            if len(sim.choices) in at and current is not None:
                lowest -= 1
                prio[current.id] = lowest  # the change point: below every other CPU
                others = [c for c in run if c is not current]
                return max(others, key=lambda c: (prio.get(c.id, -c.id - 1000), -c.id))
            if current is not None:
                return current
            return max(run, key=lambda c: (prio.get(c.id, -c.id - 1000), -c.id))

        return choose

    def __repr__(self) -> str:
        # Hypothesis prints the example before running it, when nothing has
        # been drawn yet: point at the note that run_schedule adds instead.
        if self.token is None:
            return "<mmemu schedule, drawn while running: see the mmemu note>"
        return f"<mmemu schedule {self.token}>"


_SHAPES: dict[str, tuple[int, int]] = {}


async def _shape(scenario: ScenarioRef, *, params: dict[str, Any] | None,
                 mutants: Iterable[str], max_steps: int | None) -> tuple[int, int]:
    """(CPUs, steps) of the scenario's execution without preemptions, for the
    draws of a HypothesisSchedule: a change point is a choice-point index
    below the step count (PCT draws them over the steps; the choice points
    of one order of the CPUs can be far fewer than another order's).
    Deterministic, so it is kept (per scenario, parameters and mutants)
    instead of run for every example."""
    import json

    from mmemu.engine._registry import scenario_name

    name = scenario if isinstance(scenario, str) else scenario_name(scenario)
    key = json.dumps([name, params or {}, sorted(mutants), max_steps],
                     sort_keys=True, default=str)
    got = _SHAPES.get(key)
    if got is None:
        seen: list[tuple[int, int]] = []
        probe = _OneShot(lambda sim, prev, run: _non_preemptive(prev, run),
                         on_end=lambda sim: seen.append((len(sim.cpu_list), sim.steps)))
        steps_cap = max_steps if max_steps is not None else Settings.from_env().max_steps
        await explore_async(scenario, strategy=probe, executions=1, shrink=False,
                            params=params, mutants=mutants, max_steps=steps_cap)
        got = _SHAPES[key] = seen[0] if seen else (1, 1)
    return got


def schedules() -> st.SearchStrategy[HypothesisSchedule]:
    """A Hypothesis strategy for scheduling choices; use with ``run_schedule``.

    ::

        @given(schedule=mmemu.testing.schedules())
        def test_counter(schedule):
            outcome = mmemu.testing.run_schedule("demo:lost-update", schedule)
            assert outcome.failure is None, outcome.failure.report()

    Each example draws PCT-style priorities and change points (see
    ``HypothesisSchedule``): a race that needs one or two preemptions is
    found within the default 100 examples with high probability, and
    Hypothesis shrinks a failing interleaving towards the fewest
    preemptions.  The final example notes its replay token
    (``mmemu replay TOKEN``).  Run with
    ``@settings(derandomize=True)`` or a fixed ``@seed`` for a search that is
    the same on every run.
    """
    from hypothesis import strategies as st

    return st.builds(HypothesisSchedule, st.data())


def _sequence_chooser(choices: Sequence[int]) -> Chooser:
    wanted = tuple(choices)
    for c in wanted:
        if not isinstance(c, int) or isinstance(c, bool) or c < 0:
            raise ModelError(f"'choices' must be CPU ids (ints >= 0) (got {c!r} in {list(wanted)})")

    def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
        k = len(sim.choices)
        if k >= len(wanted):
            return _non_preemptive(prev, run)
        for cpu in run:
            if cpu.id == wanted[k]:
                return cpu
        sim.fail(ScheduleError(
            f"choice {k} (step {sim.steps}) names cpu{wanted[k]}, but only "
            f"{', '.join(c.title for c in run)} can run there"))
        raise AssertionError("unreachable: sim.fail raises")  # pragma: no cover

    return choose


async def run_schedule_async(
    scenario: ScenarioRef,
    schedule: HypothesisSchedule | Sequence[int],
    *,
    params: dict[str, Any] | None = None,
    mutants: Iterable[str] = (),
    max_steps: int | None = None,
) -> Outcome:
    """``run_schedule`` for code already running inside trio."""
    if isinstance(schedule, HypothesisSchedule):
        cpus, points = await _shape(scenario, params=params, mutants=mutants, max_steps=max_steps)
        strategy = _OneShot(schedule.chooser(cpus, points))
    elif isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise ModelError(
            "'schedule' must come from mmemu.testing.schedules() or be a sequence of CPU "
            f"ids (got {schedule!r}); to replay a token use mmemu.replay")
    else:
        strategy = _OneShot(_sequence_chooser(schedule))
    outcome, token = await _run_once(scenario, strategy, params=params, mutants=mutants,
                                     max_steps=max_steps)
    if isinstance(schedule, HypothesisSchedule):
        assert strategy.choices is not None
        schedule.choices = strategy.choices
        schedule.token = token
        schedule.outcome = outcome
        from hypothesis import note
        from hypothesis.control import currently_in_test_context

        if currently_in_test_context():
            # note() prints only for the final (shrunk) example.
            plural = "" if outcome.preemptions == 1 else "s"
            text = (f"mmemu schedule for {outcome.scenario}: {outcome.steps} steps, "
                    f"{outcome.preemptions} preemption{plural}\n"
                    f"  replay with: {replay_command(outcome.scenario, token)}")
            if outcome.failure is not None:
                text += "\n" + outcome.failure.report()
            note(text)
    return outcome


def run_schedule(
    scenario: ScenarioRef,
    schedule: HypothesisSchedule | Sequence[int],
    *,
    params: dict[str, Any] | None = None,
    mutants: Iterable[str] = (),
    max_steps: int | None = None,
) -> Outcome:
    """Run ``scenario`` once under ``schedule`` and return the ``Outcome``.

    ``schedule`` is an example of ``schedules()`` (choices drawn from
    Hypothesis as the execution goes) or a sequence of CPU ids, one per
    choice point, after which no CPU is preempted.  The execution is replayed
    from its token before returning, so ``outcome.failure.schedule`` (when it
    failed) reproduces exactly this outcome.  Raises ``ScheduleError`` when a
    listed CPU cannot run at its choice point.
    """
    outcome: Outcome = trio.run(_call, run_schedule_async, scenario, schedule,
                                dict(params=params, mutants=mutants, max_steps=max_steps))
    return outcome


async def _call(fn: Callable[..., Awaitable[Outcome]], scenario: ScenarioRef, arg: Any,
                kwargs: dict[str, Any]) -> Outcome:
    return await fn(scenario, arg, **kwargs)


# --------------------------------------------------------- forced orders


def _resolve_cpu(ref: CpuRef, sim: Simulation) -> CPU | None:
    """The CPU ``ref`` names in ``sim``; None if it has not been started (yet).

    Raises InterleavingError for a name that two CPUs share.
    """
    cpus = sim.cpu_list
    if isinstance(ref, int):  # (bools were refused by _check_order)
        return cpus[ref] if 0 <= ref < len(cpus) else None
    if ref.startswith("cpu") and ref[3:].isdigit():
        n = int(ref[3:])
        return cpus[n] if n < len(cpus) else None
    named = [c for c in cpus if c.name == ref]
    if len(named) > 1:
        raise InterleavingError(
            f"CPU name {ref!r} is ambiguous: {', '.join(c.title for c in named)} share it; "
            f"name them by id (0, 1, ...) or as 'cpu0', 'cpu1', ...")
    return named[0] if named else None


def _describe(ref: CpuRef, label: str) -> str:
    who = f"cpu{ref}" if isinstance(ref, int) else ref
    return f"({who}, {label!r})"


class _Forcer:
    """Chooses so that the named steps run in the given order.

    Invariant: ``pos`` counts the named steps already run, in order; a CPU
    whose next step is its own next named step runs only when that step is
    the overall next one (``order[pos]``).
    """

    def __init__(self, order: Sequence[tuple[CpuRef, str]]) -> None:
        self.order = list(order)
        self.pos = 0
        self.seen = 0  # events of the execution already matched against order
        self.error: InterleavingError | None = None

    def _own_next(self, cpu: CPU, sim: Simulation) -> str | None:
        """The label of ``cpu``'s next named step (at or after ``pos``)."""
        for ref, label in self.order[self.pos:]:
            if _resolve_cpu(ref, sim) is cpu:
                return label
        return None

    def _scan(self, sim: Simulation) -> None:
        """Match the steps run since the last look against the order."""
        events = sim.events
        while self.seen < len(events):
            cpu_id, label = events[self.seen][0], events[self.seen][1]
            self.seen += 1
            cpu = sim.cpu_list[cpu_id]
            if self.pos < len(self.order):
                ref, want = self.order[self.pos]
                if label == want and _resolve_cpu(ref, sim) is cpu:
                    self.pos += 1
                    continue
                if label == self._own_next(cpu, sim):
                    raise InterleavingError(
                        f"{cpu.title} ran {label!r} (step {self.seen - 1}) before "
                        f"{_describe(ref, want)}: it was the only CPU that could run "
                        f"({self._ran(sim)})")

    def _ran(self, sim: Simulation) -> str:
        return "steps so far: " + ", ".join(
            f"cpu{e[0]} {e[1]!r}" for e in sim.events[: self.seen]) if sim.events else "no steps"

    def choose(self, sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
        try:
            self._scan(sim)
            return self._pick(sim, prev, run)
        except InterleavingError as exc:
            self.error = exc
            sim.fail(exc)
            raise  # pragma: no cover - sim.fail raises

    def _pick(self, sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
        if self.pos < len(self.order):
            ref, want = self.order[self.pos]
            target = _resolve_cpu(ref, sim)
            if target is not None and target in run:
                # Its next step is either the named one or a step before it.
                return target
        # The next named CPU cannot run (yet): run a CPU whose next step is
        # not one of its own named steps, preferring no preemption.
        free = [c for c in _candidates(prev, run) if c.pending[0] != self._own_next(c, sim)]
        if free:
            return free[0]
        ref, want = self.order[self.pos]
        target = _resolve_cpu(ref, sim)
        state = "has not started" if target is None else (
            f"is {target.state}" + (f" ({target.why})" if target.why else ""))
        waiting = ", ".join(f"{c.title} at {c.pending[0]!r}" for c in run)
        raise InterleavingError(
            f"cannot run {_describe(ref, want)} next: that CPU {state}, and every CPU "
            f"that can run ({waiting}) is at a step named later in the order")

    def finish(self, sim: Simulation) -> None:
        if self.error is not None:
            return
        try:
            self._scan(sim)
        except InterleavingError as exc:
            self.error = exc
            return
        if self.pos < len(self.order) and sim.failure is None:
            ref, want = self.order[self.pos]
            cpu = _resolve_cpu(ref, sim)
            if cpu is None:
                titles = ", ".join(c.title for c in sim.cpu_list) or "none"
                self.error = InterleavingError(
                    f"no CPU {ref!r} in this scenario (its CPUs: {titles})")
                return
            self.error = InterleavingError(
                f"the execution finished without running {_describe(ref, want)} "
                f"(named step {self.pos + 1} of {len(self.order)}); {cpu.title} ran: "
                f"{', '.join(repr(x) for x in cpu.labels) or 'nothing'}")


def _check_order(interleaving: Iterable[tuple[CpuRef, str]]) -> list[tuple[CpuRef, str]]:
    order = []
    for k, pair in enumerate(interleaving):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], str)
                and isinstance(pair[0], (int, str)) and not isinstance(pair[0], bool)):
            raise ModelError(
                f"'interleaving' must be (cpu, step label) pairs, cpu an id or a name "
                f"(got {pair!r} at position {k})")
        order.append((pair[0], pair[1]))
    if not order:
        raise ModelError("'interleaving' is empty: name at least one (cpu, step label)")
    return order


async def force_async(
    scenario: ScenarioRef,
    interleaving: Iterable[tuple[CpuRef, str]],
    *,
    params: dict[str, Any] | None = None,
    mutants: Iterable[str] = (),
    max_steps: int | None = None,
) -> Outcome:
    """``force`` for code already running inside trio."""
    forcer = _Forcer(_check_order(interleaving))
    strategy = _OneShot(forcer.choose, record=True, on_end=forcer.finish)
    # An InterleavingError found at a choice point fails the execution and,
    # being a ModelError, propagates out of explore_async; one found after
    # the last choice point is left in the forcer.
    outcome, _token = await _run_once(scenario, strategy, params=params,
                                      mutants=mutants, max_steps=max_steps)
    if forcer.error is not None:
        raise forcer.error
    return outcome


def force(
    scenario: ScenarioRef,
    interleaving: Iterable[tuple[CpuRef, str]],
    *,
    params: dict[str, Any] | None = None,
    mutants: Iterable[str] = (),
    max_steps: int | None = None,
) -> Outcome:
    """Run ``scenario`` once with the named steps in the given order.

    ``interleaving`` lists ``(cpu, step label)`` pairs in the order they must
    run; ``cpu`` is a CPU id, ``"cpuN"``, or the ``name=`` it was started
    with when that is unique.  Steps not listed (``<start>``, steps of no
    interest) run in between, each CPU as late as the order allows, without
    preemption where possible.  A label that occurs several times on one CPU
    matches its occurrences in turn.

    Returns the replayed ``Outcome``; its ``failure`` is set when the forced
    execution fails (then steps named after the failure need not have run).
    Raises ``InterleavingError`` when the scenario cannot follow the order,
    saying which named step could not run and what ran instead.

    Example, the lost update of ``demo:lost-update``::

        force("demo:lost-update", [
            (0, "1. tmp = counter"),
            (1, "1. tmp = counter"), (1, "2. counter = tmp + 1"),
            (0, "2. counter = tmp + 1"),
        ]).failure.kind == "InvariantViolation"
    """
    outcome: Outcome = trio.run(_call, force_async, scenario, interleaving,
                                dict(params=params, mutants=mutants, max_steps=max_steps))
    return outcome


# ------------------------------------------------------ checking a driver
#
# check_driver runs a secondary-MMU driver through every driver suite (every
# registered scenario with a "driver" axis: the notifier:* suites, and any a
# plugin adds), for every notifier API generation the driver supports.  The
# suites build their driver with ``new_driver(sim)`` from the *name* in
# ``sim.params["driver"]`` -- that is how a token knows which driver to
# reload -- so a class object is first given a name (``driver_name``) and
# registered under it for the duration (``registered_driver``).


def _entry_point_name(cls: type[Driver]) -> str | None:
    """The installed driver name that loads exactly ``cls``, if any."""
    from mmemu.driver import DriverLoadError, available_drivers, load_driver

    for name in available_drivers():
        try:
            if load_driver(name) is cls:
                return name
        except DriverLoadError:  # a broken plugin is not ours to report here
            continue
    return None


def driver_name(cls: type[Driver]) -> str:
    """The name ``check_driver`` gives a driver class in ``params["driver"]``.

    In order of preference, because a token replays in another process only
    if that process can load the driver from the name alone:

    1. the installed (entry-point) name that loads exactly this class
       (``"kvm"`` for ``mmemu.drivers.kvm.KvmDriver``);
    2. ``"path/to/file.py:Class"`` for a class defined at the top level of a
       file (relative to the working directory when it lies below it, so
       reports stay short; ``mmemu replay`` from there reloads it);
    3. ``"module.Qualified.Name"`` otherwise (a class defined inside a
       function): it loads only while registered, i.e. inside
       ``check_driver`` or a ``registered_driver`` block.
    """
    from mmemu.driver import Driver

    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise ModelError(f"'driver' must be a subclass of mmemu.driver.Driver, an installed "
                         f"driver name or 'path/to/file.py:ClassName' (got {cls!r})")
    name = _entry_point_name(cls)
    if name is not None:
        return name
    import os
    import sys

    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    qual = cls.__qualname__
    if file and file.endswith(".py") and "." not in qual and getattr(module, qual, None) is cls:
        path = os.path.abspath(file)
        rel = os.path.relpath(path)
        return f"{rel if not rel.startswith('..') else path}:{qual}"
    return f"{cls.__module__}.{qual}"


class registered_driver:  # noqa: N801 - used as a function: `with registered_driver(cls)`
    """Context manager: register a driver class under ``driver_name(cls)``
    (or ``name``) so that suites and ``mmemu.replay`` load exactly this class
    object by that name; yields the name.  What the name loaded before is
    put back on exit.

    ``check_driver`` does this itself; use it to replay, later, a token of a
    class that no file or entry point names::

        with registered_driver(MyDriver):
            mmemu.replay(None, token)
    """

    def __init__(self, cls: type[Driver], name: str | None = None) -> None:
        self.cls = cls
        self.name = name if name is not None else driver_name(cls)
        self._old: type[Driver] | None = None

    def __enter__(self) -> str:
        from mmemu.driver import register_driver

        self._old = register_driver(self.name, self.cls)
        return self.name

    def __exit__(self, *exc: object) -> None:
        from mmemu.driver import register_driver

        # Put back what the name loaded before (None: nothing, the next
        # load_driver imports the file or entry point again as usual).
        register_driver(self.name, self._old)


def driver_suites() -> list[Scenario]:
    """Every registered scenario with a ``driver`` axis, by name."""
    from mmemu.engine import all_scenarios

    return [sc for sc in all_scenarios() if "driver" in sc.axes]


def _driver_plan(spec: str, api: str | None) -> list[tuple[Scenario, dict[str, Any]]]:
    """(suite, params) for every driver suite x API generation the driver
    supports.  The suite's own driver axis is replaced by ``spec``; its other
    axes keep their values, and its ``filter`` (``supports_api``) drops the
    generations the driver does not list in ``Driver.apis``."""
    from mmemu.mm.init import API_GENERATIONS

    if api is not None and api not in API_GENERATIONS:
        raise ModelError(f"'api' must be one of {', '.join(API_GENERATIONS)} (got {api!r})")
    plan: list[tuple[Scenario, dict[str, Any]]] = []
    for sc in driver_suites():
        seen: list[dict[str, Any]] = []
        # combinations() before the filter: the filter judges the suite's
        # own drivers, ours is judged below with our driver in the params.
        for combo in _unfiltered_combinations(sc):
            params = dict(combo, driver=spec)
            if api is not None and params.get("api", "2.6.27") != api:
                continue
            if params in seen or not sc.accepts(params):
                continue
            seen.append(params)
            plan.append((sc, params))
    return plan


def _unfiltered_combinations(sc: Scenario) -> list[dict[str, Any]]:
    return attrs.evolve(sc, filter=None).combinations()


#: ``check_driver``'s default bound: each suite's own (unbounded DPOR to
#: exhaustion unless the suite declares a preemption bound)
SUITE_BOUND = "suite"


def _fresh_strategy(strategy: str | Strategy | None, max_preemptions: int | None) -> str | Strategy:
    """A strategy for one exploration.  A Strategy object keeps its search
    state (DFS's stack, ``exhausted``), so each suite gets its own copy."""
    if strategy is None:
        from mmemu.engine import DFS

        return DFS(max_preemptions=max_preemptions)
    if isinstance(strategy, Strategy):
        import copy

        return copy.deepcopy(strategy)
    return strategy


async def check_driver_async(
    driver: type[Driver] | str,
    *,
    api: str | None = None,
    strategy: str | Strategy | None = None,
    executions: int | None = None,
    max_preemptions: int | None | str = SUITE_BOUND,
    mutants: Iterable[str] = (),
    seed: int | None = None,
) -> list[Result]:
    """``check_driver`` for code already running inside trio (pytest-trio)."""
    from mmemu.driver import load_driver

    if isinstance(driver, str):
        load_driver(driver)  # an unknown name is a DriverLoadError now, not per suite
        registration: registered_driver | None = None
        spec = driver
    else:
        registration = registered_driver(driver)
        spec = registration.name
    mutant_list = list(mutants)
    results: list[Result] = []
    if registration is not None:
        registration.__enter__()
    try:
        plan = _driver_plan(spec, api)
        if not plan:
            cls = load_driver(spec)
            wanted = f"the notifier API {api!r}" if api is not None else "any notifier API"
            raise ModelError(f"no driver suite runs driver {spec!r} with {wanted} (it lists "
                             f"apis={cls.apis!r} in its class)")
        for sc, params in plan:
            bound = sc.max_preemptions if max_preemptions == SUITE_BOUND else max_preemptions
            if isinstance(bound, str):
                raise ModelError(f"'max_preemptions' must be an int, None or {SUITE_BOUND!r} "
                                 f"(got {bound!r})")
            results.append(await explore_async(
                sc.name, strategy=_fresh_strategy(strategy, bound),
                executions=executions if executions is not None else sc.executions,
                max_preemptions=bound, params=params, mutants=mutant_list,
                seed=seed))
    finally:
        if registration is not None:
            registration.__exit__(None, None, None)
    return results


def check_driver(
    driver: type[Driver] | str,
    *,
    api: str | None = None,
    strategy: str | Strategy | None = None,
    executions: int | None = None,
    max_preemptions: int | None | str = SUITE_BOUND,
    mutants: Iterable[str] = (),
    seed: int | None = None,
) -> list[Result]:
    """Run every driver suite against ``driver``; one ``Result`` per run.

    ``driver`` is a ``Driver`` subclass, an installed driver name (``"kvm"``)
    or ``"path/to/file.py:ClassName"``.  Every registered scenario with a
    ``driver`` axis (``driver_suites()``) runs once per notifier API
    generation the driver lists in ``Driver.apis`` -- or only ``api``
    (``"2.6.27"`` or ``"modern"``; a ModelError if the driver does not
    support it).  Each run is an exploration under ``strategy`` (default
    ``DFS`` bounded by ``max_preemptions``: by default the suite's own bound,
    ``SUITE_BOUND``; None is unbounded), with the suite's own
    execution budget unless ``executions`` is given; a failure is shrunk
    and its token names the driver (see ``driver_name``).

    A class object runs as itself, registered under ``driver_name(cls)``
    while the suites run; a class defined at the top of a file gets
    ``"file.py:Class"``, so its tokens also replay with ``mmemu replay``.

    ::

        results = check_driver(MyDriver)
        assert all(r.ok for r in results), results

    ``assert_driver_passes`` does the same and fails with the first report.
    """
    results: list[Result] = trio.run(_call_check_driver, driver, dict(
        api=api, strategy=strategy, executions=executions, max_preemptions=max_preemptions,
        mutants=mutants, seed=seed))
    return results


async def _call_check_driver(driver: type[Driver] | str, kwargs: dict[str, Any]) -> list[Result]:
    return await check_driver_async(driver, **kwargs)


def driver_failure_message(results: Sequence[Result]) -> str | None:
    """None if every run passed; else a summary line per failed run and the
    report (timeline, violation, replay line) of the first failure."""
    failed = [r for r in results if r.failure is not None]
    if not failed:
        return None
    lines = [f"{len(failed)} of {len(results)} driver suite runs failed:"]
    for r in failed:
        assert r.failure is not None
        params = ", ".join(f"{k}={v}" for k, v in sorted(r.params.items()))
        lines.append(f"  {r.scenario} [{params}]: {r.failure.kind}")
    first = failed[0].failure
    assert first is not None
    lines += ["", first.report()]
    return "\n".join(lines)


def assert_driver_passes(
    driver: type[Driver] | str,
    *,
    api: str | None = None,
    strategy: str | Strategy | None = None,
    executions: int | None = None,
    max_preemptions: int | None | str = SUITE_BOUND,
    mutants: Iterable[str] = (),
    seed: int | None = None,
) -> list[Result]:
    """``check_driver``, raising ``AssertionError`` if any suite failed.

    The message lists every failed run and then the first failure's
    ``Failure.report()`` (the shrunk timeline, the violation -- e.g.
    ``FreedPageStillMapped`` -- and the replay line).  Returns the results
    when every run passed.
    """
    results = check_driver(driver, api=api, strategy=strategy, executions=executions,
                           max_preemptions=max_preemptions, mutants=mutants, seed=seed)
    message = driver_failure_message(results)
    if message is not None:
        raise AssertionError(message)
    return results


async def assert_driver_passes_async(
    driver: type[Driver] | str,
    *,
    api: str | None = None,
    strategy: str | Strategy | None = None,
    executions: int | None = None,
    max_preemptions: int | None | str = SUITE_BOUND,
    mutants: Iterable[str] = (),
    seed: int | None = None,
) -> list[Result]:
    """``assert_driver_passes`` for code already running inside trio."""
    results = await check_driver_async(driver, api=api, strategy=strategy,
                                       executions=executions, max_preemptions=max_preemptions,
                                       mutants=mutants, seed=seed)
    message = driver_failure_message(results)
    if message is not None:
        raise AssertionError(message)
    return results
