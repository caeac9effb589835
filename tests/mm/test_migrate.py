"""mm/migrate.py: migrating anonymous and pagecache pages, failure and
restore, migration_entry_wait; the migrate:fault-vs-migration suite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mmemu
import mmemu.cli
from mmemu.engine._registry import get_scenario
from mmemu.kernel.locking import down_write, up_write
from mmemu.mm.filemap import AddressSpace, add_to_page_cache
from mmemu.mm.init import boot
from mmemu.mm.memory import fault_in, is_migration_entry, pte_get
from mmemu.mm.migrate import EAGAIN, migrate_pages
from mmemu.mm.mmap import PAGE_SIZE, VM_READ, VM_SHARED, VM_WRITE, do_mmap, mm_alloc
from mmemu.mm.page import (
    PG_anon,
    PG_dirty,
    PG_uptodate,
    get_page,
    page_mapcount,
    put_page,
    unlock_page,
)
from mmemu.mm.page_alloc import alloc_page_setup


def ok(body: Callable[[Any], Awaitable[None]]) -> None:
    async def scenario(sim: Any) -> None:
        await body(sim)
    res = mmemu.explore(scenario, strategy=mmemu.DFS(max_preemptions=0), executions=10)
    assert res.failure is None, res.failure.report()


def test_migrate_anonymous_page() -> None:
    async def body(sim: Any) -> None:
        kernel = boot(sim, npages=8)
        mm = mm_alloc(kernel)
        await down_write(mm.mmap_sem)
        vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_WRITE)
        await up_write(mm.mmap_sem)
        await fault_in(mm, vma.vm_start, write=True)
        page = pte_get(mm, vma.vm_start).page
        await get_page(page)  # the isolation reference
        new = alloc_page_setup()
        async with sim.cpus() as cpus:
            cpus.start(migrate_pages, page, new, name="migrate")
        pte = pte_get(mm, vma.vm_start)
        assert pte.present and pte.page is new and pte.write  # a write entry stays writable
        assert page.free
        assert new.flags & PG_anon and new.flags & PG_dirty and new.mapping is vma.anon_vma
        assert new.index == page.index and new._count.counter == 1 and page_mapcount(new) == 1
        assert not new.flags & 1  # unlocked
    ok(body)


async def _file_page_mapped(sim: Any) -> tuple[Any, Any, Any, Any, Any]:
    kernel = boot(sim, npages=8)
    mapping = AddressSpace(kernel, "f", i_size=PAGE_SIZE)
    page = alloc_page_setup()
    assert await add_to_page_cache(page, mapping, 0) == 0
    page.flags |= PG_uptodate
    await unlock_page(page)
    await put_page(page)
    mm = mm_alloc(kernel)
    await down_write(mm.mmap_sem)
    vma = await do_mmap(mm, 0, PAGE_SIZE, VM_READ | VM_SHARED, file=mapping, pgoff=0)
    await up_write(mm.mmap_sem)
    await fault_in(mm, vma.vm_start)
    await get_page(page)  # the isolation reference
    return kernel, mapping, mm, vma, page


def test_migrate_pagecache_page_replaces_the_slot() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mm, vma, page = await _file_page_mapped(sim)
        new = alloc_page_setup()
        out = {}

        async def mig() -> None:
            out["rc"] = await migrate_pages(page, new)

        async with sim.cpus() as cpus:
            cpus.start(mig, name="migrate")
        assert out["rc"] == 0
        assert mapping.page_tree[0] is new and new.mapping is mapping
        assert pte_get(mm, vma.vm_start).page is new
        assert new._count.counter == 2 and page_mapcount(new) == 1  # cache + pte
        assert page.free
    ok(body)


def test_migration_fails_on_an_extra_reference_and_restores_the_ptes() -> None:
    async def body(sim: Any) -> None:
        kernel, mapping, mm, vma, page = await _file_page_mapped(sim)
        await get_page(page)  # somebody else (a speculative lookup, a pin)
        new = alloc_page_setup()
        out = {}

        async def mig() -> None:
            out["rc"] = await migrate_pages(page, new)

        async with sim.cpus() as cpus:
            cpus.start(mig, name="migrate")
        assert out["rc"] == -EAGAIN
        assert new.free and mapping.page_tree[0] is page and page.mapping is mapping
        pte = pte_get(mm, vma.vm_start)
        assert pte.present and pte.page is page and not is_migration_entry(pte)
        assert page._count.counter == 4 and page_mapcount(page) == 1  # cache, pte, iso, extra
    ok(body)


# ------------------------------------------------------------------ the suite


def test_suite_passes_exhaustively() -> None:
    res = mmemu.explore("migrate:fault-vs-migration", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000)
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions > 20


def test_suite_documents_its_protocol() -> None:
    s = get_scenario("migrate:fault-vs-migration")
    assert s.catches == ("migrate:plain-get",)
    assert "There are 2 critical interleavings that matter" in s.doc
    assert "b. get_page_unless_zero(page)" in s.doc


def test_plain_get_is_caught_with_one_preemption() -> None:
    res = mmemu.explore("migrate:fault-vs-migration", strategy=mmemu.DFS(max_preemptions=2),
                        executions=100_000, mutants=["migrate:plain-get"])
    f = res.failure
    assert f is not None
    assert f.kind == "GetPageOnFreePage"
    assert f.preemptions == 1
    report = f.report()
    assert "b. get_page(page)" in report and "A. page_freeze_refs(page, 2)" in report
    assert "frozen (count 0)" in f.message
    again = mmemu.replay(None, f.schedule)
    assert again.failure is not None and again.failure.kind == "GetPageOnFreePage"


def test_plain_get_is_caught_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = mmemu.cli.main(["run", "migrate:fault-vs-migration", "--mutant", "migrate:plain-get"])
    out = capsys.readouterr().out
    assert code == 1
    assert "GetPageOnFreePage" in out
