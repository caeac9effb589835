"""Race suite for KSM: ksmd merges a guest's anonymous page into a KSM page
while the guest faults on it.

Emulates: mm/ksm.c (try_to_merge_one_page, write_protect_page,
replace_page; 2.6.32's call sequence in the 2.6.27 generation, 3.6-6.9's
bracketed one in the modern generation) against the drivers

The merged page is freed at the end of the merge (replace_page drops the
pte's reference, ksmd its own): a translation left on it is a
FreedPageStillMapped.  At the end (mmemu.check.notifier's
end check, on in every suite) a translation may map the KSM page only
read-only (SecondaryWriteToReadOnly).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check import boot_checked
from mmemu.driver import guarded, new_driver, supports_api
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.ksm import MERGED, PIN_CHECKED, PINNED, ksm_make_stable, ksm_merge_page
from mmemu.mm.memory import fault_in, pte_get, set_pte_at
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_WRITE, MmStruct, do_mmap, mm_alloc
from mmemu.mm.page import Page
from mmemu.races.notifier import DRIVER_AXES, Guest, guest_fault


def _ksm_goals(params: dict[str, Any]) -> list[str]:
    """Every driver: write_protect_page's pin check runs against the guest's
    page -- the decision the guest fault races.  Whether it then merges
    depends on the driver: one that holds a long-term page reference (KVM's
    sptes before acb66dd051d0, a user's pfn cache) makes the kernel refuse
    every merge, which is correct behaviour, not a vacuous run.  The shipped
    drivers also state their outcome: GRU, HMM and SVA look the pte up
    without a reference, so some execution merges; KVM holds a GUP reference
    from gfn_to_pfn to the spte install, so some execution also meets the
    pin check's refusal."""
    from mmemu.races._filters import driver_class
    cls = driver_class(params)
    goals = [PIN_CHECKED]
    if cls is not None and cls.__module__.startswith("mmemu.drivers."):
        goals.append(MERGED)
        if cls.name == "kvm":
            goals.append(PINNED)
    return goals


async def ksm_setup(sim: Any, *, clean_old: bool = False) -> tuple[Any, MmStruct, int, Page]:
    """Setup of the KSM suites: an mm with two written anonymous pages; the
    first becomes the KSM page, the second (at the returned address) is the
    merge candidate -- made clean and old first with ``clean_old``.
    Returns (kernel, mm, address of the candidate, KSM page)."""
    kernel = boot_checked(sim, npages=8)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, 2 * PAGE_SIZE, VM_READ | VM_WRITE)
    await up_write(mm.mmap_sem)
    a0, a1 = vma.vm_start, vma.vm_start + PAGE_SIZE
    await fault_in(mm, a0, write=True)
    await fault_in(mm, a1, write=True)
    kpage = pte_get(mm, a0).page  # type: ignore[union-attr]
    pte = pte_get(mm, a1)
    assert kpage is not None and pte is not None and pte.page is not None
    if clean_old:
        set_pte_at(mm, a1, pte.replace(dirty=False, young=False))
    sim.check(await ksm_make_stable(vma, kpage) == 0, "ksm_make_stable failed")
    return kernel, mm, a1, kpage


@mmemu.scenario("ksm:merge-vs-guest-fault", axes=DRIVER_AXES, filter=supports_api,
                catches=["ksm:replace-no-notify", "ksm:change-pte-outside-range"],
                reaches=_ksm_goals, max_preemptions=1,
                bound_reason="unbounded on the modern generation: 678 (GRU) to 1,992 "
                             "(HMM) traces, 2-6.5 s CPU per driver, 13 s for the six runs; "
                             "23-46 executions per driver at one preemption, which catches "
                             "both its mutants")
async def merge_vs_guest_fault(sim: Any) -> None:
    """ksmd merges the guest's page into a KSM page while the guest reads it.

    CPU0 (ksmd: try_to_merge_one_page)         CPU1 (guest read fault)
    W1-W3. write_protect_page: ptep_clear_flush; F1. seq = mmu_notifier_seq
       pin check (mapcount + 1 == count?);      F2. GUP(read): a page ref
       set_pte_at_notify(read-only)             F3. lock; retry if count/seq
    R1-R4. replace_page: pte_same?; the pte     F4. install read-only;
       now maps the KSM page (set_pte_at_notify:    unlock; put
       ->change_pte); page_remove_rmap;         X. access
       put_page
    then ksmd's put_page: the page is freed
    (modern: each of W and R inside an invalidate_range_start/end)

    The guest wrote its page before: its translation is writable.

    There are 3 critical interleavings that matter:
    - F2 before W2: the guest's GUP reference fails the pin check; ksmd
      gives the pte back unchanged and does not merge (a GUP holder might
      be about to write the page);
    - F2 between W2 and R3, F3 after R3: ->change_pte (2.6.27: seq++) or
      the bracket (modern: count) makes the fault retry; GUP then finds the
      KSM page, read-only;
    - the translation from before the merge at R3: ->change_pte points it
      at the KSM page read-only (2.6.27; GRU without ->change_pte gets
      ->invalidate_page) or the modern start zapped it.  Without any
      notification (mutant ``ksm:replace-no-notify``), or, modern, with
      ->change_pte but no bracket (mutant
      ``ksm:change-pte-outside-range``: KVM warns and does nothing; GRU
      and HMM are told nothing), it keeps mapping the page that R4 and
      ksmd free.

    Harmless: F4 after R4 (the guest maps the KSM page read-only); the
    guest's access through a translation ->change_pte rewrote.
    """
    kernel, mm, a1, kpage = await ksm_setup(sim)
    page = pte_get(mm, a1).page  # type: ignore[union-attr]
    assert page is not None
    driver = new_driver(sim)
    ret = await driver.attach(kernel, mm)
    sim.check(ret == 0, f"{driver.name}: attach returned {ret}")
    g = Guest(kernel, mm, None, a1, page, driver)
    await guarded(driver, "fault", driver.fault, a1, True)
    out: dict[str, int] = {}

    async def ksmd() -> None:
        out["merged"] = await ksm_merge_page(mm, a1, kpage)

    async with sim.cpus() as cpus:
        cpus.start(ksmd, name="ksmd")
        cpus.start(guest_fault, g, False, name=driver.name)
    pte = pte_get(mm, a1)
    if out.get("merged") == 0:
        sim.check(pte is not None and pte.page is kpage and not pte.write and page.free,
                  f"after the merge the pte is {pte!r} and the merged page is "
                  f"{'free' if page.free else 'in use'}", details=page.dump())
    else:
        sim.check(pte is not None and pte.page is page, f"no merge, but the pte is {pte!r}")


__all__ = ["ksm_setup", "merge_vs_guest_fault"]
