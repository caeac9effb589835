"""Lock-guarded data: a field the kernel protects with a lock is never
accessed by two CPUs unless each access holds the lock.

Emulates: what lockdep_assert_held() and the sparse/Clang context
annotations (``__guarded_by``) state in the kernel, checked dynamically as
Eraser's lockset algorithm does (Savage et al., SOSP 1997), over the
accesses the emulated code declares at its yield points.

The emulated kernel declares, next to its data, which lock guards which
access key (``mmemu.kernel.locking.guarded_by``): ``anon_vma->head`` by
``anon_vma->lock``, ``mapping->i_mmap`` by ``i_mmap_lock``, a pte by its PTL,
the vma list by ``mmap_sem``, ``vma->anon_vma`` by ``page_table_lock``.  The
checker watches every step a CPU runs (``Simulation.on_step``) and keeps,
per key of this execution, Eraser's states:

- *exclusive*: only one CPU touched the key so far.  No lock is needed: a
  vma that fork is still building, an anon_vma that a fault has just
  allocated, are not visible to anyone else yet.
- *shared*: a second CPU touched it.  From then on every access must hold
  the guard (a read may hold a rwsem for read; a write needs it
  exclusively), or the execution fails with ``DataRace``, which names both
  accesses.

Why this is worth a checker: a dropped lock around a list walk or a pte
update often has no consequence that the page-state checkers can see in a
small scenario -- the model's list operations are atomic steps, where the
kernel's list_add racing a list walk follows a half-written pointer.  The
kernel catches those with lockdep assertions and KCSAN; so does this.

What it does not do: order accesses by happens-before.  An unguarded access
by the first CPU, followed only later by a second CPU, is not reported in
that order -- but the explorer also runs the order where another CPU got
there first, and then it is.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from mmemu.check import install_once
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import CPU, Simulation
from mmemu.kernel.locking import Guard, guard_of, held_mode, holds_class


class DataRace(InvariantViolation):
    """Two CPUs accessed a lock-guarded field and one of them did not hold
    the lock (a lockdep_assert_held / KCSAN report in the kernel)."""


def _name(obj: Any) -> str:
    return str(getattr(obj, "__mmemu_name__", None) or type(obj).__name__)


def _describe_key(key: tuple[Any, ...]) -> str:
    obj, field = key[0], key[1]
    rest = "".join(f"[{x:#x}]" if isinstance(x, int) else f"[{x}]" for x in key[2:])
    return f"{_name(obj)}->{field}{rest}"


class _KeyState:
    __slots__ = ("owner", "shared", "last")

    def __init__(self, owner: CPU, last: tuple[str, str, int, bool]) -> None:
        #: the only CPU that touched the key so far (until it is shared)
        self.owner = owner
        self.shared = False
        #: (cpu title, step label, step number, write?) of the last access
        self.last = last


def _may_access(cpu: CPU, guard: Guard, lock: Any, write: bool) -> bool:
    """A write needs ``lock`` exclusively; a read needs it in either mode,
    or the guard's ``reads_also`` lock."""
    mode = held_mode(cpu, lock)
    if mode == "write" or (mode == "read" and not write):
        return True
    return not write and guard.reads_also is not None and holds_class(cpu, guard.reads_also)


class LocksetChecker:
    """One per execution (installed by ``boot_checked``)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.keys: dict[Hashable, _KeyState] = {}

    def on_step(self, cpu: CPU, label: str, reads: tuple[Hashable, ...],
                writes: tuple[Hashable, ...]) -> None:
        for key in writes:
            if type(key) is tuple and len(key) > 1:
                self._access(cpu, label, key, True)
        for key in reads:
            if type(key) is tuple and len(key) > 1:
                self._access(cpu, label, key, False)

    def on_write(self, cpu: CPU, key: Hashable, what: str) -> None:
        """A store reported where it runs (guarded_by's ``stores``,
        GuardedList): checked as a write by the step running it."""
        if type(key) is tuple and len(key) > 1:
            self._access(cpu, f"{what}, after {cpu.pending[0]}", key, True)

    def on_load(self, cpu: CPU, key: Hashable, what: str) -> None:
        """A read reported where it runs (ShadowTLB.test_young): checked
        as a read by the step running it."""
        if type(key) is tuple and len(key) > 1:
            self._access(cpu, f"{what}, after {cpu.pending[0]}", key, False)

    def _access(self, cpu: CPU, label: str, key: tuple[Any, ...], write: bool) -> None:
        obj, field = key[0], key[1]
        if type(field) is not str:
            return
        guard = guard_of(obj, field)
        if guard is None:
            return
        sim = self.sim
        here = (cpu.title, label, sim.steps - 1, write)
        st = self.keys.get(key)
        if st is None:
            self.keys[key] = _KeyState(cpu, here)
            return
        if not st.shared:
            if st.owner is cpu:
                st.last = here
                return
            st.shared = True
        if write or guard.reads:
            lock = guard.lock_of(obj)
            if lock is not None and not _may_access(cpu, guard, lock, write):
                self._report(cpu, label, key, write, guard, lock, st)
        st.last = here

    def _report(self, cpu: CPU, label: str, key: tuple[Any, ...], write: bool, guard: Guard,
                lock: Any, st: _KeyState) -> None:
        sim = self.sim
        what = "writes" if write else "reads"
        how = "without holding" if held_mode(cpu, lock) is None else "holding only for read"
        who, other_label, other_step, other_write = st.last
        held = [h.describe() for h in cpu.data.get("held", ())]
        why = f" ({guard.why})" if guard.why else ""
        sim.fail(DataRace(
            f"data race on {_describe_key(key)}: {cpu.title} {what} it at #{sim.steps - 1} "
            f"{label!r} {how} {getattr(lock, 'kind', 'lock')} {getattr(lock, 'name', lock)}, "
            f"which guards it{why}; {who} "
            f"{'wrote' if other_write else 'read'} it at #{other_step} {other_label!r}",
            details=f"{cpu.title} holds: {'; '.join(held) if held else 'nothing'}"))


def install(kernel: Any) -> LocksetChecker | None:
    """Checker installer for ``mmemu.check.boot_checked``."""
    return install_once(kernel, "lockset", _hook)


def _hook(kernel: Any) -> LocksetChecker:
    chk = LocksetChecker(kernel.sim)
    kernel.sim.on_step(chk.on_step)
    kernel.sim.on_write(chk.on_write)
    kernel.sim.on_load(chk.on_load)
    return chk


__all__ = ["DataRace", "LocksetChecker", "install"]
