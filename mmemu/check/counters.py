"""The counters the kernel keeps beside its page tables and vma lists: a
page's ``_mapcount``, an mm's rss counters, an mm's ``map_count``.

Emulates: the consistency checks the kernel makes on them --
page_remove_rmap's "Eventually BUG" and free_pages_check's "Bad page state"
(2.6.27: a mapcount that does not match the ptes shows up only when the page
is freed, or never); check_mm's "BUG: Bad rss-counter state" (c3f0327f8e9d,
v3.5; before it an rss counter that drifted was silently wrong in
/proc/PID/status and in the OOM killer's choice); validate_mm's
``BUG_ON(i != mm->map_count)`` under CONFIG_DEBUG_VM (mm/mmap.c, 2.6.27).

Rules, checked at the end of every execution (every CPU has finished: no
pte is half-installed, no vma half-linked, so the counters must agree with
the structures they count):

- ``MapcountMismatch``: for every page in use, ``page->_mapcount + 1`` equals
  the number of present ptes, in every mm, that map it.  A migration or
  swap entry does not count (try_to_unmap_one drops the mapcount when it
  installs one; remove_migration_pte / do_swap_page add it back).
- ``BadRssCounter``: for every mm, ``anon_rss`` and ``file_rss`` (2.6.27's
  names; MM_ANONPAGES and MM_FILEPAGES since 2.6.34) equal the number of
  its ptes that map an anonymous page and a file page.  A migration entry
  carries the count of its page: 2.6.27's try_to_unmap_one decrements
  nothing when it installs one and remove_migration_pte increments nothing
  when it removes it.  (2.6.27 also forgot the count when fork copied a
  migration entry or munmap zapped one -- an rss leak that nothing checked
  before v3.5; the model follows later kernels there: copy_one_pte and
  zap_pte_range count migration entries, see mmemu.mm.memory.)  Swap
  entries are not counted: MM_SWAPENTS came with 2.6.34 (b084d4353ff9) and
  the model has 2.6.27's two counters.  An mm that has exited (exit_mmap)
  has no ptes, so both counters are 0 -- check_mm's rule.
- ``BadMapCount``: ``mm->map_count`` equals the number of vmas on the
  mm's list, and the ``vm_next`` chain from ``mm->mmap`` is that list in
  address order (validate_mm walks the list and counts).
- ``BadNrPages``: every address_space's ``nrpages`` (a file's pagecache,
  and swapper_space: the swap cache) equals the pages in its radix tree.
  The kernel trusts it: truncate_inode_pages_range returns at once when it
  is 0, and clear_inode has ``BUG_ON(inode->i_data.nrpages)`` (2.6.27) for
  an inode whose pages were all truncated; the swap cache's is
  total_swapcache_pages.
- ``BadSwapCount``: every swap slot's count (``swap_map[offset]``) is the
  number of swap ptes, in every mm, that hold the slot plus one if its page
  is in the swap cache; a swap pte's slot is never free.  (2.6.27 keeps the
  same rule: get_swap_page gives the cache its count, swap_duplicate adds
  one per pte, swap_free drops them; swapoff's try_to_unuse relies on it,
  and a slot whose count never reaches 0 is a leak of swap space that
  nothing but swapoff would notice -- "swap_free: Unused swap offset" is
  printed only for a count that goes below zero.)

- ``BadRmapList``: the lists the rmap walks start from agree with the
  vmas: every vma of a live mm that has an ``anon_vma`` is on
  ``anon_vma->head`` once, and every vma on a ``head`` points back to it
  and is still on its mm's list; every file vma of a live mm is on its
  mapping's ``i_mmap`` once, and every vma on an ``i_mmap`` maps that file
  and is still on its mm's list.  A vma missing from a list hides its ptes
  from reclaim, migration and truncation (a page freed, or a truncated page
  left, mapped); a vma left on one after munmap is a use-after-free for the
  next walk.  The kernel checked the first half in ``validate_anon_vma``
  (RMAP_DEBUG, then CONFIG_DEBUG_VM; removed in 2007 for 2.6.23 because of
  the walk's latency, so 2.6.27 checks nothing here); today's
  ``validate_mm`` (CONFIG_DEBUG_VM_RB) verifies each vma's anon_vma
  interval trees.

Not modelled: the per-task rss caches of SPLIT_RSS_COUNTING (34e55232e59f,
2.6.34) -- the model updates the mm's counters directly.
"""

from __future__ import annotations

from typing import Any

from mmemu.check import install_once
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import Simulation
from mmemu.mm.page import BadPageState, Page, PageAnon


class MapcountMismatch(BadPageState):
    """A page's _mapcount does not count the ptes that map it."""


class BadRssCounter(InvariantViolation):
    """An mm's rss counter does not count the pages its page tables map
    (the kernel's "BUG: Bad rss-counter state")."""


class BadMapCount(InvariantViolation):
    """mm->map_count, or the vm_next chain, disagrees with the vma list
    (validate_mm)."""


class BadNrPages(InvariantViolation):
    """An address_space's nrpages disagrees with the pages in its tree."""


class BadRmapList(InvariantViolation):
    """An anon_vma's head or a mapping's i_mmap disagrees with the vmas
    (a vma missing, listed twice, or listed after it was unmapped)."""


class BadSwapCount(InvariantViolation):
    """A swap slot's count disagrees with the swap ptes and the swap cache
    that hold it (a leaked slot, or a swap pte holding a freed one)."""


def _name(obj: Any) -> str:
    return str(getattr(obj, "__mmemu_name__", obj))


class CounterChecker:
    """Per-execution state (``kernel.data["counters"]``): none but the kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def at_end(self, sim: Simulation) -> None:
        self.check_map_count()
        self.check_rmap_lists()
        self.check_mapcount()
        self.check_rss()
        self.check_nrpages()
        self.check_swap_map()

    # ------------------------------------------------------------- swap_map

    def check_swap_map(self) -> None:
        from mmemu.mm.memory import populated_ptes, pte_get

        si = self.kernel.data.get("swap_info")
        if si is None:
            return  # no swap slot was ever used
        holders: dict[int, list[str]] = {}
        for mm in self.kernel.mms:
            for address in populated_ptes(mm, 0, 1 << 48):
                pte = pte_get(mm, address)
                if pte is not None and pte.swp is not None and pte.swp.type == "swap":
                    holders.setdefault(pte.swp.offset, []).append(f"{_name(mm)}@{address:#x}")
        sp = self.kernel.data.get("swapper_space")
        cached = {} if sp is None else {o: p for o, p in sp.page_tree.items() if p is not None}
        for offset in sorted(set(si.swap_map) | set(holders) | set(cached)):
            ptes = holders.get(offset, [])
            want = len(ptes) + int(offset in cached)
            have = si.swap_map.get(offset, 0)
            if have != want:
                shown = ", ".join(ptes) or "none"
                cache = (f"page{cached[offset].pfn} in the swap cache" if offset in cached
                         else "no page in the swap cache")
                what = ("a slot reference was never dropped (leaked swap space)" if have > want
                        else "a swap pte holds a slot reference that was dropped (the slot "
                             "can be given to another page, whose data the pte will read)")
                raise BadSwapCount(
                    f"at the end: swap slot {offset} has count {have} but {len(ptes)} swap "
                    f"pte(s) ({shown}) and {cache} hold it: {what}")

    # -------------------------------------------------------------- nrpages

    def check_nrpages(self) -> None:
        for mapping in self.kernel.mappings:
            tree = getattr(mapping, "page_tree", None)
            if tree is None:
                continue
            held = sum(1 for p in tree.values() if p is not None)
            if mapping.nrpages != held:
                raise BadNrPages(
                    f"at the end: {mapping.name}->nrpages is {mapping.nrpages} but its radix "
                    f"tree holds {held} page(s): an insertion or removal without its nrpages "
                    f"update (truncate_inode_pages skips a mapping whose nrpages is 0; "
                    f"clear_inode: BUG_ON(nrpages))", details=mapping.dump())

    # ------------------------------------------------------------ map_count

    def check_map_count(self) -> None:
        for mm in self.kernel.mms:
            vmas = mm.vmas()
            chain: list[Any] = []
            vma = mm.mmap
            while vma is not None and len(chain) <= len(vmas):
                chain.append(vma)
                vma = vma.vm_next
            listed = ", ".join(repr(v) for v in vmas) or "none"
            if mm.map_count != len(vmas):
                raise BadMapCount(
                    f"at the end: {_name(mm)}->map_count is {mm.map_count} but its vma list "
                    f"holds {len(vmas)} vma(s) ({listed}) (validate_mm: BUG_ON(i != "
                    f"mm->map_count))", details=repr(mm))
            if len(chain) != len(vmas) or any(a is not b for a, b in zip(chain, vmas)):
                shown = ", ".join(repr(v) for v in chain) or "none"
                raise BadMapCount(
                    f"at the end: {_name(mm)}'s vm_next chain from mm->mmap is [{shown}] but "
                    f"its vma tree holds [{listed}] (validate_mm walks the list)",
                    details=repr(mm))

    # ------------------------------------------------------------ rmap lists

    def check_rmap_lists(self) -> None:
        live = [v for mm in self.kernel.mms for v in mm.vmas()]
        live_set = set(live)
        # the anon_vmas the vmas and the anonymous pages in use lead to, in
        # the order met (a dict as an ordered set)
        anon_vmas: dict[Any, None] = {}
        for vma in live:
            if vma.anon_vma is not None:
                anon_vmas[vma.anon_vma] = None
        for page in self.kernel.page_alloc.pages:
            if not page.free and PageAnon(page) and page.mapping is not None:
                anon_vmas[page.mapping] = None
        lists = [(av, "head", av.head) for av in anon_vmas]
        lists += [(m, "i_mmap", m.i_mmap) for m in self.kernel.mappings
                  if getattr(m, "i_mmap", None) is not None]
        for owner, field, listed in lists:
            for vma in listed:
                points = vma.anon_vma if field == "head" else vma.mapping
                if points is not owner or vma not in live_set:
                    why = (f"it points to {_name(points)}" if points is not owner else
                           "it is on no mm's vma list any more (unmapped: the next walk "
                           "uses a freed vma)")
                    raise BadRmapList(
                        f"at the end: {vma!r} is on {_name(owner)}->{field} but {why}",
                        details=f"{_name(owner)}->{field}: {listed!r}")
        for vma in live:
            for owner, field in ((vma.anon_vma, "head"), (vma.mapping, "i_mmap")):
                if owner is None:
                    continue
                n = sum(1 for v in getattr(owner, field) if v is vma)
                if n != 1:
                    raise BadRmapList(
                        f"at the end: {vma!r} (of {_name(vma.vm_mm)}) is on "
                        f"{_name(owner)}->{field} {n} times: " +
                        ("its ptes are invisible to every rmap walk (reclaim, migration and "
                         "truncation miss them)" if n == 0 else "a walk visits it twice"),
                        details=f"{_name(owner)}->{field}: {getattr(owner, field)!r}")

    # ------------------------------------------------------------ _mapcount

    def _mappers(self) -> dict[Page, list[str]]:
        """page -> "mmN@address" of every present pte mapping it."""
        from mmemu.mm.memory import populated_ptes, pte_get

        out: dict[Page, list[str]] = {}
        for mm in self.kernel.mms:
            for address in populated_ptes(mm, 0, 1 << 48):
                pte = pte_get(mm, address)
                if pte is not None and pte.present and pte.page is not None:
                    out.setdefault(pte.page, []).append(f"{_name(mm)}@{address:#x}")
        return out

    def check_mapcount(self) -> None:
        mappers = self._mappers()
        pages = [p for p in self.kernel.page_alloc.pages
                 if not p.free and (p in mappers or p._mapcount.counter != -1)]
        for page in sorted(pages, key=lambda p: p.pfn):
            ptes = mappers.get(page, [])
            mapcount = page._mapcount.counter + 1
            if mapcount != len(ptes):
                shown = ", ".join(ptes) or "none"
                raise MapcountMismatch(
                    f"at the end: page{page.pfn} has _mapcount {page._mapcount.counter} "
                    f"({mapcount} mapping(s)) but {len(ptes)} present pte(s) map it "
                    f"({shown}): a page_add_*_rmap / page_remove_rmap without its pte change "
                    f"(the page will be freed while mapped, or never)", details=page.dump())

    # ------------------------------------------------------------------ rss

    def check_rss(self) -> None:
        from mmemu.mm.memory import populated_ptes, pte_get

        for mm in self.kernel.mms:
            anon = file = 0
            for address in populated_ptes(mm, 0, 1 << 48):
                pte = pte_get(mm, address)
                if pte is None:
                    continue
                if pte.present:
                    page = pte.page
                elif pte.swp is not None and pte.swp.type == "migration":
                    page = pte.swp.page  # a migration entry keeps its page's count
                else:
                    continue
                if page is None:
                    continue
                if PageAnon(page):
                    anon += 1
                else:
                    file += 1
            bad = [f"{name} is {have}, but its page tables map {want} such page(s)"
                   for name, have, want in (("anon_rss", mm.anon_rss, anon),
                                            ("file_rss", mm.file_rss, file))
                   if have != want]
            if bad:
                state = "exited" if getattr(mm, "dead", False) else "live"
                raise BadRssCounter(
                    f"at the end: {_name(mm)} ({state}): " + "; ".join(bad)
                    + " (check_mm: \"BUG: Bad rss-counter state\", since v3.5)",
                    details=repr(mm))


def install(kernel: Any) -> CounterChecker:
    """Checker installer for ``mmemu.check.boot_checked``."""
    return install_once(kernel, "counters", _hook)


def _hook(kernel: Any) -> CounterChecker:
    chk = CounterChecker(kernel)
    kernel.sim.at_end(chk.at_end)
    return chk


__all__ = ["BadMapCount", "BadNrPages", "BadRmapList", "BadSwapCount", "BadRssCounter", "CounterChecker", "MapcountMismatch", "install"]
