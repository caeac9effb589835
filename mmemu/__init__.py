"""mmemu: emulate the Linux kernel's memory-management concurrency protocols
and find their races.

The public surface lives here (and in ``mmemu.lowlevel`` for kernel-model
authors, ``mmemu.testing`` for driver authors).
"""

from mmemu.engine import (
    DFS,
    PCT,
    Deadlock,
    Failure,
    ForeignAwait,
    Hang,
    InvariantViolation,
    Livelock,
    MmemuError,
    ModelError,
    NondeterminismError,
    Outcome,
    Random,
    Result,
    ScheduleFormatError,
    Settings,
    Simulation,
    StepTimeout,
    UnexpectedException,
    VacuousSuite,
    explore,
    explore_async,
    mutant,
    register_mutant,
    replay,
    replay_async,
    scenario,
    span,
    step,
)

# mmemu's own suites: the engine's registry learns them from here, never by
# importing a package above itself
from mmemu.engine._registry import add_suite_module as _add_suite_module  # noqa: E402

_add_suite_module("mmemu.races")

__version__ = "0.1.0"

__all__ = [
    "DFS", "PCT", "Deadlock", "Failure", "ForeignAwait", "Hang", "InvariantViolation",
    "Livelock", "MmemuError", "StepTimeout",
    "ModelError", "NondeterminismError", "Outcome", "Random", "Result",
    "ScheduleFormatError", "Settings", "Simulation", "UnexpectedException", "VacuousSuite", "explore",
    "explore_async", "mutant", "register_mutant", "replay", "replay_async", "scenario",
    "span", "step",
]
