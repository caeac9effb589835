"""Workloads: a driver tested against everything the kernel can do to it.

The fixed suites (``mmemu.races``) are hand-explained teaching cases: two
CPUs, one page, one path each.  A *workload* is the general shape: a small
world (a process with a few vmas -- anonymous, shared file, private file --
of several pages each, one file, one or more drivers attached to the
process) and N CPUs, each running a short sequence of *operations*: every
kernel path and driver action, named and parameterised (``fault(0,w)``,
``munmap(0-2)``, ``reclaim(1)``, ``detach``, ``exit`` ...).  A workload has a
one-line text form::

    drivers=kvm,gru; cpu0: fault(0,w) access(0); cpu1: munmap(0-1); cpu2: reclaim(2)

which ``mmemu run --workload`` and ``explore_workload`` accept, and which a
failure's token carries (``mmemu replay TOKEN`` needs nothing else).

``fuzz`` (``mmemu fuzz``) draws random workloads from a seed, explores each
within a budget, and when one fails shrinks the *workload* first (fewer CPUs,
operations, pages, drivers), then the schedule, and reports the minimal
workload with its report and token.

Layout: ``_text`` (values and text form), ``_ops`` (the catalogue of
operations), ``_world`` (building the world each execution), ``_scenario``
(the registered scenario ``workload:run``), ``_generate`` (random
workloads), ``_shrink`` (workload shrinking), ``_fuzz`` (the fuzzer),
``_cli`` (``mmemu fuzz`` and ``mmemu run --workload``).
"""

from mmemu.workload._fuzz import DEFAULT_TIME, FuzzResult, Plan, Progress, fuzz
from mmemu.workload._ops import OPERATIONS, OpSpec, describe_operations
from mmemu.workload._scenario import SCENARIO, explore_workload, workload_params
from mmemu.workload._text import (
    DEFAULT_VMAS,
    Op,
    Workload,
    WorkloadError,
    parse_op,
    parse_workload,
)
from mmemu.workload._world import IncoherentWorld, World

__all__ = [
    "DEFAULT_TIME", "DEFAULT_VMAS", "FuzzResult", "IncoherentWorld", "OPERATIONS", "Op", "OpSpec",
    "Plan", "Progress", "SCENARIO", "Workload", "WorkloadError", "World", "describe_operations",
    "explore_workload", "fuzz", "parse_op", "parse_workload", "workload_params",
]
