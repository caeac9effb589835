"""The cyclopts app every command module registers on, and what they share:
the exit statuses, ``UsageError`` and the consoles."""

from __future__ import annotations

from collections.abc import Iterable

import cyclopts
from rich.console import Console
from rich.text import Text

app = cyclopts.App(
    name="mmemu",
    help="Emulate the kernel's mm concurrency protocols and find their races.\n\n"
         "Global option: --verbose (or MMEMU_LOG=debug) logs lifecycle events on stderr.\n\n"
         "Example: mmemu run 'pagecache:*' --strategy dfs --max-preemptions 2",
    version="0.1.0",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(Exception):
    """Bad input from the user: one line, exit 2."""


def _out() -> Console:
    """The console for results (stdout), as wide as ``output_width`` says:
    COLUMNS when set, else the terminal, else a default for pipes."""
    from ._tables import output_width

    return Console(highlight=False, soft_wrap=True, width=output_width())


def _err() -> Console:
    """The console for progress and one-line notes (stderr)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_lines(console: Console, lines: Iterable[Text]) -> None:
    """Print rendered table lines as they are (no re-wrapping by rich)."""
    for line in lines:
        console.print(line, soft_wrap=True, overflow="ignore", crop=False)
