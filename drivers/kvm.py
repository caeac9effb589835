"""KVM's shadow MMU as a secondary MMU: sptes per gfn kept coherent by mmu notifiers.

Emulates: virt/kvm/kvm_main.c (kvm_mmu_notifier_*), arch/x86/kvm/mmu.c
(nonpaging_map / tdp_page_fault, kvm_unmap_hva, kvm_age_hva) (2.6.27;
change_pte / kvm_set_spte_hva from 2.6.32)

Guest memory is a set of memslots (gfn -> hva).  A guest fault resolves the
gfn to a host page with get_user_pages (which takes a reference and may
sleep), then installs an spte under ``kvm->mmu_lock``.  The spte does *not*
pin the page: the reference is dropped right after the install.  What keeps
the spte from outliving the page is the notifier protocol.

Not 2.6.27 here: in 2.6.27 an spte still held its page reference until
``rmap_remove`` dropped it (kvm_release_pfn_clean/dirty), so a page could
not be freed under an spte even without notifiers; the notifiers only made
the zap happen.  acb66dd051d0 ("KVM: MMU: don't hold pagecount reference
for mapped sptes pages", 2009) dropped that reference, which is the KVM
emulated here: without the pin, the notifier protocol alone keeps the spte
from outliving the page, and that is what the suites test.

The fault and invalidate protocol:

Fault side (the guest, ``fault``):
  1. mmu_seq = kvm->mmu_notifier_seq; smp_rmb()
  2. pfn = gfn_to_pfn(gfn)                (GUP: a page reference; may sleep)
  3. spin_lock(&kvm->mmu_lock)
  4. if mmu_notifier_retry(vcpu, mmu_seq) (count != 0 or seq != mmu_seq):
         unlock, kvm_release_pfn_clean, goto 1
  5. set_spte(gfn -> pfn)
  6. spin_unlock; kvm_release_pfn_clean(pfn)

Invalidate side (the notifier callbacks, all under ``mmu_lock``):
  A. invalidate_page: seq++, kvm_unmap_hva(address), flush
  B. range_start: count++, kvm_unmap_hva over [start, end), flush
  C. range_end: seq++, then count--
  (release: zap every spte)

There are 3 critical interleavings that matter:
 - 2 gets the page, then the kernel clears the pte and A runs before 3: A
   bumps seq, 4 sees seq != mmu_seq and retries (GUP then faults a fresh
   page or fails).  Bumping seq outside mmu_lock (mutant
   ``kvm:seq-outside-lock``) lets 4 run between A's zap and its seq++ and
   install an spte to a page about to be freed.
 - B runs before 2 and pages are freed before C: 4 sees count != 0 and
   retries until C.  Without the count (mutant ``kvm:no-count``) an spte is
   installed between B's zap and the free.
 - A, B or C between 1 and 4: 4 retries.  Ignoring it (mutant
   ``kvm:no-retry``) installs an spte to a page that A/B already invalidated.

Harmless: A/B/C after 6 (they zap the new spte), or before 1 (1 reads the
new seq; GUP sees the new pte).

Modelling note: a retry while count != 0 waits for range_end instead of
re-entering the guest in a loop (the same outcomes; no unbounded spinning
under a preemption bound).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import mmemu
from mmemu import InvariantViolation, step
from mmemu.driver import (
    Driver,
    Page,
    SpinLock,
    down_read,
    get_user_pages,
    guarded_by,
    put_page,
    spin_lock,
    spin_unlock,
    up_read,
)
from mmemu.lowlevel import block, current_simulation, reach, wake_all

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

NO_RETRY = mmemu.register_mutant(
    "kvm:no-retry",
    "the KVM fault path ignores mmu_notifier_retry and installs the spte anyway",
    caught_as="FreedPageStillMapped / SecondaryUseAfterFree (spte to a freed page), or "
              "IncoherentTranslation (spte to a page the pte no longer maps, under reclaim)")
NO_COUNT = mmemu.register_mutant(
    "kvm:no-count",
    "kvm_mmu_notifier_invalidate_range_start does not raise mmu_notifier_count",
    caught_as="FreedPageStillMapped (spte installed between range_start and range_end to a "
              "page freed in between)")
ZAP_FIRST_PAGE_ONLY = mmemu.register_mutant(
    "kvm:zap-first-page-only",
    "kvm_mmu_notifier_invalidate_range_start zaps the spte of the range's first page only",
    caught_as="FreedPageStillMapped (the spte of the second page of a range outlives the page "
              "the munmap, madvise or truncate frees)",
    doc="range_start must zap every gfn whose hva lies in [start, end): 2.6.27's loop "
        "'for (; start < end; start += PAGE_SIZE) need_tlb_flush |= kvm_unmap_hva(kvm, "
        "start);'.  Treating the range as the one page at start (as invalidate_page would) "
        "passes every suite whose ranges are one page long; a range over two mapped pages "
        "frees the second one under its spte.")
SEQ_OUTSIDE_LOCK = mmemu.register_mutant(
    "kvm:seq-outside-lock",
    "kvm_mmu_notifier_invalidate_page bumps mmu_notifier_seq after dropping mmu_lock",
    caught_as="DataRace (the lockset checker: mmu_notifier_seq written without "
              "kvm->mmu_lock, which guards it) / FreedPageStillMapped (its consequence: "
              "an spte to a freed page)",
    # ->invalidate_page exists only in the 2.6.27 generation
    applies=lambda params: params.get("api", "2.6.27") == "2.6.27")


class KvmBug(InvariantViolation):
    """A BUG_ON in KVM's notifier code."""


class Memslot:
    """``struct kvm_memory_slot``: gfns [base_gfn, base_gfn + npages) at
    host virtual address ``userspace_addr``."""

    __slots__ = ("base_gfn", "npages", "userspace_addr")

    def __init__(self, base_gfn: int, npages: int, userspace_addr: int) -> None:
        self.base_gfn = base_gfn
        self.npages = npages
        self.userspace_addr = userspace_addr

    def gfn_to_hva(self, gfn: int) -> int:
        return self.userspace_addr + ((gfn - self.base_gfn) << PAGE_SHIFT)


class KvmDriver(Driver):
    """A VM whose guest memory is the mm's address space (``struct kvm``)."""

    name = "kvm"
    key_name = "gfn"
    #: modern: range_start/end get (mm, start, end) unpacked from the range
    #: (kvm_mmu_notifier_invalidate_range_start reads range->start/end); the
    #: callbacks only take mmu_lock, so a non-blockable range never fails
    apis = ("2.6.27", "modern")

    def __init__(self, memslots: list[Memslot] | None = None) -> None:
        super().__init__()
        self.memslots: list[Memslot] = list(memslots or [])
        self.mmu_lock = SpinLock("kvm->mmu_lock", "kvm->mmu_lock")
        # every spte is set and zapped under mmu_lock (the lockset checker
        # holds the TLB's installs and zaps to it; the guest's own accesses
        # are the hardware's and need no lock)
        self.tlb.lock = self.mmu_lock
        self.mmu_notifier_seq = 0
        self.mmu_notifier_count = 0
        self.seq_key = (self, "mmu_notifier_seq")
        self.count_key = (self, "mmu_notifier_count")

    # ------------------------------------------------------------- memslots

    async def attach(self, kernel: Any, mm: Any) -> int:
        """kvm_create_vm: register the notifier; without explicit memslots,
        one slot per vma of ``mm``, gfns numbered from 0 in address order."""
        if not self.memslots:
            gfn = 0
            for vma in _vmas(mm):
                n = (vma.vm_end - vma.vm_start) >> PAGE_SHIFT
                self.memslots.append(Memslot(gfn, n, vma.vm_start))
                gfn += n
        return await super().attach(kernel, mm)

    def hva_to_gfn(self, hva: int) -> int | None:
        for slot in self.memslots:
            if slot.userspace_addr <= hva < slot.userspace_addr + (slot.npages << PAGE_SHIFT):
                return slot.base_gfn + ((hva - slot.userspace_addr) >> PAGE_SHIFT)
        if not self.memslots:
            return hva >> PAGE_SHIFT  # identity slot
        return None

    def gfn_to_hva(self, gfn: int) -> int:
        for slot in self.memslots:
            if slot.base_gfn <= gfn < slot.base_gfn + slot.npages:
                return slot.gfn_to_hva(gfn)
        return gfn << PAGE_SHIFT

    def key_of(self, address: int) -> Hashable:
        return self.hva_to_gfn(address)

    def address_of(self, key: Hashable) -> int | None:
        """The hva a gfn's spte translates (the checkers compare it with the pte)."""
        return self.gfn_to_hva(key) if isinstance(key, int) else None

    def _gfns(self, start: int, end: int) -> list[int]:
        out = []
        for hva in range(start & ~(PAGE_SIZE - 1), end, PAGE_SIZE):
            gfn = self.hva_to_gfn(hva)
            if gfn is not None:
                out.append(gfn)
        return out

    # ------------------------------------------------------------ the fault

    def mmu_notifier_retry(self, mmu_seq: int) -> bool:
        return self.mmu_notifier_count != 0 or self.mmu_notifier_seq != mmu_seq

    async def gfn_to_pfn(self, gfn: int, write: bool) -> Page | None:
        """2. get_user_pages on the gfn's hva under mmap_sem for read: a
        referenced page, or None (bad_page: the address cannot be mapped)."""
        hva = self.gfn_to_hva(gfn)
        mm = self.mm
        await down_read(mm.mmap_sem, label="2. gfn_to_pfn: down_read(mmap_sem)")
        page = await get_user_pages(mm, hva, write)
        await up_read(mm.mmap_sem, label="2. gfn_to_pfn: up_read(mmap_sem)")
        return page

    async def fault(self, address: int, write: bool = False) -> bool:
        gfn = self.hva_to_gfn(address)
        if gfn is None:
            return False
        with mmemu.span("kvm_tdp_page_fault"):
            while True:
                await step("1. mmu_seq = kvm->mmu_notifier_seq", reads=(self.seq_key,))
                mmu_seq = self.mmu_notifier_seq
                page = await self.gfn_to_pfn(gfn, write)
                if page is None:
                    return False
                await spin_lock(self.mmu_lock, label="3. spin_lock(kvm->mmu_lock)")
                await step("4. mmu_notifier_retry", reads=(self.seq_key, self.count_key))
                if self.mmu_notifier_retry(mmu_seq) and not mmemu.mutant(NO_RETRY):
                    busy = self.mmu_notifier_count != 0
                    await spin_unlock(self.mmu_lock, label="4. spin_unlock(kvm->mmu_lock) (retry)")
                    await put_page(page, label="4. kvm_release_pfn_clean (retry)")
                    if busy:
                        await self._wait_range_end()
                    continue
                await step(f"5. set_spte(gfn {gfn})", **self.tlb.install_accesses(gfn, page))
                self.tlb.install(gfn, page, writable=write)
                await spin_unlock(self.mmu_lock, label="6. spin_unlock(kvm->mmu_lock)")
                await put_page(page, label="6. kvm_release_pfn_clean")
                return True

    async def _wait_range_end(self) -> None:
        """The guest re-faults until the invalidation ends (see the note)."""
        await step("4. retry: mmu_notifier_count != 0", reads=(self.count_key,))
        while self.mmu_notifier_count != 0:
            await block(self.count_key, "4. retry: mmu_notifier_count == 0",
                        reads=(self.count_key,), why="kvm mmu_notifier_count to drop to 0")

    # ---------------------------------------------------------- the notifier

    async def _unmap_gfns(self, gfns: list[int], label: str) -> bool:
        """kvm_unmap_hva for each gfn (caller holds mmu_lock)."""
        await step(label, **self.tlb.zap_accesses(gfns))
        flush = False
        for gfn in gfns:
            if self.tlb.zap(gfn) is not None:
                flush = True
        return flush

    async def invalidate_page(self, mm: Any, address: int) -> None:
        await spin_lock(self.mmu_lock, label="A. spin_lock(kvm->mmu_lock)")
        if not mmemu.mutant(SEQ_OUTSIDE_LOCK):
            await step("A. kvm->mmu_notifier_seq++", writes=(self.seq_key,))
            self.mmu_notifier_seq += 1
        await self._unmap_gfns(self._gfns(address, address + 1), "A. kvm_unmap_hva")
        await spin_unlock(self.mmu_lock, label="A. spin_unlock(kvm->mmu_lock)")
        if mmemu.mutant(SEQ_OUTSIDE_LOCK):
            await step("A. kvm->mmu_notifier_seq++ (outside mmu_lock)", writes=(self.seq_key,))
            self.mmu_notifier_seq += 1
        # kvm_flush_remote_tlbs: the shadow TLB holds sptes and TLB entries as one

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.mmu_lock, label="B. spin_lock(kvm->mmu_lock)")
        if not mmemu.mutant(NO_COUNT):
            await step("B. kvm->mmu_notifier_count++", writes=(self.count_key,))
            self.mmu_notifier_count += 1
            if self.mmu_notifier_count >= 2:
                reach("kvm: mmu_notifier_count reached 2 (nested invalidations)")
        gfns = self._gfns(start, end)
        if mmemu.mutant(ZAP_FIRST_PAGE_ONLY):
            gfns = gfns[:1]
        await self._unmap_gfns(gfns, "B. kvm_unmap_hva (range)")
        await spin_unlock(self.mmu_lock, label="B. spin_unlock(kvm->mmu_lock)")

    async def invalidate_range_end(self, mm: Any, start: int, end: int) -> None:
        await spin_lock(self.mmu_lock, label="C. spin_lock(kvm->mmu_lock)")
        await step("C. kvm->mmu_notifier_seq++", writes=(self.seq_key,))
        self.mmu_notifier_seq += 1
        await step("C. kvm->mmu_notifier_count--", writes=(self.count_key,))
        if not mmemu.mutant(NO_COUNT):
            self.mmu_notifier_count -= 1
        wake_all(self.count_key)
        count = self.mmu_notifier_count
        await spin_unlock(self.mmu_lock, label="C. spin_unlock(kvm->mmu_lock)")
        if count < 0:
            current_simulation().fail(KvmBug(
                f"kvm: BUG_ON(kvm->mmu_notifier_count < 0) (count {count}): "
                f"invalidate_range_end [{start:#x}, {end:#x}) without its range_start "
                f"(the notifier was registered while the section was in flight)",
                details=self._dump_sptes()))

    async def release(self, mm: Any) -> None:
        """kvm_mmu_notifier_release -> kvm_arch_flush_shadow: zap all."""
        await spin_lock(self.mmu_lock, label="release: spin_lock(kvm->mmu_lock)")
        await self._unmap_gfns([k for k in self.tlb.keys() if isinstance(k, int)],
                               "release: kvm_mmu_zap_all")
        await spin_unlock(self.mmu_lock, label="release: spin_unlock(kvm->mmu_lock)")

    async def _age_gfns(self, gfns: list[int], what: str) -> bool:
        """kvm_age_hva: under mmu_lock, test and clear the sptes' accessed
        bits (the shadow TLB holds the spte and the TLB entry as one, so the
        flush of clear_flush_young has nothing more to do here)."""
        await spin_lock(self.mmu_lock, label=f"{what}: spin_lock(kvm->mmu_lock)")
        await step(what, writes=tuple(self.tlb.slot(g) for g in gfns))
        young = False
        for g in gfns:
            if self.tlb.test_and_clear_young(g):
                young = True
        await spin_unlock(self.mmu_lock, label=f"{what}: spin_unlock(kvm->mmu_lock)")
        return young

    async def clear_flush_young(self, mm: Any, address: int) -> bool:
        """kvm_age_hva: test and clear the accessed bit of the sptes."""
        return await self._age_gfns(self._gfns(address, address + 1), "kvm_age_hva")

    async def clear_young(self, mm: Any, start: int, end: int) -> bool:
        """kvm_mmu_notifier_clear_young (4.3): clear the sptes' accessed bits
        of [start, end) without flushing the guest TLB (idle page tracking)."""
        return await self._age_gfns(self._gfns(start, end), "kvm_age_hva (no flush)")

    async def test_young(self, mm: Any, address: int) -> bool:
        gfns = self._gfns(address, address + 1)
        await spin_lock(self.mmu_lock, label="kvm_test_age_hva: spin_lock(kvm->mmu_lock)")
        await step("kvm_test_age_hva", reads=tuple(self.tlb.slot(g) for g in gfns))
        young = any(self.tlb.test_young(g) for g in gfns)
        await spin_unlock(self.mmu_lock, label="kvm_test_age_hva: spin_unlock(kvm->mmu_lock)")
        return young

    async def change_pte(self, mm: Any, address: int, page: Any) -> None:
        """kvm_mmu_notifier_change_pte -> kvm_set_spte_hva: point the sptes of
        ``address`` at ``page``, read-only (KSM).

        2.6.27 generation (2.6.32's, 828502d30073): called with no
        invalidation around it, so it bumps mmu_notifier_seq itself (a fault
        that read the old pfn retries).  Modern (c13fda237f08, 5.13, and the
        early return of 5.14+): always inside start/end, so no seq bump;
        WARN_ON_ONCE(!kvm->mmu_invalidate_in_progress), and nothing to do
        when no invalidation is in progress (start already zapped the sptes)."""
        gfns = self._gfns(address, address + 1)
        modern = getattr(mm.kernel, "api", "2.6.27") == "modern"
        if modern:
            await step("kvm_mmu_notifier_change_pte: WARN_ON_ONCE(!mmu_notifier_count)",
                       reads=(self.count_key,))
            if self.mmu_notifier_count == 0:
                current_simulation().fail(KvmBug(
                    f"kvm: WARN_ON_ONCE(!kvm->mn_active_invalidate_count) in "
                    f"kvm_mmu_notifier_change_pte({address:#x}): .change_pte() must be "
                    f"bracketed by .invalidate_range_start/end()", details=self._dump_sptes()))
                return
        await spin_lock(self.mmu_lock, label="kvm_set_spte_hva: spin_lock(kvm->mmu_lock)")
        if not modern:
            await step("kvm_set_spte_hva: seq++", writes=(self.seq_key,))
            self.mmu_notifier_seq += 1
        acc = self.tlb.zap_accesses(gfns)
        await step("kvm_set_spte_hva", reads=acc["reads"] + (page._count,), writes=acc["writes"])
        for g in gfns:
            if g in self.tlb.entries:
                self.tlb.install(g, page, writable=False)
        await spin_unlock(self.mmu_lock, label="kvm_set_spte_hva: spin_unlock(kvm->mmu_lock)")

    def check(self) -> None:
        """The driver's invariant when nothing is in flight (the end of every
        execution): while the notifier is registered, every range_start had
        its range_end, so kvm->mmu_notifier_count is back to 0.  (A VM
        unregistered between a start and its end never sees the end.)"""
        if self.mn.hashed:
            assert self.mmu_notifier_count == 0, (
                f"kvm->mmu_notifier_count is {self.mmu_notifier_count} with nothing in flight: "
                f"an invalidate_range_start never got its invalidate_range_end (guest faults "
                f"on the range would retry forever)")

    def _dump_sptes(self) -> str:
        lines = [f"kvm: mmu_notifier_seq={self.mmu_notifier_seq} "
                 f"mmu_notifier_count={self.mmu_notifier_count}"]
        for key in self.tlb.keys():
            e = self.tlb.entries[key]
            lines.append(f"  spte gfn {key} -> page{e.page.pfn} installed at {e.site}")
            lines.append("    " + e.page.dump().replace("\n", "\n    "))
        return "\n".join(lines)


def _vmas(mm: Any) -> list[Any]:
    vmas = getattr(mm, "vmas", None)
    if callable(vmas):
        return list(vmas())
    out = []
    vma = getattr(mm, "mmap", None)
    if isinstance(vma, list):
        return list(vma)
    while vma is not None:
        out.append(vma)
        vma = getattr(vma, "vm_next", None)
    return out


# virt/kvm/kvm_main.c: "mmu_notifier_seq and mmu_notifier_count are
# protected by kvm->mmu_lock" -- written only under it; the fault path reads
# mmu_notifier_seq before taking it on purpose (smp_rmb, then the recheck
# under the lock), so only the writers are held to the lock
guarded_by(KvmDriver, "mmu_notifier_seq", lambda kvm: kvm.mmu_lock, reads=False,
           stores=("mmu_notifier_seq",), why="kvm->mmu_lock protects mmu_notifier_seq")
guarded_by(KvmDriver, "mmu_notifier_count", lambda kvm: kvm.mmu_lock, reads=False,
           stores=("mmu_notifier_count",), why="kvm->mmu_lock protects mmu_notifier_count")


__all__ = ["KvmBug", "KvmDriver", "Memslot", "NO_COUNT", "NO_RETRY", "SEQ_OUTSIDE_LOCK",
           "ZAP_FIRST_PAGE_ONLY"]
