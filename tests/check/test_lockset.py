"""The lockset checker: a field the kernel guards with a lock, touched by two
CPUs, one of them without the lock, is a DataRace -- and nothing else is."""

from __future__ import annotations

from typing import Any

import mmemu
import pytest

from mmemu.check import INSTALLERS, boot_checked
from mmemu.kernel.locking import (
    GuardedList,
    RwSemaphore,
    SpinLock,
    down_read,
    down_write,
    guarded_by,
    spin_lock,
    spin_unlock,
    up_read,
    up_write,
)


class Table:
    """A made-up kernel object: ``entries`` under ``lock``, ``map`` under
    the rwsem ``sem``, ``cache`` under ``lock`` for writers only."""

    def __init__(self) -> None:
        self.__mmemu_name__ = "table"
        self.lock = SpinLock("table->lock")
        self.sem = RwSemaphore("table->sem")


guarded_by(Table, "entries", lambda t: t.lock, why="table->lock protects the entries")
guarded_by(Table, "map", lambda t: t.sem)
guarded_by(Table, "cache", lambda t: t.lock, reads=False)


def two_cpus(first: Any, second: Any) -> Any:
    async def scenario(sim: Any) -> None:
        boot_checked(sim)
        t = Table()
        async with sim.cpus() as cpus:
            cpus.start(first, t, name="first")
            cpus.start(second, t, name="second")
    return scenario


async def locked_write(t: Table) -> None:
    await spin_lock(t.lock)
    await mmemu.step("insert", writes=((t, "entries"),))
    await spin_unlock(t.lock)


async def unlocked_write(t: Table) -> None:
    await mmemu.step("insert without the lock", writes=((t, "entries"),))


async def locked_read(t: Table) -> None:
    await spin_lock(t.lock)
    await mmemu.step("walk", reads=((t, "entries"),))
    await spin_unlock(t.lock)


async def unlocked_read(t: Table) -> None:
    await mmemu.step("walk without the lock", reads=((t, "entries"),))


def explore(scenario: Any) -> mmemu.Result:
    return mmemu.explore(scenario, strategy=mmemu.DFS(), executions=1000)


def test_boot_checked_installs_the_lockset_checker() -> None:
    assert "mmemu.check.lockset:install" in INSTALLERS


def test_both_sides_under_the_lock_pass_in_every_order() -> None:
    r = explore(two_cpus(locked_write, locked_read))
    assert r.failure is None and r.exhausted and r.executions == 2


@pytest.mark.parametrize("first, second", [(unlocked_write, locked_read),
                                           (locked_write, unlocked_read),
                                           (unlocked_write, unlocked_write)])
def test_one_side_without_the_lock_is_a_data_race(first: Any, second: Any) -> None:
    f = explore(two_cpus(first, second)).failure
    assert f is not None and f.kind == "DataRace", f
    assert "data race on table->entries" in f.message
    assert "without holding spinlock table->lock, which guards it " \
           "(table->lock protects the entries)" in f.message
    # both accesses are named: the one that lacked the lock and the other
    assert "first" in f.message and "second" in f.message


def test_a_key_only_one_cpu_ever_touches_needs_no_lock() -> None:
    async def scenario(sim: Any) -> None:
        boot_checked(sim)
        t, private = Table(), Table()

        async def builder() -> None:
            # fills an object nobody else can see yet (fork's new vma)
            await mmemu.step("fill the new object", writes=((private, "entries"),))
            await locked_write(t)

        async with sim.cpus() as cpus:
            cpus.start(builder, name="builder")
            cpus.start(locked_read, t, name="reader")
    r = explore(scenario)
    assert r.failure is None and r.exhausted


async def read_sem(t: Table) -> None:
    await down_read(t.sem)
    await mmemu.step("find", reads=((t, "map"),))
    await up_read(t.sem)


async def write_under_read(t: Table) -> None:
    await down_read(t.sem)
    await mmemu.step("change under a read lock", writes=((t, "map"),))
    await up_read(t.sem)


async def write_sem(t: Table) -> None:
    await down_write(t.sem)
    await mmemu.step("change", writes=((t, "map"),))
    await up_write(t.sem)


def test_a_rwsem_guard_takes_readers_for_reads_and_a_writer_for_writes() -> None:
    assert explore(two_cpus(read_sem, write_sem)).failure is None
    assert explore(two_cpus(read_sem, read_sem)).failure is None
    f = explore(two_cpus(read_sem, write_under_read)).failure
    assert f is not None and f.kind == "DataRace", f
    assert "holding only for read rwsem table->sem" in f.message


def test_a_writers_only_guard_lets_readers_go_lockless() -> None:
    async def lockless_reader(t: Table) -> None:
        await mmemu.step("gup-fast style read", reads=((t, "cache"),))

    async def locked_writer(t: Table) -> None:
        await spin_lock(t.lock)
        await mmemu.step("update", writes=((t, "cache"),))
        await spin_unlock(t.lock)

    async def lockless_writer(t: Table) -> None:
        await mmemu.step("update without the lock", writes=((t, "cache"),))

    assert explore(two_cpus(lockless_reader, locked_writer)).failure is None
    f = explore(two_cpus(lockless_reader, lockless_writer)).failure
    assert f is not None and f.kind == "DataRace", f


def test_kvm_gup_without_mmap_sem_is_a_race_on_the_vma_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One of issue 11's survivors, the real KVM code mutated, in the real
    suite: gfn_to_pfn's GUP walks the vma list that munmap is changing."""
    from mmemu.drivers.kvm import KvmDriver
    from tests.check.test_pte_vma import _munmap_vs_kvm_fault, _mutant

    gup = _mutant(KvmDriver.gfn_to_pfn,
                  ('await down_read(mm.mmap_sem, label="2. gfn_to_pfn: down_read(mmap_sem)")',
                   "pass"),
                  ('await up_read(mm.mmap_sem, label="2. gfn_to_pfn: up_read(mmap_sem)")',
                   "pass"))
    assert _munmap_vs_kvm_fault(without_lockset=False).failure is None
    monkeypatch.setattr(KvmDriver, "gfn_to_pfn", gup)
    f = _munmap_vs_kvm_fault(without_pte_vma=True, without_lockset=False).failure
    assert f is not None and f.kind == "DataRace", f
    assert "data race on mm1->mmap: cpu1 (kvm) reads it" in f.message
    assert "without holding rwsem mm1->mmap_sem" in f.message


def test_kvm_bumping_the_seq_outside_mmu_lock_is_a_race_before_it_frees_a_mapped_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalogued kvm:seq-outside-lock: with the checker the unlocked
    write of mmu_notifier_seq is reported where it happens; without it the
    suite still finds the consequence, an spte left to a freed page."""
    import mmemu.check as check

    def run() -> mmemu.Failure | None:
        return mmemu.explore("notifier:reclaim-vs-fault", params={"driver": "kvm"},
                             mutants=["kvm:seq-outside-lock"]).failure

    f = run()
    assert f is not None and f.kind == "DataRace", f
    assert "data race on kvm->mmu_notifier_seq" in f.message
    assert "'A. kvm->mmu_notifier_seq++ (outside mmu_lock)' without holding spinlock " \
           "kvm->mmu_lock" in f.message
    monkeypatch.setattr(check, "INSTALLERS",
                        [i for i in check.INSTALLERS if not i.startswith("mmemu.check.lockset:")])
    f = run()
    assert f is not None and f.kind == "FreedPageStillMapped", f
    assert f.preemptions <= 2
    tail = "\n".join(f.report().split("replay with:")[0].strip().splitlines()[-8:])
    assert "kvm gfn 0" in tail and ("page0" in tail or "page1" in tail), tail


def test_mm_take_all_locks_may_test_the_anon_vma_mark_without_its_lock() -> None:
    """vm_lock_anon_vma's first test_bit of head.next's LSB runs without
    anon_vma->lock, as in the kernel: only holders of mm_all_locks_mutex
    change that bit.  A registration racing reclaim's rmap walk of the same
    anon_vma is no data race (a false alarm the fuzzer found at seed 2)."""
    r = mmemu.explore("workload:run", strategy=mmemu.DFS(), executions=1000, params={
        "workload": "drivers=gru vmas=a1; cpu0: detach attach; cpu1: reclaim(0)"})
    assert r.failure is None and r.exhausted, r.failure


class Counter:
    """A made-up kernel object whose stores are checked where they run:
    ``seq`` and the list ``waiters`` under ``lock``."""

    __slots__ = ("lock", "seq", "waiters", "__mmemu_name__", "__weakref__")

    def __init__(self) -> None:
        self.__mmemu_name__ = "counter"
        self.lock = SpinLock("counter->lock")
        self.seq = 0
        self.waiters: list[int] = GuardedList(self, "state")


guarded_by(Counter, "state", lambda c: c.lock, stores=("seq",),
           why="counter->lock protects seq and the waiters")


async def bump_then_unlock(c: Counter) -> None:
    await spin_lock(c.lock)
    await mmemu.step("seq++", writes=((c, "state"),))
    c.seq += 1
    await spin_unlock(c.lock)


async def bump_after_unlock(c: Counter) -> None:
    # the step that declares the write runs under the lock; the store
    # itself was moved past the unlock (a move-after-unlock mutant)
    await spin_lock(c.lock)
    await mmemu.step("seq++", writes=((c, "state"),))
    await spin_unlock(c.lock)
    c.seq += 1


async def queue_after_unlock(c: Counter) -> None:
    await spin_lock(c.lock)
    await mmemu.step("queue", writes=((c, "state"),))
    await spin_unlock(c.lock)
    c.waiters.append(1)


def counter_cpus(first: Any, second: Any) -> Any:
    async def scenario(sim: Any) -> None:
        boot_checked(sim)
        c = Counter()
        c.seq = 5  # the scenario's own code: no CPU, nothing checked
        async with sim.cpus() as cpus:
            cpus.start(first, c, name="first")
            cpus.start(second, c, name="second")
    return scenario


def test_a_store_moved_past_the_unlock_is_a_race_where_it_runs() -> None:
    assert explore(counter_cpus(bump_then_unlock, bump_then_unlock)).failure is None
    for late in (bump_after_unlock, queue_after_unlock):
        f = explore(counter_cpus(bump_then_unlock, late)).failure
        assert f is not None and f.kind == "DataRace", f
        assert "data race on counter->state: cpu1 (second) writes it" in f.message
        assert "without holding spinlock counter->lock" in f.message
        what = "Counter.seq = ..." if late is bump_after_unlock else "state.append"
        assert what in f.message, f.message


def test_guarded_stores_and_lists_behave_as_plain_ones() -> None:
    c = Counter()
    c.seq = 3
    c.waiters.append(1)
    c.waiters.insert(0, 0)
    c.waiters += [2]
    assert (c.seq, list(c.waiters)) == (3, [0, 1, 2])
    c.waiters.remove(1)
    assert c.waiters.pop() == 2 and list(c.waiters) == [0]
    c.waiters.clear()
    assert not c.waiters


def test_a_driver_tlb_guarded_by_its_lock_zapped_after_the_unlock_is_a_race(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """KVM's sptes are set and zapped under mmu_lock (``tlb.lock``): the
    zap of range_start moved past spin_unlock(mmu_lock) is reported at the
    zap -- the guest's own accesses through the spte need no lock."""
    from mmemu.drivers.kvm import KvmDriver

    def run() -> mmemu.Failure | None:
        return mmemu.explore("notifier:reclaim-vs-fault", params={"driver": "kvm"}).failure

    assert run() is None
    original = KvmDriver._unmap_gfns

    async def unlocked_unmap(self: KvmDriver, gfns: Any, label: str) -> Any:
        # zap with mmu_lock dropped around it, as a zap moved after the unlock
        await spin_unlock(self.mmu_lock, label="spin_unlock(kvm->mmu_lock) early")
        try:
            return await original(self, gfns, label)
        finally:
            await spin_lock(self.mmu_lock, label="spin_lock(kvm->mmu_lock) again")

    monkeypatch.setattr(KvmDriver, "_unmap_gfns", unlocked_unmap)
    f = run()
    assert f is not None and f.kind == "DataRace", f
    assert "data race on kvm.tlb->entries" in f.message, f.message
    assert ": zap" in f.message and "without holding spinlock kvm->mmu_lock" in f.message


def test_kvm_aging_its_sptes_without_mmu_lock_is_a_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """kvm_age_hva clears the sptes' accessed bits under mmu_lock: without
    it, the aging's store races the vcpu fault's install of the same spte."""
    from mmemu.drivers.kvm import KvmDriver
    from tests.check.test_pte_vma import _mutant

    def run() -> mmemu.Failure | None:
        return mmemu.explore("aging:referenced-vs-guest-fault", params={"driver": "kvm"}).failure

    assert run() is None
    monkeypatch.setattr(KvmDriver, "_age_gfns", _mutant(
        KvmDriver._age_gfns,
        ('await spin_lock(self.mmu_lock, label=f"{what}: spin_lock(kvm->mmu_lock)")', "pass"),
        ('await spin_unlock(self.mmu_lock, label=f"{what}: spin_unlock(kvm->mmu_lock)")',
         "pass")))
    f = run()
    assert f is not None and f.kind == "DataRace", f
    assert "clear the accessed bit" in f.message and "kvm->mmu_lock" in f.message, f.message


def test_a_radix_tree_store_moved_past_tree_lock_is_a_race(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration replaces the file's slot under tree_lock; the store moved
    after spin_unlock (the mutation benchmark's move-after-unlock of
    migrate_page_move_mapping) is seen where it runs, against the lookup
    or truncate that touched the slot."""
    import mmemu.mm.migrate as migrate
    from tests.check.test_pte_vma import _mutant

    def run() -> mmemu.Failure | None:
        return mmemu.explore("migrate:file-vs-truncate",
                             strategy=mmemu.DFS(max_preemptions=2)).failure

    assert run() is None
    monkeypatch.setattr(migrate, "migrate_page_move_mapping", _mutant(
        migrate.migrate_page_move_mapping,
        ("        radix_tree_store(mapping, page.index, newpage)\n", ""),
        ('        await spin_unlock(mapping.tree_lock, label="3. spin_unlock_irq(tree_lock)")\n',
         '        await spin_unlock(mapping.tree_lock, label="3. spin_unlock_irq(tree_lock)")\n'
         '        radix_tree_store(mapping, page.index, newpage)\n')))
    f = run()
    assert f is not None and f.kind == "DataRace", f
    assert "->slot[0x0]" in f.message and "radix tree slot store" in f.message, f.message
    assert "without holding spinlock" in f.message and "tree_lock" in f.message
