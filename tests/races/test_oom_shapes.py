"""The OOM reaper against its victim's munmap (mmemu/races/oom_shapes.py):
the suite passes on the correct model and reaches its goals, its named
interleavings run both ways, OomReapIncomplete fires when its rule is
broken, and the suite catches a reaper broken the four ways
benchmarks/mutation.py breaks it (each patched in here, in process)."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.engine._registry import load_builtin
from mmemu.kernel.locking import down_read_trylock, up_read
from mmemu.mm import oom_kill
from mmemu.mm.oom_kill import OOM_GAVE_UP, OOM_TRYLOCK_FAILED
from mmemu.races.oom_shapes import REAPED
from mmemu.testing import force

from ._support import assert_passes_and_reaches, explore, labels

load_builtin()

SUITE = "mm:oom-reap-vs-munmap"
MODERN = {"api": "modern"}
TRYLOCK = "1. down_read_trylock(mmap_sem)"
DOWN_WRITE = "munmap: down_write(mmap_sem)"
UP_WRITE = "munmap: up_write(mmap_sem)"


def test_correct_model_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(SUITE, critical=2, params=MODERN,
                              goals=(REAPED, OOM_TRYLOCK_FAILED, OOM_GAVE_UP))


def test_trylock_inside_munmap_retries_after_it() -> None:
    out = force(SUITE, [("victim", DOWN_WRITE), ("oom_reaper", TRYLOCK),
                        ("oom_reaper", "3. schedule_timeout_idle(HZ/10)"),
                        ("victim", UP_WRITE), ("oom_reaper", TRYLOCK),
                        ("oom_reaper", "3. up_read(mmap_sem)")], params=MODERN)
    assert out.failure is None, out.failure.report()
    reaper = labels(out, "oom_reaper")
    assert reaper.count(TRYLOCK) == 2 and "3. up_read(mmap_sem)" in reaper
    # the second attempt found only the lower vma: munmap freed page1 itself
    assert "zap_pte_range: page_remove_rmap(page1)" in labels(out, "victim")
    assert "zap_pte_range: page_remove_rmap(page1)" not in reaper


def test_both_attempts_inside_munmap_give_up() -> None:
    out = force(SUITE, [("victim", DOWN_WRITE), ("oom_reaper", TRYLOCK), ("oom_reaper", TRYLOCK),
                        ("oom_reaper", "3. oom_reaper: unable to reap; MMF_OOM_SKIP"),
                        ("victim", UP_WRITE)], params=MODERN)
    assert out.failure is None, out.failure.report()
    assert "3. up_read(mmap_sem)" not in labels(out, "oom_reaper")


def test_reaper_first_munmap_finds_the_pte_gone() -> None:
    out = force(SUITE, [("oom_reaper", "3. up_read(mmap_sem)"), ("victim", DOWN_WRITE)],
                params=MODERN)
    assert out.failure is None, out.failure.report()
    reaper = labels(out, "oom_reaper")
    assert "zap_pte_range: page_remove_rmap(page1)" in reaper
    assert not any("page_remove_rmap" in lb for lb in labels(out, "victim"))


# ---------------------------------------------------- the reaper, broken


async def _no_zap(tlb: Any, vma: Any, start: int, end: int, details: Any) -> None:
    """__oom_reap_task_mm without unmap_page_range."""


async def _ignores_trylock(mm: Any) -> bool:
    """oom_reap_task_mm that goes on when the trylock failed."""
    await down_read_trylock(mm.mmap_sem, label=TRYLOCK)
    ret = await oom_kill.__oom_reap_task_mm(mm)
    await up_read(mm.mmap_sem, label="3. up_read(mmap_sem)")
    return ret


async def _never_done(mm: Any, *, retries: int = oom_kill.MAX_OOM_REAP_RETRIES) -> bool:
    """oom_reap_task whose success test never fires: it retries a reaped mm
    and reports it unable to reap."""
    attempts = 0
    while True:
        attempts += 1
        await oom_kill.oom_reap_task_mm(mm)
        if attempts >= retries:
            await oom_kill.step("3. oom_reaper: unable to reap; MMF_OOM_SKIP")
            return False
        await oom_kill.step("3. schedule_timeout_idle(HZ/10)")


async def _never_gives_up(mm: Any, *, retries: int = oom_kill.MAX_OOM_REAP_RETRIES) -> bool:
    """oom_reap_task without its retry limit."""
    while True:
        if await oom_kill.oom_reap_task_mm(mm):
            return True
        await oom_kill.step("3. schedule_timeout_idle(HZ/10)")


@pytest.mark.parametrize("where, name, broken, kind", [
    ("mmemu.mm.oom_kill", "unmap_page_range", _no_zap, "OomReapIncomplete"),
    ("mmemu.mm.oom_kill", "oom_reap_task_mm", _ignores_trylock, "DataRace"),
    ("mmemu.races.oom_shapes", "oom_reap_task", _never_done, "VacuousSuite"),
    ("mmemu.races.oom_shapes", "oom_reap_task", _never_gives_up, "Livelock"),
])
def test_a_broken_reaper_is_caught(monkeypatch: pytest.MonkeyPatch, where: str, name: str,
                                   broken: Any, kind: str) -> None:
    monkeypatch.setattr(f"{where}.{name}", broken)
    res = mmemu.explore(SUITE, strategy=mmemu.DFS(max_preemptions=None), executions=20_000,
                        params=MODERN, max_steps=200)
    f = res.failure
    assert f is not None, f"{name} broken as {broken.__doc__!r} was not caught"
    assert f.kind == kind, f.report()
    assert f.preemptions <= 2, f.report()


def test_oom_reap_incomplete_fires_when_its_rule_is_broken() -> None:
    """check_reaped on a victim that still maps its anonymous page."""
    from mmemu.races import oom_shapes

    async def scenario(sim: Any) -> None:
        from mmemu.check import boot_checked
        from mmemu.kernel.locking import down_write, up_write
        from mmemu.mm.memory import fault_in
        from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, mm_alloc
        kernel = boot_checked(sim, npages=4, api="modern")
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start, write=True)
        oom_shapes.check_reaped(sim, mm)

    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=None), executions=10)
    assert res.failure is not None and res.failure.kind == "OomReapIncomplete"
