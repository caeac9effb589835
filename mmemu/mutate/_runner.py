"""Running mutants: a coverage baseline, then one worker process per mutant.

1. **Baseline.**  The unmutated code runs every planned suite once, in a
   worker, with reach marks compiled in front of the statements the mutants
   change (``_isolate.instrument``).  Every run must pass (a red baseline
   makes every mutant look caught); it records which mutated lines each run
   executed and how long it took.
2. **Which runs can see a mutant.**  A mutant changes some original lines
   (``Mutant.touched``).  A run whose baseline executed none of them runs
   exactly the same code on the mutant, so its exploration -- deterministic
   for a given seed -- is the same and passes again.  Only the runs that
   reach a touched line are run on the mutant, cheapest first; a mutant
   that no run reaches *survives unreached* without being run.  (The
   fuzzer, when there is one, still runs on it: it may reach more code.)
3. **Each mutant in its own worker**, at most ``jobs`` at a time, each
   with a time limit; the worker stops at the first failing run.

Verdicts (``MutantResult.status``):

- ``caught``: a run failed -- a checker, lockdep, a BUG_ON, a deadlock or
  livelock, or a Python error that needed an interleaving (>= 1 preemption);
- ``survived``: every run that reaches the mutated code passed;
- ``unreached``: no run executes the mutated code (a survivor that shows
  where the suites never go);
- ``invalid``: the mutant does not import, breaks the model's contract
  with the engine (a ModelError), or crashes with a Python error
  (NameError, AttributeError, TypeError...) on a serial run -- it broke
  the code, not the protocol;
- ``timeout``: the worker hit its time limit (counted as not caught);
- ``interrupted``: Ctrl-C came first (not counted).

The mutation score is caught / (caught + survived + unreached + timeout).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from mmemu.mutate._operators import Mutant
from mmemu.mutate._worker import CRASH_TYPES

STATUSES = ("caught", "survived", "unreached", "timeout", "invalid", "interrupted")


class MutationError(Exception):
    """Mutation testing cannot start (bad input, or the unmutated code fails)."""


class BaselineFailure(MutationError):
    """The unmutated code already fails one of the planned runs."""


@attrs.frozen
class Run:
    """One planned suite run: a registered suite and its parameters."""

    suite: str
    params: dict[str, Any]

    def describe(self) -> str:
        items = []
        for k, v in sorted(self.params.items()):
            text = str(v)
            if k == "driver" and ":" in text and text.rpartition(":")[0].endswith(".py"):
                path, _, cls = text.rpartition(":")
                text = f"{Path(path).name}:{cls}"
            items.append(f"{k}={text}")
        return f"{self.suite} [{', '.join(items)}]" if items else self.suite


@attrs.frozen
class RunVerdict:
    """What one suite run (or the fuzzer) said about one mutant."""

    run: str
    ok: bool
    executions: int | None
    elapsed_s: float
    kind: str | None = None
    message: str = ""
    preemptions: int | None = None
    schedule: str | None = None
    original: str | None = None

    @classmethod
    def from_event(cls, ev: dict[str, Any], name: str) -> RunVerdict:
        return cls(run=name, ok=bool(ev.get("ok")), executions=ev.get("executions"),
                   elapsed_s=float(ev.get("elapsed_s") or 0.0), kind=ev.get("kind"),
                   message=ev.get("message") or "", preemptions=ev.get("preemptions"),
                   schedule=ev.get("schedule"), original=ev.get("original"))

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class MutantResult:
    """The verdict on one mutant (see the module doc for ``status``)."""

    mutant: Mutant
    status: str
    reason: str
    elapsed_s: float
    #: how many planned runs execute the mutated lines
    reaching: int
    #: the run that caught it (``caught``), or the crash (``invalid``)
    by: RunVerdict | None = None
    runs: tuple[RunVerdict, ...] = ()

    @property
    def counts(self) -> bool:
        """Does it count in the score?"""
        return self.status in ("caught", "survived", "unreached", "timeout")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.mutant.to_json())
        d.update(status=self.status, reason=self.reason, elapsed_s=round(self.elapsed_s, 3),
                 reaching=self.reaching, by=self.by.to_json() if self.by else None,
                 runs=[r.to_json() for r in self.runs])
        return d


@attrs.frozen
class Baseline:
    """The unmutated code's runs: per run, the executed lines and the time."""

    runs: tuple[Run, ...]
    lines: tuple[dict[str, frozenset[int]], ...]
    elapsed: tuple[float, ...]
    executions: tuple[int, ...]

    def reaching(self, path: str, touched: Sequence[int]) -> list[int]:
        """Indices of the runs that executed a touched line of ``path``,
        cheapest first."""
        key = os.path.realpath(path)
        t = set(touched)
        hits = [i for i, lines in enumerate(self.lines) if t & lines.get(key, frozenset())]
        return sorted(hits, key=lambda i: (self.elapsed[i], i))


@attrs.frozen
class Budget:
    """How hard each mutant is tried.  None keeps each suite's own setting
    (strategy, executions, DFS preemption bound)."""

    seed: int = 0
    executions: int | None = None
    strategy: str | None = None
    max_preemptions: int | None = None
    #: seconds per mutant; None: 30 s + 10x the baseline time of its runs
    #: (+ 2 s per fuzz workload)
    timeout: float | None = None
    #: random workloads of ``mmemu fuzz`` per mutant the suites did not
    #: catch (0: suites only; skipped while mmemu.workload is absent)
    fuzz: int = 0
    #: shrink the failure that catches a mutant (slower; the verdict is the
    #: same, the token and the preemption count are minimal)
    shrink: bool = False
    #: the notifier API generation the fuzzer draws (None: any the drivers support)
    api: str | None = None

    def fuzz_job(self) -> dict[str, Any] | None:
        return {"workloads": self.fuzz, "api": self.api} if self.fuzz else None

    def job(self) -> dict[str, Any]:
        return {"seed": self.seed, "executions": self.executions, "strategy": self.strategy,
                "max_preemptions": self.max_preemptions, "shrink": self.shrink}


@attrs.frozen
class Subject:
    """What is mutated: a module served by an import hook (``module``), or a
    driver class loaded from a mutant file (``driver_spec``/``class_name``;
    ``module`` is then its importable name, if it has one, for the
    baseline's reach marks)."""

    path: str
    module: str | None = None
    driver_spec: str | None = None
    class_name: str | None = None

    def job(self, mutant: Mutant | None, stem: str = "") -> dict[str, Any]:
        if self.driver_spec is not None:
            return {"driver": {"spec": self.driver_spec, "class": self.class_name,
                               "source": mutant.source if mutant else None, "stem": stem}}
        if mutant is None:
            return {}
        return {"module": {"name": self.module, "source": mutant.source, "stem": stem}}


# ------------------------------------------------------------ processes


class _Workers:
    """Worker processes, each in its own session (a terminal's Ctrl-C
    reaches only us; we stop them), killed at their time limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def run(self, job: dict[str, Any], timeout: float | None
            ) -> tuple[list[dict[str, Any]], str, str]:
        """(events, "done" | "timeout" | "interrupted" | "died", stderr tail)."""
        if self.stopping:
            return [], "interrupted", ""
        cmd = [sys.executable, "-P", "-m", "mmemu.mutate._worker"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        with self._lock:
            self._procs.add(proc)
        state = "done"
        try:
            try:
                out, err = proc.communicate(json.dumps(job).encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                out, err = proc.communicate()
                state = "timeout"
        finally:
            with self._lock:
                self._procs.discard(proc)
        if self.stopping and state == "done" and proc.returncode != 0:
            state = "interrupted"
        events = []
        for line in out.decode("utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        if state == "done" and not any(e.get("event") == "done" for e in events):
            state = "interrupted" if self.stopping else "died"
        tail = "\n".join(err.decode("utf-8", errors="replace").strip().splitlines()[-8:])
        return events, state, tail

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()

    def stop(self) -> None:
        self.stopping = True
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            self._kill(p)


# --------------------------------------------------------------- baseline


def run_baseline(todo: Sequence[tuple[Subject, Mutant]], runs: Sequence[Run], budget: Budget,
                 *, workdir: Path, workers: _Workers | None = None) -> Baseline:
    """Run every planned run on the unmutated code, with reach marks on the
    statements the mutants change; a failing run is a BaselineFailure (the
    code must pass first)."""
    workers = workers or _Workers()
    touched: dict[Subject, set[int]] = {}
    for subject, m in todo:
        touched.setdefault(subject, set()).update(m.touched)
    trace = [{"path": s.path, "module": s.module, "touched": sorted(lines)}
             for s, lines in touched.items()]
    job: dict[str, Any] = dict(budget.job(), runs=[attrs.asdict(r) for r in runs],
                               stop_at_first=True, workdir=str(workdir), trace=trace,
                               fuzz=budget.fuzz_job())
    drivers = [s for s, _m in todo if s.driver_spec is not None]
    if drivers:
        job.update(drivers[0].job(None))
    events, state, tail = workers.run(job, None)
    if state != "done":
        raise MutationError(f"the baseline run (unmutated code) {state}: {tail or 'no output'}")
    errors = [e for e in events if e.get("event") == "error"]
    if errors:
        e = errors[0]
        where = f" in {e['suite']}" if e.get("suite") else ""
        raise BaselineFailure(f"the unmutated code fails to run{where}: {e['error']}")
    rows = [e for e in events if e.get("event") == "run"]
    failed = [e for e in rows if not e["ok"]]
    if failed:
        e = failed[0]
        raise BaselineFailure(
            f"the unmutated code fails {Run(e['suite'], e['params']).describe()}: "
            f"{e['kind']}: {e.get('message', '')} (replay: mmemu replay {e.get('schedule')}); "
            f"mutation testing needs code that passes its suites")
    if len(rows) != len(runs):
        raise MutationError(f"the baseline ran {len(rows)} of {len(runs)} runs")
    fuzzed = next((e for e in events if e.get("event") == "fuzz" and e.get("available")), None)
    if fuzzed is not None and not fuzzed["ok"]:
        raise BaselineFailure(
            f"the unmutated code fails the fuzzer (workload {fuzzed.get('workload')}): "
            f"{fuzzed['kind']}: {fuzzed.get('message', '')} (replay: mmemu replay "
            f"{fuzzed.get('schedule')}); mutation testing needs code that passes its suites "
            f"and the fuzzer (--fuzz 0 runs the suites only)")
    lines = tuple({os.path.realpath(f): frozenset(v) for f, v in e.get("lines", {}).items()}
                  for e in rows)
    return Baseline(runs=tuple(runs), lines=lines,
                    elapsed=tuple(float(e["elapsed_s"]) for e in rows),
                    executions=tuple(int(e["executions"]) for e in rows))


# ---------------------------------------------------------------- verdicts


def _classify(mutant: Mutant, reaching: int, events: list[dict[str, Any]], state: str,
              names: Sequence[str], elapsed: float, tail: str) -> MutantResult:
    verdicts: list[RunVerdict] = []
    for e in events:
        if e.get("event") == "run":
            verdicts.append(RunVerdict.from_event(e, names[e["index"]]))
        elif e.get("event") == "fuzz" and e.get("available"):
            verdicts.append(RunVerdict.from_event(e, "fuzz"))
    runs = tuple(verdicts)

    def result(status: str, reason: str, by: RunVerdict | None = None) -> MutantResult:
        return MutantResult(mutant=mutant, status=status, reason=reason, elapsed_s=elapsed,
                            reaching=reaching, by=by, runs=runs)

    for e in events:
        if e.get("event") == "error":
            if e["stage"] == "import":
                return result("invalid", f"does not import: {e['error']}")
            return result("invalid", f"breaks the model in {names[e['index']]}: {e['error']}")
    failed = next((v for v in runs if not v.ok), None)
    if failed is not None:
        serial = next((e.get("serial_crash") for e in events
                       if e.get("event") == "run" and not e.get("ok")), None)
        if failed.original in CRASH_TYPES and (serial or failed.preemptions == 0):
            return result("invalid", f"crashes on a serial run of {failed.run}: "
                                     f"{failed.original}: {failed.message}", failed)
        return result("caught", f"{failed.kind} in {failed.run} after {failed.executions} "
                                f"executions, {failed.elapsed_s:.2f}s", failed)
    if state == "timeout":
        return result("timeout", f"no verdict within the time limit ({len(runs)} runs done)")
    if state == "interrupted":
        return result("interrupted", "interrupted")
    if state == "died":
        return result("invalid", f"the worker died: {tail or 'no output'}")
    fuzzed = next((v for v in runs if v.run == "fuzz"), None)
    also = f"; {fuzzed.executions} fuzz executions found nothing" if fuzzed else ""
    if reaching == 0:
        return result("unreached", f"no suite executes the mutated lines{also}")
    return result("survived", f"{reaching} run(s) execute the mutated lines; all passed{also}")


def _timeout(budget: Budget, base: Baseline, idx: Sequence[int]) -> float | None:
    if budget.timeout is not None:
        return budget.timeout if budget.timeout > 0 else None
    return 30.0 + 10.0 * sum(base.elapsed[i] for i in idx) + 2.0 * budget.fuzz


def run_mutants(
    mutants: Sequence[tuple[Subject, Mutant]],
    base: Baseline,
    budget: Budget,
    *,
    jobs: int = 1,
    workdir: Path,
    on_result: Callable[[int, MutantResult], None] | None = None,
    workers: _Workers | None = None,
) -> list[MutantResult | None]:
    """Run every mutant; the list follows ``mutants`` (None where Ctrl-C
    stopped it before it started).  ``on_result(i, result)`` sees each one
    as it finishes.  KeyboardInterrupt stops the workers and returns what
    was found (the results of interrupted mutants say so)."""
    workers = workers or _Workers()
    names = [r.describe() for r in base.runs]
    results: list[MutantResult | None] = [None] * len(mutants)

    def one(i: int) -> MutantResult:
        subject, m = mutants[i]
        idx = base.reaching(subject.path, m.touched)
        if not idx and not budget.fuzz:
            return _classify(m, 0, [], "done", names, 0.0, "")
        job: dict[str, Any] = dict(budget.job(), stop_at_first=True, workdir=str(workdir),
                                   fuzz=budget.fuzz_job())
        job["runs"] = [attrs.asdict(base.runs[k]) for k in idx]
        job.update(subject.job(m, stem=m.id))
        started = time.perf_counter()
        events, state, tail = workers.run(job, _timeout(budget, base, idx))
        # the worker numbers its runs 0..; map them back to the plan's names
        local = [names[k] for k in idx]
        return _classify(m, len(idx), events, state, local, time.perf_counter() - started,
                         tail)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(one, i): i for i in range(len(mutants))}
    try:
        for fut in concurrent.futures.as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_result is not None:
                on_result(i, results[i])  # type: ignore[arg-type]
    except KeyboardInterrupt:
        workers.stop()
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True)
        for fut, i in futures.items():
            if fut.done() and not fut.cancelled() and results[i] is None:
                try:
                    results[i] = fut.result()
                except Exception:  # noqa: BLE001 - nothing more to report for it
                    pass
        raise _Interrupted(results) from None
    finally:
        pool.shutdown(wait=True)
    return results


class _Interrupted(Exception):
    """Ctrl-C: carries the results found so far."""

    def __init__(self, results: list[MutantResult | None]) -> None:
        super().__init__("interrupted")
        self.results = results


def make_workdir(keep: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The directory for mutant files: ``keep`` (created, left behind), or
    a temporary one to remove at the end (second value True)."""
    if keep is not None:
        path = Path(keep)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MutationError(f"cannot create {str(path)!r}: {exc.strerror or exc}") from None
        return path.resolve(), False
    return Path(tempfile.mkdtemp(prefix="mmemu-mutate-")), True


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


__all__ = ["Baseline", "BaselineFailure", "Budget", "MutantResult", "MutationError", "Run", "RunVerdict",
           "STATUSES", "Subject", "make_workdir", "remove_workdir", "run_baseline",
           "run_mutants"]
