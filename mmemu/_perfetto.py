"""Export an execution's trace as Chrome Trace Event JSON (ui.perfetto.dev opens it).

Layout of the file
------------------
One process (pid 1) named after the scenario, one thread track per emulated
CPU (``tid = cpu id + 1``; tid 0 is avoided because some viewers treat it as
the idle task), named ``cpu0 (truncate)`` by ``thread_name`` metadata:

- kernel functions recorded with ``mmemu.span(...)`` are B/E slices;
- every step is a thread-scoped instant (``ph: "i"``) named by its label, with
  ``args`` holding the step index, its reads, writes, conflicts and whether
  the scheduler preempted another CPU to run it;
- trace annotations (below) become flow arrows (``s`` -> ``f``, bound to the
  enclosing slice) and counter tracks (``ph: "C"``);
- the failure, if any, is a global instant at the failing step.

``ts`` is the step index (Chrome reads it as microseconds; nothing here is
wall-clock time), so the same token always exports the same bytes.

Trace annotations
-----------------
The engine records steps and spans.  The kernel model knows more: that the
page freed at step 12 was reused at step 30, that the lock released at step 7
is the one acquired at step 9, how many pages are free after each step.  It
hands that over as *annotations*: a sequence read from the trace's optional
``annotations`` attribute (absent today: read with a default of ``()``, so a
trace without it exports exactly as before).  Each annotation is a plain
mapping (or any object with the same attributes), so the model does not need
to import this front-door module:

``{"kind": "flow", "name": "page free -> reuse", "src": 12, "dst": 30, "object": "pfn 3"}``
    an arrow from step ``src`` to step ``dst`` (``dst`` defaults to ``step``,
    the step that recorded it).  ``name`` groups arrows (one per protocol
    edge: ``"page free -> reuse"``, ``"lock release -> acquire"``).
``{"kind": "counter", "name": "pages", "step": 12, "values": {"free": 3, "mapped": 1}}``
    a sample of one counter track (one series per key) after step ``step``.
``{"kind": "blame", "objects": ["pfn 3"], "step": 30}``
    the objects the broken invariant is about (the HTML report highlights
    the steps that touched them).

Annotations naming a step outside the trace are skipped (and counted in
``otherData.skipped_annotations``) rather than producing a file the viewer
rejects.

``validate_chrome_trace`` checks the structure the viewers rely on; the
tests run it on every exported file.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

PID = 1


class TraceLike(Protocol):
    """What the exporters need of ``mmemu.engine.Trace`` (duck-typed, so a
    trace with extra fields, such as ``annotations``, works too)."""

    @property
    def cpus(self) -> tuple[tuple[int, str], ...]: ...

    @property
    def events(self) -> Sequence[Any]: ...

    @property
    def spans(self) -> Sequence[Any]: ...


# --------------------------------------------------------------- annotations


@attrs.frozen
class Flow:
    """An arrow from one step to a later one (page free -> reuse, ...)."""

    name: str
    src: int
    dst: int
    object: str = ""


@attrs.frozen
class CounterSample:
    """Values of one counter track after a step (``{"free": 3, "mapped": 1}``)."""

    name: str
    step: int
    values: tuple[tuple[str, float], ...]


@attrs.frozen
class Blame:
    """Objects the broken invariant is about."""

    objects: tuple[str, ...]
    step: int | None = None


@attrs.frozen
class Annotations:
    flows: tuple[Flow, ...] = ()
    counters: tuple[CounterSample, ...] = ()
    blames: tuple[Blame, ...] = ()
    skipped: int = 0


def _field(ann: Any, name: str, default: Any = None) -> Any:
    if isinstance(ann, Mapping):
        return ann.get(name, default)
    return getattr(ann, name, default)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def annotations_of(trace: Any) -> Annotations:
    """Read and check the trace's optional annotations (see the module doc)."""
    raw = getattr(trace, "annotations", None) or ()
    n_events = len(trace.events)
    flows: list[Flow] = []
    counters: list[CounterSample] = []
    blames: list[Blame] = []
    skipped = 0
    for ann in raw:
        kind = _field(ann, "kind")
        if kind == "flow":
            src = _field(ann, "src")
            dst = _field(ann, "dst", _field(ann, "step"))
            name = _field(ann, "name")
            if (_is_int(src) and _is_int(dst) and 0 <= src <= dst < n_events
                    and isinstance(name, str) and name):
                flows.append(Flow(name, src, dst, str(_field(ann, "object", "") or "")))
                continue
        elif kind == "counter":
            step = _field(ann, "step")
            name = _field(ann, "name")
            values = _field(ann, "values")
            if (_is_int(step) and 0 <= step <= n_events and isinstance(name, str) and name
                    and isinstance(values, Mapping) and values
                    and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                            for v in values.values())):
                counters.append(CounterSample(name, step, tuple(
                    (str(k), float(v)) for k, v in sorted(values.items(), key=lambda kv: str(kv[0])))))
                continue
        elif kind == "blame":
            objs = _field(ann, "objects", ())
            step = _field(ann, "step")
            if isinstance(objs, str):
                objs = (objs,)
            if isinstance(objs, Iterable) and (step is None or _is_int(step)):
                blames.append(Blame(tuple(str(o) for o in objs), step))
                continue
        skipped += 1
    return Annotations(tuple(flows), tuple(counters), tuple(blames), skipped)


# ------------------------------------------------------------------- export


def _tid(cpu: int) -> int:
    return cpu + 1


@attrs.frozen
class _Slice:
    name: str
    begin: int
    end: int
    order: int  # position in trace.spans: an outer span closes after its inner ones
    cat: str = "function"


def _step_args(ev: Any) -> dict[str, Any]:
    return {
        "step": ev.index,
        "label": ev.label,
        "reads": list(ev.reads),
        "writes": list(ev.writes),
        "conflicts": [f"#{i} on {o}" for i, o in ev.conflicts],
        "preempted": bool(ev.preempted),
    }


def _cpu_track(cpu: int, trace: TraceLike, slices: list[_Slice],
               flow_points: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The B/E/i/s/f events of one CPU, in an order that nests properly.

    A span covers the steps ``begin <= index < end`` (it was entered while the
    step before ``begin`` ran and left while step ``end - 1`` ran).  Sweeping
    by ``ts``: at each ts, close the slices that ended, open the ones that
    begin (outer first), then emit the step's instant and its flow endpoints,
    so every instant sits inside the slices that contain it.
    """
    tid = _tid(cpu)
    out: list[dict[str, Any]] = []
    # outer before inner: earlier begin, later end, closed later
    pending = sorted(slices, key=lambda s: (s.begin, -s.end, -s.order))
    steps = [ev for ev in trace.events if ev.cpu == cpu]
    stack: list[_Slice] = []

    def close_until(ts: int, *, strictly_before: bool = False) -> None:
        while stack and (stack[-1].end < ts if strictly_before else stack[-1].end <= ts):
            s = stack.pop()
            out.append({"name": s.name, "cat": s.cat, "ph": "E", "ts": s.end, "pid": PID, "tid": tid})

    def open_slice(s: _Slice) -> None:
        # a slice that does not fit in the top of the stack cannot be its child:
        # spans are recorded as a stack, so the top must have ended already
        while stack and not (stack[-1].begin <= s.begin and s.end <= stack[-1].end):
            t = stack.pop()
            out.append({"name": t.name, "cat": t.cat, "ph": "E", "ts": t.end, "pid": PID, "tid": tid})
        stack.append(s)
        out.append({"name": s.name, "cat": s.cat, "ph": "B", "ts": s.begin, "pid": PID, "tid": tid})

    si = 0
    for ev in steps:
        k = ev.index
        while si < len(pending) and pending[si].begin <= k:
            close_until(pending[si].begin, strictly_before=pending[si].begin == pending[si].end)
            open_slice(pending[si])
            si += 1
        close_until(k)
        out.append({"name": ev.label, "cat": "step.preempted" if ev.preempted else "step",
                    "ph": "i", "s": "t", "ts": k, "pid": PID, "tid": tid, "args": _step_args(ev)})
        out.extend(flow_points.get(k, ()))
    while si < len(pending):
        close_until(pending[si].begin, strictly_before=pending[si].begin == pending[si].end)
        open_slice(pending[si])
        si += 1
    close_until(max([s.end for s in stack], default=0))
    return out


def chrome_trace(trace: TraceLike, *, failure: Any = None, title: str = "",
                 metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the Chrome Trace Event document (a dict ready for ``json.dump``).

    ``failure`` is an ``mmemu.engine.Failure`` (or None); ``title`` names the
    process track (the scenario); ``metadata`` goes to ``otherData``.
    """
    anns = annotations_of(trace)
    events = list(trace.events)
    cpus = list(trace.cpus)
    known = {cid for cid, _ in cpus}
    known.update(ev.cpu for ev in events)
    names = dict(cpus)
    trace_events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
         "args": {"name": f"mmemu {title}".strip()}},
    ]
    for order, cid in enumerate(sorted(known)):
        trace_events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": _tid(cid),
                             "args": {"name": f"cpu{cid} ({names.get(cid, f'cpu{cid}')})"}})
        trace_events.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": _tid(cid),
                             "args": {"sort_index": order}})

    slices: dict[int, list[_Slice]] = {cid: [] for cid in known}
    for order, sp in enumerate(trace.spans):
        slices.setdefault(sp.cpu, []).append(_Slice(sp.name, sp.begin, max(sp.begin, sp.end), order))

    # Flow endpoints bind to the enclosing slice; a step outside every span
    # gets a one-step slice named after it so that the arrow has an anchor.
    def enclosed(cpu: int, k: int) -> bool:
        return any(s.begin <= k < s.end for s in slices.get(cpu, ()))

    flow_points: dict[int, list[dict[str, Any]]] = {}
    anchored: set[int] = set()
    for fid, fl in enumerate(anns.flows, start=1):
        for ph, k in (("s", fl.src), ("f", fl.dst)):
            cpu = events[k].cpu
            if not enclosed(cpu, k) and k not in anchored:
                anchored.add(k)
                slices[cpu].append(_Slice(events[k].label, k, k + 1, -1, cat="flow-anchor"))
            point: dict[str, Any] = {"name": fl.name, "cat": "flow", "ph": ph, "id": fid, "ts": k,
                                     "pid": PID, "tid": _tid(cpu)}
            if ph == "f":
                point["bp"] = "e"
            if fl.object:
                point["args"] = {"object": fl.object}
            flow_points.setdefault(k, []).append(point)

    body: list[dict[str, Any]] = []
    for cid in sorted(known):
        body.extend(_cpu_track(cid, trace, slices.get(cid, []), flow_points))
    for c in anns.counters:
        body.append({"name": c.name, "ph": "C", "ts": c.step, "pid": PID,
                     "args": {k: (int(v) if v.is_integer() else v) for k, v in c.values}})
    if failure is not None:
        fstep = getattr(failure, "failure_step", -1)
        ts = fstep - 1 if isinstance(fstep, int) and fstep > 0 else len(events)
        body.append({"name": f"{failure.kind}: {failure.message}", "cat": "failure", "ph": "i",
                     "s": "g", "ts": ts, "pid": PID, "tid": 0,
                     "args": {"kind": failure.kind, "message": failure.message,
                              "details": getattr(failure, "details", "") or "",
                              "replay": f"mmemu replay {failure.schedule}"}})
    # Stable sort: per-track order (nesting) is kept among equal timestamps.
    body.sort(key=lambda e: e["ts"])
    trace_events.extend(body)
    other: dict[str, Any] = {"generator": "mmemu", "ts_unit": "step index"}
    if metadata:
        other.update(metadata)
    if anns.skipped:
        other["skipped_annotations"] = anns.skipped
    return {"traceEvents": trace_events, "displayTimeUnit": "ns", "otherData": other}


def chrome_trace_json(trace: TraceLike, **kwargs: Any) -> str:
    """``chrome_trace`` serialised deterministically (same trace, same bytes)."""
    return json.dumps(chrome_trace(trace, **kwargs), separators=(",", ":"), ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- validator

_PHASES = {"B", "E", "X", "i", "I", "s", "t", "f", "C", "M"}


def validate_chrome_trace(doc: Any) -> list[str]:
    """Structural problems of a Chrome Trace Event document (empty if none).

    Checks: ``traceEvents`` is a list of objects with a name and a known
    phase; non-metadata events have numeric ``ts >= 0`` and integer pid/tid;
    on each (pid, tid) track timestamps never go back and every B is closed
    by an E (same name, if the E has one) in order, none left open; every
    flow id has exactly one ``s`` and then one ``f`` with the same name, not
    earlier in time; counter args are numbers; every thread track that has
    events is named by ``thread_name`` metadata.
    """
    problems: list[str] = []
    if not isinstance(doc, Mapping) or not isinstance(doc.get("traceEvents"), list):
        return ["the document is not an object with a 'traceEvents' list"]
    stacks: dict[tuple[int, int], list[tuple[str, float]]] = {}
    last_ts: dict[tuple[int, int], float] = {}
    flows: dict[Any, list[tuple[str, str, float]]] = {}
    named_threads: set[tuple[int, int]] = set()
    used_threads: set[tuple[int, int]] = set()
    for n, ev in enumerate(doc["traceEvents"]):
        where = f"event {n}"
        if not isinstance(ev, Mapping):
            problems.append(f"{where}: not an object")
            continue
        name, ph = ev.get("name"), ev.get("ph")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: 'name' missing or empty")
        if ph not in _PHASES:
            problems.append(f"{where}: unknown phase {ph!r}")
            continue
        pid, tid = ev.get("pid"), ev.get("tid", 0)
        if not isinstance(pid, int) or not isinstance(tid, int) or isinstance(pid, bool) \
                or isinstance(tid, bool):
            problems.append(f"{where}: 'pid'/'tid' must be integers (got {pid!r}, {tid!r})")
            continue
        track = (pid, tid)
        if ph == "M":
            if name == "thread_name":
                args = ev.get("args")
                if isinstance(args, Mapping) and isinstance(args.get("name"), str) and args["name"]:
                    named_threads.add(track)
                else:
                    problems.append(f"{where}: thread_name without args.name")
            continue
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts < 0:
            problems.append(f"{where}: 'ts' must be a number >= 0 (got {ts!r})")
            continue
        if ph in ("B", "E", "X", "i", "I", "s", "t", "f") and not (ph in ("i", "I") and ev.get("s") in ("g", "p")):
            used_threads.add(track)
            if ts < last_ts.get(track, 0):
                problems.append(f"{where}: ts {ts} goes back in time on track pid={pid} tid={tid}")
            last_ts[track] = ts
        if ph == "B":
            stacks.setdefault(track, []).append((str(name), float(ts)))
        elif ph == "E":
            stack = stacks.get(track)
            if not stack:
                problems.append(f"{where}: E {name!r} with no open B on pid={pid} tid={tid}")
            else:
                bname, bts = stack.pop()
                if isinstance(name, str) and name and name != bname:
                    problems.append(f"{where}: E {name!r} closes B {bname!r} on pid={pid} tid={tid}")
                if ts < bts:
                    problems.append(f"{where}: E {name!r} at ts {ts} before its B at {bts}")
        elif ph in ("s", "t", "f"):
            fid = ev.get("id")
            if fid is None:
                problems.append(f"{where}: flow event without 'id'")
                continue
            flows.setdefault((ev.get("cat"), fid), []).append((ph, str(name), ts))
        elif ph == "C":
            args = ev.get("args")
            if not isinstance(args, Mapping) or not args or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in args.values()):
                problems.append(f"{where}: counter {name!r} needs numeric args")
    for (pid, tid), stack in sorted(stacks.items()):
        for bname, _ in stack:
            problems.append(f"B {bname!r} on pid={pid} tid={tid} is never closed")
    for (cat, fid), pts in flows.items():
        phases = "".join(p for p, _, _ in pts)
        if phases.count("s") != 1 or phases.count("f") != 1 or not phases.startswith("s") \
                or not phases.endswith("f"):
            problems.append(f"flow id {fid!r} (cat {cat!r}) has phases {phases!r}; expected 's' then 'f'")
            continue
        if len({nm for _, nm, _ in pts}) != 1:
            problems.append(f"flow id {fid!r}: its events have different names")
        if pts[-1][2] < pts[0][2]:
            problems.append(f"flow id {fid!r}: 'f' at ts {pts[-1][2]} is before 's' at {pts[0][2]}")
    for pid, tid in sorted(used_threads - named_threads):
        problems.append(f"track pid={pid} tid={tid} has events but no thread_name")
    return problems


def check_chrome_trace(doc: Any) -> None:
    """Raise ValueError listing the problems ``validate_chrome_trace`` finds."""
    problems = validate_chrome_trace(doc)
    if problems:
        raise ValueError("invalid Chrome trace:\n  " + "\n  ".join(problems))
