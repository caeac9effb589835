"""Depth-first exploration with partial-order reduction (``DFS``).

Design
------
The search is stateless: every execution runs the scenario from scratch.
The strategy keeps the *stack*: one node per choice point (a state where two
or more CPUs can run) of the current execution, holding what is still to be
explored there.  An execution replays the stack's choices up to the *branch*
node, takes the new choice there, and goes on; at its end the strategy
analyses it and moves the branch to the deepest node with work left.

Reductions (``DFS(reduction=...)``):

``"none"``
    every interleaving: each node tries every runnable CPU.  The exact
    reference the tests compare the others with.
``"sleep"``
    the same, with sleep sets (Godefroid 1996): a CPU whose step was explored
    from a node sleeps in the later branches until a dependent step wakes it.
``"source"``
    source-set DPOR with sleep sets (Abdulla, Aronis, Jonsson, Sagonas, POPL
    2014, Algorithm 1): for each race of an execution, one CPU that can start
    the reversed order is added to the node before the race.
``"dpor"`` (default): optimal DPOR with wakeup trees (same authors, JACM
    2017, "Source Sets: A Foundation for Optimal Dynamic Partial Order
    Reduction", Algorithm 2).  For each race, the whole sequence that
    reverses it (``notdep(e).e'``) is inserted into the *wakeup tree* of the
    node before the race unless a sleeping CPU or a branch already in the
    tree covers it; the tree's branches are then explored in order.  One
    execution per Mazurkiewicz trace of the declared accesses.

Abandoned (sleep-set blocked) executions: with sleep sets, an execution in
which every CPU that can run is asleep has nothing new to show.  It is
abandoned at once (``Simulation.abandon``) and counted in ``blocked``, not in
the executions.  This can happen after the last choice point too, where a
single CPU can run and it is asleep, so while the sleep set is not empty the
strategy gives the engine the sleeping CPUs (``Simulation.watch``) and is
asked whenever one of them is the only CPU that can run; with an empty sleep
set the engine's hot path is untouched.  Optimal DPOR is never sleep-set
blocked on programs without blocking; locks and wake-ups can (rarely) cause
it, as in Nidhugg.

Locks and wake-ups (see ``_locks.py``): a lock's release and the acquisition
it enables are ordered but not a race (the acquisition could not have run
first), and neither are a wake-up and the step it woke.  The race of an
acquisition is with its *partner*, the step that began the last period in
which it could not have run; a CPU still waiting at the end of an execution
races with the partner of the period it waits on.

Preemption bounds (``max_preemptions``): partial-order reduction and a
preemption bound do not mix naively.  Two executions of one trace can need
different numbers of preemptions, so a sleep set or a DPOR backtrack choice
may stand for executions that the bound forbids while the ones it prunes
were allowed (Coons, Musuvathi, McKinley, OOPSLA 2013).  Their remedy,
a second backtrack point at the *conservative point* (where the racing
CPU's run began), is not enough here: with a source-set's "some initial" it
missed a 0-preemption trace, and even with the classic rule (the racing CPU,
else every CPU) it misses a 1-preemption trace of a program with a rwsem
(both in tests/engine/test_bounded.py).  A bounded search here is therefore
plain bounded DFS, made cheaper by a cache that misses nothing: at each choice point it hashes the Mazurkiewicz trace of the
execution so far together with the CPU that ran last; a state already reached
by an equivalent prefix with at most as many preemptions (whose subtree was
explored under a budget at least as large) is not explored again.
Equivalent prefixes reach the same state, and what a continuation costs in
preemptions depends only on that state and the last CPU, so every trace
bounded plain DFS reaches is still reached.  A state reached before with
another last CPU and at least one preemption fewer counts as explored as
well: a continuation after another CPU costs at most one preemption more
(its first switch).  A branch whose first step leads into an explored state
is skipped without running it; an execution that reaches one later is
abandoned there.

Accessed objects across executions: every execution builds its objects
afresh, so the accesses of a step can only be compared with those of steps of
the same execution.  Sleep sets take the sleeping CPUs' next steps from the
running execution.  A wakeup tree keeps steps found by earlier executions;
inserting a new sequence compares them with it as follows: a tree step made
by the execution that inserts is compared as is; the first step after the
node of a CPU is that CPU's pending step at the node, which the inserting
execution has too; a CPU's later steps in the tree are compared by stable
names (``__mmemu_name__``, strings, tuples of them; other objects by type).
Names can only merge objects (two locks both called ``tree_lock``), which
makes steps look dependent: the tree may then get a branch it did not need,
never miss one.

Accessed objects: any object will do; unhashable ones (a dict) are keyed by
identity.  That is deterministic because such keys are only looked up, never
iterated in identity order.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from ._errors import ModelError, NondeterminismError
from ._execution import CPU, DONE, RUNNABLE, Chooser, Simulation
from ._keys import keyed
from ._locks import ACQUIRE
from ._strategies import Strategy

REDUCTIONS = ("none", "sleep", "source", "dpor")

Acc = tuple[tuple[Hashable, ...], tuple[Hashable, ...]]

_MASK = (1 << 64) - 1



def _dependent(a: Acc, b: Acc) -> bool:
    """Do two steps conflict (one writes what the other reads or writes)?"""
    ar, aw = a
    br, bw = b
    if aw is _ALL or bw is _ALL:  # type: ignore[comparison-overlap]
        return True  # a step restored from a checkpoint: assume the worst
    for o in aw:
        if o in bw or o in br:
            return True
    for o in ar:
        if o in bw:
            return True
    return False


def _mix(x: int) -> int:
    """splitmix64's finaliser: spreads the bits of a 64-bit hash, so that
    sums of mixed hashes of different multisets hardly ever meet."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _candidates(last_write: dict[Hashable, int], reads_since: dict[Hashable, dict[int, int]],
                events: list[Any], t: int, reads: tuple[Hashable, ...],
                writes: tuple[Hashable, ...]) -> list[int]:
    """The earlier events of other CPUs that an event of CPU ``t`` with these
    accesses directly conflicts with: the last write of each object it
    reads or writes, and the reads since that write of each it writes."""
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
    return cands


def _note_accesses(last_write: dict[Hashable, int], reads_since: dict[Hashable, dict[int, int]],
                   t: int, j: int, reads: tuple[Hashable, ...],
                   writes: tuple[Hashable, ...]) -> None:
    for o in writes:
        last_write[o] = j
        reads_since.pop(o, None)
    for o in reads:
        if o not in writes:
            rs = reads_since.get(o)
            if rs is None:
                reads_since[o] = {t: j}
            else:
                rs[t] = j


# ------------------------------------------------------------ wakeup trees


def _stable(o: Any) -> Hashable:
    """A name for an accessed object that is the same in every execution."""
    if o is None or isinstance(o, (str, int, float, bool)):
        return o
    if isinstance(o, tuple):
        return tuple(_stable(x) for x in o)
    name = getattr(o, "__mmemu_name__", None)
    if isinstance(name, str):
        return ("name", name)
    return ("type", type(o).__qualname__)


def _stable_acc(acc: Acc) -> Acc:
    return (tuple(_stable(o) for o in acc[0]), tuple(_stable(o) for o in acc[1]))


class _Step:
    """A step of a sequence to insert: from the running execution."""

    __slots__ = ("tid", "acc", "_sacc")

    def __init__(self, tid: int, acc: Acc) -> None:
        self.tid = tid
        self.acc = acc
        self._sacc: Acc | None = None

    @property
    def sacc(self) -> Acc:
        if self._sacc is None:
            self._sacc = _stable_acc(self.acc)
        return self._sacc


class _Wu:
    """A node of a wakeup tree: a step of a CPU and what may follow it.
    ``gen``: the execution whose objects ``acc`` refers to."""

    __slots__ = ("tid", "acc", "gen", "_sacc", "kids", "_wire")

    def __init__(self, tid: int, acc: Acc, gen: int, kids: list[_Wu] | None = None,
                 sacc: Acc | None = None) -> None:
        self.tid = tid
        self.acc = acc
        self.gen = gen
        self._sacc: Acc | None = sacc
        self.kids: list[_Wu] = kids if kids is not None else []
        #: ``to_wire``'s answer, kept until ``_insert`` adds below this node
        #: (a parallel split's coordinator describes waiting branches often)
        self._wire: tuple[Any, ...] | None = None

    @property
    def sacc(self) -> Acc:
        if self._sacc is None:
            self._sacc = _stable_acc(self.acc) if self.gen >= 0 else _RESTORED
        return self._sacc

    def to_json(self) -> list[Any]:
        return [self.tid, [k.to_json() for k in self.kids]]

    def to_wire(self) -> tuple[Any, ...]:
        """Plain data for another process: the CPU, the stable names of the
        step's accesses (all a later execution compares it by) and the
        subtree."""
        w = self._wire
        if w is None:
            w = self._wire = (self.tid, self.sacc, tuple(k.to_wire() for k in self.kids))
        return w


def wu_from_wire(d: Sequence[Any]) -> _Wu:
    """A wakeup-tree branch sent by ``_Wu.to_wire``: compared by its stable
    names, as a step of an earlier execution is."""
    return _Wu(int(d[0]), _RESTORED, -2, [wu_from_wire(k) for k in d[2]], sacc=d[1])


def _chain(seq: Sequence[_Step], gen: int) -> _Wu:
    head = _Wu(seq[0].tid, seq[0].acc, gen, sacc=seq[0]._sacc)
    cur = head
    for st in seq[1:]:
        nxt = _Wu(st.tid, st.acc, gen, sacc=st._sacc)
        cur.kids.append(nxt)
        cur = nxt
    return head


def _without_initial(tid: int, acc: Acc, seq: list[_Step],
                     stable: bool = False) -> list[_Step] | None:
    """If CPU ``tid`` (next step ``acc``) is a weak initial of ``seq``: seq
    without tid's first step (or seq itself when tid has none in it);
    else None.  A weak initial's step conflicts with no step before it in
    ``seq`` (and, when absent, with none at all).  ``stable``: ``acc`` is
    in stable names, compare with the steps' stable names."""
    for k, st in enumerate(seq):
        if st.tid == tid:
            return seq[:k] + seq[k + 1:]
        if _dependent(acc, st.sacc if stable else st.acc):
            return None
    return seq


def _insert(kids: list[_Wu], seq: list[_Step], gen: int, pend: dict[int, Acc]) -> bool:
    """Insert ``seq`` (steps of execution ``gen``) into the wakeup tree whose
    root has ``kids``, unless a branch already covers it.  ``pend``: the
    pending step of each CPU at the root, in execution ``gen``.  Returns
    whether a branch was added."""
    path: set[int] = set()
    while True:
        for kid in kids:
            if kid.gen == gen:
                rest = _without_initial(kid.tid, kid.acc, seq)
            elif kid.tid not in path and kid.tid in pend:
                # its first step below the root: the pending one there
                rest = _without_initial(kid.tid, pend[kid.tid], seq)
            else:
                rest = _without_initial(kid.tid, kid.sacc, seq, stable=True)
            if rest is not None:
                if not kid.kids:
                    return False  # a leaf: what it starts covers seq
                kid._wire = None  # something may be added below it
                path.add(kid.tid)
                kids = kid.kids
                seq = rest
                break
        else:
            if not seq:
                return False
            kids.append(_chain(seq, gen))
            return True


def sleep_covers(sleep: Iterable[int], extra: dict[int, Acc], v: list[_Step],
                 pend: dict[int, Acc]) -> bool:
    """Does a CPU of ``sleep`` (asleep at a node; ``extra``: what their
    steps touched beyond their declared accesses, see ``_Node.extra``)
    start the sequence ``v``, so that it was explored already?  ``pend``:
    the pending step at the node of each sleeping CPU, in v's execution."""
    for q in sleep:
        if _is_restored(extra.get(q)):
            # its branch failed at once (or is not known): it covers only
            # the sequences that start with it
            if v[0].tid == q:
                return True
            continue
        a = pend.get(q)
        if a is None or _without_initial(q, a, v) is not None:
            return True
    return False


def insert_sequence(node: _Node, v: list[_Step], gen: int, pend: dict[int, Acc]) -> int:
    """Insert the reversal ``v`` (steps of execution ``gen``) at ``node``
    unless a CPU asleep there starts it (explored already) or a branch of
    its wakeup tree covers it.  ``pend``: the pending step at the node of
    each CPU asleep or in the tree, in execution ``gen``.  Returns 1 when
    no CPU of ``v`` can start it at the node (a wake-up condition the race
    analysis does not see made it infeasible: counted as a tree miss)."""
    if sleep_covers(node.sleep, node.extra, v, pend):
        return 0  # a sleeping CPU starts it: explored already
    if v[0].tid not in node.enabled:
        # v is one linearisation of a partial order: start it with a weak
        # initial whose CPU can run at the node, if there is one
        for k, st in enumerate(v):
            if st.tid in node.enabled and _without_initial(st.tid, st.acc, v) is not None:
                v = [st] + v[:k] + v[k + 1:]
                break
        else:
            return 1  # no CPU of it can start here: infeasible
    _insert(node.wut, v, gen, pend)
    return 0


# ------------------------------------------------------------------ nodes


class _Node:
    """A choice point of the current execution."""

    __slots__ = ("j", "enabled", "chosen", "prev", "preempts", "sleep", "extra", "wut",
                 "backtrack", "done", "follow", "after", "chosen_extra")

    def __init__(self, j: int, enabled: tuple[int, ...], chosen: int, prev: int | None,
                 preempts: int) -> None:
        self.j = j                    # index of the event chosen here
        self.enabled = enabled        # runnable CPU ids here
        self.chosen = chosen          # the CPU explored now
        self.prev = prev              # CPU of the previous event
        self.preempts = preempts      # preemptions before this choice
        #: CPUs asleep here (on arrival, plus the branches explored since)
        self.sleep: set[int] = set()
        #: of the sleeping CPUs: the accesses their step touched (``touch``)
        #: beyond the declared ones when it ran, in stable names
        self.extra: dict[int, Acc] = {}
        #: a parallel split's coordinator: what ``extra`` will get for the
        #: chosen CPU once its branch is done (reported by the unit that ran it)
        self.chosen_extra: Acc | None = None
        #: "dpor": the wakeup tree's branches still to explore
        self.wut: list[_Wu] = []
        #: the other reductions: CPUs to try, CPUs tried
        self.backtrack: set[int] = {chosen}
        self.done: set[int] = {chosen}
        #: "dpor": the rest of the wakeup tree below the chosen branch, to
        #: follow in the next execution
        self.follow: list[_Wu] | None = None
        #: bounded search: the cache key of the state each CPU's next step
        #: leads to (see DFS._advance)
        self.after: dict[int, tuple[int, int, int]] | None = None

    def is_preemption(self, q: int) -> bool:
        return self.prev is not None and self.prev in self.enabled and q != self.prev

    def to_json(self) -> dict[str, Any]:
        return {"j": self.j, "e": list(self.enabled), "c": self.chosen,
                "d": sorted(self.done), "b": sorted(self.backtrack),
                "p": self.prev, "n": self.preempts, "s": sorted(self.sleep),
                "x": sorted(self.extra),
                "w": [k.to_json() for k in self.wut],
                "f": [k.to_json() for k in self.follow] if self.follow else None}


class _Everything:
    """Stands for the accesses of a wakeup-tree step restored from a
    checkpoint (not saved): it conflicts with everything, which is
    conservative (more branches, never fewer)."""

    def __contains__(self, _o: object) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(("<restored step>",))

    def __reduce__(self) -> str:
        return "_ALL"  # the one instance, in another process too (``is`` tests)


_ALL = _Everything()
_RESTORED: Acc = ((), _ALL)  # type: ignore[assignment]


def _is_restored(acc: Acc | None) -> bool:
    """Stands ``acc`` for unknown accesses (conflicting with everything)?"""
    return acc is not None and acc[1] is _ALL  # type: ignore[comparison-overlap]


def _wu_from_json(d: list[Any]) -> _Wu:
    return _Wu(int(d[0]), _RESTORED, -1, [_wu_from_json(k) for k in d[1]])


def _node_from_json(d: dict[str, Any]) -> _Node:
    n = _Node(d["j"], tuple(d["e"]), d["c"], d["p"], d["n"])
    n.done = set(d["d"])
    n.backtrack = set(d["b"])
    n.sleep = {int(q) for q in d.get("s", ())}
    # what the sleepers touched is not saved: assume it conflicts with anything
    n.extra = {int(q): _RESTORED for q in d.get("x", ())}
    n.wut = [_wu_from_json(k) for k in d.get("w", ())]
    f = d.get("f")
    n.follow = [_wu_from_json(k) for k in f] if f else None
    return n


# --------------------------------------------------------------- the search


class _Run:
    """What the chooser tracks within one execution."""

    __slots__ = ("seen", "sleep", "extra", "follow", "skip", "cnt", "last_write",
                 "reads_since", "h1", "h2")

    def __init__(self) -> None:
        self.seen = 0          # events already looked at
        self.sleep: dict[int, Acc] = {}
        #: sleeping CPUs whose step touched more than it declared: that
        #: more, in stable names (see _Node.extra)
        self.extra: dict[int, Acc] = {}
        self.follow: list[_Wu] | None = None
        self.skip = -1         # event index whose tree step was taken at its choice
        # the Mazurkiewicz trace so far, hashed (bounded search)
        self.cnt: list[int] = []
        self.last_write: dict[Hashable, tuple[int, int]] = {}
        self.reads_since: dict[Hashable, list[tuple[int, int]]] = {}
        self.h1 = 0
        self.h2 = 0


class DFS(Strategy):
    """Exhaustive depth-first search over choice points.

    ``max_preemptions`` bounds the preemptions of every execution (None:
    unbounded).  ``reduction`` is ``"none"``, ``"sleep"``, ``"source"`` or
    ``"dpor"`` (optimal DPOR, the default); see the module notes.
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
        #: event index of that choice: races whose second event comes
        #: before it were analysed by an earlier execution
        self.branch_event: int | None = None
        self.started = False
        self.exhausted = False
        self.identity: dict[str, Any] = {}
        self.resumed_executions = 0
        #: executions abandoned (sleep-set blocked, or a state the bounded
        #: search had already explored)
        self.blocked = 0
        self._traces: set[tuple[int, int, int]] = set()
        #: bounded search: (trace hash, hash, last CPU) -> fewest preemptions
        self._cache: dict[tuple[int, int, int | None], int] = {}
        #: bounded search: (trace hash, hash) -> fewest preemptions, any last CPU
        self._cache_any: dict[tuple[int, int], int] = {}
        #: bounded search: branches not run because their first step leads
        #: to a state in the cache
        self.skipped = 0
        #: Splitting the tree (see _parallel.py).  ``prefix``: the CPU chosen
        #: at each of the first choice points, fixed; the search runs below
        #: it and never branches there.  ``frontier``: choice points from
        #: this index on are not branched (each execution then stands for
        #: one distinct prefix of that length: how the prefixes are listed).
        self.prefix: tuple[int, ...] = ()
        self.frontier: int | None = None
        #: A unit of an exact parallel search (see _parallel.py).  Choice
        #: points before ``frozen`` belong to the coordinator: never branched
        #: here; the reversals of races there are appended to ``log`` (plain
        #: data it replays in single-DFS order), and the nodes the first
        #: execution creates there are described in ``top``.  At the last
        #: prefix choice the CPUs ``split_sleep`` sleep and the wakeup
        #: subtree ``split_follow`` is followed, as in a single DFS entering
        #: that branch.
        self.frozen = 0
        self.split_sleep: tuple[int, ...] | None = None
        self.split_follow: list[_Wu] | None = None
        self.log: list[tuple[Any, ...]] | None = None
        self.top: list[tuple[Any, ...]] | None = None
        #: the sleepers' extras at the branch (see _Node.extra), and what
        #: the branch CPU's own step adds once its branch is done
        self.split_extra: dict[int, Acc] = {}
        self.branch_extra: Acc | None = None
        #: what the unit knows of the coordinator's nodes above its branch
        #: (prefix index -> CPUs asleep there, their extras): a reversal a
        #: sleeping CPU covers is not logged (see ``_analyse``)
        self.split_above: list[tuple[frozenset[int], dict[int, Acc]]] = []
        #: the steps ``log`` refers to, per execution: event index (or
        #: -1 - CPU for the step an unfinished CPU was about to run) ->
        #: (CPU, accesses as object numbers, accesses as stable names)
        self.log_steps: dict[int, dict[int, tuple[int, Acc, Acc]]] = {}
        #: a unit's last execution (for ``rest``)
        self._last_sim: Simulation | None = None
        #: per execution, an accessed object's number in ``log``
        self._ids: dict[Hashable, int] = {}
        #: their stable names, by number, and the other way round; two
        #: objects of the execution with one name make it ambiguous
        self._names: list[Hashable] = []
        self._by_name: dict[Hashable, int] = {}
        self._ambiguous = False
        #: a unit: per coordinator's node, the last reversal logged for it,
        #: by stable names (see ``_log_reversal``)
        self._last_logged: dict[int, Any] = {}
        self._since_save = 0
        #: wakeup-tree steps that could not be followed (must stay 0)
        self.tree_misses = 0
        #: the running execution's number (wakeup-tree steps remember theirs)
        self._gen = 0
        #: the race analysis of the previous execution, per event: vector
        #: clocks, the event's own clock entry, running trace-hash sums
        self._clocks: list[list[int]] = []
        self._local: list[int] = []
        self._hsum: list[tuple[int, int]] = []
        self._nthreads = -1

    # --------------------------------------------------------- properties

    @property
    def bounded(self) -> bool:
        return self.max_preemptions is not None and self.reduction != "none"

    @property
    def uses_sleep(self) -> bool:
        return self.reduction in ("sleep", "source", "dpor") and self.max_preemptions is None

    @property
    def traces(self) -> int:
        """Distinct Mazurkiewicz traces among the finished executions."""
        return len(self._traces)

    def bind(self, seed: int) -> None:
        pass

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
        sleepy = self.uses_sleep
        bounded = self.bounded
        # nodes that try every runnable CPU (the others add CPUs as races
        # are found, or follow wakeup trees)
        every = self.reduction in ("none", "sleep") or bounded
        prefix = self.prefix
        frontier = self.frontier
        run_state = _Run()

        cache = self._cache
        cache_any = self._cache_any
        fresh = self.branch_event if self.branch_event is not None else 0

        def catch_up(sim: Simulation, j: int) -> None:
            """Look at the events since the last call."""
            events = sim.events
            st = run_state
            sleep = st.sleep
            hit = False
            for k in range(st.seen, j):
                ev = events[k]
                t = ev[0]
                if sleep:
                    acc = (ev[2], ev[3])
                    extra = st.extra
                    sacc = _stable_acc(acc) if extra else acc
                    for q in [q for q, a in sleep.items()
                              if q == t or _dependent(a, acc)
                              or (q in extra and _dependent(extra[q], sacc))]:
                        del sleep[q]
                        extra.pop(q, None)
                if st.follow is not None and k != st.skip:
                    # a step where only one CPU could run: the tree's
                    # branches of other CPUs are infeasible here
                    kids = st.follow
                    nxt = next((x for x in kids if x.tid == t), None)
                    if nxt is None or nxt is not kids[0]:
                        self.tree_misses += 1
                    st.follow = (nxt.kids or None) if nxt is not None else None
                if bounded:
                    # every state the run passes is cached; one an
                    # equivalent prefix reached with no more preemptions was
                    # explored from there (its whole subtree, by DFS)
                    self._hash_event(st, t, ev[2], ev[3])
                    state = (st.h1, st.h2)
                    key = (st.h1, st.h2, t)
                    p = sim.preemptions
                    if self._explored(cache, cache_any, key, p):
                        if k >= fresh:
                            hit = True
                    else:
                        if cache.get(key, p + 1) > p:
                            cache[key] = p
                        if cache_any.get(state, p + 1) > p:
                            cache_any[state] = p
            st.seen = j
            if hit:
                self.blocked += 1
                sim.abandon()

        def choose(sim: Simulation, prev: CPU | None, run: list[CPU]) -> CPU:
            j = len(sim.events)
            st = run_state
            if st.seen < j:
                if st.sleep or st.follow is not None or bounded:
                    catch_up(sim, j)
                else:
                    st.seen = j  # nothing to track in the replayed prefix
            cpus = sim.cpu_list
            if len(run) == 1:
                # only called while the sleep set is not empty (watch)
                only = run[0]
                if only.id in st.sleep:
                    self.blocked += 1
                    sim.abandon()
                sim.watch = st.sleep
                return only
            c = len(sim.choices)
            enabled = sim.enabled[-1]
            if c < len(stack):
                node = stack[c]
                if node.j != j or node.enabled != enabled:
                    sim.fail(NondeterminismError(
                        f"DFS replay diverged at step {j}: expected CPUs {node.enabled} "
                        f"runnable at event {node.j}, found {enabled} (is the scenario "
                        f"deterministic?)"))
                if c == branch and sleepy:
                    # entering the new branch: what was explored here sleeps
                    st.sleep = {q: (cpus[q].pending[1], cpus[q].pending[2])
                                for q in node.sleep}
                    st.extra = {q: x for q, x in node.extra.items() if q in node.sleep}
                    st.follow = node.follow
                    node.follow = None
                    st.skip = j
                    sim.watch = st.sleep
                return cpus[node.chosen]
            # a new choice point beyond the replayed prefix
            sleep = st.sleep
            pick: CPU | None = None
            siblings: list[_Wu] = []
            if c < len(prefix):
                # below a split point: the parent process chose this CPU
                want = prefix[c]
                pick = next((x for x in run if x.id == want), None)
                if pick is None:
                    sim.fail(NondeterminismError(
                        f"DFS prefix diverged at step {j} (choice {c}): cpu{want} is not "
                        f"runnable, only {', '.join(x.title for x in run)} (is the scenario "
                        f"deterministic?)"))
                    raise AssertionError  # unreachable: fail() unwinds
                if c == len(prefix) - 1 and self.split_sleep is not None:
                    # a unit's branch: what the single DFS explored at this
                    # node before it sleeps, and its wakeup subtree is followed
                    st.sleep = sleep = {q: (cpus[q].pending[1], cpus[q].pending[2])
                                        for q in self.split_sleep}
                    st.extra = {q: x for q, x in self.split_extra.items() if q in sleep}
                    st.follow = self.split_follow or None
                    st.skip = j
            elif st.follow:
                kids = st.follow
                st.follow = None
                feasible = [k for k in kids if k.tid in enabled and k.tid not in sleep]
                if feasible:
                    kid = feasible[0]
                    pick = cpus[kid.tid]
                    siblings = feasible[1:]
                    st.follow = kid.kids or None
                    st.skip = j
                if len(feasible) < len(kids):
                    # A branch of the tree whose CPU cannot run here: a
                    # wake-up condition that needs more than the one waker
                    # the race analysis knows of (a grace period waits for
                    # every reader) made its sequence infeasible.  What it
                    # stood for is covered the source-DPOR way: every CPU
                    # that can run here gets a branch of its own.
                    self.tree_misses += 1
                    have = {k.tid for k in feasible}
                    for q in enabled:
                        if q not in have and q not in sleep:
                            if pick is None:
                                pick = cpus[q]
                                st.skip = j
                            else:
                                siblings.append(_Wu(q, (cpus[q].pending[1], cpus[q].pending[2]),
                                                    self._gen))
                            have.add(q)
            if pick is None:
                if prev is not None and prev.state == RUNNABLE and prev.id not in sleep:
                    pick = prev
                else:
                    pick = next((x for x in run if x.id not in sleep), None)
                    if pick is None:
                        # every CPU that can run is asleep: nothing new here
                        self.blocked += 1
                        sim.abandon()
                        raise AssertionError  # unreachable: abandon() unwinds
            prev_id = sim.events[-1][0] if sim.events else None
            node = _Node(j, enabled, pick.id, prev_id, sim.preemptions)
            if bounded and c >= len(prefix) and (frontier is None or c < frontier):
                # the states the other branches lead to, so that a branch
                # into an explored state is skipped without running it
                node.after = {q: self._key_after(st, q, cpus[q].pending[1], cpus[q].pending[2])
                              for q in enabled if q != pick.id}
            if sleepy:
                node.sleep = set(sleep)
                if st.extra:
                    node.extra = dict(st.extra)
            node.wut = siblings
            if every and c >= len(prefix) and (frontier is None or c < frontier):
                node.backtrack = set(enabled)
            stack.append(node)
            if sleepy:
                sim.watch = sleep
            return pick

        return choose

    @staticmethod
    def _explored(cache: dict[tuple[int, int, int | None], int],
                  cache_any: dict[tuple[int, int], int],
                  key: tuple[int, int, int], p: int) -> bool:
        """Was the state ``key`` (trace hash, last CPU) explored from, with a
        preemption budget at least what is left after ``p``?

        Reached before with the same last CPU and at most ``p`` preemptions:
        yes.  Reached with another last CPU and at most ``p - 1``: yes too,
        since any continuation costs at most one preemption more after
        another CPU (only its first switch can differ), so the earlier
        visit's budget covered every continuation of this one.
        """
        seen = cache.get(key)
        if seen is not None and seen <= p:
            return True
        any_ = cache_any.get((key[0], key[1]))
        return any_ is not None and any_ + 1 <= p

    @staticmethod
    def _key_after(st: _Run, t: int, reads: tuple[Hashable, ...],
                   writes: tuple[Hashable, ...]) -> tuple[int, int, int]:
        """The cache key of the state after CPU ``t`` runs a step with these
        accesses (what ``_hash_event`` would add), without adding it."""
        n = st.cnt[t] if t < len(st.cnt) else 0
        h = DFS._event_hash(st, t, n, keyed(reads), keyed(writes))
        return ((st.h1 + _mix(h)) & _MASK, (st.h2 + _mix(h ^ 0x5BD1E9955BD1E995)) & _MASK, t)

    @staticmethod
    def _event_hash(st: _Run, t: int, n: int, r: tuple[Hashable, ...],
                    w: tuple[Hashable, ...]) -> int:
        """The hash of CPU ``t``'s ``n``-th step with the events it directly
        depends on (the last writer of what it reads or writes, and the
        readers since of what it writes)."""
        lw = st.last_write
        rs = st.reads_since
        preds: set[tuple[int, int]] = set()
        for o in r:
            x = lw.get(o)
            if x is not None and x[0] != t:
                preds.add(x)
        for o in w:
            x = lw.get(o)
            if x is not None and x[0] != t:
                preds.add(x)
            for y in rs.get(o, ()):
                if y[0] != t:
                    preds.add(y)
        return hash((t, n, tuple(sorted(preds)))) & _MASK

    @staticmethod
    def _hash_event(st: _Run, t: int, reads: tuple[Hashable, ...],
                    writes: tuple[Hashable, ...]) -> None:
        """Add an event to the running hash of the Mazurkiewicz trace: each
        event is named (CPU, n-th step of it) with the events it directly
        depends on; the sum over events does not depend on their order."""
        cnt = st.cnt
        while len(cnt) <= t:
            cnt.append(0)
        n = cnt[t]
        cnt[t] = n + 1
        me = (t, n)
        lw = st.last_write
        rs = st.reads_since
        r = keyed(reads)
        w = keyed(writes)
        h = DFS._event_hash(st, t, n, r, w)
        st.h1 = (st.h1 + _mix(h)) & _MASK
        st.h2 = (st.h2 + _mix(h ^ 0x5BD1E9955BD1E995)) & _MASK
        for o in w:
            lw[o] = me
            rs.pop(o, None)
        for o in r:
            if o not in w:
                rs.setdefault(o, []).append(me)

    # ----------------------------------------------------------- afterwards

    def end(self, sim: Simulation) -> None:
        n = len(sim.choices)
        if len(self.stack) > n:
            # the execution stopped early (a failure, or abandoned): drop
            # the nodes it never reached; they belong to no real execution
            del self.stack[n:]
        if self.log is not None and self.top is None:
            # a parallel unit's first execution: the coordinator's nodes below
            # the unit's branch, as a single DFS would have created them
            self.top = [(nd.j, nd.enabled, nd.chosen, nd.prev, nd.preempts, sorted(nd.sleep),
                         tuple(w.to_wire() for w in nd.wut), dict(nd.extra),
                         self._step_extra(nd.j, nd.chosen, sim))
                        for nd in self.stack[len(self.prefix):self.frozen]]
            if self.prefix and len(self.stack) >= len(self.prefix):
                nd = self.stack[len(self.prefix) - 1]
                self.branch_extra = self._step_extra(nd.j, nd.chosen, sim)
        if self.log is not None:
            # a unit may hand the rest of its subtree back (``rest``), which
            # tells what each chosen step of this execution touched
            self._last_sim = sim
        if self.reduction in ("source", "dpor") and not self.bounded:
            self._analyse(sim)
        elif not sim.abandoned:
            self._traces.add(self._trace_key(sim))
        self._advance(sim)
        self._gen += 1
        self._since_save += 1
        if self.checkpoint and (self.exhausted or self._since_save >= self.checkpoint_every):
            self.save_checkpoint()

    def _trace_key(self, sim: Simulation) -> tuple[int, int, int]:
        st = _Run()
        for ev in sim.events:
            self._hash_event(st, ev[0], ev[2], ev[3])
        return (len(sim.events), st.h1, st.h2)

    def _advance(self, sim: Simulation) -> None:
        """Move to the deepest choice point with something left to explore."""
        stack = self.stack
        bound = self.max_preemptions
        fixed = max(len(self.prefix), self.frozen)
        frontier = self.frontier
        sleepy = self.uses_sleep
        optimal = self.reduction == "dpor" and not self.bounded
        while stack:
            node = stack[-1]
            idx = len(stack) - 1
            if idx < fixed or (frontier is not None and idx >= frontier):
                stack.pop()
                continue
            if optimal:
                while node.wut and node.wut[0].tid not in node.enabled:
                    self.tree_misses += 1  # cannot be taken here (see choose)
                    node.wut.pop(0)
                if node.wut:
                    self._to_sleep(node, sim)
                    kid = node.wut.pop(0)
                    node.chosen = kid.tid
                    node.follow = kid.kids or None
                    self.branch = idx
                    self.branch_event = node.j
                    return
                stack.pop()
                continue
            cache = self._cache
            cache_any = self._cache_any
            for q in sorted(node.backtrack - node.done):
                node.done.add(q)
                if sleepy and q in node.sleep:
                    continue
                cost = node.preempts + node.is_preemption(q)
                if bound is not None and cost > bound:
                    continue
                if node.after is not None:
                    if self._explored(cache, cache_any, node.after[q], cost):
                        # q's step leads to a state an equivalent prefix
                        # reached with no more preemptions: explored there
                        self.skipped += 1
                        continue
                if sleepy:
                    self._to_sleep(node, sim)
                node.chosen = q
                self.branch = idx
                self.branch_event = node.j
                return
            stack.pop()
        self.exhausted = True
        self.branch = -1

    @staticmethod
    def _to_sleep(node: _Node, sim: Simulation) -> None:
        """The branch explored at ``node`` is done: its CPU sleeps there.
        The step it ran there (event ``node.j`` of the execution that just
        ended) may have touched more than it declared: the later branches
        must wake it on those objects too, compared by stable names since
        each execution builds its objects afresh."""
        node.sleep.add(node.chosen)
        x = DFS._step_extra(node.j, node.chosen, sim)
        if x is not None:
            node.extra[node.chosen] = x

    @staticmethod
    def _step_extra(j: int, q: int, sim: Simulation) -> Acc | None:
        """What a sleeping CPU ``q``, whose step at event ``j`` of ``sim``
        was explored, must be woken by besides its declared accesses."""
        if sim.failure is not None and not sim.deadlocked and sim.failure_step - 1 == j:
            # Its step there failed and ended that execution, so nothing was
            # explored after it: "this step first, then whatever is
            # independent of it" was never run, and a sleep set must not
            # claim it.  It sleeps only until the next step (as if that
            # step conflicted with everything), which keeps the branch of
            # the same failure from being run twice at this node.
            return _RESTORED
        more = sim.touched.get(j)
        if more is not None and j < len(sim.events) and sim.events[j][0] == q:
            return _stable_acc(more)
        return None

    # --------------------------------------------------------- race analysis

    def _analyse(self, sim: Simulation) -> None:
        """Find the races of the execution and schedule their reversals.

        Vector clocks over the declared (and touched) accesses give the
        happens-before order.  A race is a pair of conflicting events of two
        CPUs, the first immediately before the second (no third event
        between them in happens-before), where the second could have run
        first.  Only races whose second event is new in this execution are
        reversed: the others were seen by the execution that created them.
        The events before the branch are those of the previous execution:
        their clocks (and their part of the trace hash) are kept from it.
        """
        events = sim.events
        ops = sim.ops
        stack = self.stack
        node_at = {n.j: n for n in stack}
        fixed = max(len(self.prefix), self.frozen)
        frontier = self.frontier
        logging = self.log is not None
        allowed = {n.j for k, n in enumerate(stack)
                   if (k >= fixed or logging) and (frontier is None or k < frontier)}
        # a parallel unit: the coordinator's nodes, by event index
        logged = {stack[k].j: k for k in range(min(fixed, len(stack)))} if logging else {}
        self._ids = {}
        self._names = []
        self._by_name = {}
        self._ambiguous = False
        first_new = self.branch_event if self.branch_event is not None else 0
        if self.reduction == "dpor":
            # Optimal DPOR reverses every race of every execution, old ones
            # too: a reversal runs to the end of the execution (_reversal),
            # so a race seen before gives a new sequence when the steps
            # after it changed.  Skipping it lost a trace whose only
            # reversal was an old race's with the new steps after it
            # (tests/engine/test_dpor.py, OLD_RACE_NEW_TAIL).  Source-DPOR
            # adds only initials of the steps up to j: new races suffice.
            first_new = 0
        nthreads = len(sim.cpu_list)
        # kept from the previous execution: the common prefix's clocks
        clocks = self._clocks
        local = self._local
        hsum = self._hsum
        keep = min(first_new, len(clocks), len(events))
        if nthreads != self._nthreads:
            keep = 0
            self._nthreads = nthreads
        del clocks[keep:], local[keep:], hsum[keep:]
        zero = [0] * nthreads
        thread_clock = [zero] * nthreads
        thread_events: list[list[int]] = [[] for _ in range(nthreads)]
        last_write: dict[Hashable, int] = {}
        reads_since: dict[Hashable, dict[int, int]] = {}
        for j in range(keep):
            ev = events[j]
            t = ev[0]
            thread_clock[t] = clocks[j]
            thread_events[t].append(j)
            try:
                _note_accesses(last_write, reads_since, t, j, ev[2], ev[3])
            except TypeError:
                _note_accesses(last_write, reads_since, t, j, keyed(ev[2]), keyed(ev[3]))
        h1, h2 = hsum[keep - 1] if keep else (0, 0)
        optimal = self.reduction == "dpor"
        races: list[tuple[int, int, list[int]]] = []
        for j in range(keep, len(events)):
            ev = events[j]
            t = ev[0]
            reads = ev[2]
            writes = ev[3]
            prev_c = thread_clock[t]
            try:
                cands = _candidates(last_write, reads_since, events, t, reads, writes)
            except TypeError:
                reads, writes = keyed(reads), keyed(writes)
                cands = _candidates(last_write, reads_since, events, t, reads, writes)
            op = ops[j] if j < len(ops) else None
            normal = cands
            partners: tuple[int, ...] = ()
            if op is not None:
                if op[0] == "woken":
                    normal = [i for i in cands if i != op[1]]
                elif op[0] == ACQUIRE:
                    lock = op[1]
                    partners = op[2]
                    normal = [i for i in cands if not (ops[i] is not None and ops[i][1] is lock)]
            c = prev_c[:]
            c[t] += 1
            race_c = c
            if partners:
                for i in normal:
                    c = list(map(max, c, clocks[i]))
                race_c = c
            for i in cands:
                c = list(map(max, c, clocks[i]))
            if j >= first_new and cands:
                for i in set(normal):
                    if i not in allowed:
                        continue  # one CPU could run there, or another worker's
                    ti = events[i][0]
                    li = local[i]
                    if prev_c[ti] >= li:
                        continue
                    if any(k != i and clocks[k][ti] >= li for k in cands):
                        continue
                    races.append((i, j, c))
            if j >= first_new:
                for p in partners:
                    if p < 0 or p not in allowed or events[p][0] == t:
                        continue
                    if race_c[events[p][0]] >= local[p]:
                        continue  # ordered before j by more than the lock
                    races.append((p, j, c))
            lj = c[t]
            clocks.append(c)
            local.append(lj)
            thread_clock[t] = c
            thread_events[t].append(j)
            _note_accesses(last_write, reads_since, t, j, reads, writes)
            # the trace hash: the event (CPU, n-th step) and the events it
            # directly depends on; a sum, so the order of events is irrelevant.
            # Each term is mixed before it is summed: the sum of the raw
            # tuple hashes collided (three_on_one(3): 1,661 "traces" for
            # 1,680 distinct ones, tests/engine/test_dpor.py).
            if not cands:
                deps: tuple[tuple[int, int], ...] = ()
            elif len(cands) == 1:
                i = cands[0]
                deps = ((events[i][0], local[i]),)
            else:
                deps = tuple(sorted({(events[i][0], local[i]) for i in cands}))
            h = hash((t, lj, deps))
            h1 = (h1 + _mix(h & _MASK)) & _MASK
            h2 = (h2 + _mix((h ^ 0x5BD1E9955BD1E995) & _MASK)) & _MASK
            hsum.append((h1, h2))
        if not sim.abandoned:
            self._traces.add((len(events), h1, h2))
        # The CPUs that had not finished when the execution stopped: one
        # still waiting for a lock would have taken it had it come before
        # the holder; one that could run would have run its next step.
        j = len(events)
        failed = (sim.failure_step - 1 if sim.failure is not None and not sim.deadlocked
                  and 0 < sim.failure_step <= j else None)
        virtual: list[tuple[int, Acc]] = []
        unfinished = {cpu.id: (cpu.pending[1], cpu.pending[2]) for cpu, _s in sim.unfinished}
        for cpu, state in sim.unfinished:
            t = cpu.id
            acc: Acc = (cpu.pending[1], cpu.pending[2])
            c = thread_clock[t][:]
            c[t] += 1
            if cpu.lock_wait is not None:
                lock, mode = cpu.lock_wait
                p = lock.race_partner(mode)
                if p >= 0 and p in allowed and events[p][0] != t and c[events[p][0]] < local[p]:
                    races.append((p, j + len(virtual), c))
                    virtual.append((t, acc))
                if state != RUNNABLE or failed is None:
                    continue
                # it could take the lock now; its other races are those of
                # any acquisition (with the partner, above), but the step
                # that failed may have hidden what it does next (below)
                cands = []
            elif state != RUNNABLE:
                continue  # waits for a wake-up: could not have run earlier
            else:
                try:
                    cands = _candidates(last_write, reads_since, events, t, acc[0], acc[1])
                except TypeError:
                    cands = _candidates(last_write, reads_since, events, t, keyed(acc[0]),
                                        keyed(acc[1]))
            if failed is not None and events[failed][0] != t:
                # A CPU failed in its step ``failed``: what this CPU would do
                # next is unknown (it may conflict with anything before the
                # failure), so its next step counts as dependent on it.
                cands.append(failed)
            # its clock had it run now (the initials of a reversal need it)
            full = c
            for k in cands:
                full = list(map(max, full, clocks[k]))
            found = False
            for i in set(cands):
                if i not in allowed:
                    continue
                ti = events[i][0]
                li = local[i]
                if c[ti] >= li or any(k != i and clocks[k][ti] >= li for k in cands):
                    continue
                if not found:
                    virtual.append((t, acc))
                    found = True
                races.append((i, j + len(virtual) - 1, full))
        for i, jj, cj in races:
            node = node_at.get(i)
            if node is None:
                continue
            if jj < j:
                tj, accj = events[jj][0], (events[jj][2], events[jj][3])
            else:
                tj, accj = virtual[jj - j]
            if optimal:
                at = logged.get(i)
                if at is not None:
                    # the coordinator's node: it inserts, in single-DFS order
                    idx = self._notdep(i, jj, events, clocks, local)
                    v = [_Step(events[k][0], (events[k][2], events[k][3])) for k in idx]
                    v.append(_Step(tj, accj))
                    pidx = self._pending_idx(node, thread_events, unfinished, nthreads)
                    pend = {q: (events[k][2], events[k][3]) if k >= 0 else unfinished[-1 - k]
                            for q, k in pidx.items()}
                    if at < len(self.split_above):
                        # A CPU asleep at that node covers it: the
                        # coordinator would drop it too (the same test,
                        # ``insert_sequence``), since a node's sleep set
                        # only grows and a sleeper's extra never changes.
                        # 43% of the logged reversals on
                        # migrate:fault-vs-migration, all pickled and
                        # replayed for nothing before.
                        sleep, extra = self.split_above[at]
                        if sleep_covers(sleep, extra, v, pend):
                            continue
                    idx.append(jj if jj < j else -1 - tj)
                    self._log_reversal(at, idx, pidx, events, unfinished,
                                       v[0].tid in node.enabled)
                    continue
                pend = self._pending_at(node, events, thread_events, unfinished)
                self._insert_reversal(node, i, jj, tj, accj, events, clocks, local, pend)
            else:
                self._source_backtrack(node, i, jj, tj, cj, events, clocks, local,
                                       thread_events, nthreads)

    @staticmethod
    def _pending_at(node: _Node, events: list[Any], thread_events: list[list[int]],
                    unfinished: dict[int, Acc]) -> dict[int, Acc]:
        """The pending step of each CPU asleep or in the wakeup tree at
        ``node``, in this execution: its first step from the node on (or the
        step it was about to run when the execution stopped)."""
        out: dict[int, Acc] = {}
        want = set(node.sleep)
        want.update(k.tid for k in node.wut)
        for q in want:
            evs = thread_events[q] if q < len(thread_events) else []
            k = bisect.bisect_left(evs, node.j)
            if k < len(evs):
                ev = events[evs[k]]
                out[q] = (ev[2], ev[3])
            elif q in unfinished:
                out[q] = unfinished[q]
        return out

    def _insert_reversal(self, node: _Node, i: int, j: int, tj: int, accj: Acc,
                         events: list[Any], clocks: list[list[int]], local: list[int],
                         pend: dict[int, Acc]) -> None:
        """Optimal DPOR: insert notdep(i).j into the wakeup tree of the node
        before i, unless a sleeping CPU or a branch of the tree covers it."""
        v = self._reversal(i, j, tj, accj, events, clocks, local)
        self.tree_misses += insert_sequence(node, v, self._gen, pend)

    @staticmethod
    def _reversal(i: int, j: int, tj: int, accj: Acc, events: list[Any],
                  clocks: list[list[int]], local: list[int]) -> list[_Step]:
        """notdep(i).j: the events after i that do not happen after it, then
        j (the sequence that reverses the race of i and j).  notdep runs to
        the end of the execution, not only to j (Abdulla et al., JACM 2017):
        the steps after j that are independent of i belong to the reversed
        trace too.  Cut at j, a CPU asleep at i's node whose step commutes
        with the short sequence "covers" it, though the trace to reach puts
        that CPU's step after one of those later steps: the reversal was
        dropped and the trace never run (tests/engine/test_dpor.py,
        NOTDEP_TO_THE_END)."""
        v: list[_Step] = []
        for k in DFS._notdep(i, j, events, clocks, local):
            ev = events[k]
            v.append(_Step(ev[0], (ev[2], ev[3])))
        v.append(_Step(tj, accj))
        return v

    @staticmethod
    def _notdep(i: int, j: int, events: list[Any], clocks: list[list[int]],
                local: list[int]) -> list[int]:
        """The events of notdep(i) but j (see ``_reversal``), by index."""
        ti = events[i][0]
        li = local[i]
        return [k for k in range(i + 1, len(events)) if k != j and clocks[k][ti] < li]

    @staticmethod
    def _pending_idx(node: _Node, thread_events: list[list[int]], unfinished: dict[int, Acc],
                     nthreads: int) -> dict[int, int]:
        """``_pending_at`` for every CPU, as event indexes (-1 - CPU: the
        step an unfinished CPU was about to run)."""
        out: dict[int, int] = {}
        for q in range(nthreads):
            evs = thread_events[q]
            k = bisect.bisect_left(evs, node.j)
            if k < len(evs):
                out[q] = evs[k]
            elif q in unfinished:
                out[q] = -1 - q
        return out

    def _log_reversal(self, k: int, idx: list[int], pend: dict[int, int], events: list[Any],
                      unfinished: dict[int, Acc], startable: bool) -> None:
        """A parallel unit: record the reversal made of steps ``idx`` (event
        indexes, -1 - CPU for an unfinished CPU's next step) for the
        coordinator's node ``k``, with each CPU's pending step there.
        Each step is described once per execution in ``log_steps``: its
        accessed objects as numbers (the same object, the same number,
        within this execution) next to their stable names, so that another
        process compares the steps exactly as this one would.

        A reversal that repeats the last one logged for the same node, step
        for step by stable names (pending steps included), is left out: the
        coordinator would find it covered by what that one left in the
        node's wakeup tree (or sleep set), with nothing inserted there in
        between.  Most reversals of a unit's executions are such repeats of
        the previous execution's (87% on migrate:fault-vs-migration).  Only
        when no two objects of either execution share a stable name, so that
        comparing by name is comparing by identity, as the coordinator does
        within one execution; and only when the reversal's first CPU can
        run at the node (else the coordinator counts a tree miss for each).
        """
        ids = self._ids
        names = self._names
        by_name = self._by_name
        steps = self.log_steps.get(self._gen)
        if steps is None:
            steps = self.log_steps[self._gen] = {}

        def num(objs: tuple[Any, ...]) -> tuple[int, ...]:
            out = []
            for o, key in zip(objs, keyed(objs)):
                n = ids.get(key)
                if n is None:
                    n = ids[key] = len(names)
                    name = _stable(o)  # each object named once
                    names.append(name)
                    if by_name.setdefault(name, n) != n:
                        self._ambiguous = True
                out.append(n)
            return tuple(out)

        for e in (*idx, *pend.values()):
            if e not in steps:
                if e >= 0:
                    ev = events[e]
                    t, r, w = ev[0], ev[2], ev[3]
                else:
                    t = -1 - e
                    r, w = unfinished[t]
                nr, nw = num(r), num(w)
                steps[e] = (t, (nr, nw), (tuple([names[n] for n in nr]),
                                          tuple([names[n] for n in nw])))
        assert self.log is not None
        if not self._ambiguous:
            same = (tuple([(steps[e][0], steps[e][2]) for e in idx]),
                    tuple([(q, steps[e][2]) for q, e in sorted(pend.items())]))
            if startable and self._last_logged.get(k) == same:
                return
            self._last_logged[k] = same
        else:
            self._last_logged.pop(k, None)
        self.log.append((k, self._gen, tuple(idx), pend))

    def _source_backtrack(self, node: _Node, i: int, j: int, t: int, cj: list[int],
                          events: list[Any], clocks: list[list[int]], local: list[int],
                          thread_events: list[list[int]], nthreads: int) -> None:
        """Source-DPOR: make sure some initial of notdep(i).j is in the
        backtrack set of the node before i."""
        ti = events[i][0]
        li = local[i]
        n = len(events)

        def first_in_v(q: int) -> int | None:
            """q's first event in v = notdep(i).j, or None."""
            evs = thread_events[q]
            lo, hi = 0, len(evs)
            while lo < hi:
                mid = (lo + hi) // 2
                if evs[mid] <= i:
                    lo = mid + 1
                else:
                    hi = mid
            k = lo
            if q == t:
                cand = evs[k] if k < len(evs) and evs[k] < min(j, n) else j
            elif k < len(evs) and evs[k] < min(j, n):
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
                if r == q or f is None or f >= k:
                    continue
                if ck[r] >= local[f]:
                    ok = False
                    break
            if ok:
                initials.append(q)
        cand_set = [q for q in initials if q in node.enabled]
        if not cand_set:
            return
        if not (set(cand_set) & node.backtrack):
            q = t if t in cand_set else min(cand_set)
            node.backtrack.add(q)

    def logged_steps(self) -> dict[int, dict[int, tuple[int, Acc, Acc]]]:
        """``log_steps`` without the steps only left-out reversals used."""
        assert self.log is not None
        used: dict[int, set[int]] = {}
        for _k, g, idx, pend in self.log:
            u = used.setdefault(g, set())
            u.update(idx)
            u.update(pend.values())
        return {g: {e: x for e, x in self.log_steps[g].items() if e in u}
                for g, u in used.items()}

    def can_cede(self) -> bool:
        """A parallel unit, between executions: does a wakeup-tree branch
        wait in its own part of the stack besides the one it takes next?
        (Work stealing hands ``rest`` back only then: the coordinator gets
        a branch to give to an idle worker.)"""
        if self.exhausted:
            return False
        return any(nd.wut for nd in self.stack[len(self.prefix):self.branch + 1])

    def rest(self) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
        """What is left of a parallel unit's subtree, for the coordinator:
        its stack from the unit's branch down to the node whose next branch
        it was about to take (after ``end``), as plain data, and that
        branch's wakeup subtree.  Wakeup-tree steps go as stable names: a
        later execution compares them by nothing else."""
        nodes = self.stack[len(self.prefix):self.branch + 1]
        follow = self.stack[self.branch].follow or []
        last = self._last_sim
        assert last is not None
        # the last node's chosen CPU is the branch about to be taken: what
        # its step touches is known only once it has run
        return ([(nd.j, nd.enabled, nd.chosen, nd.prev, nd.preempts, sorted(nd.sleep),
                  tuple(w.to_wire() for w in nd.wut), dict(nd.extra),
                  self._step_extra(nd.j, nd.chosen, last) if k < len(nodes) - 1 else None)
                 for k, nd in enumerate(nodes)],
                tuple(w.to_wire() for w in follow))

    # ----------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> None:
        if not self.checkpoint:
            return
        data = {"format": "mmemu-dfs-2", "identity": self.identity,
                "max_preemptions": self.max_preemptions, "reduction": self.reduction,
                "exhausted": self.exhausted, "branch": self.branch,
                "branch_event": self.branch_event,
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
        if data.get("format") != "mmemu-dfs-2":
            raise ModelError(f"{self.checkpoint} is not an mmemu DFS checkpoint")
        if data.get("identity") != self.identity or data.get("reduction") != self.reduction \
                or data.get("max_preemptions") != self.max_preemptions:
            raise ModelError(
                f"DFS checkpoint {self.checkpoint} was saved for another exploration "
                f"({data.get('identity')}, reduction={data.get('reduction')}, "
                f"max_preemptions={data.get('max_preemptions')})")
        self.stack = [_node_from_json(n) for n in data["stack"]]
        self.branch = data["branch"]
        self.branch_event = data.get("branch_event")
        self.exhausted = bool(data["exhausted"])
        self.resumed_executions = int(data.get("executions", 0))
