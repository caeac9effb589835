"""A kernel race suite and the historical bug it catches, from Python.

Run it:  python examples/kernel_race.py

``pagecache:lookup-vs-reclaim`` races a lockless pagecache lookup
(``find_get_page``) against reclaim freeing the page it looks up; the
allocator hands the freed page straight back to another file.  The mutant
``filemap:no-recheck`` drops the lookup's second look at the radix-tree slot
after ``page_cache_get_speculative``: the check that notices the page it
pinned was freed and reused meanwhile.

The script explores the suite with the mutant under DFS with at most two
preemptions (and prints the shrunk report), replays the report's token,
then explores the correct model until its search space is exhausted.  It
exits 0 when all of that behaves as described here, 1 otherwise.

The protocol (include/linux/pagemap.h, mm/filemap.c, mm/vmscan.c, 2.6.27)::

    CPU 0 (find_get_page)                  CPU 1 (reclaim)
    rcu_read_lock
    1. page = radix_tree_lookup(slot)      A. page_freeze_refs(page)
    2. page_cache_get_speculative(page)    B. __remove_from_page_cache
    3. if page != *slot: put, goto 1       C. free the page; it is reused
    rcu_read_unlock                           as file2[1]

There is 1 interleaving that matters:
 - CPU 1's A. B. C. (and the reuse) run between CPU 0's 1. and 2.: the
   speculative get succeeds on the reused page (its count is no longer
   frozen), and only 3. sees that the slot no longer holds it.  Without 3.
   (the mutant) the lookup returns file2's page for file[0]:
   ``WrongPageFromLookup``, with one preemption.
"""

from __future__ import annotations

import sys

import mmemu
from mmemu.engine import get_scenario

SUITE = "pagecache:lookup-vs-reclaim"
MUTANT = "filemap:no-recheck"
PARAMS = {"lookup": "find_get_page"}


def main() -> int:
    ok = True
    suite = get_scenario(SUITE)
    print(f"== {SUITE}: {suite.summary} ==")
    print(f"it must catch: {', '.join(suite.catches)}")
    print()

    print(f"== with the mutant {MUTANT}, explored with DFS(max_preemptions=2) ==")
    broken = mmemu.explore(SUITE, strategy=mmemu.DFS(max_preemptions=2), params=PARAMS,
                           mutants=[MUTANT])
    failure = broken.failure
    if failure is None:
        print("no failure found: the example is broken")
        return 1
    print(failure.report())
    print()
    print(f"found: {failure.kind} after {broken.executions} executions")
    ok &= failure.kind == "WrongPageFromLookup" and failure.preemptions == 1
    print()

    # The suite is registered, so the token alone names it (and the mutant
    # and the parameters): `mmemu replay TOKEN` on the command line does the
    # same as this.
    print("== the token replays the same execution ==")
    again = mmemu.replay(None, failure.schedule)
    same = again.failure is not None and again.failure.report() == failure.report()
    print("replayed: same report" if same else "replayed: DIFFERENT report")
    ok &= same
    print()

    print("== the correct model, explored with DFS(max_preemptions=2) ==")
    correct = mmemu.explore(SUITE, strategy=mmemu.DFS(max_preemptions=2), params=PARAMS,
                            executions=suite.executions)
    print(f"{correct.executions} executions, search space exhausted: {correct.exhausted}, "
          f"failures: {len(correct.failures)}")
    ok &= correct.ok and correct.exhausted

    print()
    print("all as described" if ok else "SOMETHING DIFFERS from the description above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
