"""The explorer: controlled scheduler, schedules, strategies, reports.

Knows nothing about memory management; it could explore any protocol.
"""

from ._errors import (
    Deadlock,
    InvariantViolation,
    Livelock,
    MmemuError,
    ModelError,
    NondeterminismError,
    ScheduleFormatError,
    UnexpectedException,
)
from ._coverage import Coverage, VacuousSuite
from ._execution import CPU, Simulation, block, current_cpu, current_simulation, fail, mutant, reach, span, step, wake_all, wake_one
from ._explore import Failure, Outcome, Result, explore, explore_async, replay, replay_async
from ._registry import (
    Mutant,
    Scenario,
    all_mutants,
    all_scenarios,
    get_mutant,
    get_scenario,
    is_registered,
    register_mutant,
    scenario,
    scenario_name,
)
from ._report import Span, Trace, TraceEvent, render_timeline
from ._schedule import Schedule
from ._settings import Settings
from ._strategies import DFS, PCT, Guided, Random, Strategy
from ._watchdog import ForeignAwait, Hang, StepTimeout

__all__ = [
    "CPU", "Coverage", "DFS", "PCT", "VacuousSuite", "reach", "Deadlock", "Failure",
    "ForeignAwait", "Guided", "Hang", "InvariantViolation", "Livelock", "StepTimeout",
    "MmemuError", "ModelError", "Mutant", "NondeterminismError", "Outcome", "Random",
    "Result", "Scenario", "Schedule", "ScheduleFormatError", "Settings", "Simulation",
    "Span", "Strategy", "Trace", "TraceEvent", "UnexpectedException", "all_mutants",
    "all_scenarios", "block", "current_cpu", "current_simulation", "explore",
    "explore_async", "fail", "get_mutant", "is_registered", "scenario_name", "get_scenario", "mutant", "register_mutant",
    "render_timeline", "replay", "replay_async", "scenario", "span", "step", "wake_all",
    "wake_one",
]
