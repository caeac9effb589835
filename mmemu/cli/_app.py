"""The cyclopts app every command module registers on, and what they share:
the exit statuses, ``UsageError`` and the consoles."""

from __future__ import annotations

import sys

import cyclopts
from rich.console import Console

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
    # A pipe or a file gets rich's default of 80 columns, which truncates
    # the summary tables; logs and CI output have room for more.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=True, width=width)



def _err() -> Console:
    """The console for progress and one-line notes (stderr)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)
