"""``-o``: through a symlink to its target, never over a FIFO or a device,
the umask's mode for a new file, ``-o -`` for stdout."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmemu.engine import explore


@pytest.fixture(scope="module")
def token() -> str:
    failure = explore("demo:lost-update", strategy="dfs").failure
    assert failure is not None
    return failure.schedule


def _mmemu(cwd: Path, *args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    def preexec() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "mmemu.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, preexec_fn=preexec)


@pytest.mark.parametrize("command", ["report", "trace"])
def test_a_fifo_is_refused_with_one_line(tmp_path: Path, token: str, command: str) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = _mmemu(tmp_path, command, token, "-o", "pipe")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mmemu: error: cannot write 'pipe': it is a FIFO, not a regular file (use '-o -' for stdout)"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO


def test_a_device_is_refused(tmp_path: Path, token: str) -> None:
    done = _mmemu(tmp_path, "report", token, "-o", "/dev/null")
    assert done.returncode == 2
    assert "it is a character device, not a regular file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symlink_is_written_through(tmp_path: Path, token: str) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "race.html"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "race.html"
    link.symlink_to(target)
    done = _mmemu(tmp_path, "report", token, "-o", "race.html")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its mode
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["race.html"]  # no temp left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_new_file_gets_the_umask_mode(tmp_path: Path, token: str, umask: int) -> None:
    done = _mmemu(tmp_path, "trace", token, "-o", "race.json", umask=umask)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "race.json").stat().st_mode) == 0o666 & ~umask


def test_dash_writes_to_stdout(tmp_path: Path, token: str) -> None:
    done = _mmemu(tmp_path, "trace", token, "-o", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('{"traceEvents":')
    assert "wrote to stdout" in done.stderr
    assert list(tmp_path.iterdir()) == []
    html = _mmemu(tmp_path, "report", token, "--output", "-")
    assert html.returncode == 0 and html.stdout.startswith("<!DOCTYPE html>")
