"""SGI GRU as a secondary MMU: a per-context TLB filled by dropins, kept coherent by mmu notifiers.

Emulates: drivers/misc/sgi-gru/grutlbpurge.c (gru_invalidate_range_start/end,
gru_invalidate_page, gru_release, gru_flush_tlb_range), drivers/misc/sgi-gru/
grufault.c (gru_handle_user_call_os, gru_user_dropin, gru_try_dropin,
atomic_pte_lookup, non_atomic_pte_lookup) (2.6.27); and, in the modern
generation, the same files as today's kernel has them (since "misc/sgi-gru:
use mmu_notifier_get/put for struct gru_mm_struct", v5.4): gru_mmuops with
only ->invalidate_range_start/end and ->alloc_notifier/->free_notifier,
gru_register_mmu_notifier = mmu_notifier_get_locked, gru_drop_mmu_notifier
= mmu_notifier_put, no ->release, no ->invalidate_page, no ms_released

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

The modern generation: one ``struct gru_mm_struct`` per mm, shared by every
GRU context of the mm: ``mmu_notifier_get_locked(&gru_mmuops, mm)`` (under
mmap_sem for write) allocates it on the first attach (``gru_alloc_notifier``)
and finds it on the next (users++); ``mmu_notifier_put`` on the last detach
unhashes it and frees it (``gru_free_notifier``) after an SRCU grace period.
Its ->invalidate_range_start/end do S1/S2 and E1/E2 for all the mm's
contexts.  Without ->release, exit_mmap's unmap_vmas bracket (UNMAP over the
whole address space) is what flushes the TLBs; a dropin after it finds no
vma (D3: -EFAULT).  D1 has no ms_released test.

Not modelled, modern: what ends the TLB entries of a dying mm.  exit_mmap's
mmu_notifier_release unhashes the gms (GRU has no ->release since v5.4), so
neither that nor exit's unmap_vmas bracket reaches it; the entries die with
the context when exit_mmap's remove_vma closes the GRU's own vma
(gru_vma_close -> gru_unload_context), after the mm's pages were unmapped
and possibly freed -- harmless because no thread of the dying mm can issue a
GRU instruction any more.  The model has no device vmas and no "can no
longer be used" notion for a translation, so notifier:exit-vs-reclaim, whose
check is that the driver dropped every translation by the end of exit, does
not run GRU in the modern generation (``no_release_apis``).

Modelling notes: in the 2.6.27 generation the notifier is the driver object
with its own gru_mm_struct (2.6.27's sharing of one gms per mm through
mmu_find_ops and ms_refcnt is not modelled there); each driver instance has
one context (``struct gru_thread_state``) that owns the TLB.
``gru_flush_tlb_range`` is one step (the TGH lock serialises invalidates;
``ms_asid_lock`` is not modelled).  2.6.27's gru_release only sets
ms_released; the context's entries die when exit unloads it (gru_vma_close
-> gru_unload_context drops its ASID).  The model flushes in ->release, the
last moment the driver hears of the mm.  A detach unloads the context (its
TLB entries go with its ASID) before it drops the notifier.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import mmemu
from mmemu import step
from mmemu.driver import (
    Driver,
    MmuNotifier,
    MmuNotifierOps,
    MmuNotifierRange,
    Page,
    ShadowTLB,
    WaitQueueHead,
    atomic_dec_and_test,
    atomic_inc,
    atomic_read,
    atomic_t,
    down_read,
    down_read_trylock,
    down_write,
    find_vma,
    get_user_pages,
    guarded,
    mmu_notifier_get_locked,
    mmu_notifier_put,
    pmd_key,
    pte_get,
    pte_key,
    put_page,
    register_tlb,
    up_read,
    up_write,
    wait_event,
    wake_up_all,
)
from mmemu.lowlevel import reach, touch

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

#: a dropin found the mm released (2.6.27's ms_released)
GRU_DROPIN_RELEASED = "gru: a dropin found ms_released set: -EFAULT"

#: gru_vtop's answer from the interrupt when the atomic lookup cannot use
#: the pte (the kernel's VTOP_RETRY: gru_try_dropin then fails to user
#: polling mode)
VTOP_RETRY = "VTOP_RETRY"

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


class GruMmStruct(MmuNotifier):
    """``struct gru_mm_struct``: the notifier of one mm and the state its
    dropins test (``ms_range_active``, ``ms_wait_queue``; 2.6.27:
    ``ms_released``), with the contexts (``gts``) of the mm whose TLBs a
    range invalidation flushes.  Modern: allocated by gru_alloc_notifier and
    shared by every GRU context of the mm."""

    def __init__(self, ops: MmuNotifierOps, name: str = "gms") -> None:
        super().__init__(ops, name=name)
        self.ms_range_active = atomic_t(0, f"{name}->ms_range_active")
        self.ms_wait_queue = WaitQueueHead(f"{name}->ms_wait_queue")
        self.ms_released = 0
        self.released_key: Hashable = (self, "ms_released")
        #: the GRU contexts of the mm, and the drivers that own them
        self.contexts: list[GruThreadState] = []
        self.drivers: list[GruDriver] = []


async def gru_flush_tlb_range(gms: GruMmStruct, start: int, length: int, label: str) -> None:
    """tgh_invalidate of every context of the mm: zap the entries of
    [start, start + length) and bump each context's hardware flush
    generation (a dropin armed before this is ignored).  One step."""
    end = start + length

    def in_range(gts: GruThreadState) -> list[Hashable]:
        return [k for k in gts.tlb.keys() if isinstance(k, int) and start <= k < end]

    reads: tuple[Hashable, ...] = ()
    writes: tuple[Hashable, ...] = ()
    for gts in gms.contexts:
        acc = gts.tlb.zap_accesses(in_range(gts))
        # every TLB write (D5) reads gen_key: the declared write orders this
        # step against any dropin that changes what it zaps
        reads += acc["reads"]
        writes += acc["writes"] + (gts.gen_key,)
    await step(label, reads=reads, writes=writes)
    for gts in gms.contexts:
        keys = in_range(gts)
        got = gts.tlb.zap_accesses(keys)
        touch(reads=got["reads"], writes=got["writes"])
        gts.hw_flush_gen += 1
        for k in keys:
            gts.tlb.zap(k)


async def gru_invalidate_range_start(gms: GruMmStruct, start: int, end: int) -> None:
    """S1, S2."""
    await atomic_inc(gms.ms_range_active, label="S1. atomic_inc(ms_range_active)")
    await gru_flush_tlb_range(gms, start, end - start,
                              f"S2. gru_flush_tlb_range({start:#x}, {end - start:#x})")


async def gru_invalidate_range_end(gms: GruMmStruct) -> None:
    """E1, E2 ("..._and_test() provides needed barrier")."""
    await atomic_dec_and_test(gms.ms_range_active,
                              label="E1. atomic_dec_and_test(ms_range_active)")
    await wake_up_all(gms.ms_wait_queue, label="E2. wake_up_all(ms_wait_queue)")


# ------------------------------------------ modern: gru_mmuops, get / put


def _gms_driver(gms: GruMmStruct) -> GruDriver | None:
    return gms.drivers[0] if gms.drivers else None


async def _modern_range_start(mn: MmuNotifier, range: MmuNotifierRange) -> int:
    assert isinstance(mn, GruMmStruct)
    d = _gms_driver(mn)
    if d is None:
        await gru_invalidate_range_start(mn, range.start, range.end)
    else:
        await guarded(d, "->invalidate_range_start", gru_invalidate_range_start, mn,
                      range.start, range.end)
    return 0


async def _modern_range_end(mn: MmuNotifier, range: MmuNotifierRange) -> None:
    assert isinstance(mn, GruMmStruct)
    d = _gms_driver(mn)
    if d is None:
        await gru_invalidate_range_end(mn)
    else:
        await guarded(d, "->invalidate_range_end", gru_invalidate_range_end, mn)


def gru_alloc_notifier(mm: Any) -> MmuNotifier:
    """->alloc_notifier: a new gru_mm_struct for ``mm`` (kzalloc)."""
    return GruMmStruct(gru_mmuops(mm.kernel), name=f"gms({getattr(mm, '__mmemu_name__', 'mm')})")


def gru_free_notifier(mn: MmuNotifier) -> None:
    """->free_notifier (kfree), run by mmu_notifier_put's SRCU callback."""


def _new_gru_mmuops() -> MmuNotifierOps:
    return MmuNotifierOps(invalidate_range_start=_modern_range_start,
                          invalidate_range_end=_modern_range_end,
                          alloc_notifier=gru_alloc_notifier,
                          free_notifier=gru_free_notifier)


#: the shape of gru_mmuops (modern), for reading; the table the emulated
#: kernel uses is gru_mmuops(kernel)
GRU_MMUOPS = _new_gru_mmuops()


def gru_mmuops(kernel: Any) -> MmuNotifierOps:
    """``static const struct mmu_notifier_ops gru_mmuops`` of one emulated
    machine: one table for every GRU context (mmu_notifier_get finds the
    mm's gms by it), made afresh for each execution so that nothing a
    scenario does to it outlives the execution."""
    ops = kernel.data.get("gru_mmuops")
    if ops is None:
        ops = kernel.data["gru_mmuops"] = _new_gru_mmuops()
    assert isinstance(ops, MmuNotifierOps)
    return ops


class GruDriver(Driver):
    """One GRU context (``struct gru_thread_state``) of an mm and its
    ``struct gru_mm_struct``: the driver's own in the 2.6.27 generation
    (registered as the driver's notifier), the mm's shared one in the modern
    generation (mmu_notifier_get)."""

    name = "gru"
    key_name = "va"
    #: mmu-notifier API generations this driver implements
    apis = ("2.6.27", "modern")
    #: generations whose gru_mmuops have no ->release (notifier:exit-vs-reclaim
    #: does not take them: see "Not modelled" in the module docstring)
    no_release_apis = ("modern",)
    #: generations whose detach is mmu_notifier_unregister; the modern one is
    #: mmu_notifier_put, which does not wait for walkers (the gms is freed
    #: after an SRCU grace period): a callback may still run after it returned
    unregister_apis = ("2.6.27",)

    def __init__(self) -> None:
        super().__init__()
        self.gts = GruThreadState(self.tlb, f"{self.name}.gts")
        # 2.6.27: this driver's own gms (its callbacks are the methods below);
        # modern: replaced at attach by the mm's shared one
        self.gms = GruMmStruct(self.mn.ops, name="gms")
        self.gms.contexts.append(self.gts)
        self.gms.drivers.append(self)

    # the state the dropin tests lives in the gms
    @property
    def ms_range_active(self) -> atomic_t:
        return self.gms.ms_range_active

    @property
    def ms_wait_queue(self) -> WaitQueueHead:
        return self.gms.ms_wait_queue

    @property
    def ms_released(self) -> int:
        return self.gms.ms_released

    @property
    def released_key(self) -> Hashable:
        return self.gms.released_key

    def _modern(self) -> bool:
        return getattr(self.kernel, "api", "2.6.27") == "modern"

    # ------------------------------------------------------ attach, detach

    async def attach(self, kernel: Any, mm: Any) -> int:
        """2.6.27: register this driver's notifier (mmu_notifier_register).
        Modern: gru_register_mmu_notifier -- mmu_notifier_get_locked under
        mmap_sem for write: the mm's gms, allocated by the first context."""
        self.kernel = kernel
        if not self._modern():
            return await super().attach(kernel, mm)
        self.mm = mm
        self.check_api(kernel)
        register_tlb(kernel, self.tlb)
        await down_write(mm.mmap_sem, label="gru_alloc_gts: down_write(mmap_sem)")
        ret = await mmu_notifier_get_locked(gru_mmuops(kernel), mm)
        await up_write(mm.mmap_sem, label="gru_alloc_gts: up_write(mmap_sem)")
        if isinstance(ret, int):
            return ret
        assert isinstance(ret, GruMmStruct)
        await step("gru_alloc_gts: gts->ts_gms = gms", writes=(ret,))
        self.gms = ret
        if ret.owner is None:
            ret.owner = self  # the context that allocated it
        ret.contexts.append(self.gts)
        ret.drivers.append(self)
        return 0

    async def detach(self) -> None:
        """2.6.27: mmu_notifier_unregister (->release flushes).  Modern:
        gru_unload_context (the context's TLB entries go with its ASID),
        then gru_drop_mmu_notifier -- mmu_notifier_put."""
        if not self._modern():
            await super().detach()
            return
        gms = self.gms
        acc = self.tlb.zap_accesses(self.tlb.keys())
        await step("gru_unload_context: the context's TLB entries go with its ASID",
                   reads=acc["reads"], writes=acc["writes"] + (gms, self.gts.gen_key))
        self.gts.hw_flush_gen += 1
        self.tlb.zap_all()
        gms.contexts.remove(self.gts)
        gms.drivers.remove(self)
        await mmu_notifier_put(gms)

    # ---------------------------------------------------------- TLB flushing

    async def gru_flush_tlb_range(self, start: int, length: int, label: str) -> None:
        await gru_flush_tlb_range(self.gms, start, length, label)

    # ------------------------------------------- the notifier ops (2.6.27)

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        """gru_invalidate_range_start: S1, S2."""
        await gru_invalidate_range_start(self.gms, start, end)

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        """gru_invalidate_range_end: E1, E2."""
        await gru_invalidate_range_end(self.gms)

    async def invalidate_page(self, mm: Any, address: int) -> None:
        """gru_invalidate_page: P."""
        va = address & PAGE_MASK
        await self.gru_flush_tlb_range(va, PAGE_SIZE, f"P. gru_flush_tlb_range({va:#x}, PAGE_SIZE)")

    async def release(self, mm: Any) -> None:
        """gru_release: R."""
        await step("R. gms->ms_released = 1", writes=(self.released_key,))
        self.gms.ms_released = 1
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

    async def device_fault(self, address: int, write: bool = False) -> bool:
        """gru_intr: the GRU raised a TLB-miss interrupt for a CB of this
        context -- an instruction issued earlier, so it can arrive while the
        process exits.  In interrupt context: mmap_sem only by trylock, and
        gru_try_dropin with the atomic pte lookup only (D3, no D4: no
        get_user_pages in an interrupt).  Whatever fails (the trylock, an
        active range, a pte D3 cannot use) switches the TFH to user polling
        mode: the user's call-OS path retries later (not modelled: False)."""
        mm = self.mm
        with mmemu.span("gru_intr"):
            if not await down_read_trylock(mm.mmap_sem,
                                           label="gru_intr: down_read_trylock(mmap_sem)"):
                return False  # tfh_user_polling_mode
            ret = await self.gru_try_dropin(address & PAGE_MASK, write, atomic=True)
            await up_read(mm.mmap_sem, label="gru_intr: up_read(mmap_sem)")
            return bool(ret)

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

    async def gru_try_dropin(self, vaddr: int, write: bool,
                             atomic: bool = False) -> bool | None:
        """True: dropped in; False: -EFAULT; None: refused (range active) or
        ignored by the hardware: the user path retries.  ``atomic``: from
        the interrupt (gru_intr), where D3 alone must do (failupm: None)."""
        gts = self.gts
        with mmemu.span("gru_try_dropin"):
            await step(f"D1. read the TFH (missvaddr {vaddr:#x}); ms_released?",
                       reads=(gts.gen_key, self.released_key))
            armed_gen = gts.hw_flush_gen
            if self.ms_released:
                reach(GRU_DROPIN_RELEASED)
                return False
            ignore_active = mmemu.mutant(NO_RANGE_ACTIVE)
            if await atomic_read(self.ms_range_active,
                                 label="D2. atomic_read(ms_range_active)") and not ignore_active:
                reach("gru: a dropin was refused, a range invalidate is active (failactive)")
                return None  # failactive
            page = await self.gru_vtop(vaddr, write, atomic)
            if isinstance(page, str):  # VTOP_RETRY
                return None  # failupm: the user path takes it from here
            if page is None:
                return False  # failinval: -EFAULT
            return await self.tfh_write_restart(vaddr, page, write, armed_gen)

    async def gru_vtop(self, vaddr: int, write: bool, atomic: bool = False) -> Page | str | None:
        """D3 (atomic_pte_lookup), else D4 (non_atomic_pte_lookup): the page
        mapped at ``vaddr``, without a reference; None: -EFAULT;
        ``VTOP_RETRY``: ``atomic`` and D3 could not use the pte."""
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
        if atomic:
            return VTOP_RETRY
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
            reach("gru: the hardware ignored a dropin that a TLB invalidate overtook")
            return None  # ignored by the hardware: the CB misses again
        gts.tlb.install(vaddr, page, writable=write)
        return True


__all__ = ["GRU_DROPIN_RELEASED", "GRU_MMUOPS", "GruDriver", "gru_mmuops", "GruMmStruct",
           "GruThreadState", "NO_DROPIN_DROP", "NO_RANGE_ACTIVE", "VTOP_RETRY", "gru_alloc_notifier",
           "gru_flush_tlb_range", "gru_free_notifier", "gru_invalidate_range_end", "gru_invalidate_range_start"]
