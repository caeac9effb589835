"""Workload shrinking: the smallest workload that still fails the same way.

A failing workload found by the fuzzer is usually mostly noise: CPUs and
operations that play no part in the race.  Before the schedule is shrunk
(the engine's job: fewest preemptions, then fewest steps), the *workload*
is, greedily, in this order, restarting after every success:

1. drop a CPU (signals to it are dropped, later CPUs renumbered);
2. drop an operation;
3. drop a driver (its operations go, later drivers are renumbered);
4. narrow a page range (``munmap(0-2)`` -> ``munmap(0-1)``, ``munmap(1-2)``...);
5. drop a vma, or the last or first page of a vma (operations on the pages
   that go are dropped, later pages renumbered);
6. lower a truncate size.

A candidate is kept when it is strictly smaller (``Workload.size()``,
lexicographic: CPUs, operations, pages named by ranges, pages of the world,
drivers) and the caller's ``fails(candidate)`` says it fails with the same
kind of failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from mmemu.workload._ops import OPERATIONS
from mmemu.workload._text import Op, Workload, WorkloadError, validate

Arg = int | tuple[int, int] | str


def _remap_cpus(wl: Workload, drop: int) -> Workload:
    cpus: list[tuple[Op, ...]] = []
    for c, ops in enumerate(wl.cpus):
        if c == drop:
            continue
        out = []
        for op in ops:
            if op.name == "signal":
                (t,) = op.args
                assert isinstance(t, int)
                if t == drop:
                    continue
                if t > drop:
                    op = attrs.evolve(op, args=(t - 1,))
            out.append(op)
        cpus.append(tuple(out))
    return attrs.evolve(wl, cpus=tuple(cpus))


def _remap_driver(wl: Workload, drop: int) -> Workload:
    cpus = []
    for ops in wl.cpus:
        out = []
        for op in ops:
            if OPERATIONS[op.name].driver_op:
                if op.driver == drop:
                    continue
                if op.driver > drop:
                    op = attrs.evolve(op, driver=op.driver - 1)
            out.append(op)
        cpus.append(tuple(out))
    drivers = wl.drivers[:drop] + wl.drivers[drop + 1:]
    return attrs.evolve(wl, cpus=tuple(cpus), drivers=drivers)


def _remove_pages(wl: Workload, first: int, n: int, vmas: tuple[tuple[str, int], ...]) -> Workload:
    """The world loses pages [first, first + n): operations on them go,
    ranges are clipped, later pages move down by n."""
    end = first + n

    def page(p: int) -> int | None:
        if first <= p < end:
            return None
        return p - n if p >= end else p

    cpus = []
    for ops in wl.cpus:
        out = []
        for op in ops:
            args: list[Arg] = []
            keep = True
            for kind, a in zip(OPERATIONS[op.name].args, op.args):
                if kind == "page" and isinstance(a, int):
                    q = page(a)
                    if q is None:
                        keep = False
                        break
                    args.append(q)
                elif kind == "range" and isinstance(a, tuple):
                    kept = [q for p in range(a[0], a[1] + 1) if (q := page(p)) is not None]
                    if not kept:
                        keep = False
                        break
                    args.append((kept[0], kept[-1]))
                else:
                    args.append(a)
            if keep:
                out.append(attrs.evolve(op, args=tuple(args)))
        cpus.append(tuple(out))
    return attrs.evolve(wl, cpus=tuple(cpus), vmas=vmas)


def candidates(wl: Workload) -> Iterator[Workload]:
    """Smaller variants of ``wl``, in the order they are tried (some may be
    invalid; ``shrink_workload`` skips those)."""
    for c in range(len(wl.cpus)):
        if len(wl.cpus) > 1:
            yield _remap_cpus(wl, c)
    for c, ops in enumerate(wl.cpus):
        for k in range(len(ops)):
            cpus = list(wl.cpus)
            cpus[c] = ops[:k] + ops[k + 1:]
            yield attrs.evolve(wl, cpus=tuple(cpus))
    if len(wl.drivers) > 1:
        for j in range(len(wl.drivers)):
            yield _remap_driver(wl, j)
    for c, ops in enumerate(wl.cpus):
        for k, op in enumerate(ops):
            for i, a in enumerate(op.args):
                if not isinstance(a, tuple) or a[0] == a[1]:
                    continue
                lo, hi = a
                for narrower in ((lo, hi - 1), (lo + 1, hi), (lo, lo), (hi, hi)):
                    args = op.args[:i] + (narrower,) + op.args[i + 1:]
                    cpus = list(wl.cpus)
                    cpus[c] = ops[:k] + (attrs.evolve(op, args=args),) + ops[k + 1:]
                    yield attrs.evolve(wl, cpus=tuple(cpus))
    first = 0
    for v, (kind, n) in enumerate(wl.vmas):
        if len(wl.vmas) > 1:
            yield _remove_pages(wl, first, n, wl.vmas[:v] + wl.vmas[v + 1:])
        if n > 1:
            vmas = wl.vmas[:v] + ((kind, n - 1),) + wl.vmas[v + 1:]
            yield _remove_pages(wl, first + n - 1, 1, vmas)
            yield _remove_pages(wl, first, 1, vmas)
        first += n
    for c, ops in enumerate(wl.cpus):
        for k, op in enumerate(ops):
            if op.name == "truncate" and isinstance(op.args[0], int) and op.args[0] > 0:
                cpus = list(wl.cpus)
                cpus[c] = ops[:k] + (attrs.evolve(op, args=(op.args[0] - 1,)),) + ops[k + 1:]
                yield attrs.evolve(wl, cpus=tuple(cpus))


def _valid(wl: Workload) -> bool:
    if not wl.cpus or not any(wl.cpus):
        return False
    try:
        validate(wl)
    except WorkloadError:
        return False
    return True


def shrink_workload(wl: Workload, fails: Callable[[Workload], bool], *,
                    max_tries: int = 400,
                    should_stop: Callable[[], bool] | None = None) -> tuple[Workload, int]:
    """The smallest variant of ``wl`` that ``fails``, found greedily; returns
    it and the number of candidates tried.  ``wl`` itself is assumed to fail."""
    best = wl
    tries = 0
    improved = True
    while improved and tries < max_tries:
        improved = False
        for cand in candidates(best):
            if should_stop is not None and should_stop():
                return best, tries
            if cand.size() >= best.size() or not _valid(cand):
                continue
            tries += 1
            if fails(cand):
                best = cand
                improved = True
                break
            if tries >= max_tries:
                break
    return best, tries


__all__ = ["candidates", "shrink_workload"]
