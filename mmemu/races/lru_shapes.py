"""Race suite for the LRU: two paths isolate the same page at once.

Emulates: mm/vmscan.c (isolate_lru_page, putback_lru_page, shrink_page_list:
kswapd's reclaim) and mm/migrate.c (migrate_pages with its own isolation,
move_to_lru of the new page) (2.6.27)

A page on the LRU carries PG_lru, and the LRU itself holds no reference.
Whoever wants to work on the page off the LRU (reclaim, migration,
mlock...) isolates it: under zone->lru_lock, PG_lru set?  clear it and take a
reference.  The test and the clear are one critical section, so exactly one
of two racing isolations wins; the other gets -EBUSY and leaves the page
alone.  The winner gives the page back with putback_lru_page (PG_lru set
again, the reference dropped) or frees it; the kernel checks both ends
(VM_BUG_ON(PageLRU(page)) when a page is added to the LRU).

The checks: every checker of ``boot_checked`` (counts, leaks, pages freed
while mapped), the LRU's own VM_BUG_ON, and at the end the page the
pagecache holds is back on the LRU (nobody isolates it any more).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.mm.memory import pte_get, set_pte_at
from mmemu.mm.vmscan import (
    ISOLATE_BUSY,
    ISOLATE_KEEPS_LRU,
    PUTBACK_NO_LRU,
    PageLRU,
    reclaim_page,
)
from mmemu.races.migrate_shapes import _migrate
from mmemu.races.mm import check_page_refs, mapped_file_page


@mmemu.scenario("migrate:isolate-vs-reclaim", catches=[ISOLATE_KEEPS_LRU, PUTBACK_NO_LRU],
                reaches=[ISOLATE_BUSY, "step:keep_locked: unlock_page",
                         "step:4. set_pte_at(new page)"])
async def reclaim_vs_migrate(sim: Any) -> None:
    """kswapd and page migration both take the same mapped file page off the LRU.

    CPU0 (kswapd: reclaim_page)                CPU1 (migration: migrate one page)
    1. isolate_lru_page: lru_lock; PG_lru?     1. isolate_lru_page: the same;
       clear it, get_page; else -EBUSY            -EBUSY: nothing to migrate
    2. shrink_page_list: trylock_page;         2. alloc newpage; migrate_pages:
       try_to_unmap: the pte is young             lock, migration entries, move
       (referenced): SWAP_FAIL, keep              the pagecache slot, copy,
    3. putback_lru_page: lru_lock; PG_lru set;    remove_migration_ptes
       put the isolation reference             3. move_to_lru(newpage); the old
                                                  page is freed; on failure
                                                  putback_lru_page(page)

    The page is mapped by a process that used it recently: reclaim keeps it.

    There are 2 critical interleavings that matter:
    - both 1s at once: the lru_lock orders them and the first clears
      PG_lru, so the second fails.  An isolation that takes its reference
      without clearing PG_lru (mutant ``vmscan:isolate-keeps-lru``) lets
      both have the page: each holds a reference the other's freeze or
      count test trips over, and the loser's putback finds PG_lru still set
      (the kernel's VM_BUG_ON(PageLRU(page)));
    - CPU1's 1 after CPU0's 3: the page is on the LRU again and migration
      takes it.  A putback that drops the reference without setting PG_lru
      (mutant ``vmscan:putback-no-lru``) leaves the page off the LRU for
      good: migration (and every later reclaim) gets -EBUSY, and the page
      stays off the LRU, never to be reclaimed.
    Harmless: CPU1's 1 between CPU0's 1 and 3 (-EBUSY: migration is only
    an optimisation, it tries again later).

    At the end: the page the pagecache holds (the old one, or the new one
    migration made) is on the LRU and every count matches its holders.
    """
    kernel, mapping, page, mm, vma = await mapped_file_page(sim)
    pte = pte_get(mm, vma.vm_start)
    assert pte is not None
    set_pte_at(mm, vma.vm_start, pte.replace(young=True))  # recently used: reclaim keeps it
    async with sim.cpus() as cpus:
        cpus.start(reclaim_page, page, name="kswapd")
        cpus.start(_migrate, page, name="migrate")
    cached = mapping.page_tree.get(0)
    sim.check(cached is not None, "the page left the pagecache, but nobody truncated the file")
    assert cached is not None
    sim.check(PageLRU(cached), f"page{cached.pfn} (the pagecache's) is not on the LRU after "
              f"both isolations ended: it is lost to reclaim", details=cached.dump())
    check_page_refs(sim, kernel)


__all__ = ["reclaim_vs_migrate"]
