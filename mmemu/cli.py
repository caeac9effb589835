"""The ``mmemu`` command.

Exit status: 0 nothing found, 1 a failure found (its report and replay line
are printed), 2 a usage error or bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import cyclopts
from cyclopts import Parameter
from rich.console import Console
from rich.table import Table

from mmemu.engine import (
    DFS,
    PCT,
    MmemuError,
    Random,
    Result,
    ScheduleFormatError,
    Strategy,
    all_mutants,
    all_scenarios,
    explore,
    get_scenario,
    replay,
)
from mmemu.engine._registry import Scenario, _suggest
from mmemu.engine._schedule import Schedule

app = cyclopts.App(
    name="mmemu",
    help="Emulate the kernel's mm concurrency protocols and find their races.\n\n"
         "Example: mmemu run 'pagecache:*' --strategy dfs --max-preemptions 2",
    version="0.1.0",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: one line, exit 2."""


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _select(patterns: Sequence[str], *, include_expected_failures: bool) -> list[Scenario]:
    scenarios = all_scenarios()
    if not patterns:
        return [s for s in scenarios if include_expected_failures or s.expect == "pass"]
    chosen: list[Scenario] = []
    for pat in patterns:
        hits = [s for s in scenarios if fnmatch.fnmatchcase(s.name, pat)]
        if not hits:
            raise UsageError(f"unknown suite {pat!r}{_suggest(pat, [s.name for s in scenarios])}; "
                             f"'mmemu list' shows them")
        for s in hits:
            if s not in chosen:
                chosen.append(s)
    return chosen


def _strategy(name: str | None, sc: Scenario, seed: int, max_preemptions: int | None) -> Strategy:
    name = name or sc.strategy
    bound = max_preemptions if max_preemptions is not None else sc.max_preemptions
    if name == "random":
        return Random(seed)
    if name == "pct":
        return PCT(3, seed)
    if name == "dfs":
        return DFS(max_preemptions=bound)
    raise UsageError(f"--strategy must be random, pct or dfs (got {name!r})")


def _result_json(res: Result, mutant: str | None) -> dict[str, Any]:
    return {
        "suite": res.scenario,
        "driver": res.params.get("driver"),
        "mutant": mutant,
        "params": res.params,
        "strategy": res.strategy,
        "executions": res.executions,
        "exhausted": res.exhausted,
        "elapsed_s": round(res.elapsed_s, 3),
        "failure": res.failure.to_json() if res.failure else None,
    }


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
def run(
    suites: Annotated[tuple[str, ...], Parameter(help="suite names or glob patterns (default: every suite)")] = (),
    *,
    strategy: Annotated[str | None, Parameter(help="random, pct or dfs (default: the suite's)")] = None,
    executions: Annotated[int | None, Parameter(help="executions per suite (default: the suite's)")] = None,
    seed: Annotated[int, Parameter(help="base seed of random and pct")] = 0,
    max_preemptions: Annotated[int | None, Parameter(help="DFS preemption bound")] = None,
    mutant: Annotated[tuple[str, ...], Parameter(help="switch a mutant on (repeatable)")] = (),
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object per line per run")] = False,
) -> int:
    """Explore suites and report what broke.

    With no suite, runs the main job: every suite on the correct model under
    its default budget.  A failure prints its shrunk report and replay line.

    Example: mmemu run pagecache:lookup-vs-reclaim --mutant filemap:no-recheck
    """
    if executions is not None and executions < 1:
        raise UsageError(f"--executions must be at least 1 (got {executions})")
    if max_preemptions is not None and max_preemptions < 0:
        raise UsageError(f"--max-preemptions must be >= 0 (got {max_preemptions})")
    chosen = _select(suites, include_expected_failures=bool(suites))
    for m in mutant:
        from mmemu.engine import get_mutant
        get_mutant(m)
    out = _out()
    err = Console(stderr=True, highlight=False)
    results: list[Result] = []
    failed = False
    for sc in chosen:
        for params in sc.combinations():
            strat = _strategy(strategy, sc, seed, max_preemptions)
            label = sc.name + (" [" + ", ".join(f"{k}={v}" for k, v in params.items()) + "]" if params else "")
            if not json_:
                err.print(f"exploring {label} with {strat.describe()} ...")
            res = explore(sc.name, strategy=strat, executions=executions or sc.executions,
                          seed=seed, params=params, mutants=mutant)
            results.append(res)
            if json_:
                out.print(json.dumps(_result_json(res, ",".join(mutant) or None)))
            if res.failure is not None:
                failed = True
                if not json_:
                    out.print(res.failure.report(), markup=False)
                    out.print()
            if res.interrupted:
                break
    if not json_:
        table = Table(title="mmemu run")
        for col in ("suite", "params", "strategy", "executions", "exhausted", "result", "time"):
            table.add_column(col)
        for res in results:
            params = ", ".join(f"{k}={v}" for k, v in res.params.items()) or "-"
            result = (f"[red]{res.failure.kind}[/red]" if res.failure else "[green]ok[/green]")
            table.add_row(res.scenario, params, res.strategy, str(res.executions),
                          "yes" if res.exhausted else "no", result, f"{res.elapsed_s:.2f}s")
        out.print(table)
    return EXIT_FAILURE if failed else EXIT_OK


@app.command(name="replay")
def replay_(token: str, *, json_: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Replay one execution exactly from its token and print its report.

    Example: mmemu replay mm1.eNqrVkpW...
    """
    sched = Schedule.from_token(token)
    outcome = replay(None, token)
    out = _out()
    if json_:
        out.print(json.dumps({"suite": sched.scenario, "driver": sched.params.get("driver"),
                              "mutant": ",".join(sched.mutants) or None,
                              "params": sched.params, "steps": outcome.steps,
                              "preemptions": outcome.preemptions,
                              "failure": outcome.failure.to_json() if outcome.failure else None}))
    elif outcome.failure is not None:
        out.print(outcome.failure.report(), markup=False)
    else:
        out.print(f"{sched.scenario}: the schedule ran {outcome.steps} steps without failing")
    return EXIT_FAILURE if outcome.failure is not None else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns (and exits with) the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args, exit_on_error=False, print_error=False, help_on_error=False,
                   result_action="return_value")
    except cyclopts.CycloptsError as exc:
        msg = str(exc).strip().splitlines()
        print(f"mmemu: error: {' '.join(m.strip() for m in msg if m.strip()) or type(exc).__name__}",
              file=sys.stderr)
        code = EXIT_USAGE
    except (UsageError, ScheduleFormatError) as exc:
        print(f"mmemu: error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except MmemuError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mmemu: error: {first}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("mmemu: interrupted", file=sys.stderr)
        code = 130
    if code is None:
        code = EXIT_OK
    if argv is None:
        sys.exit(int(code))
    return int(code)


if __name__ == "__main__":
    main()
