"""``mmemu mutate``: mutation testing of a driver, from the command line.

mmemu/cli/mutate.py registers ``mutate`` below as a command of its app; the
parameters and the help live here, beside the code they drive.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

from cyclopts import Parameter

from mmemu.mutate._operators import OPERATORS
from mmemu.mutate._runner import BaselineFailure, Budget, MutantResult, MutationError
from mmemu.mutate._session import MutationReport, driver_mutants, driver_runs, mutate_driver


def mutate(
    *,
    driver: Annotated[str, Parameter(help="the driver to mutate: an installed name (kvm, gru, "
                                          "hmm, sva) or path/to/file.py:ClassName")],
    api: Annotated[str | None, Parameter(help="only this notifier API generation "
                                              "(2.6.27 or modern)")] = None,
    suite: Annotated[tuple[str, ...], Parameter(help="only driver suites matching this glob "
                                                     "(repeatable; default: every driver suite)")] = (),
    operator: Annotated[tuple[str, ...], Parameter(help="only this mutation operator "
                                                        "(repeatable; see --list)")] = (),
    mutant: Annotated[tuple[str, ...], Parameter(help="only mutants whose id matches this glob "
                                                      "(repeatable)")] = (),
    jobs: Annotated[int, Parameter(help="mutants run at once, each in its own process")] = 1,
    timeout: Annotated[float | None, Parameter(help="seconds per mutant (default: 30 + 10x "
                                                    "the unmutated time of its suites; 0: none)")] = None,
    executions: Annotated[int | None, Parameter(help="executions per suite run (default: "
                                                     "the suite's)")] = None,
    max_preemptions: Annotated[int | None, Parameter(help="DFS preemption bound (default: "
                                                          "the suite's)")] = None,
    seed: Annotated[int, Parameter(help="base seed of random and pct")] = 0,
    fuzz: Annotated[int, Parameter(help="random workloads of mmemu fuzz for each mutant the "
                                        "suites miss (0: suites only)")] = 20,
    shrink: Annotated[bool, Parameter(help="shrink the failure that catches each mutant "
                                           "(slower; minimal tokens)")] = False,
    keep: Annotated[str | None, Parameter(help="write the mutant files to this directory and "
                                               "keep them (the replay tokens name them)")] = None,
    list_: Annotated[bool, Parameter(name="--list", help="list the mutants (and with --json "
                                                         "their diffs); run nothing")] = False,
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object per mutant, then "
                                                         "a summary")] = False,
) -> int:
    """Mutation-test a driver: break its protocol one step at a time and
    check that the driver suites notice.

    Each mutant drops a lock/unlock pair, a seq or count update, a retry
    test, a wake_up, moves a zap after the unlock, ... (--list shows them).
    It runs every driver suite x notifier API the driver supports, then,
    if no suite caught it, --fuzz random workloads of mmemu fuzz, in a
    process of its own, never touching your file.
    Survivors are printed with their diffs: they show where the suites do
    not test the protocol, or a step the protocol does not need.

    Exit status: 0 every mutant caught, 1 some survived (or timed out), or
    the unmutated driver fails its suites or the fuzzer, 2 bad input.

    Example: mmemu mutate --driver kvm --jobs 2
    """
    from mmemu.cli._app import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UsageError, _out

    unknown = [op for op in operator if op not in OPERATORS]
    if unknown:
        raise UsageError(f"unknown --operator {unknown[0]!r} (known: {', '.join(OPERATORS)})")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    if executions is not None and executions < 1:
        raise UsageError(f"--executions must be at least 1 (got {executions})")
    if max_preemptions is not None and max_preemptions < 0:
        raise UsageError(f"--max-preemptions must be >= 0 (got {max_preemptions})")
    if timeout is not None and timeout < 0:
        raise UsageError(f"--timeout must be >= 0 (got {timeout})")
    if fuzz < 0:
        raise UsageError(f"--fuzz must be >= 0 (got {fuzz})")
    from mmemu.mm.init import API_GENERATIONS

    if api is not None and api not in API_GENERATIONS:
        raise UsageError(f"--api must be one of {', '.join(API_GENERATIONS)} (got {api!r})")
    out = _out()
    ops = list(operator) or None
    try:
        if list_:
            _subject, mutants = driver_mutants(driver, operators=ops, select=mutant)
            for m in mutants:
                if json_:
                    out.print(json.dumps(m.to_json()), markup=False)
                else:
                    out.print(f"{m.id}  line {m.line}  {m.operator}: {m.description}",
                              markup=False)
            return EXIT_OK
        driver_runs(driver, api=api, suites=suite)  # bad --suite/--api: exit 2 before any work
    except MutationError as exc:
        raise UsageError(str(exc)) from None

    err = _err()
    budget = Budget(seed=seed, executions=executions, max_preemptions=max_preemptions,
                    timeout=timeout, fuzz=fuzz, shrink=shrink, api=api)

    def on_result(r: MutantResult) -> None:
        if json_:
            out.print(json.dumps(r.to_json()), markup=False)

    try:
        report = mutate_driver(driver, api=api, suites=suite, operators=ops, select=mutant,
                               budget=budget, jobs=jobs, keep=keep,
                               progress=lambda line: err.print(line, markup=False),
                               on_result=on_result)
    except BaselineFailure as exc:
        out.print(f"mmemu mutate: {exc}", markup=False)
        return EXIT_FAILURE
    except MutationError as exc:
        raise UsageError(str(exc)) from None
    if json_:
        out.print(json.dumps(report.to_json()), markup=False)
    else:
        print_report(report, out)
    if report.survivors:
        return EXIT_FAILURE
    return EXIT_INTERRUPTED if report.interrupted else EXIT_OK


def _err() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_report(report: MutationReport, out: Any) -> None:
    """The table of mutants, then every survivor with its diff, then the score."""
    from mmemu.cli._app import print_lines
    from mmemu.cli._tables import NAME, NUMBER, TEXT, Cell, Column, Table

    # the shared table layout: a mutant's id is never cut, ``how`` wraps
    table = Table([Column("mutant", NAME), Column("line", NUMBER), Column("operator", NAME),
                   Column("result", NAME), Column("how", TEXT)])
    colour = {"caught": "green", "invalid": "yellow"}
    for r in report.results:
        table.add_row(r.mutant.id, str(r.mutant.line), r.mutant.operator,
                      Cell(r.status, colour.get(r.status, "red")), _how(r))
    out.print(f"mmemu mutate: {report.subject}", markup=False)
    print_lines(out, table.lines(out.width))
    for r in report.survivors:
        out.print(f"\n{r.status.upper()}: {r.mutant.id} ({r.mutant.description})",
                  markup=False)
        out.print(f"  {r.reason}", markup=False)
        out.print(r.mutant.diff.rstrip(), markup=False)
    for m in report.pending:
        out.print(f"not run (interrupted): {m.id}", markup=False)
    if report.kept:
        out.print(f"\nmutant files kept in {report.kept} (the tokens above replay while they "
                  f"are there)", markup=False)
    out.print(f"\n{report.summary()}  [{len(report.runs)} suite runs per mutant at most; "
              f"baseline {report.baseline_s:.1f}s, total {report.elapsed_s:.1f}s]",
              markup=False)


def _how(r: MutantResult) -> str:
    if r.status == "caught" and r.by is not None:
        b = r.by
        return (f"{b.kind} in {b.run}: {b.executions} executions, {b.elapsed_s:.2f}s, "
                f"{b.preemptions} preemption{'s' if b.preemptions != 1 else ''}")
    return r.reason


__all__ = ["mutate", "print_report"]


if __name__ == "__main__":  # pragma: no cover - use `mmemu mutate`
    sys.exit("use: mmemu mutate --driver D")
