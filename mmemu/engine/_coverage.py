"""Coverage: what an exploration reached, and the goals a suite must reach.

A suite that passes without ever running its interesting interleaving proves
nothing.  So a suite declares *goals*: events that at least one execution of a
complete exploration must reach ("reclaim freed the page", "the guest fault
retried").  The model reports an event where it happens::

    mmemu.lowlevel.reach("vmscan: __remove_mapping freed the page")

and the scenario names it::

    @mmemu.scenario("pagecache:lookup-vs-reclaim",
                    reaches=["vmscan: __remove_mapping freed the page", ...])

An exploration that explored its whole space (``Result.exhausted``) without a
failure, and never reached one of its goals, fails with ``VacuousSuite``
listing what was never reached.  An incomplete exploration (budget spent,
interrupted, a shard) cannot say a goal is unreachable: its
``Result.coverage.unreached`` is only informative.

Events are strings and the engine gives them no meaning.  Each has a *kind*:

- ``"event"``: reported with ``reach(name)`` (always recorded: the model
  calls it only where something worth counting happens, so it costs nothing
  elsewhere);
- ``"callback"``: the same, reported by the kernel model for every notifier
  callback it makes (``reach("kvm->invalidate_page", kind="callback")``);
- ``"span"`` and ``"step"``: every kernel function entered (``span``) and
  every labelled step run.  They are recorded only when the exploration
  asked for coverage (``explore(..., coverage=True)``, ``mmemu run
  --coverage``) or when one of its goals names a step or a span: a
  dictionary update per step is small but not free on the engine's hot path.

A goal is a string: ``"step:LABEL"`` (a step with exactly that label ran:
the protocol's own words, e.g. ``"step:3. page moved: put_page, goto 1"``),
``"span:NAME"``, ``"callback:NAME"``, anything else an event.  Prefer a
step label when the label itself names the outcome, and an explicit event
when the outcome is decided inside a step (a cmpxchg that fails).
``reaches`` may also be a function ``params -> goals`` when the goals depend
on the suite's parameters (a driver that has no retry path).

Counts: per event, the number of executions that reached it and the total
number of times it was reached.  Shrinking and replays do not count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._errors import MmemuError, ModelError

#: kinds of coverage events, in the order reports list them
KINDS = ("event", "callback", "span", "step")
#: kinds recorded only when asked for (coverage=True, or a goal names one)
RECORDED_ON_DEMAND = ("span", "step")

Goals = Sequence[str] | Callable[[dict[str, Any]], Iterable[str]]


class VacuousSuite(MmemuError):
    """A complete exploration of a suite never reached one of its goals: the
    suite passed without running the interleaving it exists for.

    ``unreached`` lists the goals; ``executions`` is how many executions the
    exploration ran."""

    def __init__(self, message: str, *, unreached: Sequence[str], executions: int) -> None:
        super().__init__(message)
        self.message = message
        self.unreached = tuple(unreached)
        self.executions = executions
        self.details = ""

    def __str__(self) -> str:
        return self.message


def parse_goal(goal: str) -> tuple[str, str]:
    """``"callback:kvm->release"`` -> ("callback", "kvm->release"); other
    strings are events."""
    if not isinstance(goal, str) or not goal.strip():
        raise ModelError(f"a coverage goal must be a non-empty string (got {goal!r})")
    kind, colon, rest = goal.partition(":")
    if colon and kind in KINDS:
        if not rest:
            raise ModelError(f"goal {goal!r} names no {kind}")
        return kind, rest
    return "event", goal


def needs_recording(goals: Iterable[str]) -> bool:
    """Do these goals name steps or spans (recorded only on demand)?"""
    return any(parse_goal(g)[0] in RECORDED_ON_DEMAND for g in goals)


def resolve_goals(goals: Goals | None, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The goals of one parameter combination, validated, in declared order."""
    if goals is None:
        return ()
    got = goals(dict(params)) if callable(goals) else goals
    if isinstance(got, str):
        raise ModelError(f"'reaches' must be a list of goals, not one string ({got!r})")
    out: list[str] = []
    for g in got:
        parse_goal(g)
        if g not in out:
            out.append(g)
    return tuple(out)


def _key(goal: str) -> tuple[str, str]:
    return parse_goal(goal)


@attrs.define
class Coverage:
    """What the executions of one exploration reached.

    ``counts[(kind, name)] = [executions that reached it, times reached]``.
    ``goals`` are the suite's goals for these parameters (``unreached``
    lists those with no execution)."""

    executions: int = 0
    counts: dict[tuple[str, str], list[int]] = attrs.field(factory=dict)
    goals: tuple[str, ...] = ()

    def add(self, reached: Mapping[tuple[str, str], int]) -> None:
        """Count one execution's events (``Simulation.reached``)."""
        self.executions += 1
        counts = self.counts
        for key, n in reached.items():
            c = counts.get(key)
            if c is None:
                counts[key] = [1, n]
            else:
                c[0] += 1
                c[1] += n

    def merge(self, other: Coverage) -> None:
        self.executions += other.executions
        for key, (e, n) in other.counts.items():
            c = self.counts.get(key)
            if c is None:
                self.counts[key] = [e, n]
            else:
                c[0] += e
                c[1] += n
        for g in other.goals:
            if g not in self.goals:
                self.goals += (g,)

    def executions_reaching(self, goal: str) -> int:
        c = self.counts.get(_key(goal))
        return c[0] if c is not None else 0

    @property
    def unreached(self) -> tuple[str, ...]:
        return tuple(g for g in self.goals if self.executions_reaching(g) == 0)

    def of_kind(self, kind: str) -> list[tuple[str, int, int]]:
        """(name, executions, times) of one kind, most executions first, then by name."""
        rows = [(name, c[0], c[1]) for (k, name), c in self.counts.items() if k == kind]
        rows.sort(key=lambda r: (-r[1], r[0]))
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"executions": self.executions, "goals": list(self.goals),
                "unreached": list(self.unreached),
                "counts": [[k, name, c[0], c[1]] for (k, name), c in sorted(self.counts.items())]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Coverage:
        cov = cls(executions=int(data.get("executions", 0)), goals=tuple(data.get("goals", ())))
        for k, name, e, n in data.get("counts", ()):
            cov.counts[(str(k), str(name))] = [int(e), int(n)]
        return cov


#: headings of the coverage report, per kind
KIND_TITLES = {"event": "events", "callback": "notifier callbacks",
               "span": "kernel functions (spans)", "step": "labelled steps"}


def render(title: str, cov: Coverage, *, runs: int = 1) -> list[str]:
    """The text of ``mmemu run --coverage`` for one suite: its goals, then
    every event, callback, kernel function and step label reached, each with
    the number of executions that reached it and how many times in all."""
    lines = [f"coverage of {title}: {runs} run{'' if runs == 1 else 's'}, "
             f"{cov.executions} executions"]
    if cov.goals:
        lines += ["  goals", "    executions  goal"]
        for g in cov.goals:
            n = cov.executions_reaching(g)
            lines.append(f"    {n:>10}  {g}" if n else f"    {'MISSED 0':>10}  {g}")
    for kind in KINDS:
        rows = cov.of_kind(kind)
        if not rows:
            continue
        lines += [f"  {KIND_TITLES[kind]}", "    executions     times  name"]
        lines += [f"    {e:>10} {n:>9}  {name}" for name, e, n in rows]
    return lines


def vacuity_error(scenario: str, params: Mapping[str, Any], coverage: Coverage,
                  ) -> VacuousSuite | None:
    """The VacuousSuite of a complete exploration, or None if every goal was reached."""
    missing = coverage.unreached
    if not missing:
        return None
    head = scenario
    if params:
        head += " [" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + "]"
    reached = [g for g in coverage.goals if g not in missing]
    lines = [f"{head} explored its whole space ({coverage.executions} executions) without "
             f"reaching {len(missing)} of its {len(coverage.goals)} goal"
             f"{'' if len(coverage.goals) == 1 else 's'}: the suite passed without running "
             f"the interleaving it exists for"]
    lines += [f"  never reached: {g}" for g in missing]
    lines += [f"  reached in {coverage.executions_reaching(g)} execution(s): {g}"
              for g in reached]
    return VacuousSuite("\n".join(lines), unreached=missing, executions=coverage.executions)


__all__ = ["KINDS", "KIND_TITLES", "RECORDED_ON_DEMAND", "needs_recording", "render", "Coverage", "Goals", "VacuousSuite", "parse_goal",
           "resolve_goals", "vacuity_error"]
