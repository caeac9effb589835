"""Every interleaving a protocol page names is forced by one command,
``mmemu explain SUITE --interleaving N``, and comes out as the page says."""

from __future__ import annotations

import re

import pytest

from mmemu._interleavings import Interleaving, all_interleavings
from mmemu.cli import main

from ._doctools import DOCS

ALL = all_interleavings()


@pytest.mark.parametrize("il", ALL, ids=[f"{il.suite}-{il.number}" for il in ALL])
def test_each_interleaving_is_forced_by_its_command(il: Interleaving,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["explain", il.suite, "--interleaving", str(il.number)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"{il.suite}")
    assert f"interleaving {il.number}: {il.title}" in out.splitlines()[0]
    if il.expect is None:
        assert "No failure: the protocol holds in this interleaving." in out
    else:
        assert f"\n{il.expect}: " in out and "replay with:" in out
    # every named step ran, in the order given, on its CPU
    outcome = il.force()
    ran = [(outcome.trace.cpu_name(ev.cpu), ev.label) for ev in outcome.trace.events]
    pos = 0
    for step in il.order:
        pos = ran.index(step, pos) + 1


def test_the_protocol_pages_name_only_interleavings_that_exist() -> None:
    named: set[tuple[str, int]] = set()
    for page in sorted((DOCS / "protocols").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        named |= {(s, int(n)) for s, n in re.findall(r"```\{mmemu-interleaving\} (\S+) (\d+)", text)}
        named |= {(s, int(n)) for s, n in
                  re.findall(r"mmemu explain (\S+) --interleaving (\d+)", text)}
    known = {(il.suite, il.number) for il in ALL}
    assert named <= known, named - known
    assert named == known, f"catalogued but drawn on no page: {sorted(known - named)}"


def test_a_wrong_number_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["explain", "pagecache:lookup-vs-reclaim", "--interleaving", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmemu: error: pagecache:lookup-vs-reclaim names "
                                               "interleavings 1 to ")
