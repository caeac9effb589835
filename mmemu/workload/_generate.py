"""Random workloads, drawn deterministically from a seed.

``generate(seed, index, settings)`` is a pure function of its arguments:
workload ``i`` of a fuzzing run is the same in any process, so a run is
reproducible from its seed and can be spread over workers.

What a draw looks like (the weights are tuned with benchmarks/fuzz.py so
that every shipped driver mutant is found from the default settings):

- the API generation, among those some allowed driver supports; one driver
  (or, a third of the time, two -- possibly the same class twice, on the
  same mm);
- one to three vmas of one to three pages (kinds anonymous / shared file /
  private file);
- a few *hot* pages that most page arguments name, so that operations meet;
- CPU 0 uses a driver (faults and accesses), CPU 1 invalidates (a kernel
  thread or a thread of the process), any further CPU takes any role -- a
  driver user, a thread of the process, or a kernel thread; each draws its
  operations mostly from its role;
- a driver CPU sometimes starts by detaching and re-attaching (removing and
  re-inserting) its driver, so that registration races with invalidations;
- a driver's access after a write fault writes, other accesses write a
  third of the time (the write is checked against a read-only pte);
- ``ksm(p,q)`` merges into an anonymous page q (a hot one when there is
  one); ``exit`` is never drawn with a driver whose exit the model does not
  cover in that generation (``Driver.no_release_apis``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs

from mmemu.driver import Driver, load_driver
from mmemu.workload._ops import OPERATIONS, applicable
from mmemu.workload._text import API_GENERATIONS, Op, Workload, WorkloadError, vma_kind

#: per role, (operation, weight)
ROLES: dict[str, tuple[tuple[str, float], ...]] = {
    "driver": (("fault", 5.0), ("access", 3.0), ("detach", 0.6), ("attach", 0.5),
               ("insert", 0.5), ("remove", 0.4), ("get", 0.5), ("put", 0.5)),
    "process": (("cpufault", 4.0), ("munmap", 3.0), ("mprotect", 1.5), ("madvise", 1.5),
                ("fork", 1.0), ("exit", 1.2)),
    "kernel": (("reclaim", 3.0), ("migrate", 2.5), ("truncate", 2.0), ("age", 1.5),
               ("ksm", 1.2), ("idle", 0.8), ("scan", 0.8), ("oomreap", 1.5),
               ("signal", 0.4)),
}
ROLE_WEIGHTS = (("driver", 1.0), ("process", 1.2), ("kernel", 1.5))
#: how often a driver CPU starts by detaching and re-attaching its driver
REATTACH = 0.2


@attrs.frozen
class GenSettings:
    """What the generator may use.  ``drivers``: the driver pool (names or
    ``file.py:Class``); ``api``: one generation, or None for any the pool
    supports; ``cpus`` / ``ops``: CPUs per workload and the most operations
    per CPU; ``max_drivers``: drivers attached at once."""

    drivers: tuple[str, ...]
    api: str | None = None
    cpus: int = 3
    ops: int = 3
    max_drivers: int = 2

    def __attrs_post_init__(self) -> None:
        if not self.drivers:
            raise WorkloadError("fuzz: no driver to fuzz (none installed, none given)")
        if self.cpus < 1 or self.ops < 1 or self.max_drivers < 1:
            raise WorkloadError(f"fuzz: cpus, ops and max_drivers must be at least 1 (got "
                                f"{self.cpus}, {self.ops}, {self.max_drivers})")
        if self.api is not None and self.api not in API_GENERATIONS:
            raise WorkloadError(f"fuzz: api must be one of {', '.join(API_GENERATIONS)} "
                                f"(got {self.api!r})")


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    total = sum(w for _n, w in weighted)
    x = rng.random() * total
    for name, w in weighted:
        x -= w
        if x < 0:
            return name
    return weighted[-1][0]


def _classes(settings: GenSettings) -> dict[str, type[Driver]]:
    return {d: load_driver(d) for d in settings.drivers}


def apis_of(settings: GenSettings) -> list[str]:
    """The API generations some driver of the pool supports (in order)."""
    classes = _classes(settings)
    apis = [a for a in API_GENERATIONS if any(a in c.apis for c in classes.values())]
    if settings.api is not None:
        apis = [a for a in apis if a == settings.api]
    if not apis:
        raise WorkloadError(f"fuzz: no driver among {', '.join(settings.drivers)} supports "
                            f"the notifier API {settings.api}")
    return apis


def generate(seed: int, index: int, settings: GenSettings) -> Workload:
    """Workload number ``index`` of the run seeded with ``seed``."""
    rng = random.Random(f"mmemu-fuzz:{seed}:{index}")
    classes = _classes(settings)
    api = rng.choice(apis_of(settings))
    pool = [d for d in settings.drivers if api in classes[d].apis]
    ndrivers = 1 if settings.max_drivers < 2 or rng.random() < 0.67 else 2
    drivers = tuple(rng.choice(pool) for _ in range(ndrivers))
    nvmas = rng.choice((1, 2, 2, 3))
    vmas = tuple((rng.choice("asp"), rng.choice((1, 2, 2, 3))) for _ in range(nvmas))
    npages = sum(n for _k, n in vmas)
    hot = rng.sample(range(npages), k=min(npages, rng.choice((1, 1, 2))))

    def page() -> int:
        return rng.choice(hot) if rng.random() < 0.8 else rng.randrange(npages)

    exited = False
    cpus: list[tuple[Op, ...]] = []
    for c in range(settings.cpus):
        # CPU 0 uses a driver, CPU 1 invalidates (a kernel thread or a thread
        # of the process): every workload of two CPUs or more has a race
        # between the two sides; further CPUs take any role
        if c == 0:
            role = "driver"
        elif c == 1:
            role = _pick(rng, [rw for rw in ROLE_WEIGHTS if rw[0] != "driver"])
        else:
            role = _pick(rng, ROLE_WEIGHTS)
        nops = rng.randint(1, settings.ops)
        ops: list[Op] = []
        if role == "driver" and rng.random() < REATTACH:
            # the driver goes away and comes back before it faults: its
            # registration then races with whatever the other CPUs invalidate
            d = rng.randrange(ndrivers)
            cls = classes[drivers[d]]
            if getattr(cls, "interval_notifier", False) and api == "modern":
                lo = page()
                hi = min(npages - 1, lo + rng.choice((0, 1)))
                ops += [Op("remove", (), d), Op("insert", ((lo, hi),), d)]
            else:
                ops += [Op("detach", (), d), Op("attach", (), d)]
            nops += 1
        while len(ops) < nops:
            d = rng.randrange(ndrivers)
            name = _pick(rng, ROLES[role]) if rng.random() < 0.85 else \
                _pick(rng, ROLES[_pick(rng, ROLE_WEIGHTS)])
            spec = OPERATIONS[name]
            if spec.apis is not None and api not in spec.apis:
                continue
            if spec.driver_op and not applicable(spec, classes[drivers[d]]):
                continue
            if name == "exit":
                # a driver without ->release in this generation never hears the
                # exit (modern GRU: see drivers/gru.py, "Not modelled, modern")
                if exited or any(api in classes[dn].no_release_apis for dn in drivers):
                    continue
                exited = True
            args: list[int | tuple[int, int] | str] = []
            if name == "ksm":
                # merge a (mostly hot) page into another page, the KSM page,
                # which must be anonymous
                p = page()
                anon = [q for q in range(npages) if vma_kind(vmas, q) == "a" and q != p]
                if not anon:
                    continue
                hot_anon = [q for q in hot if q in anon]
                args = [p, rng.choice(hot_anon or anon)]
            for kind in spec.args[len(args):len(spec.args) - spec.optional]:
                if kind == "page":
                    args.append(page())
                elif kind == "range":
                    lo = page()
                    hi = min(npages - 1, lo + rng.choice((0, 1, 1, 2)))
                    args.append((lo, hi))
                elif kind == "rw":
                    args.append(rng.choice("rww"))
                elif kind == "prot":
                    args.append(rng.choice(("r", "r", "rw", "none")))
                elif kind == "count":
                    file_pages = max([n for k, n in vmas if k in "sp"] or [1])
                    args.append(rng.randrange(file_pages))
                elif kind == "cpu":
                    args.append(rng.randrange(settings.cpus))
            op = Op(name, tuple(args), d if spec.driver_op else 0)
            ops.append(op)
            if name == "access" and rng.random() < 0.3:
                op = attrs.evolve(op, args=(op.args[0], "w"))
                ops[-1] = op
            if name == "fault" and len(ops) < nops and rng.random() < 0.7:
                # use what was faulted in, writing through a write fault's
                ops.append(Op("access", op.args if op.args[1] == "w" else op.args[:1], d))
        cpus.append(tuple(ops))
    return Workload(tuple(cpus), drivers, api if api != "2.6.27" else None, vmas)


__all__ = ["GenSettings", "ROLES", "apis_of", "generate"]
