"""The mutant matrix: every mutant against the suites that must catch it, and
the correct model against every suite.

A mutant is caught by a suite when exploring the suite with the mutant
switched on finds a failure; the matrix records which violation, after how
many executions and how long.  A suite that takes a driver runs under each
driver, except that a driver's own mutants (``kvm:no-retry``) run only with
that driver.  The correct model must pass every suite under every parameter
combination.

``mmemu mutants`` exits 0 only when every mutant is caught and the correct
model is clean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from mmemu.engine import Result, Scenario, all_mutants, all_scenarios, explore


@attrs.frozen
class Cell:
    """One (mutant or correct model) x suite x parameters run."""

    mutant: str | None
    suite: str
    params: dict[str, Any]
    expected_failure: bool
    kind: str | None
    executions: int
    elapsed_s: float
    exhausted: bool
    schedule: str | None
    preemptions: int | None

    @property
    def ok(self) -> bool:
        return (self.kind is not None) == self.expected_failure

    def verdict(self) -> str:
        if self.expected_failure:
            if self.kind is None:
                return f"MISSED after {self.executions} executions"
            return f"caught as {self.kind} in {self.executions} executions, {self.elapsed_s:.2f}s"
        if self.kind is None:
            return f"clean ({self.executions} executions{', exhausted' if self.exhausted else ''})"
        return f"FAILED: {self.kind}"

    def to_json(self) -> dict[str, Any]:
        return {"mutant": self.mutant, "suite": self.suite, "params": self.params,
                "expected_failure": self.expected_failure, "caught_as": self.kind,
                "executions": self.executions, "elapsed_s": round(self.elapsed_s, 3),
                "exhausted": self.exhausted, "schedule": self.schedule,
                "preemptions": self.preemptions, "ok": self.ok}


def _combos_for(sc: Scenario, mutant: str | None) -> list[dict[str, Any]]:
    combos = sc.combinations()
    if mutant is not None:
        from mmemu.engine import get_mutant
        m = get_mutant(mutant)
        combos = [c for c in combos if m.applies_to(c)]
    if mutant is None or "driver" not in sc.axes:
        return combos
    area = mutant.split(":", 1)[0]
    own = [c for c in combos if str(c.get("driver", "")).split(":")[-1] == area
           or c.get("driver") == area]
    return own or combos


def plan(*, include_correct: bool = True) -> list[tuple[str | None, Scenario, dict[str, Any]]]:
    """The runs of the matrix, in a stable order."""
    scenarios = all_scenarios()
    runs: list[tuple[str | None, Scenario, dict[str, Any]]] = []
    for m in all_mutants():
        for sc in scenarios:
            if m.name in sc.catches:
                for params in _combos_for(sc, m.name):
                    runs.append((m.name, sc, params))
    if include_correct:
        for sc in scenarios:
            if sc.expect == "pass":
                for params in sc.combinations():
                    runs.append((None, sc, params))
    return runs


def run_matrix(*, seed: int | None = None, executions: int | None = None,
               include_correct: bool = True,
               on_cell: Callable[[Cell], None] | None = None,
               explore_fn: Callable[..., Result] = explore) -> list[Cell]:
    """Run the whole matrix; ``on_cell`` sees each cell as it finishes.

    Each run's budget follows the one precedence of every front door:
    ``seed`` and ``executions`` when given, else ``MMEMU_*``, else the
    suite's own default (explore resolves it)."""
    cells: list[Cell] = []
    for mutant, sc, params in plan(include_correct=include_correct):
        res = explore_fn(sc.name, executions=executions, seed=seed, params=params,
                         mutants=[mutant] if mutant else [])
        f = res.failure
        cell = Cell(mutant=mutant, suite=sc.name, params=params, expected_failure=mutant is not None,
                    kind=f.kind if f else None, executions=res.executions, elapsed_s=res.elapsed_s,
                    exhausted=res.exhausted, schedule=f.schedule if f else None,
                    preemptions=f.preemptions if f else None)
        cells.append(cell)
        if on_cell is not None:
            on_cell(cell)
        if res.interrupted:
            raise KeyboardInterrupt
    return cells


def uncaught_mutants(cells: list[Cell]) -> list[str]:
    """Mutants that some suite claiming them did not catch, or that no suite claims."""
    missed = {c.mutant for c in cells if c.mutant and c.kind is None}
    claimed = {c.mutant for c in cells if c.mutant}
    unclaimed = {m.name for m in all_mutants()} - claimed
    return sorted(m for m in missed | unclaimed if m)
