"""The secondary-MMU use-after-free checker on its own: install / zap /
lookup / access, the free hook, reuse detection, page dumps."""

from __future__ import annotations

from typing import Any

import mmemu
from mmemu.check.shadow_tlb import ShadowTLB, install, register_tlb
from mmemu.mm.init import boot
from mmemu.mm.page import put_page
from mmemu.mm.page_alloc import alloc_page, alloc_page_setup


def _run(body: Any) -> mmemu.Result:
    async def scenario(sim: Any) -> None:
        kernel = boot(sim, npages=2)
        install(kernel)
        tlb = register_tlb(kernel, ShadowTLB("dev", key_name="gfn"))
        page = alloc_page_setup()

        async def cpu() -> None:
            await body(tlb, page)

        async with sim.cpus() as cpus:
            cpus.start(cpu, name="dev")

    return mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=2))


def test_zap_before_free_is_fine_and_dump_names_the_mapper() -> None:
    seen: list[str] = []

    async def body(tlb: ShadowTLB, page: Any) -> None:
        await mmemu.step("install", **tlb.install_accesses(3, page))
        tlb.install(3, page)
        seen.append(page.dump())
        assert tlb.lookup(3) is page
        assert tlb.access(3) is page
        await mmemu.step("zap", **tlb.zap_accesses([3]))
        assert tlb.zap(3) is not None
        assert tlb.access(3) is None
        await put_page(page)

    res = _run(body)
    assert res.failure is None, res.failure.report()
    assert "mapped by: dev gfn 3" in seen[0]


def test_free_while_mapped_is_freed_page_still_mapped() -> None:
    async def body(tlb: ShadowTLB, page: Any) -> None:
        await mmemu.step("5. install spte")
        tlb.install(3, page)
        await put_page(page, label="C. free it")

    f = _run(body).failure
    assert f is not None and f.kind == "FreedPageStillMapped"
    assert "dev gfn 3 still maps it" in f.message
    assert "installed at #" in f.message and "'5. install spte'" in f.message
    assert "page freed at" in f.message and "'C. free it'" in f.message
    assert "mapped by: dev gfn 3" in f.details


def test_access_through_a_translation_to_a_reused_page() -> None:
    async def body(tlb: ShadowTLB, page: Any) -> None:
        tlb.entries.clear()
        await mmemu.step("install")
        tlb.install(3, page)
        tlb.zap(3)
        # a stale copy survives in the driver's own table (a buggy driver)
        stale = ShadowTLB("dev2", key_name="gfn")
        stale.install(7, page)
        await put_page(page)
        again = await alloc_page()
        assert again is page  # hot reuse
        await mmemu.step("access")
        stale.access(7)

    f = _run(body).failure
    assert f is not None and f.kind == "SecondaryUseAfterFree"
    assert "dev2 gfn 7" in f.message and "reused (allocation #2, was #1)" in f.message


def test_installing_a_free_page_is_reported() -> None:
    async def body(tlb: ShadowTLB, page: Any) -> None:
        await put_page(page)
        await mmemu.step("install")
        tlb.install(1, page)

    f = _run(body).failure
    assert f is not None and f.kind == "SecondaryUseAfterFree"
    assert "installs a translation to free page0" in f.message
