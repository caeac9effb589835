"""mm_take_all_locks / mm_drop_all_locks: the seed's steps, de-duplication,
-EINTR, the caller contract, and the lock suites with their mutants."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
import mmemu.cli
import mmemu.mm.mmap as mmap_mod
from mmemu.kernel import locking
from mmemu.kernel.locking import down_write, up_write
from mmemu.kernel.signal import set_signal_pending
from mmemu.mm.filemap import AS_MM_ALL_LOCKS
from mmemu.mm.init import boot
from mmemu.mm.mmap import EINTR, mm_drop_all_locks, mm_take_all_locks
from mmemu.races.locks import build_mm

def dfs2() -> mmemu.DFS:
    return mmemu.DFS(max_preemptions=2)


class LockCounter:
    """Counts the lock operations mm_take_all_locks / mm_drop_all_locks make."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: list[str] = []
        self.released: list[str] = []
        for name in ("spin_lock_nest_lock", "mutex_lock"):
            orig = getattr(locking, name)
            monkeypatch.setattr(mmap_mod, name, self._wrap(orig, self.taken))
        for name in ("spin_unlock", "mutex_unlock"):
            orig = getattr(locking, name)
            monkeypatch.setattr(mmap_mod, name, self._wrap(orig, self.released))

    @staticmethod
    def _wrap(fn: Any, log: list[str]) -> Any:
        async def wrapped(lock: Any, *args: Any, **kw: Any) -> Any:
            log.append(lock.name)
            return await fn(lock, *args, **kw)
        return wrapped


def _run_one(nvmas: int, n_anon: int, n_maps: int, *, signal_at: int | None = None,
             monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2)
        mm, anon, maps = build_mm(kernel, nvmas, n_anon, n_maps)

        async def register() -> None:
            await down_write(mm.mmap_sem)
            ret = await mm_take_all_locks(mm)
            out["ret"] = ret
            out["held_after_take"] = len(mmemu.lowlevel.current_cpu().data["held"])
            if ret == 0:
                out["marked"] = (sum(a.head_next_lsb for a in anon),
                                 sum(bool(m.flags & AS_MM_ALL_LOCKS) for m in maps))
                await mm_drop_all_locks(mm)
            out["held_after_drop"] = len(mmemu.lowlevel.current_cpu().data["held"])
            await up_write(mm.mmap_sem)

        async with sim.cpus() as cpus:
            cpus.start(register, name="register")
        out["lsb_left"] = sum(a.head_next_lsb for a in anon)
        out["as_left"] = sum(bool(m.flags & AS_MM_ALL_LOCKS) for m in maps)
        out["mutex_left"] = kernel.mm_all_locks_mutex.owner is not None

    if signal_at is not None:
        assert monkeypatch is not None
        calls = {"n": 0}
        orig = mmap_mod.signal_pending

        async def signal_pending(task: Any) -> bool:
            calls["n"] += 1
            if calls["n"] == signal_at:
                set_signal_pending(task)
            return await orig(task)

        monkeypatch.setattr(mmap_mod, "signal_pending", signal_pending)
    res = mmemu.explore(scenario, strategy=dfs2(), executions=2, max_steps=100_000)
    assert res.failure is None, res.failure.report()
    return out


def test_1000_vmas_sharing_10_anon_vmas_and_10_mappings_take_20_locks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = LockCounter(monkeypatch)
    out = _run_one(1000, 10, 10)
    assert out["ret"] == 0
    spin = [n for n in counter.taken if n != "mm_all_locks_mutex"]
    assert counter.taken.count("mm_all_locks_mutex") == 1
    assert len(spin) == 20 and len(set(spin)) == 20
    assert sorted(counter.released) == sorted(counter.taken)
    # mmap_sem + mutex + 20 spinlocks while everything is taken; the marks are set
    assert out["held_after_take"] == 22
    assert out["marked"] == (10, 10)
    assert out["held_after_drop"] == 1  # mmap_sem only
    assert (out["lsb_left"], out["as_left"], out["mutex_left"]) == (0, 0, False)


def test_signal_pending_mid_way_returns_eintr_holding_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = LockCounter(monkeypatch)
    out = _run_one(1000, 10, 10, signal_at=500, monkeypatch=monkeypatch)
    assert out["ret"] == -EINTR
    assert out["held_after_take"] == 1  # only the caller's mmap_sem
    assert len(counter.taken) == 21  # 499 vmas cover every anon_vma and mapping
    assert sorted(counter.released) == sorted(counter.taken)
    assert (out["lsb_left"], out["as_left"], out["mutex_left"]) == (0, 0, False)


def test_signal_before_first_vma_takes_only_the_mutex(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = LockCounter(monkeypatch)
    out = _run_one(5, 1, 1, signal_at=1, monkeypatch=monkeypatch)
    assert out["ret"] == -EINTR
    assert counter.taken == ["mm_all_locks_mutex"]
    assert counter.released == ["mm_all_locks_mutex"]


def test_without_mmap_sem_for_write_is_a_named_bug() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2)
        mm, _, _ = build_mm(kernel, 2, 1, 1)

        async def cpu() -> None:
            await mm_take_all_locks(mm)

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="register")

    res = mmemu.explore(scenario, strategy=dfs2())
    assert res.failure is not None
    assert res.failure.kind == "MmapSemNotHeld"
    assert "without mm->mmap_sem held for write" in res.failure.message


def test_second_take_on_the_same_cpu_self_deadlocks() -> None:
    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2)
        mm, _, _ = build_mm(kernel, 2, 1, 1)

        async def cpu() -> None:
            await down_write(mm.mmap_sem)
            await mm_take_all_locks(mm)
            await mm_take_all_locks(mm)

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="register")

    res = mmemu.explore(scenario, strategy=dfs2())
    assert res.failure is not None
    assert res.failure.kind == "SelfDeadlock"
    assert "mm_all_locks_mutex" in res.failure.message


@pytest.mark.parametrize("suite", ["locks:take-all-shared", "locks:take-all-signal"])
def test_lock_suites_pass_exhaustively(suite: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted


def test_signal_suite_reaches_both_outcomes() -> None:
    """The explorer lands the signal before the end (-EINTR) and after it (0)."""
    seen: set[int] = set()
    orig = mmap_mod.mm_take_all_locks

    async def spy(mm: Any) -> int:
        ret = await orig(mm)
        seen.add(ret)
        return ret

    import mmemu.races.locks as locks_mod
    mp = pytest.MonkeyPatch()
    mp.setattr(locks_mod, "mm_take_all_locks", spy)
    try:
        res = mmemu.explore("locks:take-all-signal", strategy=dfs2(), executions=100_000)
    finally:
        mp.undo()
    assert res.failure is None
    assert seen == {0, -EINTR}


@pytest.mark.parametrize("suite,mutant,kind", [
    ("locks:take-all-shared", "mmap:no-dedup", "SelfDeadlock"),
    ("locks:take-all-shared", "mmap:unmark-after-unlock", "MarkedAnonVmaList"),
    ("locks:take-all-signal", "mmap:eintr-leak", "LockHeldAtExit"),
])
def test_lock_mutants_caught(suite: str, mutant: str, kind: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, mutants=[mutant])
    f = res.failure
    assert f is not None and f.kind == kind
    assert f.preemptions <= 2
    assert mmemu.cli.main(["run", suite, "--mutant", mutant]) == 1
    assert kind in capsys.readouterr().out
