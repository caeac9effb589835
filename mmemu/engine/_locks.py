"""Locks the scheduler understands: an acquisition is one step.

Design
------
A CPU that reaches ``await lock.acquire()`` has reached a yield point whose
step *is* the acquisition: it declares a write to the lock's key and waits to
be chosen.  If the lock is free the CPU is enabled (runnable) like at any
``step``; if it is held the CPU is *not enabled*: it leaves the runnable set,
and the release puts it back without a step of its own.  When one of several
enabled waiters is chosen and acquires, the others are not enabled any more.
So acquiring costs exactly one step whether the lock was free or not, and a
CPU spends no step spinning, waking or retrying: the states DPOR must
distinguish are the orders of the critical sections and nothing else.

Partial-order reduction (``_strategies``) needs two facts beyond the
accesses, recorded per step in ``Simulation.ops``:

- which steps are operations of which lock (``op[1]`` is the lock): a
  release and the acquisition it enables are ordered (happens-before), but
  they are not a *race* -- the acquisition could not have run first;
- the *partner* of an acquisition: the step that began the last period in
  which this acquisition could not have run (the last holder's acquisition).
  That is the race to reverse: "this CPU's critical section before that
  one's", and in the state before the partner the acquisition was enabled,
  so the reversed order can always be run.  A CPU still waiting when the
  execution ends races with the partner of the period it waits on (it would
  have acquired had it come first: Nidhugg's "lock fail" race).

``RwLock`` is a reader-writer lock with writer preference (``rw_semaphore``
in 2.6.27: once a writer waits, new readers queue behind it).  Readers hold
per-CPU keys, so readers never conflict with each other; a writer reads them
all.  A writer that finds the lock held *queues* in a step of its own (the
queue is state that readers see), then acquires in a second step when the
lock is free: only a contended writer pays the extra step.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ._errors import Deadlock, ModelError
from ._execution import (
    BLOCKED,
    CPU,
    RUNNABLE,
    Simulation,
    _Aborted,
    _sim_or_none,
    step,
)

#: owner when the scenario's own code (setup) holds a lock
SETUP = "setup"

#: Simulation.ops kinds of lock steps
ACQUIRE = "acquire"   # a blocking acquisition (the race rule above applies)
RELEASE = "release"
TRY = "try"           # a trylock, or a writer's first attempt (always enabled)

_EMPTY: tuple[Hashable, ...] = ()


def _title(owner: Any) -> str:
    return owner.title if isinstance(owner, CPU) else str(owner)


def _cpu_or_setup(name: str, what: str) -> tuple[Simulation | None, CPU | None]:
    sim = _sim_or_none()
    if sim is None:
        raise ModelError(f"{what}({name}) called outside an execution")
    if sim.running is not None and sim.aborting:
        raise _Aborted()
    return sim, sim.running


def _tuple(x: Iterable[Hashable]) -> tuple[Hashable, ...]:
    return x if type(x) is tuple else tuple(x)


class _LockBase:
    """What Lock and RwLock share: the CPUs whose next step acquires."""

    kind = "lock"

    def __init__(self, name: str) -> None:
        self.name = name
        self.__mmemu_name__ = name
        #: CPUs whose pending step acquires this lock, with the mode
        self._waiters: list[tuple[CPU, str]] = []

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"

    # subclasses: may `mode` be acquired now?  who blocks it?
    def _available(self, mode: str) -> bool:
        raise NotImplementedError

    def describe_wait(self, cpu: CPU, mode: str) -> str:
        raise NotImplementedError

    def period_start(self, mode: str) -> int:
        """The step that began the period in which ``mode`` cannot be
        acquired (-1: none, or the scenario's setup)."""
        raise NotImplementedError

    def last_period_start(self, mode: str) -> int:
        """The start of the last such period that has ended (-1: none)."""
        raise NotImplementedError

    def race_partner(self, mode: str) -> int:
        """The race of a pending acquisition in ``mode``: the start of the
        period it waits on, or of the last one if the lock is available."""
        if self._available(mode):
            return self.last_period_start(mode)
        return self.period_start(mode)

    async def _acquire_point(self, sim: Simulation, cpu: CPU, mode: str, label: str,
                             reads: tuple[Hashable, ...], writes: tuple[Hashable, ...]) -> None:
        """Make the acquisition ``cpu``'s next step and wait until it runs."""
        cpu.pending = (label, reads, writes)
        cpu.lock_wait = (self, mode)
        self._waiters.append((cpu, mode))
        if not self._available(mode):
            sim._disable(cpu)
        await sim._yield_or_wait(cpu)
        # chosen: the acquisition runs now (the lock is available, or the
        # engine would not have chosen this CPU)
        cpu.lock_wait = None
        for k, (c, _m) in enumerate(self._waiters):
            if c is cpu:
                del self._waiters[k]
                break

    def _update_waiters(self, sim: Simulation) -> None:
        """After a state change: enable the waiters that can now acquire,
        disable the ones that cannot."""
        for c, mode in self._waiters:
            ok = self._available(mode)
            if c.state == RUNNABLE:
                if not ok:
                    sim._disable(c)
            elif c.state == BLOCKED and ok:
                sim._enable(c)


class Lock(_LockBase):
    """A mutual-exclusion lock the scheduler understands (see the module notes).

    ``acquire`` is one step (the CPU is not enabled while another holds the
    lock), ``release`` is one step, ``try_acquire`` is one step that never
    waits.  Each declares a write to ``key`` (the lock itself unless given)
    plus the accesses passed in, which cover the code that runs after it up
    to the next yield point.  Called from the scenario's own code (setup),
    they take effect at once.

    No guard rails beyond these: releasing a lock the CPU does not hold is a
    ModelError (subclasses report it their own way), and a CPU that finishes
    holding a lock leaves it held.
    """

    kind = "lock"

    def __init__(self, name: str, *, key: Hashable | None = None) -> None:
        super().__init__(name)
        #: the access key its operations declare
        self.key: Hashable = self if key is None else key
        #: the CPU holding it, SETUP, or None
        self.owner: CPU | str | None = None
        self._start = -1       # step that took it (start of the holding period)
        self._prev = -1        # start of the last holding period that ended

    @property
    def locked(self) -> bool:
        return self.owner is not None

    def _available(self, mode: str) -> bool:
        return self.owner is None

    def period_start(self, mode: str) -> int:
        return self._start

    def last_period_start(self, mode: str) -> int:
        return self._prev

    def describe_wait(self, cpu: CPU, mode: str) -> str:
        return f"{self.kind} {self.name} held by {_title(self.owner)}"

    # --------------------------------------------------------------- steps

    async def acquire(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                      writes: Iterable[Hashable] = ()) -> None:
        """Take the lock: one step, enabled only while the lock is free."""
        label = label or f"acquire({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "acquire")
        if cpu is None:
            if self.owner is not None:
                raise ModelError(f"the scenario's setup takes {self.kind} {self.name}, "
                                 f"which {_title(self.owner)} holds")
            self.owner = SETUP
            return
        assert sim is not None
        if self.owner is cpu:
            sim.fail(Deadlock(f"{cpu.title} takes {self.kind} {self.name} at {label!r} but "
                              f"already holds it: it would wait for itself forever"))
        self.before_acquire(cpu, label)
        await self._acquire_point(sim, cpu, "x", label, _tuple(reads),
                                  _tuple(writes) + (self.key,))
        self._take(sim, cpu, ACQUIRE)

    async def try_acquire(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                          writes: Iterable[Hashable] = ()) -> bool:
        """Take the lock if it is free: one step that never waits."""
        label = label or f"try_acquire({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "try_acquire")
        if cpu is None:
            if self.owner is not None:
                return False
            self.owner = SETUP
            return True
        assert sim is not None
        await step(label, reads, _tuple(writes) + (self.key,))
        if sim.record:
            sim.ops[-1] = (TRY, self)
        if self.owner is not None:
            return False
        self.before_acquire(cpu, label, trylock=True)
        self._take(sim, cpu, TRY)
        return True

    async def release(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                      writes: Iterable[Hashable] = ()) -> None:
        """Give the lock up: one step; the CPUs waiting for it become enabled."""
        label = label or f"release({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "release")
        if cpu is None:
            self.owner = None
            self._update_waiters_setup()
            return
        assert sim is not None
        await step(label, reads, _tuple(writes) + (self.key,))
        if sim.record:
            sim.ops[-1] = (RELEASE, self)
        if self.owner is not cpu:
            self.release_not_owner(cpu, label)
        self.before_release(cpu)
        self.owner = None
        self._prev = self._start
        self._start = -1
        self._update_waiters(sim)

    def _take(self, sim: Simulation, cpu: CPU, kind: str) -> None:
        self.owner = cpu
        at = sim.steps - 1
        if kind == ACQUIRE and sim.record:
            sim.ops[-1] = (ACQUIRE, self, (self._prev,))
        self._start = at
        self._update_waiters(sim)
        self.after_acquire(cpu)

    def _update_waiters_setup(self) -> None:
        sim = _sim_or_none()
        if sim is not None:
            self._update_waiters(sim)

    # ---------------------------------------------- hooks for kernel locks

    def before_acquire(self, cpu: CPU, label: str, *, trylock: bool = False) -> None:
        """Called when ``cpu`` reaches an acquisition (before it may wait)."""

    def after_acquire(self, cpu: CPU) -> None:
        """Called in the acquiring step, once ``cpu`` holds the lock."""

    def before_release(self, cpu: CPU) -> None:
        """Called in the releasing step, before the lock is free."""

    def release_not_owner(self, cpu: CPU, label: str) -> None:
        raise ModelError(f"{cpu.title} releases {self.kind} {self.name} at {label!r} but "
                         f"{'nobody' if self.owner is None else _title(self.owner)} holds it")


class RwLock(_LockBase):
    """A reader-writer lock with writer preference (see the module notes).

    ``acquire_read`` is one step, enabled while no writer holds the lock or
    waits for it.  ``acquire_write`` is one step when the lock is free; when
    it is held, that step queues the writer (new readers wait from then on)
    and a second step, enabled once the lock is free, takes it.
    ``try_acquire_read`` / ``try_acquire_write`` never wait.  Readers'
    operations touch a key of their own CPU, so readers are independent of
    each other; writers' operations read every reader key.
    """

    kind = "rwlock"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.writer: CPU | str | None = None
        self.readers: list[CPU | str] = []
        #: writers that have queued and not acquired yet
        self.queued = 0
        self.wkey: Hashable = (self, "writer")
        self._rkeys: dict[int, Hashable] = {}
        self._all: tuple[Hashable, ...] | None = None
        self._sim: Simulation | None = None
        # starts of the periods in which readers / writers cannot acquire
        self._rstart = -1
        self._wstart = -1
        self._rprev = -1
        self._wprev = -1

    def reader_key(self, cpu_id: int) -> Hashable:
        k = self._rkeys.get(cpu_id)
        if k is None:
            k = self._rkeys[cpu_id] = (self, f"reader{cpu_id}")
        return k

    def _reader_keys(self, sim: Simulation) -> tuple[Hashable, ...]:
        if self._all is None or self._sim is not sim or len(self._all) != len(sim.cpu_list):
            self._sim = sim
            self._all = tuple(self.reader_key(c.id) for c in sim.cpu_list)
        return self._all

    def _available(self, mode: str) -> bool:
        if mode == "r":
            return self.writer is None and self.queued == 0
        return self.writer is None and not self.readers

    def period_start(self, mode: str) -> int:
        return self._rstart if mode == "r" else self._wstart

    def last_period_start(self, mode: str) -> int:
        return self._rprev if mode == "r" else self._wprev

    def describe_wait(self, cpu: CPU, mode: str) -> str:
        if mode == "r":
            holder = (_title(self.writer) if self.writer is not None
                      else "a queued writer")
            return f"{self.kind} {self.name} for read (held for write by {holder})"
        who = (_title(self.writer) if self.writer is not None
               else ", ".join(_title(r) for r in self.readers) + " (read)")
        return f"{self.kind} {self.name} for write (held by {who})"

    def _changed(self, sim: Simulation | None, ra: bool, wa: bool) -> None:
        """Track the periods of unavailability, then update the waiters."""
        at = sim.steps - 1 if sim is not None and sim.running is not None else -1
        ra2, wa2 = self._available("r"), self._available("w")
        if ra and not ra2:
            self._rstart = at
        elif ra2 and not ra:
            self._rprev, self._rstart = self._rstart, -1
        if wa and not wa2:
            self._wstart = at
        elif wa2 and not wa:
            self._wprev, self._wstart = self._wstart, -1
        if sim is not None:
            self._update_waiters(sim)

    def _state(self) -> tuple[bool, bool]:
        return self._available("r"), self._available("w")

    # ------------------------------------------------------------- readers

    async def acquire_read(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                           writes: Iterable[Hashable] = ()) -> None:
        label = label or f"acquire_read({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "acquire_read")
        if cpu is None:
            if self.writer is not None:
                raise ModelError(f"the scenario's setup takes {self.kind} {self.name} for read "
                                 f"while {_title(self.writer)} holds it for write")
            st = self._state()
            self.readers.append(SETUP)
            self._changed(sim, *st)
            return
        assert sim is not None
        self.before_acquire(cpu, label, read=True)
        await self._acquire_point(sim, cpu, "r", label,
                                  _tuple(reads) + (self.wkey,),
                                  _tuple(writes) + (self.reader_key(cpu.id),))
        st = self._state()
        if sim.record:
            sim.ops[-1] = (ACQUIRE, self, (self._rprev,))
        self.readers.append(cpu)
        self._changed(sim, *st)
        self.after_acquire(cpu, read=True)

    async def try_acquire_read(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                               writes: Iterable[Hashable] = ()) -> bool:
        label = label or f"try_acquire_read({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "try_acquire_read")
        if cpu is not None:
            assert sim is not None
            await step(label, _tuple(reads) + (self.wkey,),
                   _tuple(writes) + (self.reader_key(cpu.id),))
            if sim.record:
                sim.ops[-1] = (TRY, self)
        if not self._available("r"):
            return False
        st = self._state()
        if cpu is not None:
            assert sim is not None
            self.before_acquire(cpu, label, read=True, trylock=True)
        self.readers.append(cpu if cpu is not None else SETUP)
        self._changed(sim, *st)
        if cpu is not None:
            self.after_acquire(cpu, read=True)
        return True

    async def release_read(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                           writes: Iterable[Hashable] = ()) -> None:
        label = label or f"release_read({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "release_read")
        me: CPU | str = cpu if cpu is not None else SETUP
        if cpu is not None:
            assert sim is not None
            await step(label, reads, _tuple(writes) + (self.reader_key(cpu.id),))
            if sim.record:
                sim.ops[-1] = (RELEASE, self)
        if me not in self.readers:
            self.release_not_owner(me, label, read=True)
            return
        if cpu is not None:
            self.before_release(cpu, read=True)
        st = self._state()
        self.readers.remove(me)
        self._changed(sim, *st)

    # ------------------------------------------------------------- writers

    async def acquire_write(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                            writes: Iterable[Hashable] = (), queued_label: str | None = None) -> None:
        """One step if the lock is free; else that step queues the writer and
        a second one (``queued_label``) takes the lock once it is free."""
        label = label or f"acquire_write({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "acquire_write")
        if cpu is None:
            if self.writer is not None or self.readers:
                raise ModelError(f"the scenario's setup takes {self.kind} {self.name} for write, "
                                 f"which is held")
            st = self._state()
            self.writer = SETUP
            self._changed(sim, *st)
            return
        assert sim is not None
        if self.writer is cpu:
            sim.fail(Deadlock(f"{cpu.title} takes {self.kind} {self.name} for write at {label!r} "
                              f"but already holds it: it would wait for itself forever"))
        self.before_acquire(cpu, label)
        r = _tuple(reads) + self._reader_keys(sim)
        w = _tuple(writes) + (self.wkey,)
        await step(label, r, w)
        if self._available("w"):
            if sim.record:
                sim.ops[-1] = (TRY, self)
            self._take_write(sim, cpu)
            return
        # held: queue (readers that come now wait behind this writer)
        if sim.record:
            sim.ops[-1] = (TRY, self)
        st = self._state()
        self.queued += 1
        self._changed(sim, *st)
        await self._acquire_point(sim, cpu, "w", queued_label or f"{label} acquired", r, w)
        st = self._state()
        self.queued -= 1
        if sim.record:
            # Only the last writer-side period can be a race: readers that
            # held the lock did so before this writer queued (its queueing
            # step read their keys), and no reader acquires while it waits.
            sim.ops[-1] = (ACQUIRE, self, (self._wprev,))
        self._take_write(sim, cpu, st)

    def _take_write(self, sim: Simulation, cpu: CPU, st: tuple[bool, bool] | None = None) -> None:
        if st is None:
            st = self._state()
        self.writer = cpu
        self._changed(sim, *st)
        self.after_acquire(cpu)

    async def try_acquire_write(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                                writes: Iterable[Hashable] = ()) -> bool:
        label = label or f"try_acquire_write({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "try_acquire_write")
        if cpu is not None:
            assert sim is not None
            await step(label, _tuple(reads) + self._reader_keys(sim),
                   _tuple(writes) + (self.wkey,))
            if sim.record:
                sim.ops[-1] = (TRY, self)
        if not self._available("w"):
            return False
        if cpu is not None:
            assert sim is not None
            self.before_acquire(cpu, label, trylock=True)
        st = self._state()
        self.writer = cpu if cpu is not None else SETUP
        self._changed(sim, *st)
        if cpu is not None:
            self.after_acquire(cpu)
        return True

    async def release_write(self, label: str | None = None, *, reads: Iterable[Hashable] = (),
                            writes: Iterable[Hashable] = ()) -> None:
        label = label or f"release_write({self.name})"
        sim, cpu = _cpu_or_setup(self.name, "release_write")
        me: CPU | str = cpu if cpu is not None else SETUP
        if cpu is not None:
            assert sim is not None
            await step(label, reads, _tuple(writes) + (self.wkey,))
            if sim.record:
                sim.ops[-1] = (RELEASE, self)
        if self.writer is not me:
            self.release_not_owner(me, label)
            return
        if cpu is not None:
            self.before_release(cpu)
        st = self._state()
        self.writer = None
        self._changed(sim, *st)

    # ---------------------------------------------- hooks for kernel locks

    def before_acquire(self, cpu: CPU, label: str, *, read: bool = False,
                       trylock: bool = False) -> None:
        """Called when ``cpu`` reaches an acquisition (before it may wait)."""

    def after_acquire(self, cpu: CPU, *, read: bool = False) -> None:
        """Called in the acquiring step, once ``cpu`` holds the lock."""

    def before_release(self, cpu: CPU, *, read: bool = False) -> None:
        """Called in the releasing step, before the lock is given up."""

    def release_not_owner(self, who: CPU | str, label: str, *, read: bool = False) -> None:
        mode = "read" if read else "write"
        raise ModelError(f"{_title(who)} releases {self.kind} {self.name} for {mode} at "
                         f"{label!r} without holding it")


__all__ = ["ACQUIRE", "RELEASE", "SETUP", "TRY", "Lock", "RwLock"]
