"""Every pagecache mutant is caught by its suite, minimally, also through the CLI."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
import mmemu.cli
from mmemu.engine._registry import get_mutant, get_scenario, load_builtin

load_builtin()

# (mutant, suite, params, violation, preemptions of the shrunk report)
CAUGHT = [
    ("filemap:no-recheck", "pagecache:lookup-vs-reclaim", {"lookup": "find_get_page"},
     "WrongPageFromLookup", 1),
    ("filemap:no-recheck", "pagecache:lookup-vs-reclaim", {"lookup": "find_lock_page"},
     "WrongPageFromLookup", 1),
    ("filemap:no-recheck", "pagecache:lookup-vs-truncate", {"lookup": "find_get_page"},
     "WrongPageFromLookup", 1),
    ("filemap:no-recheck", "pagecache:lookup-vs-truncate", {"lookup": "find_lock_page"},
     "WrongPageFromLookup", 1),
    ("filemap:plain-get", "pagecache:lookup-vs-reclaim", {"lookup": "find_get_page"},
     "GetPageOnFreePage", 1),
    ("filemap:plain-get", "pagecache:lookup-vs-reclaim", {"lookup": "find_lock_page"},
     "GetPageOnFreePage", 1),
    ("vmscan:no-freeze", "pagecache:lookup-vs-reclaim", {"lookup": "find_get_page"},
     "FreePageInPageCache", 2),
    ("vmscan:no-freeze", "pagecache:lookup-vs-reclaim", {"lookup": "find_lock_page"},
     "FreePageInPageCache", 1),
    ("filemap:insert-before-lock", "pagecache:add-vs-lookup", {},
     "HalfInitialisedPage", 1),
]


@pytest.mark.parametrize("mutant,suite,params,kind,preemptions", CAUGHT,
                         ids=[f"{m}-{s.split(':')[1]}-{','.join(p.values())}"
                              for m, s, p, _k, _n in CAUGHT])
def test_mutant_caught_minimally(mutant: str, suite: str, params: dict[str, Any],
                                 kind: str, preemptions: int) -> None:
    res = mmemu.explore(suite, strategy=mmemu.DFS(max_preemptions=2), executions=100_000,
                        params=params, mutants=[mutant])
    f = res.failure
    assert f is not None, f"{suite} {params} did not catch {mutant}"
    assert f.kind == kind, f.report()
    assert f.preemptions == preemptions <= 2, f.report()
    report = f.report()
    assert kind in report and f"with mutant {mutant}" in report
    # the report dumps the page
    assert "page pfn=0" in report
    # and the token replays to the same failure
    again = mmemu.replay(None, f.schedule)
    assert again.failure is not None and again.failure.kind == kind


def test_every_mutant_is_listed_by_a_suite() -> None:
    for m in ("filemap:no-recheck", "filemap:plain-get", "vmscan:no-freeze",
              "filemap:insert-before-lock"):
        get_mutant(m)
        assert any(m in get_scenario(s).catches for s in
                   ("pagecache:lookup-vs-reclaim", "pagecache:lookup-vs-truncate",
                    "pagecache:add-vs-lookup"))
    assert get_scenario("pagecache:reinsert-aba").catches == ()


def test_no_recheck_also_breaks_the_aba_suite_through_a_page_not_yet_readded() -> None:
    """The ABA itself is harmless, but without step 3 the lookup can pin the
    page between its free and its re-insertion: a page of no file."""
    res = mmemu.explore("pagecache:reinsert-aba", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, mutants=["filemap:no-recheck"])
    f = res.failure
    assert f is not None and f.kind == "WrongPageFromLookup", f and f.report()
    assert "not file[0] but NULL" in f.message


@pytest.mark.parametrize("suite,mutant,kind", [
    ("pagecache:lookup-vs-reclaim", "filemap:no-recheck", "WrongPageFromLookup"),
    ("pagecache:lookup-vs-reclaim", "filemap:plain-get", "GetPageOnFreePage"),
    ("pagecache:lookup-vs-reclaim", "vmscan:no-freeze", "FreePageInPageCache"),
    ("pagecache:lookup-vs-truncate", "filemap:no-recheck", "WrongPageFromLookup"),
    ("pagecache:add-vs-lookup", "filemap:insert-before-lock", "HalfInitialisedPage"),
])
def test_cli_run_catches_the_mutant(capsys: pytest.CaptureFixture[str], suite: str,
                                    mutant: str, kind: str) -> None:
    code = mmemu.cli.main(["run", suite, "--mutant", mutant])
    out = capsys.readouterr().out
    assert code == 1, out
    assert kind in out


@pytest.mark.parametrize("suite", ["pagecache:lookup-vs-reclaim", "pagecache:lookup-vs-truncate",
                                   "pagecache:add-vs-lookup", "pagecache:reinsert-aba"])
def test_cli_run_passes_on_the_correct_model(capsys: pytest.CaptureFixture[str],
                                             suite: str) -> None:
    code = mmemu.cli.main(["run", suite])
    out = capsys.readouterr().out
    assert code == 0, out
