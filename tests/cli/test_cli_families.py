"""One failure of every suite family through the command line: ``mmemu run
SUITE --mutant M --json`` finds it, ``mmemu trace`` and ``mmemu report``
export its token, and the exports are what the viewers need.

For each family a mutant from the suite's own ``catches``:

- the JSON trace passes ``validate_chrome_trace``, has one track per CPU,
  and draws a ``page free -> reuse`` flow exactly when the failing page's
  history (in the failure's details) shows it freed and then allocated
  again -- from the free step to the reuse step;
- the HTML page is self-contained (no http(s):// reference at all), has one
  lane per CPU of the trace and names the violation's kind.

Exit statuses (mmemu/cli.py): run 1 (a failure found), trace and report 0
(they export whatever the token replays).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

import mmemu
from mmemu._html_report import validate_report_html
from mmemu._perfetto import validate_chrome_trace
from mmemu.engine import get_mutant, get_scenario

from ._helpers import cli


@attrs.frozen
class Case:
    id: str
    suite: str
    mutant: str
    extra: tuple[str, ...] = ()


CASES = [
    Case("pagecache", "pagecache:lookup-vs-reclaim", "filemap:no-recheck"),
    Case("mm", "mm:fault-vs-truncate", "memory:fault-unlocked"),
    Case("migrate", "migrate:fault-vs-migration", "migrate:plain-get"),
    Case("notifier-kvm", "notifier:munmap-vs-fault", "kvm:no-count", ("--driver", "kvm")),
    Case("notifier-gru", "notifier:truncate-vs-fault", "gru:no-range-active", ("--driver", "gru")),
    Case("locks", "locks:take-all-shared", "mmap:no-dedup"),
    Case("interval", "interval:insert-remove-vs-invalidate", "mmu_notifier:interval-remove-nowait"),
    Case("modern-hmm", "notifier:reclaim-vs-fault", "hmm:no-retry", ("--driver", "hmm")),
    Case("modern-sva", "notifier:munmap-vs-fault", "sva:no-flush", ("--driver", "sva")),
    Case("cow", "cow:fork-vs-guest-write", "memory:fork-no-notify", ("--driver", "kvm")),
    Case("mprotect", "mprotect:mprotect-vs-guest-write", "mprotect:no-notify",
         ("--driver", "gru")),
    Case("ksm", "ksm:merge-vs-guest-fault", "ksm:replace-no-notify", ("--driver", "kvm")),
    Case("aging", "aging:referenced-vs-guest-fault", "memory:young-no-notify",
         ("--driver", "kvm")),
    Case("swap", "swap:reclaim-anon-vs-guest-fault", "sva:no-flush", ("--driver", "sva")),
    Case("rmap", "rmap:vma-change-vs-aging", "rmap:referenced-no-i-mmap-lock"),
    Case("fork", "fork:vfork-vs-exit", "fork:vfork-no-complete"),
]

#: "free at #15 '...' on cpu1 (reclaim); alloc at #16 ..." in a page's history
_FREE_THEN_ALLOC = re.compile(r"free at #(\d+)\b[^;\n]*; alloc at #(\d+)\b")


def _run_json(capsys: pytest.CaptureFixture[str], case: Case) -> dict[str, Any]:
    """The first failing run's JSON row of ``mmemu run SUITE --mutant M --json``."""
    ran = cli(capsys, "run", case.suite, "--mutant", case.mutant, "--json", *case.extra)
    assert ran.code == 1, f"exit {ran.code}\n{ran.out}\n{ran.err}"
    rows = [json.loads(line) for line in ran.out.splitlines() if line.strip()]
    assert rows and all(r["suite"] == case.suite and r["mutant"] == case.mutant for r in rows)
    failed = [r for r in rows if r["failure"] is not None]
    assert failed, rows
    return failed[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_family_failure_exports(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                case: Case) -> None:
    assert case.mutant in get_scenario(case.suite).catches  # a mutant the suite must catch
    row = _run_json(capsys, case)
    kind = row["failure"]["kind"]
    # the kind the mutant's documentation says it is caught as
    assert kind in get_mutant(case.mutant).caught_as, (kind, get_mutant(case.mutant).caught_as)
    if "--driver" in case.extra:
        assert row["driver"] == case.extra[case.extra.index("--driver") + 1]
    token = row["failure"]["schedule"]

    # What the token replays: the CPUs the exports must draw, the details
    # that say whether the failing page was freed and reused.
    outcome = mmemu.replay(None, token)
    failure = outcome.failure
    assert failure is not None and failure.kind == kind
    cpus = [cid for cid, _ in failure.trace.cpus]
    assert len(cpus) >= 2

    json_path = tmp_path / "f.json"
    ran = cli(capsys, "trace", token, "-o", json_path)
    assert ran.code == 0, ran.err
    assert ran.out == "" and f"wrote {json_path}" in ran.err and kind in ran.err
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert validate_chrome_trace(doc) == []
    events = doc["traceEvents"]
    threads = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    assert len(threads) == len(cpus)
    assert any(e.get("cat") == "failure" and kind in e["name"] for e in events)
    reuse = {e["ph"]: e["ts"] for e in events
             if e["ph"] in ("s", "f") and e["name"] == "page free -> reuse"}
    reused = _FREE_THEN_ALLOC.search(failure.details)
    if reused is not None:
        # a freed page came back: the arrow runs from its free to its reuse
        assert reuse == {"s": int(reused.group(1)), "f": int(reused.group(2))}, \
            (reuse, failure.details)
    else:
        assert reuse == {}, failure.details

    html_path = tmp_path / "f.html"
    ran = cli(capsys, "report", token, "-o", html_path)
    assert ran.code == 0, ran.err
    assert ran.out == "" and f"wrote {html_path}" in ran.err
    page = html_path.read_text(encoding="utf-8")
    shape = validate_report_html(page)
    assert shape.problems == ()
    assert re.search(r"https?://", page) is None  # nothing fetched, nothing linked
    assert shape.lanes == len(cpus)
    assert shape.steps == failure.steps
    assert kind in shape.text


def test_the_families_cover_every_kind_of_suite() -> None:
    # every area with a suite that must pass has a case here ("demo" is a
    # teaching scenario)
    areas = {sc.name.split(":")[0] for sc in mmemu.engine.all_scenarios() if sc.expect == "pass"}
    areas.discard("demo")
    areas.discard("workload")  # workload:run runs a given workload: tests/workload
    assert areas <= {c.suite.split(":")[0] for c in CASES}
    drivers = {c.extra[1] for c in CASES if c.extra[:1] == ("--driver",)}
    assert {"kvm", "gru"} <= drivers and drivers & {"hmm", "sva"}


def test_a_freed_and_reused_page_draws_its_flow(capsys: pytest.CaptureFixture[str]) -> None:
    # guards the conditional above: at least one family does show the reuse
    row = _run_json(capsys, CASES[0])
    failure = mmemu.replay(None, row["failure"]["schedule"]).failure
    assert failure is not None and _FREE_THEN_ALLOC.search(failure.details) is not None
