"""Drivers written outside mmemu (tests/workload/fixtures.py), checked the way
a reviewer would: ``mmemu run --driver FILE:Class`` (every driver suite) and
``mmemu fuzz --driver FILE:Class`` (from its defaults), as subprocesses.

Each fixture is either a real historical bug (it must be caught: exit 1 from
at least one of the two) or correct (it must pass both: exit 0).  Printed per
driver and command: the exit status, the failure kind, the wall time, and
for the fuzzer the time and executions to the first failure.

Run: python benchmarks/private_drivers.py [--fuzz-time 180] [--only PinCacheDriver ...]
     [--skip-run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = "tests/workload/fixtures.py"

#: fixture class -> None if correct, else the correct driver it is a broken
#: version of (a fuzzer's minimal workload must pass with that one: else the
#: failure is not the bug's)
DRIVERS: dict[str, str | None] = {
    "PinCacheDriver": "PinCacheDriverFixed",  # a pinned pfn in a side cache, outside the seq
    "LateReleaseDriver": "SeqDriver",         # ->release running after detach returned (exit)
    "LeakyCountDriver": "SeqDriver",          # its own check(): range count never back to 0
    "SeqDriver": None,
    "HwTlbDriver": None,
    "PinCacheDriverFixed": None,
    "EagainDev": None,
}


def _passes_with(workload: str, buggy: str, twin: str) -> bool:
    """Does the minimal workload pass with the correct twin in place of the bug?"""
    code, _wall, _out = _run(["run", "--workload", workload.replace(buggy, twin)],
                             timeout=3600)
    return code == 0


def _run(args: list[str], timeout: float) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mmemu", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)
    return proc.returncode, time.perf_counter() - t0, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz-time", type=float, default=None,
                    help="seconds of fuzzing (default: the fuzzer's own default)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--skip-run", action="store_true", help="fuzz only")
    args = ap.parse_args()
    wrong = 0
    print(f"{'driver':22} {'bug?':5} {'command':6} {'exit':>4} {'wall s':>7}  result")
    for cls, twin in DRIVERS.items():
        bug = twin is not None
        if args.only is not None and cls not in args.only:
            continue
        spec = f"{FIXTURES}:{cls}"
        caught = False
        runs: list[tuple[str, list[str]]] = []
        if not args.skip_run:
            runs.append(("run", ["run", "--driver", spec]))
        fuzz = ["fuzz", "--driver", spec]
        if args.fuzz_time is not None:
            fuzz += ["--time", f"{args.fuzz_time:g}"]
        runs.append(("fuzz", fuzz))
        for what, cmd in runs:
            cmd = [*cmd, "--json"]
            code, wall, out = _run(cmd, timeout=3600)
            detail = ""
            if what == "fuzz" and code in (0, 1):
                res = json.loads(out.strip().splitlines()[-1])
                if res["failure"] is not None:
                    result = res["failure"]["kind"]
                    detail = (f" after {res['found_s']:.1f}s, {res['found_executions']} "
                              f"executions (workload #{res['index']}): {res['workload']}")
                    if twin is not None and not _passes_with(res["workload"], cls, twin):
                        # the same workload fails with the correct driver too
                        result = f"NOT THE BUG ({result})"
                        code = 2
                else:
                    result = "ok"
                    detail = f" ({res['workloads']} workloads, {res['executions']} executions)"
            elif code in (0, 1):
                # one JSON line per suite run: the failing suites and kinds
                rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
                bad = sorted({f"{r['suite']}: {r['failure']['kind']}" for r in rows
                              if r.get("failure")})
                result = "ok" if not bad else "; ".join(bad)
                detail = f" ({len(rows)} suite runs)"
            else:
                result = f"error: {out[-300:]}"
            print(f"{cls:22} {'yes' if bug else 'no':5} {what:6} {code:>4} {wall:>7.1f}  "
                  f"{result}{detail}", flush=True)
            caught = caught or code == 1
            if not bug and code != 0:
                wrong += 1
        if bug and not caught:
            wrong += 1
            print(f"  MISSED: {cls} is a bug and neither command caught it")
    print("every bug caught, no correct driver flagged" if wrong == 0 else
          f"{wrong} wrong verdict(s)")


if __name__ == "__main__":
    main()
