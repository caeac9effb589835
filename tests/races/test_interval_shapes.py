"""Two invalidations in flight against an interval notifier's read_begin
(mmemu/races/interval_shapes.py): the correct model passes and reaches its
goals; the nested order (the mirror reads between the two ends) and the
collision retry are forced; mmu_notifier:itree-end-first is caught within 2
preemptions."""

from __future__ import annotations

import mmemu
from mmemu.engine._registry import get_scenario, load_builtin
from mmemu.testing import force

from ._support import assert_caught, labels

load_builtin()

SUITE = "interval:read-begin-vs-nested-invalidations"
PARAMS = {"api": "modern"}
START = "I1. active_invalidate_ranges++; interval_tree_iter_first"
END = "I3. --active_invalidate_ranges"
READ = "R1. seq = interval_sub->invalidate_seq; is_invalidating?"

# madvise1's range starts inside madvise0's and sets the mirror's seq;
# madvise0 ends first; only then does the mirror's read_begin run.
NESTED = [("madvise0", START), ("madvise1", START), ("madvise1", "B. mmu_interval_set_seq"),
          ("madvise0", END), ("mirror", READ)]


def test_the_suite_passes_and_reaches_its_goals() -> None:
    sc = get_scenario(SUITE)
    res = mmemu.explore(SUITE, strategy=mmemu.DFS(max_preemptions=sc.max_preemptions),
                        executions=10_000, params=PARAMS)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and not res.coverage.unreached, res.coverage.unreached
    assert "critical interleavings that matter" in sc.doc and "Harmless" in sc.doc
    assert sc.bound_reason


def test_read_begin_between_the_two_ends_waits_for_the_last() -> None:
    out = force(SUITE, NESTED, params=PARAMS)
    assert out.failure is None, out.failure.report()
    mirror = labels(out, "mirror")
    assert "R1. wait_event(subscriptions->wq, invalidate_seq != seq)" in mirror
    assert "5. unlock(dmirror->lock)" in mirror  # it then maps the page madvise1 left
    bad = force(SUITE, NESTED, params=PARAMS, mutants=["mmu_notifier:itree-end-first"])
    assert bad.failure is not None and bad.failure.kind == "FreedPageStillMapped", \
        bad.failure and bad.failure.report()


def test_an_invalidation_after_read_begin_makes_the_mirror_retry() -> None:
    out = force(SUITE, [("mirror", READ), ("mirror", "2. hmm_vma_walk_pmd: pte"),
                        ("madvise1", START), ("madvise1", "B. mmu_interval_set_seq"),
                        ("mirror", "3. lock(dmirror->lock)")], params=PARAMS)
    assert out.failure is None, out.failure.report()
    mirror = labels(out, "mirror")
    assert "4. unlock(dmirror->lock) (retry)" in mirror
    # the retry's read_begin finds madvise1 still in flight and waits for it
    assert mirror.count(READ) == 2


def test_ending_at_the_first_range_is_caught() -> None:
    assert_caught(SUITE, "mmu_notifier:itree-end-first", "FreedPageStillMapped", params=PARAMS,
                  bound=1)  # the suite's own bound
