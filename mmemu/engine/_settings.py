"""Exploration settings: one frozen object with documented defaults.

Every default can be overridden from the environment, so that a CI job or a
user can change a budget without touching code:

=========================  ===========================================  =======
variable                   meaning                                      default
=========================  ===========================================  =======
``MMEMU_SEED``             base seed of Random and PCT                  0
``MMEMU_EXECUTIONS``       executions per exploration                   1000
``MMEMU_MAX_STEPS``        steps per execution before a Livelock         10000
``MMEMU_MAX_PREEMPTIONS``  DFS preemption bound ("none": unbounded)     none
``MMEMU_STRATEGY``         random, pct or dfs                           random
``MMEMU_SHRINK_BUDGET``    executions the shrinker may spend            2000
=========================  ===========================================  =======
"""

from __future__ import annotations

import os

import attrs

from ._errors import ModelError


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() == "none":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ModelError(f"environment variable {name} must be an integer (got {raw!r})") from None


@attrs.frozen
class Settings:
    seed: int = 0
    executions: int = 1000
    max_steps: int = 10_000
    max_preemptions: int | None = None
    strategy: str = "random"
    shrink_budget: int = 2000

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        return cls(
            seed=_env_int("MMEMU_SEED", d.seed) or 0,
            executions=_env_int("MMEMU_EXECUTIONS", d.executions) or d.executions,
            max_steps=_env_int("MMEMU_MAX_STEPS", d.max_steps) or d.max_steps,
            max_preemptions=_env_int("MMEMU_MAX_PREEMPTIONS", d.max_preemptions),
            strategy=os.environ.get("MMEMU_STRATEGY") or d.strategy,
            shrink_budget=_env_int("MMEMU_SHRINK_BUDGET", d.shrink_budget) or d.shrink_budget,
        )
