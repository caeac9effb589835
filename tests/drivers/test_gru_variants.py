"""The Dekker pair of the GRU protocol (D1..D2 against S1..S2): reordering
either side breaks it.  The broken drivers are loaded by path from this file
("tests/drivers/test_gru_variants.py:Class") and must be caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmemu
from mmemu.drivers.gru import GruDriver
from mmemu.engine._execution import step
from mmemu.kernel.atomic import atomic_inc, atomic_read

HERE = str(Path(__file__))


class LateArmGru(GruDriver):
    """Arms the dropin (records the flush generation) after the
    ms_range_active test instead of before it."""

    name = "gru-latearm"

    async def gru_try_dropin(self, vaddr: int, write: bool) -> bool | None:
        gts = self.gts
        if await atomic_read(self.ms_range_active, label="D2. atomic_read(ms_range_active)"):
            return None
        await step(f"D1. read the TFH (missvaddr {vaddr:#x}); ms_released?",
                   reads=(gts.gen_key, self.released_key))
        armed_gen = gts.hw_flush_gen
        if self.ms_released:
            return False
        page = await self.gru_vtop(vaddr, write)
        if page is None:
            return False
        return await self.tfh_write_restart(vaddr, page, write, armed_gen)


class FlushFirstGru(GruDriver):
    """range_start flushes before it raises ms_range_active."""

    name = "gru-flushfirst"

    async def invalidate_range_start(self, mm: Any, start: int, end: int) -> None:
        await self.gru_flush_tlb_range(start, end - start,
                                       f"S2. gru_flush_tlb_range({start:#x}, {end - start:#x})")
        await atomic_inc(self.ms_range_active, label="S1. atomic_inc(ms_range_active)")


@pytest.mark.parametrize("cls", ["LateArmGru", "FlushFirstGru"])
def test_reordered_dekker_pair_is_caught(cls: str) -> None:
    res = mmemu.explore("notifier:truncate-vs-fault", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, params={"driver": f"{HERE}:{cls}"})
    f = res.failure
    assert f is not None, f"{cls} not caught"
    assert f.kind == "FreedPageStillMapped", f.report()
    assert f.preemptions <= 2
    assert "gru-" in f.message and "va 0x10000000" in f.message
