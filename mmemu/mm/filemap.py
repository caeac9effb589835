"""The pagecache: a file's pages in a radix tree, looked up without locks.

Emulates: mm/filemap.c, include/linux/fs.h (struct address_space) (2.6.27)

Writers of a mapping's radix tree (add_to_page_cache_locked,
__remove_from_page_cache) hold ``mapping->tree_lock``.  Readers
(find_get_page, find_get_pages, find_lock_page) take no lock: they walk the
tree under rcu_read_lock and pin what they find with a speculative reference
(mmemu.mm.pagemap.page_cache_get_speculative), then check they pinned the
right page.  The protocol, step by step, is the comment on
page_cache_get_speculative; the step labels here use its numbers (lookup
1-2-3).  Each lockless read of the tree is checked as lockdep-RCU checks it
(mmemu.kernel.rcu.rcu_dereference_check: inside rcu_read_lock or holding
tree_lock, else SuspiciousRcuUsage).

Lock ordering (the part this file owns)::

  page lock (PG_locked)
    mapping->tree_lock             (add_to_page_cache on a locked page,
                                    remove_from_page_cache, __remove_mapping)
  mapping->i_mmap_lock             (unmap_mapping_range, rmap; never with tree_lock)
  rcu_read_lock                    (lockless lookups: no lock inside it)

Access keys: a radix slot is ``(mapping, "slot", index)``; any insert or
delete also writes ``(mapping, "page_tree")``, which gang lookups read (they
read every slot from their start index, including empty ones).
``page->mapping`` is ``(page, "mapping")``, ``page->index`` is
``(page, "index")``.

mmemu departs from the C in one place: a lookup whose step 2 fails (the page
is frozen) does not spin.  It blocks until the slot changes or the count is
unfrozen -- the only events that end the spin -- so a bounded search never
mistakes the spin for a livelock.  Any code that writes a slot must therefore
do it with ``__radix_tree_store`` (or declare the slot key and call
``wake_all`` on it), and page_unfreeze_refs wakes the page's slot.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import mmemu
from mmemu.engine._execution import block, current_simulation, reach, span, step, wake_all, wrote
from mmemu.kernel.locking import (
    GuardedList,
    SpinLock,
    WaitQueueHead,
    guarded_by,
    spin_lock,
    spin_unlock,
)
from mmemu.kernel.rcu import rcu_dereference_check, rcu_read_lock, rcu_read_unlock
from mmemu.mm.page import (
    PG_swapcache,
    BadPageState,
    ClearPageLocked,
    Page,
    PageLocked,
    SetPageLocked,
    get_page,
    lock_page,
    page_site,
    put_page,
    unlock_page,
)
from mmemu.mm.pagemap import page_cache_get_speculative

EEXIST = 17
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_CACHE_SIZE = PAGE_SIZE

# mapping->flags bits (the low bits hold the gfp mask in the kernel)
AS_EIO = 1 << 0
AS_ENOSPC = 1 << 1
AS_MM_ALL_LOCKS = 1 << 2  # under mm_take_all_locks(): i_mmap_lock is held by it

NO_RECHECK = mmemu.register_mutant(
    "filemap:no-recheck",
    "the lockless lookup skips step 3 (is the page still in that slot?)",
    caught_as="WrongPageFromLookup",
    doc="find_get_page returns whatever page its speculative reference pinned.  Between "
        "step 1 (radix_tree_lookup) and step 2 (page_cache_get_speculative) the page can "
        "be removed, freed, handed out again by the hot allocator and added to another "
        "file: step 2 then succeeds on the reused page, and without step 3 the lookup "
        "returns a page that belongs to another (mapping, index).")

INSERT_BEFORE_LOCK = mmemu.register_mutant(
    "filemap:insert-before-lock",
    "add_to_page_cache inserts the new page before PG_locked, mapping and index are set",
    caught_as="HalfInitialisedPage",
    doc="The seed's fix to add_to_page_cache: SetPageLocked must come before the insert, "
        "because a lockless reader can find the page the moment it is in the tree.  This "
        "mutant inserts first and initialises afterwards: a reader finds an unlocked page "
        "that is not uptodate (it reads garbage instead of waiting on the page lock for "
        "the read to finish), or a page whose mapping and index are not set yet.")

EEXIST_NO_UNDO = mmemu.register_mutant(
    "filemap:eexist-no-undo",
    "add_to_page_cache_locked returns -EEXIST without undoing page->mapping and the "
    "pagecache's reference",
    caught_as="PageLeak (the page that lost the race to add keeps a reference nobody owns "
              "and a page->mapping of a file it is not in)",
    doc="Two readers of the same uncached index both allocate a page and call "
        "add_to_page_cache; the second radix_tree_insert fails with -EEXIST.  The kernel "
        "undoes what it did before the insert -- page->mapping = NULL and "
        "page_cache_release of the reference it took for the pagecache -- so the loser's "
        "put_page frees its page (page_cache_read: 'losing race to add is OK').  Without "
        "the undo that page is never freed and still claims to belong to the file.")


def slot_key(mapping: AddressSpace, index: int) -> tuple[Hashable, ...]:
    """The access key of a radix slot."""
    return (mapping, "slot", index)


def tree_key(mapping: AddressSpace) -> tuple[Hashable, ...]:
    """Written by every insert and delete; read by gang lookups."""
    return (mapping, "page_tree")


def nrpages_key(mapping: AddressSpace) -> tuple[Hashable, ...]:
    return (mapping, "nrpages")


def index_key(page: Page) -> tuple[Hashable, ...]:
    return (page, "index")


class AddressSpace:
    """``struct address_space`` (with the fields of its host inode the model needs).

    - ``page_tree``: the radix tree, index -> Page.  Written under
      ``tree_lock``; read locklessly under RCU.
    - ``tree_lock``: SpinLock (lockdep class "tree_lock").
    - ``i_mmap``: the vmas that map this file (rmap's list; mmap.py adds and
      removes them) under ``i_mmap_lock`` (class "i_mmap_lock").
    - ``flags``: AS_* bits; ``AS_MM_ALL_LOCKS`` is mm_take_all_locks' mark.
    - ``nrpages``: pages in the tree (under tree_lock).
    - ``i_size``: the host inode's size in bytes (``(mapping, "i_size")``).
    """

    def __init__(self, kernel: Any, name: str = "mapping", *, i_size: int = 0) -> None:
        self.__mmemu_name__ = name
        self.name = name
        self.kernel = kernel
        self.page_tree: dict[int, Page] = {}
        self.tree_lock = SpinLock(f"{name}.tree_lock", "tree_lock")
        self.i_mmap: list[Any] = GuardedList(self, "i_mmap")
        self.i_mmap_lock = SpinLock(f"{name}.i_mmap_lock", "i_mmap_lock")
        # i_mmap_mutex since 3d48ae45e723 (v3.0), i_mmap_rwsem since
        # c8c06efa8b55 (v3.19): in the modern generation rmap walks and
        # unmap_mapping_range hold a sleeping lock, so a blockable
        # range_start called under it may sleep (2.6.27's spinlock is what
        # XPMEM could not live with).  Readers sharing i_mmap_rwsem is not
        # modelled: every holder is exclusive.
        self.i_mmap_lock.sleeps = getattr(kernel, "api", None) == "modern"
        self.flags = 0
        self.nrpages = 0
        self.i_size = i_size
        # Not kernel fields: the model's fairness assumption for the fault /
        # truncate retry chase (see FAIR_FAULT_ROUNDS in mm/memory.py).
        # ``truncating``: the first page index of each vmtruncate in progress
        # on this file ((mapping, "truncating")); their end wakes
        # ``truncate_wq``.
        self.truncating: list[int] = []
        self.truncate_wq = WaitQueueHead(f"{name}.truncate_wq")
        self.host = self  # mapping->host: the inode fields live here too
        kernel.mappings.append(self)

    def __repr__(self) -> str:
        return f"<AddressSpace {self.name} nrpages={self.nrpages}>"

    @property
    def i_size_key(self) -> tuple[Hashable, ...]:
        return (self, "i_size")

    @property
    def flags_key(self) -> tuple[Hashable, ...]:
        return (self, "flags")

    def dump(self) -> str:
        slots = ", ".join(f"{i}: page{p.pfn}" for i, p in sorted(self.page_tree.items()))
        return f"{self.name}: nrpages={self.nrpages} i_size={self.i_size} tree {{{slots}}}"


# ----------------------------------------------------- checker interface
#
# mmemu/mm never imports mmemu/check: a checker installs an object under
# kernel.data["page_state"] with these methods, and the pagecache calls it.

def _checker() -> Any:
    kernel = current_simulation().data.get("kernel")
    if kernel is None:
        return None
    return kernel.data.get("page_state")


# rmap's file list is walked and changed under i_mmap_lock (i_mmap_rwsem);
# the radix tree is changed under tree_lock and read locklessly under RCU,
# so only its writers are held to the lock
guarded_by(AddressSpace, "i_mmap", lambda mapping: mapping.i_mmap_lock,
           why="i_mmap_lock protects the file's vma list")
guarded_by(AddressSpace, "page_tree", lambda mapping: mapping.tree_lock, reads=False,
           why="tree_lock serialises changes of the radix tree")
guarded_by(AddressSpace, "slot", lambda mapping: mapping.tree_lock, reads=False,
           why="tree_lock serialises changes of the radix tree")


def _lookup_returned(fn: str, mapping: AddressSpace, index: int, page: Page) -> None:
    """Called inside the step at which a lookup decides to return ``page``."""
    chk = _checker()
    if chk is not None:
        chk.lookup_returned(fn, mapping, index, page)


def _page_added(mapping: AddressSpace, page: Page) -> None:
    chk = _checker()
    if chk is not None:
        chk.page_added(mapping, page)


def _page_removed(mapping: AddressSpace, page: Page) -> None:
    """Called inside the step that removes ``page`` from ``mapping`` (the
    checker asks whether its data was written back)."""
    chk = _checker()
    if chk is not None:
        chk.page_removed(mapping, page)


# ----------------------------------------------------------- radix tree


def __radix_tree_store(mapping: AddressSpace, index: int, page: Page | None) -> None:
    """Write a slot (insert, delete or replace).  The running step must have
    declared writes to ``slot_key(mapping, index)`` and ``tree_key(mapping)``;
    lookups blocked on the slot after a failed step 2 are woken."""
    wrote((mapping, "slot", index), "radix tree slot store")
    if page is None:
        mapping.page_tree.pop(index, None)
    else:
        mapping.page_tree[index] = page
        _page_added(mapping, page)
    wake_all(slot_key(mapping, index))


radix_tree_store = __radix_tree_store  # the name without the leading "__" for other modules


def radix_tree_lookup(mapping: AddressSpace, index: int) -> Page | None:
    """The slot's content (no step: the caller's step reads the slot key)."""
    return mapping.page_tree.get(index)


async def _wait_slot_change(mapping: AddressSpace, index: int, page: Page) -> None:
    """After a failed step 2: wait while ``page`` is still frozen in the slot.

    The kernel spins back to 1; every pass finds the same frozen page until
    the remover's B (the slot changes) or page_unfreeze_refs (the count
    changes).  Waiting for those two events is the same behaviour.
    """
    slot = slot_key(mapping, index)
    await step("2. failed: page frozen or free, retry", reads=(slot, page._count))
    if mapping.page_tree.get(index) is page and page._count.counter == 0:
        reach("filemap: step 2 failed on a frozen page (the lookup waits)")
    while mapping.page_tree.get(index) is page and page._count.counter == 0:
        await block(slot, "1. radix_tree_lookup (retry)", reads=(slot, page._count),
                    why=f"{mapping.name}[{index}]: page{page.pfn} frozen in the slot "
                        f"(a remover between A and B)")


async def _lookup_slot(fn: str, mapping: AddressSpace, index: int) -> Page | None:
    """Steps 1-2-3 for one slot (caller holds rcu_read_lock)."""
    slot = slot_key(mapping, index)
    while True:
        await step("1. radix_tree_lookup", reads=(slot,))
        rcu_dereference_check(f"{mapping.name}'s radix tree (slot {index})", mapping.tree_lock)
        page = mapping.page_tree.get(index)
        if page is None:
            return None
        gen = page.gen
        if not await page_cache_get_speculative(page):
            # A ran before 2: retry (B will remove it, or it is unfrozen)
            await _wait_slot_change(mapping, index, page)
            continue
        if mmemu.mutant(NO_RECHECK):
            _lookup_returned(fn, mapping, index, page)
            return page
        await step("3. recheck: page still in the slot?", reads=(slot,))
        if mapping.page_tree.get(index) is not page:
            # Has the page moved?  Drop the speculative reference: put_page
            # does the right thing whatever the page is now used for.
            await put_page(page, label="3. page moved: put_page, goto 1")
            continue
        if page.gen != gen:
            reach("filemap: between 1 and 2 the page was freed and re-inserted in the same "
                  "slot (the harmless ABA)")
        _lookup_returned(fn, mapping, index, page)
        return page


async def find_get_page(mapping: AddressSpace, offset: int) -> Page | None:
    """The page at ``offset`` with a reference taken, or None.

    Lockless (see page_cache_get_speculative)::

        rcu_read_lock
        1. page = radix_tree_lookup(offset)      (NULL: return NULL)
        2. page_cache_get_speculative(page)      (fails: goto 1)
        3. page still in that slot?              (no: put_page, goto 1)
        rcu_read_unlock

    The page may be removed from the cache the moment this returns: callers
    that need it to stay (and to stay this file's) lock it and recheck
    page->mapping, as find_lock_page does.
    """
    with span("find_get_page"):
        await rcu_read_lock()
        page = await _lookup_slot("find_get_page", mapping, offset)
        await rcu_read_unlock()
    return page


async def find_lock_page(mapping: AddressSpace, offset: int) -> Page | None:
    """find_get_page, then lock the page and make sure it was not truncated
    meanwhile (page->mapping still ``mapping``); repeat if it was."""
    with span("find_lock_page"):
        while True:
            page = await find_get_page(mapping, offset)
            if page is None:
                return None
            await lock_page(page)
            await step("page->mapping == mapping? (truncated?)",
                       reads=(page.mapping_key, index_key(page)))
            if page.mapping is not mapping:
                await unlock_page(page)
                await put_page(page, label="truncated: page_cache_release, repeat")
                continue
            if page.index != offset:
                current_simulation().fail(BadPageState(
                    f"find_lock_page({mapping.name}, {offset}) at {page_site()}: "
                    f"VM_BUG_ON(page->index != offset): index is {page.index}",
                    details=page.dump()))
            _lookup_returned("find_lock_page", mapping, offset, page)
            return page


async def find_get_pages(mapping: AddressSpace, start: int, nr_pages: int) -> list[Page]:
    """Up to ``nr_pages`` pages from index ``start`` on, each with a reference
    (the gang lookup behind pagevec_lookup), lockless::

        rcu_read_lock
        1. radix_tree_gang_lookup_slot: the slots in use from ``start``
           then for each slot:
        1. radix_tree_deref_slot                 (empty now: skip it)
        2. page_cache_get_speculative(page)      (fails: goto 1 for this slot)
        3. page still in that slot?              (no: put_page, goto 1)
        rcu_read_unlock
    """
    with span("find_get_pages"):
        await rcu_read_lock()
        # Which slots are in use: every insert and delete writes the tree key.
        await step("1. radix_tree_gang_lookup_slot", reads=(tree_key(mapping),))
        rcu_dereference_check(f"{mapping.name}'s radix tree (gang lookup)", mapping.tree_lock)
        found = [i for i in sorted(mapping.page_tree) if i >= start][:nr_pages]
        pages: list[Page] = []
        for i in found:
            page = await _lookup_slot("find_get_pages", mapping, i)
            if page is not None:
                pages.append(page)
        await rcu_read_unlock()
    return pages


pagevec_lookup = find_get_pages


# ------------------------------------------------------------ insertion


async def add_to_page_cache_locked(page: Page, mapping: AddressSpace, offset: int) -> int:
    """Insert a locked page at ``offset``; 0 or -EEXIST.

    The pagecache takes its own reference (page_cache_get) and page->mapping
    and page->index are set *before* the insert: a lockless reader can find
    the page as soon as it is in the tree, and it must find it locked and
    initialised.  On failure both are undone.
    """
    with span("add_to_page_cache_locked"):
        await get_page(page, label="page_cache_get (the pagecache's reference)")
        await step("page->mapping = mapping; page->index = offset",
                   reads=(page.flags_key,), writes=(page.mapping_key, index_key(page)))
        if not PageLocked(page):
            current_simulation().fail(BadPageState(
                f"add_to_page_cache_locked(page{page.pfn}) at {page_site()}: "
                f"VM_BUG_ON(!PageLocked(page))", details=page.dump()))
        page.mapping = mapping
        page.index = offset
        await spin_lock(mapping.tree_lock)
        slot = slot_key(mapping, offset)
        await step("radix_tree_insert", reads=(slot,),
                   writes=(slot, tree_key(mapping), nrpages_key(mapping), page.mapping_key))
        undo = not mmemu.mutant(EEXIST_NO_UNDO)
        if offset in mapping.page_tree:
            error = -EEXIST
            if undo:
                page.mapping = None
        else:
            error = 0
            __radix_tree_store(mapping, offset, page)
            mapping.nrpages += 1
        if error and undo:
            await put_page(page, label="-EEXIST: page_cache_release")
        await spin_unlock(mapping.tree_lock)
    return error


async def add_to_page_cache(page: Page, mapping: AddressSpace, offset: int) -> int:
    """Add a newly allocated page: it is new, so PG_locked is simply set
    before add_to_page_cache_locked, and cleared again if that fails.

    Returns with the page locked (the caller starts the read and unlocks it
    when the page is uptodate) and with two references: the caller's and the
    pagecache's.
    """
    if mmemu.mutant(INSERT_BEFORE_LOCK):
        return await _add_to_page_cache_insert_first(page, mapping, offset)
    with span("add_to_page_cache"):
        await step("SetPageLocked", writes=(page.flags_key,))
        SetPageLocked(page)
        error = await add_to_page_cache_locked(page, mapping, offset)
        if error:
            await step("ClearPageLocked", writes=(page.flags_key,))
            ClearPageLocked(page)
    return error


async def _add_to_page_cache_insert_first(page: Page, mapping: AddressSpace, offset: int) -> int:
    """The mutant: visible in the tree before it is locked and initialised."""
    with span("add_to_page_cache (insert first)"):
        await get_page(page, label="page_cache_get (the pagecache's reference)")
        await spin_lock(mapping.tree_lock)
        slot = slot_key(mapping, offset)
        await step("radix_tree_insert", reads=(slot,),
                   writes=(slot, tree_key(mapping), nrpages_key(mapping)))
        if offset in mapping.page_tree:
            await put_page(page, label="-EEXIST: page_cache_release")
            await spin_unlock(mapping.tree_lock)
            return -EEXIST
        __radix_tree_store(mapping, offset, page)
        mapping.nrpages += 1
        await spin_unlock(mapping.tree_lock)
        await step("page->mapping = mapping; page->index = offset",
                   writes=(page.mapping_key, index_key(page)))
        page.mapping = mapping
        page.index = offset
        await step("SetPageLocked", writes=(page.flags_key,))
        SetPageLocked(page)
    return 0


# -------------------------------------------------------------- removal


async def __remove_from_page_cache(page: Page, *,
                                   label: str = "B. __remove_from_page_cache") -> None:
    """Delete the page from its mapping's tree (caller holds tree_lock and the
    page lock).  page->mapping is cleared; the pagecache's reference is the
    caller's to drop (or, after page_freeze_refs, simply gone)."""
    mapping = page.mapping
    if mapping is None:
        current_simulation().fail(BadPageState(
            f"__remove_from_page_cache(page{page.pfn}) at {page_site()}: page->mapping is NULL",
            details=page.dump()))
    index = page.index
    slot = slot_key(mapping, index)
    # (page->flags: the checker reads PG_dirty here; see _page_removed)
    await step(label, reads=(index_key(page), page.flags_key),
               writes=(slot, tree_key(mapping), nrpages_key(mapping), page.mapping_key))
    if mapping.tree_lock.owner is not current_simulation().running:
        current_simulation().fail(BadPageState(
            f"__remove_from_page_cache(page{page.pfn}) at {page_site()} without "
            f"{mapping.tree_lock.name}", details=page.dump()))
    if mapping.page_tree.get(index) is not page:
        current_simulation().fail(BadPageState(
            f"__remove_from_page_cache(page{page.pfn}) at {page_site()}: the page is not in "
            f"{mapping.name}[{index}]", details=page.dump() + "\n    " + mapping.dump()))
    if page._mapcount.counter >= 0:
        # 2.6.27 __remove_from_page_cache ends with BUG_ON(page_mapped(page)):
        # a page leaves the cache only once no pte maps it
        current_simulation().fail(BadPageState(
            f"__remove_from_page_cache(page{page.pfn}) at {page_site()}: "
            f"BUG_ON(page_mapped(page)): a pte still maps it", details=page.dump()))
    _page_removed(mapping, page)
    __radix_tree_store(mapping, index, None)
    page.mapping = None
    mapping.nrpages -= 1


remove_from_page_cache_locked = __remove_from_page_cache


async def remove_from_page_cache(page: Page, *,
                                 label: str = "B. __remove_from_page_cache") -> None:
    """Take tree_lock and remove the (locked) page from the pagecache
    (truncate_complete_page's way out of the cache)."""
    mapping = page.mapping
    assert mapping is not None
    with span("remove_from_page_cache"):
        await spin_lock(mapping.tree_lock)
        await __remove_from_page_cache(page, label=label)
        await spin_unlock(mapping.tree_lock)


async def page_cache_release(page: Page, *, label: str | None = None) -> None:
    await put_page(page, label=label or f"page_cache_release(page{page.pfn})")


def page_mapping(page: Page) -> AddressSpace | None:
    """page->mapping for pagecache pages; &swapper_space for a page in the
    swap cache (mmemu.mm.swap_state); None for other anon pages."""
    if page.flags & PG_swapcache:
        sp = current_simulation().data["kernel"].data.get("swapper_space")
        return sp if isinstance(sp, AddressSpace) else None
    if page.mapping is None or getattr(page.mapping, "page_tree", None) is None:
        return None
    return page.mapping  # type: ignore[no-any-return]


def page_index(page: Page) -> int:
    """The page's index in page_mapping(page): page->private (its swap slot)
    for a swap cache page, else page->index."""
    if page.flags & PG_swapcache and isinstance(page.private, int):
        return page.private
    return page.index


PagecacheHook = Callable[[AddressSpace, Page], None]

__all__ = [
    "AS_MM_ALL_LOCKS", "AddressSpace", "EEXIST", "EEXIST_NO_UNDO", "INSERT_BEFORE_LOCK", "NO_RECHECK",
    "PAGE_SIZE", "add_to_page_cache", "add_to_page_cache_locked", "find_get_page",
    "find_get_pages", "find_lock_page", "page_cache_release", "page_index", "page_mapping",
    "pagevec_lookup", "radix_tree_lookup", "radix_tree_store", "remove_from_page_cache",
    "slot_key", "tree_key",
]
