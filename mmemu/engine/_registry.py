"""Named scenarios and mutants.

A scenario registers under ``area:name`` (``pagecache:lookup-vs-reclaim``);
tokens carry that name, so a schedule replays in any process that can import
the scenario.  A scenario may declare parameter axes (``driver``, ``api``):
``mmemu run`` explores every combination.  A *mutant* is a named protocol
variant that lives beside the code it changes; the model asks
``mmemu.mutant(name)`` where the variant departs from the kernel.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._coverage import Goals, resolve_goals
from ._errors import ModelError
from ._locate import display_name, locate, located_name

ScenarioFn = Callable[[Any], Awaitable[Any]]
#: the default executions cap of a suite (see Scenario.executions)
EXHAUSTIVE_CAP = 1_000_000
#: an axis: a fixed list of values, or a function giving them (drivers installed)
Axis = Sequence[Any] | Callable[[], Sequence[Any]]


@attrs.frozen
class Mutant:
    name: str
    summary: str
    caught_as: str = ""
    doc: str = ""
    #: optional: the parameter combinations (driver, api) the mutant can
    #: break at all; None: every combination of the suites that catch it
    applies: Callable[[dict[str, Any]], bool] | None = None

    def applies_to(self, params: Mapping[str, Any]) -> bool:
        return self.applies is None or bool(self.applies(dict(params)))


@attrs.frozen(eq=False)
class Scenario:
    name: str
    fn: ScenarioFn
    summary: str = ""
    doc: str = ""
    catches: tuple[str, ...] = ()
    #: "pass": the correct model must survive it; "fail": a teaching scenario
    #: that is broken on purpose (not part of the main job)
    expect: str = "pass"
    axes: Mapping[str, Axis] = attrs.field(factory=dict)
    strategy: str = "dfs"
    #: a cap, not a budget: unbounded DPOR explores the whole space long
    #: before it on every suite that does not declare a bound
    executions: int = EXHAUSTIVE_CAP
    #: None: unbounded DPOR, to exhaustion (the default).  A suite whose
    #: space is too large declares a preemption bound, and why (``bound_reason``)
    max_preemptions: int | None = None
    #: why the suite falls back to a preemption bound (shown by mmemu run)
    bound_reason: str = ""
    #: optional: which combinations of the axes make sense (e.g. a driver and
    #: the notifier API generations it supports); None keeps them all
    filter: Callable[[dict[str, Any]], bool] | None = None
    #: coverage goals: the events a complete exploration must reach (a list,
    #: or a function of the parameters); see mmemu.engine._coverage
    reaches: Goals | None = None

    def goals(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The coverage goals of one parameter combination."""
        return resolve_goals(self.reaches, params)

    def axis_values(self, axis: str) -> list[Any]:
        values = self.axes[axis]
        return list(values() if callable(values) else values)

    def combinations(self) -> list[dict[str, Any]]:
        """Every parameter combination, in a stable order.  An axis value
        None leaves the parameter unset (the scenario's default)."""
        combos: list[dict[str, Any]] = [{}]
        for axis in sorted(self.axes):
            combos = [dict(c, **{axis: v}) if v is not None else dict(c)
                      for c in combos for v in self.axis_values(axis)]
        if self.filter is not None:
            combos = [c for c in combos if self.filter(c)]
        return combos

    def check_params(self, params: Mapping[str, Any]) -> None:
        """A one-line ModelError for a parameter whose value its axis does
        not have (a token's ``lookup=nosuch``).  An axis given as a function
        (the installed drivers) is open: other values may be loaded by the
        suite itself (``path/to/file.py:Class``), which reports its own
        errors; parameters that are not axes are the model's to read."""
        for key, value in params.items():
            axis = self.axes.get(key)
            if axis is None or callable(axis):
                continue
            values = list(axis)
            if value not in values:
                shown = ", ".join(str(v) for v in values if v is not None) or "(none)"
                raise ModelError(f"scenario {self.name!r} has no {key}={value!r} "
                                 f"(its {key} axis: {shown})")

    def accepts(self, params: Mapping[str, Any]) -> bool:
        """Does the scenario's ``filter`` accept this parameter combination?"""
        return self.filter is None or bool(self.filter(dict(params)))

    async def __call__(self, sim: Any) -> Any:
        return await self.fn(sim)


_SCENARIOS: dict[str, Scenario] = {}
_MUTANTS: dict[str, Mutant] = {}
_loaded = False
#: modules that register suites, named by the packages above the engine
#: (the engine itself names none: the mmemu package adds its races)
_SUITE_MODULES: list[str] = []


def add_suite_module(module: str) -> None:
    """Have the registry import ``module`` (which registers suites and
    mutants) before it is first consulted.  Packages above the engine call
    this; third-party suites use the ``mmemu.scenarios`` entry-point group."""
    if module in _SUITE_MODULES:
        return
    _SUITE_MODULES.append(module)
    if _loaded:
        importlib.import_module(module)


def _check_name(kind: str, name: str) -> None:
    area, colon, rest = name.partition(":")
    if not colon or not area or not rest or " " in name:
        raise ModelError(f"{kind} names are 'area:name' (got {name!r})")


def scenario(name: str, *, catches: Iterable[str] = (), expect: str = "pass",
             axes: Mapping[str, Axis] | None = None, strategy: str = "dfs",
             executions: int = EXHAUSTIVE_CAP, max_preemptions: int | None = None,
             bound_reason: str = "",
             summary: str = "",
             filter: Callable[[dict[str, Any]], bool] | None = None,
             reaches: Goals | None = None,
             ) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register ``async def fn(sim)`` as the scenario ``name``.

    ``catches`` lists the mutants it must catch; ``strategy``, ``executions``
    and ``max_preemptions`` are its budget in ``mmemu run``: by default
    unbounded DPOR to exhaustion.  A suite whose space is too large for that
    declares ``max_preemptions`` and says why in ``bound_reason`` (mmemu
    run shows both); ``filter(params)``
    drops axis combinations that make no sense (``combinations()`` applies it).
    ``reaches`` lists the events (``mmemu.lowlevel.reach``) that a complete
    exploration must reach at least once, or is a function of the
    parameters giving them; an exhausted exploration that misses one fails
    with VacuousSuite.
    """
    _check_name("scenario", name)
    if reaches is not None and not callable(reaches):
        resolve_goals(reaches, {})  # a bad goal is an error at registration
    if expect not in ("pass", "fail"):
        raise ModelError(f"'expect' must be 'pass' or 'fail' (got {expect!r})")
    if max_preemptions is not None and max_preemptions < 0:
        raise ModelError(f"'max_preemptions' must be >= 0 or None (got {max_preemptions})")

    def register(fn: ScenarioFn) -> ScenarioFn:
        doc = (fn.__doc__ or "").strip()
        first = summary or (doc.splitlines()[0] if doc else "")
        old = _SCENARIOS.get(name)
        if old is not None and getattr(old.fn, "__qualname__", None) != getattr(fn, "__qualname__", None):
            raise ModelError(f"scenario {name!r} is registered twice")
        _SCENARIOS[name] = Scenario(name=name, fn=fn, summary=first, doc=doc,
                                    catches=tuple(catches), expect=expect,
                                    axes=dict(axes or {}), strategy=strategy,
                                    executions=executions, max_preemptions=max_preemptions,
                                    bound_reason=bound_reason, filter=filter, reaches=reaches)
        fn.__mmemu_scenario__ = name  # type: ignore[attr-defined]
        return fn

    return register


def register_mutant(name: str, summary: str, *, caught_as: str = "", doc: str = "",
                    applies: Callable[[dict[str, Any]], bool] | None = None) -> str:
    """Declare a mutant; returns its name so modules can keep it in a constant.
    ``applies(params)``: which suite parameter combinations it can break (the
    mutant matrix runs it under those only)."""
    _check_name("mutant", name)
    _MUTANTS[name] = Mutant(name=name, summary=summary, caught_as=caught_as, doc=doc,
                            applies=applies)
    return name


def set_mutant_applies(name: str, applies: Callable[[dict[str, Any]], bool] | None) -> None:
    """Give the mutant ``name`` (registered where the model code it changes
    lives) its ``applies`` filter from another layer: a filter that needs to
    know about drivers is the suites' business, not the kernel model's."""
    _check_name("mutant", name)
    try:
        m = _MUTANTS[name]
    except KeyError:
        raise ModelError(f"unknown mutant {name!r}: register it before giving it a filter") from None
    _MUTANTS[name] = attrs.evolve(m, applies=applies)


def load_builtin() -> None:
    """Import the suite modules added with ``add_suite_module`` (mmemu's
    own) and any plugin registered under the ``mmemu.scenarios``
    entry-point group."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in list(_SUITE_MODULES):
        importlib.import_module(module)
    for ep in importlib.metadata.entry_points(group="mmemu.scenarios"):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide ours
            raise ModelError(f"scenario plugin {ep.name!r} ({ep.value}) failed to import: "
                             f"{type(exc).__name__}: {exc}") from None


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def is_registered(name: str) -> bool:
    """Is ``name`` a registered scenario (one ``mmemu replay`` can find)?"""
    load_builtin()
    return name in _SCENARIOS


def get_scenario(name: str) -> Scenario:
    load_builtin()
    try:
        return _SCENARIOS[name]
    except KeyError:
        raise ModelError(f"unknown scenario {name!r}{_suggest(name, _SCENARIOS)}; "
                         f"'mmemu list' shows them") from None


def get_mutant(name: str) -> Mutant:
    load_builtin()
    try:
        return _MUTANTS[name]
    except KeyError:
        raise ModelError(f"unknown mutant {name!r}{_suggest(name, _MUTANTS)}; "
                         f"'mmemu list --mutants' shows them") from None


def all_scenarios() -> list[Scenario]:
    load_builtin()
    return [_SCENARIOS[k] for k in sorted(_SCENARIOS)]


def all_mutants() -> list[Mutant]:
    load_builtin()
    return [_MUTANTS[k] for k in sorted(_MUTANTS)]


def scenario_name(fn: Any) -> str:
    """The name a token records for ``fn``: its registered name, or
    ``module:qualname[@file]`` (see ``_locate``)."""
    if isinstance(fn, Scenario):
        return fn.name
    name = getattr(fn, "__mmemu_scenario__", None)
    if name:
        return str(name)
    return located_name(fn)


def resolve_scenario(ref: str) -> ScenarioFn:
    """The scenario a token names: a registered name, or
    ``module:qualname[@file]`` (see ``_locate``)."""
    load_builtin()
    if ref in _SCENARIOS:
        return _SCENARIOS[ref].fn
    obj = locate(ref)
    if obj is not None and callable(obj):
        return obj  # type: ignore[no-any-return]
    how = ("it is defined inside a function: replay it from Python with mmemu.replay(fn, token)"
           if "<locals>" in ref else "'mmemu list' shows the registered ones")
    raise ModelError(f"unknown scenario {display_name(ref)!r}{_suggest(ref, _SCENARIOS)}; {how}")
