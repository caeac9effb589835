"""Random workloads, drawn deterministically from a seed.

``generate(seed, index, settings)`` is a pure function of its arguments:
workload ``i`` of a fuzzing run is the same in any process, so a run is
reproducible from its seed and can be spread over workers.

What a draw looks like (each rule is there because some real race needs
it; benchmarks/fuzz.py measures, per shipped mutant, how soon the default
draws find it):

- the API generation, among those some allowed driver supports; one driver
  (or, a third of the time, two -- possibly the same class twice, on the
  same mm);
- four workloads in six a *duel*: one page of one vma,
  a user of it (a device's fault, the process's fault, read or DMA)
  against one kernel path on it (reclaim, migration, truncate, zap,
  mprotect, KSM, aging, fork, exit -- against which a device user often
  detaches its driver...), with their pairings, sometimes a second user on
  a third CPU.  Small enough for the plan to explore most of its
  schedules: inside a larger workload the same two operations meet in a
  corner of the schedule tree the budget rarely reaches (a migration entry
  met by a fault, two faults of one swapped-out pte, a DMA dirtying a page
  under reclaim, a read meeting the migration of its page).  The duels are
  not drawn at random but *enumerated* (``duel_cells``): every (API, user,
  kernel path, page kind) cell once per round, in an order the seed
  shuffles (common pairings earlier on average: a weighted shuffle),
  stratified so that every kernel path comes once before any comes twice
  (and each of its page kinds and APIs once before any twice), the user's
  CPU first in one round and second in the next (the DFS reaches different
  races first from either side).  A random draw met a given cell once in
  600-700 workloads; a round is about 100 duels per API, so every cell
  comes within the first round whatever the seed, every kernel path within
  its first dozen duels;
- otherwise, one to three vmas of one to three pages (kinds anonymous / shared file /
  private file);
- two CPUs as often as three (most races take two; a small workload is
  explored more completely within the same budget), each with one to three
  operations, fewer more often;
- a *focus*: one or two neighbouring pages of one vma that most page
  arguments name, so that operations meet; a range contains a focus page
  as its first, last or middle page (a driver that zaps only the first page
  of a range is caught only if it mapped another);
- CPU 0 uses a driver and faults first (a device maps something before it
  does anything else), CPU 1 invalidates (a kernel thread or a thread of
  the process), a further CPU takes any role; each draws its operations
  mostly from its role;
- pairs that only make sense together: a fault is followed by an access
  (a write fault's by a write), a fork by a write to a page it made
  COW-shared, an mmu_notifier_get by its put, and a reclaim or a
  khugepaged scan is often preceded by the aging of the same page (a
  device's recent access keeps the page on the first pass; once aged, only
  ->test_young tells the scan that the device used the page since), an OOM
  reap by the registration of a userptr notifier that refuses its
  non-blockable range, the reclaim of an anonymous page by the process
  touching it again (a swap-in, which races with the other CPUs' faults of
  the swapped-out pte), the idle marking of a page by a use of it just
  before (which the marking must fold into PG_young); a reclaim or
  migration often takes a page an earlier CPU DMAs into;
- CPU 0 is sometimes a thread of the process rather than a driver's user
  (the drivers stay attached: most core races are between the process and
  a kernel thread); of two drivers, the second is sometimes attached to a
  second process sharing the file, and then often re-registers on CPU 1
  while CPU 0's driver does;
- a driver CPU sometimes starts by detaching and re-attaching (removing and
  re-inserting) its driver, so that registration races with invalidations;
  with an interval-notifier driver, two drivers are often two of its
  instances on one mm and CPU 0 often re-inserts one of them: an insert
  during an invalidation that hits the other is deferred;
  a signal goes mostly to a CPU that registers (mm_take_all_locks);
- the *lifecycle* shape: CPU 0 ends with the driver's detach and CPU 1
  with the process's exit (->release against mmu_notifier_unregister);
- ``ksm(p,q)`` merges an anonymous (mostly focus) page into another
  anonymous page; ``exit`` is never drawn with a driver whose exit the
  model does not cover in that generation (``Driver.no_release_apis``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence

import attrs

from mmemu.driver import Driver, load_driver
from mmemu.workload._ops import OPERATIONS, applicable
from mmemu.workload._text import (
    API_GENERATIONS,
    driver_process,
    Op,
    Workload,
    WorkloadError,
    vma_fresh,
    vma_kind,
)

#: per role, (operation, weight)
ROLES: dict[str, tuple[tuple[str, float], ...]] = {
    "driver": (("fault", 3.0), ("access", 2.0), ("detach", 0.6), ("attach", 0.5),
               ("insert", 0.5), ("remove", 0.4), ("get", 0.8), ("put", 0.3)),
    "process": (("cpufault", 4.0), ("munmap", 3.0), ("mprotect", 1.5), ("madvise", 1.5),
                ("fork", 1.0), ("exit", 1.2), ("read", 1.5), ("userptr", 0.3),
                ("dma", 1.0)),
    "kernel": (("reclaim", 3.0), ("migrate", 2.5), ("truncate", 2.0), ("age", 1.5),
               ("ksm", 1.2), ("idle", 1.5), ("scan", 1.2), ("oomreap", 1.5),
               ("signal", 0.4)),
}
ROLE_WEIGHTS = (("driver", 1.0), ("process", 1.2), ("kernel", 1.5))
#: how often a driver CPU starts by detaching and re-attaching its driver
REATTACH = 0.25
#: how often a vma is fresh (nothing faulted in at setup)
FRESH = 0.25
#: how often a CPU sends a signal to a CPU that re-registers a driver
KILL = 0.25
#: how often CPU 0 is a thread of the process instead of a driver's user (the
#: drivers stay attached and hear what the two other sides do: most core
#: races are between the process and a kernel thread)
CPU0_PROCESS = 0.35
#: how often the second of two drivers is attached to a second process that
#: maps the same file (``kvm@2``)
SECOND_PROCESS = 0.5
#: how often, with a second process, its driver re-registers on CPU 1 while
#: the first process's re-registers on CPU 0 (two mm_take_all_locks on two
#: mms sharing the file)
TWO_REGISTRANTS = 0.6
#: how often an OOM reap follows the registration of a userptr notifier that
#: refuses non-blockable invalidations (two notifiers, one failing)
USERPTR = 0.5
#: how often two drivers of a modern workload are two instances of its
#: first driver's class on one mm when that class uses interval notifiers
TWO_INTERVALS = 0.5
#: how often, then, CPU 0 starts by removing and re-inserting one of them
INTERVAL_CHURN = 0.6
#: how often the reclaim of an anonymous page is followed by the process
#: touching it again (a swap-in)
SWAPIN = 0.5
#: how often a workload ends with the driver's detach on CPU 0 against the
#: process's exit on CPU 1 (when the drivers hear the exit)
LIFECYCLE = 0.3
#: which workloads are *duels*: of every DUEL_PERIOD workloads, those whose
#: index modulo DUEL_PERIOD is not in FREE_DRAWS -- four in six.  A duel is
#: two CPUs (sometimes three), one operation each (with its pairings) on one
#: page of one vma of a kind both operations need -- a user of the page
#: against a kernel path that moves, frees, swaps or write-protects it.  A
#: duel is explored to the end (or nearly) within the plan's budget, where
#: the same two operations inside a larger workload are one corner of a tree
#: the budget does not cover.  Free draws 0 and 2 of every six: the first
#: workloads of a seed are of both kinds
DUEL_PERIOD = 6
FREE_DRAWS = (0, 2)
#: how often a duel has a second user of the page on a third CPU
DUEL_THIRD = 0.3
#: a duel's kernel side: (operation, weight, page kinds it acts on)
DUEL_MOVERS: tuple[tuple[str, float, str], ...] = (
    ("reclaim", 3.0, "asp"), ("migrate", 2.5, "asp"), ("truncate", 1.5, "sp"),
    ("madvise", 1.0, "asp"), ("munmap", 1.0, "asp"), ("mprotect", 1.0, "asp"),
    ("ksm", 1.5, "a"), ("age", 0.8, "asp"), ("idle", 1.0, "asp"), ("scan", 0.8, "asp"),
    ("fork", 0.8, "ap"), ("exit", 1.0, "asp"))
#: in a duel against the process's exit, how often a device user ends with
#: its driver's detach (the lifecycle: ->release against unregister)
DUEL_DETACH = 0.75
#: a duel's user side: (operation, weight, page kinds it uses)
DUEL_USERS: tuple[tuple[str, float, str], ...] = (
    ("fault", 3.0, "asp"), ("cpufault", 2.5, "asp"), ("read", 1.5, "sp"), ("dma", 1.5, "asp"))
#: the users a kernel path is paired with when not every one makes sense:
#: the process's exit races with the users that hold a reference of their
#: own on the mm and hear the exit -- a device (its fault, then mostly its
#: detach: ->release against unregister) -- not with the process's own
#: threads or their get_user_pages (exit_mmap runs once the last of them is
#: gone; their operations then do nothing: a race on mm_users only)
DUEL_MOVER_USERS: dict[str, tuple[str, ...]] = {"exit": ("fault",)}


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


def _count(rng: random.Random, most: int, *, least: int = 1, decay: float = 0.55) -> int:
    """A number from ``least`` to ``most``, smaller ones more often (each
    next one ``decay`` times as likely)."""
    sizes = range(least, most + 1)
    return int(_pick(rng, [(str(n), decay ** (n - least)) for n in sizes]))


def _paired(rng: random.Random, op: Op, *, swappable: bool,
            cow_page: Callable[[], int] | None) -> tuple[list[Op], int]:
    """``op`` with the operations that only make sense with it (see the
    module docstring), in order, and how many of them count against the
    CPU's number of operations.  ``swappable``: its page is an anonymous
    page reclaim can swap out; ``cow_page()``: a page for the write after a
    fork (None: no room for it)."""
    name, d = op.name, op.driver
    before: list[Op] = []
    after: list[Op] = []
    grow = 0
    if name == "oomreap" and rng.random() < USERPTR:
        # a userptr notifier that refuses the reaper's non-blockable range,
        # next to the drivers' (the core ends exactly the notifiers that
        # started)
        before.append(Op("userptr"))
    if name == "reclaim" and rng.random() < 0.4:
        # kswapd ages a page before it reclaims it: a device's recent access
        # (its young bit) keeps the page on the first pass
        before.append(Op("age", op.args))
    if name == "reclaim" and swappable and rng.random() < SWAPIN:
        # the process touches the page reclaim swapped out: a swap-in
        # (do_swap_page), which races with any other fault of it
        after.append(Op("cpufault", (op.args[0], rng.choice("rw"))))
    if name == "idle" and rng.random() < 0.4:
        # the process used the page before it is marked idle: the marking
        # must fold that use into PG_young first
        before.append(Op("cpufault", (op.args[0], "r")))
    if name == "scan" and rng.random() < 0.5:
        # khugepaged's question matters once the page was aged: a CPU pte's
        # young bit answers it otherwise, and only a use through a driver's
        # translation since then shows it is hot
        before.append(Op("age", (op.args[0][0],)))  # type: ignore[index]
    if name == "fault" and rng.random() < 0.7:
        # use what was faulted in, writing through a write fault's (an
        # operation more: a fault is there to be used)
        after.append(Op("access", op.args if op.args[1] == "w" else op.args[:1], d))
    grow = len(before) + len(after)
    if name == "get" and rng.random() < 0.7:
        # and that device unbinds again
        after.append(Op("put", (), d))
    if name == "fork" and cow_page is not None and rng.random() < 0.6:
        # then write to a page the fork made COW-shared
        after.append(Op("cpufault", (cow_page(), "w")))
    return before + [op] + after, grow


@attrs.frozen
class DuelCell:
    """One pairing the duels enumerate: the user's operation against the
    kernel path's, on a page of kind ``kind`` (a / s / p), in ``api``."""

    api: str
    user: str
    mover: str
    kind: str


def _usable(name: str, api: str, classes: Sequence[type[Driver]]) -> bool:
    spec = OPERATIONS[name]
    return (spec.apis is None or api in spec.apis) and \
        (not spec.driver_op or any(applicable(spec, c) for c in classes))


@functools.lru_cache(maxsize=32)
def duel_cells(settings: GenSettings) -> tuple[DuelCell, ...]:
    """Every (API, user, kernel path, page kind) a duel can be over the
    settings' drivers, in a fixed order."""
    classes = _classes(settings)
    out: list[DuelCell] = []
    for api in apis_of(settings):
        pool = [c for c in classes.values() if api in c.apis]
        for mover, _w, mkinds in DUEL_MOVERS:
            if not _usable(mover, api, pool):
                continue
            for user, _w2, ukinds in DUEL_USERS:
                if not _usable(user, api, pool) or \
                        user not in DUEL_MOVER_USERS.get(mover, (user,)):
                    continue
                out += [DuelCell(api, user, mover, k) for k in mkinds if k in ukinds]
    return tuple(out)


def duel_number(index: int) -> int | None:
    """Which duel workload ``index`` is (0, 1, ...), or None for a free draw."""
    rnd, pos = divmod(index, DUEL_PERIOD)
    if pos in FREE_DRAWS:
        return None
    return rnd * (DUEL_PERIOD - len(FREE_DRAWS)) + sum(
        1 for q in range(pos) if q not in FREE_DRAWS)


def duel_of(seed: int, index: int, settings: GenSettings) -> tuple[DuelCell, bool] | None:
    """Workload ``index``'s duel cell and whether the user's CPU comes first,
    or None if it is no duel.  Duel number k takes cell k mod L of round
    k // L (L cells), in the round's order (``duel_order``); a cell's user
    goes first in every other round (which side starts is drawn once per
    cell by the seed)."""
    k = duel_number(index)
    if settings.cpus < 2 or k is None:
        return None
    cells = duel_cells(settings)
    if not cells:
        return None
    rnd, pos = divmod(k, len(cells))
    c = duel_order(seed, rnd, settings)[pos]
    first = random.Random(f"mmemu-fuzz-duel-side:{seed}:{c}").random() < 0.5
    return cells[c], first != (rnd % 2 == 1)


@functools.lru_cache(maxsize=64)
def duel_order(seed: int, rnd: int, settings: GenSettings) -> tuple[int, ...]:
    """The order of the cells (indices into ``duel_cells``) in round ``rnd``
    of the seed: a weighted shuffle (Efraimidis & Spirakis 2006: sort by
    u ** (1/w)) -- the common pairings (a device's fault against reclaim)
    earlier on average than the rare ones -- *stratified* by kernel path:
    every kernel path comes once (its best-placed cell) before any comes a
    second time, and a kernel path's cells take each (API, page kind) and
    each user once before any twice (``_spread``).  So the first dozen
    duels meet every kernel path, the first four dozen every kernel path
    with every user and on every page kind of one API, whatever the seed; a
    whole round (about 100 duels per API) is some 80 CPU seconds."""
    cells = duel_cells(settings)
    rng = random.Random(f"mmemu-fuzz-duels:{seed}:{rnd}")
    keys = [rng.random() ** (1.0 / _duel_weight(cell)) for cell in cells]
    by_key = sorted(range(len(cells)), key=lambda i: -keys[i])
    mover_rank: dict[int, int] = {}
    for mover in dict.fromkeys(cells[i].mover for i in by_key):
        for rank, i in enumerate(_spread([i for i in by_key if cells[i].mover == mover],
                                         cells)):
            mover_rank[i] = rank
    return tuple(sorted(by_key, key=lambda i: mover_rank[i]))  # stable: by key within a rank


def _spread(mine: list[int], cells: Sequence[DuelCell]) -> list[int]:
    """One kernel path's cells (best key first) reordered so that each of
    its (API, page kind)s and each user comes once before any comes twice,
    as far as both allow: the next cell is the best-placed one new in both
    respects, else new in one, else the best-placed left."""
    paths = {(cells[i].api, cells[i].kind) for i in mine}
    users = {cells[i].user for i in mine}
    out: list[int] = []
    seen_paths: set[tuple[str, str]] = set()
    seen_users: set[str] = set()
    left = list(mine)
    while left:
        def novelty(i: int) -> int:
            return ((cells[i].api, cells[i].kind) not in seen_paths) + \
                (cells[i].user not in seen_users)
        best = max(novelty(i) for i in left)
        pick = next(i for i in left if novelty(i) == best)
        left.remove(pick)
        out.append(pick)
        seen_paths.add((cells[pick].api, cells[pick].kind))
        seen_users.add(cells[pick].user)
        if seen_paths >= paths:
            seen_paths = set()
        if seen_users >= users:
            seen_users = set()
    return out


def _duel_weight(cell: DuelCell) -> float:
    return dict((n, w) for n, w, _k in DUEL_USERS)[cell.user] * \
        dict((n, w) for n, w, _k in DUEL_MOVERS)[cell.mover]


def _duel(rng: random.Random, cell: DuelCell, user_first: bool, drivers: tuple[str, ...],
          classes: Sequence[type[Driver]], settings: GenSettings) -> Workload:
    """A duel (see DUEL_PERIOD): one page ``p`` of one vma, a user of it on one
    CPU and a kernel path on it on the other, each with its pairings (a
    reclaim of an anonymous page often swaps it in again: two faults on one
    swapped-out pte; a DMA into it dirties it under reclaim's feet)."""
    api, mover, kind = cell.api, cell.mover, cell.kind
    user = cell.user if _usable(cell.user, api, classes) else "cpufault"
    if mover == "exit" and any(api in c.no_release_apis for c in classes):
        # a driver without ->release in this generation never hears the exit
        # (modern GRU): the process unmaps the page instead
        mover = "munmap"
    users = [(n, w, k) for n, w, k in DUEL_USERS if _usable(n, api, classes)]
    npages = 2 if mover == "ksm" else rng.choice((1, 1, 2))
    # ksm merges pages the setup mapped; otherwise the vma is sometimes fresh
    fresh = mover != "ksm" and rng.random() < FRESH
    vmas = ((kind.upper() if fresh else kind, npages),)
    p = rng.randrange(npages)
    swappable = kind == "a" and not fresh

    def span() -> tuple[int, int]:
        return (p, p) if rng.random() < 0.6 else (0, npages - 1)

    margs: tuple[int | tuple[int, int] | str, ...] = (p,)
    if mover in ("madvise", "munmap", "scan"):
        margs = (span(),)
    elif mover == "mprotect":
        margs = (span(), rng.choice(("r", "r", "rw", "none")))
    elif mover == "truncate":
        margs = (rng.randint(0, p),)  # the file vma maps the file from 0
    elif mover == "ksm":
        margs = (p, 1 - p)
    elif mover in ("fork", "exit"):
        margs = ()
    kernel, _grow = _paired(rng, Op(mover, margs), swappable=swappable,
                            cow_page=(lambda: p) if kind == "a" else None)

    detached: list[int] = []  # one detach at most (of the first device user)

    def a_user(name: str) -> list[Op]:
        d = 0
        if OPERATIONS[name].driver_op:
            # a device of the second process (kvm@2) uses the page only
            # where that process maps it too -- a shared file page -- and
            # never hears the first process's exit
            near = [i for i, c in enumerate(classes) if applicable(OPERATIONS[name], c)
                    and (not driver_process(drivers[i])[1]
                         or (kind == "s" and mover != "exit"))]
            if not near:
                return a_user("cpufault")
            d = rng.choice(near)
        args: tuple[int | tuple[int, int] | str, ...] = (p,)
        if name in ("fault", "cpufault"):
            args = (p, rng.choice("rww"))
        ops = _paired(rng, Op(name, args, d), swappable=swappable, cow_page=None)[0]
        if mover == "exit" and OPERATIONS[name].driver_op and not detached \
                and rng.random() < DUEL_DETACH:
            detached.append(d)
            # the device goes away after its use while the process exits:
            # mmu_notifier_unregister against exit_mmap's ->release
            interval = getattr(classes[d], "interval_notifier", False) and api == "modern"
            ops.append(Op("remove" if interval else "detach", (), d))
        return ops

    cpus = [a_user(user), kernel]
    if not user_first:
        cpus.reverse()
    if settings.cpus >= 3 and rng.random() < DUEL_THIRD:
        cpus.append(a_user(_pick(rng, [(n, w) for n, w, k in users if kind in k])))
    return Workload(tuple(tuple(c) for c in cpus), drivers,
                    api if api != "2.6.27" else None, vmas)


def generate(seed: int, index: int, settings: GenSettings) -> Workload:
    """Workload number ``index`` of the run seeded with ``seed``."""
    rng = random.Random(f"mmemu-fuzz:{seed}:{index}")
    classes = _classes(settings)
    duel = duel_of(seed, index, settings)
    api = duel[0].api if duel is not None else rng.choice(apis_of(settings))
    pool = [d for d in settings.drivers if api in classes[d].apis]
    ndrivers = 1 if settings.max_drivers < 2 or rng.random() < 0.67 else 2
    drivers = tuple(rng.choice(pool) for _ in range(ndrivers))
    # two interval notifiers on one mm, one of which CPU 0 removes and
    # re-inserts: the insert can land while another CPU's invalidation hits
    # the other one (invalidate_seq odd: the insert is deferred)
    two_intervals = (ndrivers == 2 and api == "modern"
                     and getattr(classes[drivers[0]], "interval_notifier", False)
                     and rng.random() < TWO_INTERVALS)
    if two_intervals:
        drivers = (drivers[0], drivers[0])
    elif ndrivers == 2 and rng.random() < SECOND_PROCESS:
        # two VMs (devices) on two processes backed by one shared file
        drivers = (drivers[0], drivers[1] + "@2")
    if duel is not None:
        return _duel(rng, duel[0], duel[1], drivers,
                     [classes[driver_process(d)[0]] for d in drivers], settings)
    nvmas = rng.choice((1, 2, 2, 3))
    # a vma is sometimes fresh (capitals: not faulted in at setup), so that
    # first touches race with each other
    vmas = tuple(((lambda k: k.upper() if rng.random() < FRESH else k)(rng.choice("asp")),
                  rng.choice((1, 2, 2, 3))) for _ in range(nvmas))
    npages = sum(n for _k, n in vmas)
    # the focus: one or two neighbouring pages of one vma that most page
    # arguments name, so that operations meet on them; ranges contain a
    # focus page anywhere (first, last or middle page of the range)
    fv = rng.randrange(nvmas)
    first = sum(n for _k, n in vmas[:fv])
    width = 2 if vmas[fv][1] >= 2 and rng.random() < 0.5 else 1
    flo = first + rng.randrange(vmas[fv][1] - width + 1)
    focus = list(range(flo, flo + width))
    anon = [q for q in range(npages) if vma_kind(vmas, q) == "a"]

    def p_anon(p: int | tuple[int, int] | str) -> bool:
        # an anonymous page the setup mapped and put on the LRU (reclaim
        # can take it; a page the workload faults in is on no LRU)
        return p in ksm_pages

    # the KSM page must be mapped at setup
    ksm_pages = [q for q in anon if not vma_fresh(vmas, q)]

    def file_index(p: int) -> int | None:
        # every file vma maps the file from offset 0
        start = 0
        for kind, n in vmas:
            if p < start + n:
                return p - start if kind.lower() in "sp" else None
            start += n
        return None

    def page() -> int:
        return rng.choice(focus) if rng.random() < 0.8 else rng.randrange(npages)

    def page_range() -> tuple[int, int]:
        p = page()
        lo = max(0, p - rng.choice((0, 0, 1)))
        return lo, min(npages - 1, max(p, lo + rng.choice((0, 1, 1, 2))))

    ncpus = settings.cpus if settings.cpus <= 2 else _count(rng, settings.cpus, least=2,
                                                            decay=0.8)
    def cls_of(d: int) -> type[Driver]:
        return classes[driver_process(drivers[d])[0]]

    exit_ok = not any(api in cls_of(d).no_release_apis for d in range(ndrivers))
    # the lifecycle shape: the driver goes away (detach / interval remove)
    # while the process exits -- ->release against unregister
    lifecycle = exit_ok and ncpus >= 2 and rng.random() < LIFECYCLE
    exited = lifecycle
    second_process = any(driver_process(d)[1] for d in drivers)
    # the two processes' VMs re-register at once, on CPU 0 and CPU 1: two
    # mm_take_all_locks on two mms that share the file
    two_registrants = second_process and ncpus >= 2 and rng.random() < TWO_REGISTRANTS
    cpus: list[tuple[Op, ...]] = []

    def ops_of_others() -> list[Op]:
        return [o for ops in cpus for o in ops]

    for c in range(ncpus):
        # CPU 0 uses a driver, CPU 1 invalidates (a kernel thread or a thread
        # of the process): every workload of two CPUs or more has a race
        # between the two sides; further CPUs take any role
        if c == 0:
            role = "driver" if rng.random() >= CPU0_PROCESS or two_registrants \
                or two_intervals else "process"
        elif c == 1:
            role = _pick(rng, [rw for rw in ROLE_WEIGHTS if rw[0] != "driver"])
            if lifecycle:
                role = "process"
        else:
            role = _pick(rng, ROLE_WEIGHTS)
        nops = _count(rng, settings.ops)
        ops: list[Op] = []
        reattach: int | None = None
        #: the pages a re-inserted interval notifier covers
        inserted: tuple[int, int] | None = None
        if two_registrants and c < 2:
            reattach = c  # d0 is the first process's driver, d1 the second's
        elif two_intervals and c == 0 and rng.random() < INTERVAL_CHURN:
            reattach = rng.randrange(2)
        elif role == "driver" and rng.random() < REATTACH:
            # the driver goes away and comes back before it faults: its
            # registration then races with whatever the other CPUs invalidate
            reattach = rng.randrange(ndrivers)
        if reattach is not None:
            d = reattach
            if getattr(cls_of(d), "interval_notifier", False) and api == "modern":
                inserted = page_range()
                ops += [Op("remove", (), d), Op("insert", (inserted,), d)]
            else:
                ops += [Op("detach", (), d), Op("attach", (), d)]
            nops += 2
        while len(ops) < nops:
            d = rng.randrange(ndrivers)
            name = _pick(rng, ROLES[role]) if rng.random() < 0.85 else \
                _pick(rng, ROLES[_pick(rng, ROLE_WEIGHTS)])
            first_fault = False
            if role == "driver" and not any(o.name == "fault" for o in ops) and \
                    rng.random() < 0.85:
                # a device maps something before anything else it does
                name = "fault"
                first_fault = reattach is not None
            spec = OPERATIONS[name]
            if spec.apis is not None and api not in spec.apis:
                continue
            if spec.driver_op and not applicable(spec, cls_of(d)):
                continue
            if name == "exit":
                # a driver without ->release in this generation never hears the
                # exit (modern GRU: see drivers/gru.py, "Not modelled, modern")
                if exited or not exit_ok:
                    continue
                exited = True
            args: list[int | tuple[int, int] | str] = []
            if first_fault and reattach is not None:
                # the device that came back maps something: the re-attached
                # driver, inside the interval it re-inserted
                d = reattach
                if inserted is not None:
                    inside = [q for q in focus if inserted[0] <= q <= inserted[1]]
                    args = [rng.choice(inside) if inside and rng.random() < 0.8
                            else rng.randint(*inserted)]
            pinned = [o.args[0] for o in ops_of_others() if o.name == "dma"]
            if name in ("reclaim", "migrate") and pinned and rng.random() < 0.6:
                # reclaim or migration meets a page a device DMAs into (a
                # pinned page that is dirtied when the pin is dropped)
                args = [rng.choice(pinned)]
            elif name == "ksm":
                # merge an anonymous (mostly focus) page into another
                # anonymous page, the KSM page
                p = page()
                if p not in anon:
                    p = rng.choice(anon) if anon else p
                into = [q for q in ksm_pages if q != p]
                if p not in anon or not into:
                    continue
                args = [p, rng.choice(into)]
            elif name == "signal":
                # mostly to a CPU that registers a notifier (mm_take_all_locks
                # returns -EINTR on a pending signal)
                registering = [i for i, o in enumerate(cpus)
                               if any(x.name in ("attach", "insert") for x in o)]
                if registering and rng.random() < 0.7:
                    args = [rng.choice(registering)]
            for kind in spec.args[len(args):len(spec.args) - spec.optional]:
                if kind == "page":
                    args.append(page())
                elif kind == "range":
                    args.append(page_range())
                elif kind == "rw":
                    args.append(rng.choice("rww"))
                elif kind == "prot":
                    args.append(rng.choice(("r", "r", "rw", "none")))
                elif kind == "count":
                    # a truncate that mostly removes a focus page of a file vma
                    file_pages = max([n for k, n in vmas if k.lower() in "sp"] or [1])
                    cut = [i for i in map(file_index, focus) if i is not None]
                    args.append(rng.randrange(min(cut) + 1 if cut and rng.random() < 0.7
                                              else file_pages))
                elif kind == "cpu":
                    args.append(rng.randrange(ncpus))
            op = Op(name, tuple(args), d if spec.driver_op else 0)
            if name == "access" and rng.random() < 0.3:
                op = attrs.evolve(op, args=(op.args[0], "w"))
            def cow_page() -> int:
                p = page()
                return p if p in anon else rng.choice(anon)

            paired, grow = _paired(rng, op, swappable=bool(op.args) and p_anon(op.args[0]),
                                   cow_page=cow_page if anon and len(ops) < nops else None)
            ops += paired
            nops += grow
        registering = [i for i, o in enumerate(cpus)
                       if any(x.name in ("attach", "insert") for x in o)]
        if c >= 1 and registering and rng.random() < KILL:
            # the task that registers is killed (mm_take_all_locks: -EINTR)
            ops.insert(0, Op("signal", (rng.choice(registering),)))
        if lifecycle and c == 0:
            d = rng.randrange(ndrivers)
            cls = cls_of(d)
            interval = getattr(cls, "interval_notifier", False) and api == "modern"
            ops.append(Op("remove" if interval else "detach", (), d))
        if lifecycle and c == 1:
            ops.append(Op("exit"))
        cpus.append(tuple(ops))
    return Workload(tuple(cpus), drivers, api if api != "2.6.27" else None, vmas)


__all__ = ["DuelCell", "GenSettings", "ROLES", "apis_of", "duel_cells", "duel_number", "duel_of",
           "duel_order", "generate"]
