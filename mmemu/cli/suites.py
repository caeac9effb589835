"""``mmemu list``, ``mmemu mutants`` and ``mmemu explain``: what the suites
and mutants are, and what they find."""

from __future__ import annotations

import json
from typing import Annotated, Any

from cyclopts import Parameter

from mmemu.engine import Scenario, all_mutants, all_scenarios

from ._app import EXIT_FAILURE, EXIT_OK, UsageError, _err, _out, app, print_lines
from ._tables import NAME, Cell, Column, Table, output_width


@app.command(name="list")
def list_(*, mutants: bool = False) -> int:
    """List the registered suites (and with --mutants, the mutants).

    Example: mmemu list --mutants
    """
    out = _out()
    width = output_width()
    table = Table([Column("suite", NAME), Column("expect", NAME), Column("parameters"),
                   Column("catches"), Column("summary")])
    for s in all_scenarios():
        table.add_row(s.name, s.expect, _axes_text(s), ", ".join(s.catches) or "-", s.summary)
    print_lines(out, table.lines(width))
    if mutants:
        out.print()
        mt = Table([Column("mutant", NAME), Column("caught as"), Column("summary")])
        for m in all_mutants():
            mt.add_row(m.name, m.caught_as or "-", m.summary)
        print_lines(out, mt.lines(width))
    return EXIT_OK


def _axes_text(sc: Scenario) -> str:
    """``api: 2.6.27, modern; driver: gru, hmm, kvm, sva`` (the values each
    axis takes; the suite runs the combinations its filter accepts)."""
    parts = []
    for axis in sorted(sc.axes):
        values = [str(v) for v in sc.axis_values(axis) if v is not None]
        parts.append(f"{axis}: {', '.join(values)}")
    return "; ".join(parts) or "-"


@app.command
def mutants(
    *,
    seed: Annotated[int | None, Parameter(help="base seed of random and pct suites "
                                               "(default: $MMEMU_SEED, else 0)")] = None,
    executions: Annotated[int | None, Parameter(help="executions per run (default: "
                                                     "$MMEMU_EXECUTIONS, else each suite's)")] = None,
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object per line per run, then a summary")] = False,
) -> int:
    """Run every mutant against the suites that must catch it, and the correct
    model against every suite; print the matrix.

    Exit 0 only when every mutant is caught and the correct model is clean.

    Example: mmemu mutants --json
    """
    from mmemu._mutants import run_matrix, uncaught_mutants
    from mmemu.engine._settings import environment

    if executions is not None and executions < 1:
        raise UsageError(f"--executions must be at least 1 (got {executions})")
    environment()  # a bad MMEMU_* is one line before the matrix is planned
    out = _out()
    err = _err()

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
        table = Table([Column("mutant", NAME), Column("suite", NAME), Column("params"),
                       Column("result")])
        for c in cells:
            params = ", ".join(f"{k}={v}" for k, v in c.params.items()) or "-"
            table.add_row(c.mutant or "(correct model)", c.suite, params,
                          Cell(c.verdict(), "green" if c.ok else "red"))
        print_lines(out, table.lines(output_width()))
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
    interleaving: Annotated[int | None, Parameter(help="force the suite's interleaving N, as "
                                                       "its protocol page draws it, and print "
                                                       "every step")] = None,
) -> int:
    """Explain a suite's protocol, or a mutant and the interleaving that breaks it.

    For a suite: its protocol comment (numbered steps per side, the
    interleavings that matter) and the mutants it must catch; a teaching
    scenario that fails on purpose also shows its minimal failing timeline.
    For a mutant: its documentation and, for each suite that must catch it,
    the minimal interleaving that breaks it.  With --interleaving N: the
    suite's named interleaving N (the diagram of its protocol page), forced,
    step by step, and its outcome (exit 1 if it is not the one documented).

    Example: mmemu explain pagecache:lookup-vs-reclaim --interleaving 2
    """
    from mmemu._explain import explain as explain_text
    from mmemu._explain import explain_interleaving

    if interleaving is not None:
        text, as_documented = explain_interleaving(name, interleaving)
        _out().print(text, markup=False, end="")
        return EXIT_OK if as_documented else EXIT_FAILURE
    if executions < 1:
        raise UsageError(f"--executions must be at least 1 (got {executions})")
    err = _err()
    text = explain_text(name, budget=executions,
                        progress=lambda msg: err.print(msg, markup=False))
    _out().print(text, markup=False, end="")
    return EXIT_OK


