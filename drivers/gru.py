"""SGI GRU as a secondary MMU: a per-context TLB filled by dropins, kept coherent by mmu notifiers.

Emulates: drivers/misc/sgi-gru/grutlbpurge.c (gru_invalidate_range_start/end,
gru_invalidate_page, gru_release, gru_flush_tlb_range), drivers/misc/sgi-gru/
grufault.c (gru_handle_user_call_os, gru_user_dropin, gru_try_dropin,
atomic_pte_lookup, non_atomic_pte_lookup) (2.6.27)

The GRU is a memory-access coprocessor that translates user virtual addresses
through its own TLB.  On a TLB miss the kernel "drops in" an entry
(``gru_try_dropin``): it reads the CPU page table (no page reference is kept:
GRU TLB entries do not pin pages, like KVM's sptes) and writes the entry
through the TLB fault handle (``tfh_write_restart``).  No lock orders a
dropin against an invalidate.  Two things do:

- ``gms->ms_range_active`` (an atomic_t): raised by range_start before it
  flushes, lowered by range_end.  A dropin that sees it non-zero is refused
  and the user path sleeps on ``gms->ms_wait_queue`` until it is 0.
- the hardware: "If an invalidate occurs in the window between reading the
  TFH and the subsequent TLB dropin, the dropin is ignored."  The emulated
  GRU models that with a per-context flush generation (``hw_flush_gen``)
  that every TLB invalidate (``gru_flush_tlb_range``) bumps; the dropin
  records it when it reads the TFH, and the TLB write is discarded if it
  changed.

Dropin side (``fault``: gru_handle_user_call_os -> gru_user_dropin, under
``mmap_sem`` for read, taken by gru_find_lock_gts):
  D0. wait_event(ms_wait_queue, atomic_read(ms_range_active) == 0)
  D1. read the TFH (missvaddr): the hardware arms the dropin (records the
      context's flush generation); ms_released: the mm is gone, -EFAULT
  D2. if atomic_read(ms_range_active): failactive, back to D0
  D3. find_vma; atomic_pte_lookup: the pte, read without the PTL and
      without a page reference
  D4. not present (or a write to a clean/read-only pte):
      non_atomic_pte_lookup: get_user_pages, then put_page (no pin kept)
  D5. tfh_write_restart: the hardware writes the TLB entry, unless a TLB
      invalidate hit the context since D1 (the dropin is ignored; the CB
      misses again and the user path goes back to D0)

Invalidate side (the notifier callbacks):
  S1. range_start: atomic_inc(ms_range_active)
  S2. range_start: gru_flush_tlb_range(start, end - start)
      (the CPU pte is cleared and the page may be freed after S2, before E1)
  E1. range_end: atomic_dec_and_test(ms_range_active)
  E2. range_end: wake_up_all(ms_wait_queue)
  P.  invalidate_page: gru_flush_tlb_range(address, PAGE_SIZE) (the pte is
      already cleared; the page is freed after P returns)
  R.  release: ms_released = 1; gru_flush_tlb_range of everything

There are 3 critical interleavings that matter:
 - D2 between S1 and E1: the dropin is refused and waits at D0 for E2.  The
   pte D3 would read may still map the page (S2 ran, the zap has not), and
   after the zap no flush follows until the next invalidation.  Ignoring
   ms_range_active (mutant ``gru:no-range-active``) lets D1..D5 run between
   S2 and the zap: no flush since D1, the entry is written, the zap frees
   the page under it.
 - D1 before a flush (S2, P or R) and D5 after it: D3 may have read the pte
   before it was cleared; the hardware ignores the dropin.  Keeping it
   (mutant ``gru:no-dropin-drop``) leaves an entry that the flush already
   swept: the page is freed under it.
 - D1..D2 against S1..S2 is a Dekker pair: if D2 reads 0 it ran before S1,
   so D1 precedes S2 and any D5 after S2 is dropped.  Recording the
   generation after D2, or flushing before the inc, would let a dropin slip
   between the two.

Harmless: D5 before S2 or P (the flush zaps the new entry); D3 after the
zap (pte none: D4 faults it in again, or fails: -EFAULT); R anywhere (D1 sees
ms_released, or R's flush drops or zaps the dropin); E2 with nobody waiting.

Modelling notes: the notifier is the GRU's per-mm ``struct gru_mm_struct``
(the driver object); its one context (``struct gru_thread_state``) owns the
TLB.  ``gru_flush_tlb_range`` is one step (the TGH lock serialises
invalidates; ``ms_asid_lock`` is not modelled).  2.6.27's gru_release only
sets ms_released; the context's entries die when exit unloads it
(gru_vma_close -> gru_unload_context drops its ASID).  The model flushes in
->release, the last moment the driver hears of the mm.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import mmemu
from mmemu.check.shadow_tlb import ShadowTLB
from mmemu.driver import Driver
from mmemu.engine._execution import step, touch
from mmemu.kernel.atomic import atomic_dec_and_test, atomic_inc, atomic_read, atomic_t
from mmemu.kernel.locking import WaitQueueHead, down_read, up_read, wait_event, wake_up_all
from mmemu.mm.memory import get_user_pages, pmd_key, pte_get, pte_key
from mmemu.mm.mmap import find_vma
from mmemu.mm.page import Page, put_page

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

NO_RANGE_ACTIVE = mmemu.register_mutant(
    "gru:no-range-active",
    "gru_try_dropin ignores gms->ms_range_active and drops in during a range invalidate",
    caught_as="FreedPageStillMapped (a TLB entry written between range_start's flush and "
              "the zap of the pte, to a page freed before range_end)",
    doc="The dropin reads the pte between gru_invalidate_range_start's "
        "gru_flush_tlb_range and the zap: no invalidate hit the context since the "
        "TFH was read, so the hardware keeps the entry, and nothing flushes it "
        "before the page is freed.  The user path's D0 wait stays: the dropin "
        "passes it before S1 (as gru_intr's dropin, which never waits, would "
        "anywhere).")
NO_DROPIN_DROP = mmemu.register_mutant(
    "gru:no-dropin-drop",
    "the emulated GRU keeps a TLB dropin that a TLB invalidate overtook",
    caught_as="FreedPageStillMapped / SecondaryUseAfterFree (a TLB entry written after "
              "the flush that should have removed it)",
    doc="The dropin reads the pte before it is cleared and writes the TLB entry "
        "after the invalidate's gru_flush_tlb_range; real GRU hardware ignores such "
        "a dropin, without that the entry outlives the page.")


class GruThreadState:
    """``struct gru_thread_state``: one GRU context of the mm, with its TLB
    (the framework's ShadowTLB) and the hardware's invalidate generation."""

    def __init__(self, tlb: ShadowTLB, name: str) -> None:
        self.tlb = tlb
        #: emulated hardware: bumped by every TLB invalidate of this context
        self.hw_flush_gen = 0
        self.gen_key: Hashable = (self, "hw_flush_gen")
        self.__mmemu_name__ = name


class GruDriver(Driver):
    """``struct gru_mm_struct`` (the notifier) with one GRU context."""

    name = "gru"
    key_name = "va"
    #: mmu-notifier API generations this driver implements
    apis = ("2.6.27",)

    def __init__(self) -> None:
        super().__init__()
        self.ms_range_active = atomic_t(0, "gms->ms_range_active")
        self.ms_wait_queue = WaitQueueHead("gms->ms_wait_queue")
        self.ms_released = 0
        self.released_key: Hashable = (self, "ms_released")
        self.gts = GruThreadState(self.tlb, "gru.gts")

    # ---------------------------------------------------------- TLB flushing

    async def gru_flush_tlb_range(self, start: int, length: int, label: str) -> None:
        """tgh_invalidate of every context of the mm: zap the entries of
        [start, start + length) and bump the hardware flush generation (a
        dropin armed before this is ignored).  One step."""
        gts = self.gts
        end = start + length

        def in_range() -> list[Hashable]:
            return [k for k in gts.tlb.keys() if isinstance(k, int) and start <= k < end]

        acc = gts.tlb.zap_accesses(in_range())
        # every TLB write (D5) reads gen_key: the declared write orders this
        # step against any dropin that changes what it zaps
        await step(label, reads=acc["reads"], writes=acc["writes"] + (gts.gen_key,))
        keys = in_range()
        got = gts.tlb.zap_accesses(keys)
        touch(reads=got["reads"], writes=got["writes"])
        gts.hw_flush_gen += 1
        for k in keys:
            gts.tlb.zap(k)

    # ------------------------------------------------------ the notifier ops

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        """gru_invalidate_range_start: S1, S2."""
        await atomic_inc(self.ms_range_active, label="S1. atomic_inc(ms_range_active)")
        await self.gru_flush_tlb_range(start, end - start,
                                       f"S2. gru_flush_tlb_range({start:#x}, {end - start:#x})")

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        """gru_invalidate_range_end: E1, E2."""
        await atomic_dec_and_test(self.ms_range_active,
                                  label="E1. atomic_dec_and_test(ms_range_active)")
        await wake_up_all(self.ms_wait_queue, label="E2. wake_up_all(ms_wait_queue)")

    async def invalidate_page(self, mm: Any, address: int) -> None:
        """gru_invalidate_page: P."""
        va = address & PAGE_MASK
        await self.gru_flush_tlb_range(va, PAGE_SIZE, f"P. gru_flush_tlb_range({va:#x}, PAGE_SIZE)")

    async def release(self, mm: Any) -> None:
        """gru_release: R."""
        await step("R. gms->ms_released = 1", writes=(self.released_key,))
        self.ms_released = 1
        await self.gru_flush_tlb_range(0, 1 << 64, "R. gru_flush_tlb_range (all)")

    # ------------------------------------------------------------ the dropin

    async def fault(self, address: int, write: bool = False) -> bool:
        """gru_handle_user_call_os: a CB took a TLB miss on ``address``;
        True once a TLB entry is in, False on -EFAULT."""
        mm = self.mm
        with mmemu.span("gru_handle_user_call_os"):
            await down_read(mm.mmap_sem, label="gru_find_lock_gts: down_read(mmap_sem)")
            ret = await self.gru_user_dropin(address & PAGE_MASK, write)
            await up_read(mm.mmap_sem, label="gru_unlock_gts: up_read(mmap_sem)")
            return ret

    async def gru_user_dropin(self, vaddr: int, write: bool) -> bool:
        """Wait for no range invalidate, try the dropin; again while it is
        refused (failactive) or the hardware ignored it."""
        active = self.ms_range_active
        while True:
            await wait_event(self.ms_wait_queue, lambda: active.counter == 0,
                             label="D0. wait_event(ms_wait_queue, ms_range_active == 0)",
                             reads=(active,))
            ret = await self.gru_try_dropin(vaddr, write)
            if ret is not None:
                return ret

    async def gru_try_dropin(self, vaddr: int, write: bool) -> bool | None:
        """True: dropped in; False: -EFAULT; None: refused (range active) or
        ignored by the hardware: the user path retries."""
        gts = self.gts
        with mmemu.span("gru_try_dropin"):
            await step(f"D1. read the TFH (missvaddr {vaddr:#x}); ms_released?",
                       reads=(gts.gen_key, self.released_key))
            armed_gen = gts.hw_flush_gen
            if self.ms_released:
                return False
            ignore_active = mmemu.mutant(NO_RANGE_ACTIVE)
            if await atomic_read(self.ms_range_active,
                                 label="D2. atomic_read(ms_range_active)") and not ignore_active:
                return None  # failactive
            page = await self.gru_vtop(vaddr, write)
            if page is None:
                return False  # failinval: -EFAULT
            return await self.tfh_write_restart(vaddr, page, write, armed_gen)

    async def gru_vtop(self, vaddr: int, write: bool) -> Page | None:
        """D3 (atomic_pte_lookup), else D4 (non_atomic_pte_lookup): the page
        mapped at ``vaddr``, without a reference; None: -EFAULT."""
        mm = self.mm
        await step("D3. find_vma; atomic_pte_lookup",
                   reads=((mm, "mmap"), pmd_key(mm, vaddr), pte_key(mm, vaddr)))
        vma = find_vma(mm, vaddr)
        if vma is None or vma.vm_start > vaddr:
            return None
        pte = pte_get(mm, vaddr)
        if pte is not None and pte.present and pte.page is not None and \
                (not write or (pte.write and pte.dirty)):
            return pte.page
        return await self.non_atomic_pte_lookup(vaddr, write)

    async def non_atomic_pte_lookup(self, vaddr: int, write: bool) -> Page | None:
        """D4. get_user_pages (faults the page in), then put_page: the
        physical address is kept, the reference is not."""
        page = await get_user_pages(self.mm, vaddr, write)
        if page is None:
            return None
        await put_page(page, label=f"D4. non_atomic_pte_lookup: put_page(page{page.pfn})")
        return page

    async def tfh_write_restart(self, vaddr: int, page: Page, write: bool,
                                armed_gen: int) -> bool | None:
        """D5. the hardware writes the TLB entry, or ignores the dropin if a
        TLB invalidate hit the context since the TFH was read (D1)."""
        gts = self.gts
        acc = gts.tlb.install_accesses(vaddr, page)
        await step(f"D5. tfh_write_restart(va {vaddr:#x} -> page{page.pfn})",
                   reads=acc["reads"] + (gts.gen_key,), writes=acc["writes"])
        if gts.hw_flush_gen != armed_gen and not mmemu.mutant(NO_DROPIN_DROP):
            return None  # ignored by the hardware: the CB misses again
        gts.tlb.install(vaddr, page, writable=write)
        return True


__all__ = ["GruDriver", "GruThreadState", "NO_DROPIN_DROP", "NO_RANGE_ACTIVE"]
