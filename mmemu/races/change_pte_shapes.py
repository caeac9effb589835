"""Race suite for 2.6.27's ->change_pte against a guest fault, explored
without a preemption bound.

Emulates: mm/ksm.c (try_to_merge_one_page: write_protect_page, replace_page,
each pte change through set_pte_at_notify -> ->change_pte, with no
invalidate_range_start/end around it before 6bdb913f0a70, v3.6), and KVM's
kvm_mmu_notifier_change_pte of that era (mmu_notifier_seq++ and the spte
rewritten under kvm->mmu_lock).

``ksm:merge-vs-guest-fault`` explores every driver and generation within
one preemption (its unbounded modern runs are too large for the main job).
The 2.6.27 generation's runs for a driver with ->change_pte are small
(about 170 executions for KVM), and one interleaving of them needs two
preemptions: the guest's GUP before the merge, its seq test after it.  This
suite runs exactly those, unbounded, with the same body.
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import available_drivers, supports_api
from mmemu.races._filters import answers
from mmemu.races.ksm import _ksm_goals, merge_vs_guest_fault


def _answers_change_pte(params: dict[str, Any]) -> bool:
    """The 2.6.27 generation, and a driver that answers ->change_pte."""
    return supports_api(params) and bool(params.get("driver")) \
        and answers(params, "change_pte")


@mmemu.scenario("ksm:change-pte-vs-guest-fault", axes={"driver": available_drivers},
                filter=_answers_change_pte, reaches=_ksm_goals)
async def change_pte_vs_guest_fault(sim: Any) -> None:
    """ksmd merges the guest's page while the guest faults it: the 2.6.27
    ->change_pte protocol, explored unbounded.

    CPU0 (ksmd: try_to_merge_one_page)         CPU1 (guest read fault)
    W. write_protect_page: set_pte_at_notify   F1. seq = mmu_notifier_seq
       (->change_pte: seq++, spte read-only)   F2. GUP(read): a page ref
    R. replace_page: set_pte_at_notify(KSM     F3. lock; retry if seq changed
       page) (->change_pte: seq++, spte ->     F4. install; unlock; put
       the KSM page); put the merged page

    There is 1 critical interleaving that matters:
    - F1, F2 before R, F3 after it (two preemptions): F2's page is the one
      R replaces and frees; ->change_pte's seq++ makes F3 retry, and the
      retry's GUP finds the KSM page.  Without the seq bump F4 installs the
      merged page, which R's put frees under the spte.

    Harmless: F2 before W (the GUP reference fails the pin check: no
    merge); F1 after R (the fault finds the KSM page).  Every other order
    is explored by ``ksm:merge-vs-guest-fault`` too.
    """
    await merge_vs_guest_fault(sim)


__all__ = ["change_pte_vs_guest_fault"]
