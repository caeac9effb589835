"""A raw engine scenario: a speculative page reference taken in two steps
races with the last put_page.

Run it:  python examples/engine_scenario.py

It explores the racy protocol (and prints the shrunk report of the race it
finds), replays the report's token, forces the race by naming its steps, and
explores the fixed protocol to the end of its search space.  It exits 0 when
all of that behaves as described here, 1 otherwise.

The protocol, as the kernel comment would draw it::

    CPU 0 (lookup)                       CPU 1 (reclaim)
    1. count = page._count               1. page._count -= 1
    2. if count: _count = count+1   2. if page._count == 0: free the page
    3. use the page

There is 1 interleaving that matters:
 - CPU 1's 1. and 2. run between CPU 0's 1. and 2.: lookup saw 1, reclaim
   dropped the last reference and freed the page, and lookup takes a
   reference to a free page and uses it.  One preemption suffices.

The fix is what ``get_page_unless_zero`` does (``atomic_inc_not_zero``): read
and increment in one atomic step, so no step of CPU 1 can run in between.
The scenario takes ``params={"atomic": True}`` for the fixed protocol.
"""

from __future__ import annotations

import sys

import mmemu
from mmemu.testing import force


class Page:
    __mmemu_name__ = "page"

    def __init__(self) -> None:
        self.count = 1       # the pagecache's reference
        self.freed = False


async def lookup(sim: mmemu.Simulation, page: Page) -> None:
    if sim.params.get("atomic"):
        await mmemu.step("1+2. atomic_inc_not_zero(_count)", reads=(page,), writes=(page,))
        got = page.count > 0
        if got:
            page.count += 1
    else:
        await mmemu.step("1. count = page._count", reads=(page,))
        count = page.count
        await mmemu.step("2. if count: _count = count+1", writes=(page,))
        got = count > 0
        if got:
            page.count = count + 1
    if got:
        await mmemu.step("3. use the page", reads=(page,))
        sim.check(not page.freed, "lookup uses a page that reclaim freed",
                  details=f"page: _count={page.count} freed={page.freed}")


async def reclaim(sim: mmemu.Simulation, page: Page) -> None:
    await mmemu.step("1. page._count -= 1", writes=(page,))
    page.count -= 1
    await mmemu.step("2. if page._count == 0: free", reads=(page,), writes=(page,))
    if page.count == 0:
        page.freed = True


async def lookup_vs_reclaim(sim: mmemu.Simulation) -> None:
    """A speculative lookup against the last put_page of a page."""
    page = Page()
    async with sim.cpus() as cpus:
        cpus.start(lookup, sim, page, name="lookup")
        cpus.start(reclaim, sim, page, name="reclaim")


def main() -> int:
    ok = True

    print("== the two-step reference, explored with DFS ==")
    racy = mmemu.explore(lookup_vs_reclaim, strategy="dfs", executions=1000)
    failure = racy.failure
    if failure is None:
        print("no race found: the example is broken")
        return 1
    print(failure.report())
    print()
    ok &= failure.preemptions == 1

    # The report's "mmemu replay TOKEN" line works for registered scenarios
    # (@mmemu.scenario); this one lives in __main__, so replay it from Python.
    print("== the token replays the same execution ==")
    again = mmemu.replay(lookup_vs_reclaim, failure.schedule)
    same = again.failure is not None and again.failure.report() == failure.report()
    print("same report" if same else "DIFFERENT report")
    ok &= same
    print()

    print("== the race, forced by naming its steps ==")
    forced = force(lookup_vs_reclaim, [
        ("lookup", "1. count = page._count"),
        ("reclaim", "1. page._count -= 1"),
        ("reclaim", "2. if page._count == 0: free"),
        ("lookup", "2. if count: _count = count+1"),
    ])
    print(f"forced execution: {forced.failure.kind if forced.failure else 'no failure'}, "
          f"{forced.preemptions} preemption(s)")
    ok &= forced.failure is not None
    print()

    print("== atomic_inc_not_zero, explored with DFS ==")
    fixed = mmemu.explore(lookup_vs_reclaim, strategy="dfs", executions=1000,
                          params={"atomic": True})
    print(f"{fixed.executions} executions, search space exhausted: {fixed.exhausted}, "
          f"failures: {len(fixed.failures)}")
    ok &= fixed.ok and fixed.exhausted

    print()
    print("all as described" if ok else "SOMETHING DIFFERS from the description above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
