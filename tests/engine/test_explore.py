"""Exploration, shrinking, replay and nondeterminism (mirrors
mmemu/engine/_explore.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import mmemu
from mmemu import DFS, PCT, Random
from mmemu.engine import Schedule
from mmemu.engine._registry import scenario_name

from ._support import Obj, Spy

LOST = "counter is 1, expected 2 (an increment was lost)"


@pytest.mark.parametrize("strategy", [Random(0), PCT(2, 0), DFS(), DFS(reduction="none"),
                                      DFS(max_preemptions=1)],
                         ids=["random", "pct", "dfs-dpor", "dfs-none", "dfs-bound1"])
def test_lost_update_found_and_shrunk(strategy: Any) -> None:
    res = mmemu.explore("demo:lost-update", strategy=strategy, executions=2000)
    f = res.failure
    assert f is not None, f"{strategy.describe()} missed the lost update"
    assert res.failures == (f,)
    assert f.kind == "InvariantViolation"
    assert f.message == LOST
    assert f.preemptions == 1
    assert f.steps == 6
    assert f.schedule.startswith("mm1.")
    assert res.exhausted is False  # a failure stops the search


def test_locked_lost_update_is_exhausted_clean() -> None:
    res = mmemu.explore("demo:lost-update-locked", strategy=DFS(), executions=10_000)
    assert res.failure is None
    assert res.exhausted is True
    full = mmemu.explore("demo:lost-update-locked", strategy=DFS(reduction="none"),
                         executions=10_000)
    assert full.failure is None and full.exhausted is True
    assert res.executions < full.executions


def test_replay_in_process_gives_the_same_report() -> None:
    f = mmemu.explore("demo:lost-update", strategy=Random(3), executions=500).failure
    assert f is not None
    out = mmemu.replay(None, f.schedule)
    assert out.failure is not None
    assert out.failure.report() == f.report()
    assert (out.steps, out.preemptions) == (f.steps, f.preemptions)
    assert out.trace == f.trace


def _replay_elsewhere(token: str, hashseed: str) -> str:
    code = ("import sys, mmemu\n"
            "out = mmemu.replay(None, sys.argv[1])\n"
            "sys.stdout.write(out.failure.report())\n")
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    proc = subprocess.run([sys.executable, "-c", code, token], capture_output=True,
                          env=env, timeout=60, check=True)
    return proc.stdout.decode()


def test_replay_in_other_processes_is_byte_identical() -> None:
    f = mmemu.explore("demo:lost-update", strategy=PCT(2, 5), executions=500).failure
    assert f is not None
    a = _replay_elsewhere(f.schedule, "1")
    b = _replay_elsewhere(f.schedule, "4242")
    assert a == f.report()
    assert b == a


# ------------------------------------------------------------- shrinking

async def noisy_lost_update(sim: Any) -> None:
    """The lost update behind private steps: Random preempts a lot before
    the two increments overlap, but one preemption is enough."""
    counter = Obj("counter")

    async def cpu(i: int) -> None:
        mine = Obj(f"private{i}")
        for n in range(6):
            await mmemu.step(f"private work {n}", writes=(mine,))
        await mmemu.step("1. tmp = counter", reads=(counter,))
        tmp = counter.value
        for n in range(3):
            await mmemu.step(f"more private work {n}", writes=(mine,))
        await mmemu.step("2. counter = tmp + 1", writes=(counter,))
        counter.value = tmp + 1

    async with sim.cpus() as cpus:
        cpus.start(cpu, 0, name="inc0")
        cpus.start(cpu, 1, name="inc1")
    sim.check(counter.value == 2, f"counter is {counter.value}")


def test_shrinking_finds_the_one_preemption_failure() -> None:
    raw = mmemu.explore(noisy_lost_update, strategy=Random(0), executions=200, shrink=False)
    assert raw.failure is not None
    assert raw.failure.preemptions > 1  # the scenario does what it is for
    shrunk = mmemu.explore(noisy_lost_update, strategy=Random(0), executions=200)
    f = shrunk.failure
    assert f is not None
    assert f.kind == raw.failure.kind == "InvariantViolation"
    assert f.preemptions == 1
    assert f.steps <= raw.failure.steps
    assert shrunk.executions == raw.executions  # same first failure, then shrunk
    # the shrunk schedule still fails when replayed
    out = mmemu.replay(noisy_lost_update, f.schedule)
    assert out.failure is not None and out.failure.message == f.message


# ------------------------------------------------------- nondeterminism

N_CPUS = 3


async def fickle(sim: Any) -> None:
    """Starts N_CPUS CPUs; the test changes the module global between runs,
    as a scenario with hidden global state would."""
    x = Obj("x")

    async def cpu() -> None:
        await mmemu.step("read x", reads=(x,))
        v = x.value
        await mmemu.step("write x", writes=(x,))
        x.value = v + 1

    async with sim.cpus() as cpus:
        for _ in range(N_CPUS):
            cpus.start(cpu)
    sim.check(x.value == N_CPUS, f"x is {x.value}")


def test_replay_of_a_diverging_scenario_names_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    f = mmemu.explore(fickle, strategy=DFS(), executions=100).failure
    assert f is not None
    sched = Schedule.from_token(f.schedule)
    assert 2 in sched.choices, "the failing schedule should involve cpu2"
    assert mmemu.replay(fickle, f.schedule).failure is not None
    monkeypatch.setattr(sys.modules[__name__], "N_CPUS", 2)
    with pytest.raises(mmemu.NondeterminismError,
                       match=r"^at step \d+ .*the scenario does not behave as when the token "
                             r"was recorded"):
        mmemu.replay(fickle, f.schedule)


def test_replay_choosing_a_cpu_that_cannot_run_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    token = Schedule(scenario=scenario_name(fickle), choices=(2, 2, 2, 0, 0, 0)).to_token()
    assert mmemu.replay(fickle, token).failure is None
    monkeypatch.setattr(sys.modules[__name__], "N_CPUS", 2)
    with pytest.raises(mmemu.NondeterminismError,
                       match=r"^at step 0 \(choice 0\) the schedule chooses cpu2, "
                             r"but only cpu0 \(cpu\), cpu1 \(cpu\) can run"):
        mmemu.replay(fickle, token)


def test_replay_with_choices_left_over_is_nondeterminism() -> None:
    token = Schedule(scenario=scenario_name(fickle), choices=(2, 2, 2, 0, 0, 0, 1)).to_token()
    with pytest.raises(mmemu.NondeterminismError,
                       match=r"^at step 9 the execution finished with 1 of the schedule's 7 "
                             r"choices unused"):
        mmemu.replay(fickle, token)


_calls = 0


async def counting(sim: Any) -> None:
    """Starts one more CPU on every other call: DFS must notice."""
    global _calls
    _calls += 1
    x = Obj("x")

    async def cpu() -> None:
        await mmemu.step("write x", writes=(x,))

    async with sim.cpus() as cpus:
        for _ in range(2 + _calls % 2):
            cpus.start(cpu)


def test_dfs_notices_a_scenario_that_changes_between_executions() -> None:
    with pytest.raises(mmemu.NondeterminismError, match=r"DFS replay diverged at step 0"):
        mmemu.explore(counting, strategy=DFS(reduction="none"), executions=100)


def test_token_of_another_scenario_is_refused() -> None:
    f = mmemu.explore("demo:lost-update", strategy=DFS(), executions=100).failure
    assert f is not None
    with pytest.raises(mmemu.ModelError, match="not"):
        mmemu.replay(fickle, f.schedule)


def test_replay_of_a_passing_schedule() -> None:
    spy = Spy(DFS())
    res = mmemu.explore("demo:lost-update-locked", strategy=spy, executions=3)
    assert res.executions == 3
    token = Schedule(scenario="demo:lost-update-locked", choices=spy.choices[-1]).to_token()
    out = mmemu.replay(None, token)
    assert out.failure is None
    assert out.steps == spy.steps[-1]
