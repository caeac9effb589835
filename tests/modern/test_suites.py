"""The HMM mirror, the SVA IOMMU and KVM (both generations) through every
notifier suite they take, the new modern suites, and each mutant caught with
a shrunk report of at most 2 preemptions (also through the CLI)."""

from __future__ import annotations

import pytest

import mmemu
import mmemu.cli
from mmemu.engine import all_scenarios

SAMPLE = "tests/modern/sample_drivers.py"


def dfs2() -> mmemu.DFS:
    return mmemu.DFS(max_preemptions=2)


def _modern_runs() -> list[tuple[str, dict[str, str]]]:
    out = []
    for sc in all_scenarios():
        # the second series (races/notifier_shapes.py) has its own tests in
        # tests/races; the main job explores every combination of it
        if sc.fn.__module__ == "mmemu.races.notifier_shapes":
            continue
        if sc.name.startswith(("notifier:", "interval:")):
            for c in sc.combinations():
                if c.get("api") == "modern":
                    out.append((sc.name, c))
    return out


MODERN_RUNS = _modern_runs()


def test_the_driver_matrix() -> None:
    """Each notifier suite runs every driver under each generation it supports."""
    sc = mmemu.engine.get_scenario("notifier:truncate-vs-fault")
    combos = sc.combinations()
    for d in ("hmm", "sva", "kvm"):
        assert {"api": "modern", "driver": d} in combos
    assert {"driver": "kvm"} in combos  # 2.6.27: the api parameter left at its default
    assert {"driver": "hmm"} not in combos and {"driver": "sva"} not in combos
    oom = mmemu.engine.get_scenario("notifier:oom-reap-vs-fault").combinations()
    assert all(c["api"] == "modern" for c in oom)
    assert {c["driver"] for c in oom} >= {"hmm", "sva", "kvm"}
    assert ("interval:insert-remove-vs-invalidate", {"api": "modern"}) in MODERN_RUNS


@pytest.mark.parametrize("suite,params", MODERN_RUNS,
                         ids=[f"{s}-{p.get('driver', '-')}" for s, p in MODERN_RUNS])
def test_modern_suite_passes_exhaustively(suite: str, params: dict[str, str]) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params=params)
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert res.executions > 1


MUTANTS = [
    # (suite, driver, mutant, kind)
    ("notifier:truncate-vs-fault", "hmm", "hmm:no-retry", "SecondaryUseAfterFree"),
    ("notifier:reclaim-vs-fault", "hmm", "hmm:no-retry", "SecondaryUseAfterFree"),
    ("notifier:munmap-vs-fault", "hmm", "hmm:no-retry", "SecondaryUseAfterFree"),
    ("notifier:oom-reap-vs-fault", "hmm", "hmm:no-retry", "SecondaryUseAfterFree"),
    ("notifier:reclaim-vs-fault", "hmm", "hmm:seq-outside-lock", "FreedPageStillMapped"),
    ("notifier:migrate-vs-fault", "hmm", "hmm:seq-outside-lock", "FreedPageStillMapped"),
    ("notifier:reclaim-vs-fault", "sva", "sva:no-flush", "FreedPageStillMapped"),
    ("notifier:munmap-vs-fault", "sva", "sva:no-flush", "FreedPageStillMapped"),
    ("notifier:oom-reap-vs-fault", "sva", "sva:no-flush", "FreedPageStillMapped"),
    ("notifier:register-vs-truncate", "kvm", "mmu_notifier:register-unlocked",
     "UnbalancedRange"),
    ("notifier:exit-vs-reclaim", "sva", "mmu_notifier:release-after-unhash",
     "FreedPageStillMapped"),
    ("notifier:truncate-vs-fault", "kvm", "kvm:no-count", "FreedPageStillMapped"),
    ("interval:insert-remove-vs-invalidate", None, "mmu_notifier:interval-no-defer",
     "FreedPageStillMapped"),
    ("interval:insert-remove-vs-invalidate", None, "mmu_notifier:interval-remove-nowait",
     "NotifierUseAfterFree"),
]


@pytest.mark.parametrize("suite,driver,mutant,kind", MUTANTS)
def test_mutant_caught_with_a_short_report(suite: str, driver: str | None, mutant: str,
                                           kind: str) -> None:
    params = {"api": "modern"} | ({"driver": driver} if driver else {})
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params=params,
                        mutants=[mutant])
    f = res.failure
    assert f is not None, f"{mutant} not caught by {suite}"
    assert f.kind == kind, f.report()
    assert f.preemptions <= 2
    assert mutant in mmemu.engine.get_scenario(suite).catches
    if driver in ("hmm", "sva"):
        assert f"{driver} va 0x10000000" in f.report()


@pytest.mark.parametrize("suite,mutant,kind", [
    ("notifier:reclaim-vs-fault", "hmm:no-retry", "SecondaryUseAfterFree"),
    ("notifier:reclaim-vs-fault", "hmm:seq-outside-lock", "FreedPageStillMapped"),
    ("notifier:reclaim-vs-fault", "sva:no-flush", "FreedPageStillMapped"),
    ("interval:insert-remove-vs-invalidate", "mmu_notifier:interval-remove-nowait",
     "NotifierUseAfterFree"),
])
def test_mutant_caught_through_the_cli(suite: str, mutant: str, kind: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert mmemu.cli.main(["run", suite, "--mutant", mutant]) == 1
    assert kind in capsys.readouterr().out
    assert mmemu.cli.main(["run", suite, "--api", "modern"]) == 0


def test_cli_api_option(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    assert mmemu.cli.main(["run", "notifier:munmap-vs-fault", "--api", "modern",
                           "--driver", "hmm", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [r["params"] for r in rows] == [{"api": "modern", "driver": "hmm"}]
    assert mmemu.cli.main(["run", "notifier:munmap-vs-fault", "--api", "modern", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {r["params"]["driver"] for r in rows} == {"gru", "hmm", "kvm", "sva"}
    assert all(r["params"]["api"] == "modern" for r in rows)
    # hmm is modern-only: nothing to run under 2.6.27
    assert mmemu.cli.main(["run", "notifier:munmap-vs-fault", "--api", "2.6.27",
                           "--driver", "hmm"]) == 2
    assert mmemu.cli.main(["run", "notifier:munmap-vs-fault", "--api", "2.5"]) == 2


def test_kvm_passes_both_generations_of_every_notifier_suite() -> None:
    for sc in all_scenarios():
        if not sc.name.startswith("notifier:"):
            continue
        for c in sc.combinations():
            if c.get("driver") != "kvm":
                continue
            res = mmemu.explore(sc.name, strategy=dfs2(), executions=100_000, params=c)
            assert res.failure is None, res.failure.report()
            assert res.exhausted, (sc.name, c)


def test_a_callback_that_sleeps_in_the_oom_reapers_range_is_reported() -> None:
    drv = f"{SAMPLE}:SleepingKvm"
    res = mmemu.explore("notifier:oom-reap-vs-fault", strategy=dfs2(), executions=100_000,
                        params={"api": "modern", "driver": drv})
    f = res.failure
    assert f is not None and f.kind == "SleepingWhileAtomic", f and f.report()
    assert "non-blockable" in f.message and "mutex_lock(sleepy->lock)" in f.message
    assert f.preemptions == 0
    # the same driver is fine where ranges are blockable
    res = mmemu.explore("notifier:munmap-vs-fault", strategy=dfs2(), executions=100_000,
                        params={"api": "modern", "driver": drv})
    assert res.failure is None, res.failure.report()


def test_hmm_gives_up_a_nonblockable_range_instead_of_waiting() -> None:
    """The reaper's start fails with -EAGAIN while the mirror holds its lock:
    some execution takes that path (the vma is skipped, no range_end)."""
    import mmemu.drivers.hmm as hmm
    seen: list[bool] = []
    orig = hmm.HmmMirror.invalidate

    async def spy(self, sub, range, cur_seq):  # type: ignore[no-untyped-def]
        ok = await orig(self, sub, range, cur_seq)
        seen.append(ok)
        return ok

    hmm.HmmMirror.invalidate = spy  # type: ignore[method-assign]
    try:
        res = mmemu.explore("notifier:oom-reap-vs-fault", strategy=dfs2(), executions=100_000,
                            params={"api": "modern", "driver": "hmm"})
    finally:
        hmm.HmmMirror.invalidate = orig  # type: ignore[method-assign]
    assert res.failure is None and res.exhausted
    assert False in seen and True in seen
