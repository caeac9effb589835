"""The documented Hypothesis settings (``max_examples=100,
derandomize=True``) find races that need one preemption (PCT depth 2),
including ones DFS finds within a few executions and kernel-model mutants
whose one preemption must land at one step among dozens."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from mmemu.testing import HypothesisSchedule, run_schedule, schedules

RACES = [
    ("demo:lost-update", {}, ()),
    ("pagecache:lookup-vs-reclaim", {"lookup": "find_get_page"}, ("filemap:no-recheck",)),
    ("mm:fault-vs-truncate", {}, ("memory:fault-unlocked",)),
    ("notifier:truncate-vs-fault", {"driver": "kvm"}, ("kvm:no-retry",)),
    ("pagecache:add-vs-lookup", {}, ("filemap:insert-before-lock",)),
]


@pytest.mark.parametrize(("scenario", "params", "mutants"), RACES,
                         ids=[r[0] + ("+" + r[2][0] if r[2] else "") for r in RACES])
def test_documented_settings_find_a_one_preemption_race(scenario: str, params: dict[str, Any],
                                                        mutants: tuple[str, ...]) -> None:
    ran: list[HypothesisSchedule] = []

    @settings(max_examples=100, derandomize=True, database=None, deadline=None)
    @given(schedule=schedules())
    def test(schedule: HypothesisSchedule) -> None:
        ran.append(schedule)
        outcome = run_schedule(scenario, schedule, params=params, mutants=mutants)
        assert outcome.failure is None

    with pytest.raises(AssertionError):
        test()
    # the final (shrunk) example is the race with the fewest preemptions
    last = ran[-1]
    assert last.outcome is not None and last.outcome.failure is not None
    assert last.outcome.preemptions == 1


def test_a_correct_scenario_passes_the_documented_settings() -> None:
    @settings(max_examples=100, derandomize=True, database=None, deadline=None)
    @given(schedule=schedules())
    def test(schedule: HypothesisSchedule) -> None:
        assert run_schedule("demo:lost-update-locked", schedule).failure is None

    test()
