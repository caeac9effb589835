"""The error tree of mmemu: one root, one class per kind of failure.

::

    MmemuError
    ├── InvariantViolation        a check, BUG_ON or sanitizer failed
    │     (the kernel and the checkers add subclasses: FreedPageStillMapped, ...)
    ├── Deadlock                  no CPU can run, some have not finished
    ├── Livelock                  an execution exceeded max_steps
    ├── VacuousSuite              a complete exploration never reached a goal
    │     (mmemu.engine._coverage; a failure of the exploration, not of one execution)
    ├── UnexpectedException       a CPU raised something that is not an MmemuError
    ├── NondeterminismError       a replay diverged from its schedule
    ├── ScheduleFormatError       a token could not be read
    └── ModelError                the model or the caller misused the engine

The first four are *failures of an execution*: exploration catches them,
shrinks the schedule and reports it.  The last three are errors of the user or
the model and propagate to the caller.
"""

from __future__ import annotations


class MmemuError(Exception):
    """Root of every error mmemu raises."""


class InvariantViolation(MmemuError):
    """A protocol invariant was broken in this execution.

    ``details`` is a multi-line object dump (pages, locks, translations) that
    the report prints under the message.
    """

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class Deadlock(MmemuError):
    """No emulated CPU can run and at least one has not finished."""


class Livelock(MmemuError):
    """An execution ran more than ``max_steps`` steps (a CPU spinning?)."""


class UnexpectedException(MmemuError):
    """A CPU (or the scenario itself) raised an exception that is not an
    ``MmemuError``.  ``original`` and ``traceback_text`` keep what it raised."""

    def __init__(self, message: str, *, original: BaseException, traceback_text: str) -> None:
        super().__init__(message)
        self.original = original
        self.traceback_text = traceback_text


class NondeterminismError(MmemuError):
    """A scenario replayed under a recorded schedule did something else."""


class ScheduleFormatError(MmemuError):
    """A schedule token is malformed, truncated or from another version."""


class ModelError(MmemuError):
    """The engine was misused: a step outside an execution, an unknown
    mutant, a wake without the declared write, ..."""


#: Kinds that are failures of an execution (found, shrunk and reported),
#: as opposed to errors that propagate to the caller.
EXECUTION_FAILURES: tuple[type[MmemuError], ...] = (
    InvariantViolation,
    Deadlock,
    Livelock,
    UnexpectedException,
)
