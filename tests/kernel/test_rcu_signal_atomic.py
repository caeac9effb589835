"""RCU grace periods, SRCU, signals and atomics."""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.kernel.atomic import atomic_cmpxchg, atomic_dec_and_test, atomic_inc_not_zero, atomic_t
from mmemu.kernel.locking import Mutex, mutex_lock, mutex_unlock
from mmemu.kernel.rcu import (
    SrcuStruct,
    call_rcu,
    rcu_read_lock,
    rcu_read_unlock,
    srcu_read_lock,
    srcu_read_unlock,
    synchronize_rcu,
    synchronize_srcu,
)
from mmemu.kernel.signal import current, send_sig, signal_pending


def test_grace_period_waits_for_every_reader_that_was_inside() -> None:
    # Updater: unpublish the pointer, synchronize_rcu, free.  A reader that
    # found the pointer published must be done before the free.
    async def scenario(sim: Any) -> None:
        obj = {"published": True, "freed": False, "bad": False}

        async def reader() -> None:
            await rcu_read_lock()
            await mmemu.step("p = rcu_dereference(ptr)", reads=("ptr",))
            found = obj["published"]
            await mmemu.step("use *p", reads=("obj",))
            if found and obj["freed"]:
                obj["bad"] = True
            await rcu_read_unlock()

        async def updater() -> None:
            await mmemu.step("rcu_assign_pointer(ptr, NULL)", writes=("ptr",))
            obj["published"] = False
            await synchronize_rcu()
            await mmemu.step("kfree(p)", writes=("obj",))
            obj["freed"] = True

        async with sim.cpus() as cpus:
            cpus.start(reader, name="reader")
            cpus.start(updater, name="updater")
        sim.check(not obj["bad"], "reader used an object freed before its section ended")

    result = mmemu.explore(scenario, strategy=mmemu.DFS(reduction="none"), executions=500)
    assert result.failure is None and result.exhausted and result.executions > 3


def test_without_grace_period_the_reader_sees_the_free() -> None:
    # The same scenario without synchronize_rcu must fail: the test above can fail.
    async def scenario(sim: Any) -> None:
        obj = {"freed": False}

        async def reader() -> None:
            await rcu_read_lock()
            await mmemu.step("deref", reads=("obj",))
            sim.check(not obj["freed"], "reader used a freed object")
            await rcu_read_unlock()

        async def updater() -> None:
            await mmemu.step("kfree", writes=("obj",))
            obj["freed"] = True

        async with sim.cpus() as cpus:
            cpus.start(reader, name="reader")
            cpus.start(updater, name="updater")

    failure = mmemu.explore(scenario, strategy=mmemu.DFS(), executions=100).failure
    assert failure is not None and failure.kind == "InvariantViolation"


def test_sleeping_inside_rcu_read_section_is_reported() -> None:
    async def scenario(sim: Any) -> None:
        m = Mutex("m")

        async def bad() -> None:
            await rcu_read_lock()
            await mutex_lock(m)
            await mutex_unlock(m)
            await rcu_read_unlock()

        async with sim.cpus() as cpus:
            cpus.start(bad, name="bad")

    failure = mmemu.explore(scenario, strategy="dfs", executions=10).failure
    assert failure is not None and failure.kind == "SleepingWhileAtomic"
    assert "RCU read-side section" in failure.message


def test_srcu_readers_may_sleep_and_are_waited_for() -> None:
    # mmu_notifier_unregister's shape: unhash, synchronize_srcu, free.  A
    # callback walking the list under SRCU may sleep, and is never running
    # on a freed notifier.
    async def scenario(sim: Any) -> None:
        ss = SrcuStruct("notifier_srcu")
        m = Mutex("m")
        state = {"hashed": True, "freed": False, "bad": False}

        async def reader() -> None:
            idx = await srcu_read_lock(ss)
            await mmemu.step("hlist_for_each_entry_rcu", reads=("list",))
            found = state["hashed"]
            await mutex_lock(m)  # sleeping is fine under SRCU
            await mmemu.step("mn->ops->invalidate_page", reads=("mn",))
            if found and state["freed"]:
                state["bad"] = True
            await mutex_unlock(m)
            await srcu_read_unlock(ss, idx)

        async def unregister() -> None:
            await mmemu.step("hlist_del_rcu", writes=("list",))
            state["hashed"] = False
            await synchronize_srcu(ss)
            await mmemu.step("kfree(mn)", writes=("mn",))
            state["freed"] = True

        async with sim.cpus() as cpus:
            cpus.start(reader, name="reader")
            cpus.start(unregister, name="unregister")
        sim.check(not state["bad"], "callback ran on a notifier freed after synchronize_srcu")

    result = mmemu.explore(scenario, strategy=mmemu.DFS(), executions=500)
    assert result.failure is None and result.exhausted


def test_call_rcu_runs_after_the_readers() -> None:
    order: list[str] = []

    async def scenario(sim: Any) -> None:
        order.clear()

        async def reader() -> None:
            await rcu_read_lock()
            await mmemu.step("use", reads=("x",))
            order.append("use")
            await rcu_read_unlock()

        async def freer() -> None:
            await call_rcu("x", lambda arg: order.append("free"))

        async with sim.cpus() as cpus:
            cpus.start(reader, name="reader")
            cpus.start(freer, name="freer")
        sim.check("free" in order, "callback never ran")
        if order.index("free") < order.index("use"):
            # only legal if the reader entered after call_rcu
            pass

    result = mmemu.explore(scenario, strategy=mmemu.DFS(reduction="none"), executions=200)
    assert result.failure is None


def test_signal_sent_by_another_cpu_is_seen_in_some_order() -> None:
    seen: set[bool] = set()

    async def scenario(sim: Any) -> None:
        async def target() -> None:
            seen.add(await signal_pending(current()))

        async with sim.cpus() as cpus:
            t = cpus.start(target, name="target")
            cpus.start(send_sig, t, name="killer")

    result = mmemu.explore(scenario, strategy=mmemu.DFS(), executions=50)
    assert result.failure is None and result.exhausted
    assert seen == {True, False}


def test_atomics_are_single_steps() -> None:
    async def scenario(sim: Any) -> None:
        v = atomic_t(1, "count")
        got = {}

        async def freezer() -> None:
            got["frozen"] = await atomic_cmpxchg(v, 1, 0) == 1

        async def getter() -> None:
            got["got"] = await atomic_inc_not_zero(v)

        async with sim.cpus() as cpus:
            cpus.start(freezer, name="freezer")
            cpus.start(getter, name="getter")
        # exactly one of them wins
        sim.check(got["frozen"] != got["got"], f"both or neither won: {got}")

    result = mmemu.explore(scenario, strategy=mmemu.DFS(reduction="none"), executions=50)
    assert result.failure is None and result.exhausted and result.executions == 6


def test_atomic_dec_and_test() -> None:
    async def scenario(sim: Any) -> None:
        v = atomic_t(2, "count")
        zero = []

        async def dec() -> None:
            zero.append(await atomic_dec_and_test(v))

        async with sim.cpus() as cpus:
            cpus.start(dec, name="a")
            cpus.start(dec, name="b")
        sim.check(zero.count(True) == 1, f"exactly one decrement reaches zero: {zero}")

    assert mmemu.explore(scenario, strategy="dfs", executions=50).failure is None
