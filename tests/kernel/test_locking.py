"""Kernel locks and lockdep: each rule reported with both acquisition sites."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.kernel.locking import (
    Completion,
    Mutex,
    RwSemaphore,
    SpinLock,
    WaitQueueHead,
    complete,
    down_read,
    down_read_trylock,
    down_write,
    mutex_lock,
    mutex_unlock,
    spin_lock,
    spin_lock_nest_lock,
    spin_unlock,
    up_read,
    up_write,
    wait_event,
    wait_for_completion,
    wake_up_all,
)


def _explore(scenario: Any, **kw: Any) -> mmemu.Result:
    kw.setdefault("strategy", mmemu.DFS())
    kw.setdefault("executions", 500)
    return mmemu.explore(scenario, **kw)


async def _take_two(first: SpinLock, second: SpinLock) -> None:
    await spin_lock(first)
    await spin_lock(second)
    await spin_unlock(second)
    await spin_unlock(first)


def test_lockdep_catches_abba_across_executions_without_a_deadlock() -> None:
    # Execution N takes A then B on one CPU; the order B then A only ever
    # happens on another CPU *after* the first has finished, so no execution
    # can deadlock.  Lockdep must still report the inversion, naming both sites.
    async def scenario(sim: Any) -> None:
        a, b = SpinLock("A"), SpinLock("B")
        async with sim.cpus() as cpus:
            cpus.start(_take_two, a, b, name="ab")
        async with sim.cpus() as cpus:
            cpus.start(_take_two, b, a, name="ba")

    result = _explore(scenario)
    failure = result.failure
    assert failure is not None
    assert failure.kind == "LockOrderViolation"
    assert "takes A" in failure.message and "while holding B" in failure.message
    assert "'spin_lock(B)'" in failure.message and "'spin_lock(A)'" in failure.message


def test_lockdep_remembers_the_order_of_an_earlier_execution() -> None:
    # Whichever CPU claims first takes its two locks; the other does nothing.
    # So each execution has one order only, and the inversion is visible only
    # through the graph kept across executions.
    async def scenario(sim: Any) -> None:
        a, b = SpinLock("A"), SpinLock("B")
        claimed = {"by": None}

        async def claimer(first: SpinLock, second: SpinLock) -> None:
            await mmemu.step("claim", writes=("claim",))
            if claimed["by"] is None:
                claimed["by"] = first.name
                await _take_two(first, second)

        async with sim.cpus() as cpus:
            cpus.start(claimer, a, b, name="ab")
            cpus.start(claimer, b, a, name="ba")

    result = _explore(scenario)
    assert result.failure is not None
    assert result.failure.kind == "LockOrderViolation"
    assert "an earlier execution" in result.failure.message
    assert result.failure.trace.events  # the failing execution itself has no deadlock


def test_consistent_order_is_accepted_and_exhausted() -> None:
    async def scenario(sim: Any) -> None:
        a, b = SpinLock("A"), SpinLock("B")
        async with sim.cpus() as cpus:
            cpus.start(_take_two, a, b, name="one")
            cpus.start(_take_two, a, b, name="two")

    result = _explore(scenario)
    assert result.failure is None
    assert result.exhausted


def test_nest_lock_accepts_many_locks_of_one_class() -> None:
    async def scenario(sim: Any) -> None:
        sem = RwSemaphore("mmap_sem")
        locks = [SpinLock(f"anon_vma{i}", cls="anon_vma->lock") for i in range(200)]

        async def take_all() -> None:
            await down_write(sem)
            for lock in locks:
                await spin_lock_nest_lock(lock, sem)
            for lock in reversed(locks):
                await spin_unlock(lock)
            await up_write(sem)

        async with sim.cpus() as cpus:
            cpus.start(take_all, name="take_all")

    result = _explore(scenario, max_steps=5000)
    assert result.failure is None


def test_same_class_without_nest_lock_is_recursive_locking() -> None:
    async def scenario(sim: Any) -> None:
        x, y = SpinLock("anon_vma0", cls="anon_vma->lock"), SpinLock("anon_vma1", cls="anon_vma->lock")
        async with sim.cpus() as cpus:
            cpus.start(_take_two, x, y, name="cpu")

    failure = _explore(scenario).failure
    assert failure is not None and failure.kind == "RecursiveLocking"
    assert "anon_vma->lock" in failure.message


def test_taking_a_held_lock_again_is_a_self_deadlock() -> None:
    async def scenario(sim: Any) -> None:
        m = Mutex("mm_all_locks_mutex")

        async def twice() -> None:
            await mutex_lock(m)
            await mutex_lock(m)

        async with sim.cpus() as cpus:
            cpus.start(twice, name="register")

    failure = _explore(scenario).failure
    assert failure is not None and failure.kind == "SelfDeadlock"
    assert "already holds it" in failure.message


def test_unlock_by_non_owner() -> None:
    async def scenario(sim: Any) -> None:
        lock = SpinLock("tree_lock")

        async def locker() -> None:
            await spin_lock(lock)

        async def unlocker() -> None:
            await spin_unlock(lock)

        async with sim.cpus() as cpus:
            cpus.start(locker, name="locker")
            cpus.start(unlocker, name="unlocker")

    failure = _explore(scenario).failure
    assert failure is not None
    assert failure.kind in ("UnlockNotOwner", "LockHeldAtExit")
    result = mmemu.explore(scenario, strategy=mmemu.DFS(reduction="none"), executions=100,
                           stop_on_failure=False, shrink=False)
    assert {f.kind for f in result.failures} >= {"UnlockNotOwner", "LockHeldAtExit"}


def test_lock_held_at_exit_names_the_site() -> None:
    async def scenario(sim: Any) -> None:
        lock = SpinLock("i_mmap_lock")

        async def leaky() -> None:
            await spin_lock(lock, label="2. spin_lock(i_mmap_lock)")

        async with sim.cpus() as cpus:
            cpus.start(leaky, name="leaky")

    failure = _explore(scenario).failure
    assert failure is not None and failure.kind == "LockHeldAtExit"
    assert "i_mmap_lock" in failure.message and "2. spin_lock(i_mmap_lock)" in failure.message


def test_sleeping_while_holding_a_spinlock() -> None:
    async def scenario(sim: Any) -> None:
        lock = SpinLock("mmu_lock")
        m = Mutex("slow")

        async def bad() -> None:
            await spin_lock(lock)
            await mutex_lock(m)
            await mutex_unlock(m)
            await spin_unlock(lock)

        async with sim.cpus() as cpus:
            cpus.start(bad, name="bad")

    failure = _explore(scenario).failure
    assert failure is not None and failure.kind == "SleepingWhileAtomic"
    assert "mmu_lock" in failure.message and "mutex_lock(slow)" in failure.message


def test_contended_spinlock_deadlock_names_holder_and_waiter() -> None:
    async def scenario(sim: Any) -> None:
        a, b = SpinLock("A"), SpinLock("B")
        async with sim.cpus() as cpus:
            cpus.start(_take_two, a, b, name="ab")
            cpus.start(_take_two, b, a, name="ba")

    # lockdep sees the inversion before the deadlock; with no reduction and
    # every failure kept, the real deadlock shows up too.
    result = mmemu.explore(scenario, strategy=mmemu.DFS(reduction="none"), executions=200,
                           stop_on_failure=False)
    kinds = {f.kind: f for f in result.failures}
    assert "LockOrderViolation" in kinds


def test_rwsem_readers_share_writer_excludes() -> None:
    async def scenario(sim: Any) -> None:
        sem = RwSemaphore("mmap_sem")
        state = {"readers": 0, "max": 0, "writer_saw_readers": False}

        async def reader() -> None:
            await down_read(sem)
            await mmemu.step("read", writes=("readers",))
            state["readers"] += 1
            state["max"] = max(state["max"], state["readers"])
            await mmemu.step("done", writes=("readers",))
            state["readers"] -= 1
            await up_read(sem)

        async def writer() -> None:
            await down_write(sem)
            await mmemu.step("write", reads=("readers",))
            if state["readers"]:
                state["writer_saw_readers"] = True
            await up_write(sem)

        async with sim.cpus() as cpus:
            cpus.start(reader, name="r1")
            cpus.start(reader, name="r2")
            cpus.start(writer, name="w")
        sim.check(not state["writer_saw_readers"], "writer ran with readers inside")
        sim.data["max"] = state["max"]

    result = _explore(scenario, executions=5000)
    assert result.failure is None and result.exhausted


def test_down_read_trylock_fails_under_a_writer() -> None:
    seen: list[bool] = []

    async def scenario(sim: Any) -> None:
        sem = RwSemaphore("mmap_sem")

        async def cpu() -> None:
            await down_write(sem)
            seen.append(await down_read_trylock(sem))
            await up_write(sem)

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="cpu")

    assert _explore(scenario).failure is None
    assert seen and not any(seen)


def test_wait_event_never_loses_a_wakeup() -> None:
    async def scenario(sim: Any) -> None:
        wq = WaitQueueHead("ms_wait_queue")
        flag = {"active": 1}

        async def waiter() -> None:
            await wait_event(wq, lambda: flag["active"] == 0, reads=("active",))

        async def waker() -> None:
            await mmemu.step("atomic_dec(active)", writes=("active",))
            flag["active"] = 0
            await wake_up_all(wq)

        async with sim.cpus() as cpus:
            cpus.start(waiter, name="waiter")
            cpus.start(waker, name="waker")

    result = mmemu.explore(scenario, strategy=mmemu.DFS(reduction="none"), executions=200)
    assert result.failure is None and result.exhausted and result.executions > 1


def test_completion() -> None:
    async def scenario(sim: Any) -> None:
        c = Completion("done")
        async with sim.cpus() as cpus:
            cpus.start(wait_for_completion, c, name="waiter")
            cpus.start(complete, c, name="completer")

    result = _explore(scenario)
    assert result.failure is None and result.exhausted


@mmemu.scenario("testkernel:abba-across-executions", expect="fail")
async def _abba_across_executions(sim: Any) -> None:
    """Whichever CPU claims first takes A,B or B,A; the other does nothing."""
    a, b = SpinLock("A"), SpinLock("B")
    claimed: dict[str, Any] = {"by": None}

    async def claimer(first: SpinLock, second: SpinLock) -> None:
        await mmemu.step("claim", writes=("claim",))
        if claimed["by"] is None:
            claimed["by"] = first.name
            await _take_two(first, second)

    async with sim.cpus() as cpus:
        cpus.start(claimer, a, b, name="ab")
        cpus.start(claimer, b, a, name="ba")


def test_cross_execution_lockdep_report_replays_from_its_token() -> None:
    # The token carries the earlier execution that recorded A -> B, so a
    # fresh replay (empty lockdep graph) reproduces the same report.
    failure = _explore("testkernel:abba-across-executions").failure
    assert failure is not None and failure.kind == "LockOrderViolation"
    outcome = mmemu.replay(None, failure.schedule)
    assert outcome.failure is not None
    assert outcome.failure.report() == failure.report()


# ------------------------------------------- locks are single events (DPOR)


def _each_takes_once(n: int, make: Any, take: Any, give: Any) -> Any:
    async def scenario(sim: Any) -> None:
        lock = make("L")

        async def cpu() -> None:
            await take(lock)
            await give(lock)

        async with sim.cpus() as cpus:
            for i in range(n):
                cpus.start(cpu, name=f"t{i}")

    return scenario


@pytest.mark.parametrize("kind", ["spinlock", "mutex", "rwsem-write"])
def test_n_cpus_taking_one_kernel_lock_once_run_n_factorial(kind: str) -> None:
    make, take, give = {
        "spinlock": (SpinLock, spin_lock, spin_unlock),
        "mutex": (Mutex, mutex_lock, mutex_unlock),
        "rwsem-write": (RwSemaphore, down_write, up_write),
    }[kind]
    for n, want in ((2, 2), (3, 6)):
        res = mmemu.explore(_each_takes_once(n, make, take, give), strategy=mmemu.DFS(),
                            executions=10_000)
        assert res.failure is None and res.exhausted
        if kind == "rwsem-write":
            # a writer that finds the semaphore held queues in a step of its
            # own (readers must see it): more traces than the n! orders
            assert res.executions > want
        else:
            assert res.executions == want


def test_mutex_order_3_is_6() -> None:
    async def scenario(sim: Any) -> None:
        m = Mutex("m")
        x = {"v": 0}

        async def t() -> None:
            await mutex_lock(m)
            await mmemu.step("++x", reads=("x",), writes=("x",))
            x["v"] += 1
            await mutex_unlock(m)

        async with sim.cpus() as cpus:
            for i in range(3):
                cpus.start(t, name=f"t{i}")

    res = mmemu.explore(scenario, strategy=mmemu.DFS(), executions=1000)
    assert res.failure is None and res.exhausted and res.executions == 6


def test_a_contended_spin_lock_is_one_step() -> None:
    async def scenario(sim: Any) -> None:
        lock = SpinLock("ptl")

        async def cpu() -> None:
            await spin_lock(lock)
            await mmemu.step("inside")
            await spin_unlock(lock)

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="a")
            cpus.start(cpu, name="b")

    labels: list[list[str]] = []

    class Keep(mmemu.DFS):
        def end(self, sim: Any) -> None:
            for c in (0, 1):
                labels.append([e[1] for e in sim.events if e[0] == c])
            super().end(sim)

    res = mmemu.explore(scenario, strategy=Keep(reduction="none"), executions=1000)
    assert res.exhausted and res.failure is None
    assert {tuple(x) for x in labels} == {
        ("<start>", "spin_lock(ptl)", "inside", "spin_unlock(ptl)")}
