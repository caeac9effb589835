"""KSM merges against the owner's write fault and zap
(mmemu/races/ksm_shapes.py): both pass on the correct model and reach a
merge; replace_page without its pte_same test is caught by the zap race
within 2 preemptions."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from ._support import assert_caught, explore

load_builtin()


@pytest.mark.parametrize("suite", ["ksm:merge-vs-write-fault", "ksm:merge-vs-zap"])
def test_correct_model_passes_and_merges(suite: str) -> None:
    res = explore(suite)
    assert res.failure is None, res.failure.report()
    assert not res.coverage.unreached, res.coverage.unreached
    doc = get_scenario(suite).doc
    assert "critical interleavings that matter" in doc and "Harmless" in doc


def test_replace_page_without_pte_same_is_caught_by_the_zap() -> None:
    assert_caught("ksm:merge-vs-zap", "ksm:replace-no-pte-same", ("BadPageState",
                                                                 "InvariantViolation"))
