"""Exploration strategies: which CPU runs at each choice point.

A strategy drives a sequence of executions.  For each one it hands the
engine a *chooser* (called at every choice point, i.e. wherever two or more
CPUs are runnable) and afterwards sees the finished execution.

- ``Random(seed)``: uniform choice.  Execution ``i`` draws from its own
  generator seeded with ``(seed, i)``, so a shard that runs executions
  ``i..j`` makes exactly the choices a single process would.
- ``PCT(depth, seed)``: probabilistic concurrency testing (Burckhardt et al.,
  ASPLOS 2010).  Random priorities; the highest-priority runnable CPU runs;
  at ``depth - 1`` random steps (drawn over the step count learnt from earlier
  executions) the running CPU drops below every other.
- ``DFS(max_preemptions, reduction)`` (in ``_dpor.py``): stateless exhaustive
  search over the choice points, optionally bounded in preemptions (iterative
  context bounding, Musuvathi & Qadeer 2007), with sleep sets (Godefroid
  1996), source-set DPOR (Abdulla et al., POPL 2014) or optimal DPOR with
  wakeup trees (Abdulla et al., JACM 2017) over the declared accesses.
- ``Guided(choices)``: follow recorded choices while they are possible, then
  run without preemptions.  ``strict=True`` is exact replay: a recorded choice
  that is not runnable is a NondeterminismError.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._errors import ModelError, NondeterminismError
from ._execution import CPU, RUNNABLE, Chooser, Simulation


def _rng(seed: int, index: int) -> random.Random:
    # String seeds go through SHA-512: stable across processes and hash seeds.
    return random.Random(f"mmemu:{seed}:{index}")


class Strategy:
    """Base class.  ``name`` appears in reports and JSON."""

    name = "strategy"
    record = False  # does the strategy need the per-step event log?
    exhausted = False
    #: executions the strategy abandoned (they are not counted as executions)
    blocked = 0

    @property
    def traces(self) -> int | None:
        """Distinct Mazurkiewicz traces among the executions, if counted."""
        return None

    def bind(self, seed: int) -> None:
        """Receive the exploration's seed (unless the strategy has its own)."""

    def begin(self, index: int) -> Chooser | None:
        """The chooser for execution ``index``; None when nothing is left."""
        raise NotImplementedError

    def end(self, sim: Simulation) -> None:
        """See the finished execution."""

    def describe(self) -> str:
        return self.name


class Random(Strategy):
    """Uniform random choice at every choice point."""

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def bind(self, seed: int) -> None:
        if self.seed is None:
            self.seed = seed

    def begin(self, index: int) -> Chooser:
        rng = _rng(self.seed or 0, index)
        # random() is several times cheaper than randrange(); the bias of
        # int(random() * n) for a handful of CPUs is below 2**-50.
        random_ = rng.random

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            return run[int(random_() * len(run))]

        return choose

    def describe(self) -> str:
        return f"random(seed={self.seed})"


class PCT(Strategy):
    """Probabilistic concurrency testing with bug depth ``depth``."""

    name = "pct"

    def __init__(self, depth: int = 3, seed: int | None = None) -> None:
        if depth < 1:
            raise ModelError(f"PCT 'depth' must be at least 1 (got {depth})")
        self.depth = depth
        self.seed = seed
        self.k = 50  # step-count estimate, learnt from executions
        #: learn ``k`` from executions (a parallel exploration fixes it)
        self.learn = True

    def bind(self, seed: int) -> None:
        if self.seed is None:
            self.seed = seed

    def begin(self, index: int) -> Chooser:
        rng = _rng(self.seed or 0, index)
        d = self.depth
        k = max(self.k, d)
        points = sorted(rng.sample(range(1, k + 1), d - 1)) if d > 1 else []
        # change point number i (0-based) lowers priority to d - 1 - i < d
        pending = [(p, float(d - 1 - i)) for i, p in enumerate(points)]
        prio: dict[int, float] = {}

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            while pending and pending[0][0] <= sim.steps:
                _, low = pending.pop(0)
                if prev is not None:
                    prio[prev.id] = low
            best = None
            best_p = -1.0
            for c in run:
                p = prio.get(c.id)
                if p is None:
                    p = prio[c.id] = d + rng.random()
                if p > best_p:
                    best, best_p = c, p
            assert best is not None
            return best

        return choose

    def end(self, sim: Simulation) -> None:
        if self.learn and sim.steps > self.k:
            self.k = sim.steps

    def describe(self) -> str:
        return f"pct(depth={self.depth}, seed={self.seed})"


class Guided(Strategy):
    """Follow ``choices`` (one CPU id per choice point), then no preemptions.

    With ``strict`` the recorded choices must be followed exactly and must be
    used up: that is replay.
    """

    name = "replay"

    def __init__(self, choices: Sequence[int], *, strict: bool = False) -> None:
        self.choices = tuple(choices)
        self.strict = strict
        self.record = True

    def begin(self, index: int) -> Chooser:
        choices = self.choices
        strict = self.strict

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            c = len(sim.choices)
            if c < len(choices):
                want = choices[c]
                for cpu in run:
                    if cpu.id == want:
                        return cpu
                if strict:
                    names = ", ".join(x.title for x in run)
                    sim.fail(NondeterminismError(
                        f"at step {sim.steps} (choice {c}) the schedule chooses cpu{want}, "
                        f"but only {names} can run: the scenario does not behave as when "
                        f"the token was recorded"))
            elif strict and c >= len(choices):
                sim.fail(NondeterminismError(
                    f"at step {sim.steps} the schedule has no choice left but "
                    f"{len(run)} CPUs can run: the scenario does not behave as when the "
                    f"token was recorded"))
            return _non_preemptive(prev, run)

        return choose


def _non_preemptive(prev: CPU | None, run: list[CPU]) -> CPU:
    if prev is not None and prev.state == RUNNABLE:
        return prev
    return run[0]


def make_strategy(strategy: str | Strategy, *, max_preemptions: int | None = None) -> Strategy:
    """Turn ``"random" | "pct" | "dfs"`` (or a Strategy) into a Strategy."""
    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "random":
        return Random()
    if strategy == "pct":
        return PCT()
    if strategy == "dfs":
        return DFS(max_preemptions=max_preemptions)
    raise ModelError(f"'strategy' must be 'random', 'pct', 'dfs' or a Strategy (got {strategy!r})")


# DFS builds on Strategy (above): imported last so that either module can be
# imported first.
from ._dpor import DFS as DFS, REDUCTIONS as REDUCTIONS  # noqa: E402
