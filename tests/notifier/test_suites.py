"""Every notifier suite with the KVM driver: passes exhaustively under
DFS(max_preemptions=2) on the correct model, and catches each mutant with a
shrunk report of at most 2 preemptions that names the driver and the page."""

from __future__ import annotations

import pytest

import mmemu
import mmemu.cli

NOTIFIER_SUITES = [
    "notifier:register-vs-truncate", "notifier:truncate-vs-fault",
    "notifier:reclaim-vs-fault", "notifier:munmap-vs-fault",
    "notifier:migrate-vs-fault", "notifier:exit-vs-reclaim",
]


def dfs2() -> mmemu.DFS:
    return mmemu.DFS(max_preemptions=2)


@pytest.mark.parametrize("suite", NOTIFIER_SUITES)
def test_suite_passes_exhaustively_with_kvm(suite: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params={"driver": "kvm"})
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert res.executions > 1


MUTANTS = [
    # (suite, mutant, kind)
    ("notifier:truncate-vs-fault", "kvm:no-retry", "FreedPageStillMapped"),
    ("notifier:truncate-vs-fault", "kvm:no-count", "FreedPageStillMapped"),
    ("notifier:munmap-vs-fault", "kvm:no-count", "FreedPageStillMapped"),
    ("notifier:munmap-vs-fault", "kvm:no-retry", "FreedPageStillMapped"),
    # kvm:seq-outside-lock: the lockset checker reports the unlocked write
    # first, its consequence is checked without it in tests/check/test_lockset.py
    ("notifier:reclaim-vs-fault", "kvm:no-retry", "IncoherentTranslation"),
    ("notifier:exit-vs-reclaim", "mmu_notifier:release-after-unhash", "FreedPageStillMapped"),
]


@pytest.mark.parametrize("suite,mutant,kind", MUTANTS)
def test_mutant_caught_with_a_short_report(suite: str, mutant: str, kind: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params={"driver": "kvm"},
                        mutants=[mutant])
    f = res.failure
    assert f is not None, f"{mutant} not caught by {suite}"
    assert f.kind == kind, f.report()
    assert f.preemptions <= 2
    assert suite in mmemu.engine.get_scenario(suite).name
    assert mutant in mmemu.engine.get_scenario(suite).catches
    tail = f.report().split("replay with:")[0].strip().splitlines()[-8:]
    text = "\n".join(tail)
    assert "kvm gfn 0" in text  # the driver and its key
    assert "page0" in text or "page1" in text or "page pfn=" in text  # the page


def _without_the_notifier_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel-side UnbalancedRange (mmemu.check.notifier) reports the seed
    race first, for any driver; without it, what the drivers themselves see."""
    import mmemu.check
    monkeypatch.setattr(mmemu.check, "INSTALLERS",
                        [i for i in mmemu.check.INSTALLERS if "check.notifier" not in i])


def test_register_unlocked_is_an_unbalanced_range_for_every_driver() -> None:
    for driver in ("kvm", "gru"):
        res = mmemu.explore("notifier:register-vs-truncate", strategy=dfs2(),
                            executions=100_000, params={"driver": driver},
                            mutants=["mmu_notifier:register-unlocked"])
        f = res.failure
        assert f is not None and f.kind == "UnbalancedRange", driver
        assert f.preemptions <= 2
        assert "without its ->invalidate_range_start" in f.message


def test_register_unlocked_is_caught_by_kvm_bug_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """KVM's range_end BUG_ON(mmu_notifier_count < 0) fires on the seed race:
    the end of a section whose start the notifier never saw."""
    _without_the_notifier_checker(monkeypatch)
    res = mmemu.explore("notifier:register-vs-truncate", strategy=dfs2(), executions=100_000,
                        params={"driver": "kvm"}, mutants=["mmu_notifier:register-unlocked"])
    f = res.failure
    assert f is not None and f.kind == "KvmBug"
    assert f.preemptions <= 2
    assert "mmu_notifier_count < 0" in f.message and "kvm" in f.message


def test_register_unlocked_frees_a_page_under_a_driver_without_bug_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _without_the_notifier_checker(monkeypatch)
    sample = "tests/drivers/sample_drivers.py:SeqDriver"
    res = mmemu.explore("notifier:register-vs-truncate", strategy=dfs2(), executions=100_000,
                        params={"driver": sample}, mutants=["mmu_notifier:register-unlocked"])
    f = res.failure
    assert f is not None and f.kind == "FreedPageStillMapped"
    assert f.preemptions <= 2
    assert "driver seqdev" in f.message and "page 1" in f.message


@pytest.mark.parametrize("suite,mutant,kind", MUTANTS[:1] + MUTANTS[4:5] + MUTANTS[-1:] + [
    ("notifier:register-vs-truncate", "mmu_notifier:register-unlocked", "UnbalancedRange")])
def test_mutant_caught_through_the_cli(suite: str, mutant: str, kind: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert mmemu.cli.main(["run", suite, "--mutant", mutant]) == 1
    assert kind in capsys.readouterr().out


def test_shadow_tlb_sees_the_guest_translation() -> None:
    """Sanity: the correct model really installs translations in these suites."""
    from mmemu.races import notifier

    installed = []

    async def scenario(sim: object) -> None:
        g = await notifier.guest(sim, kind="shared")
        async with sim.cpus() as cpus:  # type: ignore[attr-defined]
            cpus.start(notifier.guest_fault, g, name="kvm")
        installed.append(g.driver.tlb.lookup(0))

    res = mmemu.explore(scenario, strategy=dfs2(), params={"driver": "kvm"})
    assert res.failure is None
    assert installed and installed[0] is not None and installed[0].pfn == 0
