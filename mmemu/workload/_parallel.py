"""Fuzzing over worker processes or a Dask cluster.

The unit of work is one workload index: a worker draws workload ``i`` from
the seed (``generate`` is a pure function), explores it by the plan and
sends back plain data (what failed, how many executions, what was
reached).  The parent keeps ``2 x workers`` indices in flight, in order;
when index ``k`` fails it cancels every index above ``k`` and waits for the
ones below, which may hold a lower failure.  The lowest failing index wins,
so ``workloads=W`` finds the same workload as one process; shrinking and
the final report run in the parent.

Workers load drivers given as ``file.py:Class`` from their own working
directory (a Dask worker on another machine needs the file there too).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from typing import Any

import attrs

from mmemu.engine._parallel import _Backend, _Dask, _Processes
from mmemu.workload._fuzz import Found, Plan, _seed_of, explore_plan
from mmemu.workload._generate import GenSettings, generate
from mmemu.workload._text import Workload, parse_workload


def run_index(unit: dict[str, Any]) -> dict[str, Any]:
    """One workload, in a worker (plain data in and out)."""
    from mmemu.engine._registry import load_builtin

    load_builtin()
    settings = GenSettings(**unit["settings"])
    plan = Plan(**unit["plan"])
    seed, index = unit["seed"], unit["index"]
    wl = generate(seed, index, settings)
    reached: dict[str, int] = {}
    found, n, _intr = explore_plan(wl, plan, _seed_of(seed, index),
                                   mutants=tuple(unit["mutants"]), collect=reached)
    return {"index": index, "workload": str(wl), "executions": n, "reached": reached,
            "found": attrs.asdict(found) if found is not None else None}


class _IndexProcesses(_Processes):
    """The engine's worker processes, running workload indices."""

    def submit(self, unit: dict[str, Any]) -> Any:
        return self.pool.submit(run_index, unit)


class _IndexDask(_Dask):
    """The engine's Dask backend, running workload indices."""

    def submit(self, unit: dict[str, Any]) -> Any:
        # pure=False: two units never share a result by key
        fut = self.client.submit(run_index, unit, pure=False)
        self._submitted.append(fut)
        return fut


def _pool(jobs: int | None, dask: Any) -> _Backend:
    return _IndexDask(dask) if dask is not None else _IndexProcesses(jobs or 1)


def search_parallel(settings: GenSettings, plan: Plan, seed: int, mutants: tuple[str, ...], *,
                    workloads: int | None, deadline: float | None, jobs: int | None, dask: Any,
                    stats: dict[str, int], reached: dict[str, int], stop: Callable[[], bool],
                    progress: Callable[[Workload | str], None],
                    ) -> tuple[tuple[int, Workload, Found] | None, bool]:
    """As ``_fuzz._search``, with the workloads spread over workers."""
    pool = _pool(jobs, dask)
    base = {"settings": attrs.asdict(settings), "plan": attrs.asdict(plan), "seed": seed,
            "mutants": list(mutants)}
    pending: dict[Any, int] = {}
    best: tuple[int, str, Found] | None = None
    nxt = 0
    interrupted = False
    kill = False
    try:
        while True:
            out_of_time = deadline is not None and _time.monotonic() >= deadline
            if stop():
                interrupted = kill = True
                break
            while (len(pending) < 2 * pool.slots and not out_of_time
                   and (workloads is None or nxt < workloads)
                   and (best is None or nxt < best[0])):
                pending[pool.submit(dict(base, index=nxt))] = nxt
                nxt += 1
            if not pending:
                break
            if out_of_time and best is None:
                kill = True
                break
            for fut in pool.wait(set(pending), 0.2):
                index = pending.pop(fut)
                res = pool.result(fut)
                stats["workloads"] += 1
                stats["executions"] += int(res["executions"])
                for k, v in res["reached"].items():
                    reached[k] = reached.get(k, 0) + v
                progress(res["workload"])
                if res["found"] is not None and (best is None or index < best[0]):
                    best = (index, res["workload"], Found(**res["found"]))
                    above = {f for f, i in pending.items() if i > index}
                    pool.cancel(above)
                    for f in above:
                        pending.pop(f)
    except KeyboardInterrupt:
        interrupted = kill = True
    finally:
        pool.close(kill=kill or bool(pending))
    if best is None:
        return None, interrupted
    return (best[0], parse_workload(best[1]), best[2]), interrupted


__all__ = ["run_index", "search_parallel"]
