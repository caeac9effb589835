"""``mmemu list``, ``mmemu mutants`` and ``mmemu explain``: what the suites
and mutants are, and what they find."""

from __future__ import annotations

import json
from typing import Annotated, Any

from cyclopts import Parameter
from rich.console import Console
from rich.table import Table

from mmemu.engine import all_mutants, all_scenarios

from ._app import EXIT_FAILURE, EXIT_OK, UsageError, _out, app

@app.command(name="list")
def list_(*, mutants: bool = False) -> int:
    """List the registered suites (and with --mutants, the mutants).

    Example: mmemu list --mutants
    """
    out = _out()
    table = Table(title="suites", show_lines=False)
    for col in ("suite", "expect", "parameters", "catches", "summary"):
        table.add_column(col)
    for s in all_scenarios():
        combos = s.combinations()
        params = "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in combos if c) or "-"
        table.add_row(s.name, s.expect, params, ", ".join(s.catches) or "-", s.summary)
    out.print(table)
    if mutants:
        mt = Table(title="mutants")
        for col in ("mutant", "caught as", "summary"):
            mt.add_column(col)
        for m in all_mutants():
            mt.add_row(m.name, m.caught_as or "-", m.summary)
        out.print(mt)
    return EXIT_OK


@app.command
def mutants(
    *,
    seed: Annotated[int, Parameter(help="base seed of random and pct suites")] = 0,
    executions: Annotated[int | None, Parameter(help="executions per run (default: each suite's)")] = None,
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object per line per run, then a summary")] = False,
) -> int:
    """Run every mutant against the suites that must catch it, and the correct
    model against every suite; print the matrix.

    Exit 0 only when every mutant is caught and the correct model is clean.

    Example: mmemu mutants --json
    """
    from mmemu._mutants import run_matrix, uncaught_mutants

    if executions is not None and executions < 1:
        raise UsageError(f"--executions must be at least 1 (got {executions})")
    out = _out()
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def show(cell: Any) -> None:
        if json_:
            out.print(json.dumps(cell.to_json()), markup=False)
        else:
            who = cell.mutant or "(correct model)"
            params = ", ".join(f"{k}={v}" for k, v in cell.params.items())
            err.print(f"  {who} x {cell.suite}{' [' + params + ']' if params else ''}: {cell.verdict()}",
                      markup=False)

    cells = run_matrix(seed=seed, executions=executions, on_cell=show)
    missed = uncaught_mutants(cells)
    dirty = [c for c in cells if c.mutant is None and not c.ok]
    if json_:
        out.print(json.dumps({"summary": True, "mutants_caught": not missed, "missed": missed,
                              "correct_model_clean": not dirty,
                              "runs": len(cells)}), markup=False)
    else:
        table = Table(title="mmemu mutants")
        for col in ("mutant", "suite", "params", "result"):
            table.add_column(col)
        for c in cells:
            params = ", ".join(f"{k}={v}" for k, v in c.params.items()) or "-"
            verdict = c.verdict()
            table.add_row(c.mutant or "(correct model)", c.suite, params,
                          f"[green]{verdict}[/green]" if c.ok else f"[red]{verdict}[/red]")
        out.print(table)
        if missed:
            out.print(f"missed mutants: {', '.join(missed)}", markup=False)
        for c in dirty:
            out.print(f"correct model fails {c.suite}: {c.kind}: mmemu replay {c.schedule}", markup=False)
    return EXIT_OK if not missed and not dirty else EXIT_FAILURE


@app.command
def explain(
    name: Annotated[str, Parameter(help="a suite or a mutant")],
    *,
    executions: Annotated[int, Parameter(help="DFS budget per suite when looking for the "
                                              "minimal breaking interleaving")] = 1000,
) -> int:
    """Explain a suite's protocol, or a mutant and the interleaving that breaks it.

    For a suite: its protocol comment (numbered steps per side, the
    interleavings that matter) and the mutants it must catch; a teaching
    scenario that fails on purpose also shows its minimal failing timeline.
    For a mutant: its documentation and, for each suite that must catch it,
    the minimal interleaving that breaks it.

    Example: mmemu explain demo:lost-update
    """
    from mmemu._explain import explain as explain_text

    if executions < 1:
        raise UsageError(f"--executions must be at least 1 (got {executions})")
    err = Console(stderr=True, highlight=False)
    text = explain_text(name, budget=executions,
                        progress=lambda msg: err.print(msg, markup=False))
    _out().print(text, markup=False, end="")
    return EXIT_OK


