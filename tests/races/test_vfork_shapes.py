"""vfork against the child's exit (fork:vfork-vs-exit in
mmemu/races/vfork_shapes.py): the correct model passes and reaches both
orders of the completion and both last mmputs; the completion is forced
before and after the parent's wait; and each broken step of the protocol
(the completion's count, its wake-up, the wait, copy_mm's mm_users
reference -- made here in process, as the mutation benchmark makes them)
fails within 2 preemptions."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import load_builtin
from mmemu.testing import force

from ._support import assert_caught_in_process, assert_passes_and_reaches, labels

load_builtin()

SUITE = "fork:vfork-vs-exit"
WAIT = "V3. do_fork: wait_for_completion(&vfork)"
COMPLETE = "C2. mm_release: complete(vfork_done)"


def test_the_suite_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(SUITE, critical=2)


def test_the_parent_waits_before_the_child_completes() -> None:
    out = force(SUITE, [("parent", WAIT), ("child", COMPLETE)])
    assert out.failure is None, out.failure.report()
    assert "wait_for_completion(vfork(child)) done" in labels(out, "parent")


def test_the_child_completes_before_the_parent_waits() -> None:
    out = force(SUITE, [("child", COMPLETE), ("parent", WAIT)])
    assert out.failure is None, out.failure.report()
    assert "wait_for_completion(vfork(child)) done" not in labels(out, "parent")


@pytest.mark.parametrize("module,fn_name,edit,kinds", [
    ("mmemu.kernel.locking", "complete", ("c.done += 1", "pass"), "Deadlock"),
    ("mmemu.kernel.locking", "complete", ("wake_all(c)", "pass"), "Deadlock"),
    ("mmemu.kernel.locking", "wait_for_completion", ("while c.done == 0:", "while False:"),
     "VforkParentRanEarly"),
    ("mmemu.mm.mmap", "mmget", ("await atomic_inc(", "(lambda *a, **k: None)("),
     "InvariantViolation"),
], ids=["complete-no-count", "complete-no-wake", "wait-no-wait", "mmget-no-inc"])
def test_a_broken_step_fails(module: str, fn_name: str, edit: tuple[str, str],
                             kinds: str | tuple[str, ...],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    f = assert_caught_in_process(monkeypatch, SUITE, module, fn_name, (edit,),
                                 kinds if isinstance(kinds, tuple) else (kinds,))
    print(f.kind)
