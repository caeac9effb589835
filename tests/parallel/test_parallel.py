"""explore_parallel: jobs, DFS splitting, shards and merge, Dask, Ctrl-C.

The promise under test: the same seed reports the same failure (the same
token, after shrinking) whatever the number of workers, the sharding or the
backend; a DFS split over workers with reduction "none" runs exactly the
executions of one DFS.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import mmemu
from benchmarks import dpor_programs as bp
from mmemu.cli import main
from mmemu.engine import DFS, ModelError, all_scenarios
from mmemu.parallel import explore_parallel, merge_results

REGISTERED = {s.name for s in all_scenarios()}
# A kernel suite whose mutant Random catches only after hundreds of
# executions (seed 1: index 951), so the failure lies beyond the first unit.
MUTANT_CASE = ("mm:fault-vs-truncate", "memory:fault-unlocked")


def _token(res: Any) -> str:
    assert res.failure is not None
    return str(res.failure.schedule)


# ------------------------------------------------------------------ jobs

def test_random_jobs_1_and_2_report_the_same_failure() -> None:
    one = explore_parallel("demo:lost-update", strategy="random", executions=400, seed=7, jobs=1)
    two = explore_parallel("demo:lost-update", strategy="random", executions=400, seed=7, jobs=2)
    assert _token(one) == _token(two)
    assert one.failure is not None and two.failure is not None
    assert one.failure.found_at == two.failure.found_at
    # jobs=1 runs the units in order: exactly up to the failing execution
    assert one.executions == one.failure.found_at[-1] + 1


@pytest.mark.skipif(MUTANT_CASE[0] not in REGISTERED, reason=f"{MUTANT_CASE[0]} not registered")
def test_mutant_found_beyond_the_first_unit_is_the_same_for_any_jobs() -> None:
    sc, mutant = MUTANT_CASE
    kw: dict[str, Any] = dict(strategy="random", executions=4000, seed=1, mutants=[mutant])
    one = explore_parallel(sc, jobs=1, **kw)
    two = explore_parallel(sc, jobs=2, **kw)
    assert one.failure is not None and two.failure is not None
    assert one.failure.found_at == two.failure.found_at
    assert _token(one) == _token(two)


def test_pct_is_the_same_for_any_jobs() -> None:
    one = explore_parallel("demo:lost-update", strategy="pct", executions=300, seed=5, jobs=1)
    two = explore_parallel("demo:lost-update", strategy="pct", executions=300, seed=5, jobs=2)
    assert one.failure is not None and two.failure is not None
    assert one.failure.found_at == two.failure.found_at and _token(one) == _token(two)


def test_no_failure_runs_the_whole_budget() -> None:
    res = explore_parallel("demo:lost-update-locked", strategy="random", executions=700, jobs=2)
    assert res.ok and res.executions == 700 and not res.exhausted and not res.interrupted


def test_explore_with_jobs_goes_parallel() -> None:
    res = mmemu.explore("demo:lost-update-locked", strategy="random", executions=300, jobs=1)
    assert res.ok and res.executions == 300


def test_an_unregistered_scenario_is_refused() -> None:
    async def local(sim: Any) -> None:
        pass

    with pytest.raises(ModelError, match="register"):
        explore_parallel(local, jobs=2)


# ------------------------------------------------------------------- DFS

DFS_CASES = [("demo:lost-update-locked", {}, None, 36)]
if "pagecache:lookup-vs-reclaim" in REGISTERED:
    DFS_CASES.append(("pagecache:lookup-vs-reclaim", {"lookup": "find_get_page"}, 2, None))


@pytest.mark.parametrize(("sc", "params", "bound", "known"), DFS_CASES)
def test_dfs_split_runs_exactly_the_executions_of_one_dfs(sc: str, params: dict[str, Any],
                                                          bound: int | None,
                                                          known: int | None) -> None:
    single = mmemu.explore(sc, strategy=DFS(max_preemptions=bound, reduction="none"),
                           executions=10**6, params=params)
    assert single.exhausted
    if known is not None:
        assert single.executions == known
    for jobs in (1, 2):
        split = explore_parallel(sc, strategy=DFS(max_preemptions=bound, reduction="none"),
                                 executions=10**6, params=params, jobs=jobs)
        assert (split.executions, split.exhausted) == (single.executions, True)


# Optimal DPOR split exactly (_split.py): the same executions, blocked
# executions, traces and first failure as one process.  tests/parallel/
# test_split.py checks it on many programs with an out-of-order backend;
# here with real worker processes on suites.
SPLIT_CASES = [("demo:lost-update", {}, ())]
if "cow:wp-fault-vs-guest-read" in REGISTERED:
    SPLIT_CASES += [("cow:wp-fault-vs-guest-read", {"api": "modern", "driver": "gru"}, ()),
                    ("cow:wp-fault-vs-guest-read", {"api": "modern", "driver": "gru"},
                     ("memory:cow-no-notify",))]


@pytest.mark.parametrize(("sc", "params", "mutants"), SPLIT_CASES)
def test_dpor_split_over_two_workers_is_one_dfs(sc: str, params: dict[str, Any],
                                                mutants: tuple[str, ...]) -> None:
    kw: dict[str, Any] = dict(strategy=DFS(), executions=10**6, params=params, mutants=mutants,
                              shrink=False)
    single = mmemu.explore(sc, **kw)
    two = explore_parallel(sc, jobs=2, **kw)
    assert (two.executions, two.blocked, two.traces, two.exhausted) == \
        (single.executions, single.blocked, single.traces, single.exhausted)
    assert (single.failure is None) == (not mutants and sc != "demo:lost-update")
    if single.failure is not None:
        assert _token(two) == _token(single)
    else:
        assert two.failure is None
    # the per-worker split adds up to the executions
    assert sum(e for _w, _u, e in two.workers) == two.executions


_LASTZERO = bp.lastzero(7)


async def lastzero7(sim: Any) -> None:
    """lastzero(7) (benchmarks/dpor_programs.py): 320 executions, a
    lopsided tree (the first branches of the root hold most of it)."""
    await _LASTZERO(sim)


def test_work_stealing_keeps_the_split_exact() -> None:
    """The root unit is asked to cede at once (nothing else waits), so the
    other worker starts on branches stolen from it; whoever runs what, the
    executions, blocked executions and traces are the single DFS's."""
    kw: dict[str, Any] = dict(strategy=DFS(), executions=10**6, shrink=False)
    single = mmemu.explore(lastzero7, **kw)
    two = explore_parallel(lastzero7, jobs=2, **kw)
    assert single.executions == 320 and single.exhausted
    assert (two.executions, two.blocked, two.traces, two.exhausted) == \
        (single.executions, single.blocked, single.traces, True)
    assert two.steals >= 1
    assert sum(e for _w, _u, e in two.workers) == two.executions


def test_dfs_split_finds_the_first_failure_of_one_dfs() -> None:
    single = mmemu.explore("demo:lost-update", strategy=DFS(reduction="none"), executions=1000)
    two = explore_parallel("demo:lost-update", strategy=DFS(reduction="none"), executions=1000,
                           jobs=2)
    assert not two.exhausted
    assert _token(single) == _token(two)


def test_dfs_budget_stops_a_split_search() -> None:
    res = explore_parallel("demo:lost-update-locked", strategy=DFS(reduction="none"),
                           executions=10, jobs=1)
    assert not res.exhausted and 10 <= res.executions < 36


# ---------------------------------------------------------- shards, merge

def _cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize(("suite", "strategy", "budget"), [
    ("demo:lost-update-locked", "random", 900),
    ("demo:lost-update-locked", "dfs", 100_000),
])
def test_shards_merge_into_the_unsharded_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                suite: str, strategy: str, budget: int) -> None:
    common = ["run", suite, "--strategy", strategy, "--executions", budget, "--json",
              "--max-preemptions", 2]
    code, out, _ = _cli(capsys, *common, "--jobs", 1)
    assert code == 0
    whole = json.loads(out)
    files = []
    for k in range(2):
        code, out, _ = _cli(capsys, *common, "--shard", f"{k}/2")
        assert code == 0
        files.append(tmp_path / f"shard{k}.json")
        files[-1].write_text(out)
    code, out, err = _cli(capsys, "merge", *files)
    assert code == 0, err
    merged = json.loads(out)
    if strategy == "dfs":
        # Shards cannot talk to each other: each explores its prefixes with
        # a bounded search of its own (exhaustive, but with repeats across
        # shards); --jobs explores one search (documented in docs/cli.md).
        assert merged["executions"] >= whole["executions"]
    else:
        assert merged["executions"] == whole["executions"]
    assert merged["exhausted"] == whole["exhausted"] == (strategy == "dfs")
    assert merged["failure"] is None and merged["shards"] == ["0/2", "1/2"]


def test_merge_keeps_the_failure_at_the_lowest_index(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    common = ["run", "demo:lost-update", "--strategy", "random", "--executions", 60,
              "--seed", 3, "--json"]
    code, out, _ = _cli(capsys, *common, "--jobs", 1)
    whole = json.loads(out)
    assert code == 1
    for k in range(3):
        code, out, _ = _cli(capsys, *common, "--shard", f"{k}/3")
        (tmp_path / f"s{k}.json").write_text(out)
    code, out, _ = _cli(capsys, "merge", *sorted(tmp_path.glob("s*.json")))
    assert code == 1
    merged = json.loads(out)
    assert merged["failure"]["schedule"] == whole["failure"]["schedule"]
    assert merged["failure"]["found_at"] == whole["failure"]["found_at"]


def test_merge_refuses_a_missing_shard() -> None:
    row = {"suite": "s:x", "params": {}, "mutant": None, "strategy": "random(seed=0)",
           "executions": 1, "exhausted": False, "failure": None, "shard": "0/2"}
    with pytest.raises(ModelError, match="exactly once"):
        merge_results([row])


def test_run_prints_the_per_worker_split(capsys: pytest.CaptureFixture[str]) -> None:
    single = mmemu.explore("cow:wp-fault-vs-guest-read", strategy=DFS(), executions=10**6,
                           params={"api": "modern", "driver": "gru"})
    code, _out, err = _cli(capsys, "run", "cow:wp-fault-vs-guest-read", "--api", "modern",
                           "--driver", "gru", "--jobs", 2)
    assert code == 0
    line = next(ln.strip() for ln in err.splitlines() if ln.strip().startswith("split: "))
    parts = re.findall(r"(\d+) units?, (\d+) executions?", line)
    assert parts and all(int(u) >= 1 for u, _e in parts), line
    # all of the single DFS's executions, and the root unit ceded work at
    # once (it is asked to as soon as it starts: nothing else waits)
    assert sum(int(e) for _u, e in parts) == single.executions > 1, line
    assert re.search(r"; \d+ steals?", line), line


@pytest.mark.skipif("cow:wp-fault-vs-guest-read" not in REGISTERED, reason="needs the cow suites")
def test_run_with_jobs_explores_several_runs_at_once_with_the_same_results(
        capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs 2 with several runs: each run whole in one worker, results in
    order; the same rows and the same failure tokens as one process."""
    args = ["run", "cow:wp-fault-vs-guest-read", "--api", "modern", "--mutant",
            "memory:cow-no-notify", "--json"]
    code1, out1, _ = _cli(capsys, *args)
    code2, out2, _ = _cli(capsys, *args, "--jobs", 2)
    assert code1 == code2 == 1
    rows1 = [json.loads(ln) for ln in out1.splitlines() if ln.startswith("{")]
    rows2 = [json.loads(ln) for ln in out2.splitlines() if ln.startswith("{")]
    assert len(rows1) > 1
    for a, b in zip(rows1, rows2, strict=True):
        assert (a["params"], a["executions"], a["exhausted"]) == \
            (b["params"], b["executions"], b["exhausted"])
        assert (a["failure"] or {}).get("schedule") == (b["failure"] or {}).get("schedule")


@pytest.mark.parametrize("bad", ["2/2", "x", "1/0", "-1/3", "1-2", "1/2/3"])
def test_bad_shard_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    code, out, err = _cli(capsys, "run", "demo:lost-update", "--shard", bad)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmemu: error:") and "--shard" in lines[0]


def test_bad_jobs_and_bad_merge_input_exit_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(capsys, "run", "demo:lost-update", "--jobs", 0)[0] == 2
    junk = tmp_path / "junk.json"
    junk.write_text("not json\n")
    code, _, err = _cli(capsys, "merge", junk)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert _cli(capsys, "merge", tmp_path / "missing.json")[0] == 2


# ------------------------------------------------------------------- Dask

def test_dask_local_cluster_finds_the_same_failure() -> None:
    distributed = pytest.importorskip(
        "distributed", reason="dask[distributed] is not installed (pip install 'mmemu[dask]')")
    # threads in this process, but real TCP over loopback between client,
    # scheduler and workers (processes=False alone would use inproc://)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        kw: dict[str, Any] = dict(strategy="random", executions=400, seed=7)
        remote = explore_parallel("demo:lost-update", dask=cluster.scheduler_address, **kw)
        ok = explore_parallel("demo:lost-update-locked", dask=cluster.scheduler_address,
                              strategy=DFS(reduction="none"), executions=10**6)
    local = explore_parallel("demo:lost-update", jobs=1, **kw)
    assert _token(remote) == _token(local)
    assert ok.exhausted and ok.executions == 36


_DASK_BUSY = """
import sys
import distributed
from mmemu.parallel import explore_parallel
if __name__ == "__main__":
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        res = explore_parallel("notifier:truncate-vs-fault", dask=cluster.scheduler_address,
                               params={"api": "2.6.27", "driver": sys.argv[1] + ":BusyDriver"})
    print(res.failure.kind if res.failure else "no failure")
    print(res.failure.message if res.failure else "")
"""


def test_dask_interrupts_a_step_that_never_yields(tmp_path: Path) -> None:
    """Dask workers run units in threads, where no signal handler runs: the
    watchdog raises the interrupt in the worker thread itself
    (PyThreadState_SetAsyncExc), naming the file and line of the loop.
    In a subprocess with a timeout: without that, the run never ends."""
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    drivers = Path(__file__).resolve().parent.parent / "cli" / "hang_drivers.py"
    lines = drivers.read_text().splitlines()
    body = next(k for k, ln in enumerate(lines, 1) if "the line the report must name" in ln)
    script = tmp_path / "busy.py"
    script.write_text(_DASK_BUSY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    env["MMEMU_STEP_TIMEOUT"] = "1"
    done = subprocess.run([sys.executable, str(script), str(drivers)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    kind, message = done.stdout.splitlines()[:2]
    assert kind == "StepTimeout"
    assert any(f"at BusyDriver.fault ({drivers}:{n})" in message for n in (body - 1, body)), \
        message


def test_dask_bad_address_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    code, _, err = _cli(capsys, "run", "demo:lost-update", "--dask", "tcp://127.0.0.1:9")
    errors = [ln for ln in err.splitlines() if ln.startswith("mmemu: error:")]
    assert code == 2 and len(errors) == 1 and "Dask scheduler" in errors[0]
    assert "Traceback" not in err


# ----------------------------------------------------------------- Ctrl-C

def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _run_and_signal(sig: int) -> tuple[subprocess.Popen[str], set[int], str]:
    """Start ``mmemu run --jobs 2`` (a long Random run), wait for its fork
    server and two workers, send ``sig`` to it; its descendants then and
    its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmemu", "run", "demo:lost-update-locked", "--strategy", "random",
         "--executions", "100000000", "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        workers: set[int] = set()
        while time.monotonic() < deadline and len(workers) < 3:  # forkserver + 2 workers
            time.sleep(0.2)
            workers = _descendants(proc.pid)
        assert len(workers) >= 3, "the workers did not start"
        time.sleep(0.5)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, workers, err


def _orphans(workers: set[int], wait: float) -> list[int]:
    """Those of ``workers`` still alive after up to ``wait`` seconds (killed
    then, so that a failing test leaves nothing behind)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_every_worker() -> None:
    proc, workers, err = _run_and_signal(signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert not _orphans(workers, 10), "orphan worker processes"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_workers_die_with_a_killed_parent(sig: int) -> None:
    """A parent killed without a chance to clean up (SIGTERM's and SIGHUP's
    default action, SIGKILL) runs no atexit handler: its workers must still
    end, not block forever on their task queue as orphans."""
    proc, workers, _err = _run_and_signal(sig)
    assert proc.returncode == -sig
    assert not _orphans(workers, 15), "orphan worker processes"


_UNGUARDED = """
import mmemu
a = mmemu.explore("demo:lost-update-locked", strategy=mmemu.DFS())
b = mmemu.explore("demo:lost-update-locked", strategy=mmemu.DFS(), jobs=2)
print("never", a.executions, b.executions)
"""


def test_a_script_without_a_main_guard_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """Workers import the main module: a script's explorations outside
    ``if __name__ == "__main__":`` would all run again in each worker before
    it could serve (minutes for a big suite: a hang, seemingly) and then
    break the pool.  The worker refuses at once; the parent says why."""
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "never" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("mmemu.engine._errors.ModelError: a worker process ended abruptly"), \
        done.stderr
    assert 'if __name__ == "__main__":' in last
