"""Race tests with the mmemu pytest plugin: a worked example.

Run:  python -m pytest examples/test_with_plugin.py

(The project's own test run collects only ``tests/``, its ``testpaths``;
``tests/plugin/test_examples.py`` runs this file explicitly.)

The plugin comes with mmemu (a ``pytest11`` entry point): nothing to enable.
It adds the ``mmemu_explore`` fixture and the ``--mmemu-*`` options; the
header of the run shows the base seed every test's seed derives from.

To see what a caught race looks like, run::

    MMEMU_EXAMPLE_SHOW_RACE=1 python -m pytest examples/test_with_plugin.py -k show

``test_show_a_race`` then fails with the shrunk report and, in a section
titled ``mmemu``, a ``reproduce with: pytest '...' --mmemu-replay=TOKEN``
line: paste it to replay exactly that execution.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings

from mmemu.pytest_plugin import MmemuExplorer
from mmemu.testing import HypothesisSchedule, force, run_schedule, schedules


def test_locked_counter_never_loses_an_update(mmemu_explore: MmemuExplorer) -> None:
    # No budget given: the scenario's own (exhaustive DFS), unless the
    # command line says otherwise (--mmemu-strategy, --mmemu-executions, ...).
    result = mmemu_explore("demo:lost-update-locked")
    assert result.exhausted


def test_the_unlocked_counter_is_caught(mmemu_explore: MmemuExplorer) -> None:
    # expect="fail": the test fails if the race is NOT found, and gets the
    # (shrunk) failure to check it is the expected one.
    result = mmemu_explore("demo:lost-update", expect="fail")
    assert result.failure is not None
    assert result.failure.kind == "InvariantViolation"
    assert result.failure.preemptions == 1


@pytest.mark.trio
async def test_in_an_async_test(mmemu_explore: MmemuExplorer) -> None:
    # Inside trio (pytest-trio), explore in the test's own trio run.
    result = await mmemu_explore.explore_async("demo:lost-update-locked",
                                               strategy="random", executions=200)
    assert result.ok


@settings(max_examples=50, derandomize=True, database=None, deadline=None)
@given(schedule=schedules())
def test_hypothesis_draws_the_schedule(schedule: HypothesisSchedule) -> None:
    # Hypothesis picks the CPU at every choice point; on a failure it shrinks
    # the interleaving and notes the replay token of the shrunk one.
    outcome = run_schedule("demo:lost-update-locked", schedule)
    assert outcome.failure is None


def test_force_the_interleaving_from_the_comment() -> None:
    # The interleaving demo.py's comment describes, step by step.
    outcome = force("demo:lost-update", [
        (0, "1. tmp = counter"),
        (1, "1. tmp = counter"),
        (1, "2. counter = tmp + 1"),
        (0, "2. counter = tmp + 1"),
    ])
    assert outcome.failure is not None
    assert "an increment was lost" in outcome.failure.message


def test_show_a_race(request: pytest.FixtureRequest, mmemu_explore: MmemuExplorer) -> None:
    # Runs when asked to, or when the pasted reproduce line replays it.
    if not (os.environ.get("MMEMU_EXAMPLE_SHOW_RACE")
            or request.config.getoption("mmemu_replay")):
        pytest.skip("set MMEMU_EXAMPLE_SHOW_RACE=1 to see how a race is reported")
    mmemu_explore("demo:lost-update")
