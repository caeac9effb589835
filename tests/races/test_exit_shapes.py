"""exit_mmap against a ->release another caller is still running
(notifier:exit-vs-release-in-flight in mmemu/races/exit_shapes.py): the
correct model passes and reaches both ways the teardown can go; each way is
forced; __mmu_notifier_release without its synchronize_srcu (a source
mutant of benchmarks/mutation.py, made here in process) frees the page the
device still translates, within 2 preemptions."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import load_builtin
from mmemu.testing import force

from ._support import assert_passes_and_reaches, explore, labels

load_builtin()

SUITE = "notifier:exit-vs-release-in-flight"
R1 = "R1. process-table lock: on the table? take it off"
R3 = "R3. zap every translation"


def test_the_suite_passes_and_reaches_its_goals() -> None:
    assert_passes_and_reaches(SUITE, critical=2)


def test_exit_waits_for_the_detach_that_tears_down() -> None:
    out = force(SUITE, [("close", R1), ("exit", R1)])
    assert out.failure is None, out.failure.report()
    assert R3 in labels(out, "close") and R3 not in labels(out, "exit")


def test_exit_tears_down_itself_when_it_comes_first() -> None:
    out = force(SUITE, [("exit", R1), ("close", "1. hlist_unhashed(&mn->hlist)")])
    assert out.failure is None, out.failure.report()
    assert R3 in labels(out, "exit") and R3 not in labels(out, "close")


def test_without_the_grace_period_exit_frees_a_translated_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mmemu.mm import mmu_notifier
    from tests.check.test_pte_vma import _mutant
    fn = mmu_notifier.__mmu_notifier_release
    edit = ('    await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")\n'
            '    await synchronize_srcu(ss)\n',
            '    await spin_unlock(mmn.lock, label="2. spin_unlock(mmu_notifier_mm->lock)")\n')
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    res = explore(SUITE, bound=None)
    f = res.failure
    assert f is not None and f.kind == "FreedPageStillMapped", f and f.report()
    assert f.preemptions <= 2, f.report()
