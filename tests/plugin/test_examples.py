"""The examples run as their docstrings say (so CI keeps them working)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, text=True,
                          capture_output=True, timeout=120, check=False)


def _pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # no cache directory in the checkout
    return _run("-m", "pytest", "-p", "no:cacheprovider", *args, env=env)


def test_engine_scenario_example() -> None:
    proc = _run(str(EXAMPLES / "engine_scenario.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "InvariantViolation after 7 steps, 1 preemption" in out
    assert "lookup uses a page that reclaim freed" in out
    assert "same report" in out
    assert "forced execution: InvariantViolation" in out
    assert "search space exhausted: True, failures: 0" in out
    assert out.rstrip().endswith("all as described")


def test_plugin_example_passes() -> None:
    proc = _pytest("examples/test_with_plugin.py", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed, 1 skipped" in proc.stdout


def test_plugin_example_shows_a_race_and_its_reproduce_line_replays_it() -> None:
    proc = _pytest("examples/test_with_plugin.py", "-k", "show",
                   env={"MMEMU_EXAMPLE_SHOW_RACE": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("reproduce with: ")]
    assert len(lines) == 1, proc.stdout
    argv = shlex.split(lines[0][len("reproduce with: "):])
    assert argv[:2] == ["pytest", "examples/test_with_plugin.py::test_show_a_race"]
    # pasted as is (without the environment variable): replays and fails again
    again = _pytest(*argv[1:])
    assert again.returncode == 1, again.stdout + again.stderr
    assert "mmemu: replayed demo:lost-update from --mmemu-replay" in again.stdout
    assert "InvariantViolation after 6 steps, 1 preemption" in again.stdout
