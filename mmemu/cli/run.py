"""``mmemu run`` and ``mmemu merge``: explore suites, show the summary table."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter
from rich.console import Console
from rich.text import Text

from mmemu.engine import Result, all_scenarios, explore, get_mutant, get_scenario
from mmemu.engine._registry import Scenario, _suggest
from mmemu.engine._settings import UNSET, Settings, given, resolve_settings
from mmemu.engine._watchdog import clear_stop, request_stop

from ._app import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UsageError, _err, _out, app, print_lines
from ._tables import NAME, NUMBER, TEXT, Cell, Column, Table, output_width

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


#: how ``mmemu run`` names its flags in errors
FLAG_NAMES = {"strategy": "--strategy", "executions": "--executions", "seed": "--seed",
              "max_preemptions": "--max-preemptions"}


def parse_bound(text: str | None, flag: str = "--max-preemptions") -> Any:
    """A preemption bound from the command line: an integer >= 0, or
    ``none`` for unbounded; UNSET when not given."""
    if text is None:
        return UNSET
    if text.strip().lower() in ("none", "unbounded"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag} must be an integer or 'none' (got {text!r})") from None
    if value < 0:
        raise UsageError(f"{flag} must be at least 0 (got {value})")
    return value


def run_settings(sc: Scenario, *, strategy: str | None, executions: int | None,
                 seed: int | None, max_preemptions: Any) -> Settings:
    """The settings of one suite's run: the flags, then MMEMU_*, then the
    suite's defaults (``resolve_settings``, as the API and pytest do)."""
    return resolve_settings(sc, flag_names=FLAG_NAMES, **given(
        strategy=strategy, executions=executions, seed=seed),
        max_preemptions=max_preemptions)


def describe_settings(s: Settings) -> str:
    """``dfs, unbounded`` / ``dfs, at most 2 preemptions`` / ``random, seed 0``."""
    if s.strategy == "dfs":
        bound = ("unbounded" if s.max_preemptions is None
                 else f"at most {s.max_preemptions} preemption{'' if s.max_preemptions == 1 else 's'}")
        return f"dfs, {bound}"
    return f"{s.strategy}, seed {s.seed}"


def short_strategy(s: Settings) -> str:
    """The strategy in a table cell: ``dfs``, ``dfs<=2``, ``random``, ``pct``."""
    if s.strategy == "dfs" and s.max_preemptions is not None:
        return f"dfs<={s.max_preemptions}"
    return s.strategy


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


@app.command
def run(
    suites: Annotated[tuple[str, ...], Parameter(help="suite names or glob patterns (default: every suite)")] = (),
    *,
    suite: Annotated[tuple[str, ...], Parameter(help="a suite name or glob pattern, like the positional "
                                                     "arguments (repeatable): --suite 'notifier:*'")] = (),
    strategy: Annotated[str | None, Parameter(help="random, pct or dfs (default: $MMEMU_STRATEGY, "
                                                   "else the suite's)")] = None,
    executions: Annotated[int | None, Parameter(help="executions per suite (default: $MMEMU_EXECUTIONS, "
                                                     "else the suite's)")] = None,
    seed: Annotated[int | None, Parameter(help="base seed of random and pct (default: $MMEMU_SEED, "
                                               "else 0)")] = None,
    max_preemptions: Annotated[str | None, Parameter(help="DFS preemption bound, or 'none' for "
                                                          "unbounded (default: "
                                                          "$MMEMU_MAX_PREEMPTIONS, else the "
                                                          "suite's)")] = None,
    mutant: Annotated[tuple[str, ...], Parameter(help="switch a mutant on (repeatable); it must be "
                                                      "exercised by a selected suite")] = (),
    driver: Annotated[str | None, Parameter(help="run the suites that take a driver with this driver "
                                                 "only (an installed name, path/to/file.py:Class, "
                                                 "or a glob over installed names)")] = None,
    api: Annotated[str | None, Parameter(help="notifier API generation: 2.6.27 or modern "
                                              "(restricts the suites' api axis, or sets it)")] = None,
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object per line per run")] = False,
    jobs: Annotated[int | None, Parameter(help="worker processes: N runs at a time, or one run split "
                                                "(same results for any N)")] = None,
    shard: Annotated[str | None, Parameter(help="run slice K/N only; 'mmemu merge' adds up the --json outputs")] = None,
    dask: Annotated[str | None, Parameter(help="run on the Dask scheduler at ADDRESS (pip install 'mmemu[dask]')")] = None,
    workload: Annotated[str | None, Parameter(help="explore this workload instead of suites: "
                                                   "'cpu0: fault(0,w) access(0); cpu1: munmap(0-1)' "
                                                   "(docs: Workloads)")] = None,
    coverage: Annotated[bool, Parameter(help="print, per suite, the goals and every event, notifier "
                                             "callback, kernel function and step label reached, "
                                             "and how often")] = False,
    time_limit: Annotated[float | None, Parameter(name="--time", help="stop after S seconds in all; "
                                                                      "what was explored is reported, "
                                                                      "marked time-limited")] = None,
) -> int:
    """Explore suites and report what broke.

    With no suite, runs the main job: every suite on the correct model under
    its default budget.  A failure prints its shrunk report and replay line.
    Each setting comes from its flag, else its MMEMU_* environment
    variable, else the suite's own default.

    Example: mmemu run pagecache:lookup-vs-reclaim --mutant filemap:no-recheck
    """
    bound = parse_bound(max_preemptions)
    if time_limit is not None and not time_limit > 0:
        raise UsageError(f"--time must be a number of seconds > 0 (got {time_limit:g})")
    deadline = time.monotonic() + time_limit if time_limit is not None else None
    skipped = 0
    parallel = _parallel_options(jobs, shard, dask)
    suites = tuple(suites) + tuple(suite)
    from mmemu.mm.init import API_GENERATIONS
    if api is not None and api not in API_GENERATIONS:
        raise UsageError(f"--api must be one of {', '.join(API_GENERATIONS)} (got {api!r})")
    err = _err()
    if workload is not None:
        if suites:
            raise UsageError("--workload runs one workload: give no suite with it")
        from mmemu.workload._cli import workload_for_run
        planned = [(get_scenario("workload:run"), workload_for_run(workload, driver, api))]
    else:
        chosen = _with_driver_axis(_select(suites, include_expected_failures=bool(suites)),
                                   driver, err)
        planned = [(sc, params) for sc in chosen for params in _driver_combinations(sc, driver, api)]
    if not planned:
        raise UsageError("no suite takes that combination of --driver/--api")
    if workload is None:  # a workload's operations decide what it exercises
        _note_undeclared_mutants(mutant, planned, err)
    # Every setting is resolved (and checked) before the first run starts:
    # a bad MMEMU_* value is one line and exit 2, not a failure halfway.
    plan = [(sc, params, run_settings(sc, strategy=strategy, executions=executions, seed=seed,
                                      max_preemptions=bound)) for sc, params in planned]
    out = _out()
    runs: list[tuple[Result, Settings]] = []
    failed = False
    interrupted = False
    stop = _StopRequest()
    # --jobs N with several runs: N runs at a time, each explored whole in
    # one worker (as without --jobs: same results); one run is split instead
    together = (parallel.get("jobs", 1) > 1 and shard is None and dask is None
                and len(plan) > 1)
    whole = None
    try:
        stop.__enter__()
        if together:
            from mmemu.engine._parallel import explore_runs

            whole = explore_runs(
                [dict(scenario=sc.name, strategy=st.strategy, executions=st.executions,
                      seed=st.seed, max_preemptions=st.max_preemptions, params=params,
                      mutants=mutant, coverage=coverage) for sc, params, st in plan],
                parallel["jobs"],
                deadline=None if time_limit is None else time.time() + time_limit,
                should_stop=lambda: stop.requested)
        for sc, params, st in plan:
            # --time: the runs share one deadline; a run started late gets
            # what is left, and runs after it are not started (and counted)
            left = None if deadline is None else deadline - time.monotonic()
            label = sc.name + params_label(params)
            if whole is not None:
                got = next(whole)
                if got is None:
                    skipped += 1
                    continue
                res = got
                with _RunProgress(err, label, describe_settings(st), st.executions) as progress:
                    progress.finish(res)
            else:
                if left is not None and left <= 0:
                    skipped += 1
                    continue
                with _RunProgress(err, label, describe_settings(st), st.executions,
                                  stop) as progress:
                    res = explore(sc.name, strategy=st.strategy, executions=st.executions,
                                  seed=st.seed, max_preemptions=st.max_preemptions,
                                  params=params, mutants=mutant, progress=progress.update,
                                  coverage=coverage, time_limit=left, **parallel)
                    progress.finish(res)
            runs.append((res, st))
            if json_:
                row = _result_json(res, ",".join(mutant) or None)
                if coverage and res.coverage is not None:
                    row["coverage"] = res.coverage.to_json()
                if shard is not None:
                    row.update(shard=shard, interrupted=res.interrupted)
                out.print(json.dumps(row))
            if res.failure is not None:
                failed = True
                if not json_:
                    out.print(res.failure.report(), markup=False)
                    out.print()
            if res.interrupted or stop.requested:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        # What was explored so far is still worth showing: the summary table
        # below, and every failure's replay line.
        interrupted = True
        done = sum(r.executions for r, _ in runs)
        err.print(f"interrupted: explored {_plural(done, 'execution')} in {_plural(len(runs), 'run')}",
                  markup=False)
        for res, _ in runs:
            if res.failure is not None:
                err.print(f"  {res.scenario}: {res.failure.kind}: {res.failure.replay_command()}",
                          markup=False)
    finally:
        if whole is not None:
            whole.close()  # ends the workers if the runs did not all finish
        stop.__exit__()
    if not json_:
        results = [r for r, _ in runs]
        _print_goal_notes(out, results)
        _print_bounds(out, runs)
        if skipped:
            out.print(f"--time {time_limit:g}s ran out: {_plural(skipped, 'suite run')} not started",
                      markup=False)
        print_lines(out, summary_table(runs).lines(output_width()))
        print_lines(out, [Text(totals_line(runs, interrupted=interrupted))])
        if coverage:
            _print_coverage(out, results)
    if failed:
        return EXIT_FAILURE
    if interrupted:
        return EXIT_INTERRUPTED
    unexercised = _unexercised_mutants(mutant, [r for r, _ in runs])
    if unexercised:
        raise UsageError(unexercised)
    return EXIT_OK


def summary_table(runs: Sequence[tuple[Result, Settings]]) -> Table:
    """The table ``mmemu run`` ends with: one row per run, names whole."""
    # suite, executions, result and time stay on the row's line at any
    # width where they fit; parameters, strategy and exhaustion may go below
    table = Table([Column("suite", NAME), Column("params"), Column("strategy", TEXT),
                   Column("executions", NUMBER), Column("exhausted", TEXT),
                   Column("result", NAME), Column("time", NUMBER)])
    for res, st in runs:
        table.add_row(res.scenario, _params_text(res.params), short_strategy(st),
                      str(res.executions), "yes" if res.exhausted else "no",
                      _result_cell(res), f"{res.elapsed_s:.2f}s")
    return table


def shown_value(value: Any) -> str:
    """A parameter for people: a ``/abs/path/file.py:Class`` (a driver the
    token records with its absolute path) relative to the current directory
    when it lies below it."""
    text = str(value)
    path, colon, rest = text.rpartition(":")
    if colon and path.endswith(".py") and os.path.isabs(path):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return f"{rel}:{rest}"
    return text


def params_label(params: dict[str, Any]) -> str:
    """``[driver=kvm, lookup=find_get_page]`` (empty without parameters)."""
    if not params:
        return ""
    return " [" + ", ".join(f"{k}={shown_value(v)}" for k, v in params.items()) + "]"


def _params_text(params: dict[str, Any]) -> str:
    """``kvm, modern, lookup=find_get_page``: the driver and API by value
    (they are on nearly every row), other parameters as name=value."""
    parts = [shown_value(params[k]) for k in ("driver", "api") if params.get(k) is not None]
    parts += [f"{k}={shown_value(v)}" for k, v in params.items() if k not in ("driver", "api")]
    return ", ".join(parts) or "-"


def _result_cell(res: Result) -> Cell:
    if res.failure is not None:
        return Cell(res.failure.kind, "red")
    if res.interrupted:
        return Cell("interrupted", "yellow")
    if res.time_limited:
        return Cell("time-limited", "yellow")
    return Cell("ok", "green")


def split_line(res: Result) -> str:
    """How a parallel DFS was split: ``split: pid 11: 12 units, 340
    executions; pid 12: ...; 3 speculative executions discarded``."""
    parts = [f"{w}: {_plural(u, 'unit')}, {_plural(e, 'execution')}" for w, u, e in res.workers]
    text = "split: " + "; ".join(parts)
    if res.steals:
        text += f"; {_plural(res.steals, 'steal')}"
    if res.discarded:
        text += f"; {_plural(res.discarded, 'speculative execution')} discarded"
    return text


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def totals_line(runs: Sequence[tuple[Result, Settings]], *, interrupted: bool) -> str:
    n = len(runs)
    failures = sum(1 for r, _ in runs if r.failure is not None)
    parts = [f"{n} run{'' if n == 1 else 's'}",
             _plural(sum(r.executions for r, _ in runs), "execution"),
             f"{sum(1 for r, _ in runs if r.exhausted)} exhausted",
             f"{failures} failure{'' if failures == 1 else 's'}",
             f"{sum(r.elapsed_s for r, _ in runs):.2f}s"]
    line = "total: " + ", ".join(parts)
    return line + (" (interrupted)" if interrupted else "")


def _note_undeclared_mutants(mutants: Sequence[str],
                             planned: Sequence[tuple[Scenario, dict[str, Any]]],
                             err: Console) -> None:
    """Say so before the runs start when no selected suite lists a mutant
    among those it catches, for parameters the mutant applies to.  The run
    still goes ahead -- asking whether a suite catches a mutant it does not
    declare is a fair question -- and it ends with exit 2 if no execution
    exercised the mutant (``_unexercised_mutants``): a run that tested
    nothing the mutant changes never passes quietly."""
    for m in mutants:
        mt = get_mutant(m)
        if any(m in sc.catches and mt.applies_to(params) for sc, params in planned):
            continue
        names = ", ".join(dict.fromkeys(sc.name for sc, _ in planned))
        catchers = [s.name for s in all_scenarios() if m in s.catches]
        where = (f"the suites that do: {', '.join(catchers)}" if catchers
                 else "no registered suite does")
        err.print(f"note: no selected suite ({names}) declares that it catches mutant {m} "
                  f"({where}); running anyway", markup=False)


def _unexercised_mutants(mutants: Sequence[str], results: Sequence[Result]) -> str | None:
    """The error for mutants switched on that no execution ever asked about
    (``mmemu.mutant(name)``): the run tested nothing the mutant changes."""
    missing = [m for m in mutants
               if not any(r.coverage is not None and r.coverage.counts.get(("mutant", m))
                          for r in results)]
    if not missing:
        return None
    ran = ", ".join(sorted({r.scenario for r in results}))
    notes = []
    for m in missing:
        catchers = [s.name for s in all_scenarios() if m in s.catches]
        notes.append(f"{m} (suites that catch it: {', '.join(catchers) or 'none registered'})")
    return (f"mutant{'s' if len(missing) > 1 else ''} never exercised by the selected suites "
            f"({ran}), so this run tested nothing: {'; '.join(notes)}")


def _print_bounds(out: Console, runs: Sequence[tuple[Result, Settings]]) -> None:
    """Say which suites fell back to their declared preemption bound, and
    why: the main job is otherwise unbounded DPOR to exhaustion.  A bound
    given by flag or environment is the user's own and needs no note."""
    seen: set[str] = set()
    for res, st in runs:
        if res.scenario in seen or st.strategy != "dfs" or st.max_preemptions is None \
                or st.sources.get("max_preemptions") != "suite":
            continue
        seen.add(res.scenario)
        try:
            why = get_scenario(res.scenario).bound_reason or "declared by the suite"
        except Exception:  # noqa: BLE001 - an unregistered scenario declares no reason
            why = "declared by the suite"
        text = (f"bounded: {res.scenario} explores up to {_plural(st.max_preemptions, 'preemption')}, "
                f"not every interleaving: {why}")
        print_lines(out, [Text(line) for line in textwrap.wrap(
            text, width=output_width(), subsequent_indent="  ")])


def _print_goal_notes(out: Console, results: list[Result]) -> None:
    """An exploration that did not finish cannot call its suite vacuous; say
    which goals it has not reached yet."""
    for res in results:
        cov = res.coverage
        if res.failure is None and cov is not None and cov.unreached:
            params = ", ".join(f"{k}={v}" for k, v in res.params.items())
            how = ("explored less than the suite's own budget or preemption bound"
                   if res.exhausted else "did not explore its whole space")
            note = (f"note: {res.scenario}{' [' + params + ']' if params else ''} {how} "
                    f"and has not reached: {'; '.join(cov.unreached)}")
            # wrapped to the output's width like the tables (names are not split)
            for line in textwrap.wrap(note, width=max(40, out.width), subsequent_indent="  ",
                                      break_long_words=False, break_on_hyphens=False):
                out.print(line, markup=False, soft_wrap=True)


def _print_coverage(out: Console, results: list[Result]) -> None:
    from mmemu.engine._coverage import Coverage, render

    merged: dict[str, tuple[Coverage, int]] = {}
    for res in results:
        if res.coverage is None:
            continue
        cov, runs = merged.get(res.scenario, (Coverage(), 0))
        cov.merge(res.coverage)
        merged[res.scenario] = (cov, runs + 1)
    for name, (cov, runs) in merged.items():
        out.print()
        out.print("\n".join(render(name, cov, runs=runs)), markup=False, soft_wrap=True)


class _StopRequest:
    """Ctrl-C during ``mmemu run``: stop at a safe point, keep what was found.

    Left to trio, SIGINT raises KeyboardInterrupt wherever the main task
    happens to be, possibly in the middle of the engine handing the CPU token
    from one emulated CPU to another.  Instead a SIGINT only sets flags:
    ``requested`` here (the progress callback raises KeyboardInterrupt
    between two executions, which also stops a parallel run) and the
    engine's ``request_stop`` (an exploration, or a shrink in progress,
    stops after the execution it is in, keeping its failure; a step that
    never yields is interrupted by the watchdog within a second).  A second
    Ctrl-C changes nothing (the first is already being acted upon); a third
    leaves at once, without the summary, for a run that cannot be stopped
    any other way (an await that refuses cancellation).
    """

    #: the Ctrl-C that leaves without waiting
    FORCE_AT = 3

    def __init__(self) -> None:
        self.requested = False
        self.count = 0
        self._raised = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> _StopRequest:
        import signal
        import threading

        clear_stop()
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        self.count += 1
        self.requested = True
        request_stop()
        if self.count >= self.FORCE_AT:
            os.write(2, b"mmemu: interrupted three times: leaving without the summary\n")
            os._exit(EXIT_INTERRUPTED)

    def check(self) -> None:
        if self.requested and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False
        clear_stop()


def _parallel_options(jobs: int | None, shard: str | None, dask: str | None) -> dict[str, Any]:
    """``explore`` keywords for --jobs / --shard / --dask (none: one process)."""
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    opts: dict[str, Any] = {}
    if shard is not None:
        from mmemu.parallel import parse_shard

        opts["shard"] = parse_shard(shard)  # a ModelError is one line, exit 2
        opts.setdefault("jobs", 1)
    if jobs is not None:
        opts["jobs"] = jobs
    if dask is not None:
        opts["dask"] = dask
    return opts


@app.command
def merge(
    files: Annotated[tuple[Path, ...], Parameter(help="--json outputs of 'mmemu run --shard K/N'")],
) -> int:
    """Merge the --json results of the shards of one run into the unsharded result.

    Executions add up, a run is exhausted only if every shard exhausted its
    slice, and the failure is the one found at the lowest execution index.
    Prints one JSON object per run; exit 1 if a failure was found.

    Example: mmemu merge shard0.json shard1.json
    """
    from mmemu.parallel import merge_results

    if not files:
        raise UsageError("merge needs at least one file")
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = json.dumps([row["suite"], row["params"], row["mutant"], row["strategy"]],
                                 sort_keys=True)
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"{str(path)}:{n}: not a line of 'mmemu run --json'") from None
            groups.setdefault(key, []).append(row)
    out = _out()
    failed = False
    for rows in groups.values():
        merged = merge_results(rows)
        failed = failed or merged["failure"] is not None
        out.print(json.dumps(merged), markup=False)
    return EXIT_FAILURE if failed else EXIT_OK


def _with_driver_axis(chosen: list[Scenario], driver: str | None, err: Console) -> list[Scenario]:
    """With ``--driver``, the selected suites that take a driver; the others
    are left out (a driver means nothing to them), and none left is an error."""
    if driver is None:
        return chosen
    kept = [sc for sc in chosen if "driver" in sc.axes]
    if not kept:
        names = ", ".join(sc.name for sc in chosen)
        raise UsageError(f"--driver {driver}: none of the selected suites takes a driver ({names})")
    left = [sc.name for sc in chosen if "driver" not in sc.axes]
    if left:
        err.print(f"--driver {driver}: left out {len(left)} suite{'' if len(left) == 1 else 's'} "
                  f"that take{'s' if len(left) == 1 else ''} no driver", markup=False)
    return kept


def driver_param(driver: str) -> str:
    """The driver as a token records it: an installed name as is, a
    ``path/to/file.py:Class`` with its path made absolute, so the replay
    line works from any directory.  Loads it once (one line if it cannot)."""
    from mmemu.driver import DriverLoadError, load_driver

    path, colon, cls = driver.rpartition(":")
    if colon and path.endswith(".py"):
        driver = f"{os.path.abspath(os.path.expanduser(path))}:{cls}"
    try:
        load_driver(driver)
    except DriverLoadError as exc:
        raise UsageError(str(exc)) from None
    return driver


def _driver_combinations(sc: Scenario, driver: str | None,
                         api: str | None = None) -> list[dict[str, Any]]:
    """The suite's parameter combinations; ``--driver`` replaces its driver
    axis (only suites with one get here); ``--api`` keeps the combinations
    of that notifier API generation (2.6.27 when ``api`` is unset), or sets
    params["api"] for a suite without the axis."""
    combos = sc.combinations()
    if api is not None:
        if "api" in sc.axes:
            combos = [c for c in combos if c.get("api", "2.6.27") == api]
        else:
            combos = [dict(c, api=api) for c in combos]
    if driver is None:
        return combos
    if any(ch in driver for ch in "*?["):
        # a pattern filters the suite's own driver axis ('--driver "k*"')
        return [c for c in combos if fnmatch.fnmatchcase(str(c.get("driver", "")), driver)]
    spec = driver_param(driver)
    out: list[dict[str, Any]] = []
    for c in combos:
        d = dict(c, driver=spec)
        if d not in out and sc.accepts(d):  # e.g. api=modern only for drivers that support it
            out.append(d)
    return out


class _RunProgress:
    """Progress of one exploration on stderr: a rich bar on a terminal,
    otherwise a plain line when it starts, at most one every few seconds
    while it runs (wall-clock time is fine here: it never enters a trace),
    and one when it ends."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, err: Console, label: str, strategy: str, budget: int,
                 stop: _StopRequest | None = None) -> None:
        self.err = err
        self.stop = stop
        self.label = label
        self.strategy = strategy
        self.budget = budget
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> _RunProgress:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.err, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(f"{self.label} ({self.strategy})", total=self.budget)
        else:
            self.err.print(f"exploring {self.label} with {self.strategy}, up to {self.budget} executions",
                           markup=False)
        self._last = time.monotonic()
        return self

    def update(self, done: int, budget: int | None) -> None:
        if self.stop is not None:
            self.stop.check()
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        now = time.monotonic()
        if now - self._last >= self.PLAIN_EVERY_S:
            self._last = now
            self.err.print(f"  {self.label}: {done}/{budget or self.budget} executions", markup=False)

    def finish(self, res: Result) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        outcome = (res.failure.kind if res.failure is not None
                   else "interrupted" if res.interrupted else "ok")
        extra = (", exhausted" if res.exhausted
                 else ", interrupted" if res.interrupted and res.failure is not None else "")
        self.err.print(f"  {self.label}: {outcome} after {_plural(res.executions, 'execution')}{extra} "
                       f"({res.elapsed_s:.2f}s)", markup=False)
        if res.workers:
            self.err.print("    " + split_line(res), markup=False)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


