"""``mmemu fuzz`` and ``mmemu run --workload``: the command-line side of
workloads (mmemu/cli.py holds thin wrappers that call these).

Exit status as everywhere: 0 nothing found, 1 a failure (the minimal
workload, its report and its replay line are printed), 2 bad input (one
line), 130 interrupted with nothing found.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from mmemu.workload._fuzz import DEFAULT_TIME, FuzzResult, Progress, fuzz
from mmemu.workload._text import WorkloadError, parse_workload

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def workload_for_run(text: str, driver: str | None, api: str | None) -> dict[str, Any]:
    """The params of ``mmemu run --workload TEXT [--driver D] [--api A]``:
    ``--driver`` / ``--api`` fill the workload's header (a workload that
    names its own is an error: one of the two)."""
    import attrs

    wl = parse_workload(text, check=False)
    if driver is not None:
        if wl.drivers and wl.drivers != (driver,):
            raise WorkloadError(f"workload: names drivers={','.join(wl.drivers)}; "
                                f"--driver {driver} would replace them (give one of the two)")
        wl = attrs.evolve(wl, drivers=(driver,))
    if api is not None:
        if wl.api is not None and wl.api != api:
            raise WorkloadError(f"workload: names api={wl.api}; --api {api} contradicts it")
        wl = attrs.evolve(wl, api=api if api != "2.6.27" else None)
    from mmemu.workload._scenario import workload_params

    return workload_params(wl)


class _FuzzProgress:
    """Fuzzing progress on stderr: a live line on a terminal, otherwise a
    plain line every few seconds (wall-clock time never enters a trace)."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, err: Console, stop: Any, budget: str) -> None:
        self.err = err
        self.stop = stop
        self.tty = sys.stderr.isatty()
        self.budget = budget
        self._live: Any = None
        self._last = 0.0
        self._last_phase = ""

    def __enter__(self) -> _FuzzProgress:
        self.err.print(f"fuzzing {self.budget}", markup=False)
        if self.tty:
            from rich.live import Live

            self._live = Live("", console=self.err, transient=True, refresh_per_second=4)
            self._live.__enter__()
        self._last = time.monotonic()
        return self

    def line(self, p: Progress) -> str:
        secs = max(p.elapsed_s, 1e-6)
        ops = [k for k in p.reached if k.startswith("event:workload: ")]
        callbacks = [k for k in p.reached if k.startswith("callback:")]
        events = [k for k in p.reached if k.startswith("event:") and k not in ops]
        return (f"{p.phase}: {p.workloads} workloads ({p.workloads / secs:.1f}/s), "
                f"{p.executions} executions ({p.executions / secs:.0f}/s); reached "
                f"{len(ops)} kernel paths, {len(callbacks)} callbacks, {len(events)} other events")

    def __call__(self, p: Progress) -> None:
        if self._live is not None:
            self._live.update(self.line(p) + f"\n  {p.workload}")
        else:
            now = time.monotonic()
            if now - self._last >= self.PLAIN_EVERY_S or p.phase != self._last_phase:
                self._last = now
                self.err.print("  " + self.line(p), markup=False)
        self._last_phase = p.phase

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


def reached_table(res: FuzzResult) -> Table:
    """What the search reached: the operations that ran (kernel paths and
    driver actions), the driver callbacks, the model's other events."""
    from mmemu.workload._ops import OPERATIONS

    table = Table(title=f"reached in {res.workloads} workloads")
    table.add_column("operation (kernel path)")
    table.add_column("times", justify="right")
    table.add_column("driver callback")
    table.add_column("times", justify="right")
    left = []
    for key, n in sorted(res.reached.items()):
        if key.startswith("event:workload: "):
            what = key[len("event:workload: "):]
            spec = OPERATIONS.get(what)
            left.append((f"{what} ({spec.kernel})" if spec is not None else what, n))
    right = sorted((k[len("callback:"):], n) for k, n in res.reached.items()
                   if k.startswith("callback:"))
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ("", "")
        b = right[i] if i < len(right) else ("", "")
        table.add_row(str(a[0]), str(a[1]), str(b[0]), str(b[1]))
    return table


def fuzz_command(*, drivers: Sequence[str], cpus: int, ops: int, time_s: float | None,
                 workloads: int | None, seed: int, jobs: int | None, dask: str | None,
                 api: str | None, mutants: Sequence[str], json_: bool, stop: Any,
                 out: Console) -> int:
    """The body of ``mmemu fuzz`` (see mmemu.cli.fuzz for the options)."""
    from mmemu.driver import DriverLoadError, load_driver

    from mmemu.engine import get_mutant
    from mmemu.workload._generate import GenSettings, apis_of

    for d in drivers:
        try:
            load_driver(d)
        except DriverLoadError as exc:
            raise WorkloadError(str(exc)) from None
    if drivers:
        apis_of(GenSettings(drivers=tuple(drivers), api=api, cpus=cpus, ops=ops))
    for m in mutants:
        get_mutant(m)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    budget = (f"{workloads} workloads" if workloads is not None else
              f"for {time_s if time_s is not None else DEFAULT_TIME:g}s")
    pool = ", ".join(drivers) if drivers else "every installed driver"
    with stop:
        with _FuzzProgress(err, stop, f"{pool}, {budget}, seed {seed}") as progress:
            res = fuzz(list(drivers) or None, seed=seed, time=time_s, workloads=workloads,
                       cpus=cpus, ops=ops, api=api, mutants=mutants, jobs=jobs, dask=dask,
                       progress=progress, should_stop=lambda: bool(stop.requested))
    if json_:
        out.print(json.dumps({
            "seed": res.seed, "workloads": res.workloads, "executions": res.executions,
            "elapsed_s": round(res.elapsed_s, 3), "interrupted": res.interrupted,
            "workload": str(res.workload) if res.workload is not None else None,
            "original": str(res.original) if res.original is not None else None,
            "index": res.index, "found_s": res.found_s,
            "found_executions": res.found_executions, "reached": res.reached,
            "failure": res.failure.to_json() if res.failure is not None else None}))
    else:
        out.print(reached_table(res))
        out.print(res.report(), markup=False)
    if res.interrupted:
        err.print(f"interrupted after {res.workloads} workloads ({res.executions} executions)",
                  markup=False)
    if res.failure is not None:
        return EXIT_FAILURE
    return EXIT_INTERRUPTED if res.interrupted else EXIT_OK


def check_options(*, cpus: int, ops: int, time_s: float | None, workloads: int | None) -> None:
    if cpus < 1 or cpus > 8:
        raise WorkloadError(f"--cpus must be 1 to 8 (got {cpus})")
    if ops < 1 or ops > 16:
        raise WorkloadError(f"--ops must be 1 to 16 (got {ops})")
    if time_s is not None and workloads is not None:
        raise WorkloadError("give --time or --workloads, not both")
    if time_s is not None and time_s <= 0:
        raise WorkloadError(f"--time must be positive (got {time_s:g})")
    if workloads is not None and workloads < 1:
        raise WorkloadError(f"--workloads must be at least 1 (got {workloads})")


__all__ = ["check_options", "fuzz_command", "reached_table", "workload_for_run"]

