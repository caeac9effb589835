"""Draw an execution's timeline as a self-contained SVG: the protocol pages'
interleaving diagrams.

One lane per CPU, time running down, one box per step in its CPU's lane,
with the step label as the protocol comment words it.  A diagram is meant to
be read next to the prose, so it condenses: the steps the interleaving names
(``highlight``), the first step after every context switch and the failing
step are drawn; a run of other steps of one CPU becomes one grey row ("8
steps: spin_lock(zone.lru_lock) ... trylock_page(page0)").  ``mmemu explain
SUITE --interleaving N`` prints every step.

Marks: a preemption (the scheduler switched away from a CPU that could have
gone on) is an orange bar on the box's left edge and an arrow in the
margin; named steps are bold on a blue-grey box; the failing step is red.

No scripts, no fonts, no external references: the SVG is inlined in the HTML
page (or opened on its own) and renders offline.  Text widths are estimated
(monospace, ``CHAR_W`` per character), so the output is deterministic.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Iterable
from typing import Any

import attrs

#: estimated width of one character of the 12px monospace text
CHAR_W = 7.3
ROW_H = 22
LINE_H = 14
LABEL_CHARS = 48
LANE_PAD = 10
INDEX_W = 58
HEAD_H = 28

_COLOURS = {
    "head": "#263238", "head_text": "#ffffff", "step": "#eceff1", "step_edge": "#90a4ae",
    "named": "#cfd8dc", "named_edge": "#455a64", "failing": "#ffcdd2", "failing_edge": "#c62828",
    "preempt": "#ef6c00", "gap": "#9e9e9e", "text": "#1d1d1f", "index": "#757575",
    "lane": "#f7f9fa",
}


@attrs.frozen
class _Row:
    cpu: int
    text: str
    index: str
    kind: str  # "step", "named", "failing", "gap"
    preempted: bool = False


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _rows(trace: Any, highlight: set[tuple[int, str]], failing: int | None) -> list[_Row]:
    """The rows drawn, with runs of unremarkable steps condensed."""
    rows: list[_Row] = []
    run: list[Any] = []

    def flush() -> None:
        if not run:
            return
        if len(run) <= 2:
            for ev in run:
                rows.append(_Row(ev.cpu, ev.label, f"#{ev.index}", "step", ev.preempted))
        else:
            first, last = run[0], run[-1]
            rows.append(_Row(first.cpu, f"{len(run)} steps: {first.label} ... {last.label}",
                             f"#{first.index}-{last.index}", "gap"))
        run.clear()

    prev_cpu: int | None = None
    for ev in trace.events:
        switched = ev.cpu != prev_cpu
        prev_cpu = ev.cpu
        named = (ev.cpu, ev.label) in highlight
        is_failing = failing is not None and ev.index == failing
        if switched or named or is_failing:
            flush()
            kind = "failing" if is_failing else ("named" if named else "step")
            rows.append(_Row(ev.cpu, ev.label, f"#{ev.index}", kind, ev.preempted))
        else:
            if run and run[-1].cpu != ev.cpu:
                flush()
            run.append(ev)
    flush()
    return rows


def render_svg(trace: Any, *, highlight: Iterable[tuple[int, str]] = (),
               failure_step: int | None = None, title: str = "") -> str:
    """The SVG of ``trace`` (an ``mmemu.engine.Trace``).  ``highlight``:
    (cpu id, label) pairs to draw as named steps; ``failure_step``: the
    failure's step count (the failing step is the one before it)."""
    failing = failure_step - 1 if failure_step is not None and failure_step > 0 else None
    cpus = [cid for cid, _ in trace.cpus]
    names = dict(trace.cpus)
    rows = _rows(trace, set(highlight), failing)
    lines_of = [textwrap.wrap(r.text, LABEL_CHARS, break_on_hyphens=False) or [""] for r in rows]
    col = {cid: k for k, cid in enumerate(cpus)}
    chars = {cid: len(f"cpu{cid} ({names[cid]})") for cid in cpus}
    for r, lines in zip(rows, lines_of):
        chars[r.cpu] = max(chars[r.cpu], max(len(ln) for ln in lines))
    lane_w = {cid: int(chars[cid] * CHAR_W) + 2 * LANE_PAD for cid in cpus}
    x0 = {}
    x = INDEX_W
    for cid in cpus:
        x0[cid] = x
        x += lane_w[cid] + 8
    width = x
    top = HEAD_H + (22 if title else 6)
    heights = [max(ROW_H, 8 + LINE_H * len(lines)) for lines in lines_of]
    height = top + sum(heights) + 8 * len(rows) // 4 + 12
    out: list[str] = []
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="mmemu-timeline" '
               f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
               f'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" '
               f'font-size="12" style="max-width: 100%; height: auto" role="img" '
               f'aria-label="{_e(title or "interleaving")}">')
    if title:
        out.append(f'<text x="4" y="16" font-weight="bold" fill="{_COLOURS["text"]}">'
                   f'{_e(title)}</text>')
    head_y = top - HEAD_H
    for cid in cpus:
        out.append(f'<rect class="lane" x="{x0[cid]}" y="{head_y}" width="{lane_w[cid]}" '
                   f'height="{height - head_y - 4}" fill="{_COLOURS["lane"]}" rx="4"/>')
        out.append(f'<rect class="lane-head" x="{x0[cid]}" y="{head_y}" width="{lane_w[cid]}" '
                   f'height="{HEAD_H - 6}" fill="{_COLOURS["head"]}" rx="4"/>')
        out.append(f'<text x="{x0[cid] + LANE_PAD}" y="{head_y + 15}" font-weight="bold" '
                   f'fill="{_COLOURS["head_text"]}">cpu{cid} ({_e(names[cid])})</text>')
    y = top
    for r, lines, h in zip(rows, lines_of, heights):
        bx, bw = x0[r.cpu] + 4, lane_w[r.cpu] - 8
        fill, edge, weight = {
            "step": (_COLOURS["step"], _COLOURS["step_edge"], "normal"),
            "named": (_COLOURS["named"], _COLOURS["named_edge"], "bold"),
            "failing": (_COLOURS["failing"], _COLOURS["failing_edge"], "bold"),
            "gap": ("none", _COLOURS["gap"], "normal"),
        }[r.kind]
        dash = ' stroke-dasharray="3 3"' if r.kind == "gap" else ""
        out.append(f'<g class="step {r.kind}" data-cpu="{r.cpu}">')
        out.append(f'<rect x="{bx}" y="{y}" width="{bw}" height="{h - 4}" rx="3" fill="{fill}" '
                   f'stroke="{edge}"{dash}/>')
        if r.preempted:
            out.append(f'<rect class="preempted" x="{bx}" y="{y}" width="4" height="{h - 4}" '
                       f'fill="{_COLOURS["preempt"]}"/>')
            out.append(f'<path d="M {INDEX_W - 10} {y + 4} l 8 5 l -8 5 z" '
                       f'fill="{_COLOURS["preempt"]}"/>')
        colour = _COLOURS["gap"] if r.kind == "gap" else _COLOURS["text"]
        for k, line in enumerate(lines):
            out.append(f'<text x="{bx + 8}" y="{y + 13 + k * LINE_H}" font-weight="{weight}" '
                       f'fill="{colour}">{_e(line)}</text>')
        out.append(f'<text x="2" y="{y + 13}" font-size="10" fill="{_COLOURS["index"]}">'
                   f'{_e(r.index)}</text>')
        out.append("</g>")
        y += h + (2 if r.kind != "gap" else 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"
