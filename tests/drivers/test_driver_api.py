"""The driver API: loading by name and by path, every driver suite with a
driver written outside mmemu, and drivers that are wrong, raise or block."""

from __future__ import annotations

from pathlib import Path

import pytest

import mmemu
import mmemu.cli
from mmemu.driver import DriverLoadError, available_drivers, load_driver
from mmemu.engine import all_scenarios

HERE = Path(__file__).parent
SAMPLE = str(HERE / "sample_drivers.py")
# driver suites of the 2.6.27 generation (modern-only ones, e.g.
# notifier:oom-reap-vs-fault, have no api=None value: tests/modern runs them)
DRIVER_SUITES = [s.name for s in all_scenarios()
                 if "driver" in s.axes and None in list(s.axes.get("api", [None]))]


def dfs2() -> mmemu.DFS:
    return mmemu.DFS(max_preemptions=2)


def test_kvm_is_installed_and_suites_take_the_driver_axis() -> None:
    assert "kvm" in available_drivers()
    assert load_driver("kvm").__name__ == "KvmDriver"
    assert set(DRIVER_SUITES) >= {
        "notifier:register-vs-truncate", "notifier:truncate-vs-fault",
        "notifier:reclaim-vs-fault", "notifier:munmap-vs-fault",
        "notifier:migrate-vs-fault", "notifier:exit-vs-reclaim"}
    # KVM's faults all come from vcpu threads (no Driver.device_fault): the
    # suite of a device faulting while the process exits is not for it
    assert load_driver("kvm").device_fault is None
    for name in DRIVER_SUITES:
        sc = mmemu.engine.get_scenario(name)
        drivers = {c.get("driver") for c in sc.combinations()}
        if name == "notifier:exit-vs-device-fault":
            assert "kvm" not in drivers and "gru" in drivers
            continue
        assert "kvm" in drivers, name


@pytest.mark.parametrize("spec,msg", [
    ("nosuch", "unknown driver 'nosuch' (installed: "),  # the list grows with drivers
    ("tests/drivers/missing.py:X", "no such file"),
    (f"{SAMPLE}:Missing", "has no class 'Missing'"),
    (f"{SAMPLE}:NotADriver", "is not a subclass of mmemu.driver.Driver"),
])
def test_load_errors_are_one_liners(spec: str, msg: str) -> None:
    with pytest.raises(DriverLoadError, match=None) as ei:
        load_driver(spec)
    assert msg in str(ei.value)
    assert "\n" not in str(ei.value)


def test_import_error_in_a_driver_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import no_such_module_here\n")
    with pytest.raises(DriverLoadError) as ei:
        load_driver(f"{bad}:X")
    assert "ModuleNotFoundError" in str(ei.value)


# the driver suites that take SeqDriver (it has no device_fault of its own)
SEQ_SUITES = [name for name in DRIVER_SUITES
              if mmemu.engine.get_scenario(name).accepts({"driver": f"{SAMPLE}:SeqDriver"})]


def test_only_suites_for_what_seqdriver_lacks_leave_it_out() -> None:
    # a device fault of its own, ->test_young, ->change_pte
    assert set(DRIVER_SUITES) - set(SEQ_SUITES) == {
        "notifier:exit-vs-device-fault", "aging:scan-vs-zap", "ksm:change-pte-vs-guest-fault"}


@pytest.mark.parametrize("suite", SEQ_SUITES)
def test_path_driver_passes_every_driver_suite(suite: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000,
                        params={"driver": f"{SAMPLE}:SeqDriver"})
    assert res.failure is None, res.failure.report()
    assert res.exhausted


def test_driver_that_zaps_nothing_on_range_start_is_caught() -> None:
    res = mmemu.explore("notifier:truncate-vs-fault", strategy=dfs2(), executions=100_000,
                        params={"driver": f"{SAMPLE}:ZapNothingDriver"})
    f = res.failure
    assert f is not None and f.kind == "FreedPageStillMapped", res
    assert f.preemptions <= 2
    assert "zapnothing va 0x" in f.message
    # the token carries the driver: replay finds it again
    out = mmemu.replay(None, f.schedule)
    assert out.failure is not None and out.failure.kind == "FreedPageStillMapped"


def test_cli_driver_option_by_path(capsys: pytest.CaptureFixture[str]) -> None:
    rc = mmemu.cli.main(["run", "notifier:truncate-vs-fault", "--driver",
                         f"{SAMPLE}:ZapNothingDriver"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "FreedPageStillMapped" in out and "zapnothing" in out
    assert mmemu.cli.main(["run", "notifier:truncate-vs-fault", "--driver",
                           f"{SAMPLE}:SeqDriver"]) == 0


def test_cli_unknown_driver_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert mmemu.cli.main(["run", "notifier:truncate-vs-fault", "--driver", "nosuch"]) == 2
    assert "unknown driver 'nosuch'" in capsys.readouterr().err


def test_driver_raising_in_a_callback_is_a_driver_error() -> None:
    res = mmemu.explore("notifier:truncate-vs-fault", strategy=dfs2(), executions=1000,
                        params={"driver": f"{SAMPLE}:RaisingDriver"})
    f = res.failure
    assert f is not None and f.kind == "DriverError"
    assert "driver raising raised RuntimeError: oops in range_start in ->invalidate_range_start" \
        in f.message
    assert "raising: range_start" in f.message  # the step
    assert "RuntimeError" in f.details  # the traceback


def test_driver_blocking_forever_is_a_deadlock() -> None:
    res = mmemu.explore("notifier:truncate-vs-fault", strategy=dfs2(), executions=1000,
                        params={"driver": f"{SAMPLE}:BlockingDriver"})
    f = res.failure
    assert f is not None and f.kind == "Deadlock"
    assert "an event nobody sends" in f.message
