"""Race suite for two drivers' notifiers on one mm: one registers while the
other unregisters.

Emulates: mm/mmu_notifier.c (do_mmu_notifier_register,
mmu_notifier_unregister; mmu_interval_notifier_insert / _remove for an
interval-notifier driver), both generations.

The notifier list of an mm (``mm->mmu_notifier_mm->list``; the interval
tree on the modern generation) is walked under SRCU by every invalidation
and changed under ``mmu_notifier_mm->lock`` by every writer: a
registration's ``hlist_add_head_rcu``, an unregister's
``hlist_del_init_rcu``, exit's ``__mmu_notifier_release``,
``mmu_notifier_put``.  A registration also holds ``mmap_sem`` for write and
every lock of ``mm_take_all_locks`` -- but an unregister takes neither, so
``mmu_notifier_mm->lock`` is the only thing between the two writers.  In the
kernel, two ``hlist`` updates racing leave a node pointing at a removed one;
in the model a list change is one atomic step, so the lockset checker
(``DataRace`` on ``mmu_notifier_mm->list``) is what sees a writer without
the lock.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import guarded, new_driver, supports_api
from mmemu.engine._execution import current_simulation, reach
from mmemu.mm.truncate import vmtruncate
from mmemu.races.notifier import DRIVER_AXES, Guest, guest, guest_fault

#: the registration's list change ran while the other driver's detach was
#: in progress (it had started and not returned)
ADDED_DURING_DETACH = "a notifier was registered while another driver on the mm detached"


@mmemu.scenario("notifier:register-vs-unregister", axes=DRIVER_AXES, filter=supports_api,
                reaches=[ADDED_DURING_DETACH])
async def register_vs_unregister(sim: Any) -> None:
    """Driver A detaches from an mm while driver B (a second instance of the
    same class: a second VM, a second device) attaches to it and faults.

    CPU0 (A: detach)                           CPU1 (B: attach, then a guest fault)
    1. hlist_unhashed(&A->hlist)               1. down_write(mmap_sem)
       hashed: srcu_read_lock; ->release       2. mm_take_all_locks
       (zap A's translation)                   3. mm->mmu_notifier_mm exists
    2. spin_lock(mmu_notifier_mm->lock)        4. spin_lock(mmu_notifier_mm->lock)
       hlist_del_init_rcu(&A->hlist)              hlist_add_head_rcu(&B->hlist)
       spin_unlock                                spin_unlock
    3. synchronize_srcu                        mm_drop_all_locks; up_write(mmap_sem)
                                               B faults the page and maps it

    There is 1 critical interleaving that matters:
    - CPU1's 4 between CPU0's 1 and 2: the list changes while A's
      unregister is in progress.  Both list writers hold
      mmu_notifier_mm->lock, so the two changes are serialised.  A writer
      without it (the registration's lock pair dropped) is a DataRace on
      the list in every execution, since both CPUs write it.
    Harmless: the other orders (B hashed before or after A's whole detach).

    An interval-notifier driver (HMM) detaches with
    mmu_interval_notifier_remove and attaches with
    mmu_interval_notifier_insert: the same two writers, on the interval
    tree under the same lock.

    At the end: A has no translation left, B maps the page; then the file
    is truncated (on a CPU of its own, after both), and B's translation must go with the
    page -- B's notifier is still on the list, whatever the order.
    """
    g = await guest(sim, kind="shared")
    await guarded(g.driver, "fault", g.driver.fault, g.addr, False)
    b = Guest(g.kernel, g.mm, g.mapping, g.addr, g.page, new_driver(sim))
    state = {"detaching": False}

    async def detach_a() -> None:
        state["detaching"] = True
        await guarded(g.driver, "detach", g.driver.detach)
        state["detaching"] = False

    async def attach_b() -> None:
        ret = await guarded(b.driver, "attach", b.driver.attach, b.kernel, b.mm)
        current_simulation().check(ret == 0, f"{b.driver.name}: attach returned {ret}")
        if state["detaching"]:
            reach(ADDED_DURING_DETACH)
        await guest_fault(b, write=False)

    async with sim.cpus() as cpus:
        cpus.start(detach_a, name=f"{g.driver.name} (A)")
        cpus.start(attach_b, name=f"{b.driver.name} (B)")
    sim.check(not g.driver.tlb.entries, f"A still has translations after its detach: "
              f"{sorted(map(str, g.driver.tlb.entries))}")
    sim.check(b.driver.tlb.lookup(b.driver.key_of(b.addr)) is g.page,
              f"B does not map page{g.page.pfn} after its fault")
    # B's notifier must still hear the mm: the truncate frees the page, and
    # only an invalidation through B's notifier takes B's translation away
    # (a notifier that A's detach unhashed under B -- mmu_notifier_get's
    # shared notifier without its users count -- leaves it mapped)
    async with sim.cpus() as cpus:
        cpus.start(vmtruncate, g.mapping, 0, name="truncate")
    sim.check(b.driver.tlb.lookup(b.driver.key_of(b.addr)) is None,
              f"B still maps the truncated file[0] (page{g.page.pfn})")
