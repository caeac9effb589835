"""The replay line mmemu prints works where it was printed, and from any
other directory: for a user's own scenario file, a script, a pytest failure,
a Hypothesis failure and a driver given as ``file.py:Class``.  Token
parameters are checked against the scenario's axes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmemu.engine import Schedule

from ._helpers import cli

RACE = textwrap.dedent('''
    import mmemu


    async def inc(box):
        await mmemu.step("1. tmp = counter", reads=("counter",))
        tmp = box["v"]
        await mmemu.step("2. counter = tmp + 1", writes=("counter",))
        box["v"] = tmp + 1


    async def lost_update(sim):
        box = {"v": 0}
        async with sim.cpus() as cpus:
            cpus.start(inc, box, name="a")
            cpus.start(inc, box, name="b")
        sim.check(box["v"] == 2, f"counter is {box['v']}")
''')


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}


def _sh(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a printed command line as a user pastes it into a shell."""
    args = shlex.split(line)
    assert args[0] in ("mmemu", "pytest")
    return subprocess.run([sys.executable, "-m", "mmemu.cli" if args[0] == "mmemu" else "pytest",
                           *args[1:]], cwd=cwd, capture_output=True, text=True, env=_env(),
                          timeout=300)


def _replay_line(text: str) -> str:
    lines = text.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.strip().endswith("replay with:"))
    return lines[k + 1].strip().removeprefix("E").strip()


def test_a_scripts_replay_line_works_from_another_directory(tmp_path: Path) -> None:
    (tmp_path / "race.py").write_text(RACE + textwrap.dedent('''
        if __name__ == "__main__":
            print(mmemu.explore(lost_update, strategy="dfs").failure.report())
    '''))
    made = subprocess.run([sys.executable, "race.py"], cwd=tmp_path, capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert made.returncode == 0, made.stderr
    line = _replay_line(made.stdout)
    assert line.startswith("mmemu replay mm1.")
    elsewhere = tmp_path / "elsewhere"  # not where the script is: harder than here
    elsewhere.mkdir()
    again = _sh(line, elsewhere)
    assert again.returncode == 1, again.stderr
    assert "InvariantViolation: counter is 1" in again.stdout
    assert "mmemu: __main__:lost_update\n" in again.stdout  # named without its path


def test_pytest_and_hypothesis_failures_replay_lines_work_in_that_directory(tmp_path: Path) -> None:
    (tmp_path / "races.py").write_text(RACE)
    (tmp_path / "test_races.py").write_text(textwrap.dedent('''
        from hypothesis import given, settings

        from mmemu.testing import run_schedule, schedules
        from races import lost_update


        def test_counter(mmemu_explore):
            mmemu_explore(lost_update)


        @settings(max_examples=100, derandomize=True, database=None, deadline=None)
        @given(schedule=schedules())
        def test_counter_hypothesis(schedule):
            assert run_schedule(lost_update, schedule).failure is None
    '''))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 1, run.stdout
    assert "2 failed" in run.stdout
    out = run.stdout
    plugin_part = out[out.index("_ test_counter _"):out.index("_ test_counter_hypothesis _")]
    hypothesis_part = out[out.index("_ test_counter_hypothesis _"):]
    # the fixture's report
    line = _replay_line(plugin_part)
    assert line.startswith("mmemu replay mm1.")
    again = _sh(line, tmp_path)
    assert again.returncode == 1, again.stderr
    assert "InvariantViolation: counter is 1" in again.stdout
    reproduce = next(ln for ln in plugin_part.splitlines() if ln.startswith("reproduce with: "))
    rerun = _sh(reproduce.removeprefix("reproduce with: "), tmp_path)
    assert rerun.returncode == 1 and "InvariantViolation: counter is 1" in rerun.stdout
    # Hypothesis's note
    note = next(ln for ln in hypothesis_part.splitlines() if "replay with: mmemu replay mm1." in ln)
    again = _sh(note.split("replay with: ", 1)[1], tmp_path)
    assert again.returncode == 1, again.stderr
    assert "InvariantViolation: counter is 1" in again.stdout


def test_a_scenario_inside_a_function_offers_the_python_replay(tmp_path: Path) -> None:
    script = RACE + textwrap.dedent('''

        def make():
            async def local(sim):
                await lost_update(sim)
            return local

        print(mmemu.explore(make(), strategy="dfs").failure.replay_command())
    ''')
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"mmemu\.replay\(local, 'mm1\.[\w-]+'\)\n", done.stdout)


def test_a_driver_file_token_works_from_another_directory(tmp_path: Path) -> None:
    drivers = Path(__file__).resolve().parents[1] / "drivers" / "sample_drivers.py"
    work = tmp_path / "work"
    work.mkdir()
    (work / "mydriver.py").write_text(drivers.read_text())
    run = subprocess.run([sys.executable, "-m", "mmemu.cli", "run", "notifier:truncate-vs-fault",
                          "--api", "2.6.27", "--driver", "mydriver.py:ZapNothingDriver"],
                         cwd=work, capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 1, run.stderr
    line = _replay_line(run.stdout)
    token = line.split()[-1]
    assert Schedule.from_token(token).params["driver"] == f"{work / 'mydriver.py'}:ZapNothingDriver"
    again = _sh(line, tmp_path)  # not where the driver file is
    assert again.returncode == 1, again.stderr
    kind = next(ln for ln in run.stdout.splitlines() if ln.endswith(")") and "after" in ln)
    assert kind.split()[0] in again.stdout


def test_token_parameters_are_checked_against_the_axes(capsys: pytest.CaptureFixture[str]) -> None:
    token = Schedule("pagecache:lookup-vs-reclaim", (0, 1), params={"lookup": "nosuch"}).to_token()
    ran = cli(capsys, "replay", token)
    assert ran.code == 2
    assert ran.err_lines == [
        "mmemu: error: scenario 'pagecache:lookup-vs-reclaim' has no lookup='nosuch' "
        "(its lookup axis: find_get_page, find_lock_page)"]
