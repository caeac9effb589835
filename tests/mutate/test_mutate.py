"""``mmemu mutate`` and the runner: a mutant caught by the suites survives
when the suites are weakened; bad input; a red baseline; the model's own
modules through the import hook; time limits and Ctrl-C.

Each test narrows the work to one suite and one or two mutants: every
mutant is a process of its own and the baseline is traced, so the whole
file stays within a few seconds of CPU per test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmemu.cli import main
from mmemu.mutate import Budget, Mutant, Run, mutate_modules
from mmemu.mutate._runner import Baseline, Subject, _Interrupted, _Workers, run_mutants

ROOT = Path(__file__).resolve().parents[2]
SEQ = f"{ROOT / 'tests' / 'drivers' / 'sample_drivers.py'}:SeqDriver"
ZAPNOTHING = f"{ROOT / 'tests' / 'drivers' / 'sample_drivers.py'}:ZapNothingDriver"
#: SeqDriver.invalidate_range_start without `self.active += 1`: a fault
#: between range_start and range_end installs a translation to a page that
#: munmap frees before range_end -- reachable only with preemptions
ACTIVE = "sample_drivers:SeqDriver.invalidate_range_start:seq-update:1"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["mutate", *args])
    out, err = capsys.readouterr()
    return code, out, err


#: SeqDriver.invalidate_page without `self.seq += 1`: munmap invalidates with
#: range_start/end, so notifier:munmap-vs-fault never runs the mutated line
PAGE_SEQ = "sample_drivers:SeqDriver.invalidate_page:seq-update:1"


def test_a_suite_catches_one_mutant_and_never_runs_another(
        capsys: pytest.CaptureFixture[str]) -> None:
    # one baseline for both mutants (each command costs a baseline process)
    code, out, _err = run_cli(capsys, "--driver", SEQ, "--suite", "notifier:munmap-vs-fault",
                              "--mutant", ACTIVE, "--mutant", "*invalidate_page:seq-update:1",
                              "--fuzz", "0", "--json")
    assert code == 1  # one mutant unreached
    rows = {r.get("id"): r for r in map(json.loads, out.splitlines())}
    caught, unreached, summary = rows[ACTIVE], rows[PAGE_SEQ], rows[None]
    assert caught["status"] == "caught" and caught["by"]["kind"] == "FreedPageStillMapped"
    assert caught["by"]["run"].startswith("notifier:munmap-vs-fault")
    assert unreached["status"] == "unreached" and unreached["runs"] == []
    assert unreached["diff"].count("\n-") == 1
    assert summary["summary"] and summary["caught"] == 1 and summary["unreached"] == 1
    assert summary["score"] == 0.5


def test_a_mutant_the_suite_catches_survives_when_the_suite_is_weakened(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The suite without preemptions still runs the mutated line, but can no
    # longer reach the interleaving that exposes it: the mutant survives, and
    # is printed with its diff.
    code, out, err = run_cli(capsys, "--driver", SEQ, "--suite", "notifier:munmap-vs-fault",
                             "--mutant", ACTIVE, "--fuzz", "0", "--max-preemptions", "0")
    assert code == 1, out + err
    assert ACTIVE in out.split()  # the mutant's id whole, never cut
    assert f"SURVIVED: {ACTIVE} (drop self.active += 1)" in out
    assert "1 run(s) execute the mutated lines; all passed" in out
    assert "-        self.active += 1\n+        pass" in out
    assert "mutation score: 0/1 caught (0%) -- 1 survived" in out
    assert f"{ACTIVE}: survived" in err  # progress goes to stderr


def test_the_fuzzer_catches_what_no_suite_runs(capsys: pytest.CaptureFixture[str]) -> None:
    # The fuzzer's workloads reclaim and migrate pages a device mapped:
    # ->invalidate_page runs, and without its zap the device keeps a
    # translation to a page reclaim frees (seed 6: its first workload does
    # it -- one workload keeps the test cheap)
    zap = "sample_drivers:SeqDriver.invalidate_page:zap:1"
    code, out, err = run_cli(capsys, "--driver", SEQ, "--suite", "notifier:munmap-vs-fault",
                             "--mutant", "*invalidate_page:zap:1", "--fuzz", "1", "--seed", "6")
    assert code == 0, out + err
    # the table's ``how`` column wraps at spaces to the output's width
    assert "FreedPageStillMapped in fuzz:" in " ".join(out.split())
    assert zap in out.split()
    assert "mutation score: 1/1 caught (100%)" in out
    assert f"{zap}: caught (FreedPageStillMapped in fuzz" in err


def test_a_driver_that_already_fails_is_reported_not_mutated(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_cli(capsys, "--driver", ZAPNOTHING, "--suite",
                              "notifier:munmap-vs-fault", "--mutant", ACTIVE, "--fuzz", "0")
    assert code == 1
    assert "the unmutated code fails notifier:munmap-vs-fault" in out
    assert "mutation testing needs code that passes its suites" in out


@pytest.mark.parametrize("args, message", [
    (["--driver", "nope"], "unknown driver 'nope'"),
    (["--driver", "kvm", "--operator", "nope"], "unknown --operator 'nope'"),
    (["--driver", "kvm", "--suite", "pagecache:*"], "no driver suite matches 'pagecache:*'"),
    (["--driver", "kvm", "--mutant", "nope*"], "no mutant matches 'nope*'"),
    (["--driver", "kvm", "--jobs", "0"], "--jobs must be at least 1 (got 0)"),
    (["--driver", "kvm", "--api", "2.4"], "--api must be one of"),
    # SeqDriver (a test driver) supports only the 2.6.27 generation
    (["--driver", f"{ROOT / 'tests' / 'drivers' / 'sample_drivers.py'}:SeqDriver", "--api",
      "modern"], "no driver suite runs driver"),
    (["--driver", f"{ROOT / 'tests' / 'drivers' / 'sample_drivers.py'}:NotADriver"],
     "is not a subclass of mmemu.driver.Driver"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                          message: str) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("mmemu: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_list_shows_the_shipped_drivers_mutants_with_their_diffs(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_cli(capsys, "--driver", "kvm", "--list", "--json",
                              "--operator", "lock-pair")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["operator"] for r in rows} == {"lock-pair"}
    fault = next(r for r in rows if r["id"] == "kvm:KvmDriver.fault:lock-pair:1")
    assert fault["description"] == "drop spin_lock(self.mmu_lock) and its spin_unlock"
    assert "-                await spin_lock(self.mmu_lock" in fault["diff"]


def test_the_model_is_mutated_through_the_import_hook() -> None:
    # filemap's step 3 (the recheck after the speculative get) never retries:
    # exactly KERNEL.md's filemap:no-recheck, found by the operator itself
    report = mutate_modules(
        [str(ROOT / "mmemu" / "mm" / "filemap.py")],
        runs=[Run("pagecache:lookup-vs-reclaim", {"lookup": "find_get_page"})],
        select=["filemap:_lookup_slot:retry-test:2"])
    (r,) = report.results
    assert r.mutant.description.startswith("never retry: `if mapping.page_tree.get(index) "
                                           "is not page`")
    assert r.status == "caught", r.reason
    assert r.by is not None and r.by.kind == "WrongPageFromLookup"
    assert report.score == 1.0
    # nothing on disk changed, and the next import is the original again
    import mmemu.mm.filemap as filemap
    assert "if mapping.page_tree.get(index) is not page:" in Path(filemap.__file__).read_text()


def _fake_baseline(path: str, lines: set[int]) -> Baseline:
    return Baseline(runs=(Run("notifier:munmap-vs-fault", {"driver": SEQ}),),
                    lines=({os.path.realpath(path): frozenset(lines)},),
                    elapsed=(0.1,), executions=(1,))


def _mutant(mid: str, source: str, touched: tuple[int, ...]) -> Mutant:
    return Mutant(id=mid, path="x.py", line=touched[0], operator="zap", function="f",
                  description="test", touched=touched, diff="", source=source)


def test_a_mutant_that_hangs_is_killed_at_its_time_limit(tmp_path: Path) -> None:
    path = str(tmp_path / "drv.py")
    subject = Subject(path=path, driver_spec=SEQ, class_name="SeqDriver")
    hang = _mutant("x:f:zap:1", "while True:\n    pass\n", (1,))
    (r,) = run_mutants([(subject, hang)], _fake_baseline(path, {1}), Budget(timeout=1.5),
                       workdir=tmp_path)
    assert r is not None and r.status == "timeout"
    assert not r.counts or r.status == "timeout"


class _BlockingWorkers(_Workers):
    """A worker that runs until it is stopped (a long mutant)."""

    def run(self, job, timeout):  # type: ignore[no-untyped-def]
        import time
        while not self.stopping:
            time.sleep(0.01)
        return [], "interrupted", ""


def test_ctrl_c_keeps_what_was_found(tmp_path: Path) -> None:
    path = str(tmp_path / "drv.py")
    subject = Subject(path=path, driver_spec=SEQ, class_name="SeqDriver")
    unreached = _mutant("x:f:zap:1", "", (5,))   # no run executes line 5: no worker
    long = _mutant("x:f:zap:2", "", (1,))        # needs a worker that never ends

    def ctrl_c(i: int, result: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(_Interrupted) as stop:
        run_mutants([(subject, unreached), (subject, long)], _fake_baseline(path, {1}),
                    Budget(), jobs=2, workdir=tmp_path, on_result=ctrl_c,
                    workers=_BlockingWorkers())
    first, second = stop.value.results
    assert first is not None and first.status == "unreached"
    assert second is None or second.status == "interrupted"


def test_ctrl_c_on_the_command_prints_what_was_found(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "mmemu", "mutate", "--driver", SEQ, "--suite",
           "notifier:munmap-vs-fault", "--fuzz", "0", "--mutant", ACTIVE,
           "--mutant", "*invalidate_range_end:*"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[1/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert f"[1/7] {ACTIVE}: caught" in "".join(seen)
    # what finished is reported (a mutant may finish while the signal is
    # on its way), the rest is listed as not run; 130 unless a survivor
    # was already found
    assert "not run (interrupted): sample_drivers:SeqDriver.invalidate_range_end:" in out
    assert f"{ACTIVE}" in out and "caught" in out
    summary = next(ln for ln in out.splitlines() if ln.startswith("mutation score:"))
    assert " not run" in summary and "caught" in summary
    assert proc.returncode == (1 if "SURVIVED" in out else 130), out + err


def test_fuzzer_draws_no_exit_for_a_driver_that_never_hears_it() -> None:
    """Modern GRU has no ->release: exit_mmap unhashes its gms before the
    unmap, so nothing ends its TLB entries before the pages are freed (the
    kernel's answer is the device vma's close, not modelled; drivers/gru.py).
    Like notifier:exit-vs-reclaim, the fuzzer leaves `exit` out there, and
    only there -- otherwise `mmemu mutate --driver gru` could not use it."""
    from mmemu.workload._generate import GenSettings, generate

    def exits(api: str) -> int:
        settings = GenSettings(("gru",), api=api)
        return sum(op.name == "exit" for i in range(150)
                   for ops in generate(0, i, settings).cpus for op in ops)

    assert exits("modern") == 0
    assert exits("2.6.27") > 0
