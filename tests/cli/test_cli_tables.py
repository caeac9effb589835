"""Tables and timelines a user can read at 80 columns, with every name whole.

Run as a user runs them: ``mmemu`` in a subprocess, its output piped, with
``COLUMNS`` set (a pipe has no terminal width of its own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from mmemu.cli._tables import NAME, NUMBER, TEXT, Column, Table
from mmemu.engine import Trace, TraceEvent, all_mutants, all_scenarios, render_timeline

from ._helpers import cli, interrupt_when


def _mmemu(*args: str, columns: int | None = 80, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.pop("COLUMNS", None)
    if columns is not None:
        full["COLUMNS"] = str(columns)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "mmemu.cli", *args], capture_output=True,
                          text=True, env=full, timeout=300)


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


@pytest.fixture
def columns_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def test_list_at_80_columns_keeps_every_name_whole(columns_80: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "list", "--mutants")
    assert ran.code == 0, ran.err
    assert "…" not in ran.out
    assert _widest(ran.out) <= 80
    lines = ran.out.splitlines()
    for sc in all_scenarios():
        # each suite name once, whole, at the start of its row
        assert sum(1 for ln in lines if ln.split(" ", 1)[0] == sc.name) == 1, sc.name
    for m in all_mutants():
        assert any(ln.split(" ", 1)[0] == m.name for ln in lines), m.name
    assert "interval:insert-remove-vs-invalidate" in ran.out


def test_run_summary_at_80_columns_one_line_per_run_and_a_totals_line(
        columns_80: None, capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "run", "demo:*", "interval:insert-remove-vs-invalidate",
              "--executions", "20")
    assert ran.code == 1  # demo:lost-update fails on purpose
    table = ran.out[ran.out.index("suite "):]
    assert "…" not in table
    assert _widest(table) <= 80
    rows = {ln.split()[0]: ln for ln in table.splitlines() if ln and not ln.startswith((" ", "-"))}
    # suite, executions, result and time on the run's own line, names whole
    assert rows["demo:lost-update"].split()[1:3] == ["2", "InvariantViolation"]
    assert rows["demo:lost-update-locked"].split()[1:3] == ["4", "ok"]
    assert rows["interval:insert-remove-vs-invalidate"].split()[1:3] == ["20", "ok"]
    total = table.strip().splitlines()[-1]
    assert total.startswith("total: 3 runs, 26 executions, ") and "1 failure" in total


def test_piped_output_honours_columns(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    wide = cli(capsys, "run", "interval:insert-remove-vs-invalidate", "--executions", "5")
    # at 200 columns the whole row, parameters and strategy included, is one line
    row = [ln for ln in wide.out.splitlines() if ln.startswith("interval:")]
    assert len(row) == 1 and "modern" in row[0] and "dfs<=1" in row[0].split()  # the suite declares bound 1
    # as a user pipes it: a subprocess whose stdout is a pipe
    narrow = _mmemu("run", "interval:insert-remove-vs-invalidate", "--executions", "5",
                    columns=60)
    assert wide.code == narrow.returncode == 0
    assert _widest(narrow.stdout) <= 60
    assert "interval:insert-remove-vs-invalidate" in narrow.stdout.split()


def test_interrupted_run_says_so_in_its_result_column() -> None:
    done, _took = interrupt_when(["run", "demo:lost-update-locked", "--strategy", "random",
                                  "--executions", "100000000"],
                                 "exploring demo:lost-update-locked ",
                                 env=dict(os.environ, COLUMNS="80"))
    assert done.returncode == 130, done.stderr
    row = [ln for ln in done.stdout.splitlines() if ln.startswith("demo:lost-update-locked")]
    assert len(row) == 1 and "interrupted" in row[0].split(), done.stdout
    assert done.stdout.strip().splitlines()[-1].endswith("(interrupted)")


def test_table_layouts_never_cut_a_name() -> None:
    t = Table([Column("suite", NAME), Column("summary", TEXT), Column("n", NUMBER),
               Column("result", NAME)])
    t.add_row("interval:insert-remove-vs-invalidate", "a long summary " * 6, "12345",
              "WrongPageFromLookup")
    for width in (200, 100, 80, 60, 30, 10):
        text = "\n".join(line.plain for line in t.lines(width))
        for word in ("interval:insert-remove-vs-invalidate", "WrongPageFromLookup", "12345"):
            assert word in text.split(), (width, text)
        assert text.count("summary") == 1 + 6  # the header (or field name) and every word
    # one line per row when the row fits
    assert len(t.lines(200)) == 3


def test_timeline_wraps_long_labels_without_losing_a_word() -> None:
    label = "spin_lock(kvm->mmu_lock) acquired by the fault path after mmu_notifier_retry"
    trace = Trace(cpus=((0, "kvm"), (1, "truncate")), events=(
        TraceEvent(0, 0, label, (), (), False),
        TraceEvent(1, 1, "short", (), (), True),
    ))
    text = render_timeline(trace)
    assert "…" not in text
    assert " ".join(text.split()).count("spin_lock(kvm->mmu_lock)") == 1
    for word in label.split():
        assert word in text.split(), word
    assert _widest(text) < 120


@pytest.mark.parametrize("steps", [10_001])
def test_livelock_report_folds_the_spin_loop(steps: int) -> None:
    from mmemu._html_report import render_report, validate_report_html
    from mmemu.engine import explore

    from ._models import spin_livelock

    res = explore(spin_livelock, strategy="random", executions=1, max_steps=steps - 1,
                  shrink=False)
    failure = res.failure
    assert failure is not None and failure.kind == "Livelock"
    assert failure.steps == steps
    report = failure.report()
    assert len(report.splitlines()) < 40
    folds = re.findall(r"#(\d+)-#(\d+): the (?:\d+ steps|step) above repeated (\d+) more times",
                       report)
    # one fold stands for nearly all of the 10,001 steps
    assert folds and sum(int(b) - int(a) + 1 for a, b, _ in folds) > steps - 40, report
    page = render_report(failure.trace, failure=failure, title="livelock")
    assert len(page) < 50_000
    shape = validate_report_html(page)
    assert not shape.problems, shape.problems
