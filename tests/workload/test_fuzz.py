"""The fuzzer: deterministic from its seed, workload shrinking, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmemu.workload import parse_workload
from mmemu.workload._fuzz import Plan, explore_plan, fuzz
from mmemu.workload._generate import GenSettings, generate
from mmemu.workload._shrink import candidates, shrink_workload

ROOT = Path(__file__).resolve().parents[2]
FIX = "tests/workload/fixtures.py:"
SMALL = Plan(pct_executions=30, pct_depth=3, dfs_executions=40, dfs_preemptions=None,
             bounded_executions=0)


def test_generation_is_a_function_of_seed_and_index_in_any_process() -> None:
    settings = GenSettings(drivers=("kvm", "gru", "hmm", "sva"))
    here = [str(generate(7, i, settings)) for i in range(6)]
    assert here == [str(generate(7, i, settings)) for i in range(6)]
    assert len(set(here)) == 6
    code = ("from mmemu.workload._generate import GenSettings, generate\n"
            "s = GenSettings(drivers=('kvm', 'gru', 'hmm', 'sva'))\n"
            "print('\\n'.join(str(generate(7, i, s)) for i in range(6)))\n")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout.splitlines()
    assert out == here
    for text in here:  # every drawn workload is valid text
        assert str(parse_workload(text)) == text


def test_the_generator_draws_every_operation() -> None:
    from mmemu.workload import OPERATIONS

    settings = GenSettings(drivers=("kvm", "gru", "hmm", "sva"))
    drawn = {op.name for i in range(600) for ops in generate(0, i, settings).cpus
             for op in ops}
    assert drawn == set(OPERATIONS), set(OPERATIONS) - drawn


def test_duels_enumerate_every_cell_once_per_round_each_side_first_in_turn() -> None:
    """Every (API, user, kernel path, page kind) duel comes once in each
    round of the duel workloads (four in six), whatever the seed; every
    kernel path comes once before any comes twice (and each of its page
    kinds once before any twice); the
    user's CPU goes first in one round and second in the next."""
    from mmemu.workload._generate import duel_cells, duel_number, duel_of

    settings = GenSettings(drivers=("kvm",), api="2.6.27")
    cells = duel_cells(settings)
    assert len(cells) > 50
    movers = {c.mover for c in cells}
    assert len(movers) > 10
    assert [duel_number(i) for i in range(7)] == [None, 0, None, 1, 2, 3, None]
    for seed in (0, 1):
        rounds: list[list[tuple[object, bool]]] = [[], []]
        i = 0
        while len(rounds[1]) < len(cells):
            d, k = duel_of(seed, i, settings), duel_number(i)
            assert (d is None) == (i % 6 in (0, 2)) == (k is None)
            if d is not None and k is not None:
                rounds[k // len(cells)].append(d)
            i += 1
        for got in rounds:
            duels = [d[0] for d in got]
            assert sorted(map(repr, duels)) == sorted(map(repr, cells))
            # every kernel path before any twice; a path's page kinds each
            # once before any twice
            assert {c.mover for c in duels[:len(movers)]} == movers  # type: ignore[attr-defined]
            for m in movers:
                mine = [(c.api, c.kind) for c in duels if c.mover == m]  # type: ignore[attr-defined]
                assert len(set(mine[:len(set(mine))])) == len(set(mine))
        first = [{repr(d[0]): d[1] for d in got} for got in rounds]
        assert all(first[0][k] != first[1][k] for k in first[0])
    # the drawn workload is that cell's: its vma's kind, and both operations
    i = 1
    cell, user_first = duel_of(3, i, settings)  # type: ignore[misc]
    wl = generate(3, i, settings)
    assert wl.vmas[0][0].lower() == cell.kind
    (user_ops, mover_ops) = (wl.cpus[0], wl.cpus[1]) if user_first else (wl.cpus[1], wl.cpus[0])
    assert cell.user in {o.name for o in user_ops}
    assert cell.mover in {o.name for o in mover_ops}


def test_fuzz_is_deterministic_from_its_seed_in_one_process_or_two() -> None:
    """The same seed finds the same workload, shrinks it to the same minimal
    one and gives the same token, whether one process explores the
    workloads or two worker processes do."""
    # seed 13: workload #2 is the first to fail (two workers explore #0..#3)
    kw = {"seed": 13, "workloads": 4, "cpus": 2, "ops": 3, "mutants": ["kvm:no-retry"],
          "plan": SMALL}
    one = fuzz(["kvm"], **kw)  # type: ignore[arg-type]
    two = fuzz(["kvm"], jobs=2, **kw)  # type: ignore[arg-type]
    assert one.failure is not None and two.failure is not None
    assert one.index == two.index == 2
    assert str(one.original) == str(two.original)
    assert str(one.workload) == str(two.workload)
    assert one.failure.schedule == two.failure.schedule
    assert one.workload is not None and one.original is not None
    assert one.workload.size() < one.original.size()


def test_ctrl_c_keeps_what_was_found() -> None:
    """A stop request once the failing workload was found (during the
    workload shrink) keeps the failure: the workload as drawn is reported."""
    calls = {"n": 0}
    found = {"at": None}

    def progress(p) -> None:  # type: ignore[no-untyped-def]
        if p.phase == "shrinking" and found["at"] is None:
            found["at"] = calls["n"]

    def should_stop() -> bool:
        calls["n"] += 1
        return found["at"] is not None

    res = fuzz(["kvm"], seed=2, workloads=3, mutants=["kvm:no-retry"], plan=SMALL,
               progress=progress, should_stop=should_stop)
    assert res.interrupted
    assert res.failure is not None  # found before the stop, reported as drawn
    assert res.workload == res.original and res.index is not None


def test_dask_gives_the_same_workload() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        there = fuzz(["kvm"], seed=2, workloads=3, mutants=["kvm:no-retry"], plan=SMALL,
                     shrink=False, dask=client)
    assert there.failure is not None and there.index is not None
    here = generate(2, there.index, GenSettings(drivers=("kvm",)))
    assert str(there.original) == str(here)


def test_fuzz_without_failure_reports_what_it_reached() -> None:
    res = fuzz(["kvm"], seed=0, workloads=2, plan=Plan(pct_executions=10, bounded_executions=0,
                                                    dfs_executions=0))
    assert res.ok and res.workloads == 2 and res.executions == 20
    assert res.reached.get("event:workload: fault", 0) > 0
    assert res.reached.get("callback:kvm->invalidate_range_start", 0) > 0, res.reached


def test_shrinking_a_failing_workload_gives_a_smaller_failing_one() -> None:
    big = parse_workload("drivers=kvm vmas=a2,s1; cpu0: access(2) fault(0,w) access(0); "
                         "cpu1: munmap(0-1); cpu2: cpufault(2,r)")

    def fails(wl):  # type: ignore[no-untyped-def]
        found, _n, _i = explore_plan(wl, SMALL, 11, mutants=("kvm:no-count",))
        return found is not None and found.kind == "FreedPageStillMapped"

    assert fails(big)
    small, tries = shrink_workload(big, fails)
    assert small.size() < big.size()
    assert len(small.cpus) == 2 and small.ops == 2, str(small)
    assert fails(small)
    assert tries > 0


def test_shrink_candidates_renumber_cpus_drivers_and_pages() -> None:
    wl = parse_workload("drivers=kvm,gru vmas=a2,s2; cpu0: d1.fault(3,w) signal(2); "
                        "cpu1: munmap(1-2); cpu2: exit")
    texts = [str(c) for c in candidates(wl)]
    # drop cpu1: the signal to cpu2 now goes to cpu1
    assert "drivers=kvm,gru vmas=a2,s2; cpu0: d1.fault(3,w) signal(1); cpu1: exit" in texts
    # drop driver 0: d1 becomes d0
    assert ("drivers=gru vmas=a2,s2; cpu0: fault(3,w) signal(2); cpu1: munmap(1-2); "
            "cpu2: exit") in texts
    # drop the anonymous vma: pages move down, the range is clipped
    assert "drivers=kvm,gru vmas=s2; cpu0: d1.fault(1,w) signal(2); cpu1: munmap(0); " \
           "cpu2: exit" in texts


def test_fuzz_shrinks_to_the_minimal_workload_and_reports_it() -> None:
    res = fuzz([FIX + "PinCacheDriver"], seed=11, workloads=2, plan=SMALL)
    assert res.failure is not None and res.workload is not None and res.original is not None
    # the side cache's stale pfn: a translation to a page the pte no
    # longer maps, or writable where the pte is read-only
    assert res.failure.kind in ("IncoherentTranslation", "SecondaryWriteToReadOnly")
    assert res.workload.size() < res.original.size()
    assert len(res.workload.cpus) == 2 and res.workload.ops == 2
    text = res.report()
    assert str(res.workload) in text and "mmemu replay mm1." in text


def _mmemu(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmemu", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def test_cli_fuzz_finds_prints_and_replays() -> None:
    # two CPUs of two operations at most: a small workload to shrink
    proc = _mmemu("fuzz", "--driver", "kvm", "--mutant", "kvm:no-retry", "--workloads", "2",
                  "--seed", "1", "--cpus", "2", "--ops", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # reclaim swaps the page out and a read fault swaps it in read-only
    # under a device write fault that does not retry: the device keeps a
    # writable translation
    assert "fuzz: workload #1" in proc.stdout and "SecondaryWriteToReadOnly" in proc.stdout
    token = proc.stdout.split("mmemu replay ", 1)[1].split()[0]
    again = _mmemu("replay", token)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "SecondaryWriteToReadOnly" in again.stdout


@pytest.mark.parametrize("args, words", [
    (["fuzz", "--cpus", "0"], "--cpus"),
    (["fuzz", "--time", "5", "--workloads", "2"], "not both"),
    (["fuzz", "--driver", "nosuch"], "unknown driver 'nosuch'"),
    (["fuzz", "--api", "2.6.27", "--driver", "hmm"], "API 2.6.27"),
    (["run", "--workload", "cpu0: fault(0,w) acess(0)"], "'acess'"),
    (["run", "--workload", "cpu0: fault(0,w)", "pagecache:*"], "give no suite"),
    (["run", "--workload", "cpu0: insert(0-1)", "--api", "modern"], "has no insert"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                              args: list[str], words: str) -> None:
    from mmemu.cli import main

    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err


def test_cli_run_workload_explores_it(capsys: pytest.CaptureFixture[str]) -> None:
    from mmemu.cli import main

    code = main(["run", "--workload", "vmas=a1; cpu0: fault(0,w) access(0); cpu1: munmap(0)",
                 "--driver", "kvm", "--executions", "50"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "workload:run" in out


def test_cli_fuzz_ctrl_c_ends_the_run_and_reports() -> None:
    """SIGINT (Ctrl-C) during `mmemu fuzz`: the run ends between two
    executions, prints what it reached, says it was interrupted, exit 130."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mmemu", "fuzz", "--driver", "kvm",
                             "--time", "300"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("fuzzing kvm, for 300s"), first
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=120)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "interrupted after" in err and "reached in" in out
    assert waited < 60, waited
