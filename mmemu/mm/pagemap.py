"""Speculative page references: the lockless pagecache's refcount protocol.

Emulates: include/linux/pagemap.h (2.6.27), from the seed patch "mm: speculative
page references" (Nick Piggin, 2008)

A page found without a lock (in the radix tree under rcu_read_lock, or in a
page table) may be freed, frozen or reused at any moment.  The lookup side
pins it with ``page_cache_get_speculative`` (an increment that refuses a count
of zero) and then checks it found the right page; the remove side makes the
count zero with one cmpxchg (``page_freeze_refs``) while it owns every
reference, so that no speculative getter can slip in between its check and its
removal.  The full protocol is the comment on ``page_cache_get_speculative``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mmemu
from mmemu.engine._execution import current_simulation, step
from mmemu.kernel.atomic import atomic_cmpxchg, atomic_inc_not_zero
from mmemu.mm.page import Page, UnfreezeMismatch, get_page, page_site
from mmemu.mm.page_alloc import alloc_page

if TYPE_CHECKING:
    from mmemu.mm.filemap import AddressSpace

PLAIN_GET = mmemu.register_mutant(
    "filemap:plain-get",
    "step 2 of the lockless lookup takes the reference with get_page, not get_page_unless_zero",
    caught_as="GetPageOnFreePage",
    doc="page_cache_get_speculative uses a plain get_page.  A page found in the radix "
        "tree at step 1 may be frozen by reclaim (A) or already free by the time step 2 "
        "runs; get_page on a count of zero is the kernel's "
        "VM_BUG_ON(page_count(page) == 0) -- and on a real machine an increment that "
        "resurrects a page the allocator owns.")

UNFREEZE_NO_WAKE = mmemu.register_mutant(
    "pagemap:unfreeze-no-wake",
    "page_unfreeze_refs restores the count without waking the lookups that found it frozen",
    caught_as="Deadlock (a lookup that failed step 2 on the frozen count waits for a change "
              "that already happened)",
    doc="In the kernel a lookup whose page_cache_get_speculative fails on a frozen count "
        "spins back to step 1; the spin ends when the remover removes the page (B) or "
        "changes its mind (page_unfreeze_refs).  mmemu emulates the spin as a wait for "
        "exactly those two events, so page_unfreeze_refs must announce its store: this "
        "mutant drops the announcement, the emulated equivalent of a spinning CPU that "
        "never re-reads the count.  It is a model mutant (the kernel has no wake-up "
        "here): it shows that reclaim changing its mind is the only thing that ends that "
        "spin when the page stays.")


async def page_cache_get_speculative(page: Page, *,
                                     label: str = "2. page_cache_get_speculative") -> bool:
    """Speculatively take a reference to a page.

    If the page is free (_count == 0), _count is left alone and False is
    returned; otherwise _count is incremented and True is returned.

    Must be called inside the rcu_read_lock() section in which the page was
    looked up in the radix tree (or page table): that lets an allocator use
    synchronize_rcu() to stabilise _count.  Until a grace period has passed,
    the count of any page coming out of the allocator must be treated as
    unstable: page_count may read higher than expected, and put_page must do
    the right thing when the speculative reference is dropped, whatever the
    page has been allocated for since.

    The lookup side (find_get_page) follows this pattern:

        1. find the page in the radix tree
        2. conditionally increment the refcount (this function)
        3. check the page is still in the pagecache at that index
           (if not: put_page, goto 1)

    The remove side that cares about a stable _count (reclaim's
    __remove_mapping), with tree_lock held:

        A. atomically check the refcount is what it owns and set it to 0
           (atomic_cmpxchg: page_freeze_refs)
        B. remove the page from the pagecache
        C. free the page

    There are 2 critical interleavings that matter:
     - 2 runs before A: A sees the elevated refcount and bails out;
     - A runs before 2: 2 sees a zero refcount and retries; B completes and
       1 then finds no page, so the lookup returns NULL.

    Between 1 and 2 the page may be removed and then the very same page
    inserted again at the same position (freed, handed out again by the hot
    allocator, added back).  That's OK: a find_get_page that took tree_lock
    could equally have run before or after such a re-insertion, depending on
    the order the lock was granted.

    Lookups racing with insertion are no problem either: 1 finds the page or
    it does not, as a locked lookup would before or after the insertion.

    mmemu: a retry after a failed step 2 does not spin.  The caller waits for
    the radix slot to change (B, or a re-insertion) or for the count to be
    unfrozen; see find_get_page.
    """
    if mmemu.mutant(PLAIN_GET):
        await get_page(page, label=label)  # VM_BUG_ON on a free or frozen page
        return True
    return await atomic_inc_not_zero(page._count, label=label)


def _frozen(page: Page) -> dict[Page, int]:
    """page -> the count it was frozen at (per execution)."""
    sim = current_simulation()
    d: dict[Page, int] | None = sim.data.get("pagemap.frozen")
    if d is None:
        d = sim.data["pagemap.frozen"] = {}
    return d


async def page_freeze_refs(page: Page, count: int, *,
                           label: str = "A. page_freeze_refs") -> bool:
    """A: if _count == count, set it to 0 (atomic_cmpxchg); true on success.

    The caller must own exactly ``count`` references: afterwards no
    speculative getter can take one (step 2 fails on zero).
    """
    ok = await atomic_cmpxchg(page._count, count, 0, label=label) == count
    if ok:
        _frozen(page)[page] = count
    return ok


async def page_unfreeze_refs(page: Page, count: int, *,
                             label: str = "page_unfreeze_refs") -> None:
    """Give a frozen page its count back (the remover changed its mind).

    VM_BUG_ON(page_count(page) != 0); VM_BUG_ON(count == 0).  mmemu also
    checks that ``count`` is the value the page was frozen at: restoring any
    other value creates or destroys references.

    Wakes lookups that wait on the page's slot after a failed step 2.
    """
    from mmemu.mm.filemap import page_index, page_mapping, slot_key

    # the slot the lookups wait on: a swap-cache page's is its swap slot in
    # swapper_space (page->mapping is then the anon_vma), as find_get_page
    # on swapper_space (lookup_swap_cache) waits there
    mapping = page_mapping(page)
    slot = slot_key(mapping, page_index(page)) if mapping is not None else None
    writes = (page._count,) if slot is None else (page._count, slot)
    await step(label, writes=writes)
    sim = current_simulation()
    c = page._count.counter
    if c != 0 or count == 0:
        why = (f"count is {c}, not 0" if c != 0 else "unfreezing to 0")
        sim.fail(UnfreezeMismatch(
            f"page_unfreeze_refs(page{page.pfn}, {count}) at {page_site()}: {why} "
            f"(VM_BUG_ON(page_count(page) != 0) / VM_BUG_ON(count == 0))",
            details=page.dump()))
    frozen = _frozen(page).pop(page, None)
    if frozen is not None and frozen != count:
        sim.fail(UnfreezeMismatch(
            f"page_unfreeze_refs(page{page.pfn}, {count}) at {page_site()}: the page was "
            f"frozen at {frozen}; unfreezing to {count} "
            f"{'creates' if count > frozen else 'destroys'} {abs(count - frozen)} reference(s)",
            details=page.dump()))
    page._count.counter = count
    if slot is not None and not mmemu.mutant(UNFREEZE_NO_WAKE):
        from mmemu.lowlevel import wake_all
        wake_all(slot)


async def page_cache_alloc(mapping: AddressSpace | None = None, *,
                           label: str = "page_cache_alloc") -> Page:
    """A new page for the pagecache (count 1: the caller's reference).

    The hot allocator hands out the page freed last: a page just reclaimed
    comes straight back here.
    """
    return await alloc_page(label=label)


__all__ = ["PLAIN_GET", "UNFREEZE_NO_WAKE", "page_cache_alloc", "page_cache_get_speculative", "page_freeze_refs",
           "page_unfreeze_refs"]
