"""The workload text form: round trips, canonical form, one-line errors."""

from __future__ import annotations

import pytest

from mmemu.engine._schedule import Schedule
from mmemu.workload import Op, Workload, WorkloadError, parse_workload, workload_params

EXAMPLES = [
    "cpu0: fault(0,w) access(0); cpu1: munmap(0-1); cpu2: reclaim(1)",
    "drivers=kvm,gru; cpu0: fault(2,r) d1.fault(2,w) d1.access(2); cpu1: d1.detach exit",
    "drivers=hmm,sva api=modern vmas=a3,p1; cpu0: remove insert(0-2) fault(1,r); "
    "cpu1: d1.get d1.put oomreap; cpu2: signal(0)",
    "drivers=tests/workload/fixtures.py:PinCacheDriver; cpu0: cpufault(4,w) age(4); cpu1:",
    "api=modern; cpu0: fault(0,w) access(0,w) access(1); cpu1: fork mprotect(0-1,r) "
    "madvise(2-3); cpu2: ksm(1,0) idle(0) scan(0-5) mprotect(4,none)",
    # capitals: fresh vmas, nothing faulted in at setup
    "vmas=S1,a1,P2; cpu0: fault(0,r); cpu1: cpufault(0,r) ksm(2,1)",
    # a driver of a second process; a userptr notifier; a read() of the file
    "drivers=kvm,kvm@2 api=modern vmas=s1,a1; cpu0: detach attach read(0); "
    "cpu1: d1.detach d1.attach userptr oomreap",
]


@pytest.mark.parametrize("text", EXAMPLES)
def test_text_round_trip(text: str) -> None:
    wl = parse_workload(text)
    assert str(wl) == text
    assert parse_workload(str(wl)) == wl


def test_canonical_form_drops_defaults_and_spacing() -> None:
    wl = parse_workload("  drivers=kvm   vmas=a2,s2,p2 ;cpu0:fault( 0 , w )   d0.access(0);")
    assert str(wl) == "drivers=kvm; cpu0: fault(0,w) access(0)"
    assert wl.cpus == ((Op("fault", (0, "w")), Op("access", (0,))),)
    assert wl.vmas == (("a", 2), ("s", 2), ("p", 2))


def test_a_workload_value_prints_as_text() -> None:
    wl = Workload(cpus=((Op("munmap", ((0, 2),)),), (Op("fault", (1, "r"), driver=1),)),
                  drivers=("kvm", "kvm"), api="modern")
    assert str(wl) == "drivers=kvm,kvm api=modern; cpu0: munmap(0-2); cpu1: d1.fault(1,r)"
    assert parse_workload(str(wl)) == wl


def test_workload_rides_in_the_token() -> None:
    text = EXAMPLES[1]
    params = workload_params(text)
    sched = Schedule(scenario="workload:run", choices=(0, 1, 1, 0), params=params)
    back = Schedule.from_token(sched.to_token())
    assert parse_workload(back.params["workload"]) == parse_workload(text)


@pytest.mark.parametrize("text, names", [
    ("cpu0: faul(0,w)", "'faul'"),
    ("cpu0: fault(0)", "'fault(0)'"),
    ("cpu0: fault(0,x)", "'x'"),
    ("cpu0: fault(9,w)", "page 9"),
    ("cpu0: munmap(3-1)", "'3-1'"),
    ("cpu0: munmap(0-7)", "0-7"),
    ("cpu1: exit", "'cpu1'"),
    ("cpu0: d1.fault(0,w)", "d1"),
    ("cpu0: d0.munmap(0)", "'d0.munmap(0)'"),
    ("drivrs=kvm; cpu0: exit", "'drivrs'"),
    ("api=3.0; cpu0: exit", "'api=3.0'"),
    ("vmas=x2; cpu0: exit", "'x2'"),
    ("vmas=a1,A1; cpu0: ksm(0,1)", "not anonymous and faulted in"),
    ("cpu0: signal(4)", "cpu4"),
    ("cpu0: exit; cpu1: exit", "'exit'"),
    ("cpu0: oomreap", "modern"),
    ("cpu0: userptr", "modern"),
    ("drivers=kvm@3; cpu0: exit", "'kvm@3'"),
    ("", "no CPU"),
    ("cpu0: fault(0,w) ; garbage", "'garbage'"),
])
def test_bad_text_is_one_line_naming_the_token(text: str, names: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert names in msg, msg
