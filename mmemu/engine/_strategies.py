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
- ``DFS(max_preemptions, reduction)``: stateless exhaustive search over the
  choice points, optionally bounded in preemptions (iterative context
  bounding, Musuvathi & Qadeer 2007), with sleep sets (Godefroid 1996) or
  source-set DPOR (Abdulla et al., POPL 2014) over the declared accesses.
- ``Guided(choices)``: follow recorded choices while they are possible, then
  run without preemptions.  ``strict=True`` is exact replay: a recorded choice
  that is not runnable is a NondeterminismError.

Open question: DPOR under a preemption bound is not exhaustive for the bound
(Coons et al., OOPSLA 2013).  We add the bounded-POR conservative backtrack
point (the last context switch before the race) which recovers the bugs the
tests know of; ``reduction="none"`` is the exact reference.
"""

from __future__ import annotations

import bisect
import json
import os
import random
from collections.abc import Hashable, Sequence
from typing import Any

from ._errors import ModelError, NondeterminismError
from ._execution import CPU, RUNNABLE, Chooser, Simulation

REDUCTIONS = ("none", "sleep", "dpor")


def _rng(seed: int, index: int) -> random.Random:
    # String seeds go through SHA-512: stable across processes and hash seeds.
    return random.Random(f"mmemu:{seed}:{index}")


class Strategy:
    """Base class.  ``name`` appears in reports and JSON."""

    name = "strategy"
    record = False  # does the strategy need the per-step event log?
    exhausted = False

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


def _independent(a: tuple[tuple[Hashable, ...], tuple[Hashable, ...]],
                 b: tuple[tuple[Hashable, ...], tuple[Hashable, ...]]) -> bool:
    ar, aw = a
    br, bw = b
    for o in aw:
        if o in bw or o in br:
            return False
    for o in ar:
        if o in bw:
            return False
    return True


class _Node:
    """A choice point of the current DFS path."""

    __slots__ = ("j", "enabled", "chosen", "done", "backtrack", "sleep", "prev",
                 "preempts")

    def __init__(self, j: int, enabled: tuple[int, ...], chosen: int, prev: int | None,
                 preempts: int, sleep: set[int]) -> None:
        self.j = j                    # index of the event chosen here
        self.enabled = enabled        # runnable CPU ids at this state
        self.chosen = chosen
        self.done = {chosen}
        self.backtrack = {chosen}
        self.sleep = sleep            # CPU ids asleep at this state
        self.prev = prev              # CPU that ran the previous event
        self.preempts = preempts      # preemptions before this choice

    def is_preemption(self, q: int) -> bool:
        return self.prev is not None and self.prev in self.enabled and q != self.prev

    def to_json(self) -> dict[str, Any]:
        return {"j": self.j, "e": list(self.enabled), "c": self.chosen,
                "d": sorted(self.done), "b": sorted(self.backtrack),
                "p": self.prev, "n": self.preempts, "s": sorted(self.sleep)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Node:
        # The sleep set must survive a checkpoint: without it the resumed
        # search re-enters subtrees that sleep sets had already pruned.
        n = cls(d["j"], tuple(d["e"]), d["c"], d["p"], d["n"], set(d.get("s", ())))
        n.done = set(d["d"])
        n.backtrack = set(d["b"])
        return n


class DFS(Strategy):
    """Exhaustive depth-first search over choice points.

    ``max_preemptions`` bounds the preemptions of every execution (None:
    unbounded).  ``reduction`` is ``"none"`` (every interleaving), ``"sleep"``
    (sleep sets) or ``"dpor"`` (source-set DPOR with sleep sets).
    ``checkpoint`` names a file where the search position is saved (every
    ``checkpoint_every`` executions and at the end) and from which a later
    exploration of the same scenario resumes.
    """

    name = "dfs"
    record = True

    def __init__(self, max_preemptions: int | None = None, reduction: str = "dpor", *,
                 checkpoint: str | os.PathLike[str] | None = None,
                 checkpoint_every: int = 1000) -> None:
        if reduction not in REDUCTIONS:
            raise ModelError(f"DFS 'reduction' must be one of {', '.join(REDUCTIONS)} "
                             f"(got {reduction!r})")
        if max_preemptions is not None and max_preemptions < 0:
            raise ModelError(f"DFS 'max_preemptions' must be >= 0 (got {max_preemptions})")
        self.max_preemptions = max_preemptions
        self.reduction = reduction
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.stack: list[_Node] = []
        self.branch = -1     # index in stack of the node whose choice changed
        self.started = False
        self.exhausted = False
        self.identity: dict[str, Any] = {}
        self.resumed_executions = 0
        #: Splitting the tree (see _parallel.py).  ``prefix``: the CPU chosen
        #: at each of the first choice points, fixed; the search runs below
        #: it and never branches there.  ``frontier``: choice points from
        #: this index on are not branched (each execution then stands for
        #: one distinct prefix of that length: how the prefixes are listed).
        self.prefix: tuple[int, ...] = ()
        self.frontier: int | None = None
        self._since_save = 0
        self._sleep_blocked = 0

    def describe(self) -> str:
        b = "∞" if self.max_preemptions is None else str(self.max_preemptions)
        return f"dfs(max_preemptions={b}, reduction={self.reduction})"

    # -------------------------------------------------------------- choosing

    def begin(self, index: int) -> Chooser | None:
        if self.exhausted:
            return None
        if not self.started:
            self.started = True
            self._load_checkpoint()
            if self.exhausted:
                return None
        stack = self.stack
        branch = self.branch
        bound = self.max_preemptions
        # Sleep sets lose executions under a preemption bound: a CPU put to
        # sleep may only be explorable again through a branch the bound
        # prunes (its pending <start> step is independent of everything, so it
        # never wakes).  Bounded DPOR therefore runs without them.
        use_sleep = self.reduction == "sleep" or (self.reduction == "dpor" and bound is None)
        full = self.reduction == "none"
        prefix = self.prefix
        frontier = self.frontier
        state: dict[str, Any] = {"sleep": set(), "seen": 0}

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            c = len(sim.choices)
            j = len(sim.events)
            cpus = sim.cpu_list
            sleep: set[int] = state["sleep"]
            if use_sleep and sleep and state["seen"] < j:
                # events since the last choice point ran without a choice:
                # a sleeping CPU wakes up when one of them conflicts with it
                for ev in sim.events[state["seen"]:j]:
                    acc = (ev[2], ev[3])
                    sleep = {q for q in sleep if _independent(cpus[q].pending[1:], acc)}
            if c < len(stack):
                node = stack[c]
                enabled = tuple(x.id for x in run)
                if node.j != j or node.enabled != enabled:
                    sim.fail(NondeterminismError(
                        f"DFS replay diverged at step {j}: expected CPUs {node.enabled} "
                        f"runnable at event {node.j}, found {enabled} (is the scenario "
                        f"deterministic?)"))
                chosen = cpus[node.chosen]
                if c == branch and use_sleep:
                    # Entering the new branch: what was explored here sleeps.
                    acc = chosen.pending[1:]
                    sleep = {q for q in (node.sleep | node.done)
                             if q != chosen.id and _independent(cpus[q].pending[1:], acc)}
                elif c > branch or not use_sleep:
                    sleep = set()
                state["sleep"] = sleep
                state["seen"] = j + 1
                return chosen
            # a new choice point beyond the forced prefix
            awake = [x for x in run if x.id not in sleep]
            pick: CPU
            if c < len(prefix):
                # below a split point: the parent process chose this CPU
                forced = [x for x in run if x.id == prefix[c]]
                if not forced:
                    sim.fail(NondeterminismError(
                        f"DFS prefix diverged at step {j} (choice {c}): cpu{prefix[c]} is not "
                        f"runnable, only {', '.join(x.title for x in run)} (is the scenario "
                        f"deterministic?)"))
                pick = forced[0]
            elif prev is not None and prev.state == RUNNABLE and (prev.id not in sleep or not awake):
                pick = prev
            elif awake:
                pick = awake[0]
            else:
                self._sleep_blocked += 1
                pick = run[0]
            preempts = sim.preemptions
            enabled = tuple(x.id for x in run)
            prev_id = sim.events[-1][0] if sim.events else None
            node = _Node(j, enabled, pick.id, prev_id, preempts, set(sleep) if use_sleep else set())
            if (full or self.reduction == "sleep") and c >= len(prefix) \
                    and (frontier is None or c < frontier):
                node.backtrack = set(enabled)
            stack.append(node)
            if use_sleep:
                acc = pick.pending[1:]
                sleep = {q for q in sleep if _independent(cpus[q].pending[1:], acc)}
                state["sleep"] = sleep
            state["seen"] = j + 1
            return pick

        return choose

    # ----------------------------------------------------------- afterwards

    def end(self, sim: Simulation) -> None:
        if sim.failure is not None and len(sim.choices) < len(self.stack):
            # The execution stopped early (a failure): drop the nodes it
            # never reached; they belong to no real execution.
            del self.stack[len(sim.choices):]
        if self.reduction == "dpor":
            self._dpor(sim)
        self._advance()
        self._since_save += 1
        if self.checkpoint and (self.exhausted or self._since_save >= self.checkpoint_every):
            self.save_checkpoint()

    def _advance(self) -> None:
        """Move to the deepest choice point with an untried CPU."""
        stack = self.stack
        bound = self.max_preemptions
        # The fixed prefix is never branched (DPOR may add backtrack points
        # there: other workers own those subtrees), nor beyond the frontier.
        fixed = len(self.prefix)
        frontier = self.frontier
        while stack:
            node = stack[-1]
            if len(stack) <= fixed or (frontier is not None and len(stack) > frontier):
                stack.pop()
                continue
            for q in sorted(node.backtrack - node.done):
                if q in node.sleep:
                    node.done.add(q)
                    continue
                if bound is not None and node.preempts + node.is_preemption(q) > bound:
                    node.done.add(q)
                    continue
                node.done.add(q)
                node.chosen = q
                self.branch = len(stack) - 1
                return
            stack.pop()
        self.exhausted = True
        self.branch = -1

    def _dpor(self, sim: Simulation) -> None:
        """Source-DPOR: for every race, make sure some initial of the reversed
        order is in the backtrack set of the state before the first event."""
        events = sim.events
        if not events:
            return
        nthreads = len(sim.cpu_list)
        node_at = {n.j: n for n in self.stack}
        clocks: list[list[int]] = []
        local: list[int] = []
        thread_clock = [[0] * nthreads for _ in range(nthreads)]
        thread_events: list[list[int]] = [[] for _ in range(nthreads)]
        last_write: dict[Hashable, int] = {}
        reads_since: dict[Hashable, dict[int, int]] = {}
        bound = self.max_preemptions
        for j, ev in enumerate(events):
            t, _label, reads, writes, _pre = ev
            prev_c = thread_clock[t]
            cands: list[int] = []
            for o in reads:
                w = last_write.get(o)
                if w is not None and events[w][0] != t:
                    cands.append(w)
            for o in writes:
                w = last_write.get(o)
                if w is not None and events[w][0] != t:
                    cands.append(w)
                rs = reads_since.get(o)
                if rs:
                    for rt, ri in rs.items():
                        if rt != t:
                            cands.append(ri)
            c = prev_c[:]
            c[t] += 1
            for i in cands:
                ci = clocks[i]
                for k in range(nthreads):
                    if ci[k] > c[k]:
                        c[k] = ci[k]
            # races: candidates not already ordered before j through t's past
            # or through another candidate
            for i in set(cands):
                # cheapest test first: only a choice point can be reversed
                node = node_at.get(i)
                if node is None:
                    continue  # one CPU could run there: not reversible
                ti = events[i][0]
                li = local[i]
                if prev_c[ti] >= li:
                    continue
                if any(k != i and clocks[k][ti] >= li for k in cands):
                    continue
                self._reverse(i, j, t, c, node, events, clocks, local, thread_events,
                              nthreads, node_at, bound)
            clocks.append(c)
            local.append(c[t])
            thread_clock[t] = c
            thread_events[t].append(j)
            for o in writes:
                last_write[o] = j
                reads_since.pop(o, None)
            for o in reads:
                if o not in writes:
                    reads_since.setdefault(o, {})[t] = j

    def _reverse(self, i: int, j: int, t: int, cj: list[int], node: _Node, events: list[Any],
                 clocks: list[list[int]], local: list[int], thread_events: list[list[int]],
                 nthreads: int, node_at: dict[int, _Node], bound: int | None) -> None:
        ti = events[i][0]
        li = local[i]

        def first_in_v(q: int) -> int | None:
            """q's first event in v = notdep(i).j, or None."""
            evs = thread_events[q]
            k = bisect.bisect_right(evs, i)
            if q == t:
                cand = evs[k] if k < len(evs) else j
            elif k < len(evs) and evs[k] < j:
                cand = evs[k]
            else:
                return None
            if cand != j and clocks[cand][ti] >= li:
                return None  # happens after i: not in v
            return cand

        firsts = {q: first_in_v(q) for q in range(nthreads) if q != ti}
        initials: list[int] = []
        for q, k in firsts.items():
            if k is None:
                continue
            ck = clocks[k] if k != j else cj
            ok = True
            for r, f in firsts.items():
                # r's first event in v precedes k: if it happens before k,
                # k is not an initial (r's later events in v follow f)
                if r == q or f is None or f >= k:
                    continue
                if ck[r] >= local[f]:
                    ok = False
                    break
            if ok:
                initials.append(q)
        en = set(node.enabled)
        cand_set = [q for q in initials if q in en]
        if not cand_set:
            return
        if not (set(cand_set) & node.backtrack):
            q = t if t in cand_set else min(cand_set)
            node.backtrack.add(q)
            if bound is not None and node.is_preemption(q):
                # bounded POR: also try q at the last context switch before i
                for k in range(i - 1, -1, -1):
                    n2 = node_at.get(k)
                    if n2 is None:
                        continue
                    if k == 0 or events[k - 1][0] != events[k][0]:
                        if q in n2.enabled:
                            n2.backtrack.add(q)
                        break

    # ----------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> None:
        if not self.checkpoint:
            return
        data = {"format": "mmemu-dfs-1", "identity": self.identity,
                "max_preemptions": self.max_preemptions, "reduction": self.reduction,
                "exhausted": self.exhausted, "branch": self.branch,
                "executions": self.resumed_executions,
                "stack": [n.to_json() for n in self.stack]}
        tmp = f"{self.checkpoint}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.checkpoint)
        self._since_save = 0

    def _load_checkpoint(self) -> None:
        if not self.checkpoint or not os.path.exists(self.checkpoint):
            return
        try:
            with open(self.checkpoint, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read DFS checkpoint {self.checkpoint}: {exc}") from None
        if data.get("format") != "mmemu-dfs-1":
            raise ModelError(f"{self.checkpoint} is not an mmemu DFS checkpoint")
        if data.get("identity") != self.identity or data.get("reduction") != self.reduction \
                or data.get("max_preemptions") != self.max_preemptions:
            raise ModelError(
                f"DFS checkpoint {self.checkpoint} was saved for another exploration "
                f"({data.get('identity')}, reduction={data.get('reduction')}, "
                f"max_preemptions={data.get('max_preemptions')})")
        self.stack = [_Node.from_json(n) for n in data["stack"]]
        self.branch = data["branch"]
        self.exhausted = bool(data["exhausted"])
        self.resumed_executions = int(data.get("executions", 0))


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
