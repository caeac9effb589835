"""Exploration settings: one frozen object, and the one rule that fills it.

Every front door (``mmemu.explore``, ``mmemu run``, the pytest plugin) asks
``resolve_settings`` what budget an exploration gets, so a value is found the
same way everywhere, first found wins:

1. the *flag*: an argument of ``explore``, an option of ``mmemu run``
   (``--strategy``, ``--executions``, ``--seed``, ``--max-preemptions``), a
   fixture argument or ``--mmemu-*`` option in pytest;
2. the *environment*: ``MMEMU_*`` variables (below);
3. the *suite's* own default, given when it was registered
   (``@mmemu.scenario(..., strategy=, executions=, max_preemptions=)``);
4. the engine's default (the table below).

Values are checked where they enter: a bad flag or a bad environment
variable is a ``ModelError`` of one line naming it (exit 2 in the CLI, a
usage error in pytest), never a silently ignored value.  The environment is
checked even when flags override it: a typo in ``MMEMU_STRATEGY`` is
reported, not hidden by whichever command happens to pass a flag.

=========================  ===========================================  =======
variable                   meaning                                      default
=========================  ===========================================  =======
``MMEMU_SEED``             base seed of Random and PCT                  0
``MMEMU_EXECUTIONS``       executions per exploration                   1000
``MMEMU_MAX_STEPS``        steps per execution before a Livelock        10000
``MMEMU_MAX_PREEMPTIONS``  DFS preemption bound ("none": unbounded)     none
``MMEMU_STRATEGY``         random, pct or dfs                           random
``MMEMU_SHRINK_BUDGET``    executions the shrinker may spend            2000
``MMEMU_STEP_TIMEOUT``     seconds one step may run before it is        10
                           reported as never yielding (0: never)
=========================  ===========================================  =======

(The suites' defaults take precedence over the engine's for
``strategy``, ``executions`` and ``max_preemptions``; a raw
``async def scenario(sim)`` that was never registered gets the engine's.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from ._errors import ModelError

STRATEGY_NAMES = ("random", "pct", "dfs")


class _Unset:
    """An argument the caller did not give (``None`` may mean "unbounded")."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"  # pickles as the module-level singleton


#: "not given": the next source in the precedence decides
UNSET: Any = _Unset()

#: the environment variable of each field
ENV_VARS: Mapping[str, str] = {
    "seed": "MMEMU_SEED",
    "executions": "MMEMU_EXECUTIONS",
    "max_steps": "MMEMU_MAX_STEPS",
    "max_preemptions": "MMEMU_MAX_PREEMPTIONS",
    "strategy": "MMEMU_STRATEGY",
    "shrink_budget": "MMEMU_SHRINK_BUDGET",
    "step_timeout": "MMEMU_STEP_TIMEOUT",
}

#: fields a suite's registration gives a default for
SUITE_FIELDS = ("strategy", "executions", "max_preemptions")


class SuiteDefaults(Protocol):
    """What ``resolve_settings`` reads of a registered suite (``Scenario``)."""

    @property
    def strategy(self) -> str: ...

    @property
    def executions(self) -> int: ...

    @property
    def max_preemptions(self) -> int | None: ...


@attrs.frozen
class Settings:
    """The budget of one exploration.

    ``sources`` says where each value came from: ``"flag"``,
    ``"environment"``, ``"suite"`` or ``"default"`` (for reports and
    ``mmemu run``'s header).
    """

    seed: int = 0
    executions: int = 1000
    max_steps: int = 10_000
    max_preemptions: int | None = None
    strategy: str = "random"
    shrink_budget: int = 2000
    #: wall-clock seconds a step may run without yielding (0: no limit);
    #: only ever decides that a run is stuck, never enters a result
    step_timeout: float = 10.0
    sources: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The engine's defaults overridden by the environment (no suite,
        no flags); a bad variable is a ModelError."""
        return resolve_settings(None, environ=environ)


# ---------------------------------------------------------------- checking


def _check(field: str, value: Any, where: str) -> Any:
    """``value`` for ``field`` if valid, else a one-line ModelError naming
    ``where`` it came from."""
    if field == "strategy":
        if value not in STRATEGY_NAMES:
            raise ModelError(f"{where} must be one of {', '.join(STRATEGY_NAMES)} (got {value!r})")
        return value
    if field == "max_preemptions" and value is None:
        return None
    if field == "step_timeout":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ModelError(f"{where} must be a number of seconds >= 0 (got {value!r})")
        return float(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelError(f"{where} must be an integer (got {value!r})")
    low = {"executions": 1, "max_steps": 1, "max_preemptions": 0, "shrink_budget": 0}.get(field)
    if low is not None and value < low:
        raise ModelError(f"{where} must be at least {low} (got {value})")
    return value


def _parse_env(field: str, raw: str) -> Any:
    name = ENV_VARS[field]
    text = raw.strip()
    if field == "strategy":
        return _check(field, text.lower(), f"environment variable {name}")
    if field == "max_preemptions" and text.lower() in ("none", "unbounded"):
        return None
    if field == "step_timeout":
        try:
            return _check(field, float(text), f"environment variable {name}")
        except ValueError:
            raise ModelError(f"environment variable {name} must be a number of seconds "
                             f"(got {raw!r})") from None
    try:
        value = int(text)
    except ValueError:
        what = "an integer or 'none'" if field == "max_preemptions" else "an integer"
        raise ModelError(f"environment variable {name} must be {what} (got {raw!r})") from None
    return _check(field, value, f"environment variable {name}")


def environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields the environment sets, checked (unset or empty: absent)."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for field, name in ENV_VARS.items():
        raw = env.get(name)
        if raw is not None and raw.strip() != "":
            out[field] = _parse_env(field, raw)
    return out


# --------------------------------------------------------------- resolving


def given(**flags: Any) -> dict[str, Any]:
    """API arguments as flags: ``None`` means "not given" (``UNSET``),
    except for ``max_preemptions``, where it means unbounded."""
    return {k: (UNSET if v is None and k != "max_preemptions" else v) for k, v in flags.items()}


def resolve_settings(
    suite: SuiteDefaults | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    base: Settings | None = None,
    strategy: Any = UNSET,
    executions: Any = UNSET,
    seed: Any = UNSET,
    max_steps: Any = UNSET,
    max_preemptions: Any = UNSET,
    shrink_budget: Any = UNSET,
    step_timeout: Any = UNSET,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """The settings of one exploration: flags, then environment, then the
    suite's defaults, then the engine's (see the module docstring).

    Flags left ``UNSET`` fall through.  ``strategy`` may be a Strategy
    object: it is taken as given (its name is recorded) and only the other
    fields are resolved.  ``base`` replaces the environment layer with a
    Settings object the caller built (every field of it counts as set).
    ``flag_names`` names the flags in error messages (``{"executions":
    "--executions"}``); by default they are named as arguments
    (``'executions'``).
    """
    names = dict(flag_names or {})
    flags = {"strategy": strategy, "executions": executions, "seed": seed,
             "max_steps": max_steps, "max_preemptions": max_preemptions,
             "shrink_budget": shrink_budget, "step_timeout": step_timeout}
    if base is not None:
        env_layer = {f: getattr(base, f) for f in ENV_VARS}
        env_source = "settings"
    else:
        env_layer = environment(environ)
        env_source = "environment"
    defaults = Settings()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in ENV_VARS:
        flag = flags[field]
        if flag is not UNSET:
            if field == "strategy" and not isinstance(flag, str):
                value = getattr(flag, "name", type(flag).__name__)  # a Strategy object
            else:
                where = names.get(field, f"{field!r}")
                value = _check(field, flag.lower() if field == "strategy" and isinstance(flag, str)
                               else flag, where)
            values[field], sources[field] = value, "flag"
        elif field in env_layer:
            values[field], sources[field] = env_layer[field], env_source
        elif suite is not None and field in SUITE_FIELDS:
            values[field], sources[field] = getattr(suite, field), "suite"
        else:
            values[field], sources[field] = getattr(defaults, field), "default"
    return Settings(**values, sources=sources)
