"""The interleavings the protocol pages name, each one forceable.

Every diagram on a protocol page (``docs/protocols/*.md``) is one of these,
drawn at documentation build time from a real execution of the model
(``docs/_ext/mmemu_diagrams.py``), and every one can be watched with::

    mmemu explain SUITE --interleaving N

An interleaving is written the way the protocol comments write it: the steps
that matter, as ``(CPU name, step label)`` pairs in the order they must run
(``mmemu.testing.force``); steps not named run whenever that order allows,
preferring no preemption.  It also says what must come of it: nothing (the
protocol holds) or the failure kind a mutant produces.  If the model changes
so that an interleaving can no longer happen as written, forcing it fails
(``InterleavingError``) and so do the docs build and the tests: a page cannot
drift from the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from mmemu.engine import ModelError, Outcome
from mmemu.engine._registry import _suggest


@attrs.frozen
class Interleaving:
    """One named interleaving of a suite (see the module docstring)."""

    suite: str
    #: its number among the suite's interleavings, from 1
    number: int
    #: a few words, as the page titles it ("2 before A")
    title: str
    #: (CPU name, step label) pairs in the order they must run
    order: tuple[tuple[str, str], ...]
    params: dict[str, Any] = attrs.field(factory=dict)
    mutants: tuple[str, ...] = ()
    #: the failure kind it must end in; None: it must pass
    expect: str | None = None
    #: what happens, in a sentence or two (no final period)
    story: str = ""

    @property
    def command(self) -> str:
        return f"mmemu explain {self.suite} --interleaving {self.number}"

    def force(self) -> Outcome:
        """Run it (``mmemu.testing.force``) and return the outcome."""
        from mmemu.testing import force

        return force(self.suite, list(self.order), params=dict(self.params),
                     mutants=list(self.mutants))

    def highlight(self, outcome: Outcome) -> list[tuple[int, str]]:
        """The named steps as (cpu id, label), for the diagram."""
        ids = {name: cid for cid, name in outcome.trace.cpus}
        return [(ids[cpu], label) for cpu, label in self.order if cpu in ids]

    def svg(self, outcome: Outcome | None = None) -> str:
        """The diagram: an SVG of the forced execution (``mmemu._svg``)."""
        from mmemu._svg import render_svg

        outcome = outcome if outcome is not None else self.force()
        failure = outcome.failure
        return render_svg(outcome.trace, highlight=self.highlight(outcome),
                          failure_step=failure.failure_step if failure is not None else None,
                          title=f"{self.suite}: {self.title}")

    def check(self, outcome: Outcome) -> str | None:
        """None if ``outcome`` is what this interleaving must come to, else why not."""
        got = outcome.failure.kind if outcome.failure is not None else None
        if got == self.expect:
            return None
        want = self.expect or "no failure"
        return f"{self.command}: expected {want}, got {got or 'no failure'}"


_CATALOGUE: list[Interleaving] = []


def _add(suite: str, title: str, order: Sequence[tuple[str, str]], *,
         params: dict[str, Any] | None = None, mutants: Sequence[str] = (),
         expect: str | None = None, story: str = "") -> None:
    number = 1 + sum(1 for il in _CATALOGUE if il.suite == suite)
    _CATALOGUE.append(Interleaving(suite=suite, number=number, title=title, order=tuple(order),
                                   params=dict(params or {}), mutants=tuple(mutants),
                                   expect=expect, story=story))


def all_interleavings() -> list[Interleaving]:
    return list(_CATALOGUE)


def interleavings_of(suite: str) -> list[Interleaving]:
    return [il for il in _CATALOGUE if il.suite == suite]


def get_interleaving(suite: str, number: int) -> Interleaving:
    """The suite's interleaving ``number``; a one-line ModelError otherwise."""
    mine = interleavings_of(suite)
    if not mine:
        named = sorted({il.suite for il in _CATALOGUE})
        raise ModelError(f"{suite!r} names no interleaving{_suggest(suite, named)}; "
                         f"suites that do: {', '.join(named)}")
    for il in mine:
        if il.number == number:
            return il
    raise ModelError(f"{suite} names interleavings 1 to {len(mine)} (got {number})")


# ------------------------------------------------ speculative pagecache

_L, _R = "find_get_page", "reclaim"

_add("pagecache:lookup-vs-reclaim", "2 before A", [
    (_L, "2. page_cache_get_speculative"),
    (_R, "A. page_freeze_refs"),
    (_L, "3. recheck: page still in the slot?"),
], params={"lookup": "find_get_page"}, story=(
    "Reclaim's freeze sees three references and gives up; the lookup returns "
    "the page, which stays cached"))

_add("pagecache:lookup-vs-reclaim", "A before 2", [
    (_L, "1. radix_tree_lookup"),
    (_R, "A. page_freeze_refs"),
    (_L, "2. page_cache_get_speculative"),
    (_R, "B. __remove_from_page_cache"),
    (_R, "C. free the page (free_hot_cold_page)"),
    (_L, "1. radix_tree_lookup"),
], params={"lookup": "find_get_page"}, story=(
    "The freeze wins; the speculative get sees 0 and retries; after B the "
    "lookup finds nothing"))

_add("pagecache:reinsert-aba", "the harmless re-insertion", [
    (_L, "1. radix_tree_lookup"),
    (_R, "C. free the page (free_hot_cold_page)"),
    (_R, "radix_tree_insert"),
    (_L, "2. page_cache_get_speculative"),
    (_L, "3. recheck: page still in the slot?"),
], story=(
    "Between 1 and 2 the page is freed and handed back for the same index of "
    "the same file; 2 pins it, 3 finds it in its slot: correct"))

_add("pagecache:lookup-vs-reclaim", "the reused page, without step 3", [
    (_L, "1. radix_tree_lookup"),
    (_R, "A. page_freeze_refs"),
    (_R, "page_cache_release (the allocation reference)"),
    (_L, "2. page_cache_get_speculative"),
], params={"lookup": "find_get_page"}, mutants=("filemap:no-recheck",),
    expect="WrongPageFromLookup", story=(
    "The page comes back as file2[1]; without the recheck the lookup returns "
    "another file's page"))


# ------------------------------------------------------ mm_take_all_locks

_T, _K = "truncate", "kvm"

_add("notifier:register-vs-truncate", "register waits for the truncate's i_mmap_lock", [
    (_T, "unmap_mapping_range: spin_lock(i_mmap_lock)"),
    (_T, "mmu_notifier_invalidate_range_start: mm_has_notifiers"),
    (_K, "1. down_write(mmap_sem)"),
    (_K, "vm_lock_mapping: test_and_set_bit(AS_MM_ALL_LOCKS)"),
    (_T, "zap_pte_range: ptep_get_and_clear(0x10000000)"),
    (_T, "unmap_mapping_range: spin_unlock(i_mmap_lock)"),
    (_K, "4. hlist_add_head_rcu"),
    (_K, "1. mmu_seq = kvm->mmu_notifier_seq"),
], params={"driver": "kvm"}, story=(
    "The register's mm_take_all_locks waits for the i_mmap_lock the truncate holds from "
    "before range_start to after range_end; the notifier is hashed after the "
    "end and the guest fault finds nothing to map"))

_add("notifier:register-vs-truncate", "register between start and end, without the locks", [
    (_T, "mmu_notifier_invalidate_range_start: mm_has_notifiers"),
    (_K, "4. hlist_add_head_rcu"),
    (_K, "2. gfn_to_pfn: up_read(mmap_sem)"),
    (_T, "zap_pte_range: ptep_get_and_clear(0x10000000)"),
], params={"driver": "kvm"}, mutants=("mmu_notifier:register-unlocked",),
    expect="UnbalancedRange", story=(
    "Hashed after a range_start it never saw, the driver maps the page; the "
    "truncate frees it, and the notifier checker reports the range_end that "
    "has no start (left to KVM, its count would go to -1)"))

_add("locks:take-all-shared", "a walker waits for the drop's unlock", [
    ("register", "vm_lock_anon_vma: __test_and_set_bit(0, &anon_vma->head.next)"),
    ("register", "vm_lock_anon_vma: test_bit(0, &anon_vma->head.next)"),
    # the walker starts while the lock is held: its next step, the
    # acquisition, cannot run (is not enabled) until the unlock
    ("rmap-anon", "<start>"),
    ("register", "vm_unlock_anon_vma: __test_and_clear_bit(0, &anon_vma->head.next)"),
    ("register", "vm_unlock_anon_vma: spin_unlock(&anon_vma->lock)"),
    ("rmap-anon", "A. spin_lock(&anon_vma->lock)"),
    ("rmap-anon", "B. list_for_each_entry(vma, &anon_vma->head)"),
], story=(
    "The second vma's anon_vma is already marked and skipped; the walker's "
    "spin_lock waits until the drop has cleared the mark and unlocked"))


# -------------------------------------------------------------------- KVM

_G = "kvm"

_add("notifier:reclaim-vs-fault", "invalidate_page between 2 and 4", [
    (_G, "1. mmu_seq = kvm->mmu_notifier_seq"),
    (_G, "2. gfn_to_pfn: up_read(mmap_sem)"),
    ("kswapd", "ptep_clear_flush"),
    ("kswapd", "A. spin_unlock(kvm->mmu_lock)"),
    (_G, "4. mmu_notifier_retry"),
    (_G, "4. kvm_release_pfn_clean (retry)"),
    ("kswapd", "A. page_freeze_refs"),
    ("kswapd", "C. free the page (free_hot_cold_page)"),
], params={"driver": "kvm"}, story=(
    "The fault holds a reference to the page; reclaim's invalidate_page bumps "
    "the seq; 4 sees it changed, drops the page and retries; reclaim frees it"))

_add("notifier:truncate-vs-fault", "a range invalidated around 4", [
    (_G, "1. mmu_seq = kvm->mmu_notifier_seq"),
    (_G, "2. gfn_to_pfn: up_read(mmap_sem)"),
    (_T, "B. spin_unlock(kvm->mmu_lock)"),
    (_G, "4. mmu_notifier_retry"),
    (_T, "tlb_finish_mmu: put_page(page0)"),
    (_T, "C. spin_unlock(kvm->mmu_lock)"),
    (_G, "1. mmu_seq = kvm->mmu_notifier_seq"),
], params={"driver": "kvm"}, story=(
    "B raised mmu_notifier_count; 4 retries and waits for C even though the "
    "seq has not changed yet; the fault then finds nothing to map"))


# -------------------------------------------------------------------- GRU

_add("notifier:truncate-vs-fault", "D2 between S1 and E1", [
    ("gru", "D1. read the TFH (missvaddr 0x10000000); ms_released?"),
    (_T, "S2. gru_flush_tlb_range(0x10000000, 0x1000)"),
    ("gru", "D2. atomic_read(ms_range_active)"),
    (_T, "tlb_finish_mmu: put_page(page0)"),
    (_T, "E2. wake_up_all(ms_wait_queue)"),
    ("gru", "D3. find_vma; atomic_pte_lookup"),
], params={"driver": "gru"}, story=(
    "The dropin sees the range active, refuses and waits for E2; when it "
    "runs again the pte is gone"))

_add("notifier:reclaim-vs-fault", "D1 before a flush, D5 after it", [
    ("gru", "D3. find_vma; atomic_pte_lookup"),
    ("kswapd", "P. gru_flush_tlb_range(0x10000000, PAGE_SIZE)"),
    ("kswapd", "C. free the page (free_hot_cold_page)"),
    ("gru", "D5. tfh_write_restart(va 0x10000000 -> page0)"),
], params={"driver": "gru"}, story=(
    "The dropin read the pte before reclaim cleared it; the flush in between "
    "moves the context's generation on, and the hardware ignores the stale "
    "dropin"))


# ------------------------------------------------------ interval notifiers

_M = "hmm"

_add("notifier:truncate-vs-fault", "an invalidation between 2 and 4", [
    (_M, "2. up_read(mmap_sem)"),
    (_T, "C. unlock(dmirror->lock)"),
    (_T, "tlb_finish_mmu: put_page(page0)"),
    (_M, "R4. mmu_interval_read_retry"),
], params={"driver": "hmm", "api": "modern"}, story=(
    "The walk saw the pte; the invalidation sets the seq (B), zaps, and the "
    "page is freed before 3; 4 sees the seq moved and retries"))

_add("notifier:reclaim-vs-fault", "B outside the lock", [
    (_M, "2. up_read(mmap_sem)"),
    ("kswapd", "C. unlock(dmirror->lock)"),
    (_M, "5. dmirror_do_update: va 0x10000000"),
    ("kswapd", "B. mmu_interval_set_seq (unlocked)"),
], params={"driver": "hmm", "api": "modern"}, mutants=("hmm:seq-outside-lock",),
    expect="FreedPageStillMapped", story=(
    "Steps 3-5 fit between C's unlock and B, see the old seq and program page0; "
    "reclaim then frees the page the device still maps"))


# ----------------------------------------------------------------- release

_E, _W = "exit", "kswapd"

_add("notifier:exit-vs-reclaim", "R2 while 1 runs", [
    (_E, "release: kvm_mmu_zap_all"),
    (_W, "ptep_clear_flush"),
    (_W, "A. kvm_unmap_hva"),
    (_E, "2. hlist_del_init_rcu (all)"),
    (_E, "synchronize_srcu(mmu_notifier_srcu)"),
    (_W, "C. free the page (free_hot_cold_page)"),
], params={"driver": "kvm"}, story=(
    "The notifier is still hashed while ->release runs, so reclaim's "
    "invalidate_page reaches it too; the page is freed only after the zap"))

_add("notifier:exit-vs-reclaim", "->release after the unhash (the 2012 bug)", [
    (_E, "2. hlist_del_init_rcu (before ->release)"),
    (_W, "ptep_clear_flush"),
    (_W, "C. free the page (free_hot_cold_page)"),
], params={"driver": "kvm"}, mutants=("mmu_notifier:release-after-unhash",),
    expect="FreedPageStillMapped", story=(
    "Reclaim's invalidate_page walks a list that no longer holds the notifier and "
    "tells nobody; reclaim frees a page the driver still maps, before ->release "
    "could zap it"))
