"""fork against the parent's munmap and first fault (mmemu/races/fork_shapes.py):
each suite passes on the correct model, reaches both outcomes its comment
names, and catches dup_mmap without the parent's mmap_sem within 2
preemptions."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from ._support import assert_caught, explore

load_builtin()

SUITES = {"cow:fork-vs-munmap": "ForkLostPage", "cow:fork-vs-fault": "RmapMissesPte"}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_correct_model_passes_and_reaches_both_orders(suite: str) -> None:
    res = explore(suite)
    assert res.failure is None, res.failure.report()
    assert not res.coverage.unreached, res.coverage.unreached
    sc = get_scenario(suite)
    assert "critical interleaving" in sc.doc and "Harmless" in sc.doc
    assert "``fork:dup-mmap-no-mmap-sem``" in sc.doc


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_dup_mmap_without_the_parents_mmap_sem_is_caught(suite: str) -> None:
    assert_caught(suite, "fork:dup-mmap-no-mmap-sem", SUITES[suite])
