"""Schedule tokens and what a bad one does (mirrors
mmemu/engine/_schedule.py); the CLI's replay of a bad token."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib

import pytest

import mmemu
from mmemu.engine import Schedule


def test_token_round_trip() -> None:
    s = Schedule(scenario="area:name", choices=(0, 1, 1, 0, 2), params={"driver": "kvm"},
                 mutants=("a:b",), max_steps=77, prelude=((1, 0),))
    token = s.to_token()
    assert token.startswith("mm1.")
    assert token.isascii() and " " not in token
    assert Schedule.from_token(token) == s
    assert Schedule.from_token(f"  {token}\n") == s


def test_token_with_many_cpus() -> None:
    s = Schedule(scenario="area:name", choices=(0, 40, 3))
    assert Schedule.from_token(s.to_token()).choices == (0, 40, 3)


@pytest.mark.parametrize("token", ["garbage", "", "mm1", "mm1.", "mm1.!!!!", "mm1.AAAA",
                                   "xx1.eNqrVkpW", "mm1.eNqrVkpW"])
def test_garbage_token_is_schedule_format_error(token: str) -> None:
    with pytest.raises(mmemu.ScheduleFormatError):
        Schedule.from_token(token)


def test_truncated_token_is_schedule_format_error() -> None:
    f = mmemu.explore("demo:lost-update", strategy=mmemu.DFS(), executions=100).failure
    assert f is not None
    for cut in (len(f.schedule) // 2, len(f.schedule) - 3):
        with pytest.raises(mmemu.ScheduleFormatError, match="truncated or corrupted"):
            mmemu.replay(None, f.schedule[:cut])


def test_token_of_another_version() -> None:
    token = Schedule(scenario="demo:lost-update", choices=(0, 1)).to_token()
    with pytest.raises(mmemu.ScheduleFormatError, match="another mmemu version"):
        Schedule.from_token("mm9." + token.partition(".")[2])


def _payload(doc: object) -> str:
    raw = json.dumps(doc).encode()
    return "mm1." + base64.urlsafe_b64encode(zlib.compress(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("doc", [[1, 2], {"s": "a:b"}, {"s": 3, "c": ""},
                                 {"s": "a:b", "c": "0!"}, {"s": "a:b", "c": [0, -1]},
                                 {"s": "a:b", "c": "01", "x": 0},
                                 {"s": "a:b", "c": "01", "m": [1]}])
def test_well_encoded_nonsense_is_schedule_format_error(doc: object) -> None:
    with pytest.raises(mmemu.ScheduleFormatError):
        Schedule.from_token(_payload(doc))


def test_non_string_token() -> None:
    with pytest.raises(mmemu.ScheduleFormatError, match="a token is a string"):
        Schedule.from_token(b"mm1.abc")  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmemu.cli", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("token", ["garbage", "mm9.eNqrVkpW", "mm1.eNqrVk"])
def test_cli_replay_of_a_bad_token_is_one_line(token: str) -> None:
    proc = _cli("replay", token)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mmemu: error: ")
    assert "Traceback" not in proc.stderr


def test_cli_replay_of_a_failure() -> None:
    f = mmemu.explore("demo:lost-update", strategy=mmemu.DFS(), executions=100).failure
    assert f is not None
    proc = _cli("replay", f.schedule)
    assert proc.returncode == 1
    assert proc.stdout.rstrip("\n") == f.report()
