"""The scenario that runs a workload, and the functions to explore one.

A workload runs as the registered scenario ``workload:run`` whose parameter
``workload`` is the workload's canonical text: a failure's token carries it,
so ``mmemu replay TOKEN`` rebuilds the same world and the same CPUs with
nothing else.  The drivers and the API generation come from the text's
header; a workload without ``drivers=`` takes ``params["driver"]`` (the
suites' driver axis) or the default driver, and one without ``api=`` takes
``params["api"]`` or 2.6.27.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import mmemu
from mmemu.driver import DEFAULT_DRIVER, DriverLoadError, absolute_spec, load_driver
from mmemu.engine import Result, explore
from mmemu.workload._ops import OPERATIONS, applicable
from mmemu.workload._text import (
    Workload,
    WorkloadError,
    driver_process,
    parse_workload,
    validate,
)
from mmemu.workload._world import World

SCENARIO = "workload:run"

_PARSED: dict[str, Workload] = {}


def _parse_cached(text: str) -> Workload:
    wl = _PARSED.get(text)
    if wl is None:
        wl = parse_workload(text)
        if len(_PARSED) > 4096:
            _PARSED.clear()
        _PARSED[text] = wl
    return wl


def resolve(wl: Workload, params: dict[str, Any] | None = None) -> tuple[tuple[str, ...], str]:
    """The drivers and API generation ``wl`` runs with, checked: every
    driver loads, supports the API, and every driver operation applies to
    its driver."""
    params = params or {}
    drivers = wl.drivers
    if not drivers:
        drivers = (str(params.get("driver") or DEFAULT_DRIVER),)
    elif params.get("driver"):
        raise WorkloadError(f"workload: names drivers={','.join(wl.drivers)} and the run "
                            f"gives driver={params['driver']}: give one of them")
    api = wl.api or str(params.get("api") or "2.6.27")
    validate(wl, drivers=drivers)
    classes = []
    for spec in drivers:
        try:
            cls = load_driver(driver_process(spec)[0])
        except DriverLoadError as exc:
            raise WorkloadError(f"workload: {exc}") from None
        if api not in cls.apis:
            raise WorkloadError(f"workload: driver {spec} supports the notifier API "
                                f"{', '.join(cls.apis)}, not {api} (set api=...)")
        classes.append(cls)
    for c, ops in enumerate(wl.cpus):
        for op in ops:
            spec_ = OPERATIONS[op.name]
            if op.name == "exit":
                for spec, cls in zip(drivers, classes):
                    if api in cls.no_release_apis:
                        raise WorkloadError(
                            f"workload: 'exit' on cpu{c}: not modelled for driver {spec} in "
                            f"the {api} notifier API (it has no ->release there; see its "
                            f"no_release_apis)")
            if spec_.driver_op and not applicable(spec_, classes[op.driver]):
                raise WorkloadError(f"workload: '{op}' on cpu{c}: driver "
                                    f"{drivers[op.driver]} has no {op.name} "
                                    f"({spec_.summary.split(':')[0]})")
    return tuple(drivers), api


async def _run_cpu(world: World, c: int, ops: Sequence[Any]) -> None:
    for op in ops:
        await OPERATIONS[op.name].run(world, c, op)


def _cpu_name(ops: Sequence[Any]) -> str:
    name = " ".join(op.name for op in ops) or "idle"
    return name if len(name) <= 24 else name[:21] + "..."


@mmemu.scenario(SCENARIO, axes={"workload": lambda: []})
async def run_workload(sim: Any) -> None:
    """A workload: CPUs running operations over a small world (mmemu.workload).

    Give the workload as ``params={"workload": "cpu0: fault(0,w); cpu1: munmap(0-1)"}``
    (``mmemu run --workload '...'``).  What it checks: every checker of the
    kernel model (the page and page-table sanitizers, the shadow TLBs'
    FreedPageStillMapped / SecondaryUseAfterFree, lockdep), every driver's
    own ``check()``, the notifier checker's end-of-run coherence of every
    driver's caches with the CPU page tables (IncoherentTranslation), and
    that a driver the workload detached keeps no translation
    (IncoherentWorld), that no process maps the file beyond its end
    (MappedBeyondEof), and that no page of the setup is lost from the LRU
    (LostFromLru).
    """
    text = sim.params.get("workload")
    if not text:
        raise WorkloadError("workload:run needs a workload: params={'workload': 'cpu0: ...'} "
                            "(mmemu run --workload '...')")
    wl = _parse_cached(str(text))
    drivers, api = resolve(wl, sim.params)
    world = World(sim, wl, drivers, api)
    await world.build()
    async with sim.cpus() as cpus:
        for c, ops in enumerate(wl.cpus):
            cpus.start(_run_cpu, world, c, ops, name=_cpu_name(ops))
    world.check_detached()
    world.check_truncated()
    world.check_lru()


def workload_params(workload: Workload | str, *, drivers: Iterable[str] | None = None,
                    api: str | None = None) -> dict[str, Any]:
    """The scenario parameters of a workload (its canonical text), with
    ``drivers`` / ``api`` put into the text when given, and driver files
    named by their absolute paths."""
    import attrs

    wl = parse_workload(workload, check=False) if isinstance(workload, str) else workload
    if drivers is not None:
        wl = attrs.evolve(wl, drivers=tuple(drivers))
    # a driver file by its absolute path: the token replays from anywhere
    wl = attrs.evolve(wl, drivers=tuple(_absolute(d) for d in wl.drivers))
    if api is not None:
        wl = attrs.evolve(wl, api=api)
    resolve(wl)
    return {"workload": str(wl)}


def _absolute(entry: str) -> str:
    spec, proc = driver_process(entry)
    return absolute_spec(spec) + (f"@{proc + 1}" if proc else "")


def explore_workload(workload: Workload | str, *, drivers: Iterable[str] | None = None,
                     api: str | None = None, **kwargs: Any) -> Result:
    """``mmemu.explore`` of one workload (text or Workload); the other
    keywords are explore's (strategy, executions, seed, mutants, ...)."""
    return explore(SCENARIO, params=workload_params(workload, drivers=drivers, api=api),
                   **kwargs)


__all__ = ["SCENARIO", "explore_workload", "resolve", "run_workload", "workload_params"]
