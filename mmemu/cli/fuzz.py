"""``mmemu fuzz``: random workloads over drivers (the work is in mmemu.workload._cli)."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from ._app import UsageError, _out, app
from .run import _StopRequest


@app.command
def fuzz(
    *,
    driver: Annotated[tuple[str, ...], Parameter(help="fuzz this driver (repeatable; several are "
                                                      "drawn together on one mm); default: every "
                                                      "installed driver")] = (),
    cpus: Annotated[int, Parameter(help="CPUs per workload")] = 3,
    ops: Annotated[int, Parameter(help="most operations per CPU")] = 3,
    time: Annotated[float | None, Parameter(help="seconds to fuzz (default 180)")] = None,
    workloads: Annotated[int | None, Parameter(help="how many workloads (instead of --time: the "
                                                    "same result for a seed on any machine)")] = None,
    seed: Annotated[int, Parameter(help="the run's seed: the same seed draws the same workloads")] = 0,
    api: Annotated[str | None, Parameter(help="notifier API generation: 2.6.27 or modern "
                                              "(default: any the drivers support)")] = None,
    mutant: Annotated[tuple[str, ...], Parameter(help="switch a mutant on (repeatable)")] = (),
    json_: Annotated[bool, Parameter(name="--json", help="one JSON object")] = False,
    jobs: Annotated[int | None, Parameter(help="worker processes exploring workloads")] = None,
    dask: Annotated[str | None, Parameter(help="explore workloads on the Dask scheduler at ADDRESS")] = None,
) -> int:
    """Draw random workloads over drivers, explore each, shrink the first failure.

    A workload is CPUs running kernel paths and driver actions over a small
    world (docs: Workloads).  A failure is shrunk -- the workload first
    (fewer CPUs, operations, pages, drivers), then the schedule -- and
    printed with its minimal workload and replay line.

    Example: mmemu fuzz --driver kvm --driver gru --time 60 --seed 1
    """
    from mmemu.workload._cli import check_options, fuzz_command

    check_options(cpus=cpus, ops=ops, time_s=time, workloads=workloads)
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    return fuzz_command(drivers=driver, cpus=cpus, ops=ops, time_s=time, workloads=workloads,
                        seed=seed, jobs=jobs, dask=dask, api=api, mutants=mutant, json_=json_,
                        stop=_StopRequest(), out=_out())
