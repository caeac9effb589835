"""pytest plugin: explore mmemu scenarios inside tests, replay their failures.

Registered through the ``pytest11`` entry point, so installing mmemu enables
it.  What it adds:

- options ``--mmemu-strategy``, ``--mmemu-executions``, ``--mmemu-seed``,
  ``--mmemu-max-preemptions`` (defaults for every exploration a test does not
  configure itself) and ``--mmemu-replay TOKEN``;
- the base seed in the report header;
- the fixture ``mmemu_explore``: ``mmemu_explore(scenario, ...)`` in a test,
  ``await mmemu_explore.explore_async(scenario, ...)`` in an async test
  (pytest-trio), each returning the ``mmemu.Result``.  A failure fails the
  test with the shrunk report, and the test's report gets a section titled
  ``mmemu`` with the line that reproduces it::

      reproduce with: pytest 'tests/test_x.py::test_y' --mmemu-replay=mm1....

  With ``--mmemu-replay`` the fixture replays that token (for the call that
  explores the token's scenario, parameters and mutants) instead of
  exploring, and fails with the same report.

Which budget an exploration gets, first found wins (the rule of
``mmemu.engine._settings.resolve_settings``, the same for ``mmemu.explore``
and ``mmemu run``): the fixture's arguments; the command-line options; the
``MMEMU_*`` environment variables; the budget the scenario was registered
with (``@mmemu.scenario(..., strategy=, executions=, max_preemptions=)``);
the engine's defaults.

Seeds.  Each test explores with its own seed, derived from the base seed
(``--mmemu-seed``, else ``MMEMU_SEED``, else 0) and the test's node id
through SHA-256: a test's result does not depend on which other tests run,
their order, or the worker (xdist) that runs it, and not on
``PYTHONHASHSEED`` (``hash()`` is salted per process; SHA-256 is not).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from mmemu.engine import (
    MmemuError,
    Result,
    Scenario,
    Schedule,
    ScheduleFormatError,
    Settings,
    Simulation,
    Strategy,
    explore,
    explore_async,
    get_scenario,
    replay,
    replay_async,
)
from mmemu.engine._locate import display_name
from mmemu.engine._registry import scenario_name  # the name tokens record
from mmemu.engine._settings import UNSET

ScenarioRef = Callable[[Simulation], Awaitable[Any]] | Scenario | str

STRATEGIES = ("random", "pct", "dfs")


def derive_seed(base_seed: int, nodeid: str) -> int:
    """The seed of the test ``nodeid`` under ``base_seed``: 32 bits of
    SHA-256, stable across processes, platforms and test orders."""
    digest = hashlib.sha256(f"mmemu:{base_seed}:{nodeid}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@attrs.frozen
class PluginOptions:
    """The plugin's command-line options, checked."""

    base_seed: int
    strategy: str | None = None
    executions: int | None = None
    #: UNSET when not given; None means "unbounded" (``none``)
    max_preemptions: Any = UNSET
    replay_token: str | None = None
    replay_schedule: Schedule | None = None


@attrs.define
class _ReplayState:
    """Did any test replay the ``--mmemu-replay`` token?"""

    used: bool = False


_OPTIONS = pytest.StashKey[PluginOptions]()
_REPLAY_STATE = pytest.StashKey[_ReplayState]()
_SECTION = pytest.StashKey[str]()


# ------------------------------------------------------------------ options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmemu", "mmemu race exploration")
    group.addoption("--mmemu-strategy", choices=STRATEGIES, default=None,
                    help="strategy for explorations that do not name one "
                         "(default: the scenario's)")
    group.addoption("--mmemu-executions", type=int, default=None, metavar="N",
                    help="executions per exploration (default: the scenario's)")
    group.addoption("--mmemu-seed", type=int, default=None, metavar="N",
                    help="base seed; each test's seed derives from it and the test's "
                         "node id (default: $MMEMU_SEED or 0)")
    group.addoption("--mmemu-max-preemptions", default=None, metavar="P",
                    help="DFS preemption bound, or 'none' (default: the scenario's)")
    group.addoption("--mmemu-replay", default=None, metavar="TOKEN",
                    help="replay this schedule token instead of exploring (the "
                         "'reproduce with:' line of a failure gives it)")


def _parse_options(config: pytest.Config) -> PluginOptions:
    try:
        env = Settings.from_env()
    except MmemuError as exc:
        raise pytest.UsageError(f"mmemu: {exc}") from None
    seed = config.getoption("mmemu_seed")
    executions = config.getoption("mmemu_executions")
    if executions is not None and executions < 1:
        raise pytest.UsageError(f"--mmemu-executions must be at least 1 (got {executions})")
    raw_bound = config.getoption("mmemu_max_preemptions")
    bound: Any = UNSET
    if raw_bound is not None:
        if raw_bound.strip().lower() == "none":
            bound = None
        else:
            try:
                bound = int(raw_bound)
            except ValueError:
                raise pytest.UsageError(
                    f"--mmemu-max-preemptions must be an integer or 'none' (got {raw_bound!r})"
                ) from None
            if bound < 0:
                raise pytest.UsageError(f"--mmemu-max-preemptions must be >= 0 (got {bound})")
    token = config.getoption("mmemu_replay")
    sched = None
    if token is not None:
        token = token.strip()
        try:
            sched = Schedule.from_token(token)
        except ScheduleFormatError as exc:
            raise pytest.UsageError(f"--mmemu-replay: {exc}") from None
    return PluginOptions(base_seed=seed if seed is not None else env.seed,
                         strategy=config.getoption("mmemu_strategy"), executions=executions,
                         max_preemptions=bound, replay_token=token, replay_schedule=sched)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_OPTIONS] = _parse_options(config)
    config.stash[_REPLAY_STATE] = _ReplayState()


def pytest_report_header(config: pytest.Config) -> list[str]:
    opts = config.stash[_OPTIONS]
    line = f"mmemu: base seed {opts.base_seed}"
    extra = []
    if opts.strategy is not None:
        extra.append(f"strategy {opts.strategy}")
    if opts.executions is not None:
        extra.append(f"{opts.executions} executions")
    if opts.max_preemptions is not UNSET:
        extra.append(f"max preemptions {opts.max_preemptions}")
    if extra:
        line += " (" + ", ".join(extra) + ")"
    lines = [line]
    if opts.replay_schedule is not None:
        lines.append(f"mmemu: replaying a schedule of {display_name(opts.replay_schedule.scenario)}")
    return lines


def _single_leaf(exc: BaseException) -> BaseException | None:
    """The one exception an exception group (nested or not) holds, if it
    holds exactly one."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # pytest-trio runs an async test inside a nursery; with trio's strict
    # exception groups the test's own pytest.fail() comes back wrapped in a
    # one-member group, and pytest would show the group's traceback around
    # mmemu's report.  Unwrap it: the report reads as in a sync test.
    excinfo = call.excinfo
    if excinfo is not None and isinstance(excinfo.value, BaseExceptionGroup):
        leaf = _single_leaf(excinfo.value)
        if isinstance(leaf, pytest.fail.Exception) and item.stash.get(_SECTION, None) is not None:
            call.excinfo = pytest.ExceptionInfo.from_exception(leaf)
    outcome = yield
    report = outcome.get_result()
    text = item.stash.get(_SECTION, None)
    if text is not None and report.when == "call":
        # A section of its own (not item.add_report_section, which would
        # title it "Captured mmemu call").
        report.sections.append(("mmemu", text))


def _xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A replay that no test performed must not pass silently: the test was
    # renamed, or explores the scenario with other parameters now.
    config = session.config
    opts = config.stash.get(_OPTIONS, None)
    if opts is None or opts.replay_schedule is None or _xdist_controller(config):
        return
    if not config.stash[_REPLAY_STATE].used and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    opts = config.stash.get(_OPTIONS, None)
    if opts is None or opts.replay_schedule is None or _xdist_controller(config):
        return
    if not config.stash[_REPLAY_STATE].used:
        sched = opts.replay_schedule
        what = display_name(sched.scenario)
        if sched.params:
            what += " [" + ", ".join(f"{k}={v}" for k, v in sorted(sched.params.items())) + "]"
        if sched.mutants:
            what += " with mutant " + ", ".join(sched.mutants)
        terminalreporter.write_line(
            f"mmemu: --mmemu-replay was not used: no selected test explored {what}",
            red=True, bold=True)


# ------------------------------------------------------------------ fixture


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _json_normal(value: Any) -> Any:
    """``value`` as a token would give it back (tuples become lists)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return value


def _quote(text: str) -> str:
    return f"'{text}'" if "'" not in text else shlex.quote(text)


class MmemuExplorer:
    """What the ``mmemu_explore`` fixture gives a test.

    ``seed`` is this test's seed.  Call it (sync tests) or await
    ``explore_async`` (async tests) to explore a scenario; ``results`` lists
    what this test explored, in order.
    """

    def __init__(self, item: pytest.Item, options: PluginOptions,
                 replay_state: _ReplayState) -> None:
        self._item = item
        self._options = options
        self._replay_state = replay_state
        self.seed = derive_seed(options.base_seed, item.nodeid)
        self.results: list[Result] = []

    # ---------------------------------------------------------- public

    def __call__(
        self,
        scenario: ScenarioRef,
        *,
        strategy: str | Strategy | None = None,
        executions: int | None = None,
        seed: int | None = None,
        max_steps: int | None = None,
        max_preemptions: Any = UNSET,
        shrink: bool = True,
        mutants: Iterable[str] = (),
        params: dict[str, Any] | None = None,
        expect: str = "pass",
    ) -> Result:
        """Explore ``scenario`` (a registered name, a Scenario or an
        ``async def scenario(sim)``) and return the Result.

        With ``expect="pass"`` (the default) a failure fails the test with its
        shrunk report; with ``expect="fail"`` finding no failure fails the
        test, and the Result is returned for the test to inspect.  Arguments
        as for ``mmemu.explore``; those left out come from the command line,
        then from the environment (``MMEMU_*``), then from the scenario's
        registration.
        """
        if _in_trio():
            raise RuntimeError(
                "mmemu_explore(...) was called inside trio (an async test); there use "
                "'await mmemu_explore.explore_async(...)'")
        plan = self._plan(scenario, strategy, executions, seed, max_steps, max_preemptions,
                          shrink, mutants, params, expect)
        if plan.token is not None:
            result = self._replayed(plan, replay(scenario, plan.token))
        else:
            result = explore(scenario, **plan.kwargs)
        return self._judge(plan, result)

    async def explore_async(
        self,
        scenario: ScenarioRef,
        *,
        strategy: str | Strategy | None = None,
        executions: int | None = None,
        seed: int | None = None,
        max_steps: int | None = None,
        max_preemptions: Any = UNSET,
        shrink: bool = True,
        mutants: Iterable[str] = (),
        params: dict[str, Any] | None = None,
        expect: str = "pass",
    ) -> Result:
        """The same as calling the fixture, for async tests (pytest-trio):
        explores in the test's own trio run instead of starting another."""
        plan = self._plan(scenario, strategy, executions, seed, max_steps, max_preemptions,
                          shrink, mutants, params, expect)
        if plan.token is not None:
            result = self._replayed(plan, await replay_async(scenario, plan.token))
        else:
            result = await explore_async(scenario, **plan.kwargs)
        return self._judge(plan, result)

    # -------------------------------------------------------- internals

    def _plan(self, scenario: ScenarioRef, strategy: str | Strategy | None,
              executions: int | None, seed: int | None, max_steps: int | None,
              max_preemptions: Any, shrink: bool, mutants: Iterable[str],
              params: dict[str, Any] | None, expect: str) -> _Plan:
        if expect not in ("pass", "fail"):
            raise ValueError(f"'expect' must be 'pass' or 'fail' (got {expect!r})")
        opts = self._options
        registered = _registered(scenario)
        name = registered.name if registered is not None else scenario_name(scenario)
        shown = display_name(name)
        mutant_list = tuple(sorted(set(mutants)))
        sched = opts.replay_schedule
        if sched is not None and opts.replay_token is not None \
                and sched.scenario == name \
                and _json_normal(sched.params) == _json_normal(dict(params or {})) \
                and tuple(sched.mutants) == mutant_list:
            self._replay_state.used = True
            return _Plan(name=name, shown=shown, expect=expect, token=opts.replay_token, kwargs={})
        # The fixture's arguments, then the --mmemu-* options, are the
        # flags; explore resolves the rest (MMEMU_*, then the suite's own
        # default) with the one rule every front door uses.
        if strategy is None:
            strategy = opts.strategy
        if executions is None:
            executions = opts.executions
        if max_preemptions is UNSET:
            max_preemptions = opts.max_preemptions
        kwargs = dict(strategy=strategy, executions=executions,
                      seed=seed if seed is not None else self.seed, max_steps=max_steps,
                      max_preemptions=max_preemptions, shrink=shrink, mutants=mutant_list,
                      params=params)
        return _Plan(name=name, shown=shown, expect=expect, token=None, kwargs=kwargs)

    def _replayed(self, plan: _Plan, outcome: Any) -> Result:
        sched = self._options.replay_schedule
        assert sched is not None
        failures = (outcome.failure,) if outcome.failure is not None else ()
        return Result(scenario=plan.name, params=dict(sched.params), mutants=sched.mutants,
                      strategy="replay", executions=1, exhausted=False, failures=failures)

    def _judge(self, plan: _Plan, result: Result) -> Result:
        self.results.append(result)
        failure = result.failure
        if plan.expect == "fail":
            if failure is None:
                how = "replaying the token" if plan.token is not None else (
                    f"{result.executions} executions with {result.strategy}"
                    + (" (the search space was exhausted)" if result.exhausted else ""))
                pytest.fail(f"mmemu: {plan.shown} was expected to fail, but {how} "
                            f"found no failure", pytrace=False)
            return result
        if failure is None:
            return result
        token = failure.schedule
        if plan.token is not None:
            head = f"mmemu: replayed {plan.shown} from --mmemu-replay"
        else:
            plural = "" if failure.preemptions == 1 else "s"
            head = (f"mmemu: {plan.shown} explored with {result.strategy}: "
                    f"{failure.kind} after {failure.found_after} execution"
                    f"{'' if failure.found_after == 1 else 's'}, shrunk to "
                    f"{failure.preemptions} preemption{plural}, {failure.steps} steps")
            if "seed=" in result.strategy:  # a seeded strategy (not DFS)
                head += (f"\ntest seed {self.seed} (from base seed "
                         f"{self._options.base_seed} and the node id)")
        self._item.stash[_SECTION] = f"{head}\n{self._reproduce_line(token)}\n"
        # The first line is what pytest's short summary ("-ra") shows.
        pytest.fail(f"{plan.shown}: {failure.kind}: {failure.message}\n\n{failure.report()}",
                    pytrace=False)

    def _reproduce_line(self, token: str) -> str:
        config = self._item.config
        nodeid = self._item.nodeid
        # Node ids are relative to the rootdir; pytest resolves the argument
        # relative to the current directory, so rebase it when they differ.
        path, sep, rest = nodeid.partition("::")
        invoked = Path(config.invocation_params.dir)
        if invoked != config.rootpath:
            full = config.rootpath / path
            try:
                rel = os.path.relpath(full, invoked)
            except ValueError:  # another drive (Windows)
                rel = str(full)
            nodeid = rel.replace(os.sep, "/") + sep + rest
        return f"reproduce with: pytest {_quote(nodeid)} --mmemu-replay={token}"


@attrs.frozen
class _Plan:
    """What one fixture call will do: replay ``token``, or explore with ``kwargs``."""

    name: str
    #: the name for people (a scenario's file left out)
    shown: str
    expect: str
    token: str | None
    kwargs: dict[str, Any]


def _registered(scenario: ScenarioRef) -> Scenario | None:
    """The registration of ``scenario`` (for its budget), if it has one."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, str):
        return get_scenario(scenario)
    name = getattr(scenario, "__mmemu_scenario__", None)
    return get_scenario(name) if isinstance(name, str) else None


@pytest.fixture
def mmemu_explore(request: pytest.FixtureRequest) -> MmemuExplorer:
    """Explore mmemu scenarios in this test; a failure fails the test.

    ``mmemu_explore("demo:lost-update-locked")`` in a test,
    ``await mmemu_explore.explore_async(...)`` in an async (pytest-trio) test.
    ``mmemu_explore.seed`` is the test's seed.
    """
    config = request.config
    return MmemuExplorer(request.node, config.stash[_OPTIONS], config.stash[_REPLAY_STATE])
