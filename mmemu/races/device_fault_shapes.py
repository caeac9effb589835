"""Race suite for a device that faults on its own while the process exits.

Emulates: kernel/fork.c (mmput: the last user runs exit_mmap),
mm/mmap.c (exit_mmap: mmu_notifier_release, then unmap_vmas), and the
device side of each driver that has one (``Driver.device_fault``): GRU's
TLB-miss interrupt (drivers/misc/sgi-gru/grufault.c gru_intr), an SVA
IOMMU's walk and page request (drivers/iommu/iommu-sva.c
iommu_sva_handle_mm), the HMM test mirror driven from another process
(lib/test_hmm.c dmirror_fault).

A vcpu's fault comes from a thread of the process, so it cannot run once
exit_mmap does.  A device's fault can: an instruction the GRU issued before
the exit takes a TLB miss, a DMA in flight walks the page tables, another
process holding the mirror's file asks for a fault.  Between ->release
(which tore the driver's translations down) and the last page freed, such
a fault must install nothing: after ->release no invalidation reaches the
driver any more (exit_mmap unhashed its notifier), so a translation made
then outlives the page.  Each driver has its own way to refuse: GRU's
``ms_released`` (2.6.27), the SVA context descriptor that stops translating
(``cd_live``), and ``mmget_not_zero`` before any fault is handled
(iommu_sva_handle_mm, dmirror_fault).
"""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.driver import guarded, load_driver
from mmemu.mm.mmap import mmput
from mmemu.drivers.gru import GRU_DROPIN_RELEASED
from mmemu.drivers.hmm import HMM_MM_GONE
from mmemu.drivers.sva import SVA_CD_GONE
from mmemu.races.notifier import DRIVER_AXES, _hears_exit, goals, guest



def _has_device_fault(params: dict[str, Any]) -> bool:
    """The driver hears the exit (a ->release, or nothing is needed) and
    has faults of its own (``device_fault``): KVM's come from vcpu threads."""
    if not _hears_exit(params):
        return False
    spec = params.get("driver")
    if not spec:
        return False
    return getattr(load_driver(str(spec)), "device_fault", None) is not None


@mmemu.scenario("notifier:exit-vs-device-fault", axes=DRIVER_AXES, filter=_has_device_fault,
                reaches=goals(gru=(GRU_DROPIN_RELEASED,), sva=(SVA_CD_GONE,),
                              hmm=(HMM_MM_GONE,)))
async def exit_vs_device_fault(sim: Any) -> None:
    """The process exits while its device takes a fault on the process's
    anonymous page.

    CPU0 (the process exits: mmput)            CPU1 (the device: device_fault)
    1. mm_users 1 -> 0: exit_mmap              D1. GRU: trylock mmap_sem, read the
    2. mmu_notifier_release: ->release             TFH, ms_released?  SVA: walk
       (driver: no translation from now            the pte, CD live?
       on; unhash the notifier)                D2. HMM, SVA page request:
    3. unmap_vmas: range_start, zap the            mmget_not_zero
       pte, free the page, range_end           D3. map the page it found
       (the driver hears it only if its
       notifier is still on the list)

    There are 2 critical interleavings that matter:
    - D1..D3 after 2, before 3: the pte still maps the page, but the
      driver's ->release ran and no invalidation will reach it; the fault
      must install nothing (GRU: ms_released; SVA: the CD faults; HMM/SVA
      page requests: mmget_not_zero fails since 1).  A driver that keeps
      faulting (its ->release forgetting ``ms_released`` or the CD, or its
      fault skipping the test) maps the page that 3 frees.
    - D1 before 2, D3 after it: GRU's dropin was armed before ->release's
      flush, and the hardware ignores it; SVA's walk is one transaction
      that ->release's flush waits for.

    Harmless: D1..D3 before 1 (2 tears the translation down); D1 after 3
    (nothing left to map).
    """
    g = await guest(sim, kind="anon")
    driver = g.driver
    device_fault = driver.device_fault
    if device_fault is None:
        raise mmemu.ModelError(f"driver {driver.name} has no device_fault (faults only from the "
                               f"process's threads): notifier:exit-vs-device-fault is not for it")

    async def fault() -> None:
        await guarded(driver, "device_fault", device_fault, g.addr, False)

    async with sim.cpus() as cpus:
        cpus.start(mmput, g.mm, name="exit")
        cpus.start(fault, name=driver.name)
    sim.check(not driver.tlb.keys(),
              f"{driver.name}: translations left after exit_mmap: {driver.tlb.keys()}")
