"""The mutation operators on small sources: what each one finds, the text
it produces, and what it leaves alone."""

from __future__ import annotations

import ast
import textwrap

import pytest

from mmemu.mutate import OPERATORS, MutationSourceError, generate_mutants


def mutants(src: str, *ops: str, **kw: object) -> list:
    return generate_mutants(textwrap.dedent(src), "pkg/dev.py",
                            operators=ops or None, **kw)  # type: ignore[arg-type]


def changed_lines(m: object) -> list[str]:
    """The '+' lines of a mutant's diff."""
    return [ln[1:].strip() for ln in m.diff.splitlines()  # type: ignore[attr-defined]
            if ln.startswith("+") and not ln.startswith("+++")]


def removed_lines(m: object) -> list[str]:
    return [ln[1:].strip() for ln in m.diff.splitlines()  # type: ignore[attr-defined]
            if ln.startswith("-") and not ln.startswith("---")]


DRIVER = '''
    import mmemu
    from mmemu.kernel.locking import spin_lock, spin_unlock

    NO_SEQ = mmemu.register_mutant("dev:no-seq", "x")

    class Dev:
        def __init__(self):
            self.seq = 0
            self.count = 0

        async def fault(self, va):
            while True:
                await step("1. seq")
                seq = self.seq
                await spin_lock(self.lock, label="3. lock")
                if self.count or self.seq != seq:
                    await spin_unlock(self.lock, label="4. unlock (retry)")
                    continue
                await step("5. install")
                self.tlb.install(va, page)
                await spin_unlock(self.lock, label="6. unlock")
                return True

        async def invalidate_range_start(self, mm, start, end):
            await spin_lock(self.lock)
            self.count += 1
            await self.zap_range(start, end)
            await spin_unlock(self.lock)

        async def invalidate_range_end(self, mm, start, end):
            await spin_lock(self.lock)
            if not mmemu.mutant(NO_SEQ):
                self.seq += 1
            if mmemu.mutant(NO_SEQ):
                self.seq += 2
            self.count -= 1
            wake_all(self.key)
            await spin_unlock(self.lock)
'''


def test_every_operator_is_documented_and_unknown_ones_are_refused() -> None:
    assert all(OPERATORS.values())
    with pytest.raises(ValueError, match="unknown mutation operator 'nope'"):
        mutants("def f(): pass", "nope")


def test_source_that_does_not_parse_is_one_clear_error() -> None:
    with pytest.raises(MutationSourceError, match=r"cannot parse pkg/dev.py: .*line 1"):
        generate_mutants("def f(:\n", "pkg/dev.py")


def test_lock_pair_drops_the_lock_and_every_unlock_of_that_critical_section() -> None:
    ms = mutants(DRIVER, "lock-pair")
    fault = [m for m in ms if m.function == "Dev.fault"]
    assert [m.id for m in fault] == ["dev:Dev.fault:lock-pair:1"]
    m = fault[0]
    assert m.operator == "lock-pair" and m.line == 16
    assert m.description == "drop spin_lock(self.lock) and its spin_unlock"
    # the lock and both unlocks (retry path and normal path) are gone
    assert removed_lines(m) == ['await spin_lock(self.lock, label="3. lock")',
                                'await spin_unlock(self.lock, label="4. unlock (retry)")',
                                'await spin_unlock(self.lock, label="6. unlock")']
    assert changed_lines(m) == ["pass", "pass", "pass"]
    assert m.touched == (16, 18, 22)
    ast.parse(m.source)


def test_a_lock_released_by_another_function_is_not_a_pair() -> None:
    src = '''
        async def take(self):
            await spin_lock(self.lock)
            self.n += 1

        async def drop(self):
            await spin_unlock(self.lock)
    '''
    assert mutants(src, "lock-pair") == []


def test_seq_update_drops_field_updates_but_not_local_counters() -> None:
    ms = mutants(DRIVER, "seq-update")
    assert [m.description for m in ms] == ["drop self.count += 1", "drop self.seq += 1",
                                           "drop self.count -= 1"]
    src = '''
        async def f(self):
            i = 0
            i += 1
            await atomic_inc(self.active, label="S1")
            SetPageLocked(page)
    '''
    assert [m.description for m in mutants(src, "seq-update")] == [
        'drop await atomic_inc(self.active, label="S1")', "drop SetPageLocked(page)"]


def test_code_that_only_a_named_mutant_runs_is_not_mutated() -> None:
    ms = mutants(DRIVER)
    lines = {m.line for m in ms}
    # `self.seq += 2` (line 36) runs only with the mutant on; `self.seq += 1`
    # under `if not mmemu.mutant(...)` is the correct code
    assert 36 not in lines and 34 in lines
    # nothing in __init__ either
    assert not any(m.function == "Dev.__init__" for m in ms)


def test_functions_called_only_from_mutant_branches_are_left_alone() -> None:
    src = '''
        async def add(self):
            if mmemu.mutant(M):
                return await _broken(self)
            self.n += 1

        async def _broken(self):
            self.n += 2
    '''
    assert [m.function for m in mutants(src, "seq-update")] == ["add"]


def test_setup_only_branches_are_left_alone() -> None:
    src = '''
        async def _lock(lock):
            cpu = current_simulation().running
            if cpu is None:
                lock.owner = SETUP
                return
            lock.owner = cpu
    '''
    assert [m.description for m in mutants(src, "store")] == ["drop lock.owner = cpu"]


def test_retry_test_makes_the_test_false_and_keeps_awaited_side_effects() -> None:
    ms = mutants(DRIVER, "retry-test")
    assert len(ms) == 1
    assert changed_lines(ms[0]) == ["if False:"]
    src = '''
        async def lookup(self):
            while True:
                if not await page_cache_get_speculative(page):
                    continue
                return page
    '''
    (m,) = mutants(src, "retry-test")
    # the speculative get still runs (its step and its reference); only the
    # verdict is ignored
    assert changed_lines(m) == ["if (not await page_cache_get_speculative(page)) and False:"]


def test_recheck_signal_and_wait() -> None:
    src = '''
        async def take_all(self):
            if await signal_pending(current()):
                return -EINTR
            if page.mapping is not mapping:
                return None
            if page is None:
                return None
            while lock.owner is not None:
                await block(lock, "acquired")
            await synchronize_srcu(ss)

        def helper(x):
            if x.ready:
                return 1
    '''
    ms = mutants(src, "recheck", "signal", "wait")
    assert [(m.operator, m.line) for m in ms] == [("signal", 3), ("recheck", 5),
                                                  ("wait", 9), ("wait", 11)]
    # `if page is None` is a null guard (dropping it only crashes), and
    # plain (non-async) helpers hold no protocol rechecks


def test_move_after_unlock_moves_the_statement_with_its_step() -> None:
    ms = mutants(DRIVER, "move-after-unlock")
    fault = next(m for m in ms if m.function == "Dev.fault")
    assert fault.description.startswith("move self.tlb.install(va, page) after await "
                                         "spin_unlock(self.lock")
    body = fault.source.splitlines()
    unlock = next(i for i, ln in enumerate(body) if 'label="6. unlock"' in ln)
    assert body[unlock + 1].strip() == 'await step("5. install")'
    assert body[unlock + 2].strip() == "self.tlb.install(va, page)"
    start = [m for m in ms if m.function == "Dev.invalidate_range_start"]
    assert {m.description.split(" after")[0] for m in start} == {
        "move self.count += 1", "move await self.zap_range(start, end)"}
    for m in ms:
        ast.parse(m.source)


def test_wake_up_zap_notifier_get_put() -> None:
    src = '''
        async def end(self, mm):
            await mmu_notifier.mmu_notifier_invalidate_range_start(mm, 0, 4096)
            pte_clear(mm, 0)
            await mmu_notifier.mmu_notifier_invalidate_range_end(mm, 0, 4096)
            await mmu_notifier.mmu_notifier_invalidate_page(mm, 0)
            await mn.ops.release(mn, mm)
            await put_page(page)
            await wake_up_all(self.wq)
    '''
    got = [(m.operator, m.description) for m in mutants(
        src, "wake-up", "zap", "notifier", "get-put")]
    assert got == [
        ("notifier", "drop the mmu_notifier_invalidate_range_start/end pair at lines 3 and 5"),
        ("zap", "drop pte_clear(mm, 0)"),
        ("notifier", "drop await mmu_notifier.mmu_notifier_invalidate_page(mm, 0)"),
        ("notifier", "drop await mn.ops.release(mn, mm)"),
        ("get-put", "drop await put_page(page)"),
        ("wake-up", "drop await wake_up_all(self.wq)"),
    ]


def test_plain_get_needs_the_plain_function_in_scope() -> None:
    src = '''
        from mmemu.mm.page import get_page

        async def lookup(page):
            if not await get_page_unless_zero(page, label="2"):
                return None
    '''
    (m,) = mutants(src, "plain-get")
    assert changed_lines(m) == ['if not ((await get_page(page, label="2")) or True):']
    assert mutants(src.replace("get_page\n", "put_page\n"), "plain-get") == []


def test_wrong_count_bumps_freeze_counts_and_count_comparisons() -> None:
    src = '''
        async def remove(page):
            if not await page_freeze_refs(page, 2):
                return False
            if page_count(page) != 0:
                return False
    '''
    got = [m.description for m in mutants(src, "wrong-count")]
    assert got == ["page_freeze_refs at the wrong count: 2 -> 3",
                   "page_freeze_refs at the wrong count: 2 -> 1",
                   "compare page_count(page) at the wrong count: 0 -> 1"]


def test_free_order_moves_a_free_above_the_invalidation_before_it() -> None:
    src = '''
        async def unmap(vma, address):
            pteval = await ptep_clear_flush_notify(vma, address)
            await page_remove_rmap(page, vma)
            await put_page(page)
    '''
    (m,) = mutants(src, "free-order")
    lines = [ln.strip() for ln in m.source.splitlines() if ln.strip()]
    assert lines[1:4] == ["await put_page(page)",
                          "pteval = await ptep_clear_flush_notify(vma, address)",
                          "await page_remove_rmap(page, vma)"]


def test_ids_are_stable_when_other_functions_change() -> None:
    before = {m.id: m.description for m in mutants(DRIVER)}
    edited = DRIVER.replace("        async def invalidate_range_start",
                            "        async def extra(self):\n"
                            "            await spin_lock(self.other)\n"
                            "            await spin_unlock(self.other)\n\n"
                            "        async def invalidate_range_start")
    after = {m.id: m.description for m in mutants(edited)}
    assert set(after) - set(before) == {"dev:Dev.extra:lock-pair:1"}
    assert all(after[k] == v for k, v in before.items())


def test_every_mutant_parses_differs_and_is_unique() -> None:
    ms = mutants(DRIVER)
    assert len({m.source for m in ms}) == len(ms)
    original = ast.dump(ast.parse(textwrap.dedent(DRIVER)))
    for m in ms:
        assert ast.dump(ast.parse(m.source)) != original
        assert m.diff.startswith("--- a/pkg/dev.py\n+++ b/pkg/dev.py\n")


def test_exclude_leaves_matching_functions_alone() -> None:
    ms = mutants(DRIVER, exclude=[r"Dev\.invalidate_.*"])
    assert {m.function for m in ms} == {"Dev.fault"}
