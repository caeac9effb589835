"""Coverage goals and VacuousSuite: a suite cannot pass without reaching the
interleavings it declares; ``explore(coverage=True)`` counts what was reached."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import mmemu
from mmemu.engine import _registry, all_scenarios
from mmemu.engine._coverage import Coverage, resolve_goals
from mmemu.lowlevel import reach


@pytest.fixture
def registry() -> Iterator[None]:
    """Scenarios registered by a test stay out of every other test."""
    all_scenarios()
    scenarios, mutants = dict(_registry._SCENARIOS), dict(_registry._MUTANTS)
    try:
        yield
    finally:
        _registry._SCENARIOS.clear()
        _registry._SCENARIOS.update(scenarios)
        _registry._MUTANTS.clear()
        _registry._MUTANTS.update(mutants)


class Box:
    __mmemu_name__ = "box"

    def __init__(self) -> None:
        self.value = 0


async def _race(sim: Any) -> None:
    """Two CPUs write one box; the last writer wins.  "a wrote second" is
    reached only when b runs first: a real interleaving, not the default."""
    box = Box()

    async def writer(name: str) -> None:
        await mmemu.step(f"{name}: write", writes=(box,))
        if box.value:
            reach(f"{name} wrote second")
        box.value = 1
        with mmemu.span(f"{name}_done"):
            await mmemu.step(f"{name}: done")

    async with sim.cpus() as cpus:
        cpus.start(writer, "a", name="a")
        cpus.start(writer, "b", name="b")


def _register(name: str, reaches: Any, **kw: Any) -> str:
    mmemu.scenario(name, reaches=reaches, max_preemptions=None, **kw)(_race)
    return name


def test_an_unreachable_goal_fails_the_complete_exploration_with_vacuous_suite(
        registry: None) -> None:
    name = _register("covtest:unreachable", ["a wrote second", "c wrote second"])
    res = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None))
    assert res.exhausted
    f = res.failure
    assert f is not None and f.kind == "VacuousSuite"
    assert isinstance(f.exception, mmemu.VacuousSuite)
    assert f.exception.unreached == ("c wrote second",)
    assert "never reached: c wrote second" in f.message
    assert "reached in" in f.message and "a wrote second" in f.message
    assert "mmemu run covtest:unreachable --coverage" in f.report()
    assert f.schedule == ""


def test_reached_goals_pass_and_are_counted_per_execution(registry: None) -> None:
    name = _register("covtest:reachable", ["a wrote second", "b wrote second"])
    res = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None))
    assert res.failure is None and res.exhausted
    cov = res.coverage
    assert cov is not None and cov.executions == res.executions
    assert cov.unreached == ()
    # exactly one of the two writers writes second in every execution
    assert cov.executions_reaching("a wrote second") + cov.executions_reaching(
        "b wrote second") == res.executions
    assert 0 < cov.executions_reaching("a wrote second") < res.executions


def test_an_incomplete_exploration_only_reports_unreached_goals(registry: None) -> None:
    name = _register("covtest:incomplete", ["a wrote second"])
    # the first DFS execution runs a before b: "a wrote second" is not reached
    res = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None), executions=1)
    assert not res.exhausted
    assert res.failure is None
    assert res.coverage is not None and res.coverage.unreached == ("a wrote second",)


def test_goals_may_depend_on_the_parameters(registry: None) -> None:
    mmemu.scenario("covtest:params", axes={"who": ["a", "z"]}, max_preemptions=None,
                   reaches=lambda p: [f"{p['who']} wrote second"])(_race)
    ok = mmemu.explore("covtest:params", strategy=mmemu.DFS(max_preemptions=None),
                       params={"who": "a"})
    assert ok.failure is None
    bad = mmemu.explore("covtest:params", strategy=mmemu.DFS(max_preemptions=None),
                        params={"who": "z"})
    assert bad.failure is not None and bad.failure.kind == "VacuousSuite"
    assert "[who=z]" in bad.failure.message


def test_a_raw_scenario_takes_goals_from_explore() -> None:
    res = mmemu.explore(_race, strategy=mmemu.DFS(max_preemptions=None),
                        reaches=["nobody wrote"])
    assert res.failure is not None and res.failure.kind == "VacuousSuite"
    assert mmemu.explore(_race, strategy=mmemu.DFS(max_preemptions=None)).failure is None


def test_a_failure_outranks_vacuity(registry: None) -> None:
    async def failing(sim: Any) -> None:
        await _race(sim)
        sim.check(False, "always")

    mmemu.scenario("covtest:failing", reaches=["never"], max_preemptions=None)(failing)
    f = mmemu.explore("covtest:failing", strategy=mmemu.DFS(max_preemptions=None)).failure
    assert f is not None and f.kind == "InvariantViolation"


def test_coverage_mode_counts_steps_and_spans() -> None:
    res = mmemu.explore(_race, strategy=mmemu.DFS(max_preemptions=None), coverage=True)
    cov = res.coverage
    assert cov is not None
    steps = {name: e for name, e, _n in cov.of_kind("step")}
    assert steps["a: write"] == res.executions and steps["b: done"] == res.executions
    spans = dict((name, n) for name, _e, n in cov.of_kind("span"))
    assert spans == {"a_done": res.executions, "b_done": res.executions}
    # without coverage=True only explicit events are recorded
    plain = mmemu.explore(_race, strategy=mmemu.DFS(max_preemptions=None)).coverage
    assert plain is not None and not plain.of_kind("step") and not plain.of_kind("span")
    assert plain.of_kind("event")


def test_goals_may_name_step_labels_and_spans(registry: None) -> None:
    """A step or span goal turns their recording on for that exploration only."""
    name = _register("covtest:labels", ["step:b: done", "span:a_done"])
    res = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None))
    assert res.failure is None, res.failure.report()
    assert res.coverage is not None and res.coverage.executions_reaching("step:b: done") == res.executions
    bad = mmemu.explore(_race, strategy=mmemu.DFS(max_preemptions=None),
                        reaches=["step:c: done", "span:b_done"])
    assert bad.failure is not None and bad.failure.exception.unreached == ("step:c: done",)


def test_setup_code_does_not_reach_goals() -> None:
    async def setup_only(sim: Any) -> None:
        reach("in setup")
        async with sim.cpus() as cpus:
            cpus.start(mmemu.step, "x", name="x")

    res = mmemu.explore(setup_only, strategy=mmemu.DFS(), reaches=["in setup"])
    assert res.failure is not None and res.failure.kind == "VacuousSuite"


def test_parallel_exploration_merges_coverage_before_judging(registry: None) -> None:
    name = _register("covtest:parallel", ["a wrote second", "never"])
    one = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None))
    par = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None), jobs=1)
    assert one.failure is not None and par.failure is not None
    assert par.failure.kind == "VacuousSuite"
    assert par.failure.exception.unreached == ("never",)
    assert par.coverage is not None and par.coverage.executions_reaching("a wrote second") > 0
    # a single shard cannot judge: its slice may miss what another reaches
    shard = mmemu.explore(name, strategy=mmemu.DFS(max_preemptions=None), shard="0/2", jobs=1)
    assert shard.failure is None


def test_bad_goals_are_rejected_at_registration(registry: None) -> None:
    with pytest.raises(mmemu.ModelError, match="names no step"):
        mmemu.scenario("covtest:bad", reaches=["step:"])(_race)
    with pytest.raises(mmemu.ModelError, match="list of goals"):
        mmemu.scenario("covtest:bad2", reaches="one string")(_race)
    assert resolve_goals(["callback:kvm->release", "x", "x"], {}) == ("callback:kvm->release", "x")


def test_coverage_round_trips_through_json() -> None:
    cov = Coverage(goals=("a",))
    cov.add({("event", "a"): 2, ("step", "s"): 1})
    cov.add({("event", "a"): 1})
    back = Coverage.from_json(cov.to_json())
    assert back == cov
    assert back.executions_reaching("a") == 2 and back.counts[("event", "a")] == [2, 3]


def test_mmemu_run_coverage_prints_goals_events_spans_and_steps(
        capsys: pytest.CaptureFixture[str]) -> None:
    import mmemu.cli

    assert mmemu.cli.main(["run", "locks:take-all-signal", "--coverage"]) == 0
    out = capsys.readouterr().out
    assert "coverage of locks:take-all-signal: 1 run," in out
    lines = out.splitlines()
    goals = lines.index("  goals")
    assert "mm_take_all_locks returned -EINTR (a signal was pending)" in lines[goals + 2]
    for heading in ("  events", "  kernel functions (spans)", "  labelled steps"):
        assert heading in lines
    assert any(line.endswith("  mutex_lock(&mm_all_locks_mutex)") for line in lines)


def test_mmemu_run_notes_goals_an_unfinished_exploration_missed(
        capsys: pytest.CaptureFixture[str]) -> None:
    import mmemu.cli

    assert mmemu.cli.main(["run", "locks:take-all-signal", "--executions", "1"]) == 0
    out = capsys.readouterr().out
    assert "note: locks:take-all-signal did not explore its whole space" in out


def test_a_smaller_bound_than_the_suites_own_only_notes_the_missed_goals(registry: None) -> None:
    """A suite's goals are judged within the suite's own preemption bound:
    exhausting a smaller one (check_driver with DFS(max_preemptions=1)) is
    not a complete exploration of the suite."""
    mmemu.scenario("covtest:bounded", reaches=["c wrote second"], max_preemptions=1)(_race)
    res = mmemu.explore("covtest:bounded", strategy=mmemu.DFS(max_preemptions=0))
    assert res.exhausted and res.failure is None
    assert res.coverage is not None and res.coverage.unreached == ("c wrote second",)
    for bound in (1, 2, None):
        res = mmemu.explore("covtest:bounded", strategy=mmemu.DFS(max_preemptions=bound))
        assert res.failure is not None and res.failure.kind == "VacuousSuite", bound
