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

if TYPE_CHECKING:
    from hypothesis import strategies as st

__all__ = [
    "HypothesisSchedule",
    "InterleavingError",
    "ScheduleError",
    "force",
    "force_async",
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


#: How a choice point reads a Hypothesis draw ``v`` in ``0..15`` (see
#: ``HypothesisSchedule``): 0 stops drawing, 1..12 take the default, 13..15
#: take another CPU.  So a fresh draw preempts with probability 3/16 and
#: stops with 1/16 (Hypothesis also favours the bounds): a random walk with
#: a few preemptions, scattered over the whole execution.
_DRAW_MAX = 15
_LAST_DEFAULT = 12


@attrs.define(eq=False, repr=False)
class HypothesisSchedule:
    """A schedule drawn from Hypothesis, one choice point at a time.

    Made by ``schedules()``; give it to ``run_schedule``.  After a run,
    ``choices`` holds the CPU id chosen at each choice point, ``token`` the
    replay token and ``outcome`` what happened (for the last run only, if
    the example runs several scenarios).

    The encoding is chosen for shrinking.  Each choice point has a *default*:
    the CPU that ran last if it can continue (no preemption), else the
    lowest-numbered runnable CPU.  A draw of 0 takes the default and ends the
    drawing: every later choice point takes its default too.  1..12 take the
    default; 13..15 take another CPU (a second draw picks which when there
    are several).  Hypothesis shrinks towards short sequences of small
    values, that is towards stopping early with few non-default choices: a
    failing interleaving loses the preemptions it does not need, and
    dropping one preemption is a deletion of a single draw, a move the
    shrinker always tries.
    """

    data: st.DataObject
    choices: tuple[int, ...] = ()
    token: str | None = None
    outcome: Outcome | None = None

    def _draw(self, high: int) -> int:
        from hypothesis import strategies as st

        strategy = st.integers(min_value=0, max_value=high)
        # DataObject.draw() prints every draw ("Draw 7: 13") under the
        # failing example: dozens of lines nobody can use.  The token noted
        # after the run says all of it, so draw through the ConjectureData
        # the DataObject wraps (Hypothesis calls that attribute semi-stable)
        # and fall back to the public draw if it ever goes away.
        conjecture = getattr(self.data, "conjecture_data", None)
        if conjecture is not None:
            value = conjecture.draw(strategy)
        else:  # pragma: no cover - depends on the Hypothesis version
            value = self.data.draw(strategy)
        return int(value)

    def chooser(self) -> Chooser:
        stopped = False

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            nonlocal stopped
            default = _non_preemptive(prev, run)
            if stopped:
                return default
            v = self._draw(_DRAW_MAX)
            if v == 0:
                stopped = True
                return default
            if v <= _LAST_DEFAULT:
                return default
            others = [c for c in run if c is not default]
            return others[self._draw(len(others) - 1)] if len(others) > 1 else others[0]

        return choose

    def __repr__(self) -> str:
        # Hypothesis prints the example before running it, when nothing has
        # been drawn yet: point at the note that run_schedule adds instead.
        if self.token is None:
            return "<mmemu schedule, drawn while running: see the mmemu note>"
        return f"<mmemu schedule {self.token}>"


def schedules() -> st.SearchStrategy[HypothesisSchedule]:
    """A Hypothesis strategy for scheduling choices; use with ``run_schedule``.

    ::

        @given(schedule=mmemu.testing.schedules())
        def test_counter(schedule):
            outcome = mmemu.testing.run_schedule("demo:lost-update", schedule)
            assert outcome.failure is None, outcome.failure.report()

    Choices are drawn lazily, one per choice point, encoded so that
    Hypothesis shrinks a failing interleaving towards the fewest preemptions
    (see ``HypothesisSchedule``).  The final
    example notes its replay token (``mmemu replay TOKEN``).  Run with
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
        strategy = _OneShot(schedule.chooser())
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
                    f"  replay with: mmemu replay {token}")
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
