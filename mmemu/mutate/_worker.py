"""The worker process: one mutant (or the unmutated baseline) per process.

``python -P -m mmemu.mutate._worker`` reads one job (JSON) on stdin and
writes one JSON object per line on stdout as it goes, so the parent keeps
what was found even if it has to kill the worker at its time limit:

- ``{"event": "run", ...}`` for each suite run (suite, params, verdict,
  executions, time, token; with ``lines`` when the job traces coverage);
- ``{"event": "fuzz", ...}`` for the fuzzer step (a number of random
  workloads of ``mmemu fuzz``, deterministic from the seed);
- ``{"event": "error", "stage": "import" | "run", ...}`` when the mutant
  does not import or an exploration raises instead of failing;
- ``{"event": "done"}`` at the end.

The job: ``runs`` (suite name + params, in the order to try), the budget
(``seed``, ``executions``, ``strategy``, ``max_preemptions``; None keeps the
suite's own; ``shrink``: shrink a failure, off by default because the
first failure is the verdict), ``stop_at_first``, ``fuzz``, ``trace`` (files whose executed lines to
mark per run: their path, their importable name when they have one, and
the lines the mutants change), and what to mutate: ``module`` (a module name and its
mutated source, served by an import hook) or ``driver`` (a driver spec and
class; with ``source``, the mutated driver is written to ``workdir`` and
loaded from there).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

#: Python errors that mean the mutant broke the code rather than the
#: protocol when they happen on a serial run (the parent decides)
CRASH_TYPES = ("NameError", "UnboundLocalError", "AttributeError", "TypeError",
               "ImportError", "SyntaxError")


def _emit(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def _describe_error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")


class _Reach:
    """The reach marks of one instrumented file (see _isolate.instrument)."""

    def __init__(self, path: str, hits: bytearray, ranges: list[tuple[int, int]]) -> None:
        self.path = os.path.realpath(path)
        self.hits = hits
        self.ranges = ranges

    def take(self) -> list[int]:
        lines: set[int] = set()
        for k, hit in enumerate(self.hits):
            if hit:
                a, b = self.ranges[k]
                lines.update(range(a, b + 1))
        self.hits[:] = bytes(len(self.hits))
        return sorted(lines)


def run_job(job: dict[str, Any], out: TextIO) -> None:
    from mmemu.mutate._isolate import (
        REACHED,
        instrument,
        load_instrumented_driver,
        load_mutant_driver,
        override_module,
        write_source,
    )

    workdir = Path(job.get("workdir") or ".")
    module = job.get("module")
    if module is not None:
        path = write_source(workdir, module["stem"], module["source"])
        override_module(module["name"], module["source"], str(path))
    reach: list[_Reach] = []
    by_path: list[dict[str, Any]] = []
    for t in job.get("trace") or []:
        if t.get("module"):
            source = Path(t["path"]).read_text(encoding="utf-8")
            code, ranges = instrument(source, t["path"], t["touched"])
            hits = bytearray(len(ranges))
            override_module(t["module"], source, t["path"], code=code,
                            namespace={REACHED: hits})
            reach.append(_Reach(t["path"], hits, ranges))
        else:
            by_path.append(t)
    try:
        import mmemu  # noqa: F401 - the mutated module (if any) is imported here
        from mmemu.engine import get_scenario
        from mmemu.engine._registry import load_builtin

        load_builtin()
        driver_spec = None
        drv = job.get("driver")
        if drv is not None:
            from mmemu.driver import load_driver

            if drv.get("source") is not None:
                path = write_source(workdir, drv["stem"], drv["source"])
                driver_spec = load_mutant_driver(path, drv["class"])
            else:
                driver_spec = drv["spec"]
                for t in by_path:  # a 'file.py:Class' driver: marks through the loader
                    hits, ranges = load_instrumented_driver(t["path"], drv["class"],
                                                            driver_spec, t["touched"])
                    reach.append(_Reach(t["path"], hits, ranges))
                load_driver(driver_spec)
    except Exception as exc:  # noqa: BLE001 - a mutant that does not import is a finding
        _emit(out, {"event": "error", "stage": "import", "error": _describe_error(exc),
                    "original": type(exc).__name__,
                    "traceback": traceback.format_exc(limit=-3)})
        _emit(out, {"event": "done"})
        return

    from mmemu.engine import UnexpectedException, explore
    from mmemu.engine._strategies import make_strategy

    for r in reach:  # marks set while importing and building the registry do not count
        r.take()
    for index, run in enumerate(job["runs"]):
        sc = get_scenario(run["suite"])
        params = dict(run["params"])
        if driver_spec is not None and "driver" in params:
            params["driver"] = driver_spec
        bound = job.get("max_preemptions")
        strategy = make_strategy(job.get("strategy") or sc.strategy,
                                 max_preemptions=bound if bound is not None else sc.max_preemptions)
        started = time.perf_counter()
        budget = job.get("executions") or sc.executions
        try:
            res = explore(sc.name, strategy=strategy, executions=budget,
                          seed=job.get("seed", 0), params=params,
                          shrink=bool(job.get("shrink", False)))
        except Exception as exc:  # noqa: BLE001 - the mutant broke the model's contract
            _emit(out, {"event": "error", "stage": "run", "index": index, "suite": sc.name,
                        "params": run["params"], "error": _describe_error(exc),
                        "original": type(exc).__name__,
                        "elapsed_s": round(time.perf_counter() - started, 3),
                        "traceback": traceback.format_exc(limit=-3)})
            if job.get("stop_at_first", True):
                break
            continue
        f = res.failure
        row: dict[str, Any] = {
            "event": "run", "index": index, "suite": sc.name, "params": run["params"],
            "ok": f is None, "executions": res.executions, "exhausted": res.exhausted,
            "elapsed_s": round(time.perf_counter() - started, 3)}
        if f is not None:
            original = None
            if isinstance(f.exception, UnexpectedException):
                original = type(f.exception.original).__name__
            row.update(kind=f.kind, message=f.message.strip().splitlines()[0][:300]
                       if f.message.strip() else "", preemptions=f.preemptions,
                       steps=f.steps, schedule=f.schedule, found_after=f.found_after,
                       original=original)
            if original in CRASH_TYPES:
                row["serial_crash"] = _crashes_serially(sc.name, params, budget,
                                                        job.get("seed", 0))
        if reach:
            row["lines"] = {r.path: r.take() for r in reach}
        _emit(out, row)
        if f is not None and job.get("stop_at_first", True):
            _emit(out, {"event": "done"})
            return
    fuzz = job.get("fuzz")
    if fuzz and fuzz.get("workloads"):
        drivers = [driver_spec] if driver_spec is not None else None
        _emit(out, _run_fuzz(drivers, int(fuzz["workloads"]), int(job.get("seed", 0)),
                             fuzz.get("api")))
    _emit(out, {"event": "done"})


def _crashes_serially(suite: str, params: dict[str, Any], budget: int, seed: int) -> bool:
    """Does the suite crash with a Python error without any preemption?
    (Then the mutant broke the code itself, not the protocol: invalid.)"""
    from mmemu.engine import DFS, UnexpectedException, explore

    res = explore(suite, strategy=DFS(max_preemptions=0), executions=budget, seed=seed,
                  params=params, shrink=False)
    f = res.failure
    return f is not None and isinstance(f.exception, UnexpectedException) and \
        type(f.exception.original).__name__ in CRASH_TYPES


def _run_fuzz(drivers: list[str] | None, workloads: int, seed: int,
              api: str | None) -> dict[str, Any]:
    """The fuzzer step: ``workloads`` random workloads over ``drivers``
    (None: every installed driver), unshrunk; skipped (``available``
    false) when mmemu.workload is not installed."""
    import importlib

    try:
        fuzz = getattr(importlib.import_module("mmemu.workload._fuzz"), "fuzz")
    except (ImportError, AttributeError):
        return {"event": "fuzz", "available": False}
    started = time.perf_counter()
    res = fuzz(drivers, seed=seed, workloads=workloads, api=api, shrink=False)
    f = res.failure
    row: dict[str, Any] = {"event": "fuzz", "available": True, "ok": f is None,
                           "workloads": res.workloads, "executions": res.executions,
                           "elapsed_s": round(time.perf_counter() - started, 3)}
    if f is not None:
        original = None
        from mmemu.engine import UnexpectedException

        if isinstance(f.exception, UnexpectedException):
            original = type(f.exception.original).__name__
        row.update(kind=f.kind, message=f.message.strip().splitlines()[0][:300]
                   if f.message.strip() else "", preemptions=f.preemptions,
                   schedule=f.schedule, original=original,
                   workload=str(res.workload) if res.workload is not None else None)
    return row


def _exit_with_parent() -> None:
    """A worker outlives nothing: it runs in its own session (so a
    terminal's Ctrl-C reaches only the parent, which stops it), so it must
    notice itself when the parent is gone (killed without a chance to stop
    its workers)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="mutate-parent-watch", daemon=True).start()


def main() -> None:
    _exit_with_parent()
    # Results go to the real stdout; anything the model prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.read())
    run_job(job, out)
    out.close()


if __name__ == "__main__":
    main()
