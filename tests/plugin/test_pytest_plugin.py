"""The pytest plugin, seen from outside: run pytest on small test files.

Most runs are in-process (fast); the reproduce line is run as a real
command in a subprocess, exactly as a person would paste it.
"""

from __future__ import annotations

import re
import shlex
import sys

import pytest

from mmemu.pytest_plugin import derive_seed

# Inner test files.  Their scenarios are plain functions (not registered), so
# tokens name them as "<module>:<qualname>" and replay needs the test file.
RACES = '''
import mmemu

class Counter:
    __mmemu_name__ = "counter"
    def __init__(self):
        self.value = 0

async def increment(counter):
    await mmemu.step("1. load", reads=(counter,))
    tmp = counter.value
    await mmemu.step("2. store", writes=(counter,))
    counter.value = tmp + 1

async def buggy(sim):
    counter = Counter()
    async with sim.cpus() as cpus:
        cpus.start(increment, counter, name="a")
        cpus.start(increment, counter, name="b")
    sim.check(counter.value == 2, f"counter is {counter.value}, expected 2")

async def correct(sim):
    counter = Counter()
    async with sim.cpus() as cpus:
        cpus.start(increment, counter, name="a")
    sim.check(counter.value == 1, "one increment, one update")

def test_buggy(mmemu_explore):
    mmemu_explore(buggy, strategy="random", executions=200)

def test_correct(mmemu_explore):
    result = mmemu_explore(correct, strategy="dfs")
    assert result.exhausted and result.ok
'''

SEEDS = '''
def test_a(mmemu_explore):
    print(f"SEED {mmemu_explore.seed}")

def test_b(mmemu_explore):
    print(f"SEED {mmemu_explore.seed}")
    r = mmemu_explore("demo:lost-update", strategy="random", executions=1000, shrink=False,
                      expect="fail")
    print(f"FOUND-AFTER {r.failure.found_after}")
'''

ASYNC = '''
import pytest

async def test_async_correct(mmemu_explore):
    result = await mmemu_explore.explore_async("demo:lost-update-locked", strategy="dfs")
    assert result.exhausted and result.ok

async def test_async_buggy(mmemu_explore):
    await mmemu_explore.explore_async("demo:lost-update", strategy="random", executions=200)

async def test_sync_call_in_async_test(mmemu_explore):
    with pytest.raises(RuntimeError, match="explore_async"):
        mmemu_explore("demo:lost-update-locked")

def test_sync_in_trio_mode(mmemu_explore):
    assert mmemu_explore("demo:lost-update-locked", strategy="dfs").ok
'''


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MMEMU_SEED", "MMEMU_EXECUTIONS", "MMEMU_STRATEGY", "MMEMU_MAX_PREEMPTIONS"):
        monkeypatch.delenv(name, raising=False)


def _reproduce_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("reproduce with: ")]
    assert len(lines) == 1, text
    return lines[0][len("reproduce with: "):]


def _failure_report(text: str, test: str) -> str:
    """The failure's report: from the test's "___ name ___" header to the
    section that follows it."""
    m = re.search(rf"^_+ {re.escape(test)} _+\n(.*?)^-+ mmemu -+$", text, re.S | re.M)
    assert m, text
    return m.group(1)


def test_buggy_scenario_fails_with_reproduce_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_races=RACES)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    # the shrunk report, then a section titled mmemu with the command
    result.stdout.fnmatch_lines([
        "*_ test_buggy _*",
        "test_races:buggy: InvariantViolation: counter is 1, expected 2",
        "InvariantViolation after 6 steps, 1 preemption*",
        "*cpu0 (a)*cpu1 (b)*",
        "-* mmemu -*",
        "mmemu: test_races:buggy explored with random(seed=*): InvariantViolation*1 preemption*",
        "reproduce with: pytest 'test_races.py::test_buggy' --mmemu-replay=mm1.*",
        "FAILED test_races.py::test_buggy - Failed: test_races:buggy: Invariant*",
    ])
    assert "test_correct" not in _failure_report(out, "test_buggy")


def test_reproduce_line_fails_again_with_the_same_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_races=RACES)
    first = pytester.runpytest()
    first.assert_outcomes(failed=1, passed=1)
    command = _reproduce_line(first.stdout.str())
    argv = shlex.split(command)
    assert argv[0] == "pytest" and argv[1] == "test_races.py::test_buggy"
    # Run the pasted line as a person would (a new process, "pytest" being
    # this interpreter's pytest).
    again = pytester.run(sys.executable, "-m", *argv)
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    again.assert_outcomes(failed=1)
    assert (_failure_report(again.stdout.str(), "test_buggy")
            == _failure_report(first.stdout.str(), "test_buggy"))
    again.stdout.fnmatch_lines(["mmemu: replayed test_races:buggy from --mmemu-replay",
                                f"reproduce with: {command}"])


def test_correct_scenario_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_races=RACES)
    pytester.runpytest("-k", "correct").assert_outcomes(passed=1)


def test_header_shows_the_base_seed(pytester: pytest.Pytester,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_races=RACES)
    pytester.runpytest("-k", "correct").stdout.fnmatch_lines(["mmemu: base seed 0"])
    pytester.runpytest("-k", "correct", "--mmemu-seed=1234", "--mmemu-executions=5").stdout \
        .fnmatch_lines(["mmemu: base seed 1234 (5 executions)"])
    monkeypatch.setenv("MMEMU_SEED", "77")
    pytester.runpytest("-k", "correct").stdout.fnmatch_lines(["mmemu: base seed 77"])


def test_per_test_seed_is_independent_of_order_and_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_seeds=SEEDS)

    def run(*args: str) -> dict[str, list[str]]:
        """Run pytest; the SEED and FOUND-AFTER values printed, in order."""
        res = pytester.runpytest("-s", "-q", *args)
        res.assert_outcomes(passed=sum("::" in a for a in args) or 2)
        found: dict[str, list[str]] = {}
        for key, value in re.findall(r"(SEED|FOUND-AFTER) (\d+)", res.stdout.str()):
            found.setdefault(key, []).append(value)
        return found

    both = run()
    assert both["SEED"] == [str(derive_seed(0, "test_seeds.py::test_a")),
                            str(derive_seed(0, "test_seeds.py::test_b"))]
    reversed_ = run("test_seeds.py::test_b", "test_seeds.py::test_a")
    assert reversed_["SEED"] == list(reversed(both["SEED"]))
    alone = run("test_seeds.py::test_b")
    assert alone["SEED"] == both["SEED"][1:]
    # same seed, same exploration: the failure is found after as many executions
    assert alone["FOUND-AFTER"] == reversed_["FOUND-AFTER"] == both["FOUND-AFTER"]
    other = run("--mmemu-seed=5", "test_seeds.py::test_b")
    assert other["SEED"] == [str(derive_seed(5, "test_seeds.py::test_b"))]
    assert other["SEED"] != alone["SEED"]


def test_derive_seed_is_stable() -> None:
    # a fixed value: the derivation must not depend on the process
    # (PYTHONHASHSEED) or change silently, or old seeds would not reproduce
    assert derive_seed(0, "a::b") == 1535637837
    assert derive_seed(0, "a::b") != derive_seed(1, "a::b")
    assert derive_seed(0, "a::b") != derive_seed(0, "a::c")
    assert 0 <= derive_seed(123, "x") < 2**32


def test_async_tests_under_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_async_races=ASYNC)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_async_buggy _*",
        # the report itself, not wrapped in pytest-trio's nursery group
        "demo:lost-update: InvariantViolation: counter is 1, expected 2*",
        "-* mmemu -*",
        "reproduce with: pytest 'test_async_races.py::test_async_buggy' --mmemu-replay=mm1.*",
    ])
    text = result.stdout.str()
    assert "Exception Group" not in text and "ExceptionGroup" not in text
    assert "Exceptions from Trio nursery" not in text and "+-+----" not in text
    command = shlex.split(_reproduce_line(text))
    again = pytester.runpytest(*command[1:])
    again.assert_outcomes(failed=1)
    assert (_failure_report(again.stdout.str(), "test_async_buggy")
            == _failure_report(result.stdout.str(), "test_async_buggy"))


def test_options_set_the_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_budget='''
def test_budget(mmemu_explore):
    r = mmemu_explore("demo:lost-update-locked")
    print("BUDGET", r.strategy, r.executions)
''')
    res = pytester.runpytest("-s", "--mmemu-strategy=random", "--mmemu-executions=7")
    res.assert_outcomes(passed=1)
    seed = derive_seed(0, "test_budget.py::test_budget")
    res.stdout.fnmatch_lines([f"*BUDGET random(seed={seed}) 7"])
    # without options: the budget the scenario was registered with
    res = pytester.runpytest("-s")
    res.stdout.fnmatch_lines(["*BUDGET dfs(max_preemptions=∞, reduction=dpor) *"])
    res = pytester.runpytest("-s", "--mmemu-max-preemptions=0")
    res.stdout.fnmatch_lines(["*BUDGET dfs(max_preemptions=0, reduction=dpor) *"])


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_races=RACES)
    res = pytester.runpytest("--mmemu-replay=not-a-token")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--mmemu-replay: not an mmemu schedule token*"])
    res = pytester.runpytest("--mmemu-max-preemptions=lots")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--mmemu-max-preemptions must be an integer or 'none'*"])
    res = pytester.runpytest("--mmemu-executions=0")
    assert res.ret == pytest.ExitCode.USAGE_ERROR


def test_unused_replay_token_fails_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_races=RACES)
    first = pytester.runpytest("-k", "buggy")
    token = _reproduce_line(first.stdout.str()).rsplit("=", 1)[1]
    res = pytester.runpytest("-k", "correct", f"--mmemu-replay={token}")
    res.assert_outcomes(passed=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["mmemu: --mmemu-replay was not used: no selected test explored "
                              "test_races:buggy"])


def test_expect_fail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_expect='''
def test_caught(mmemu_explore):
    r = mmemu_explore("demo:lost-update", expect="fail")
    assert r.failure.kind == "InvariantViolation" and r.failure.preemptions == 1

def test_not_caught(mmemu_explore):
    mmemu_explore("demo:lost-update-locked", expect="fail")
''')
    res = pytester.runpytest()
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines([
        "*demo:lost-update-locked was expected to fail, but * executions with dfs* "
        "(the search space was exhausted) found no failure*"])


def test_reproduce_line_is_relative_to_the_invocation_directory(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\n")  # the rootdir is pytester.path
    sub = pytester.mkdir("sub")
    (sub / "test_races.py").write_text(RACES)
    monkeypatch.chdir(sub)
    result = pytester.runpytest("-k", "buggy")
    result.assert_outcomes(failed=1)
    # the node id is relative to the rootdir ("sub/test_races.py::..."), but
    # the command is pasted here, in sub/
    result.stdout.fnmatch_lines([f"rootdir: {pytester.path}"])
    command = _reproduce_line(result.stdout.str())
    assert shlex.split(command)[1] == "test_races.py::test_buggy"
    again = pytester.runpytest(*shlex.split(command)[1:])
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["mmemu: replayed test_races:buggy from --mmemu-replay"])
