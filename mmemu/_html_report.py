"""Render one execution as a self-contained HTML page of swimlanes.

The page is one file with its CSS and JavaScript inline and no external
reference (no fonts, scripts or images from the network), so it can be
mailed, attached to a bug or opened offline.  Time runs down the page, one
row per step, as in the text timeline; each emulated CPU is a lane (a
column) named after its role.  Inside a lane:

- kernel functions (``mmemu.span``) are vertical bars beside the steps,
  nested left to right;
- each step is a box with its label; a preempted step is marked, a step that
  conflicts with an earlier step of another CPU says which;
- the failing step (or, for a check in the scenario after the CPUs finished,
  a final row across every lane) is highlighted, and so is every step that
  touched the objects the broken invariant is about ("blame" annotations of
  the model, else object names that appear in the failure message);
- hovering a step shows its accesses (``title``); the failing step's title
  also carries the failure's object dump, which is printed in full above the
  lanes.  Hovering also lights up the steps that touched the same objects.

Trace annotations (see ``mmemu._perfetto``) add a table of flows (page free
-> reuse, lock release -> acquire) and of counter samples.

``validate_report_html`` checks the structure the tests rely on.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import attrs

from mmemu._perfetto import Annotations, TraceLike, annotations_of
from mmemu.engine._report import Fold, fold_events

_CSS = """
:root { --row: 26px; --bar: 14px; font-family: system-ui, sans-serif; font-size: 13px; }
body { margin: 16px; color: #1d1d1f; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 16px 0 6px; }
.verdict { margin: 0 0 10px; color: #444; }
.failure { border: 2px solid #c62828; background: #fff1f1; padding: 8px 12px; border-radius: 6px; }
.failure .kind { font-weight: 700; color: #b71c1c; }
.failure .message { white-space: pre-wrap; }
.failure pre, .protocol pre { margin: 6px 0; white-space: pre-wrap; font-size: 12px; }
.ok { border: 2px solid #2e7d32; background: #f1fff1; padding: 8px 12px; border-radius: 6px; }
code { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.lanes { display: grid; gap: 0 6px; align-items: stretch; margin-top: 8px; }
.lane-head { position: sticky; top: 0; background: #263238; color: #fff; padding: 4px 8px;
             font-weight: 600; border-radius: 4px 4px 0 0; z-index: 2; }
.stepno { color: #777; text-align: right; padding-right: 4px; line-height: var(--row);
          font-variant-numeric: tabular-nums; }
.step { background: #eceff1; border-left: 3px solid #90a4ae; padding: 0 6px; line-height: var(--row);
        white-space: nowrap; overflow: hidden; text-overflow: ellipsis; cursor: default;
        border-radius: 2px; margin: 1px 0; }
.step .note { color: #6a1b9a; font-size: 11px; margin-left: 6px; }
.step.preempted { border-left: 3px solid #ef6c00; }
.folded { color: #555; font-style: italic; line-height: var(--row); padding: 0 6px;
          background: repeating-linear-gradient(135deg, #fafafa 0 6px, #f0f0f0 6px 12px); }
.step.preempted::before { content: "\\26A1 "; color: #ef6c00; }
.step.blamed { outline: 2px dashed #c62828; outline-offset: -2px; }
.step.failing { background: #ffcdd2; border-left: 3px solid #c62828; font-weight: 700; }
.step.related { background: #fff59d; }
.step.flow-end { box-shadow: inset -4px 0 0 #1565c0; }
.span { background: #b3e5fc; border: 1px solid #4fc3f7; border-radius: 3px; writing-mode: vertical-rl;
        font-size: 10px; overflow: hidden; white-space: nowrap; text-align: center; margin: 1px 0; }
.final { background: #ffcdd2; border: 2px solid #c62828; padding: 2px 8px; font-weight: 700;
         line-height: var(--row); }
table.data { border-collapse: collapse; margin-top: 4px; }
table.data td, table.data th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
.legend span { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin-right: 4px; }
"""

# Hovering a step lights up the steps that touched the same objects, and the
# other end of its flows; no framework, no network.
_JS = """
(function () {
  var steps = Array.prototype.slice.call(document.querySelectorAll('.step'));
  function objs(el) { return (el.getAttribute('data-objects') || '').split(' ').filter(Boolean); }
  function flows(el) { return (el.getAttribute('data-flows') || '').split(' ').filter(Boolean); }
  steps.forEach(function (el) {
    el.addEventListener('mouseenter', function () {
      var mine = objs(el), fl = flows(el);
      steps.forEach(function (o) {
        if (o === el) return;
        var hit = objs(o).some(function (x) { return mine.indexOf(x) >= 0; }) ||
                  flows(o).some(function (x) { return fl.indexOf(x) >= 0; });
        if (hit) o.classList.add('related');
      });
    });
    el.addEventListener('mouseleave', function () {
      steps.forEach(function (o) { o.classList.remove('related'); });
    });
  });
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _token(name: str) -> str:
    """An object name as one whitespace-free token for data-objects."""
    return re.sub(r"\s+", "_", name)


@attrs.frozen
class _Bar:
    name: str
    begin: int
    end: int
    depth: int


def _bars(spans: Sequence[Any], cpu: int) -> list[_Bar]:
    """Spans of one CPU with their nesting depth (outer = 0); empty spans
    (entered and left within one step) have no row to draw and are dropped."""
    mine = sorted(((s.begin, -s.end, -k, s) for k, s in enumerate(spans) if s.cpu == cpu),
                  key=lambda t: t[:3])
    stack: list[Any] = []
    out: list[_Bar] = []
    for _, _, _, s in mine:
        while stack and not (stack[-1].begin <= s.begin and s.end <= stack[-1].end):
            stack.pop()
        if s.end > s.begin:
            out.append(_Bar(s.name, s.begin, s.end, len(stack)))
        stack.append(s)
    return out


def _blamed_objects(trace: TraceLike, anns: Annotations, failure: Any) -> list[str]:
    """Objects the failure is about: the model's blame annotations, else the
    accessed objects whose names appear in the failure message or dump."""
    named = [o for b in anns.blames for o in b.objects]
    if named:
        return list(dict.fromkeys(named))
    if failure is None:
        return []
    text = f"{failure.message}\n{getattr(failure, 'details', '') or ''}"
    seen: dict[str, None] = {}
    for ev in trace.events:
        for o in (*ev.reads, *ev.writes):
            if o and o not in seen and re.search(r"(?<![\w#])" + re.escape(o) + r"(?![\w#])", text):
                seen[o] = None
    return list(seen)


def _step_title(ev: Any, cpu_title: str, failing: bool, failure: Any) -> str:
    lines = [f"#{ev.index} {cpu_title}: {ev.label}",
             "reads: " + (", ".join(ev.reads) or "-"),
             "writes: " + (", ".join(ev.writes) or "-")]
    if ev.conflicts:
        lines.append("after: " + ", ".join(f"#{i} on {o}" for i, o in ev.conflicts))
    if ev.preempted:
        lines.append("the scheduler preempted another CPU to run this step")
    if failing and failure is not None:
        lines += ["", f"{failure.kind}: {failure.message}"]
        details = getattr(failure, "details", "") or ""
        if details:
            lines.append(details.rstrip())
    return "\n".join(lines)


def render_report(trace: TraceLike, *, failure: Any = None, title: str = "",
                  replay_command: str = "", protocol: str = "") -> str:
    """The HTML page for ``trace`` (and its ``failure``, an
    ``mmemu.engine.Failure`` or None).  ``protocol`` is the scenario's
    documentation, shown folded under the lanes."""
    anns = annotations_of(trace)
    cpus = list(trace.cpus)
    known = [cid for cid, _ in cpus]
    for ev in trace.events:
        if ev.cpu not in known:
            known.append(ev.cpu)
    names = dict(cpus)
    n = len(trace.events)
    fstep = getattr(failure, "failure_step", -1) if failure is not None else -1
    failing_index = fstep - 1 if isinstance(fstep, int) and fstep > 0 else None
    final_row = failure is not None and failing_index is None
    blamed = _blamed_objects(trace, anns, failure)
    blamed_set = set(blamed)
    flow_ids: dict[int, list[str]] = {}
    for k, fl in enumerate(anns.flows):
        flow_ids.setdefault(fl.src, []).append(f"f{k}")
        flow_ids.setdefault(fl.dst, []).append(f"f{k}")

    bars = {cid: _bars(trace.spans, cid) for cid in known}
    depth = {cid: max((b.depth + 1 for b in bars[cid]), default=0) for cid in known}
    # grid columns: step numbers, then per CPU its span bars and its steps
    cols = ["max-content"]
    col_of: dict[int, int] = {}
    for cid in known:
        cols += ["var(--bar)"] * depth[cid]
        cols.append("minmax(180px, 1fr)")
        col_of[cid] = len(cols)  # 1-based grid line of the step column
    parts: list[str] = []
    heading = f"mmemu: {title}" if title else "mmemu"
    parts.append(f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                 f"<title>{_e(heading)}{' — ' + _e(failure.kind) if failure is not None else ''}</title>\n"
                 f"<style>{_CSS}</style>\n</head>\n<body>\n")
    parts.append(f"<h1>{_e(heading)}</h1>\n")
    if failure is not None:
        plural = "" if failure.preemptions == 1 else "s"
        parts.append(f"<p class=\"verdict\">{_e(failure.kind)} after {failure.steps} steps, "
                     f"{failure.preemptions} preemption{plural}</p>\n")
        parts.append("<section id=\"failure\" class=\"failure\">\n"
                     f"<div><span class=\"kind\">{_e(failure.kind)}</span>: "
                     f"<span class=\"message\">{_e(failure.message)}</span></div>\n")
        details = getattr(failure, "details", "") or ""
        if details:
            parts.append(f"<pre class=\"details\">{_e(details.rstrip())}</pre>\n")
        if blamed:
            parts.append("<div class=\"blamed-objects\">about: "
                         + ", ".join(f"<code>{_e(o)}</code>" for o in blamed) + "</div>\n")
        where = (f"fails at step #{failing_index}" if failing_index is not None
                 else "fails in the scenario's check after the CPUs finished")
        parts.append(f"<div>{where}</div>\n")
        cmd = replay_command or f"mmemu replay {failure.schedule}"
        parts.append(f"<div>replay with: <code class=\"replay\">{_e(cmd)}</code></div>\n</section>\n")
    else:
        parts.append(f"<section id=\"outcome\" class=\"ok\">{n} steps, no failure"
                     + (f"; replay with: <code class=\"replay\">{_e(replay_command)}</code>"
                        if replay_command else "") + "</section>\n")
    parts.append("<p class=\"legend\"><span><span class=\"swatch\" style=\"background:#ef6c00\"></span>"
                 "&#x26A1; preempted</span><span><span class=\"swatch\" style=\"background:#ffcdd2\">"
                 "</span>failing step</span><span><span class=\"swatch\" style=\"outline:2px dashed #c62828\">"
                 "</span>touches the blamed objects</span><span><span class=\"swatch\" "
                 "style=\"background:#b3e5fc\"></span>kernel function</span>"
                 "<span>hover a step for its accesses</span></p>\n")

    # A block of steps that repeats (a livelock's spin loop) is drawn once,
    # then one row stands for its repetitions: ``row_of`` maps each step to
    # its grid row (the folded ones to their fold's row).
    shown = fold_events(trace.events)
    row_of = [0] * (n + 1)
    grid_row = 2
    for item in shown:
        if isinstance(item, Fold):
            for k in range(item.first, item.last + 1):
                row_of[k] = grid_row
        else:
            row_of[item.index] = grid_row
        grid_row += 1
    row_of[n] = grid_row  # one past the last step (span ends)
    nrows = len(shown)
    parts.append(f"<section id=\"timeline\">\n<div class=\"lanes\" data-cpus=\"{len(known)}\" "
                 f"data-steps=\"{n}\" style=\"grid-template-columns: {' '.join(cols)}; "
                 f"grid-template-rows: auto repeat({nrows + (1 if final_row else 0)}, var(--row));\">\n")
    parts.append("<div class=\"stepno\" style=\"grid-row:1;grid-column:1\">step</div>\n")
    for cid in known:
        first = col_of[cid] - depth[cid]
        parts.append(f"<div class=\"lane-head lane\" data-cpu=\"{cid}\" "
                     f"style=\"grid-row:1;grid-column:{first} / {col_of[cid] + 1}\">"
                     f"cpu{cid} ({_e(names.get(cid, f'cpu{cid}'))})</div>\n")
    for ev in shown:
        if isinstance(ev, Fold):
            row = row_of[ev.first]
            parts.append(f"<div class=\"stepno\" style=\"grid-row:{row};grid-column:1\">...</div>\n")
            parts.append(f"<div class=\"folded\" data-first=\"{ev.first}\" data-last=\"{ev.last}\" "
                         f"style=\"grid-row:{row};grid-column:2 / {len(cols) + 1}\">"
                         f"{_e(ev.describe())}</div>\n")
            continue
        row = row_of[ev.index]
        parts.append(f"<div class=\"stepno\" style=\"grid-row:{row};grid-column:1\">#{ev.index}</div>\n")
        cls = ["step"]
        if ev.preempted:
            cls.append("preempted")
        failing = failing_index == ev.index
        if failing:
            cls.append("failing")
        objs = list(dict.fromkeys((*ev.reads, *ev.writes)))
        if blamed_set.intersection(objs):
            cls.append("blamed")
        ends = flow_ids.get(ev.index, [])
        if ends:
            cls.append("flow-end")
        note = ""
        if ev.conflicts:
            note = "after " + ", ".join(f"#{i} on {o}" for i, o in ev.conflicts[:3])
        if failing:
            note = (note + "; " if note else "") + "fails here"
        cpu_title = f"cpu{ev.cpu} ({names.get(ev.cpu, f'cpu{ev.cpu}')})"
        parts.append(
            f"<div class=\"{' '.join(cls)}\" data-step=\"{ev.index}\" data-cpu=\"{ev.cpu}\" "
            f"data-objects=\"{_e(' '.join(_token(o) for o in objs))}\""
            + (f" data-flows=\"{' '.join(ends)}\"" if ends else "")
            + f" style=\"grid-row:{row};grid-column:{col_of[ev.cpu]}\" "
            f"title=\"{_e(_step_title(ev, cpu_title, failing, failure))}\">"
            f"{_e(ev.label)}" + (f"<span class=\"note\">{_e(note)}</span>" if note else "") + "</div>\n")
    for cid in known:
        for b in bars[cid]:
            col = col_of[cid] - depth[cid] + b.depth
            last = row_of[min(b.end, n)]
            first = row_of[min(b.begin, n)]
            if last <= first:
                continue
            parts.append(f"<div class=\"span\" data-cpu=\"{cid}\" style=\"grid-row:{first} / {last};"
                         f"grid-column:{col}\" title=\"{_e(b.name)}: steps #{b.begin}..#{min(b.end, n) - 1}\">"
                         f"{_e(b.name)}</div>\n")
    if final_row:
        row = nrows + 2
        last_col = len(cols) + 1
        dump = getattr(failure, "details", "") or ""
        tip = f"{failure.kind}: {failure.message}" + (f"\n{dump.rstrip()}" if dump else "")
        parts.append(f"<div class=\"stepno\" style=\"grid-row:{row};grid-column:1\">end</div>\n")
        parts.append(f"<div class=\"final failing\" style=\"grid-row:{row};grid-column:2 / {last_col}\" "
                     f"title=\"{_e(tip)}\">scenario check after the CPUs: {_e(failure.kind)}: "
                     f"{_e(failure.message)}</div>\n")
    parts.append("</div>\n</section>\n")

    if anns.flows:
        parts.append("<section id=\"flows\"><h2>Flows</h2>\n<table class=\"data\">"
                     "<tr><th>edge</th><th>object</th><th>from</th><th>to</th></tr>\n")
        for fl in anns.flows:
            parts.append(f"<tr><td>{_e(fl.name)}</td><td>{_e(fl.object or '-')}</td>"
                         f"<td>#{fl.src} {_e(trace.events[fl.src].label)}</td>"
                         f"<td>#{fl.dst} {_e(trace.events[fl.dst].label)}</td></tr>\n")
        parts.append("</table></section>\n")
    if anns.counters:
        parts.append("<section id=\"counters\"><h2>Counters</h2>\n<table class=\"data\">"
                     "<tr><th>after step</th><th>counter</th><th>values</th></tr>\n")
        for c in anns.counters:
            vals = ", ".join(f"{k}={int(v) if v.is_integer() else v}" for k, v in c.values)
            parts.append(f"<tr><td>#{c.step}</td><td>{_e(c.name)}</td><td>{_e(vals)}</td></tr>\n")
        parts.append("</table></section>\n")
    if protocol:
        parts.append(f"<section class=\"protocol\"><details><summary>The protocol</summary>"
                     f"<pre>{_e(protocol)}</pre></details></section>\n")
    parts.append(f"<script>{_JS}</script>\n</body>\n</html>\n")
    return "".join(parts)


# ---------------------------------------------------------------- validator


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.problems: list[str] = []
        self._skip = 0  # inside <style> or <script>: not visible text

    _VOID = {"meta", "br", "img", "link", "input", "hr", "col", "source", "area", "base", "wbr"}

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs_}))
        if tag not in self._VOID:
            self.open.append(tag)
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script") and self._skip:
            self._skip -= 1
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> does not close <{self.open[-1] if self.open else '(nothing)'}>")
            if tag in self.open:
                while self.open and self.open.pop() != tag:
                    pass
        else:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


@attrs.frozen
class ReportShape:
    """What ``validate_report_html`` found in a page."""

    problems: tuple[str, ...]
    lanes: int
    steps: int
    failing: int
    text: str
    titles: tuple[str, ...]


def validate_report_html(page: str) -> ReportShape:
    """Parse a report page and check it is well formed and self-contained:
    tags balanced, no external resource (``src``, stylesheet ``link``,
    ``url(...)`` or ``@import`` in CSS, absolute ``http(s)`` references), one
    lane per CPU (``data-cpus``), one step box per step or a fold that stands for it (``data-steps``).
    Returns the counts and visible text for tests to assert on."""
    p = _Collector()
    p.feed(page)
    p.close()
    problems = list(p.problems)
    if p.open:
        problems.append(f"unclosed tags: {p.open}")
    if not page.lstrip().lower().startswith("<!doctype html>"):
        problems.append("missing <!DOCTYPE html>")
    for tag, a in p.tags:
        if "src" in a:
            problems.append(f"<{tag} src=...> loads an external resource")
        if tag == "link":
            problems.append("<link> loads an external resource")
        href = a.get("href", "")
        if re.match(r"(?i)\s*(https?:|//)", href):
            problems.append(f"<{tag} href={href!r}> points to the network")
    for css in re.findall(r"(?is)<style>(.*?)</style>", page):
        if re.search(r"(?i)url\(|@import", css):
            problems.append("CSS loads an external resource")
    grid = [a for t, a in p.tags if "lanes" in a.get("class", "").split()]
    lanes = sum(1 for _, a in p.tags if "lane" in a.get("class", "").split())
    steps = [a for _, a in p.tags if "step" in a.get("class", "").split()]
    failing = sum(1 for _, a in p.tags if "failing" in a.get("class", "").split())
    if len(grid) != 1:
        problems.append(f"expected one swimlane grid (got {len(grid)})")
    else:
        if grid[0].get("data-cpus") != str(lanes):
            problems.append(f"data-cpus={grid[0].get('data-cpus')!r} but {lanes} lanes drawn")
    # every step is drawn, or inside a fold, exactly once and in order
    covered: list[int] = []
    for _, a in p.tags:
        classes = a.get("class", "").split()
        if "step" in classes:
            covered.append(int(a.get("data-step", "-1") or -1))
        elif "folded" in classes:
            covered.extend(range(int(a.get("data-first", "0")), int(a.get("data-last", "-1")) + 1))
    if len(grid) == 1 and grid[0].get("data-steps") != str(len(covered)):
        problems.append(f"data-steps={grid[0].get('data-steps')!r} but {len(covered)} steps drawn "
                        f"or folded")
    if covered != list(range(len(covered))):
        problems.append("steps are not drawn in order #0, #1, ...")
    if any(not a.get("title") for a in steps):
        problems.append("a step has no title (hover text)")
    return ReportShape(problems=tuple(problems), lanes=lanes, steps=len(steps), failing=failing,
                       text=" ".join("".join(p.text).split()),
                       titles=tuple(a.get("title", "") for a in steps))
