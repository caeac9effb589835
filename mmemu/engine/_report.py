"""Traces of finished executions and their timeline reports.

A failure is shown as a timeline: one column per CPU, one row per step,
labelled with the step labels (the same words as the protocol comments).
Rows where the scheduler preempted a runnable CPU are marked ``*``; a step
that conflicts with an earlier step of another CPU names that step and the
objects both touched.  Then comes the broken invariant with its object dump,
and the command that replays it.

Objects are named deterministically: by their ``__mmemu_name__`` attribute,
as strings, as tuples of names, or by type and order of first appearance
(never by ``id()``, so a replay in another process prints the same report).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import attrs


@attrs.frozen
class TraceEvent:
    index: int
    cpu: int
    label: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    preempted: bool
    #: (earlier event index, object name) pairs this step conflicts with
    conflicts: tuple[tuple[int, str], ...] = ()


@attrs.frozen
class Span:
    cpu: int
    name: str
    begin: int
    end: int


@attrs.frozen
class Trace:
    cpus: tuple[tuple[int, str], ...]
    events: tuple[TraceEvent, ...]
    spans: tuple[Span, ...] = ()
    #: model annotations (flows, counters, blame), plain mappings
    annotations: tuple[Any, ...] = ()

    def cpu_name(self, cpu: int) -> str:
        for i, name in self.cpus:
            if i == cpu:
                return name
        return f"cpu{cpu}"


class Namer:
    """Deterministic names for access objects."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._keep: list[Any] = []
        self._counts: dict[str, int] = {}

    def __call__(self, obj: Hashable) -> str:
        if isinstance(obj, str):
            return obj
        if isinstance(obj, tuple):
            return ".".join(self(o) for o in obj)
        if isinstance(obj, (int, float, bool)) or obj is None:
            return repr(obj)
        name = getattr(obj, "__mmemu_name__", None)
        if isinstance(name, str):
            return name
        key = id(obj)
        got = self._names.get(key)
        if got is None:
            tname = type(obj).__name__
            n = self._counts.get(tname, 0) + 1
            self._counts[tname] = n
            got = self._names[key] = f"{tname}#{n}"
            self._keep.append(obj)  # keep it alive so the id stays unique
        return got


def build_trace(sim: Any) -> Trace:
    """Turn a recorded Simulation into a Trace with conflict annotations."""
    namer = Namer()
    last_write: dict[Hashable, int] = {}
    last_reads: dict[Hashable, dict[int, int]] = {}
    events = []
    owner = [ev[0] for ev in sim.events]
    for j, (cpu, label, reads, writes, pre) in enumerate(sim.events):
        conflicts: list[tuple[int, str]] = []
        for o in tuple(reads) + tuple(writes):
            w = last_write.get(o)
            if w is not None and owner[w] != cpu:
                conflicts.append((w, namer(o)))
        for o in writes:
            for rc, ri in last_reads.get(o, {}).items():
                if rc != cpu:
                    conflicts.append((ri, namer(o)))
        seen: set[tuple[int, str]] = set()
        uniq = []
        for c in sorted(conflicts):
            if c not in seen:
                seen.add(c)
                uniq.append(c)
        events.append(TraceEvent(j, cpu, label, tuple(namer(o) for o in reads),
                                 tuple(namer(o) for o in writes), pre, tuple(uniq)))
        for o in writes:
            last_write[o] = j
            last_reads.pop(o, None)
        for o in reads:
            if o not in writes:
                last_reads.setdefault(o, {})[cpu] = j
    spans = []
    open_spans: dict[int, list[tuple[str, int]]] = {}
    for kind, cpu, step_i, name in sim.spans:
        if kind == "B":
            open_spans.setdefault(cpu, []).append((name, step_i))
        else:
            stack = open_spans.get(cpu)
            if stack:
                n, b = stack.pop()
                spans.append(Span(cpu, n, b, step_i))
    for cpu, stack in open_spans.items():
        for n, b in stack:
            spans.append(Span(cpu, n, b, len(events)))
    return Trace(cpus=tuple((c.id, c.name) for c in sim.cpu_list), events=tuple(events),
                 spans=tuple(spans), annotations=tuple(getattr(sim, "annotations", ())))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_timeline(trace: Trace, *, width: int = 30, failure_step: int | None = None) -> str:
    """One column per CPU, one row per step."""
    cpus = [cid for cid, _ in trace.cpus]
    if not cpus:
        return "  (no CPU ran)"
    col = {cid: k for k, cid in enumerate(cpus)}
    heads = [_fit(f"cpu{cid} ({name})", width) for cid, name in trace.cpus]
    # '#' + the widest index + the preemption mark
    num_w = max(3, len(str(max(len(trace.events) - 1, 0))) + 2)
    lines = [("  " + " " * num_w + " | " + " | ".join(h.ljust(width) for h in heads)).rstrip(),
             "  " + "-" * num_w + "-+-" + "-+-".join("-" * width for _ in heads)]
    for ev in trace.events:
        cells = [""] * len(cpus)
        mark = "*" if ev.preempted else " "
        cells[col[ev.cpu]] = _fit(ev.label, width)
        row = f"  {('#' + str(ev.index)).rjust(num_w - 1)}{mark} | " + " | ".join(
            c.ljust(width) for c in cells)
        notes = []
        if ev.conflicts:
            notes.append("after " + ", ".join(f"#{i} on {o}" for i, o in ev.conflicts[:3]))
        if failure_step is not None and failure_step > 0 and ev.index == failure_step - 1:
            notes.append("<- fails here")
        if notes:
            row = row + "  ~ " + "; ".join(notes)
        lines.append(row.rstrip())
    return "\n".join(lines)
