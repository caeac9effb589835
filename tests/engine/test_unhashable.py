"""A raw scenario may declare unhashable objects (a dict) as accessed: they
are keyed by identity (mirrors mmemu/engine/_keys.py)."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu


async def lost_update_on_a_dict(sim: Any) -> None:
    box = {"x": 0}
    other = {"x": 0}  # equal to box, but another object

    async def inc() -> None:
        await mmemu.step("read box", reads=(box,))
        v = box["x"]
        await mmemu.step("write box", writes=(box,))
        box["x"] = v + 1

    async def elsewhere() -> None:
        await mmemu.step("write other", writes=(other,))
        other["x"] = 5

    async with sim.cpus() as cpus:
        cpus.start(inc, name="a")
        cpus.start(inc, name="b")
        cpus.start(elsewhere, name="c")
    sim.check(box["x"] == 2, f"box is {box}: an update was lost")


@pytest.mark.parametrize("strategy", [mmemu.DFS(), mmemu.DFS(reduction="source"),
                                      mmemu.DFS(max_preemptions=1), mmemu.Random(3)],
                         ids=["dpor", "source", "bounded", "random"])
def test_a_dict_as_accessed_object_works(strategy: Any) -> None:
    res = mmemu.explore(lost_update_on_a_dict, strategy=strategy, executions=500)
    f = res.failure
    assert f is not None and f.kind == "InvariantViolation", res
    report = f.report()
    assert "box is {'x': 1}" in report
    # the timeline names the conflict on the dict, by type and order
    assert "dict#1" in report
    out = mmemu.replay(lost_update_on_a_dict, f.schedule)
    assert out.failure is not None and out.failure.report() == report


def test_identity_not_equality_decides_conflicts() -> None:
    # box and other are equal dicts; DPOR must still see them as different
    # objects: c's write conflicts with nobody, so it adds no execution
    async def scenario(sim: Any) -> None:
        box, other = {"x": 0}, {"x": 0}

        async def a() -> None:
            await mmemu.step("write box", writes=(box,))

        async def c() -> None:
            await mmemu.step("write other", writes=(other,))

        async with sim.cpus() as cpus:
            cpus.start(a)
            cpus.start(c)

    res = mmemu.explore(scenario, strategy=mmemu.DFS(), executions=100)
    assert res.exhausted and res.executions == 1
