"""Helpers for the race-suite tests: explore a suite, read a forced trace."""

from __future__ import annotations

from typing import Any

import mmemu


def explore(suite: str, *, params: dict[str, Any] | None = None, mutants: list[str] | None = None,
            bound: int | None = 2) -> mmemu.Result:
    return mmemu.explore(suite, strategy=mmemu.DFS(max_preemptions=bound), executions=200_000,
                         params=params or {}, mutants=mutants or [])


def labels(outcome: Any, cpu_name: str) -> list[str]:
    """The step labels one CPU ran, in order."""
    tr = outcome.trace
    return [e.label for e in tr.events if tr.cpu_name(e.cpu) == cpu_name]


def assert_caught(suite: str, mutant: str, kinds: str | tuple[str, ...], *,
                  params: dict[str, Any] | None = None, bound: int | None = 2) -> mmemu.Failure:
    """The mutant is caught, shrunk to at most 2 preemptions, reported under
    its own name, and its token replays to the same failure."""
    res = explore(suite, params=params, mutants=[mutant], bound=bound)
    f = res.failure
    assert f is not None, f"{suite} {params or ''} did not catch {mutant}"
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    assert f.kind in kinds, f.report()
    assert f.preemptions <= 2, f.report()
    report = f.report()
    assert f"with mutant {mutant}" in report and f.kind in report
    again = mmemu.replay(None, f.schedule)
    assert again.failure is not None and again.failure.kind == f.kind
    return f


def assert_passes_and_reaches(suite: str, *, critical: int, params: dict[str, Any] | None = None,
                              bound: int | None = None, goals: tuple[Any, ...] = ()) -> mmemu.Result:
    """The correct model passes ``suite`` exhaustively within ``bound``, every
    coverage goal is reached (and every one of ``goals`` in some execution),
    and the suite's doc names its ``critical`` interleavings and the
    harmless ones."""
    from mmemu.engine._registry import get_scenario

    res = explore(suite, params=params, bound=bound)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and not res.coverage.unreached, res.coverage.unreached
    assert all(res.coverage.executions_reaching(g) for g in goals)
    doc = get_scenario(suite).doc
    phrase = ("There is 1 critical interleaving" if critical == 1
              else f"There are {critical} critical interleavings")
    assert phrase in doc and "Harmless" in doc
    return res


def assert_caught_in_process(monkeypatch: Any, suite: str, module: str, fn_name: str,
                             edits: tuple[tuple[str, str], ...], kinds: str | tuple[str, ...], *,
                             params: dict[str, Any] | None = None) -> mmemu.Failure:
    """``module.fn_name`` recompiled from its source with ``edits`` made (a
    mutant of the real code, as the mutation benchmark makes them) fails
    ``suite`` explored unbounded, as one of ``kinds``, within 2 preemptions."""
    import importlib

    from tests.check.test_pte_vma import _mutant
    fn = getattr(importlib.import_module(module), fn_name)
    monkeypatch.setattr(fn, "__code__", _mutant(fn, *edits).__code__)
    f = explore(suite, params=params, bound=None).failure
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    assert f is not None and f.kind in kinds, f and f.report()
    assert f.preemptions <= 2, f.report()
    return f
