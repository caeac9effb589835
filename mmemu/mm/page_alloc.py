"""The page allocator, with hot (LIFO) reuse.

Emulates: mm/page_alloc.c (2.6.27): __alloc_pages / __free_pages for order 0

The free list is a stack: a freed page is the next one handed out, as the
per-CPU hot lists make it in the kernel.  That is what makes a use-after-free
visible at once: whoever still holds a stale pointer or translation to a freed
page sees it reused for something else on the next allocation.

Checkers hook the two moments that matter (``Kernel.free_hooks`` and
``Kernel.alloc_hooks``): a page returning to the allocator, and a free page
being reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmemu.engine._errors import InvariantViolation
from mmemu.engine._execution import annotate, current_simulation, recording, step, touch
from mmemu.mm.page import BadPageState, Page, page_site

if TYPE_CHECKING:
    from mmemu.mm.init import Kernel


class OutOfMemory(InvariantViolation):
    """The emulated machine ran out of pages (make the scenario's npages larger)."""


class PageAllocator:
    """Order-0 pages of one emulated machine."""

    __mmemu_name__ = "page_alloc"

    def __init__(self, kernel: Kernel, npages: int) -> None:
        self.kernel = kernel
        self.npages = npages
        #: the Page objects created so far, by pfn.  A page is created the
        #: first time it is handed out (a big machine costs nothing until used).
        self.pages: list[Page] = []
        # the stack of freed pages: the page freed last is handed out first;
        # when it is empty, never-used pages follow in pfn order (pfn 0 first)
        self.free_list: list[Page] = []
        #: pfn -> step of its last free, for trace flows (only when recording)
        self.freed_at: dict[int, int] = {}

    def take(self) -> Page:
        if self.free_list:
            page = self.free_list.pop()
        elif len(self.pages) < self.npages:
            page = Page(len(self.pages))
            self.pages.append(page)
        else:
            raise OutOfMemory(f"out of memory: all {self.npages} pages are in use")
        page.free = False
        page.gen += 1
        page.flags = 0
        page.mapping = None
        page.index = 0
        page.private = None
        page._count.counter = 1
        page._mapcount.counter = -1
        page.history.append(("alloc", page_site()))
        if recording():
            freed = self.freed_at.pop(page.pfn, None)
            if freed is not None:
                annotate("flow", name="page free -> reuse", src=freed, object=page.__mmemu_name__)
        for hook in self.kernel.alloc_hooks:
            hook(page)
        return page

    def give_back(self, page: Page) -> None:
        if page.free:
            current_simulation().fail(BadPageState(
                f"double free of page{page.pfn} at {page_site()}", details=page.dump()))
        page.history.append(("free", page_site()))
        for hook in self.kernel.free_hooks:
            hook(page)
        page.free = True
        self.free_list.append(page)
        if recording():
            self.freed_at[page.pfn] = max(current_simulation().steps - 1, 0)


def _allocator() -> PageAllocator:
    kernel = current_simulation().data.get("kernel")
    if kernel is None:
        from mmemu.engine._errors import ModelError
        raise ModelError("no emulated kernel: call mmemu.mm.init.boot(sim) in the scenario first")
    return kernel.page_alloc  # type: ignore[no-any-return]


async def alloc_page(*, label: str = "alloc_page") -> Page:
    """Allocate a page with a count of one (a step: it takes from the shared free list)."""
    alloc = _allocator()
    # Declare the page on top of the free list too: a step that could hand
    # out another page must write the free list first, which conflicts with
    # this declaration, so the guess is safe; touch() records the real one.
    top = alloc.free_list[-1] if alloc.free_list else None
    declared: tuple[object, ...] = (alloc,) if top is None else (
        alloc, top._count, top.flags_key, top.mapping_key)
    await step(label, writes=declared)
    page = alloc.take()
    if page is not top:
        touch(writes=(page._count, page.flags_key, page.mapping_key))
    return page


def alloc_page_setup() -> Page:
    """Allocate in the scenario's own setup code (no step)."""
    return _allocator().take()


def __free_page(page: Page) -> None:
    """Return a page whose count reached zero.  Runs inside the step that
    dropped the last reference (put_page, or reclaim after freezing)."""
    _allocator().give_back(page)


free_hot_page = __free_page
