"""``-o``: through a symlink to its target, never over a FIFO or a device,
the umask's mode for a new file, ``-o -`` for stdout."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmemu.engine import explore

from ._helpers import cli


@pytest.fixture(scope="module")
def token() -> str:
    failure = explore("demo:lost-update", strategy="dfs").failure
    assert failure is not None
    return failure.schedule


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("command", ["report", "trace"])
def test_a_fifo_is_refused_with_one_line(here: Path, token: str, command: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(here / "pipe")
    ran = cli(capsys, command, token, "-o", "pipe")
    assert ran.code == 2
    assert ran.err_lines == [
        "mmemu: error: cannot write 'pipe': it is a FIFO, not a regular file (use '-o -' for stdout)"]
    assert stat.S_ISFIFO(os.stat(here / "pipe").st_mode)  # still a FIFO


def test_a_device_is_refused(here: Path, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "report", token, "-o", "/dev/null")
    assert ran.code == 2
    assert ran.err_lines == ["mmemu: error: cannot write '/dev/null': it is a character device, "
                             "not a regular file (use '-o -' for stdout)"]
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symlink_is_written_through(here: Path, token: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (here / "real").mkdir()
    target = here / "real" / "race.html"
    target.write_text("old")
    target.chmod(0o640)
    link = here / "race.html"
    link.symlink_to(target)
    ran = cli(capsys, "report", token, "-o", "race.html")
    assert ran.code == 0, ran.err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its mode
    assert sorted(p.name for p in (here / "real").iterdir()) == ["race.html"]  # no temp left


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_new_file_gets_the_umask_mode(here: Path, token: str, mask: int, umask: None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    os.umask(mask)
    ran = cli(capsys, "trace", token, "-o", "race.json")
    assert ran.code == 0, ran.err
    assert stat.S_IMODE((here / "race.json").stat().st_mode) == 0o666 & ~mask


def test_dash_writes_to_stdout(here: Path, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    ran = cli(capsys, "trace", token, "-o", "-")
    assert ran.code == 0, ran.err
    assert ran.out.startswith('{"traceEvents":')
    assert "wrote to stdout" in ran.err
    assert list(here.iterdir()) == []
    html = cli(capsys, "report", token, "--output", "-")
    assert html.code == 0 and html.out.startswith("<!DOCTYPE html>")
