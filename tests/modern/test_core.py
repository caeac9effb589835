"""The modern notifier core: non-blockable ranges (-EAGAIN, end only for the
notifiers that started, no sleeping), interval notifiers (read_begin waits
for an overlapping invalidation only; remove waits for the invalidation in
progress), get/put."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.lowlevel import block, wake_all
from mmemu.mm import mmu_notifier as mn_mod
from mmemu.mm.init import boot
from mmemu.mm.mmap import mm_alloc
from mmemu.mm.mmu_notifier import (
    EAGAIN,
    MMU_NOTIFIER_RANGE_BLOCKABLE,
    MmuIntervalNotifier,
    MmuIntervalNotifierOps,
    MmuNotifier,
    MmuNotifierOps,
    MmuNotifierRange,
    mmu_interval_notifier_insert,
    mmu_interval_notifier_remove,
    mmu_interval_read_begin,
    mmu_interval_read_retry,
    mmu_interval_set_seq,
    mmu_notifier_get,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_invalidate_range_start_nonblock,
    mmu_notifier_put,
    mmu_notifier_range_init,
    mmu_notifier_register,
    mmu_notifier_synchronize,
)

def dfs2() -> mmemu.DFS:
    return mmemu.DFS(max_preemptions=2)  # a strategy object keeps its tree: one per run


def _recorder(log: list[str], name: str, *, fail: bool = False,
              sleep: Any = None) -> MmuNotifier:
    async def start(mn: MmuNotifier, range: MmuNotifierRange) -> int:
        log.append(f"{name}.start")
        if sleep is not None:
            from mmemu.kernel.locking import mutex_lock, mutex_unlock
            await mutex_lock(sleep)
            await mutex_unlock(sleep)
        return -EAGAIN if fail else 0

    async def end(mn: MmuNotifier, range: MmuNotifierRange) -> None:
        log.append(f"{name}.end")

    return MmuNotifier(MmuNotifierOps(invalidate_range_start=start, invalidate_range_end=end),
                       name=name)


def _run(scenario: Any) -> mmemu.Result:
    return mmemu.explore(scenario, strategy=dfs2(), executions=10_000)


def test_nonblock_start_failure_ends_only_the_started_notifiers() -> None:
    seen: dict[str, Any] = {}

    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)
        log: list[str] = []
        # hlist order: the last registered is walked first: c, b, a
        for n in ("a", "b", "c"):
            assert await mmu_notifier_register(_recorder(log, n, fail=n == "b"), mm) == 0

        async def reaper() -> None:
            r = mmu_notifier_range_init("UNMAP", 0, mm, 0, 0x1000)
            seen["ret"] = await mmu_notifier_invalidate_range_start_nonblock(r)
            seen["blockable"] = bool(r.flags & MMU_NOTIFIER_RANGE_BLOCKABLE)

        async with sim.cpus() as cpus:
            cpus.start(reaper)
        seen["log"] = log

    res = _run(scenario)
    assert res.failure is None, res.failure.report()
    assert seen["ret"] == -EAGAIN and not seen["blockable"]
    # every start is asked; only c and a, which started, are ended
    assert seen["log"] == ["c.start", "b.start", "a.start", "c.end", "a.end"]


def test_end_after_a_failed_nonblock_start_is_a_violation() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)
        await mmu_notifier_register(_recorder([], "b", fail=True), mm)

        async def bad_caller() -> None:
            r = mmu_notifier_range_init("UNMAP", 0, mm, 0, 0x1000)
            await mmu_notifier_invalidate_range_start_nonblock(r)
            await mmu_notifier_invalidate_range_end(r)

        async with sim.cpus() as cpus:
            cpus.start(bad_caller)

    f = _run(scenario).failure
    assert f is not None and f.kind == "MmuNotifierViolation"
    assert "after its non-blockable start failed" in f.message


def test_blockable_start_that_fails_is_a_warn_on() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)
        await mmu_notifier_register(_recorder([], "b", fail=True), mm)

        async def caller() -> None:
            await mmu_notifier_invalidate_range_start(mm, 0, 0x1000)

        async with sim.cpus() as cpus:
            cpus.start(caller)

    f = _run(scenario).failure
    assert f is not None and f.kind == "MmuNotifierViolation" and "WARN_ON" in f.message


def test_sleeping_in_a_nonblockable_callback_is_reported() -> None:
    from mmemu.kernel.locking import Mutex

    def scenario_for(nonblock: bool) -> Any:
        async def scenario(sim: Any) -> None:
            kernel = boot(sim, npages=2, api="modern")
            mm = mm_alloc(kernel)
            await mmu_notifier_register(_recorder([], "s", sleep=Mutex("s->mutex")), mm)

            async def caller() -> None:
                r = mmu_notifier_range_init("UNMAP", 0, mm, 0, 0x1000)
                if nonblock:
                    if await mmu_notifier_invalidate_range_start_nonblock(r) == 0:
                        await mmu_notifier_invalidate_range_end(r)
                else:
                    await mmu_notifier_invalidate_range_start(r)
                    await mmu_notifier_invalidate_range_end(r)

            async with sim.cpus() as cpus:
                cpus.start(caller)
        return scenario

    f = _run(scenario_for(True)).failure
    assert f is not None and f.kind == "SleepingWhileAtomic"
    assert "non-blockable" in f.message and "mutex_lock" in f.message
    assert _run(scenario_for(False)).failure is None  # a blockable range may sleep


def _interval_scenario(sub_start: int, sub_len: int, log: list[str],
                       done: list[list[str]] | None = None) -> Any:
    """CPU0: an invalidation of [0x1000, 0x2000) that stays in progress until
    CPU1's read_begin returned; CPU1: waits for the start, then read_begin."""

    async def scenario(sim: Any) -> None:
        log.clear()
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)
        flag = {"started": False, "read": False}

        async def invalidate(sub: MmuIntervalNotifier, r: MmuNotifierRange, cur_seq: int) -> bool:
            await mmu_interval_set_seq(sub, cur_seq)
            return True

        ops = MmuIntervalNotifierOps(invalidate)
        victim = MmuIntervalNotifier(name="victim")
        reader = MmuIntervalNotifier(name="reader")
        assert await mmu_interval_notifier_insert(victim, mm, 0x1000, 0x1000, ops) == 0
        assert await mmu_interval_notifier_insert(reader, mm, sub_start, sub_len, ops) == 0

        async def invalidator() -> None:
            await mmu_notifier_invalidate_range_start(mm, 0x1000, 0x2000)
            await mmemu.step("started", writes=("flag",))
            flag["started"] = True
            wake_all("flag")
            while not flag["read"]:
                await block("flag", "read_begin returned", reads=("flag",), why="the reader")
            await mmu_notifier_invalidate_range_end(mm, 0x1000, 0x2000)
            log.append("end")

        async def reader_cpu() -> None:
            await mmemu.step("wait for the start", reads=("flag",))
            while not flag["started"]:
                await block("flag", "started", reads=("flag",), why="the invalidation")
            seq = await mmu_interval_read_begin(reader)
            log.append(f"read_begin {seq}")
            await mmemu.step("read", writes=("flag",))
            flag["read"] = True
            wake_all("flag")
            log.append(f"retry {await mmu_interval_read_retry(reader, seq)}")

        async with sim.cpus() as cpus:
            cpus.start(invalidator)
            cpus.start(reader_cpu)
        if done is not None:
            done.append(list(log))  # a complete execution (not one DPOR abandoned)

    return scenario


def test_read_begin_waits_for_an_overlapping_invalidation() -> None:
    log: list[str] = []
    f = _run(_interval_scenario(0x1000, 0x1000, log)).failure
    # the invalidation waits for read_begin, which waits for the invalidation
    assert f is not None and f.kind == "Deadlock", f and f.report()
    assert "subscriptions->wq" in f.report()


def test_read_begin_does_not_wait_for_a_disjoint_invalidation() -> None:
    log: list[str] = []
    done: list[list[str]] = []
    res = _run(_interval_scenario(0x3000, 0x1000, log, done))
    assert res.failure is None, res.failure.report()
    assert res.exhausted and len(done) == res.executions
    # read_begin returned while the invalidation was in progress, every time
    for run in done:
        assert run[0].startswith("read_begin") and "end" in run and "retry False" in run, run


def test_remove_during_an_invalidation_returns_after_its_end() -> None:
    orders: set[tuple[str, ...]] = set()

    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)
        log: list[str] = []
        state = {"in_invalidation": False}

        async def invalidate(sub: MmuIntervalNotifier, r: MmuNotifierRange, cur_seq: int) -> bool:
            await mmu_interval_set_seq(sub, cur_seq)
            return True

        sub = MmuIntervalNotifier(name="sub")
        assert await mmu_interval_notifier_insert(sub, mm, 0, 0x10000,
                                                  MmuIntervalNotifierOps(invalidate)) == 0

        async def invalidator() -> None:
            await mmu_notifier_invalidate_range_start(mm, 0, 0x1000)
            await mmemu.step("in the invalidation", writes=("state",))
            state["in_invalidation"] = True
            log.append("start")
            await mmemu.step("leaving the invalidation", writes=("state",))
            state["in_invalidation"] = False
            await mmu_notifier_invalidate_range_end(mm, 0, 0x1000)
            log.append("end")

        async def remover() -> None:
            await mmemu.step("remover: invalidation in progress?", reads=("state",))
            during = state["in_invalidation"]
            await mmu_interval_notifier_remove(sub)
            log.append("removed-during" if during else "removed")
            # remove waits for invalidate_seq to move on (mn_itree_inv_end, the
            # first thing range_end does), not for range_end to return
            sim.check(not during or mm.mmu_notifier_mm.invalidate_seq % 2 == 0,
                      "mmu_interval_notifier_remove returned before the invalidation ended")

        async with sim.cpus() as cpus:
            cpus.start(invalidator)
            cpus.start(remover)
        orders.add(tuple(log))

    res = _run(scenario)
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert ("start", "end", "removed-during") in orders  # the interleaving was explored

    res = mmemu.explore(scenario, strategy=dfs2(), executions=10_000,
                        mutants=["mmu_notifier:interval-remove-nowait"])
    assert res.failure is not None and "before the invalidation ended" in res.failure.message


def test_get_put_share_one_notifier_and_free_it_after_srcu() -> None:
    seen: dict[str, Any] = {}

    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)
        freed: list[MmuNotifier] = []
        ops = MmuNotifierOps(alloc_notifier=lambda mm: MmuNotifier(ops, name="shared"),
                             free_notifier=freed.append)

        async def user() -> None:
            a = await mmu_notifier_get(ops, mm)
            b = await mmu_notifier_get(ops, mm)
            assert isinstance(a, MmuNotifier) and a is b and a.users == 2
            await mmu_notifier_put(a)
            seen["after_one_put"] = (list(freed), a.hashed)
            await mmu_notifier_put(b)
            await mmu_notifier_synchronize()
            seen["after_last_put"] = (list(freed), a.hashed, a.freed)

        async with sim.cpus() as cpus:
            cpus.start(user)

    res = _run(scenario)
    assert res.failure is None, res.failure.report()
    assert seen["after_one_put"] == ([], True)
    freed, hashed, is_freed = seen["after_last_put"]
    assert len(freed) == 1 and not hashed and is_freed


def test_modern_api_rejects_a_2_6_27_only_driver() -> None:
    async def scenario(sim: Any) -> None:
        from mmemu.races.notifier import guest
        await guest(sim, kind="anon")

    # SeqDriver (a test driver) lists only the default generation
    with pytest.raises(mmemu.ModelError, match="supports the notifier API 2.6.27, not 'modern'"):
        mmemu.explore(scenario, strategy=dfs2(), executions=10,
                      params={"api": "modern", "driver": "tests/drivers/sample_drivers.py:SeqDriver"})


def test_invalidate_page_does_not_exist_in_the_modern_generation() -> None:
    assert mn_mod.is_modern.__doc__
    calls: list[str] = []

    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2, api="modern")
        mm = mm_alloc(kernel)

        async def inv_page(mn: MmuNotifier, mm: Any, address: int) -> None:
            calls.append("invalidate_page")

        await mmu_notifier_register(MmuNotifier(MmuNotifierOps(invalidate_page=inv_page)), mm)

        async def cpu() -> None:
            await mn_mod.mmu_notifier_invalidate_page(mm, 0x1000)

        async with sim.cpus() as cpus:
            cpus.start(cpu)

    # removed in v4.13: a modern call site must bracket with start/end
    with pytest.raises(mmemu.ModelError, match="does not exist in the modern notifier API"):
        _run(scenario)
    assert not calls


@pytest.mark.parametrize("api", ["2.6.27", "modern"])
def test_boot_api_comes_from_params(api: str) -> None:
    seen: list[str] = []

    async def scenario(sim: Any) -> None:
        seen.append(boot(sim, npages=1).api)

    mmemu.explore(scenario, strategy=dfs2(), executions=1, params={"api": api})
    assert seen == [api]
