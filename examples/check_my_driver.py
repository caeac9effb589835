"""Check a driver you wrote against every driver suite, from Python.

Run it:  python examples/check_my_driver.py

``mmemu.testing.check_driver`` runs every driver suite (every registered
scenario with a ``driver`` axis: ``notifier:munmap-vs-fault``,
``notifier:truncate-vs-fault``, ...) against one driver, for every notifier
API generation the driver lists in ``Driver.apis``, each explored under
DFS with at most two preemptions -- what ``mmemu run 'notifier:*' --driver
examples/toy_driver.py:ToyDriver`` does, as a list of ``Result``.
``assert_driver_passes`` is the same as an assertion for a test; its
message carries the first failure's report.

The script checks the toy driver of docs/driver.md (examples/toy_driver.py),
which must pass, then a broken copy of it whose ``invalidate_range_start``
counts the range but zaps nothing: a page that munmap or truncate frees
between range_start and range_end stays mapped in the device, and the
checker reports ``FreedPageStillMapped``.  It exits 0 when both behave as
described here, 1 otherwise.

A driver given as a class runs as that class object.  A class defined at the
top level of a file is named ``file.py:Class`` in the reports' tokens, so
``mmemu replay TOKEN`` reloads it from the file -- importing the file, which
is why this script keeps its work under ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import mmemu
from mmemu.driver import load_driver
from mmemu.testing import assert_driver_passes, check_driver

TOY = f"{Path(__file__).resolve().with_name('toy_driver.py')}:ToyDriver"
ToyDriver = load_driver(TOY)


class ZapsNothing(ToyDriver):  # type: ignore[misc, valid-type]
    """The toy driver with the zap left out of invalidate_range_start."""

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await mmemu.step("B. toy->active++ (and no zap)", writes=(self.active_key,))
        self.active += 1


def main() -> int:
    ok = True

    print("== the toy driver, every driver suite ==")
    results = check_driver(TOY)
    for r in results:
        api = r.params.get("api", "2.6.27")
        verdict = "ok" if r.ok else f"FAILED: {r.failure.kind if r.failure else '?'}"
        print(f"  {r.scenario:32} api={api:7} {r.executions:4} executions  {verdict}")
    passed = sum(r.ok for r in results)
    print(f"toy driver: {passed} of {len(results)} driver suite runs passed")
    ok &= passed == len(results) and bool(results)
    print()

    print("== a toy driver that zaps nothing on invalidate_range_start ==")
    try:
        assert_driver_passes(ZapsNothing)
    except AssertionError as exc:
        message = str(exc)
        print(message)
        caught = "FreedPageStillMapped" in message
        print()
        print("caught: FreedPageStillMapped" if caught else "caught something else")
        ok &= caught
    else:
        print("NOT caught: the broken driver passed")
        ok = False

    print()
    print("all as described" if ok else "SOMETHING DIFFERS from the description above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
