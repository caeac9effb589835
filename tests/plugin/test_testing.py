"""mmemu.testing: Hypothesis-drawn schedules, run_schedule, force."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

import mmemu
from mmemu.engine import Guided
from mmemu.testing import (
    HypothesisSchedule,
    InterleavingError,
    ScheduleError,
    force,
    force_async,
    run_schedule,
    run_schedule_async,
    schedules,
)

LOAD = "1. tmp = counter"
STORE = "2. counter = tmp + 1"


# ------------------------------------------------------------ Hypothesis


def _hypothesis_search(scenario: str, max_examples: int = 200) -> tuple[list[HypothesisSchedule],
                                                                        BaseException | None]:
    """Run a @given test over ``scenario``; every schedule it ran, and what
    it raised.  Hypothesis runs the shrunk example last, to report it."""
    ran: list[HypothesisSchedule] = []

    @settings(derandomize=True, database=None, max_examples=max_examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(schedule=schedules())
    def check(schedule: HypothesisSchedule) -> None:
        outcome = run_schedule(scenario, schedule)
        ran.append(schedule)
        assert outcome.failure is None, outcome.failure.message

    try:
        check()
    except AssertionError as exc:
        return ran, exc
    return ran, None


def test_hypothesis_finds_lost_update_and_shrinks_to_one_preemption() -> None:
    ran, exc = _hypothesis_search("demo:lost-update")
    assert exc is not None, "Hypothesis did not find the lost update"
    assert "counter is 1, expected 2" in str(exc)
    final = ran[-1]
    assert final.outcome is not None and final.outcome.failure is not None
    assert final.token is not None
    # The shrunk example, replayed from its token in a fresh run: 1 preemption.
    replayed = mmemu.replay(None, final.token)
    assert replayed.failure is not None
    assert replayed.failure.kind == "InvariantViolation"
    assert replayed.preemptions == 1
    # ... and the same through Guided, from the CPU ids Hypothesis chose.
    guided = mmemu.explore("demo:lost-update", strategy=Guided(final.choices, strict=True),
                           executions=1, shrink=False)
    assert guided.failure is not None and guided.failure.preemptions == 1
    # The failing example notes its token for the person reading the failure.
    notes = "\n".join(getattr(exc, "__notes__", []))
    assert f"mmemu replay {final.token}" in notes
    assert "1 preemption" in notes


def test_hypothesis_passes_a_correct_scenario() -> None:
    ran, exc = _hypothesis_search("demo:lost-update-locked", max_examples=50)
    assert exc is None
    assert len(ran) == 50
    # Hypothesis did explore: several distinct interleavings were drawn.
    assert len({s.choices for s in ran}) > 3


def test_schedule_choice_zero_means_no_preemption() -> None:
    # An all-zero draw sequence is the non-preemptive run: pin that down
    # through a list of CPU ids, the other input run_schedule takes.
    outcome = run_schedule("demo:lost-update", [])
    assert outcome.failure is None and outcome.preemptions == 0


# ---------------------------------------------------------- run_schedule


def test_run_schedule_with_cpu_ids() -> None:
    # choice points: cpu0 starts, cpu0 loads, then cpu1 preempts before the store
    outcome = run_schedule("demo:lost-update", [0, 0, 1])
    assert outcome.failure is not None
    assert outcome.failure.kind == "InvariantViolation"
    assert outcome.preemptions == 1
    assert mmemu.replay(None, outcome.failure.schedule).preemptions == 1


def test_run_schedule_rejects_a_cpu_that_cannot_run() -> None:
    with pytest.raises(ScheduleError, match="choice 2 .* names cpu7, but only cpu0 .* can run"):
        run_schedule("demo:lost-update", [0, 0, 7])
    with pytest.raises(mmemu.ModelError, match="to replay a token use mmemu.replay"):
        run_schedule("demo:lost-update", "mm1.abc")  # type: ignore[arg-type]


def test_async_variants_run_inside_trio() -> None:
    import trio

    async def main() -> None:
        outcome = await run_schedule_async("demo:lost-update", [0, 0, 1])
        assert outcome.failure is not None
        forced = await force_async("demo:lost-update", [(1, LOAD), (0, LOAD)])
        assert forced.failure is not None

    trio.run(main)


# ----------------------------------------------------------------- force


def test_force_the_lost_update() -> None:
    outcome = force("demo:lost-update", [(0, LOAD), (1, LOAD), (1, STORE), (0, STORE)])
    assert outcome.failure is not None
    assert outcome.failure.kind == "InvariantViolation"
    assert outcome.preemptions == 1
    labels = [(e.cpu, e.label) for e in outcome.trace.events if e.label != "<start>"]
    assert labels == [(0, LOAD), (1, LOAD), (1, STORE), (0, STORE)]


def test_force_the_other_way_round() -> None:
    # the same steps with cpu1's store before cpu0's: still lost
    outcome = force("demo:lost-update", [("cpu1", LOAD), ("cpu0", LOAD), (0, STORE), (1, STORE)])
    assert outcome.failure is not None
    # serialised: nothing lost
    outcome = force("demo:lost-update", [(0, STORE), (1, LOAD)])
    assert outcome.failure is None and outcome.preemptions == 0


def test_force_is_replayable() -> None:
    outcome = force("demo:lost-update", [(1, LOAD), (0, LOAD)])
    assert outcome.failure is not None
    again = mmemu.replay(None, outcome.failure.schedule)
    assert again.failure is not None
    assert again.failure.report() == outcome.failure.report()


def test_force_rejects_an_impossible_order() -> None:
    # under the lock, cpu1 cannot load while cpu0 holds it before its store
    with pytest.raises(InterleavingError, match=r"cpu0 \(inc\) ran '2. counter = tmp \+ 1' .* "
                                                r"before \(cpu1, '1. tmp = counter'\)"):
        force("demo:lost-update-locked", [(0, LOAD), (1, LOAD), (0, STORE)])


def test_force_rejects_a_step_that_never_runs() -> None:
    with pytest.raises(InterleavingError, match=r"finished without running \(cpu0, 'no such'\)"):
        force("demo:lost-update", [(0, "no such")])
    # program order cannot be reversed
    with pytest.raises(InterleavingError, match=r"without running \(cpu0, '1. tmp = counter'\)"):
        force("demo:lost-update", [(0, STORE), (0, LOAD)])


def test_force_names_cpus_clearly() -> None:
    with pytest.raises(InterleavingError, match="'inc' is ambiguous"):
        force("demo:lost-update", [("inc", LOAD)])
    with pytest.raises(InterleavingError, match=r"no CPU 5 .*cpu0 \(inc\), cpu1 \(inc\)"):
        force("demo:lost-update", [(5, LOAD)])
    with pytest.raises(mmemu.ModelError, match="pairs"):
        force("demo:lost-update", [(0, LOAD, "extra")])  # type: ignore[list-item]
    with pytest.raises(mmemu.ModelError, match="empty"):
        force("demo:lost-update", [])


async def _two_named(sim: mmemu.Simulation) -> None:
    """CPUs with distinct names, for force by name."""
    log: list[str] = []

    async def writer(tag: str) -> None:
        await mmemu.step("write", writes=("log",))
        log.append(tag)

    async with sim.cpus() as cpus:
        cpus.start(writer, "r", name="reader")
        cpus.start(writer, "w", name="writer")
    sim.check(log == ["r", "w"], f"log is {log}")


def test_force_by_cpu_name() -> None:
    assert force(_two_named, [("reader", "write"), ("writer", "write")]).failure is None
    outcome = force(_two_named, [("writer", "write"), ("reader", "write")])
    assert outcome.failure is not None and "['w', 'r']" in outcome.failure.message
