"""Mutation testing of protocol code: break one step at a time, see who notices.

``mmemu mutate --driver D`` mutates a driver's source and runs the driver
suites (and the fuzzer) on each mutant; ``benchmarks/mutation.py`` does the
same to the model itself (``mmemu/mm``, ``mmemu/kernel/locking.py``,
``drivers/``) against the main job.  The pieces:

- ``_operators``: the mutation operators (``OPERATORS``), found with
  ``ast`` and applied as small text edits (``generate_mutants``);
- ``_isolate``: how a mutant runs without touching any file (an import
  hook, or a copy of the driver loaded as ``file.py:Class``);
- ``_worker``: the process that runs one mutant and streams its verdicts;
- ``_runner``: the coverage baseline, the worker pool, time limits, Ctrl-C
  and the verdicts (caught, survived, unreached, invalid, timeout);
- ``_session``: the two front doors, ``mutate_driver`` and
  ``mutate_modules``, and the ``MutationReport``;
- ``_cli``: the ``mmemu mutate`` command.
"""

from mmemu.mutate._operators import OPERATORS, Mutant, MutationSourceError, generate_mutants
from mmemu.mutate._runner import (
    STATUSES,
    BaselineFailure,
    Budget,
    MutantResult,
    MutationError,
    Run,
    RunVerdict,
)
from mmemu.mutate._session import (
    MutationReport,
    driver_mutants,
    driver_runs,
    main_job_runs,
    module_mutants,
    mutate_driver,
    mutate_modules,
)

__all__ = [
    "OPERATORS", "STATUSES", "BaselineFailure", "Budget", "Mutant", "MutantResult",
    "MutationError", "MutationReport", "MutationSourceError", "Run", "RunVerdict",
    "driver_mutants", "driver_runs", "generate_mutants", "main_job_runs", "module_mutants",
    "mutate_driver", "mutate_modules",
]
