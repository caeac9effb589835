"""mmemu.testing.check_driver / assert_driver_passes: every driver suite
against one driver, for every notifier API generation it supports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmemu
from mmemu.driver import DriverLoadError, load_driver
from mmemu.engine import ModelError
from mmemu.testing import (
    assert_driver_passes,
    check_driver,
    driver_name,
    driver_suites,
    registered_driver,
)

ROOT = Path(__file__).resolve().parents[2]
TOY = f"{ROOT / 'examples' / 'toy_driver.py'}:ToyDriver"


def _zaps_nothing_on_range_start(base: type[Any]) -> type[Any]:
    """``base`` with an invalidate_range_start that counts the range (so the
    fault side still retries) but drops no translation: a page freed between
    range_start and range_end stays mapped in the device."""

    class ZapsNothing(base):  # type: ignore[misc, valid-type]
        async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
            await mmemu.step("buggy: active++ (no zap)", writes=(self.active_key,))
            self.active += 1

    return ZapsNothing


def test_driver_suites_are_the_scenarios_with_a_driver_axis() -> None:
    names = [sc.name for sc in driver_suites()]
    assert "notifier:munmap-vs-fault" in names
    assert all("driver" in sc.axes for sc in driver_suites())
    # api axis only, no driver: not a driver suite
    assert "interval:insert-remove-vs-invalidate" not in names


def test_kvm_passes_every_driver_suite_under_both_apis() -> None:
    results = assert_driver_passes("kvm")
    assert {r.params.get("api", "2.6.27") for r in results} == {"2.6.27", "modern"}
    # every driver suite but those for what KVM lacks (a device fault of its
    # own; a detach that does not wait for its callbacks)
    assert {r.scenario for r in results} == {sc.name for sc in driver_suites()} - {
        "notifier:exit-vs-device-fault", "notifier:put-vs-module-exit"}
    assert all(r.params["driver"] == "kvm" for r in results)
    # the default is the suites' own bound (unbounded unless declared), exhausted
    bounds = {sc.name: sc.max_preemptions for sc in driver_suites()}
    for r in results:
        b = bounds[r.scenario]
        assert r.exhausted and f"max_preemptions={'∞' if b is None else b}," in r.strategy, r
    assert {bounds[r.scenario] for r in results} >= {None, 2}


def test_a_class_object_of_an_installed_driver_runs_under_its_installed_name() -> None:
    kvm = load_driver("kvm")
    assert driver_name(kvm) == "kvm"
    results = check_driver(kvm, api="modern")
    assert results and all(r.ok for r in results)
    assert {r.params.get("api") for r in results} == {"modern"}


def test_the_toy_driver_passes() -> None:
    toy = load_driver(TOY)
    results = assert_driver_passes(toy)
    # the toy lists only 2.6.27: no modern run
    assert results and all("api" not in r.params for r in results)
    # a class from a file is named by its file, so its tokens replay anywhere
    assert all(r.params["driver"].endswith("examples/toy_driver.py:ToyDriver") for r in results)


def test_an_api_the_driver_does_not_support_is_an_error_not_a_pass() -> None:
    with pytest.raises(ModelError, match="no driver suite runs driver"):
        check_driver(TOY, api="modern")
    with pytest.raises(ModelError, match="'api' must be one of"):
        check_driver("kvm", api="2.4")


def test_a_driver_that_is_not_a_driver_is_refused() -> None:
    with pytest.raises(ModelError, match="subclass of mmemu.driver.Driver"):
        check_driver(int)  # type: ignore[arg-type]
    with pytest.raises(DriverLoadError):
        check_driver("no-such-driver")


def test_a_driver_that_zaps_nothing_on_range_start_fails_with_the_report() -> None:
    buggy = _zaps_nothing_on_range_start(load_driver(TOY))
    name = driver_name(buggy)
    assert "<locals>" in name and ":" not in name  # registered-only name
    with pytest.raises(AssertionError) as info:
        assert_driver_passes(buggy)
    message = str(info.value)
    assert "FreedPageStillMapped" in message
    assert "driver suite runs failed" in message
    assert "replay with:" in message and "mmemu replay mm1." in message
    # the registration lasted for the check only
    with pytest.raises(DriverLoadError):
        load_driver(name)


def test_a_failure_of_an_unnamed_class_replays_while_registered() -> None:
    buggy = _zaps_nothing_on_range_start(load_driver(TOY))
    results = check_driver(buggy)
    failed = [r for r in results if r.failure is not None]
    assert failed
    first = failed[0].failure
    assert first is not None
    with registered_driver(buggy):
        outcome = mmemu.replay(None, first.schedule)
    assert outcome.failure is not None and outcome.failure.kind == first.kind
    assert outcome.steps == first.steps


def test_check_driver_is_deterministic() -> None:
    buggy = _zaps_nothing_on_range_start(load_driver(TOY))
    a = [(r.scenario, r.executions, r.failure.schedule if r.failure else None)
         for r in check_driver(buggy)]
    b = [(r.scenario, r.executions, r.failure.schedule if r.failure else None)
         for r in check_driver(buggy)]
    assert a == b


def test_a_strategy_object_is_copied_for_each_suite() -> None:
    from mmemu.engine import DFS

    strategy = DFS(max_preemptions=1)
    results = check_driver("kvm", api="2.6.27", strategy=strategy)
    # each suite explored its own space to the end, none inherited another's stack
    assert results and all(r.ok and r.exhausted for r in results)
    assert not strategy.exhausted


def test_the_async_twin_inside_trio() -> None:
    import trio

    from mmemu.testing import assert_driver_passes_async

    buggy = _zaps_nothing_on_range_start(load_driver(TOY))
    with pytest.raises(AssertionError, match="FreedPageStillMapped"):
        trio.run(lambda: assert_driver_passes_async(buggy, api="2.6.27"))
