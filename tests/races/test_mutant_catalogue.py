"""docs/mutants.md lists every registered mutant, with the suites that catch it."""

from __future__ import annotations

import re
from pathlib import Path

from mmemu.engine import all_mutants, all_scenarios

DOC = Path(__file__).resolve().parents[2] / "docs" / "mutants.md"
ROW = re.compile(r"^\| `([a-z_]+:[a-z0-9-]+)` \| (.+?) \| (.+?) \| (.+?) \| (.+?) \|$", re.M)


def _rows() -> dict[str, list[str]]:
    rows = {m.group(1): [m.group(i).strip() for i in range(2, 6)]
            for m in ROW.finditer(DOC.read_text(encoding="utf-8"))}
    assert rows, "no mutant rows found in docs/mutants.md"
    return rows


def test_every_registered_mutant_has_a_row_and_no_row_is_stale() -> None:
    rows = _rows()
    registered = {m.name for m in all_mutants()}
    assert set(rows) == registered, (
        f"missing rows: {sorted(registered - set(rows))}; "
        f"rows of no mutant: {sorted(set(rows) - registered)}")


def test_each_row_names_exactly_the_suites_that_catch_the_mutant() -> None:
    rows = _rows()
    for m in all_mutants():
        want = {s.name for s in all_scenarios() if m.name in s.catches}
        got = {s.strip() for s in rows[m.name][2].split(",")}
        assert got == want, f"{m.name}: the row says {sorted(got)}, the suites say {sorted(want)}"
        assert rows[m.name][0] and rows[m.name][1] and rows[m.name][3]
