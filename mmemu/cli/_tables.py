"""Plain tables that fit the terminal without cutting a name.

rich's tables shrink every column to fit and cut what does not fit with an
ellipsis, so ``interval:insert-remove-vs-invalidate`` or a failure kind came
out as ``interval:insert…`` or ``Wrong…``.  Here the columns have a kind:

- ``name`` columns (suite, mutant, failure kind) are never cut or wrapped;
- ``text`` columns (parameters, summaries) wrap at spaces and commas, then,
  only for a single word longer than the column, inside the word;
- ``number`` columns are right-aligned and never wrapped.

A table first tries one line per row at its natural width; if that is wider
than the console, it narrows the text columns (down to their longest word,
then further) and wraps them; if even the names and numbers alone do not
fit, each row becomes a block: its first name on a line, then the other
fields as ``header: value`` lines, indented.  Nothing is lost at any width.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence

import attrs
from rich.text import Text

NAME, TEXT, NUMBER = "name", "text", "number"

#: piped output without COLUMNS: wide enough for one line per row of the
#: usual tables, narrow enough for a log viewer
PIPE_WIDTH = 120
GAP = "  "


def output_width(stream: object = None) -> int:
    """The width to draw for: ``COLUMNS`` when set (a pipe too), else the
    terminal's width, else ``PIPE_WIDTH``."""
    raw = os.environ.get("COLUMNS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    out = stream if stream is not None else sys.stdout
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns
    return PIPE_WIDTH


@attrs.frozen
class Column:
    header: str
    kind: str = TEXT


@attrs.frozen
class Cell:
    text: str
    style: str = ""


def _cell(value: str | Cell) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.replace(",", ", ").split()), default=0)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` where it has spaces; a word
    longer than ``width`` overflows its line rather than being cut."""
    if len(text) <= width:
        return [text]
    lines = textwrap.wrap(text, max(width, 1), break_long_words=False, break_on_hyphens=False)
    return lines or [""]


class Table:
    """Rows of cells under column headers; ``lines(width)`` draws it."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self.rows: list[list[Cell]] = []

    def add_row(self, *cells: str | Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(self.columns)} columns got {len(cells)} cells")
        self.rows.append([_cell(c) for c in cells])

    def _natural(self, cols: Sequence[int]) -> list[int]:
        return [max([len(self.columns[i].header)] + [len(r[i].text) for r in self.rows])
                for i in cols]

    def lines(self, width: int) -> list[Text]:
        """The table drawn in the first layout that fits ``width`` (see the
        module docstring); plain text is ``[t.plain for t in lines]``."""
        every = list(range(len(self.columns)))
        text_cols = [i for i in every if self.columns[i].kind == TEXT]
        fixed = [i for i in every if self.columns[i].kind != TEXT]
        natural = dict(zip(every, self._natural(every)))
        gaps = len(GAP) * (len(every) - 1)
        # 1. one line per row
        if sum(natural.values()) + gaps <= width:
            return self._grid(every, natural)
        # 2. text columns narrowed to their longest word, wrapped
        floor = {i: max([len(self.columns[i].header)]
                        + [_longest_word(r[i].text) for r in self.rows]) for i in text_cols}
        room = width - gaps - sum(natural[i] for i in fixed)
        wrapped: list[Text] | None = None
        if room >= sum(floor.values()):
            widths = dict(natural)
            # water-filling: a column that needs less than an equal share of
            # what is left keeps its natural width; the others share the rest
            pending = sorted(text_cols, key=lambda i: natural[i])
            while pending:
                i = pending.pop(0)
                share = room // (len(pending) + 1)
                widths[i] = min(natural[i], max(floor[i], share))
                room -= widths[i]
            wrapped = self._grid(every, widths)
        # 3. names and numbers on the row's line, text fields below it
        stacked: list[Text] | None = None
        if text_cols and sum(natural[i] for i in fixed) + len(GAP) * (len(fixed) - 1) <= width:
            stacked = self._grid(fixed, natural, details=text_cols, width=width)
        if wrapped is not None and (stacked is None or len(wrapped) <= len(stacked)):
            return wrapped
        if stacked is not None:
            return stacked
        # 4. a block per row
        return self._blocks(width)

    def _grid(self, cols: Sequence[int], widths: dict[int, int], *,
              details: Sequence[int] = (), width: int = 0) -> list[Text]:
        out = [Text(GAP.join(self._pad(self.columns[i].header, widths[i], self.columns[i].kind)
                             for i in cols).rstrip(), style="bold"),
               Text(GAP.join("-" * widths[i] for i in cols))]
        for row in self.rows:
            wrapped = {i: (_wrap(row[i].text, widths[i]) if self.columns[i].kind == TEXT
                           else [row[i].text]) for i in cols}
            for k in range(max(len(w) for w in wrapped.values())):
                line = Text()
                for n, i in enumerate(cols):
                    part = wrapped[i][k] if k < len(wrapped[i]) else ""
                    if n:
                        line.append(GAP)
                    line.append(self._pad(part, widths[i], self.columns[i].kind),
                                style=row[i].style if part else "")
                line.rstrip()
                out.append(line)
            if details:
                out.extend(self._details(row, details, width))
        return out

    def _details(self, row: list[Cell], cols: Sequence[int], width: int) -> list[Text]:
        """The text fields of a row under it, ``header: value`` joined with
        ``; `` and wrapped at ``width`` (indented); empty values left out."""
        indent = "    "
        parts = [(f"{self.columns[i].header}: ", row[i]) for i in cols
                 if row[i].text not in ("", "-")]
        out: list[Text] = []
        line = Text(indent)
        for n, (head, cell) in enumerate(parts):
            sep = "; " if n else ""
            piece = sep + head + cell.text
            if len(line.plain) + len(piece) > width and len(line.plain) > len(indent):
                out.append(line)
                line = Text(indent)
                sep, piece = "", head + cell.text
            if len(indent) + len(piece) > width:
                # one field longer than the line: wrap it on its own
                for k, part in enumerate(_wrap(head + cell.text, width - len(indent) - 2)):
                    out.append(Text(indent + ("  " if k else "") + part))
                continue
            line.append(sep + head)
            line.append(cell.text, style=cell.style)
        if len(line.plain) > len(indent):
            out.append(line)
        return out

    def _field(self, cell: Cell, col: Column, width: int, *, indent: str) -> list[Text]:
        """``header: value`` under a row, wrapped; nothing for an empty value."""
        if cell.text in ("", "-"):
            return []
        prefix = f"{indent}{col.header}: "
        body = _wrap(cell.text, width - len(prefix)) if col.kind == TEXT else [cell.text]
        out = []
        for k, part in enumerate(body):
            line = Text(prefix if k == 0 else " " * len(prefix))
            line.append(part, style=cell.style)
            out.append(line)
        return out

    @staticmethod
    def _pad(text: str, width: int, kind: str) -> str:
        return text.rjust(width) if kind == NUMBER else text.ljust(width)

    def _blocks(self, width: int) -> list[Text]:
        """One block per row: the first column, then ``header: value`` lines."""
        out: list[Text] = []
        for row in self.rows:
            out.append(Text(row[0].text, style=row[0].style or "bold"))
            for col, cell in zip(self.columns[1:], row[1:]):
                out.extend(self._field(cell, col, width, indent="  "))
        return out
