"""A device that faults on its own while the process exits
(notifier:exit-vs-device-fault in mmemu/races/device_fault_shapes.py): the
correct drivers pass and reach their refusal (GRU's ms_released, SVA's
cleared context descriptor, HMM's mmget_not_zero); each refusal taken out
of the real code (as the mutation benchmark's operators take it out) maps
a page that exit_mmap then frees."""

from __future__ import annotations

from typing import Any

import pytest

from mmemu.engine._registry import get_scenario, load_builtin

from ._support import assert_passes_and_reaches, explore

load_builtin()

SUITE = "notifier:exit-vs-device-fault"
RUNS = [{"driver": "gru"}, {"driver": "sva", "api": "modern"},
        {"driver": "hmm", "api": "modern"}]


@pytest.mark.parametrize("params", RUNS, ids=lambda p: "-".join(p.values()))
def test_the_suite_passes_and_reaches_the_drivers_refusal(params: dict[str, Any]) -> None:
    assert_passes_and_reaches(SUITE, critical=2, params=params)


def test_kvm_and_modern_gru_are_not_run() -> None:
    combos = get_scenario(SUITE).combinations()
    # vcpu faults come from the process's own threads; modern GRU has no
    # ->release to end its translations at exit (no_release_apis)
    assert {"driver": "kvm"} not in combos and {"driver": "kvm", "api": "modern"} not in combos
    assert {"driver": "gru", "api": "modern"} not in combos
    assert all(p in combos for p in RUNS)


def _patched(monkeypatch: pytest.MonkeyPatch, fn: Any, old: str, new: str) -> None:
    from tests.check.test_pte_vma import _mutant
    monkeypatch.setattr(fn, "__code__", _mutant(fn, (old, new)).__code__)


@pytest.mark.parametrize("driver,api,cls,method,old,new", [
    ("gru", None, "mmemu.drivers.gru:GruDriver", "release",
     "self.gms.ms_released = 1", "pass"),
    ("gru", None, "mmemu.drivers.gru:GruDriver", "gru_try_dropin",
     "if self.ms_released:", "if False:"),
    ("sva", "modern", "mmemu.drivers.sva:SvaDevice", "release",
     "self.cd_live = False", "pass"),
    ("sva", "modern", "mmemu.drivers.sva:SvaDevice", "fault",
     "if not self.cd_live:", "if False:"),
], ids=["gru-release-no-ms_released", "gru-dropin-ignores-ms_released",
        "sva-release-keeps-cd", "sva-walk-ignores-cd"])
def test_a_fault_after_release_maps_a_page_exit_frees(
        driver: str, api: str | None, cls: str, method: str, old: str, new: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    mod, _, name = cls.partition(":")
    _patched(monkeypatch, getattr(getattr(importlib.import_module(mod), name), method), old, new)
    params = {"driver": driver} | ({"api": api} if api else {})
    f = explore(SUITE, params=params, bound=None).failure
    assert f is not None and f.kind == "FreedPageStillMapped", f and f.report()
    assert f.preemptions <= 2, f.report()


def test_hmm_faulting_into_an_exiting_mm_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.drivers.hmm import HmmMirror
    _patched(monkeypatch, HmmMirror.fault, "if not await mmget_not_zero(mm):",
             "if not await mmget_not_zero(mm) and False:")
    f = explore(SUITE, params={"driver": "hmm", "api": "modern"}, bound=None).failure
    assert f is not None, "an HMM fault into an exiting mm went unseen"
    assert f.preemptions <= 2, f.report()
