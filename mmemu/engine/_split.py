"""An optimal-DPOR search split over workers, exactly (the coordinator's part).

A single DFS with wakeup trees (``_dpor.DFS``, reduction ``"dpor"``) is a
sequence of *segments*: each starts where the search takes a branch of a
node's wakeup tree and explores the subtree below it.  The coordinator
keeps the nodes of the single DFS's stack that are not inside a running
unit (the *top* nodes) and hands each branch taken at a top node to a
worker as a *unit*: the worker follows the prefix of choices down to the
branch, enters it exactly as the single DFS would (the CPUs explored there
before it sleep; its wakeup subtree is followed), and explores below it.
What the single DFS would have done above the branch meanwhile comes back
as plain data:

- ``log``: every race reversal the unit's executions found for a top node,
  in the order the single DFS would have inserted them.  Accessed objects
  are numbered per execution, next to their stable names, so the
  coordinator compares steps exactly as the inserting execution would
  (``_dpor.insert_sequence``, the same code): same execution, the objects;
  another, the pending step or the stable names (as ``_dpor._insert``);
- ``rest``: a unit that stops early hands back the rest of its subtree
  (``DFS.rest``): its stack down to the branch it was about to take, with
  sleep sets and wakeup trees (their steps as stable names, all a later
  execution compares them by).  The coordinator adopts those nodes as top
  nodes and takes that branch next, and the branches waiting in them can
  go to idle workers.  A unit stops early when the coordinator asks it to
  (work stealing: a worker is idle and nothing waits in the top nodes; see
  ``_parallel._SplitRun``) or, on a backend that cannot ask (Dask), after
  ``UNIT_EXECUTIONS`` executions;
- ``top``: top nodes a unit's first execution created above its own part
  (none when units own everything below their branch, as here; kept for
  a split at a fixed depth).

The coordinator applies the units in single-DFS order and so builds the
very wakeup trees and sleep sets the single DFS builds; the units are the
single DFS's executions, cut into pieces.  Parallelism comes from
*speculation*: while the unit in order runs, the branches still waiting in
the top nodes' wakeup trees are handed to idle workers as they stand now.
A speculative unit is used only if, when its turn comes, the single DFS
would start it with the same description (prefix, sleep set, wakeup
subtree); a unit inserted into meanwhile (a race reversal merged into its
subtree) is discarded and run again.  So the result (executions, abandoned
executions, traces, exhaustion, the first failure in DFS order) is the
single DFS's for any number of workers; only the time and the discarded
work vary.  tests/parallel/test_split.py checks it on random programs with
locks and branches, with units finishing in a scrambled order.

Not carried between units: state an exploration keeps across executions
(lockdep's lock-order graph, ``Simulation.exploration``).  Each unit starts
it afresh, so a failure that needs an edge learnt in an earlier execution
can be found later, or not at all, by a split search; the executions are
the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._dpor import _Node, _Step, insert_sequence, wu_from_wire

#: a unit's description: (node index, prefix of choices ending with the
#: branch's CPU, CPUs asleep at the branch, wakeup subtree (wire form),
#: event index of the branch's choice point, what the sleepers' steps touched
#: beyond their declared accesses (``_Node.extra``, as (CPU, accesses)
#: pairs)).  Hashable: equal descriptions explore the same executions.
UnitKey = tuple[int, tuple[int, ...], tuple[int, ...], tuple[Any, ...], int,
                tuple[tuple[int, Any], ...]]


def _extras(node: _Node, sleep: Sequence[int]) -> tuple[tuple[int, Any], ...]:
    return tuple((q, node.extra[q]) for q in sleep if q in node.extra)


def _node(d: Sequence[Any]) -> _Node:
    """A top node described by a unit (``DFS.top``, ``DFS.rest``)."""
    j, enabled, chosen, prev, preempts, sleep, wut, extra, chosen_extra = d
    node = _Node(j, tuple(enabled), chosen, prev, preempts)
    node.sleep = set(sleep)
    node.wut = [wu_from_wire(w) for w in wut]
    node.extra = dict(extra)
    node.chosen_extra = chosen_extra
    return node


class SplitSearch:
    """The top of a single DFS's stack, rebuilt from the units' results."""

    def __init__(self) -> None:
        self.top: list[_Node] = []
        self.started = False
        self.exhausted = False
        #: wakeup-tree steps that could not start where inserted (must stay 0)
        self.tree_misses = 0
        self._gens = 0
        #: a unit that handed back the rest of its subtree: the branch it
        #: was about to take, which comes next in single-DFS order
        self._resume: UnitKey | None = None

    def next_unit(self) -> UnitKey | None:
        """The next unit in single-DFS order (the tree moves on to it), or
        None when the search is exhausted."""
        if not self.started:
            self.started = True
            return (-1, (), (), (), 0, ())
        if self._resume is not None:
            key, self._resume = self._resume, None
            return key
        top = self.top
        while top:
            node = top[-1]
            if node.wut:
                # as DFS._advance: the branch explored here sleeps, the next
                # branch of the wakeup tree is taken
                node.sleep.add(node.chosen)
                if node.chosen_extra is not None:
                    node.extra[node.chosen] = node.chosen_extra
                kid = node.wut.pop(0)
                node.chosen = kid.tid
                node.chosen_extra = None  # known once this unit reports
                sleep = tuple(sorted(node.sleep))
                return (len(top) - 1, tuple(n.chosen for n in top), sleep,
                        tuple(k.to_wire() for k in kid.kids), node.j, _extras(node, sleep))
            top.pop()
        self.exhausted = True
        return None

    def upcoming(self, limit: int) -> list[UnitKey]:
        """Up to ``limit`` units after the current one, in single-DFS order,
        described as they stand now (for speculation).  The units the
        current one will add below itself come first in truth; they are not
        known yet."""
        out: list[UnitKey] = []
        path = tuple(n.chosen for n in self.top)
        for idx in range(len(self.top) - 1, -1, -1):
            node = self.top[idx]
            sleep = set(node.sleep)
            sleep.add(node.chosen)
            # what the branches before each kid touched is known only for
            # the current one: a guess that turns out wrong is run again
            extra = dict(node.extra)
            if node.chosen_extra is not None:
                extra[node.chosen] = node.chosen_extra
            for kid in node.wut:
                if len(out) >= limit:
                    return out
                s = tuple(sorted(sleep))
                out.append((idx, path[:idx] + (kid.tid,), s,
                            tuple(k.to_wire() for k in kid.kids), node.j,
                            tuple((q, extra[q]) for q in s if q in extra)))
                sleep.add(kid.tid)
        return out

    def above(self, key: UnitKey) -> list[tuple[list[int], list[tuple[int, Any]]]]:
        """What unit ``key`` may know of the top nodes on its prefix: per
        node, the CPUs asleep there and their extras (``DFS.split_above``).
        Enough to leave out the reversals a sleeping CPU covers, and exact
        whenever the unit is committed: a top node above the unit's branch
        changes its sleep set only once everything below its chosen branch
        is done, and the branch's own node is described by the key."""
        k, _prefix, sleep, _follow, _j, extra = key
        out: list[tuple[list[int], list[tuple[int, Any]]]] = []
        for node in self.top[:max(k, 0)]:
            s = sorted(node.sleep)
            out.append((s, [(q, node.extra[q]) for q in s if q in node.extra]))
        if k >= 0:
            out.append((list(sleep), list(extra)))
        return out

    def commit(self, key: UnitKey, top: Sequence[Any], log: Sequence[Any],
               rest: Sequence[Any] | None, branch_extra: Any = None,
               log_steps: dict[int, dict[int, tuple[int, Any, Any]]] | None = None) -> None:
        """Apply the result of unit ``key`` (the current one): the top nodes
        its first execution created, its logged reversals in order (their
        steps described in ``log_steps``, see ``DFS.log_steps``), and
        ``rest``, the rest of its subtree if it stopped early (its stack
        down to the branch it was about to take, which the coordinator
        adopts: see ``DFS.rest``)."""
        k = key[0]
        del self.top[k + 1:]
        if k >= 0:
            self.top[k].chosen_extra = branch_extra
        for d in top:
            self.top.append(_node(d))
        gens: dict[int, int] = {}
        described = log_steps or {}
        made: dict[int, dict[int, _Step]] = {}
        for idx, g, steps, pend in log:
            gen = gens.get(g)
            if gen is None:
                # a fresh execution number: its steps are compared by their
                # object numbers with each other only
                self._gens += 1
                gen = gens[g] = self._gens
                made[g] = {}
            mine = made[g]
            table = described[g]
            node = self.top[idx]
            v = []
            for e in steps:
                st = mine.get(e)
                if st is None:
                    tid, acc, sacc = table[e]
                    st = mine[e] = _Step(tid, acc)
                    st._sacc = sacc
                v.append(st)
            # the pending steps DFS._pending_at would have given
            want = set(node.sleep)
            want.update(w.tid for w in node.wut)
            self.tree_misses += insert_sequence(
                node, v, gen, {q: table[e][1] for q, e in pend.items() if q in want})
        if rest is not None:
            nodes, follow = rest
            for d in nodes:
                self.top.append(_node(d))
            last = self.top[-1]
            sleep = tuple(sorted(last.sleep))
            self._resume = (len(self.top) - 1, tuple(n.chosen for n in self.top),
                            sleep, tuple(follow), last.j, _extras(last, sleep))


def unit_strategy(spec: dict[str, Any], key: UnitKey,
                  above: Sequence[Any] = ()) -> dict[str, Any]:
    """The strategy description of unit ``key`` (see ``_parallel._make``);
    ``above``: ``SplitSearch.above(key)``."""
    k, prefix, sleep, follow, j, extra = key
    return dict(spec, split={"prefix": list(prefix), "sleep": list(sleep) if k >= 0 else None,
                             "follow": follow, "frozen": len(prefix),
                             "j": j if k >= 0 else None, "extra": list(extra),
                             "above": list(above)})
