"""``mmemu run`` and ``mmemu merge``: explore suites, show the summary table."""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter
from rich.console import Console
from rich.table import Table

from mmemu.engine import DFS, PCT, Random, Result, Strategy, all_scenarios, explore, get_scenario
from mmemu.engine._registry import Scenario, _suggest

from ._app import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UsageError, _out, app

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


@app.command
def run(
    suites: Annotated[tuple[str, ...], Parameter(help="suite names or glob patterns (default: every suite)")] = (),
    *,
    suite: Annotated[tuple[str, ...], Parameter(help="a suite name or glob pattern, like the positional "
                                                     "arguments (repeatable): --suite 'notifier:*'")] = (),
    strategy: Annotated[str | None, Parameter(help="random, pct or dfs (default: the suite's)")] = None,
    executions: Annotated[int | None, Parameter(help="executions per suite (default: the suite's)")] = None,
    seed: Annotated[int, Parameter(help="base seed of random and pct")] = 0,
    max_preemptions: Annotated[int | None, Parameter(help="DFS preemption bound")] = None,
    mutant: Annotated[tuple[str, ...], Parameter(help="switch a mutant on (repeatable)")] = (),
    driver: Annotated[str | None, Parameter(help="run driver suites with this driver only "
                                                 "(an installed name, path/to/file.py:Class, "
                                                 "or a glob over installed names)")] = None,
    api: Annotated[str | None, Parameter(help="notifier API generation: 2.6.27 or modern "
                                              "(restricts the suites' api axis, or sets it)")] = None,
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object per line per run")] = False,
    jobs: Annotated[int | None, Parameter(help="worker processes (same seed, same failure for any N)")] = None,
    shard: Annotated[str | None, Parameter(help="run slice K/N only; 'mmemu merge' adds up the --json outputs")] = None,
    dask: Annotated[str | None, Parameter(help="run on the Dask scheduler at ADDRESS (pip install 'mmemu[dask]')")] = None,
    workload: Annotated[str | None, Parameter(help="explore this workload instead of suites: "
                                                   "'cpu0: fault(0,w) access(0); cpu1: munmap(0-1)' "
                                                   "(docs: Workloads)")] = None,
    coverage: Annotated[bool, Parameter(help="print, per suite, the goals and every event, notifier "
                                             "callback, kernel function and step label reached, "
                                             "and how often")] = False,
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
    parallel = _parallel_options(jobs, shard, dask)
    suites = tuple(suites) + tuple(suite)
    from mmemu.mm.init import API_GENERATIONS
    if api is not None and api not in API_GENERATIONS:
        raise UsageError(f"--api must be one of {', '.join(API_GENERATIONS)} (got {api!r})")
    if workload is not None:
        if suites:
            raise UsageError("--workload runs one workload: give no suite with it")
        from mmemu.workload._cli import workload_for_run
        planned = [(get_scenario("workload:run"), workload_for_run(workload, driver, api))]
    else:
        chosen = _select(suites, include_expected_failures=bool(suites))
        planned = [(sc, params) for sc in chosen for params in _driver_combinations(sc, driver, api)]
    if not planned:
        raise UsageError("no suite takes that combination of --driver/--api")
    for m in mutant:
        from mmemu.engine import get_mutant
        get_mutant(m)
    out = _out()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    results: list[Result] = []
    failed = False
    interrupted = False
    stop = _StopRequest()
    try:
        stop.__enter__()
        for sc, params in planned:
            strat = _strategy(strategy, sc, seed, max_preemptions)
            label = sc.name + (" [" + ", ".join(f"{k}={v}" for k, v in params.items()) + "]" if params else "")
            budget = executions or sc.executions
            with _RunProgress(err, label, strat.describe(), budget, stop) as progress:
                res = explore(sc.name, strategy=strat, executions=budget,
                              seed=seed, params=params, mutants=mutant, progress=progress.update,
                              coverage=coverage, **parallel)
                progress.finish(res)
            results.append(res)
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
        done = sum(r.executions for r in results)
        err.print(f"interrupted: explored {done} executions in {len(results)} run(s)", markup=False)
        for res in results:
            if res.failure is not None:
                err.print(f"  {res.scenario}: {res.failure.kind}: {res.failure.replay_command()}",
                          markup=False)
    finally:
        stop.__exit__()
    if not json_:
        table = Table(title="mmemu run")
        for col in ("suite", "params", "driver", "api", "strategy", "executions", "exhausted",
                    "result", "time"):
            table.add_column(col)
        for res in results:
            result = (f"[red]{res.failure.kind}[/red]" if res.failure else "[green]ok[/green]")
            other = ", ".join(f"{k}={v}" for k, v in res.params.items()
                              if k not in ("driver", "api")) or "-"
            table.add_row(res.scenario, other, str(res.params.get("driver") or "-"),
                          str(res.params.get("api") or ("2.6.27" if res.params.get("driver") else "-")),
                          res.strategy, str(res.executions),
                          "yes" if res.exhausted else "no", result, f"{res.elapsed_s:.2f}s")
        out.print(table)
        _print_goal_notes(out, results)
        if coverage:
            _print_coverage(out, results)
    if failed:
        return EXIT_FAILURE
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _print_goal_notes(out: Console, results: list[Result]) -> None:
    """An exploration that did not finish cannot call its suite vacuous; say
    which goals it has not reached yet."""
    for res in results:
        cov = res.coverage
        if res.failure is None and cov is not None and cov.unreached:
            params = ", ".join(f"{k}={v}" for k, v in res.params.items())
            how = ("explored less than the suite's own budget or preemption bound"
                   if res.exhausted else "did not explore its whole space")
            out.print(f"note: {res.scenario}{' [' + params + ']' if params else ''} {how} "
                      f"and has not reached: {'; '.join(cov.unreached)}", markup=False)


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
    """Ctrl-C during ``mmemu run``, turned into a KeyboardInterrupt at a safe point.

    Left to trio, SIGINT raises KeyboardInterrupt wherever the main task
    happens to be, possibly in the middle of the engine handing the CPU token
    from one emulated CPU to another.  Instead the first SIGINT only sets
    ``requested``; the progress callback, which the engine calls between two
    executions inside its interrupt-aware loop, raises it there (trio keeps
    a handler it did not install).  A second Ctrl-C raises at once, for a run
    stuck inside one long shrink.
    """

    def __init__(self) -> None:
        self.requested = False
        self._raised = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> _StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False


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


def _driver_combinations(sc: Scenario, driver: str | None,
                         api: str | None = None) -> list[dict[str, Any]]:
    """The suite's parameter combinations; ``--driver`` replaces its driver axis
    (and is passed as params["driver"] to every suite); ``--api`` keeps the
    combinations of that notifier API generation (2.6.27 when ``api`` is
    unset), or sets params["api"] for a suite without the axis."""
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
        if "driver" not in sc.axes:
            return combos
        return [c for c in combos if fnmatch.fnmatchcase(str(c.get("driver", "")), driver)]
    from mmemu.driver import DriverLoadError, load_driver
    try:
        load_driver(driver)
    except DriverLoadError as exc:
        raise UsageError(str(exc)) from None
    out: list[dict[str, Any]] = []
    for c in combos:
        d = dict(c, driver=driver)
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
        outcome = res.failure.kind if res.failure is not None else "ok"
        extra = ", exhausted" if res.exhausted else (", interrupted" if res.interrupted else "")
        self.err.print(f"  {self.label}: {outcome} after {res.executions} executions{extra} "
                       f"({res.elapsed_s:.2f}s)", markup=False)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


