"""The ``mmemu`` command.

Exit status: 0 nothing found, 1 a failure found (its report and replay line
are printed), 2 a usage error or bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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
         "Global option: --verbose (or MMEMU_LOG=debug) logs lifecycle events on stderr.\n\n"
         "Example: mmemu run 'pagecache:*' --strategy dfs --max-preemptions 2",
    version="0.1.0",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(Exception):
    """Bad input from the user: one line, exit 2."""


def _out() -> Console:
    # A pipe or a file gets rich's default of 80 columns, which truncates
    # the summary tables; logs and CI output have room for more.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=True, width=width)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same
    directory and ``os.replace``: a reader (or an interrupted run) never
    sees half a file.  Any OSError becomes one line for the user."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"cannot write {str(target)!r}: it is a directory")
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(target)!r}: directory {str(parent)!r} does not exist")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise UsageError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _replay_token(token: str) -> tuple[Schedule, Any]:
    """Decode and replay ``token`` (errors propagate as ScheduleFormatError
    or MmemuError, which main() turns into one line and exit 2)."""
    sched = Schedule.from_token(token)
    return sched, replay(None, token)


def _run_title(sched: Schedule) -> str:
    title = sched.scenario
    if sched.params:
        title += " [" + ", ".join(f"{k}={v}" for k, v in sorted(sched.params.items())) + "]"
    if sched.mutants:
        title += " with mutant " + ", ".join(sched.mutants)
    return title


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
    chosen = _select(suites, include_expected_failures=bool(suites))
    from mmemu.mm.init import API_GENERATIONS
    if api is not None and api not in API_GENERATIONS:
        raise UsageError(f"--api must be one of {', '.join(API_GENERATIONS)} (got {api!r})")
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
                              **parallel)
                progress.finish(res)
            results.append(res)
            if json_:
                row = _result_json(res, ",".join(mutant) or None)
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
    if failed:
        return EXIT_FAILURE
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


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


@app.command
def bench(
    *,
    full: Annotated[bool, Parameter(help="every benchmark, bigger budgets (minutes)")] = False,
) -> int:
    """Run the benchmarks in benchmarks/ (quick mode unless --full) and print their tables.

    Quick: engine step cost against a bare trio handoff, the kernel suites'
    cost per step and the 10k-vma build (small), executions/s per suite,
    frontrun and thread-stress comparisons.  --full adds time to first
    failure per mutant, the --jobs / Dask speed-up and the notifier figures
    (mm_take_all_locks against vma count).  Figures on a shared
    machine are noisy: compare the ratios printed by one run.

    Example: mmemu bench --full
    """
    import subprocess

    root = _benchmarks_dir()
    flag = ["--full"] if full else []
    code = 0
    runs = [("engine.py", [] if full else ["--quick"]), ("kernel.py", [] if full else ["--quick"]),
            ("scale.py", flag)]
    if full:
        runs.append(("notifier.py", []))
    for script, args in runs:
        print(f"# benchmarks/{script} {' '.join(args)}".rstrip(), flush=True)
        code = code or subprocess.run([sys.executable, str(root / script), *args]).returncode
    return EXIT_OK if code == 0 else EXIT_USAGE


def _benchmarks_dir() -> Path:
    """Where the benchmark scripts are: installed as the ``mmemu.benchmarks``
    package (the repository's ``benchmarks/`` folder), whichever way mmemu
    was installed."""
    import importlib.util

    spec = importlib.util.find_spec("mmemu.benchmarks")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(loc) / "scale.py").exists():
            return Path(loc)
    raise UsageError("the benchmark scripts are not installed with this mmemu "
                     "(reinstall it: python3 -m pip install .)")


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


# `mmemu mutate`: its parameters and help live in mmemu/mutate/_cli.py
from mmemu.mutate._cli import mutate as _mutate  # noqa: E402 - after the app exists

app.command(name="mutate")(_mutate)


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


OutputPath = Annotated[Path, Parameter(name=["--output", "-o"], help="file to write (atomically)")]


@app.command
def trace(token: str, *, output: OutputPath) -> int:
    """Export an execution as Chrome Trace Event JSON for ui.perfetto.dev.

    One track per CPU, slices for kernel functions, an instant per step
    (with its reads, writes and conflicts), flow arrows and counters from the
    model's trace annotations; ts is the step index.

    Example: mmemu trace mm1.eNqrVkpW... -o race.json
    """
    from mmemu._perfetto import chrome_trace_json

    sched, outcome = _replay_token(token)
    failure = outcome.failure
    meta: dict[str, Any] = {"scenario": sched.scenario, "params": sched.params,
                            "mutants": list(sched.mutants), "token": token.strip(),
                            "steps": outcome.steps, "preemptions": outcome.preemptions}
    if failure is not None:
        meta["failure"] = failure.to_json()
    text = chrome_trace_json(failure.trace if failure is not None else outcome.trace,
                             failure=failure, title=_run_title(sched), metadata=meta)
    _write_atomic(output, text)
    print(f"wrote {output} ({outcome.steps} steps"
          + (f", {failure.kind}" if failure is not None else ", no failure")
          + "); open it at https://ui.perfetto.dev", file=sys.stderr)
    return EXIT_OK


@app.command
def report(token: str, *, output: OutputPath) -> int:
    """Draw an execution as one self-contained HTML page of swimlanes.

    A lane per CPU, steps in order, preemptions marked, the failing step and
    the steps touching the violated object highlighted; hover a step for its
    accesses and the failure's object dump.

    Example: mmemu report mm1.eNqrVkpW... -o race.html
    """
    from mmemu._explain import protocol_text
    from mmemu._html_report import render_report

    sched, outcome = _replay_token(token)
    failure = outcome.failure
    try:
        protocol = protocol_text(get_scenario(sched.scenario))
    except MmemuError:
        protocol = ""  # a module:qualname scenario has no registered doc
    page = render_report(failure.trace if failure is not None else outcome.trace,
                         failure=failure, title=_run_title(sched),
                         replay_command=f"mmemu replay {token.strip()}", protocol=protocol)
    _write_atomic(output, page)
    print(f"wrote {output} ({outcome.steps} steps"
          + (f", {failure.kind}" if failure is not None else ", no failure") + ")", file=sys.stderr)
    return EXIT_OK


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


_LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _configure_logging(args: list[str]) -> list[str]:
    """Configure structlog for the command (the library never does) and
    return ``args`` without the global ``--verbose`` flag.

    Quiet by default (warnings and errors only); ``--verbose`` anywhere
    before ``--``, or ``MMEMU_LOG=debug|info|warning|error``, lowers the
    level so the engine's lifecycle events (exploration started/finished,
    failure found) show on stderr.  Taking the flag out here keeps it global
    without repeating it on every command.
    """
    import structlog

    end = args.index("--") if "--" in args else len(args)
    verbose = any(a in ("--verbose", "-v") for a in args[:end])
    if verbose:
        args = [a for i, a in enumerate(args) if i >= end or a not in ("--verbose", "-v")]
    env = os.environ.get("MMEMU_LOG", "").strip().lower()
    if env and env not in _LOG_LEVELS:
        raise UsageError(f"MMEMU_LOG must be one of {', '.join(_LOG_LEVELS)} (got {env!r})")
    level = _LOG_LEVELS["debug"] if verbose else _LOG_LEVELS.get(env, _LOG_LEVELS["warning"])
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns (and exits with) the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    import structlog

    # main() may be called in-process (tests, embedding): put the caller's
    # structlog configuration back afterwards.
    saved_logging = structlog.get_config() if structlog.is_configured() else None
    try:
        args = _configure_logging(args)
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
    except BrokenPipeError:
        # the reader went away (mmemu explain ... | head): not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        except OSError:
            pass
        code = EXIT_OK
    finally:
        if saved_logging is not None:
            structlog.configure(**saved_logging)
        else:
            structlog.reset_defaults()
    if code is None:
        code = EXIT_OK
    if argv is None:
        sys.exit(int(code))
    return int(code)


if __name__ == "__main__":
    main()
