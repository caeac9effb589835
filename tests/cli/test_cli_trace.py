"""mmemu trace: Chrome Trace Event JSON that ui.perfetto.dev opens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from mmemu._perfetto import annotations_of, chrome_trace, chrome_trace_json, validate_chrome_trace
from mmemu.engine import Span, TraceEvent

from ._helpers import cli, failure_of


def _export(capsys: pytest.CaptureFixture[str], tmp_path: Path, token: str) -> dict[str, Any]:
    path = tmp_path / "trace.json"
    ran = cli(capsys, "trace", token, "-o", path)
    assert ran.code == 0, ran.err
    assert ran.out == "" and "wrote" in ran.err
    doc = json.loads(path.read_text())
    assert validate_chrome_trace(doc) == []
    return doc


def _by_phase(doc: dict[str, Any], ph: str) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def test_demo_failure_exports_a_valid_trace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    failure = failure_of("demo:lost-update")
    doc = _export(capsys, tmp_path, failure.schedule)
    names = {e["tid"]: e["args"]["name"] for e in _by_phase(doc, "M") if e["name"] == "thread_name"}
    assert names == {1: "cpu0 (inc)", 2: "cpu1 (inc)"}
    steps = [e for e in _by_phase(doc, "i") if e.get("s") == "t"]
    assert [e["ts"] for e in steps] == list(range(failure.steps))  # ts is the step index
    store = steps[4]["args"]
    assert store == {"step": 4, "label": "2. counter = tmp + 1", "reads": [], "writes": ["counter"],
                     "conflicts": ["#1 on counter"], "preempted": False}
    assert steps[2]["args"]["preempted"] is True
    (fail,) = [e for e in _by_phase(doc, "i") if e.get("s") == "g"]
    assert fail["args"]["kind"] == "InvariantViolation"
    assert "an increment was lost" in fail["name"]
    assert fail["ts"] == failure.steps  # the scenario's check, after the last step
    assert doc["otherData"]["token"] == failure.schedule


def test_deadlock_exports_nested_slices(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        cli_registry: None) -> None:
    failure = failure_of("clitest:deadlock")
    assert failure.kind == "Deadlock"
    doc = _export(capsys, tmp_path, failure.schedule)
    for tid in (1, 2):
        track = [(e["ph"], e["name"]) for e in doc["traceEvents"]
                 if e.get("tid") == tid and e["ph"] in "BE"]
        # lock_both encloses every mutex_lock, and spans left open by the
        # deadlock are closed at the end of the trace
        assert track[0] == ("B", "lock_both") and track[-1] == ("E", "lock_both")
        assert track.count(("B", "mutex_lock")) == 2
    # every step instant of cpu0 lies inside lock_both except its <start>
    b = next(e["ts"] for e in doc["traceEvents"] if e["ph"] == "B" and e["tid"] == 1)
    inside = [e for e in _by_phase(doc, "i") if e.get("tid") == 1 and e["ts"] >= b]
    assert [e["name"] for e in inside] == ["lock A", "lock B"]
    (fail,) = [e for e in _by_phase(doc, "i") if e.get("s") == "g"]
    assert fail["args"]["kind"] == "Deadlock" and fail["ts"] == failure.failure_step - 1
    assert "waits for B; holds A" in fail["args"]["details"] + fail["args"]["message"]


@attrs.frozen
class AnnotatedTrace:
    """A trace as the engine will hand it over once the kernel model records
    annotations (page free -> reuse, lock release -> acquire, page counts)."""

    cpus: tuple[tuple[int, str], ...]
    events: tuple[TraceEvent, ...]
    spans: tuple[Span, ...]
    annotations: tuple[Any, ...] = ()


def _annotated() -> AnnotatedTrace:
    labels = ["<start>", "put_page", "<start>", "alloc_page", "unlock", "lock"]
    cpus = [0, 0, 1, 1, 0, 1]
    events = tuple(TraceEvent(k, c, lab, (), ("page",) if "page" in lab else (), False)
                   for k, (c, lab) in enumerate(zip(cpus, labels)))
    spans = (Span(0, "__free_pages", 1, 2), Span(1, "__alloc_pages", 3, 4))
    anns = (
        {"kind": "flow", "name": "page free -> reuse", "src": 1, "dst": 3, "object": "pfn 7"},
        {"kind": "flow", "name": "lock release -> acquire", "src": 4, "step": 5},
        {"kind": "counter", "name": "pages", "step": 1, "values": {"free": 1, "used": 3}},
        {"kind": "counter", "name": "pages", "step": 3, "values": {"free": 0, "used": 4}},
        {"kind": "flow", "name": "dangling", "src": 3, "dst": 99},  # outside the trace
        {"kind": "blame", "objects": ["pfn 7"]},
    )
    return AnnotatedTrace(((0, "reclaim"), (1, "fault")), events, spans, anns)


def test_annotations_become_flows_and_counters() -> None:
    trace = _annotated()
    anns = annotations_of(trace)
    assert len(anns.flows) == 2 and len(anns.counters) == 2 and anns.skipped == 1
    doc = chrome_trace(trace, title="annotated")
    assert validate_chrome_trace(doc) == []
    flows = [e for e in doc["traceEvents"] if e["ph"] in "sf"]
    assert [(e["ph"], e["name"], e["ts"], e["tid"]) for e in flows] == [
        ("s", "page free -> reuse", 1, 1), ("f", "page free -> reuse", 3, 2),
        ("s", "lock release -> acquire", 4, 1), ("f", "lock release -> acquire", 5, 2)]
    assert all(e.get("bp") == "e" for e in flows if e["ph"] == "f")
    # the unlock/lock steps are in no span: each gets a one-step anchor slice
    anchors = [e for e in doc["traceEvents"] if e.get("cat") == "flow-anchor"]
    assert sorted((e["ph"], e["name"]) for e in anchors) == [
        ("B", "lock"), ("B", "unlock"), ("E", "lock"), ("E", "unlock")]
    counters = [(e["ts"], e["args"]) for e in doc["traceEvents"] if e["ph"] == "C"]
    assert counters == [(1, {"free": 1, "used": 3}), (3, {"free": 0, "used": 4})]
    assert doc["otherData"]["skipped_annotations"] == 1


def test_a_trace_without_annotations_has_no_flows() -> None:
    trace = _annotated()
    plain = attrs.evolve(trace, annotations=())
    doc = chrome_trace(plain)
    assert validate_chrome_trace(doc) == []
    assert not [e for e in doc["traceEvents"] if e["ph"] in "sfC"]


@pytest.mark.parametrize("events, problem", [
    ([{"name": "f", "ph": "B", "ts": 0, "pid": 1, "tid": 1}], "never closed"),
    ([{"name": "f", "ph": "E", "ts": 0, "pid": 1, "tid": 1}], "no open B"),
    ([{"name": "f", "ph": "B", "ts": 0, "pid": 1, "tid": 1},
      {"name": "g", "ph": "E", "ts": 1, "pid": 1, "tid": 1}], "closes B 'f'"),
    ([{"name": "f", "ph": "B", "ts": 0, "pid": 1, "tid": 2},
      {"name": "f", "ph": "E", "ts": 1, "pid": 1, "tid": 1}], "no open B"),
    ([{"name": "x", "ph": "s", "id": 1, "ts": 0, "pid": 1, "tid": 1}], "expected 's' then 'f'"),
    ([{"name": "x", "ph": "f", "id": 1, "ts": 0, "pid": 1, "tid": 1},
      {"name": "x", "ph": "s", "id": 1, "ts": 0, "pid": 1, "tid": 1}], "expected 's' then 'f'"),
    ([{"name": "", "ph": "i", "ts": 0, "pid": 1, "tid": 1}], "'name' missing"),
    ([{"name": "a", "ph": "i", "ts": 5, "pid": 1, "tid": 1},
      {"name": "b", "ph": "i", "ts": 4, "pid": 1, "tid": 1}], "goes back in time"),
    ([{"name": "c", "ph": "C", "ts": 0, "pid": 1, "args": {"free": "many"}}], "numeric args"),
])
def test_validator_catches_broken_traces(events: list[dict[str, Any]], problem: str) -> None:
    meta = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": t, "args": {"name": f"t{t}"}}
            for t in (1, 2)]
    problems = validate_chrome_trace({"traceEvents": meta + events})
    assert any(problem in p for p in problems), problems


def test_validator_wants_named_tracks() -> None:
    doc = {"traceEvents": [{"name": "a", "ph": "i", "s": "t", "ts": 0, "pid": 1, "tid": 3}]}
    assert validate_chrome_trace(doc) == ["track pid=1 tid=3 has events but no thread_name"]
    assert validate_chrome_trace([]) != []


def test_export_is_deterministic_across_processes(tmp_path: Path, cli_registry: None) -> None:
    failure = failure_of("demo:lost-update")
    here = chrome_trace_json(failure.trace, failure=failure, title="demo:lost-update",
                             metadata={"token": failure.schedule})
    outs = []
    for seed in ("1", "2"):
        path = tmp_path / f"t{seed}.json"
        subprocess.run([sys.executable, "-m", "mmemu.cli", "trace", failure.schedule, "-o", str(path)],
                       check=True, capture_output=True, env=dict(os.environ, PYTHONHASHSEED=seed),
                       timeout=60)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
    # the CLI adds metadata; the events themselves match the in-process export
    assert json.loads(outs[0])["traceEvents"] == json.loads(here)["traceEvents"]
