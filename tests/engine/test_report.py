"""Failure reports and traces (mirrors mmemu/engine/_report.py)."""

from __future__ import annotations

import re
from typing import Any

import mmemu
from mmemu import DFS

from ._support import Obj


def _lost_update() -> mmemu.Failure:
    f = mmemu.explore("demo:lost-update", strategy=DFS(), executions=100).failure
    assert f is not None
    return f


def test_report_layout() -> None:
    f = _lost_update()
    lines = f.report().splitlines()
    assert lines[0] == "mmemu: demo:lost-update"
    assert lines[1] == "InvariantViolation after 6 steps, 1 preemption (* marks a preemption)"
    header = next(line for line in lines if "cpu0 (inc)" in line)
    assert re.fullmatch(r"\s+\| cpu0 \(inc\)\s+\| cpu1 \(inc\)", header)
    rows = [line for line in lines if re.match(r"  #\d+", line)]
    assert len(rows) == f.steps == 6
    # one column per CPU: every row fills exactly one of the two cells
    for row in rows:
        cells = [c.strip() for c in row.split("~")[0].split("|")[1:]]
        assert len(cells) == 2 and sum(1 for c in cells if c) == 1, row
    starred = [row for row in rows if re.match(r"  #\d+\*", row)]
    assert len(starred) == f.preemptions == 1
    assert sum(ev.preempted for ev in f.trace.events) == 1
    # the second store names the first store it overwrote
    stores = [row for row in rows if "2. counter = tmp + 1" in row]
    assert len(stores) == 2
    assert re.search(r"~ after #\d+ on counter$", stores[1])
    # ends with the violated invariant and the replay line
    assert lines[-4:] == [
        "InvariantViolation: counter is 1, expected 2 (an increment was lost)",
        "",
        "replay with:",
        f"  mmemu replay {f.schedule}",
    ]
    assert f.schedule.startswith("mm1.")


def test_trace_events_carry_conflicts() -> None:
    f = _lost_update()
    ev = f.trace.events
    assert [e.cpu for e in ev].count(0) == 3 and [e.cpu for e in ev].count(1) == 3
    last = ev[-1]
    assert last.label == "2. counter = tmp + 1"
    assert last.writes == ("counter",)
    assert last.conflicts and all(o == "counter" for _, o in last.conflicts)
    assert f.trace.cpus == ((0, "inc"), (1, "inc"))


async def unnamed_objects(sim: Any) -> None:
    class Page:
        pass

    a, b = Page(), Page()

    async def cpu() -> None:
        await mmemu.step("touch a", writes=(a,))
        await mmemu.step("touch b", writes=(b, (a, "flags")))

    async with sim.cpus() as cpus:
        cpus.start(cpu)
        cpus.start(cpu)
    sim.check(False, "always")


def test_unnamed_objects_get_stable_names() -> None:
    f = mmemu.explore(unnamed_objects, strategy=DFS(), executions=10).failure
    assert f is not None
    # no id()-based reprs; the replay token is base64 (of the scenario's
    # module path too, for an ad-hoc scenario) and may hold "0x" by chance
    report = f.report().replace(f.schedule, "<token>")
    assert "0x" not in report
    names = {n for e in f.trace.events for n in e.writes}
    assert names == {"Page#1", "Page#2", "Page#1.flags"}


def test_failing_step_is_marked() -> None:
    async def scenario(sim: Any) -> None:
        x = Obj("x")

        async def cpu() -> None:
            await mmemu.step("first", writes=(x,))
            await mmemu.step("broken", writes=(x,))
            mmemu.lowlevel.fail(mmemu.InvariantViolation("broke in step"))

        async with sim.cpus() as cpus:
            cpus.start(cpu)

    import mmemu.lowlevel  # noqa: F401 - fail() lives there

    f = mmemu.explore(scenario, strategy=DFS(), executions=1).failure
    assert f is not None
    marked = [line for line in f.report().splitlines() if "<- fails here" in line]
    assert len(marked) == 1 and "broken" in marked[0]
