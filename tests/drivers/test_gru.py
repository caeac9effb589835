"""The SGI GRU driver: every driver suite passes exhaustively with it, its
two mutants are caught with short reports naming "gru" and the page, and the
interleavings of its protocol comment happen when forced."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
import mmemu.cli
from mmemu.drivers.gru import GRU_MMUOPS, NO_DROPIN_DROP, NO_RANGE_ACTIVE, GruDriver, GruMmStruct
from mmemu.driver import Driver, available_drivers, load_driver
from mmemu.engine import all_scenarios, get_scenario
from mmemu.testing import force

# driver suites of the 2.6.27 generation (modern-only ones, e.g.
# notifier:oom-reap-vs-fault, have no api=None value and do not take GRU)
DRIVER_SUITES = [s.name for s in all_scenarios()
                 if "driver" in s.axes and None in list(s.axes.get("api", [None]))]
# the notifier:* ones run exhaustively here; the main job (tests/cli) runs
# every suite with every driver
NOTIFIER_SUITES = [n for n in DRIVER_SUITES if n.startswith("notifier:")]
GRU = {"driver": "gru"}
VA = "0x10000000"  # the guest vma of the notifier suites


def dfs2() -> mmemu.DFS:
    return mmemu.DFS(max_preemptions=2)


def labels(outcome: mmemu.Outcome, cpu_name: str) -> list[str]:
    tr = outcome.trace
    return [e.label for e in tr.events if tr.cpu_name(e.cpu) == cpu_name]


# ------------------------------------------------------------ installation


def test_gru_is_installed_and_every_driver_suite_takes_it() -> None:
    assert "gru" in available_drivers()
    assert load_driver("gru") is GruDriver
    assert issubclass(GruDriver, Driver)
    assert len(DRIVER_SUITES) >= 6
    # GRU answers neither ->test_young nor ->change_pte: the suites of those
    # callbacks are not for it
    lacks = {"aging:scan-vs-zap", "ksm:change-pte-vs-guest-fault"}
    for name in DRIVER_SUITES:
        drivers = {c.get("driver") for c in get_scenario(name).combinations()}
        assert ("gru" in drivers) == (name not in lacks), name


def test_gru_runs_in_both_generations_with_the_ops_table_of_each() -> None:
    assert GruDriver.apis == ("2.6.27", "modern")
    d = GruDriver()
    assert d.name == "gru" and d.key_name == "va"
    # the 2.6.27 ops table: no young bits, no change_pte
    assert d.mn.ops.invalidate_page is not None and d.mn.ops.release is not None
    assert d.mn.ops.invalidate_range_start is not None
    assert d.mn.ops.invalidate_range_end is not None
    assert d.mn.ops.clear_flush_young is None and d.mn.ops.change_pte is None
    # today's gru_mmuops: range start/end and alloc/free_notifier, nothing else
    ops = GRU_MMUOPS
    assert ops.invalidate_range_start is not None and ops.invalidate_range_end is not None
    assert ops.alloc_notifier is not None and ops.free_notifier is not None
    assert ops.release is None and ops.invalidate_page is None and ops.change_pte is None
    assert GruDriver.no_release_apis == ("modern",)
    assert {"driver": "gru", "api": "modern"} not in \
        get_scenario("notifier:exit-vs-reclaim").combinations()


def test_protocol_comment_names_every_step_label() -> None:
    import mmemu.drivers.gru as gru
    doc = gru.__doc__ or ""
    assert doc.splitlines()[2].startswith("Emulates: drivers/misc/sgi-gru/grutlbpurge.c")
    assert "(2.6.27)" in doc and "mmu_notifier_get_locked" in doc and "v5.4" in doc
    assert "There are 3 critical interleavings that matter:" in doc and "Harmless:" in doc
    for step in ("D0.", "D1.", "D2.", "D3.", "D4.", "D5.", "S1.", "S2.", "E1.", "E2.", "P.", "R."):
        assert step in doc, step
    for name in ("gru_try_dropin", "gru_flush_tlb_range", "ms_range_active", "ms_wait_queue",
                 NO_RANGE_ACTIVE, NO_DROPIN_DROP):
        assert name in doc, name


# ------------------------------------------------------- the correct model


@pytest.mark.parametrize("suite", NOTIFIER_SUITES)
def test_suite_passes_exhaustively_with_gru(suite: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params=GRU)
    assert res.failure is None, res.failure.report()
    assert res.exhausted
    assert res.executions > 1


def test_a_dropin_installs_a_translation_the_device_uses() -> None:
    """Sanity: the correct model really drops entries in."""
    from mmemu.races import notifier

    seen: list[Any] = []

    async def scenario(sim: Any) -> None:
        g = await notifier.guest(sim, kind="shared")
        async with sim.cpus() as cpus:
            cpus.start(notifier.guest_fault, g, name="gru")
        d = g.driver
        assert isinstance(d, GruDriver)
        seen.append((d.tlb.lookup(g.addr), g.page, d.ms_range_active.counter))

    res = mmemu.explore(scenario, strategy=dfs2(), params=GRU)
    assert res.failure is None
    assert seen and seen[-1][0] is seen[-1][1] and seen[-1][2] == 0


def test_after_release_no_dropin_is_accepted() -> None:
    """R: exit_mmap's ->release flushes the TLB and marks the mm; a dropin
    afterwards fails (-EFAULT) without reading the page table."""
    from mmemu.mm.mmap import exit_mmap
    from mmemu.races import notifier

    results: list[Any] = []

    async def scenario(sim: Any) -> None:
        g = await notifier.guest(sim, kind="shared")
        assert await g.driver.fault(g.addr, False)  # setup: one entry in
        assert g.driver.tlb.keys() == [g.addr]

        async def fault_after_exit() -> None:
            await exit_mmap(g.mm)
            results.append(await g.driver.fault(g.addr, False))

        async with sim.cpus() as cpus:
            cpus.start(fault_after_exit, name="exit")
        d = g.driver
        assert isinstance(d, GruDriver)
        results.append((d.ms_released, d.tlb.keys()))

    res = mmemu.explore(scenario, strategy=dfs2(), params=GRU)
    assert res.failure is None, res.failure.report()
    assert results == [False, (1, [])]


# ----------------------------------------------------- forced interleavings


def test_hardware_drops_a_dropin_that_a_flush_overtook() -> None:
    """D3 reads the pte, reclaim clears it and P flushes, D5 comes after P:
    the hardware ignores the dropin, the CB misses again, and the retry
    faults a fresh page in."""
    order = [("gru", "D3. find_vma; atomic_pte_lookup"),
             ("kswapd", f"P. gru_flush_tlb_range({VA}, PAGE_SIZE)"),
             ("gru", f"D5. tfh_write_restart(va {VA} -> page0)")]
    out = force("notifier:reclaim-vs-fault", order, params=GRU)
    assert out.failure is None, out.failure.report()
    g = labels(out, "gru")
    assert g.count("D1. read the TFH (missvaddr 0x10000000); ms_released?") == 2
    assert len([x for x in g if x.startswith("D5.")]) == 2
    # the retry finds the pte cleared and faults a fresh page in (D4)
    assert g.index("D4. non_atomic_pte_lookup: put_page(page0)") > g.index(order[2][1])

    bad = force("notifier:reclaim-vs-fault", order, params=GRU, mutants=[NO_DROPIN_DROP])
    assert bad.failure is not None
    assert bad.failure.kind in ("SecondaryUseAfterFree", "FreedPageStillMapped")
    assert "gru va 0x10000000" in bad.failure.message


def test_range_active_refuses_the_dropin_until_range_end() -> None:
    """D2 between S1 and E1: refused; the user path sleeps at D0 until E2,
    then finds the page truncated (-EFAULT): nothing is dropped in."""
    d0 = "D0. wait_event(ms_wait_queue, ms_range_active == 0)"
    order = [("gru", d0),
             ("truncate", "S1. atomic_inc(ms_range_active)"),
             ("gru", "D2. atomic_read(ms_range_active)"),
             ("gru", d0),  # failactive: back to D0, which sleeps
             ("truncate", "E2. wake_up_all(ms_wait_queue)")]
    out = force("notifier:truncate-vs-fault", order, params=GRU)
    assert out.failure is None, out.failure.report()
    g = labels(out, "gru")
    assert g.count(d0) == 2 and f"{d0} woken" in g
    assert not any(x.startswith("D5.") for x in g)


def test_no_range_active_drops_in_between_the_flush_and_the_zap() -> None:
    order = [("gru", "D0. wait_event(ms_wait_queue, ms_range_active == 0)"),
             ("truncate", f"S2. gru_flush_tlb_range({VA}, 0x1000)"),
             ("gru", "D1. read the TFH (missvaddr 0x10000000); ms_released?"),
             ("gru", f"D5. tfh_write_restart(va {VA} -> page0)"),
             ("truncate", "zap_pte_range: pte_unmap_unlock")]
    out = force("notifier:truncate-vs-fault", order, params=GRU, mutants=[NO_RANGE_ACTIVE])
    assert out.failure is not None and out.failure.kind == "FreedPageStillMapped"
    assert "while gru va 0x10000000 still maps it" in out.failure.message
    # the correct driver cannot follow that order: D2 sees S1 and waits
    with pytest.raises(mmemu.testing.InterleavingError):
        force("notifier:truncate-vs-fault", order, params=GRU)


# ------------------------------------------------------------------ mutants


MUTANTS = [
    # (suite, mutant, kind)
    ("notifier:truncate-vs-fault", NO_RANGE_ACTIVE, "FreedPageStillMapped"),
    ("notifier:truncate-vs-fault", NO_DROPIN_DROP, "SecondaryUseAfterFree"),
    ("notifier:reclaim-vs-fault", NO_DROPIN_DROP, "SecondaryUseAfterFree"),
    ("notifier:migrate-vs-fault", NO_DROPIN_DROP, "SecondaryUseAfterFree"),
]


@pytest.mark.parametrize("suite,mutant,kind", MUTANTS)
def test_mutant_caught_with_a_short_report(suite: str, mutant: str, kind: str) -> None:
    assert mutant in get_scenario(suite).catches
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params=GRU,
                        mutants=[mutant])
    f = res.failure
    assert f is not None, f"{mutant} not caught by {suite}"
    assert f.kind == kind, f.report()
    assert f.preemptions <= 2
    tail = "\n".join(f.report().split("replay with:")[0].strip().splitlines()[-8:])
    assert "gru va 0x10000000" in tail  # the driver and its key
    assert "page0" in tail or "page pfn=0" in tail  # the page
    out = mmemu.replay(None, f.schedule)  # the token carries driver and mutant
    assert out.failure is not None and out.failure.kind == kind


@pytest.mark.parametrize("mutant", [NO_RANGE_ACTIVE, NO_DROPIN_DROP])
def test_munmap_holds_the_dropin_off_with_mmap_sem(mutant: str) -> None:
    """Why munmap-vs-fault does not claim the GRU mutants: the dropin runs
    under mmap_sem for read (gru_find_lock_gts), munmap's whole range under
    mmap_sem for write, so no dropin overlaps the section."""
    assert mutant not in get_scenario("notifier:munmap-vs-fault").catches
    res = mmemu.explore("notifier:munmap-vs-fault", strategy=dfs2(), executions=100_000,
                        params=GRU, mutants=[mutant])
    assert res.failure is None and res.exhausted


@pytest.mark.parametrize("suite,mutant,kind", MUTANTS[:1] + MUTANTS[2:3])
def test_mutant_caught_through_the_cli(suite: str, mutant: str, kind: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert mmemu.cli.main(["run", suite, "--driver", "gru", "--mutant", mutant]) == 1
    out = capsys.readouterr().out
    assert kind in out and "gru va 0x10000000" in out
    assert mmemu.cli.main(["run", suite, "--driver", "gru"]) == 0


def test_mutant_matrix_runs_the_gru_mutants_with_gru_and_catches_them() -> None:
    """The rows ``mmemu mutants`` prints for the GRU mutants."""
    from mmemu._mutants import Cell, plan, uncaught_mutants

    runs = [(m, sc, p) for m, sc, p in plan(include_correct=False)
            if m in (NO_RANGE_ACTIVE, NO_DROPIN_DROP)]
    assert {m for m, _, _ in runs} == {NO_RANGE_ACTIVE, NO_DROPIN_DROP}
    # a driver's own mutants: that driver only, in both generations
    assert sorted(p.get("api", "2.6.27") for m, _, p in runs if m == NO_RANGE_ACTIVE) == \
        ["2.6.27", "modern"]
    assert all(p["driver"] == "gru" for _, _, p in runs)
    cells = []
    # run the 2.6.27 rows of the notifier suites (the main job runs them all)
    for m, sc, p in [r for r in runs if "api" not in r[2] and r[1].name.startswith("notifier:")]:
        res = mmemu.explore(sc.name, strategy=mmemu.DFS(max_preemptions=sc.max_preemptions),
                            executions=sc.executions, params=p, mutants=[m])
        f = res.failure
        cells.append(Cell(mutant=m, suite=sc.name, params=p, expected_failure=True,
                          kind=f.kind if f else None, executions=res.executions,
                          elapsed_s=res.elapsed_s, exhausted=res.exhausted,
                          schedule=f.schedule if f else None,
                          preemptions=f.preemptions if f else None))
    assert all(c.ok for c in cells), [c.verdict() for c in cells]
    assert not set(uncaught_mutants(cells)) & {NO_RANGE_ACTIVE, NO_DROPIN_DROP}


# ------------------------------------------------------ the modern generation

MODERN = {"driver": "gru", "api": "modern"}


def test_modern_gru_contexts_share_one_refcounted_gms_per_mm() -> None:
    """gru_register_mmu_notifier = mmu_notifier_get_locked: the first context
    allocates the gms, the second finds it; a range invalidation flushes
    both contexts; mmu_notifier_put frees the gms after the last one."""
    from mmemu.check import boot_checked
    from mmemu.mm.memory import fault_in
    from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, do_mmap, do_munmap, mm_alloc
    from mmemu.kernel.locking import down_write, up_write
    from mmemu.mm.mmu_notifier import mmu_notifier_synchronize

    async def scenario(sim: Any) -> None:
        kernel = boot_checked(sim, npages=8, api="modern")
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm.mmap_sem)
        a = vma.vm_start
        await fault_in(mm, a, write=True)
        await fault_in(mm, a + PAGE_SIZE, write=True)
        one, two = GruDriver(), GruDriver()
        assert await one.attach(kernel, mm) == 0 and await two.attach(kernel, mm) == 0
        gms = one.gms
        sim.check(isinstance(gms, GruMmStruct) and two.gms is gms and gms.users == 2,
                  "two contexts of one mm share its gms")
        sim.check(mm.mmu_notifier_mm.list == [gms], "one notifier on the mm")
        assert await one.fault(a, True) and await two.fault(a + PAGE_SIZE, True)
        await down_write(mm.mmap_sem)
        await do_munmap(mm, a, 2 * PAGE_SIZE)
        await up_write(mm.mmap_sem)
        sim.check(not one.tlb.keys() and not two.tlb.keys(), "munmap flushed both contexts")
        await one.detach()
        sim.check(gms.users == 1 and gms.hashed and not gms.freed, "still in use by two")
        await two.detach()
        sim.check(not gms.hashed, "the last put unhashes the gms")
        await mmu_notifier_synchronize()
        sim.check(gms.freed, "gru_free_notifier ran after the grace period")

    res = mmemu.explore(scenario, strategy="dfs", executions=1)
    assert res.failure is None, res.failure.report()


@pytest.mark.parametrize("suite", ["notifier:truncate-vs-fault"])
def test_modern_gru_passes_driver_suites_exhaustively(suite: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params=MODERN)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions > 1


@pytest.mark.parametrize("suite,mutant,kind", MUTANTS[:1])
def test_modern_gru_mutants_are_caught_with_a_short_report(suite: str, mutant: str,
                                                           kind: str) -> None:
    res = mmemu.explore(suite, strategy=dfs2(), executions=100_000, params=MODERN,
                        mutants=[mutant])
    f = res.failure
    assert f is not None and f.kind == kind, f
    assert f.preemptions <= 2 and "gru va 0x10000000" in f.message
