"""Page tables against the vmas they belong to.

Emulates: the consistency the kernel's page-table code relies on and checks
in places -- zap_pte_range's print_bad_pte / "Bad page map", exit_mmap's
``BUG_ON(mm->nr_ptes > ...)`` and the "Bad rss-counter state" of later
kernels, do_wp_page's rule that only an exclusively mapped anonymous page may
be written in place (2.6.27) -- as one sanitizer over every pte the model
writes.

Rules, for a present pte of ``mm`` at ``address``:

- it lies inside a vma of ``mm`` (``PteOutsideVma``): a pte that a fault
  installs after munmap detached and zapped the vma (a fault that did not
  hold ``mmap_sem``, or a ``down_write`` that did not wait for the readers)
  is never zapped again: the page is mapped by an address space that no
  longer maps it, and its reference is never dropped;
- in a file vma it maps the file's page at ``linear_page_index(vma,
  address)`` -- that very page, still in the pagecache -- or, in a private
  mapping, an anonymous page (a COW copy); in an anonymous vma it maps an
  anonymous page (``WrongPageInPte``);
- it is writable only if the vma is (VM_WRITE), only to an anonymous page
  in a private mapping (a writable pte to a pagecache page of a MAP_PRIVATE
  vma would write through to the file), and only to an anonymous page no
  other pte maps (a COW-shared page written in place changes the other
  mapper's memory) (``BadPtePermission``);
- a dead mm (after exit_mmap) has no ptes at all, and no migration entry
  survives its migration (``PteLeftBehind``);
- a pte is looked up only at a user address (``BadPteAddress``): an rmap
  walker (try_to_unmap_one, page_referenced_one, remove_migration_pte,
  page_idle_clear_pte_refs_one, KSM's write_protect_page/replace_page)
  turns the page's index into an address in each vma it walks with
  vma_address(), which returns -EFAULT for a vma that does not cover the
  page (the other half of a split, a mapping of another part of the file);
  a walker that goes on to page_check_address(-EFAULT) walks the page
  tables at 0xfffffffffffffff2: the kernel half of the address space, whose
  page-table pages have no PTL of their own and map no user page.  The
  model sees the pte key each step declares (an address below 0 or at
  TASK_SIZE and above);
- the page a pte is pointed at is PG_uptodate (``NotUptodatePageMapped``):
  filemap_fault returns a page only once it is uptodate (it waits for the
  read on the page lock: find_lock_page), do_swap_page maps a swap-cache
  page only after lock_page and its PageUptodate test (2.6.27; a page that
  is not is SIGBUS), a new anonymous or COW page is uptodate when it is
  filled.  A lookup that skips the page lock maps a page whose read is
  still in flight: the process sees garbage.

When: the vma rules need the vma list to be stable, and the kernel itself
has transient windows (munmap detaches a vma before it zaps it; a
migration's remove_migration_ptes may restore a pte in a vma being
unmapped, which the zap then clears), so "inside a vma" and the dead-mm
rule are checked at the end of every execution, when every CPU has
finished.  That is enough for a stale pte: nothing removes it later.  The
page and permission rules of the pte being written are checked at once, in
the step that writes it (``kernel.pte_hooks``), when a vma covers the
address; and again for every pte at the end.
"""

from __future__ import annotations

from typing import Any

from mmemu.check import install_once
from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import Simulation, current_simulation
from mmemu.mm.mmap import TASK_SIZE, VM_SHARED, VM_WRITE, find_vma, linear_page_index
from mmemu.mm.page import PG_uptodate, Page, PageAnon, page_site


class PteVmaViolation(InvariantViolation):
    """A pte that its vma (or the lack of one) does not allow."""


class PteOutsideVma(PteVmaViolation):
    """A present pte at an address no vma of the mm covers."""


class WrongPageInPte(PteVmaViolation):
    """A pte maps a page that is not the vma's page at that address."""


class BadPtePermission(PteVmaViolation):
    """A writable pte that the vma or the page's sharing forbids."""


class NotUptodatePageMapped(PteVmaViolation):
    """A pte was pointed at a page whose contents were never read in."""


class PteLeftBehind(PteVmaViolation):
    """A pte in a dead mm, or a migration entry after every CPU finished."""


class BadPteAddress(PteVmaViolation):
    """A user mm's pte looked up at an address outside the user address
    space (vma_address's -EFAULT used as an address)."""


def _name(obj: Any) -> str:
    return str(getattr(obj, "__mmemu_name__", obj))


def _cover(mm: Any, address: int) -> Any:
    vma = find_vma(mm, address)
    if vma is not None and vma.vm_start <= address:
        return vma
    return None


def page_rule(mm: Any, vma: Any, address: int, pte: Any) -> tuple[type[PteVmaViolation], str] | None:
    """The page/permission rules of one present pte in ``vma`` (None: fine)."""
    page: Page = pte.page
    where = f"{_name(mm)} pte {address:#x} in {vma!r}"
    mapping = vma.mapping
    anon = PageAnon(page)
    if mapping is not None and not anon:
        index = linear_page_index(vma, address)
        cached = mapping.page_tree.get(index) if hasattr(mapping, "page_tree") else None
        if page.mapping is not None and (page.mapping is not mapping or page.index != index
                                         or cached is not page):
            other = (f"{_name(page.mapping)}[{page.index}]" if page.mapping is not None
                     else "no file")
            held = f"page{cached.pfn}" if cached is not None else "nothing"
            return WrongPageInPte, (
                f"{where} maps page{page.pfn} ({other}), but the file's page at index "
                f"{index} (linear_page_index) is {held}")
        # page->mapping NULL: truncated, reported as MappedTruncatedPage
    elif mapping is None and not anon:
        return WrongPageInPte, (
            f"{where} maps page{page.pfn}, which is not anonymous "
            f"({_name(page.mapping) if page.mapping is not None else 'no mapping'}), in an "
            f"anonymous vma")
    elif mapping is not None and anon and vma.vm_flags & VM_SHARED:
        return WrongPageInPte, (
            f"{where} maps anonymous page{page.pfn} in a shared file mapping (only a private "
            f"mapping has COW copies)")
    if not pte.write:
        return None
    if not vma.vm_flags & VM_WRITE:
        return BadPtePermission, f"{where} is writable, but the vma has no VM_WRITE"
    if not anon and not vma.vm_flags & VM_SHARED:
        return BadPtePermission, (
            f"{where} is writable and maps pagecache page{page.pfn} in a private mapping: "
            f"writes would reach the file (no COW)")
    if anon and page._mapcount.counter > 0:
        return BadPtePermission, (
            f"{where} is writable, but anonymous page{page.pfn} is mapped by "
            f"{page._mapcount.counter + 1} ptes: a COW-shared page written in place")
    return None


class PteVmaChecker:
    """Per-execution state (``kernel.data["pte_vma"]``)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def pte_changed(self, mm: Any, address: int, old: Any, new: Any) -> None:
        """``kernel.pte_hooks``: the page/permission rules of a pte being set."""
        if new is None or not new.present or new.page is None:
            return
        if (old is None or not old.present or old.page is not new.page) \
                and not new.page.flags & PG_uptodate:
            current_simulation().fail(NotUptodatePageMapped(
                f"{_name(mm)} pte {address:#x} set at {page_site()} to page{new.page.pfn}, "
                f"which is not PG_uptodate: its read has not finished (a lookup that did not "
                f"wait on the page lock?), and the process reads garbage",
                details=new.page.dump()))
        if (old is not None and old.present and old.page is new.page
                and (old.write or not new.write)):
            # A rewrite that grants nothing new (ptep_clear_flush_young,
            # pte_mkclean, a write-protect): the pte was judged when it was
            # installed.  Judging it now against the vma would flag the
            # kernel's own windows -- mprotect sets vm_flags before
            # change_protection write-protects the ptes, and reclaim may
            # clear the young bit in between.  The end check still applies.
            return
        vma = _cover(mm, address)
        if vma is None:
            return  # judged at the end (see the module docstring)
        bad = page_rule(mm, vma, address, new)
        if bad is not None:
            cls, msg = bad
            current_simulation().fail(cls(f"{msg} (set at {page_site()})",
                                          details=new.page.dump()))

    def on_step(self, cpu: Any, label: str, reads: tuple[Any, ...],
                writes: tuple[Any, ...]) -> None:
        """``Simulation.on_step``: no step declares a pte key ``(mm, "pte",
        address)`` outside [0, TASK_SIZE)."""
        for keys in (reads, writes):
            for key in keys:
                if type(key) is tuple and len(key) == 3 and key[1] == "pte" \
                        and not 0 <= key[2] < TASK_SIZE:
                    current_simulation().fail(BadPteAddress(
                        f"{cpu.title} step {label!r} looks up {_name(key[0])}'s pte at "
                        f"{key[2] % (1 << 64):#x}, outside the user address space: an "
                        f"-EFAULT from vma_address() (a vma that does not cover the page) "
                        f"used as an address -- the kernel would walk its own page tables "
                        f"and take a PTL that is not there"))

    # kernel.notifier_hooks (see mmemu.mm.mmu_notifier._report)

    def notifier_event(self, event: str, mm: Any, *args: Any) -> None:
        if event == "range_start_begin":
            start, end = args
            if not 0 <= start < end <= TASK_SIZE:
                current_simulation().fail(BadPteAddress(
                    f"invalidate_range_start of {_name(mm)} at {page_site()} for "
                    f"[{start % (1 << 64):#x}, {end % (1 << 64):#x}): not a range of user "
                    f"addresses (an -EFAULT from vma_address() used as its start?)"))
        elif event in ("page_invalidated", "change_pte") and not 0 <= args[0] < TASK_SIZE:
            current_simulation().fail(BadPteAddress(
                f"{event} of {_name(mm)} at {page_site()} for {args[0] % (1 << 64):#x}: not a "
                f"user address (an -EFAULT from vma_address() used as an address?)"))

    def callback_begin(self, mm: Any, mn: Any, what: str, args: tuple[Any, ...]) -> None:
        pass

    def callback_end(self, mm: Any, mn: Any, what: str, args: tuple[Any, ...],
                     ret: Any) -> None:
        pass

    def at_end(self, sim: Simulation) -> None:
        from mmemu.mm.memory import populated_ptes, pte_get

        for mm in self.kernel.mms:
            for address in populated_ptes(mm, 0, 1 << 48):
                pte = pte_get(mm, address)
                if pte is None:
                    continue
                details = pte.page.dump() if pte.page is not None else ""
                if getattr(mm, "dead", False):
                    raise PteLeftBehind(
                        f"at the end: {_name(mm)} has exited (exit_mmap) but its pte at "
                        f"{address:#x} is still {pte!r}: nothing will ever clear it",
                        details=details)
                if not pte.present:
                    swp = getattr(pte, "swp", None)
                    if getattr(swp, "type", None) == "migration":
                        raise PteLeftBehind(
                            f"at the end: {_name(mm)} pte {address:#x} is still {pte!r}: "
                            f"remove_migration_ptes never restored it", details=details)
                    continue
                vma = _cover(mm, address)
                if vma is None:
                    vmas = ", ".join(repr(v) for v in mm.vmas()) or "none"
                    raise PteOutsideVma(
                        f"at the end: {_name(mm)} pte {address:#x} maps page"
                        f"{pte.page.pfn if pte.page is not None else '?'}, but no vma covers "
                        f"{address:#x} (vmas: {vmas}): a pte set after its vma was unmapped "
                        f"(a fault not serialised against munmap by mmap_sem?)",
                        details=details)
                if pte.page is None:
                    continue
                bad = page_rule(mm, vma, address, pte)
                if bad is not None:
                    cls, msg = bad
                    raise cls(f"at the end: {msg}", details=details)


def install(kernel: Any) -> PteVmaChecker:
    """Checker installer for ``mmemu.check.boot_checked``."""
    return install_once(kernel, "pte_vma", _hook)


def _hook(kernel: Any) -> PteVmaChecker:
    chk = PteVmaChecker(kernel)
    kernel.pte_hooks.append(chk.pte_changed)
    kernel.sim.on_step(chk.on_step)
    kernel.notifier_hooks.append(chk)
    kernel.sim.at_end(chk.at_end)
    return chk


__all__ = ["BadPteAddress", "BadPtePermission", "NotUptodatePageMapped", "PteLeftBehind", "PteOutsideVma", "PteVmaChecker",
           "PteVmaViolation", "WrongPageInPte", "install", "page_rule"]
