"""A driver module unloaded right after its last mmu_notifier_put, while an
invalidation walks the list (notifier:put-vs-module-exit in
mmemu/races/module_shapes.py): the correct model passes for modern GRU and
SVA and reaches the wait; a module exit that does not wait for the queued
free_notifier (made here in process) runs the module's code after it is
gone."""

from __future__ import annotations

from typing import Any

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from ._support import assert_caught_in_process, assert_passes_and_reaches

load_builtin()

SUITE = "notifier:put-vs-module-exit"
RUNS = [{"driver": "gru", "api": "modern"}, {"driver": "sva", "api": "modern"}]


def test_only_drivers_whose_detach_does_not_wait_run() -> None:
    assert get_scenario(SUITE).combinations() == RUNS


@pytest.mark.parametrize("params", RUNS, ids=["gru", "sva"])
def test_the_suite_passes_and_reaches_the_wait(params: dict[str, Any]) -> None:
    assert_passes_and_reaches(SUITE, critical=1, params=params)


def test_a_module_exit_that_does_not_wait_frees_after_unload(
        monkeypatch: pytest.MonkeyPatch) -> None:
    f = assert_caught_in_process(
        monkeypatch, SUITE, "mmemu.mm.mmu_notifier", "mmu_notifier_synchronize",
        (("while ss.callbacks:", "while False:"),), "NotifierUseAfterFree",
        params={"driver": "sva", "api": "modern"})
    assert "after its module mmemu.drivers.sva was unloaded" in f.message, f.message
