"""mmu_notifier_unregister from a driver's detach: ->release while still
hashed, then the unhash, then synchronize_srcu, which waits for a walker
that may still call the notifier (the order of d34883d4e35c, v3.10)."""

from __future__ import annotations

from typing import Any


import mmemu
from mmemu.drivers.kvm import KvmDriver
from mmemu.mm.madvise import MADV_DONTNEED, sys_madvise
from mmemu.mm.mmap import PAGE_SIZE
from mmemu.testing import force
from tests.mm._helpers import anon_mm, labels


async def _detach_vs_zap(sim: Any) -> None:
    kernel, mm, vma = await anon_mm(sim)
    a = vma.vm_start
    kvm = KvmDriver()
    assert await kvm.attach(kernel, mm) == 0
    assert await kvm.fault(a, True)
    async with sim.cpus() as cpus:
        cpus.start(sys_madvise, mm, a, PAGE_SIZE, MADV_DONTNEED, name="madvise")
        cpus.start(kvm.detach, name="detach")
    sim.check(not kvm.mn.hashed and not kvm.tlb.keys(), "detached, every spte dropped")
    sim.check(mm.mmu_notifier_mm.list == [], "the hlist is empty")


def test_detach_releases_then_waits_for_a_walker_inside_range_start() -> None:
    out = force(_detach_vs_zap, [
        ("madvise", "invalidate_range_start: hlist_for_each_entry_rcu"),
        ("detach", "synchronize_srcu(mmu_notifier_srcu)"),
    ])
    assert out.failure is None, out.failure.report()
    d = labels(out, "detach")
    assert d.index("release: kvm_mmu_zap_all") < d.index("2. hlist_del_init_rcu")
    # it waited: the grace period ended in a step of its own (once the walker left)
    assert "synchronize_srcu(mmu_notifier_srcu): grace period over" in d
    # the walker read the list before the unhash: it still calls KVM's callbacks
    m = labels(out, "madvise")
    assert "B. kvm->mmu_notifier_count++" in m and "C. kvm->mmu_notifier_count--" not in m


def test_detach_vs_a_zap_passes_exhaustively() -> None:
    res = mmemu.explore(_detach_vs_zap, strategy=mmemu.DFS(max_preemptions=2),
                        executions=20_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted
