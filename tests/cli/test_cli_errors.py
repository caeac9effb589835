"""Bad input everywhere: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmemu.cli import app
from mmemu.engine import Schedule

from ._helpers import cli, failure_of


@pytest.fixture(scope="module")
def token() -> str:
    return failure_of("demo:lost-update").schedule


def _bad_inputs(token: str, tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, a fragment the one stderr line must contain)."""
    version, _, payload = token.partition(".")
    other_version = "mm9." + payload
    truncated = token[: len(token) - 7]
    unknown_scenario = Schedule(scenario="nosuch:thing", choices=(0, 1)).to_token()
    out = []
    for cmd, ext in (("replay", None), ("trace", "json"), ("report", "html")):
        extra = ["-o", str(tmp / f"out.{ext}")] if ext else []
        out += [
            ([cmd, "garbage", *extra], "not an mmemu schedule token"),
            ([cmd, truncated, *extra], "truncated or corrupted"),
            ([cmd, other_version, *extra], "made by another mmemu version"),
            ([cmd, unknown_scenario, *extra], "unknown scenario 'nosuch:thing'"),
        ]
    out += [
        (["trace", token, "-o", str(tmp / "no-such-dir" / "t.json")], "does not exist"),
        (["report", token, "-o", str(tmp / "no-such-dir" / "r.html")], "does not exist"),
        (["trace", token, "-o", str(tmp)], "is a directory"),
        (["trace", token], "--output"),
        (["run", "demo:lost-updat"], "did you mean demo:lost-update"),
        (["run", "demo:lost-update", "--mutant", "clitest:no-lok"], "did you mean clitest:no-lock"),
        (["run", "demo:lost-update", "--executions", "0"], "--executions must be at least 1"),
        (["run", "demo:lost-update", "--strategy", "bfs"], "--strategy must be"),
        (["explain", "demo:lost-updat"], "did you mean demo:lost-update"),
        (["explain", "clitest:no-lok"], "did you mean clitest:no-lock"),
        (["explain", "demo:lost-update", "--executions", "0"], "--executions must be at least 1"),
        (["frobnicate"], "frobnicate"),
    ]
    return out


def test_every_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                token: str, cli_registry: None) -> None:
    cases = _bad_inputs(token, tmp_path)
    assert len(cases) == 24
    for args, fragment in cases:
        ran = cli(capsys, *args)
        assert ran.code == 2, (args, ran)
        assert len(ran.err_lines) == 1, (args, ran.err)
        assert ran.err_lines[0].startswith("mmemu: error: "), (args, ran.err)
        assert fragment in ran.err_lines[0], (args, ran.err)
        assert "Traceback" not in ran.err + ran.out
    # nothing half-written was left behind by the failed writes
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMEMU_LOG", "loud")
    ran = cli(capsys, "list")
    assert ran.code == 2 and ran.err_lines == [
        "mmemu: error: MMEMU_LOG must be one of debug, info, warning, error (got 'loud')"]


def test_bad_token_in_a_real_process(token: str, tmp_path: Path) -> None:
    """The installed entry point exits 2 with one line (sys.exit, not a traceback)."""
    env = dict(os.environ, PYTHONHASHSEED="123")
    proc = subprocess.run([sys.executable, "-m", "mmemu.cli", "trace", token[:-7], "-o",
                           str(tmp_path / "x.json")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "truncated or corrupted" in proc.stderr
    assert proc.stdout == ""


def test_every_command_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [c for c in app if not c.startswith("-")]
    assert {"list", "run", "replay", "trace", "report", "explain"} <= set(commands)
    for name in commands:
        ran = cli(capsys, name, "--help")
        assert ran.code == 0, name
        assert "Example: mmemu " + name in ran.out, f"'mmemu {name} --help' has no Example line"
    top = cli(capsys, "--help")
    assert "Example:" in top.out and "--verbose" in top.out


def test_output_is_replaced_atomically(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       token: str) -> None:
    target = tmp_path / "t.json"
    target.write_text("old contents")
    ran = cli(capsys, "trace", token, "-o", target)
    assert ran.code == 0, ran.err
    assert target.read_text().startswith('{"traceEvents":')
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left


def test_a_mutant_no_execution_exercises_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    # the demo suite never calls the pagecache lookup the mutant changes:
    # the run must not pass as if it had tested the mutant
    ran = cli(capsys, "run", "demo:lost-update-locked", "--mutant", "filemap:no-recheck")
    assert ran.code == 2
    assert ran.err_lines[0].startswith(
        "note: no selected suite (demo:lost-update-locked) declares that it catches mutant "
        "filemap:no-recheck (the suites that do: ")
    assert ran.err_lines[-1].startswith(
        "mmemu: error: mutant never exercised by the selected suites (demo:lost-update-locked), "
        "so this run tested nothing: filemap:no-recheck (suites that catch it: ")
    assert "pagecache:lookup-vs-reclaim" in ran.err_lines[-1]


def test_a_suite_may_be_run_on_a_mutant_it_does_not_declare(
        capsys: pytest.CaptureFixture[str]) -> None:
    # "does this suite catch that mutant too?" is a fair question: the run
    # goes ahead with a note, and passes when the mutant was exercised
    ran = cli(capsys, "run", "mm:reclaim-vs-gup", "--mutant", "filemap:no-recheck")
    assert ran.code == 0, ran.err
    assert "declares that it catches mutant filemap:no-recheck" in ran.err_lines[0]
    assert "mm:reclaim-vs-gup" in ran.out


def test_driver_on_suites_that_take_none_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "run", "demo:*", "--driver", "kvm")
    assert ran.code == 2
    assert ran.err_lines == ["mmemu: error: --driver kvm: none of the selected suites takes a "
                             "driver (demo:lost-update, demo:lost-update-locked)"]


def test_driver_is_not_stamped_onto_suites_without_a_driver_axis(
        capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "run", "demo:lost-update-locked", "notifier:truncate-vs-fault",
              "--driver", "kvm", "--api", "2.6.27", "--json")
    assert ran.code == 0, ran.err
    import json

    rows = [json.loads(ln) for ln in ran.out.splitlines()]
    assert [(r["suite"], r["params"].get("driver")) for r in rows] == [
        ("notifier:truncate-vs-fault", "kvm")]
    assert "--driver kvm: left out 1 suite that takes no driver" in ran.err
