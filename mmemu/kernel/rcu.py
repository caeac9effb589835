"""RCU and SRCU: read-side sections and grace periods decided by the scheduler.

Emulates: kernel/rcuclassic.c, kernel/srcu.c (2.6.27)

A grace period ends only after every CPU that was inside a read-side section
when it started has left that section.  ``synchronize_rcu`` snapshots the
CPUs inside a section (one step) and, if any, waits until the last of them
has left (one more step, enabled from then on: the readers' unlocks wake it
without a step of their own, and an unlock that leaves others inside does
not wake it at all); a reader that enters after the snapshot is not waited
for.  The scheduler decides when readers leave, so every relative order of
readers and grace periods is explored.

Accesses: each CPU's read-side state is its own object ``(domain, cpu)``, so
readers on different CPUs are independent and only a grace period (which
reads every CPU's state) conflicts with them.

``call_rcu`` callbacks run, in softirq style, inside the step that ends their
grace period (the last ``rcu_read_unlock`` they waited for, or the
``call_rcu`` / ``synchronize_rcu`` / ``rcu_barrier`` that finds no reader
left), and at the end of the execution.  Callbacks are plain functions: they
must not yield.

Classic RCU read sections are atomic context (no sleeping: ``might_sleep``
reports it); SRCU read sections may sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmemu.engine._errors import Deadlock
from mmemu.engine._execution import Simulation, block, current_simulation, step, wake_all
from mmemu.kernel.locking import LockdepViolation, held_mode, might_sleep


class GracePeriodDomain:
    """One RCU flavour: the classic RCU of a simulation, or an srcu_struct."""

    def __init__(self, name: str, *, sleepable: bool) -> None:
        self.name = name
        self.sleepable = sleepable
        self.__mmemu_name__ = name
        self.nesting: dict[int, int] = {}
        self.section: dict[int, int] = {}
        self.callbacks: list[tuple[dict[int, int], Callable[[Any], None], Any]] = []

    def key(self, cpu_id: int) -> tuple[Any, int]:
        return (self, cpu_id)

    def snapshot(self) -> dict[int, int]:
        return {c: self.section[c] for c, n in sorted(self.nesting.items()) if n > 0}

    def still_inside(self, cpu_id: int, section: int) -> bool:
        return self.nesting.get(cpu_id, 0) > 0 and self.section.get(cpu_id) == section

    def run_ready_callbacks(self) -> None:
        ready = [cb for cb in self.callbacks
                 if not any(self.still_inside(c, s) for c, s in cb[0].items())]
        if ready:
            self.callbacks = [cb for cb in self.callbacks if cb not in ready]
            for _snap, fn, arg in ready:
                fn(arg)


def _rcu(sim: Simulation) -> GracePeriodDomain:
    d = sim.data.get("rcu")
    if d is None:
        d = sim.data["rcu"] = GracePeriodDomain("rcu", sleepable=False)
        sim.at_end(lambda s: d.run_ready_callbacks())
    return d


def _all_keys(sim: Simulation, dom: GracePeriodDomain) -> tuple[Any, ...]:
    return tuple(dom.key(c.id) for c in sim.cpu_list)


async def _read_lock(dom: GracePeriodDomain, label: str) -> None:
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        return
    await step(label, writes=(dom.key(cpu.id),))
    n = dom.nesting.get(cpu.id, 0)
    if n == 0:
        dom.section[cpu.id] = dom.section.get(cpu.id, 0) + 1
    dom.nesting[cpu.id] = n + 1
    if not dom.sleepable:
        cpu.data["rcu_nesting"] = n + 1
        if n == 0:
            cpu.data["rcu_site"] = f"#{sim.steps - 1} {label}"


async def _read_unlock(dom: GracePeriodDomain, label: str) -> None:
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        return
    key = dom.key(cpu.id)
    await step(label, writes=(key,))
    n = dom.nesting.get(cpu.id, 0)
    if n <= 0:
        from mmemu.kernel.locking import UnlockNotOwner
        sim.fail(UnlockNotOwner(f"{cpu.title} calls {label} outside a read-side section"))
    dom.nesting[cpu.id] = n - 1
    if not dom.sleepable:
        cpu.data["rcu_nesting"] = n - 1
    if n == 1:
        wake_all(key)
        dom.run_ready_callbacks()


async def _synchronize(dom: GracePeriodDomain, label: str) -> None:
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        return
    might_sleep(label)
    await step(label, reads=_all_keys(sim, dom))
    snap = dom.snapshot()
    if cpu.id in snap:
        sim.fail(_deadlock_in_own_section(cpu.title, label))

    def inside() -> list[int]:
        return [c for c, section in snap.items() if dom.still_inside(c, section)]

    def over() -> bool:
        return not inside()

    while not over():
        waiting = inside()
        await block(dom.key(waiting[0]), f"{label}: grace period over",
                    reads=_all_keys(sim, dom), also=[dom.key(c) for c in waiting[1:]],
                    until=over,
                    why=f"a grace period of {dom.name} (" +
                        ", ".join(f"cpu{c}" for c in waiting) + " inside a read section)")
    dom.run_ready_callbacks()


def _deadlock_in_own_section(title: str, label: str) -> Deadlock:
    return Deadlock(f"{title} calls {label} inside its own read-side section: "
                    f"the grace period can never end")


# ------------------------------------------------------------------- classic


async def rcu_read_lock() -> None:
    await _read_lock(_rcu(current_simulation()), "rcu_read_lock")


async def rcu_read_unlock() -> None:
    await _read_unlock(_rcu(current_simulation()), "rcu_read_unlock")


async def synchronize_rcu() -> None:
    """Wait for every pre-existing RCU reader."""
    await _synchronize(_rcu(current_simulation()), "synchronize_rcu")


async def call_rcu(arg: Any, func: Callable[[Any], None]) -> None:
    """Run ``func(arg)`` after a grace period (see the module notes)."""
    sim = current_simulation()
    dom = _rcu(sim)
    await step("call_rcu", reads=_all_keys(sim, dom))
    dom.callbacks.append((dom.snapshot(), func, arg))
    dom.run_ready_callbacks()


async def rcu_barrier() -> None:
    """Wait until every queued callback has run."""
    sim = current_simulation()
    dom = _rcu(sim)
    while dom.callbacks:
        await _synchronize(dom, "rcu_barrier")


def rcu_read_lock_held() -> bool:
    sim = current_simulation()
    cpu = sim.running
    return cpu is not None and cpu.data.get("rcu_nesting", 0) > 0


class SuspiciousRcuUsage(LockdepViolation):
    """lockdep-RCU's "suspicious rcu_dereference_check() usage!"."""


def rcu_dereference_check(what: str, *locks: Any) -> None:
    """``rcu_dereference_check(p, lockdep_is_held(lock))``: a pointer an
    RCU-protected structure publishes may be followed only inside an RCU
    read-side section or holding one of the locks its updaters take
    (``locks``).  Outside both, nothing stops the updater from freeing what
    the pointer leads to (a radix-tree node: call_rcu(radix_tree_node_rcu_free))
    while it is read.

    Kernel: lockdep-RCU (CONFIG_PROVE_RCU, v2.6.34, 2010) reports it as
    "suspicious rcu_dereference_check() usage!"; today's xarray checks every
    slot load this way (xa_entry: rcu_dereference_check(...,
    lockdep_is_held(&xa->xa_lock))).  2.6.27's radix_tree_lookup used a plain
    rcu_dereference with no check; the rule is the same.  Setup code (no
    running CPU) is not checked."""
    sim = current_simulation()
    cpu = sim.running
    if cpu is None or cpu.data.get("rcu_nesting", 0) > 0:
        return
    if any(held_mode(cpu, lock) is not None for lock in locks):
        return
    held = ", ".join(getattr(lock, "name", str(lock)) for lock in locks) or "the updaters' lock"
    sim.fail(SuspiciousRcuUsage(
        f"suspicious rcu_dereference_check() usage: {cpu.title} follows {what} outside "
        f"rcu_read_lock and without {held}"))


# ---------------------------------------------------------------------- SRCU


class SrcuStruct(GracePeriodDomain):
    """``struct srcu_struct``: read sections may sleep."""

    def __init__(self, name: str = "srcu") -> None:
        super().__init__(name, sleepable=True)


async def srcu_read_lock(ss: SrcuStruct) -> int:
    await _read_lock(ss, f"srcu_read_lock({ss.name})")
    cpu = current_simulation().running
    return ss.section.get(cpu.id, 0) if cpu is not None else 0


async def srcu_read_unlock(ss: SrcuStruct, idx: int) -> None:
    await _read_unlock(ss, f"srcu_read_unlock({ss.name})")


async def synchronize_srcu(ss: SrcuStruct) -> None:
    await _synchronize(ss, f"synchronize_srcu({ss.name})")


__all__ = [
    "GracePeriodDomain", "SrcuStruct", "SuspiciousRcuUsage", "call_rcu", "rcu_barrier",
    "rcu_dereference_check", "rcu_read_lock", "rcu_read_lock_held", "rcu_read_unlock", "srcu_read_lock", "srcu_read_unlock",
    "synchronize_rcu", "synchronize_srcu",
]
