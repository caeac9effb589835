"""notifier:unregister-vs-invalidate reaches its goal with a driver whose
range_start ends in an unlock (a regression test, issue 13).

The suite's notifier watch touches the notifier list at the end of every
driver callback (``touch``).  Until 2026-11-26 the sleep sets judged a
sleeping CPU by its declared accesses only, so the callback's last step
(here EagainDev's mutex_unlock) slept through the unhash it conflicts
with: optimal DPOR abandoned the goal's executions as sleep-set blocked and
exhausted without ever running the goal (a walker's callback still running
when unregister unhashed the notifier).  Sleep sets now keep what a
sleeping step touched (tests/engine/test_touch.py)."""

from __future__ import annotations

import pytest

import mmemu
from mmemu import DFS
from mmemu.driver import register_driver

from tests.workload.fixtures import EagainDev

GOAL = "a walker's callback was still running when the notifier was unhashed"


def _reached(reduction: str) -> int:
    # EagainDev's range_start ends in a mutex_unlock: the step the watch
    # touches at the callback's end
    old = register_driver("eagain", EagainDev)
    try:
        res = mmemu.explore("notifier:unregister-vs-invalidate",
                            params={"driver": "eagain", "api": "modern"},
                            strategy=DFS(max_preemptions=None, reduction=reduction),
                            executions=5000, coverage=True, reaches=())
    finally:
        register_driver("eagain", old)
    assert res.exhausted and res.ok
    return sum(v[0] for (kind, name), v in res.coverage.counts.items() if GOAL in name)


@pytest.mark.parametrize("reduction", ["dpor", "sleep"])
def test_the_goal_is_reached(reduction: str) -> None:
    assert _reached(reduction) > 0
