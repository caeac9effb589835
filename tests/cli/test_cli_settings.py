"""One precedence everywhere: flag, then MMEMU_* environment, then the
suite's default -- in the API, the CLI and pytest -- and bad values are one
line and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import mmemu
from mmemu.engine import ModelError, get_scenario
from mmemu.engine._settings import UNSET, Settings, resolve_settings

from ._helpers import cli


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    env.update(overrides)
    return env


def test_resolve_order_flag_environment_suite_default() -> None:
    sc = get_scenario("pagecache:lookup-vs-reclaim")
    env = {"MMEMU_EXECUTIONS": "7", "MMEMU_STRATEGY": "random"}
    s = resolve_settings(sc, environ=env, executions=3)
    assert (s.executions, s.sources["executions"]) == (3, "flag")
    assert (s.strategy, s.sources["strategy"]) == ("random", "environment")
    assert (s.max_preemptions, s.sources["max_preemptions"]) == (sc.max_preemptions, "suite")
    assert (s.seed, s.sources["seed"]) == (0, "default")
    bare = resolve_settings(None, environ={})
    assert bare == Settings()
    # None is a value for the bound (unbounded), UNSET is "not given"
    assert resolve_settings(sc, environ={}, max_preemptions=None).max_preemptions is None
    assert resolve_settings(sc, environ={}, max_preemptions=UNSET).max_preemptions \
        == sc.max_preemptions
    assert resolve_settings(sc, environ={"MMEMU_MAX_PREEMPTIONS": "none"}).max_preemptions is None


@pytest.mark.parametrize(("var", "value", "message"), [
    ("MMEMU_STRATEGY", "bogus", "environment variable MMEMU_STRATEGY must be one of random, pct, dfs (got 'bogus')"),
    ("MMEMU_EXECUTIONS", "-5", "environment variable MMEMU_EXECUTIONS must be at least 1 (got -5)"),
    ("MMEMU_EXECUTIONS", "lots", "environment variable MMEMU_EXECUTIONS must be an integer (got 'lots')"),
    ("MMEMU_MAX_PREEMPTIONS", "-1", "environment variable MMEMU_MAX_PREEMPTIONS must be at least 0 (got -1)"),
    ("MMEMU_SEED", "x", "environment variable MMEMU_SEED must be an integer (got 'x')"),
    ("MMEMU_STEP_TIMEOUT", "soon", "environment variable MMEMU_STEP_TIMEOUT must be a number of seconds (got 'soon')"),
])
def test_bad_environment_is_exit_2_and_one_line(var: str, value: str, message: str,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelError, match="^" + re.escape(message) + "$"):
        resolve_settings(None, environ={var: value})
    monkeypatch.setenv(var, value)
    for command in (["run", "demo:lost-update-locked"], ["mutants"]):
        ran = cli(capsys, *command)
        assert ran.code == 2, command
        assert ran.err_lines == [f"mmemu: error: {message}"], command
        assert ran.out == ""


def test_a_bad_variable_as_a_user_sees_it() -> None:
    done = subprocess.run([sys.executable, "-m", "mmemu.cli", "run"], capture_output=True,
                          text=True, env=_env(MMEMU_STRATEGY="bogus"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mmemu: error: environment variable MMEMU_STRATEGY must be one of random, pct, dfs "
        "(got 'bogus')"]
    assert done.stdout == ""


def _json_rows(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    ran = cli(capsys, "run", *args, "--json")
    assert ran.code == 0, ran.err
    return [json.loads(ln) for ln in ran.out.splitlines()]


def test_cli_run_takes_the_environment_then_the_suite_default(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    suite = "pagecache:lookup-vs-reclaim"
    default = get_scenario(suite)
    for var in [k for k in os.environ if k.startswith("MMEMU_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("MMEMU_MAX_PREEMPTIONS", "0")
    rows = _json_rows(capsys, suite)
    assert all(str(r["strategy"]).startswith(f"{default.strategy}(max_preemptions=0")
               for r in rows)
    monkeypatch.setenv("MMEMU_STRATEGY", "random")
    monkeypatch.setenv("MMEMU_EXECUTIONS", "5")
    monkeypatch.setenv("MMEMU_SEED", "3")
    rows = _json_rows(capsys, suite)
    assert [r["executions"] for r in rows] == [5, 5]
    assert all(r["strategy"] == "random(seed=3)" for r in rows)
    rows = _json_rows(capsys, suite, "--executions", "2", "--seed", "4")
    assert [r["executions"] for r in rows] == [2, 2]
    assert all(r["strategy"] == "random(seed=4)" for r in rows)


def test_api_uses_the_suites_default() -> None:
    sc = get_scenario("demo:lost-update-locked")
    res = mmemu.explore("demo:lost-update-locked")
    assert res.strategy.startswith(f"{sc.strategy}(")
    assert res.exhausted  # the suite's own budget explores it all


def test_api_takes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMEMU_STRATEGY", "random")
    monkeypatch.setenv("MMEMU_EXECUTIONS", "9")
    res = mmemu.explore("demo:lost-update-locked")
    assert (res.strategy, res.executions) == ("random(seed=0)", 9)
    res = mmemu.explore("demo:lost-update-locked", executions=4)
    assert res.executions == 4
