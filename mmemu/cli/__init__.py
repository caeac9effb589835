"""The ``mmemu`` command.

Exit status: 0 nothing found, 1 a failure found (its report and replay line
are printed), 2 a usage error or bad input (one line on stderr, no traceback),
130 interrupted.

One module per group of subcommands, each registering on the one cyclopts
``app`` of ``_app``: ``suites`` (list, mutants, explain), ``run`` (run,
merge), ``replay`` (replay, trace, report), ``bench``, ``fuzz`` (its work is in
``mmemu.workload._cli``), ``mutate`` (its
options live in ``mmemu.mutate._cli``).  A new command is a new
module here that does ``from ._app import app`` and is imported below; keep
the commands thin wrappers over the library.
"""

from __future__ import annotations

from . import bench, fuzz, mutate, replay, run, suites  # noqa: F401 - each registers its commands
from ._app import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, app
from ._main import main

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError", "app", "main"]
