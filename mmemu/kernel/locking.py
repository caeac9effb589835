"""Kernel locks, wait queues and completions, with lockdep.

Emulates: kernel/spinlock.c, kernel/mutex.c, lib/rwsem.c, kernel/wait.c,
kernel/sched.c (completions), kernel/lockdep.c (2.6.27)

The locks are the engine's (``mmemu.lowlevel.Lock`` / ``RwLock``): taking a
lock is one step that declares a write to the lock, and a CPU whose next step
takes a held lock is simply not enabled until the lock is released -- it
spends no step spinning or waking up.  So the explorer orders critical
sections and nothing else, and a deadlock is visible as such (no CPU can
run).  A spinlock is modelled as a blocking lock, not a spin loop: the same
behaviours with far fewer states.  Neither ticket-spinlock nor mutex FIFO
fairness is modelled (every order of the waiters is explored, a superset of
the kernel's); the rwsem's writer preference is, because it forbids
behaviours: once a writer waits, new readers wait behind it (lib/rwsem.c's
wait list), which costs a contended writer one extra step (queueing).

Lock ordering in the emulated mm (lockdep enforces what actually happens;
this is what the model intends)::

  mm->mmap_sem
    mm_all_locks_mutex                 (mmu_notifier_register -> mm_take_all_locks)
      anon_vma->lock, i_mmap_lock      (taken with nest_lock = mmap_sem, any order)
    page lock (PG_locked)              (fault path: lock_page under mmap_sem)
      mapping->i_mmap_lock             (unmap_mapping_range, try_to_unmap_file)
        anon_vma->lock                 (try_to_unmap_anon)
          mm->page_table_lock / ptl    (zap_pte_range, try_to_unmap_one)
            mapping->tree_lock         (__remove_mapping under the page lock)
  kvm->mmu_lock                        (taken inside notifier callbacks, i.e.
                                        under i_mmap_lock / anon_vma->lock / ptl)

Lockdep (kept across the executions of one exploration, in
``sim.exploration["lockdep"]``) checks an acquisition when the CPU attempts
it -- before it may have to wait, as the kernel's ``lock_acquire()`` does --
and reports, each with both acquisition sites:

- an order inversion: class B taken while holding A when B -> ... -> A was
  seen before (in this execution or an earlier one), even if no deadlock
  happened;
- recursion: a lock taken twice by one CPU (a self-deadlock) or two locks of
  one class without a ``nest_lock`` that the CPU holds;
- unlock of a lock the CPU does not hold;
- locks still held when a CPU finishes;
- sleeping (mutex, rwsem, synchronize_rcu, wait queues) while holding a
  spinlock or inside an RCU read-side section.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import (
    CPU,
    Simulation,
    _sim_or_none,
    annotate,
    block,
    current_simulation,
    fail,
    reach,
    recording,
    step,
    wake_all,
    wrote,
)
from mmemu.engine._locks import SETUP, Lock, RwLock

# --------------------------------------------------------------------- errors


class LockdepViolation(InvariantViolation):
    """A locking rule was broken (lockdep's report)."""


class LockOrderViolation(LockdepViolation):
    """Two lock classes were taken in both orders (possible ABBA deadlock)."""


class RecursiveLocking(LockdepViolation):
    """Two locks of one class nested without a nest_lock."""


class SelfDeadlock(LockdepViolation):
    """A CPU tried to take a lock it already holds."""


class UnlockNotOwner(LockdepViolation):
    """A lock was released by a CPU that does not hold it."""


class LockHeldAtExit(LockdepViolation):
    """A CPU finished while still holding locks."""


class SleepingWhileAtomic(LockdepViolation):
    """A CPU slept while holding a spinlock or inside an RCU read section."""


# ---------------------------------------------------------------- lock types


class _Lock:
    """What lockdep knows of a lock: a name for reports and a class.

    The page lock (``mm/page.py``) is one too, without being an engine lock.
    """

    kind = "lock"
    sleeps = False

    def __init__(self, name: str, cls: str | None = None) -> None:
        self.name = name
        self.cls = cls or name
        self.__mmemu_name__ = name
        #: step of the last release, for trace flows (only when recording)
        self.released_at: int | None = None

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


class _ExclusiveLock(Lock, _Lock):
    """spinlock_t and struct mutex: an engine Lock that lockdep watches."""

    def __init__(self, name: str, cls: str | None = None) -> None:
        Lock.__init__(self, name)
        _Lock.__init__(self, name, cls)

    def before_release(self, cpu: CPU) -> None:
        _lockdep_release(cpu, self)

    def release_not_owner(self, cpu: CPU, label: str) -> None:
        cpu.sim.fail(UnlockNotOwner(
            f"{cpu.title} unlocks {self.kind} {self.name} at #{cpu.sim.steps - 1} but "
            f"{'nobody' if self.owner is None else _owner_title(self.owner)} holds it"))


class SpinLock(_ExclusiveLock):
    """``spinlock_t``.  ``owner`` is the CPU holding it (or SETUP).

    A lock that was a spinlock in 2.6.27 and became a sleeping lock later
    (``i_mmap_lock``, ``anon_vma->lock``) keeps this type, its step labels and
    its lockdep class in every generation; the modern generation sets
    ``sleeps`` on the instance, so that holding it is not atomic context
    (``in_atomic``) and a driver may sleep in a blockable range_start called
    under it.
    """

    kind = "spinlock"


class Mutex(_ExclusiveLock):
    """``struct mutex``: a sleeping lock."""

    kind = "mutex"
    sleeps = True


class RwSemaphore(RwLock, _Lock):
    """``struct rw_semaphore`` (``mmap_sem``).  Fair: once a writer waits,
    new readers queue behind it, as in lib/rwsem.c."""

    kind = "rwsem"
    sleeps = True

    def __init__(self, name: str, cls: str | None = None) -> None:
        RwLock.__init__(self, name)
        _Lock.__init__(self, name, cls)

    @property
    def waiting_writers(self) -> int:
        return self.queued

    def before_release(self, cpu: CPU, *, read: bool = False) -> None:
        _lockdep_release(cpu, self, read=read)

    def release_not_owner(self, who: CPU | str, label: str, *, read: bool = False) -> None:
        if read:
            msg = f"{_owner_title(who)} calls up_read({self.name}) without holding it for read"
        else:
            msg = (f"{_owner_title(who)} calls up_write({self.name}) but "
                   f"{'nobody' if self.writer is None else _owner_title(self.writer)} "
                   f"holds it for write")
        current_simulation().fail(UnlockNotOwner(msg))


# ------------------------------------------------------------------- lockdep


class _Held:
    __slots__ = ("lock", "site", "step", "read", "nest", "cls")

    def __init__(self, lock: _Lock, site: str, step_i: int, read: bool,
                 cls: str | None = None) -> None:
        self.lock = lock
        self.site = site
        self.step = step_i
        self.read = read
        #: the lockdep class of this acquisition: the lock's, or "cls/N" when
        #: taken with a nesting subclass (spin_lock_nested, down_write_nested)
        self.cls = cls or lock.cls
        #: the nest_lock this lock was taken under (spin_lock_nest_lock)
        self.nest: _Lock | None = None

    def describe(self) -> str:
        mode = " (read)" if self.read else ""
        return f"{self.lock.kind} {self.lock.name}{mode} taken at #{self.step} {self.site!r}"

    __str__ = describe


class _Edge:
    __slots__ = ("held_site", "taken_site", "sim", "choices")

    def __init__(self, held_site: str, taken_site: str, sim: Simulation,
                 choices: tuple[int, ...]) -> None:
        self.held_site = held_site
        self.taken_site = taken_site
        self.sim = sim
        self.choices = choices


class LockdepGraph:
    """Lock-class dependencies: ``edges[a][b]`` = b was taken while a was held."""

    def __init__(self) -> None:
        self.edges: dict[str, dict[str, _Edge]] = {}

    def path(self, src: str, dst: str) -> list[str] | None:
        """A chain of classes src -> ... -> dst, or None."""
        seen = {src}
        stack: list[tuple[str, list[str]]] = [(src, [src])]
        while stack:
            node, chain = stack.pop()
            if node == dst:
                return chain
            for nxt in self.edges.get(node, {}):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, chain + [nxt]))
        return None


def _graph(sim: Simulation) -> LockdepGraph:
    g = sim.exploration.get("lockdep")
    if not isinstance(g, LockdepGraph):
        g = sim.exploration["lockdep"] = LockdepGraph()
    return g


def _held(cpu: CPU) -> list[_Held]:
    h: list[_Held] | None = cpu.data.get("held")
    if h is None:
        h = cpu.data["held"] = []
        sim = cpu.sim
        if not sim.data.get("lockdep_hooked"):
            sim.data["lockdep_hooked"] = True
            sim.on_cpu_exit(_check_exit)
    return h


def _sync_engine_view(cpu: CPU) -> None:
    # CPU.held is lockdep's own list: its entries print as their
    # description in deadlock reports, and cost nothing until then
    held = cpu.data.get("held")
    if held is not None and cpu.held is not held:
        cpu.held = held


def _check_exit(cpu: CPU) -> None:
    held = cpu.data.get("held")
    if held:
        raise LockHeldAtExit(
            f"{cpu.title} finished holding " + "; ".join(h.describe() for h in held))


def _site(cpu: CPU) -> str:
    return cpu.pending[0]


def _subclass(lock: _Lock, subclass: int) -> str:
    """The lockdep class of ``lock`` taken with a nesting ``subclass``."""
    return lock.cls if not subclass else f"{lock.cls}/{subclass}"


def _lockdep_acquire(cpu: CPU, lock: _Lock, *, read: bool = False, trylock: bool = False,
                     nest_lock: _Lock | None = None, site: str | None = None,
                     subclass: int = 0) -> None:
    """Check and record an acquisition that is about to wait for ``lock``.

    ``site`` is the acquisition's label when the check runs before that
    step (at the attempt, in the step that leads to it); by default the
    running step's."""
    sim = cpu.sim
    lock_cls = _subclass(lock, subclass)
    held = _held(cpu)
    site = site if site is not None else _site(cpu)
    for h in held:
        if h.lock is lock:
            if read and h.read and isinstance(lock, RwSemaphore) and lock.queued == 0:
                continue  # recursive read without a queued writer cannot deadlock here
            sim.fail(SelfDeadlock(
                f"{cpu.title} takes {lock.kind} {lock.name} at #{sim.steps - 1} {site!r} but "
                f"already holds it ({h.describe()}): self-deadlock"))
    if not trylock:
        for h in held:
            if h.cls == lock_cls:
                if nest_lock is not None and any(x.lock is nest_lock for x in held):
                    continue
                sim.fail(RecursiveLocking(
                    f"possible recursive locking: {cpu.title} takes {lock.kind} {lock.name} "
                    f"(class {lock_cls}) at #{sim.steps - 1} {site!r} while holding "
                    f"{h.describe()} of the same class, without a nest_lock it holds"))
        graph = _graph(sim)
        for h in held:
            a, b = h.cls, lock_cls
            if a == b:
                continue
            if nest_lock is not None and h.nest is nest_lock:
                continue  # locks under one nest_lock: any order (mm_take_all_locks)
            known = graph.edges.get(a, {})
            if b in known:
                continue
            chain = graph.path(b, a)
            if chain is not None:
                first = graph.edges[chain[0]][chain[1]]
                where = "this execution" if first.sim is sim else "an earlier execution"
                exc = LockOrderViolation(
                    f"lock order inversion: {cpu.title} takes {b} at #{sim.steps - 1} {site!r} "
                    f"while holding {a} ({h.describe()}), but {' -> '.join(chain)} was "
                    f"seen in {where}: {chain[1]} taken at {first.taken_site!r} while "
                    f"holding {chain[0]} taken at {first.held_site!r}")
                preludes = []
                for x, y in zip(chain, chain[1:]):
                    e = graph.edges[x][y]
                    if e.sim is not sim and e.choices not in preludes:
                        preludes.append(e.choices)
                exc.prelude = tuple(preludes)  # type: ignore[attr-defined]
                sim.fail(exc)
            graph.edges.setdefault(a, {})[b] = _Edge(
                f"#{h.step} {h.site}", f"#{sim.steps - 1} {site}", sim, tuple(sim.choices))


def _lockdep_acquired(cpu: CPU, lock: _Lock, *, read: bool = False, subclass: int = 0) -> None:
    _held(cpu).append(_Held(lock, _site(cpu), cpu.sim.steps - 1, read, _subclass(lock, subclass)))
    _sync_engine_view(cpu)
    if recording() and lock.released_at is not None:
        annotate("flow", name="lock release -> acquire", src=lock.released_at, object=lock.name)


def _lockdep_release(cpu: CPU, lock: _Lock, *, read: bool = False) -> None:
    held = _held(cpu)
    for k in range(len(held) - 1, -1, -1):
        if held[k].lock is lock and held[k].read == read:
            del held[k]
            _sync_engine_view(cpu)
            if recording():
                lock.released_at = cpu.sim.steps - 1
            return
    cpu.sim.fail(UnlockNotOwner(
        f"{cpu.title} releases {lock.kind} {lock.name} at #{cpu.sim.steps - 1} {_site(cpu)!r} "
        f"but does not hold it"))


def in_atomic(cpu: CPU) -> str | None:
    """Why ``cpu`` may not sleep now, or None."""
    for h in cpu.data.get("held", ()):
        if isinstance(h.lock, SpinLock) and not h.lock.sleeps:
            return f"holding {h.describe()}"
    if cpu.data.get("rcu_nesting", 0):
        return f"inside an RCU read-side section entered at {cpu.data.get('rcu_site')!r}"
    reason = cpu.data.get("atomic_reason")
    if reason:
        return str(reason)
    return None


def might_sleep(what: str) -> None:
    """Report sleeping in atomic context (``might_sleep()``)."""
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        return
    why = in_atomic(cpu)
    if why is not None:
        sim.fail(SleepingWhileAtomic(
            f"{cpu.title} calls {what} (which may sleep) at #{sim.steps - 1} while {why}"))


# ------------------------------------------------------- lock-guarded data
#
# The kernel documents which lock protects which field ("anon_vma->lock
# protects the list", "the PTL protects the pte", "mmap_sem protects the
# vma list") and, since the lockdep era, asserts it (lockdep_assert_held,
# i_mmap_assert_locked, mmap_assert_locked; Clang's __guarded_by context
# analysis in recent kernels).  Here the emulated code states the same
# facts once, next to the data, with ``guarded_by``; the lockset checker
# (mmemu.check.lockset) holds every access a step declares to them.


class Guard:
    """``lock_of(obj)`` guards the field ``field`` of ``cls`` objects.

    ``lock_of`` returns the lock, or None when the access needs no lock at
    this moment (the object is private to its last user: an mm whose
    mm_users reached 0).  ``reads``: whether a read needs the lock too (a
    pte is read locklessly by the MMU and gup-fast; only its writers must
    hold the PTL).  A read may hold a rwsem for read; a write must hold the
    lock exclusively.  ``reads_also``: the lockdep class of a lock that
    serialises the writers of the part a lockless reader looks at, so that
    holding it is enough for a read (mm_take_all_locks tests the LSB of
    ``anon_vma->head.next`` without ``anon_vma->lock``: only holders of
    ``mm_all_locks_mutex`` change that bit)."""

    __slots__ = ("cls", "field", "lock_of", "reads", "reads_also", "why")

    def __init__(self, cls: type, field: str, lock_of: Callable[[Any], Any], reads: bool,
                 why: str, reads_also: str | None = None) -> None:
        self.cls = cls
        self.field = field
        self.lock_of = lock_of
        self.reads = reads
        self.reads_also = reads_also
        self.why = why


#: (class, field) -> its guard; see guarded_by
GUARDS: dict[tuple[type, str], Guard] = {}


def guarded_by(cls: type, field: str, lock_of: Callable[[Any], Any], *, reads: bool = True,
               reads_also: str | None = None, why: str = "",
               stores: Iterable[str] = ()) -> Guard:
    """Declare that ``lock_of(obj)`` protects the access key ``(obj, field, ...)``
    of every ``cls`` object (a step's ``reads``/``writes`` entry).

    ``stores``: attributes of ``cls`` whose assignment is a write to
    ``(obj, field)``, checked where the assignment runs (a ``GuardedList``
    does the same for a list's changes).  The step's declared accesses say
    what the step is *about* to do; the store is what it does, and a store
    that runs after the unlock that followed its step is caught there."""
    g = GUARDS[(cls, field)] = Guard(cls, field, lock_of, reads, why, reads_also)
    _GUARD_CACHE.clear()
    for attr in stores:
        _guard_stores(cls, attr, field)
    return g


class _Marked(tuple):  # type: ignore[type-arg]
    """See READ_ONCE."""

    __slots__ = ()


def READ_ONCE(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The access key ``key`` read with READ_ONCE, as a lockless reader of a
    guarded field does (``wait_event(wq, READ_ONCE(seq) != old)``).  It is
    equal to ``key`` -- the search orders it as the same access -- but the
    lockset checker leaves it alone, as KCSAN leaves marked accesses alone:
    the reader is written to tolerate a concurrent writer."""
    return _Marked(key)


class _SlotStore:
    """Stands in for a ``__slots__`` attribute of a guarded class: reads go
    to the slot, each assignment is reported as a write to the guarded key."""

    __slots__ = ("slot", "field", "what")

    def __init__(self, slot: Any, field: str, what: str) -> None:
        self.slot = slot
        self.field = field
        self.what = what

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return self.slot.__get__(obj, owner)

    def __set__(self, obj: Any, value: Any) -> None:
        self.slot.__set__(obj, value)
        wrote((obj, self.field), self.what)


class _DictStore:
    """As _SlotStore for a class whose instances have a ``__dict__``: no
    ``__get__``, so reads find the value in the instance dict at full speed."""

    __slots__ = ("name", "field", "what")

    def __init__(self, name: str, field: str, what: str) -> None:
        self.name = name
        self.field = field
        self.what = what

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value
        wrote((obj, self.field), self.what)


def _guard_stores(cls: type, attr: str, field: str) -> None:
    what = f"{cls.__name__}.{attr} = ..."
    current = cls.__dict__.get(attr)
    if isinstance(current, (_SlotStore, _DictStore)):
        return
    if current is not None and hasattr(current, "__set__"):
        setattr(cls, attr, _SlotStore(current, field, what))
    elif current is None:
        setattr(cls, attr, _DictStore(attr, field, what))
    else:
        raise TypeError(f"guarded_by: {cls.__name__}.{attr} is a class attribute, not a store")


class GuardedList(list):  # type: ignore[type-arg]
    """A list whose every change is a write to the guarded access key
    ``(owner, field)``, reported where the change runs (see ``guarded_by``'s
    ``stores``): ``self.list = GuardedList(self, "list")``.  Reads and
    iteration are a plain list's.  The owner is held weakly (its class needs
    a ``__weakref__`` slot if it has ``__slots__``), so no reference cycle
    keeps an execution's objects alive."""

    __slots__ = ("_owner", "_field")

    def __init__(self, owner: Any, field: str, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self._owner = weakref.ref(owner)
        self._field = field

    def _wrote(self, what: str) -> None:
        owner = self._owner()
        if owner is not None:
            wrote((owner, self._field), f"{self._field}.{what}")

    def append(self, x: Any) -> None:
        self._wrote("append")
        super().append(x)

    def insert(self, i: Any, x: Any) -> None:
        self._wrote("insert")
        super().insert(i, x)

    def remove(self, x: Any) -> None:
        self._wrote("remove")
        super().remove(x)

    def pop(self, i: Any = -1) -> Any:
        self._wrote("pop")
        return super().pop(i)

    def clear(self) -> None:
        self._wrote("clear")
        super().clear()

    def extend(self, xs: Iterable[Any]) -> None:
        self._wrote("extend")
        super().extend(xs)

    def sort(self, *a: Any, **kw: Any) -> None:
        self._wrote("sort")
        super().sort(*a, **kw)

    def reverse(self) -> None:
        self._wrote("reverse")
        super().reverse()

    def __setitem__(self, i: Any, x: Any) -> None:
        self._wrote("__setitem__")
        super().__setitem__(i, x)

    def __delitem__(self, i: Any) -> None:
        self._wrote("__delitem__")
        super().__delitem__(i)

    def __iadd__(self, xs: Iterable[Any]) -> GuardedList:  # type: ignore[misc]
        self._wrote("+=")
        super().__iadd__(xs)
        return self


_GUARD_CACHE: dict[tuple[type, str], Guard | None] = {}


def guard_of(obj: Any, field: str) -> Guard | None:
    """The guard of ``(obj, field)``: ``obj``'s class or one of its bases."""
    t = type(obj)
    try:
        return _GUARD_CACHE[(t, field)]
    except KeyError:
        pass
    g = None
    for base in t.__mro__:
        g = GUARDS.get((base, field))
        if g is not None:
            break
    _GUARD_CACHE[(t, field)] = g
    return g


def holds_class(cpu: CPU, lock_cls: str) -> bool:
    """Does ``cpu`` hold a lock of the lockdep class ``lock_cls``?"""
    return any(h.lock.cls == lock_cls for h in cpu.data.get("held", ()))


def held_mode(cpu: CPU, lock: Any) -> str | None:
    """How ``cpu`` holds ``lock``: "write" (exclusively), "read", or None."""
    mode = None
    for h in cpu.data.get("held", ()):
        if h.lock is lock:
            if not h.read:
                return "write"
            mode = "read"
    return mode


# ------------------------------------------------------------------ spinlock


def _owner_title(owner: Any) -> str:
    return owner.title if isinstance(owner, CPU) else str(owner)


def _nest(cpu: CPU, nest_lock: _Lock | None) -> None:
    if nest_lock is not None:
        _held(cpu)[-1].nest = nest_lock


async def _lock(lock: SpinLock | Mutex, op: str, label: str | None,
                nest_lock: _Lock | None, subclass: int = 0) -> None:
    """Take an exclusive lock: one step, enabled while nobody holds it."""
    label = label or f"{op}({lock.name})"
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        _setup_take(lock)
        return
    # lockdep looks at the attempt, before the CPU may have to wait
    _lockdep_acquire(cpu, lock, nest_lock=nest_lock, site=label, subclass=subclass)
    await Lock.acquire(lock, label)
    _lockdep_acquired(cpu, lock, subclass=subclass)
    _nest(cpu, nest_lock)


async def _trylock(lock: SpinLock | Mutex, op: str, label: str | None) -> bool:
    ok = await Lock.try_acquire(lock, label or f"{op}({lock.name})")
    cpu = current_simulation().running
    if ok and cpu is not None:
        _lockdep_acquire(cpu, lock, trylock=True)
        _lockdep_acquired(cpu, lock)
    return ok


async def _unlock(lock: SpinLock | Mutex, op: str, label: str | None) -> None:
    await Lock.release(lock, label or f"{op}({lock.name})")


def _setup_take(lock: SpinLock | Mutex) -> None:
    if lock.owner is not None:
        raise InvariantViolation(f"scenario setup takes {lock.kind} {lock.name} which is held")
    lock.owner = SETUP


async def spin_lock(lock: SpinLock, *, label: str | None = None,
                    nest_lock: _Lock | None = None) -> None:
    """Take ``lock``; the CPU is not enabled while another CPU holds it."""
    await _lock(lock, "spin_lock", label, nest_lock)


async def spin_lock_nest_lock(lock: SpinLock, nest_lock: _Lock, *, label: str | None = None) -> None:
    """Take ``lock``; lockdep accepts many locks of its class while
    ``nest_lock`` is held (mm_take_all_locks under mmap_sem)."""
    await _lock(lock, "spin_lock", label or f"spin_lock_nest_lock({lock.name})", nest_lock)


SINGLE_DEPTH_NESTING = 1


async def spin_lock_nested(lock: SpinLock, subclass: int, *, label: str | None = None) -> None:
    """Take ``lock`` as lockdep subclass ``subclass`` (``SINGLE_DEPTH_NESTING``):
    the second lock of one class that a path takes in a fixed order, e.g.
    copy_pte_range's source PTL under the destination's."""
    await _lock(lock, "spin_lock", label or f"spin_lock_nested({lock.name})", None, subclass)


async def spin_trylock(lock: SpinLock, *, label: str | None = None) -> bool:
    return await _trylock(lock, "spin_trylock", label)


async def spin_unlock(lock: SpinLock, *, label: str | None = None) -> None:
    await _unlock(lock, "spin_unlock", label)


def spin_is_locked(lock: SpinLock) -> bool:
    return lock.owner is not None


# --------------------------------------------------------------------- mutex


async def mutex_lock(lock: Mutex, *, label: str | None = None,
                     nest_lock: _Lock | None = None, contended: str | None = None) -> None:
    """Take a sleeping lock (``might_sleep``): one step, enabled while the
    mutex is free.

    ``contended``: a coverage event (``reach``) for a caller whose suite
    must see the mutex waited for.  As one step, "waited" and "came after
    the holder" are the same trace, so the search need not produce the
    former.  With ``contended`` the mutex is taken as the kernel's
    mutex_lock does it: the fast path (``__mutex_trylock_fast``, a step
    that takes a free mutex), and when that fails the event, then the slow
    path (a second step, enabled once the mutex is free).  Only a contended
    acquisition pays the second step."""
    sim = _sim_or_none()
    cpu = sim.running if sim is not None else None
    if cpu is not None:
        might_sleep(f"mutex_lock({lock.name})")
    if contended is None or cpu is None:
        await _lock(lock, "mutex_lock", label, nest_lock)
        return
    label = label or f"mutex_lock({lock.name})"
    _lockdep_acquire(cpu, lock, nest_lock=nest_lock, site=label)
    if not await Lock.try_acquire(lock, label):
        reach(contended)
        # the label the waiter's acquisition always had in reports
        await Lock.acquire(lock, f"mutex_lock({lock.name}) acquired")
    _lockdep_acquired(cpu, lock)
    _nest(cpu, nest_lock)


async def mutex_trylock(lock: Mutex, *, label: str | None = None) -> bool:
    return await _trylock(lock, "mutex_trylock", label)


async def mutex_unlock(lock: Mutex, *, label: str | None = None) -> None:
    await _unlock(lock, "mutex_unlock", label)


def mutex_is_locked(lock: Mutex) -> bool:
    return lock.owner is not None


# ---------------------------------------------------------------- rw_semaphore


async def down_read(sem: RwSemaphore, *, label: str | None = None) -> None:
    """One step, enabled while no writer holds ``sem`` or waits for it."""
    label = label or f"down_read({sem.name})"
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        await RwLock.acquire_read(sem, label)
        return
    might_sleep(f"down_read({sem.name})")
    _lockdep_acquire(cpu, sem, read=True, site=label)
    await RwLock.acquire_read(sem, label)
    _lockdep_acquired(cpu, sem, read=True)


async def down_write(sem: RwSemaphore, *, label: str | None = None, subclass: int = 0) -> None:
    """One step if ``sem`` is free; else that step queues the writer (new
    readers wait from then on) and a second one takes ``sem`` once free."""
    label = label or f"down_write({sem.name})"
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        await RwLock.acquire_write(sem, label)
        return
    might_sleep(f"down_write({sem.name})")
    _lockdep_acquire(cpu, sem, site=label, subclass=subclass)
    await RwLock.acquire_write(sem, label, queued_label=f"down_write({sem.name}) acquired")
    _lockdep_acquired(cpu, sem, subclass=subclass)


async def down_write_nested(sem: RwSemaphore, subclass: int, *, label: str | None = None) -> None:
    """``down_write`` as lockdep subclass ``subclass`` (dup_mmap takes the new
    mm's mmap_sem under the old one's: SINGLE_DEPTH_NESTING)."""
    await down_write(sem, label=label or f"down_write_nested({sem.name})", subclass=subclass)


async def down_read_trylock(sem: RwSemaphore, *, label: str | None = None) -> bool:
    ok = await RwLock.try_acquire_read(sem, label or f"down_read_trylock({sem.name})")
    cpu = current_simulation().running
    if ok and cpu is not None:
        _lockdep_acquire(cpu, sem, read=True, trylock=True)
        _lockdep_acquired(cpu, sem, read=True)
    return ok


async def down_write_trylock(sem: RwSemaphore, *, label: str | None = None) -> bool:
    ok = await RwLock.try_acquire_write(sem, label or f"down_write_trylock({sem.name})")
    cpu = current_simulation().running
    if ok and cpu is not None:
        _lockdep_acquire(cpu, sem, trylock=True)
        _lockdep_acquired(cpu, sem)
    return ok


async def up_read(sem: RwSemaphore, *, label: str | None = None) -> None:
    await RwLock.release_read(sem, label or f"up_read({sem.name})")


async def up_write(sem: RwSemaphore, *, label: str | None = None) -> None:
    await RwLock.release_write(sem, label or f"up_write({sem.name})")


def rwsem_is_locked(sem: RwSemaphore) -> bool:
    return sem.writer is not None or bool(sem.readers)


def rwsem_is_write_locked_by(sem: RwSemaphore, cpu: Any) -> bool:
    return sem.writer is cpu


# ---------------------------------------------------- wait queues, completions


class WaitQueueHead:
    """``wait_queue_head_t``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__mmemu_name__ = name


async def wait_event(wq: WaitQueueHead, condition: Callable[[], bool], *,
                     label: str | None = None, reads: Iterable[Hashable] = ()) -> None:
    """Sleep until ``condition()`` holds.  The test and the sleep are one
    step, so a wake-up between them cannot be lost (prepare_to_wait).  A
    wake-up that leaves ``condition()`` false does not wake the CPU (it
    would only test and sleep again)."""
    might_sleep(f"wait_event({wq.name})")
    r = tuple(reads)
    await step(label or f"wait_event({wq.name})", reads=r, writes=(wq,))
    while not condition():
        await block(wq, f"{label or 'wait_event(' + wq.name + ')'} woken", reads=r,
                    writes=(wq,), why=f"wait queue {wq.name}", until=condition)


async def wake_up_all(wq: WaitQueueHead, *, label: str | None = None) -> None:
    await step(label or f"wake_up_all({wq.name})", writes=(wq,))
    wake_all(wq)


wake_up = wake_up_all


class Completion:
    """``struct completion``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = 0
        self.__mmemu_name__ = name


async def complete(c: Completion, *, label: str | None = None) -> None:
    await step(label or f"complete({c.name})", writes=(c,))
    c.done += 1
    wake_all(c)


async def complete_all(c: Completion, *, label: str | None = None) -> None:
    await step(label or f"complete_all({c.name})", writes=(c,))
    c.done = 1 << 30
    wake_all(c)


async def wait_for_completion(c: Completion, *, label: str | None = None) -> None:
    might_sleep(f"wait_for_completion({c.name})")
    await step(label or f"wait_for_completion({c.name})", writes=(c,))
    while c.done == 0:
        await block(c, f"wait_for_completion({c.name}) done", writes=(c,),
                    why=f"completion {c.name}", until=lambda: c.done > 0)
    c.done -= 1


__all__ = [
    "Completion", "LockHeldAtExit", "LockOrderViolation", "LockdepGraph", "LockdepViolation",
    "Mutex", "RecursiveLocking", "RwSemaphore", "SETUP", "SelfDeadlock", "SleepingWhileAtomic",
    "SpinLock", "UnlockNotOwner", "WaitQueueHead", "complete", "complete_all", "down_read",
    "SINGLE_DEPTH_NESTING", "down_read_trylock", "down_write", "down_write_nested",
    "down_write_trylock", "in_atomic", "might_sleep",
    "mutex_is_locked", "mutex_lock", "mutex_trylock", "mutex_unlock", "rwsem_is_locked",
    "rwsem_is_write_locked_by", "spin_is_locked", "spin_lock", "spin_lock_nest_lock", "spin_lock_nested",
    "spin_trylock", "spin_unlock", "up_read", "up_write", "wait_event", "wait_for_completion",
    "wake_up", "wake_up_all", "fail", "GUARDS", "Guard", "GuardedList", "READ_ONCE", "guard_of", "guarded_by", "held_mode", "holds_class",
]
