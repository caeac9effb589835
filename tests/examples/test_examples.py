"""Every example script runs and says what its docstring says.

Every ``examples/*.py`` except the ``test_*.py`` files (pytest files, run by
``tests/plugin/test_examples.py``) is run here in a subprocess, from the
checkout's root as its docstring tells a reader to: a new example is picked
up without touching this file and must exit 0.  ``KEY_LINES`` lists, per
script, lines its output must contain (checked in order); a script listed
there that no longer exists fails ``test_key_lines_name_existing_examples``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))

#: lines (substrings of lines) each script's stdout must contain, in order
def _toy_runs() -> int:
    """check_driver's runs for the toy driver (2.6.27 only): its plan, one
    run per driver suite and combination of the suite's other axes that
    takes that driver (a suite for a callback it lacks does not)."""
    from mmemu.testing import _driver_plan
    return len(_driver_plan(f"{EXAMPLES / 'toy_driver.py'}:ToyDriver", None))


_TOY_RUNS = _toy_runs()

KEY_LINES: dict[str, list[str]] = {
    "engine_scenario.py": [
        "InvariantViolation after 7 steps, 1 preemption",
        "same report",
        "forced execution: InvariantViolation",
        "search space exhausted: True, failures: 0",
        "all as described",
    ],
    "kernel_race.py": [
        "mmemu: pagecache:lookup-vs-reclaim [lookup=find_get_page] with mutant filemap:no-recheck",
        "WrongPageFromLookup after 27 steps, 1 preemption",
        "replay with:",
        "found: WrongPageFromLookup",
        "replayed: same report",
        "search space exhausted: True, failures: 0",
        "all as described",
    ],
    "check_my_driver.py": [
        "notifier:munmap-vs-fault",
        f"toy driver: {_TOY_RUNS} of {_TOY_RUNS} driver suite runs passed",
        "driver=examples/check_my_driver.py:ZapsNothing]: FreedPageStillMapped",
        "mmemu replay mm1.",
        "caught: FreedPageStillMapped",
        "all as described",
    ],
    # a module that defines a driver class: importing it must work, it prints nothing
    "toy_driver.py": [],
}


def _run(script: str) -> subprocess.CompletedProcess[str]:
    # The MMEMU_* settings of the calling shell would change the budgets the
    # examples describe: run them as a reader would.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    return subprocess.run([sys.executable, str(Path("examples") / script)], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=120, check=False)


def test_there_are_examples_to_run() -> None:
    assert {"kernel_race.py", "check_my_driver.py", "engine_scenario.py"} <= set(SCRIPTS)


def test_key_lines_name_existing_examples() -> None:
    assert set(KEY_LINES) <= set(SCRIPTS), set(KEY_LINES) - set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str) -> None:
    proc = _run(script)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    pos = 0
    for want in KEY_LINES.get(script, []):
        found = next((i for i in range(pos, len(lines)) if want in lines[i]), None)
        assert found is not None, (f"{script}: no line containing {want!r} "
                                   f"(after line {pos}) in:\n{proc.stdout}")
        pos = found + 1
