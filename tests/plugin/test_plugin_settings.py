"""The plugin's budget follows the one precedence of every front door: the
fixture's arguments and --mmemu-* options, then MMEMU_*, then the suite."""

from __future__ import annotations

import os

import pytest


def _budget_lines(result: pytest.RunResult) -> list[str]:
    # with -s the print lands after pytest's "test_budget.py " on the same line
    return ["BUDGET " + ln.split("BUDGET ", 1)[1] for ln in result.outlines if "BUDGET " in ln]


def test_options_then_environment_then_suite(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_budget="""
        def test_budget(mmemu_explore):
            res = mmemu_explore("demo:lost-update-locked")
            print("BUDGET", res.strategy, res.executions)
    """)
    for var in [k for k in os.environ if k.startswith("MMEMU_")]:
        monkeypatch.delenv(var)
    suite = pytester.runpytest("-s", "-p", "no:cacheprovider")
    assert [ln.split()[1].split("(")[0] for ln in _budget_lines(suite)] == ["dfs"]  # the suite's
    monkeypatch.setenv("MMEMU_STRATEGY", "random")
    monkeypatch.setenv("MMEMU_EXECUTIONS", "6")
    env = pytester.runpytest("-s", "-p", "no:cacheprovider")
    [line] = _budget_lines(env)
    assert line.startswith("BUDGET random(seed=") and line.endswith(" 6")
    flag = pytester.runpytest("-s", "-p", "no:cacheprovider", "--mmemu-executions=2")
    [line] = _budget_lines(flag)
    assert line.startswith("BUDGET random(seed=") and line.endswith(" 2")
    monkeypatch.setenv("MMEMU_EXECUTIONS", "-5")
    bad = pytester.runpytest("-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "MMEMU_EXECUTIONS must be at least 1 (got -5)" in bad.stderr.str()
