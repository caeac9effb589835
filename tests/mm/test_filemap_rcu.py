"""The lockless radix-tree reads are checked as lockdep-RCU checks them
(mmemu.kernel.rcu.rcu_dereference_check): inside rcu_read_lock or holding
tree_lock, else SuspiciousRcuUsage."""

from __future__ import annotations

import pytest

from mmemu.engine._registry import load_builtin

from tests.races._support import assert_caught_in_process, explore

load_builtin()

DROP_RCU = (("        await rcu_read_lock()\n", ""), ("        await rcu_read_unlock()\n", ""))


@pytest.mark.parametrize("fn_name,suite", [
    ("find_get_page", "pagecache:add-vs-lookup"),
    ("find_get_pages", "pagecache:reclaim-vs-truncate"),
])
def test_a_lookup_outside_rcu_read_lock_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                     fn_name: str, suite: str) -> None:
    f = assert_caught_in_process(monkeypatch, suite, "mmemu.mm.filemap", fn_name, DROP_RCU,
                                 "SuspiciousRcuUsage")
    assert "suspicious rcu_dereference_check() usage" in f.report()
    assert "file.tree_lock" in f.report()


def test_the_lookups_inside_rcu_read_lock_pass() -> None:
    for suite in ("pagecache:add-vs-lookup", "pagecache:reclaim-vs-truncate"):
        res = explore(suite, bound=None)
        assert res.failure is None, res.failure.report()
