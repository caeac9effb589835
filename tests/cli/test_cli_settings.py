"""One precedence everywhere: flag, then MMEMU_* environment, then the
suite's default -- in the API, the CLI and pytest -- and bad values are one
line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mmemu
from mmemu.engine import ModelError, get_scenario
from mmemu.engine._settings import UNSET, Settings, resolve_settings


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    env.update(overrides)
    return env


def _run_json(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmemu.cli", "run", *args, "--json"],
                          capture_output=True, text=True, env=_env(**env), timeout=300)


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
def test_bad_environment_is_exit_2_and_one_line(var: str, value: str, message: str) -> None:
    with pytest.raises(ModelError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        resolve_settings(None, environ={var: value})
    done = subprocess.run([sys.executable, "-m", "mmemu.cli", "run", "demo:lost-update-locked"],
                          capture_output=True, text=True, env=_env(**{var: value}), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"mmemu: error: {message}"]
    assert done.stdout == ""


def test_cli_run_takes_the_environment_then_the_suite_default() -> None:
    suite = "pagecache:lookup-vs-reclaim"
    default = get_scenario(suite)
    env_run = _run_json(suite, MMEMU_STRATEGY="random", MMEMU_EXECUTIONS="5", MMEMU_SEED="3")
    assert env_run.returncode == 0, env_run.stderr
    rows = [json.loads(ln) for ln in env_run.stdout.splitlines()]
    assert [r["executions"] for r in rows] == [5, 5]
    assert all(r["strategy"] == "random(seed=3)" for r in rows)
    flag_run = _run_json(suite, "--executions", "2", "--seed", "4", MMEMU_STRATEGY="random",
                         MMEMU_EXECUTIONS="5", MMEMU_SEED="3")
    rows = [json.loads(ln) for ln in flag_run.stdout.splitlines()]
    assert [r["executions"] for r in rows] == [2, 2]
    assert all(r["strategy"] == "random(seed=4)" for r in rows)
    bound = _run_json(suite, MMEMU_MAX_PREEMPTIONS="0")
    rows = [json.loads(ln) for ln in bound.stdout.splitlines()]
    assert all(r["strategy"].startswith(f"{default.strategy}(max_preemptions=0") for r in rows)


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
