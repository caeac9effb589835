"""Optimal DPOR (mirrors mmemu/engine/_dpor.py): the published counts of the
DPOR literature, one execution per Mazurkiewicz trace, nothing missed
against the full search, sleep-set blocked runs abandoned."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import mmemu
from mmemu import DFS
from mmemu.benchmarks import dpor_programs as P
from mmemu.engine._execution import Simulation

from ._programs import Program, generate, scenario
from ._support import RecordingDFS


def _count(sc: Any, reduction: str = "dpor") -> mmemu.Result:
    res = mmemu.explore(sc, strategy=DFS(reduction=reduction), executions=100_000,
                        stop_on_failure=False, shrink=False)
    assert res.exhausted and not res.failures
    return res


def _optimal(sc: Any, want: int) -> None:
    res = _count(sc)
    assert (res.executions, res.blocked, res.traces) == (want, 0, want)


# ------------------------------------------------- the published counts


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_readers(n: int) -> None:
    _optimal(P.readers(n), 2 ** n)
    # source-DPOR too: each reversal's initials need the racing step's whole
    # causal past (a clock without its reads-from lost all but N+1 traces)
    assert _count(P.readers(n), "source").traces == 2 ** n


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_lastzero(n: int) -> None:
    _optimal(P.lastzero(n), (n + 3) * 2 ** (n - 2))


@pytest.mark.parametrize("n, want", [(12, 8), (13, 64)])
def test_indexer(n: int, want: int) -> None:
    _optimal(P.indexer(n), want)


@pytest.mark.parametrize("n, want", [(14, 2), (16, 8)])
def test_filesystem(n: int, want: int) -> None:
    _optimal(P.filesystem(n), want)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_mutex_order(n: int) -> None:
    _optimal(P.mutex_order(n), math.factorial(n))


@pytest.mark.parametrize("k", [1, 2, 3])  # 3: 1,680 traces, enough to see hash collisions
def test_three_cpus_on_one_object(k: int) -> None:
    _optimal(P.three_on_one(k), math.factorial(3 * k) // math.factorial(k) ** 3)


# Counted with reduction "none" (distinct Mazurkiewicz traces): the trylock
# programs match Nidhugg's reference counts (24, 3, 16); the others differ
# from it because Nidhugg counts weak traces (unobserved write orders merged).
@pytest.mark.parametrize("make, n, want", [
    (P.n_writers_a_reader, 3, 24), (P.n_writes_a_read_two_threads, 2, 14),
    (P.redundant_co, 2, 90), (P.mutex_trylock_unlock, 3, 24), (P.mutex_vs_trylock, 1, 3),
    (P.mutex_vs_trylock, 2, 16),
], ids=lambda x: getattr(x, "__name__", str(x)))
def test_nidhugg_programs_run_one_execution_per_trace(make: Callable[[int], Any], n: int,
                                                      want: int) -> None:
    _optimal(make(n), want)


@pytest.mark.parametrize("stuck, want", [(None, 3), (2, 5), (0, 5)])
def test_mutex_deadlock_programs(stuck: int | None, want: int) -> None:
    # Nidhugg's mutex_deadlock(3) / mutex_deadlock_one / _one_first: every
    # execution ends in a deadlock; each order of the critical sections that
    # can happen is one trace
    res = mmemu.explore(P.mutex_deadlock(3, stuck=stuck), strategy=DFS(), executions=1000,
                        stop_on_failure=False, shrink=False)
    assert res.exhausted
    assert {f.kind for f in res.failures} == {"Deadlock"}
    assert (res.executions, res.blocked, res.traces) == (want, 0, want)


# ------------------------------------------- nothing missed, nothing twice


def _classes(sc: Any, reduction: str, budget: int = 100_000) -> set[Any]:
    dfs = RecordingDFS(reduction=reduction)
    res = mmemu.explore(sc, strategy=dfs, executions=budget, stop_on_failure=False,
                        shrink=False)
    assert res.exhausted
    return set(dfs.classes)


def _small_programs(count: int, limit: int) -> list[tuple[int, Program, int]]:
    """The first ``count`` generated programs whose full search runs at most
    ``limit`` executions, with that number."""
    out = []
    seed = 0
    while len(out) < count:
        prog = generate(seed)
        res = mmemu.explore(scenario(prog), strategy=DFS(reduction="none"), executions=limit,
                            stop_on_failure=False, shrink=False)
        if res.exhausted:
            out.append((seed, prog, res.executions))
        seed += 1
    return out


SMALL = _small_programs(20, 200)


@pytest.mark.parametrize("seed, program, n_full", SMALL, ids=[f"seed{s}" for s, _p, _n in SMALL])
def test_reductions_find_every_trace_of_the_full_search(seed: int, program: Program,
                                                        n_full: int) -> None:
    """Random programs with locks, trylocks, an rwlock and branches: each
    reduction reaches every class the full search reaches (traces, and for a
    failing execution the failure and its causal past); optimal DPOR runs
    one execution per class when nothing fails."""
    sc = scenario(program)
    full = _classes(sc, "none")
    for reduction in ("dpor", "source", "sleep"):
        dfs = RecordingDFS(reduction=reduction)
        res = mmemu.explore(sc, strategy=dfs, executions=100_000, stop_on_failure=False,
                            shrink=False)
        assert res.exhausted
        assert set(dfs.classes) == full, (reduction, program)
        if reduction == "dpor" and not res.failures:
            assert (res.executions, res.blocked) == (len(full), 0), program
            assert res.traces == len(full)


# Programs the random ones missed at first (shrunk): a CPU deadlocking on a
# lock it holds ends the execution at once, so as a sleeping CPU it must not
# stand for "its step first, then the rest" (the rest never ran); and a
# writer enabled on the rwlock when another CPU failed must be ordered after
# the failing step, like any CPU that could run.
FOUND: list[Program] = [
    [[("lock", "A", [("lock", "A", [])])], [("read", [])], [("write", [("write", [])])]],
    [[("lock", "A", [("lock", "A", [("w", "y")])])], [("w", "z"), ("read", [])],
     [("write", [("if", "x", [("w", "x")], [("r", "x")])]),
      ("write", [("write", [("r", "x")])])]],
]


# Four CPUs, shrunk from a random program (seed 1082 of 4 CPUs x 4
# operations): the reversal of a release and a trylock (CPU 3's trylock
# failing inside CPU 0's section) must carry the steps that came AFTER the
# trylock in the execution and do not happen after the release (CPU 2's
# write of x before CPU 1's).  With notdep cut at the trylock, the reversal
# was judged covered by CPU 1's sleeping write -- which covers only the
# order with CPU 1's write first -- and one of 56 traces was never run.
NOTDEP_TO_THE_END: Program = [
    [("lock", "B", [("w", "z")])],
    [("lock", "B", []), ("w", "x")],
    [("w", "x")],
    [("w", "z"), ("try", "B", [("w", "x")])],
]

# Shrunk from seed 1168 of the same campaign: the race of CPU 3's release
# and CPU 1's trylock is old (both steps in the prefix the next execution
# replays), but the steps after it changed (CPU 2 reads y before CPU 0
# writes it): reversed with the new tail, it gives the one trace of 14 in
# which the trylock fails and CPU 2 does not read x.  Only new races were
# reversed, so it was never run.
OLD_RACE_NEW_TAIL: Program = [
    [("w", "y")],
    [("try", "B", [("if", "y", [], [])])],
    [("if", "y", [("if", "x", [], [])], [])],
    [("w", "x"), ("lock", "B", [])],
]


@pytest.mark.parametrize("program,traces", [(NOTDEP_TO_THE_END, 56), (OLD_RACE_NEW_TAIL, 14)],
                         ids=["notdep-to-the-end", "old-race-new-tail"])
def test_a_reversal_keeps_the_independent_steps_after_the_race(program: Program,
                                                               traces: int) -> None:
    sc = scenario(program)
    full = _classes(sc, "sleep")
    assert len(full) == traces
    dfs = RecordingDFS(reduction="dpor")
    res = mmemu.explore(sc, strategy=dfs, executions=1000, stop_on_failure=False, shrink=False)
    assert set(dfs.classes) == full
    assert res.executions == traces and res.blocked == 0  # still one run per trace


@pytest.mark.parametrize("program", FOUND, ids=[f"found{k}" for k in range(len(FOUND))])
def test_failing_cpus_do_not_hide_other_failures(program: Program) -> None:
    sc = scenario(program)
    full = _classes(sc, "none")
    for reduction in ("dpor", "source", "sleep"):
        assert _classes(sc, reduction) == full, reduction


def test_the_random_programs_exercise_locks_branches_and_failures() -> None:
    text = repr([p for _s, p, _n in SMALL])
    for word in ("'lock'", "'try'", "'read'", "'write'", "'if'"):
        assert word in text
    failing = 0
    for _s, prog, _n in SMALL:
        res = mmemu.explore(scenario(prog), strategy=DFS(), executions=1000,
                            stop_on_failure=False, shrink=False)
        failing += bool(res.failures)
    assert 0 < failing < len(SMALL)


# ------------------------------------------------ sleep-set blocked runs


def test_sleep_set_blocked_runs_are_abandoned_even_after_the_last_choice() -> None:
    # Store buffering: with plain sleep sets some runs become blocked after
    # the last choice point (only a sleeping CPU is left).  They are
    # abandoned as soon as that happens and not counted as executions.
    abandoned_at: list[tuple[int, int]] = []

    class Keep(DFS):
        def end(self, sim: Simulation) -> None:
            if sim.abandoned:
                abandoned_at.append((len(sim.events), len(sim.choices)))
            super().end(sim)

    async def sb(sim: Any) -> None:
        x, y = P.Cell("x"), P.Cell("y")

        async def cpu(mine: P.Cell, other: P.Cell) -> None:
            await P.store(mine, 1)
            await P.load(other)

        async with sim.cpus() as cpus:
            cpus.start(cpu, x, y, name="a")
            cpus.start(cpu, y, x, name="b")

    full = _classes(sb, "none")
    res = mmemu.explore(sb, strategy=Keep(reduction="sleep"), executions=1000)
    assert res.exhausted
    assert res.executions == len(full) == res.traces
    assert res.blocked == len(abandoned_at) > 0
    # a complete run has 6 steps; an abandoned one stopped before that
    assert all(steps < 6 for steps, _c in abandoned_at)
    # optimal DPOR never needs to abandon one here
    _optimal(sb, len(full))


def test_optimal_beats_source_dpor_on_lastzero() -> None:
    optimal = _count(P.lastzero(5), "dpor")
    source = _count(P.lastzero(5), "source")
    assert optimal.executions == source.executions == 64  # complete runs: one per trace
    assert optimal.blocked == 0 < source.blocked


def test_a_resumed_checkpoint_still_covers_every_trace(tmp_path: Any) -> None:
    # the wakeup trees saved in a checkpoint keep their CPUs, not the
    # accesses of their steps (objects of an execution long gone): restored
    # steps count as conflicting with everything, which may add executions
    # but never loses a trace
    sc = P.lastzero(4)
    whole = RecordingDFS()
    mmemu.explore(sc, strategy=whole, executions=10_000)
    path = tmp_path / "dfs.json"
    first = RecordingDFS(checkpoint=path)
    part = mmemu.explore(sc, strategy=first, executions=9)
    assert not part.exhausted
    second = RecordingDFS(checkpoint=path)
    rest = mmemu.explore(sc, strategy=second, executions=10_000)
    assert rest.exhausted
    assert set(first.classes) | set(second.classes) == set(whole.classes)
    assert part.executions + rest.executions >= len(set(whole.classes)) == 28
