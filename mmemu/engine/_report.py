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

import textwrap
from collections.abc import Hashable, Sequence
from typing import Any

import attrs

from ._keys import IdKey, keyed


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
    for j, (cpu, label, reads_, writes_, pre) in enumerate(sim.events):
        # unhashable accessed objects are keyed by identity (see _keys)
        reads, writes = keyed(tuple(reads_)), keyed(tuple(writes_))
        conflicts: list[tuple[int, str]] = []
        for o in tuple(reads) + tuple(writes):
            w = last_write.get(o)
            if w is not None and owner[w] != cpu:
                conflicts.append((w, namer(o.obj if isinstance(o, IdKey) else o)))
        for o in writes:
            for rc, ri in last_reads.get(o, {}).items():
                if rc != cpu:
                    conflicts.append((ri, namer(o.obj if isinstance(o, IdKey) else o)))
        seen: set[tuple[int, str]] = set()
        uniq = []
        for c in sorted(conflicts):
            if c not in seen:
                seen.add(c)
                uniq.append(c)
        events.append(TraceEvent(j, cpu, label, tuple(namer(o) for o in reads_),
                                 tuple(namer(o) for o in writes_), pre, tuple(uniq)))
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


# ------------------------------------------------------------------ folding


@attrs.frozen
class Fold:
    """Steps ``first``..``last`` (event indices) repeat the ``period`` steps
    just before them ``times`` more times (a spin loop, a livelock)."""

    first: int
    last: int
    period: int
    times: int

    def describe(self) -> str:
        what = "step above" if self.period == 1 else f"{self.period} steps above"
        more = "time" if self.times == 1 else "times"
        return f"#{self.first}-#{self.last}: the {what} repeated {self.times} more {more}"


#: fold a repetition only when it hides at least this many rows
FOLD_MIN_HIDDEN = 8
#: the longest repeating block looked for (steps)
FOLD_MAX_PERIOD = 16


def fold_events(events: Sequence[TraceEvent], *, keep_last: int = 2,
                min_hidden: int = FOLD_MIN_HIDDEN,
                max_period: int = FOLD_MAX_PERIOD) -> list[TraceEvent | Fold]:
    """``events`` with runs of a repeating block of steps folded.

    A block is the same CPUs running the same labels (with the same
    preemption marks); it is shown once, then one ``Fold`` stands for its
    repetitions.  The last ``keep_last`` steps (where the execution failed)
    are never folded.  Deterministic: it looks at labels and CPU ids only.
    """
    keys = [(e.cpu, e.label, e.preempted) for e in events]
    n = len(events)
    limit = max(0, n - keep_last)
    out: list[TraceEvent | Fold] = []
    i = 0
    while i < n:
        best: tuple[int, int] | None = None  # (repeats, period)
        for p in range(1, max_period + 1):
            if i + 2 * p > limit:
                break
            block = keys[i:i + p]
            r = 1
            while i + (r + 1) * p <= limit and keys[i + r * p:i + (r + 1) * p] == block:
                r += 1
            hidden = (r - 1) * p
            if r >= 2 and hidden >= min_hidden and (best is None or hidden > (best[0] - 1) * best[1]):
                best = (r, p)
        if best is None:
            out.append(events[i])
            i += 1
            continue
        r, p = best
        out.extend(events[i:i + p])
        out.append(Fold(first=events[i + p].index, last=events[i + r * p - 1].index,
                        period=p, times=r - 1))
        i += r * p
    return out


# ----------------------------------------------------------------- timeline

#: the widest a CPU's column grows; longer labels wrap onto more lines
LABEL_WIDTH = 48


def _wrap_label(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width``, broken at spaces (a word
    longer than ``width`` is broken inside, never dropped)."""
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def render_timeline(trace: Trace, *, width: int | None = None,
                    failure_step: int | None = None, fold: bool = True) -> str:
    """One column per CPU, one row per step.

    Each column is as wide as its longest label, up to ``width`` (default
    ``LABEL_WIDTH``); a longer label wraps onto continuation lines, so no
    word of it is lost.  With ``fold``, a block of steps that repeats (a
    livelock's spin loop) is shown once and its repetitions are folded into
    one line.
    """
    cap = width if width is not None else LABEL_WIDTH
    cpus = [cid for cid, _ in trace.cpus]
    if not cpus:
        return "  (no CPU ran)"
    col = {cid: k for k, cid in enumerate(cpus)}
    heads = [f"cpu{cid} ({name})" for cid, name in trace.cpus]
    widths = [len(h) for h in heads]
    for event in trace.events:
        k = col[event.cpu]
        widths[k] = max(widths[k], len(event.label))
    widths = [min(w, cap) for w in widths]
    # '#' + the widest index + the preemption mark
    num_w = max(3, len(str(max(len(trace.events) - 1, 0))) + 2)

    def grid(prefix: str, cells: list[list[str]]) -> list[str]:
        height = max(len(c) for c in cells)
        rows = []
        for r in range(height):
            first = prefix if r == 0 else " " * len(prefix)
            rows.append(first + " | ".join((c[r] if r < len(c) else "").ljust(w)
                                           for c, w in zip(cells, widths)))
        return rows

    lines = [ln.rstrip() for ln in grid("  " + " " * num_w + " | ",
                                        [_wrap_label(h, w) for h, w in zip(heads, widths)])]
    lines.append("  " + "-" * num_w + "-+-" + "-+-".join("-" * w for w in widths))
    rows: list[TraceEvent | Fold] = (fold_events(trace.events) if fold
                                     else list(trace.events))
    for ev in rows:
        if isinstance(ev, Fold):
            lines.append(f"  {'...'.rjust(num_w)} | {ev.describe()}")
            continue
        cells: list[list[str]] = [[] for _ in cpus]
        k = col[ev.cpu]
        cells[k] = _wrap_label(ev.label, widths[k])
        mark = "*" if ev.preempted else " "
        row = grid(f"  {('#' + str(ev.index)).rjust(num_w - 1)}{mark} | ", cells)
        notes = []
        if ev.conflicts:
            notes.append("after " + ", ".join(f"#{i} on {o}" for i, o in ev.conflicts[:3]))
        if failure_step is not None and failure_step > 0 and ev.index == failure_step - 1:
            notes.append("<- fails here")
        if notes:
            row[0] = row[0] + "  ~ " + "; ".join(notes)
        lines.extend(r.rstrip() for r in row)
    return "\n".join(lines)
