"""The second series of notifier suites: unregister-vs-exit,
unregister-vs-invalidate, two-notifiers-nonblock, two-registrants,
range-nested, take-all-locks-eintr.

Every suite runs under every installed driver and each API generation it
supports (checked here on the combinations; the main job,
tests/cli/test_main_jobs.py, explores every one of them on the correct
model).  Each documented interleaving is forced both ways with KVM, and each
mutant is caught with a shrunk report of at most 2 preemptions."""

from __future__ import annotations

from typing import Any

import pytest

import mmemu
from mmemu.driver import available_drivers, load_driver
from mmemu.engine._registry import get_mutant, get_scenario, load_builtin
from mmemu.testing import force

from ._support import assert_caught, explore, labels

load_builtin()

SUITES = ["notifier:unregister-vs-exit", "notifier:unregister-vs-invalidate",
          "notifier:two-notifiers-nonblock", "notifier:two-registrants",
          "notifier:range-nested", "notifier:take-all-locks-eintr",
          "notifier:register-vs-reclaim"]
KVM = {"driver": "kvm"}
KVM_MODERN = {"driver": "kvm", "api": "modern"}


@pytest.mark.parametrize("suite", SUITES)
def test_every_driver_runs_the_suite_under_each_api_it_supports(suite: str) -> None:
    combos = get_scenario(suite).combinations()
    want = set()
    for name in available_drivers():
        for api in load_driver(name).apis:
            if suite == "notifier:two-notifiers-nonblock" and api != "modern":
                continue  # non-blockable ranges exist only in the modern generation
            if suite == "notifier:unregister-vs-exit" and \
                    api in getattr(load_driver(name), "no_release_apis", ()):
                continue  # exit never reaches a driver without ->release (GRU, modern)
            want.add((name, api))
    got = {(c["driver"], c.get("api", "2.6.27")) for c in combos}
    assert got == want
    assert {"kvm", "hmm", "sva"} <= {d for d, _ in got}


@pytest.mark.parametrize("suite", SUITES)
def test_suite_docstring_is_a_protocol_comment(suite: str) -> None:
    sc = get_scenario(suite)
    assert "critical interleaving" in sc.doc and "that matter" in sc.doc
    assert "Harmless" in sc.doc
    for m in sc.catches:
        assert f"``{m}``" in sc.doc, f"{suite} catches {m} but its comment does not say how"
        assert get_mutant(m).summary


def test_kvm_passes_the_unregister_suites_unbounded() -> None:
    """(The main job runs every combination at the suites' own budget.)"""
    for suite in ("notifier:unregister-vs-exit", "notifier:unregister-vs-invalidate"):
        res = explore(suite, params=KVM, bound=None)
        assert res.failure is None, res.failure.report()
        assert res.exhausted and res.executions > 10


CAUGHT = [
    ("notifier:unregister-vs-exit", "mmu_notifier:unregister-no-srcu", KVM,
     "NotifierUseAfterFree"),
    ("notifier:unregister-vs-exit", "mmu_notifier:unregister-del-rcu", {"driver": "gru"},
     "NotifierListCorruption"),
    ("notifier:unregister-vs-exit", "mmu_notifier:interval-remove-nowait",
     {"driver": "hmm", "api": "modern"}, "NotifierUseAfterFree"),
    ("notifier:unregister-vs-invalidate", "mmu_notifier:unregister-no-srcu", KVM_MODERN,
     "NotifierUseAfterFree"),
    ("notifier:unregister-vs-invalidate", "mmu_notifier:interval-remove-nowait",
     {"driver": "hmm", "api": "modern"}, "NotifierUseAfterFree"),
    ("notifier:two-notifiers-nonblock", "mmu_notifier:nonblock-no-end", KVM_MODERN, "Deadlock"),
    ("notifier:two-notifiers-nonblock", "mmu_notifier:itree-nonblock-no-end",
     {"driver": "hmm", "api": "modern"}, "Deadlock"),
    ("notifier:two-registrants", "mmap:no-all-locks-mutex", {"driver": "sva", "api": "modern"},
     ("UnlockNotOwner", "InvariantViolation")),
    ("notifier:range-nested", "kvm:zap-first-page-only", KVM, "FreedPageStillMapped"),
    ("notifier:take-all-locks-eintr", "mmap:ignore-signals", {"driver": "gru"}, "SignalIgnored"),
    ("notifier:take-all-locks-eintr", "mmap:eintr-leak", KVM, ("LockHeldAtExit", "Deadlock")),
    ("notifier:register-vs-reclaim", "rmap:try-to-unmap-no-i-mmap-lock", KVM_MODERN,
     "UnbalancedRange"),
]


@pytest.mark.parametrize("suite,mutant,params,kinds", CAUGHT,
                         ids=[f"{s.split(':')[1]}-{m}" for s, m, _p, _k in CAUGHT])
def test_mutant_caught_minimally(suite: str, mutant: str, params: dict[str, Any],
                                 kinds: str | tuple[str, ...]) -> None:
    assert mutant in get_scenario(suite).catches
    assert get_mutant(mutant).applies_to(params)
    assert_caught(suite, mutant, kinds, params=params)


def test_core_mutants_apply_only_where_they_can_break_something() -> None:
    sva = {"driver": "sva", "api": "modern"}
    hmm = {"driver": "hmm", "api": "modern"}
    assert not get_mutant("mmu_notifier:unregister-no-srcu").applies_to(sva)
    assert not get_mutant("mmu_notifier:unregister-no-srcu").applies_to(hmm)
    assert not get_mutant("mmu_notifier:nonblock-no-end").applies_to(sva)
    assert not get_mutant("mmu_notifier:itree-nonblock-no-end").applies_to(KVM_MODERN)
    assert not get_mutant("mmu_notifier:interval-remove-nowait").applies_to(KVM)
    assert get_mutant("mmu_notifier:interval-remove-nowait").applies_to({"api": "modern"})
    # try_to_unmap_one brackets its pte clear only in the modern generation
    assert not get_mutant("rmap:try-to-unmap-no-i-mmap-lock").applies_to(KVM)
    assert get_mutant("rmap:try-to-unmap-no-i-mmap-lock").applies_to(KVM_MODERN)


# ------------------------------------------------------ unregister vs exit

EXIT_RELEASING = [
    ("exit", "1. hlist_for_each_entry_rcu"),          # exit is inside kvm's ->release
    ("kvm", "2. hlist_del_init_rcu"),                 # unregister unhashes meanwhile
    ("kvm", "synchronize_srcu(mmu_notifier_srcu)"),
    ("exit", "release: kvm_mmu_zap_all"),
]


def test_unregister_waits_for_the_release_exit_is_running() -> None:
    out = force("notifier:unregister-vs-exit", EXIT_RELEASING, params=KVM)
    assert out.failure is None, out.failure.report()
    tr = out.trace
    order = [(tr.cpu_name(e.cpu), e.label) for e in tr.events]
    assert order.index(("exit", "srcu_read_unlock(mmu_notifier_srcu)")) < \
        order.index(("kvm", "K. kfree(kvm): the notifier's memory"))
    assert labels(out, "kvm").count("release: kvm_mmu_zap_all") == 1  # ->release twice


def test_without_the_grace_period_the_driver_frees_the_notifier_under_exits_release() -> None:
    out = force("notifier:unregister-vs-exit", EXIT_RELEASING[:2] + [
        ("kvm", "K. kfree(kvm): the notifier's memory"),
    ], params=KVM, mutants=["mmu_notifier:unregister-no-srcu"])
    assert out.failure is not None and out.failure.kind == "NotifierUseAfterFree"
    assert "release callback is still running" in out.failure.message


def test_exit_unhashes_between_unregisters_test_and_its_unhash() -> None:
    plan = [("kvm", "1. hlist_unhashed(&mn->hlist)"), ("exit", "2. hlist_del_init_rcu (all)"),
            ("kvm", "2. hlist_del_init_rcu")]
    out = force("notifier:unregister-vs-exit", plan, params=KVM)
    assert out.failure is None, out.failure.report()
    bad = force("notifier:unregister-vs-exit", plan[:2] + [("kvm", "2. hlist_del_rcu")],
                params=KVM, mutants=["mmu_notifier:unregister-del-rcu"])
    assert bad.failure is not None and bad.failure.kind == "NotifierListCorruption"


def test_unregister_after_exits_unhash_only_waits() -> None:
    out = force("notifier:unregister-vs-exit", [
        ("exit", "2. hlist_del_init_rcu (all)"), ("kvm", "1. hlist_unhashed(&mn->hlist)"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert "release: kvm_mmu_zap_all" not in labels(out, "kvm")


# ------------------------------------------------ unregister vs invalidate


def test_unregister_waits_for_the_range_start_callback_in_flight() -> None:
    out = force("notifier:unregister-vs-invalidate", [
        ("truncate", "invalidate_range_start: hlist_for_each_entry_rcu"),
        ("kvm", "2. hlist_del_init_rcu"), ("kvm", "synchronize_srcu(mmu_notifier_srcu)"),
        ("truncate", "B. kvm_unmap_hva (range)"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    tr = labels(out, "truncate")
    assert "B. kvm->mmu_notifier_count++" in tr
    assert "C. kvm->mmu_notifier_count--" not in tr  # the end is never delivered: that's OK


def test_detach_before_the_truncate_hears_nothing() -> None:
    out = force("notifier:unregister-vs-invalidate", [
        ("kvm", "K. kfree(kvm): the notifier's memory"),
        ("truncate", "i_size_write(inode, offset)"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert not [x for x in labels(out, "truncate") if x.startswith(("B.", "C."))]


# ------------------------------------------- two notifiers, one fails nonblock


def test_the_core_ends_the_started_notifier_and_the_waiting_fault_goes_on() -> None:
    out = force("notifier:two-notifiers-nonblock", [
        ("oom_reaper", "B. spin_unlock(kvm->mmu_lock)"),
        ("kvm", "4. mmu_notifier_retry"),
        ("oom_reaper", "C. kvm->mmu_notifier_count--"),
    ], params=KVM_MODERN)
    assert out.failure is None, out.failure.report()
    rp = labels(out, "oom_reaper")
    assert "U. userptr: the object's lock would sleep: -EAGAIN" in rp
    assert "3. oom_reaper: unable to reap; MMF_OOM_SKIP" in rp
    kv = labels(out, "kvm")
    assert "4. retry: mmu_notifier_count != 0" in kv and kv.count("4. mmu_notifier_retry") == 2


def test_without_the_end_the_next_fault_waits_forever() -> None:
    out = force("notifier:two-notifiers-nonblock", [
        ("oom_reaper", "3. oom_reaper: unable to reap; MMF_OOM_SKIP"),
        ("kvm", "1. mmu_seq = kvm->mmu_notifier_seq"),
    ], params=KVM_MODERN, mutants=["mmu_notifier:nonblock-no-end"])
    assert out.failure is not None and out.failure.kind == "Deadlock"
    assert "mmu_notifier_count" in out.failure.message


def test_a_fault_before_the_reaper_is_zapped_by_its_start() -> None:
    out = force("notifier:two-notifiers-nonblock", [
        ("kvm", "kvm: access gfn 0"), ("oom_reaper", "1. down_read_trylock(mmap_sem)"),
    ], params=KVM_MODERN)
    assert out.failure is None, out.failure.report()
    assert "B. kvm_unmap_hva (range)" in labels(out, "oom_reaper")


# ------------------------------------------- two registrants on two mms


MUTEX_HELD = [("kvm@mm1", "mutex_lock(&mm_all_locks_mutex)"),
              ("kvm@mm2", "mutex_lock(&mm_all_locks_mutex)"),
              ("kvm@mm1", "mutex_unlock(&mm_all_locks_mutex)")]


def test_the_second_registrant_waits_for_mm_all_locks_mutex() -> None:
    out = force("notifier:two-registrants", MUTEX_HELD, params=KVM)
    assert out.failure is None, out.failure.report()
    assert "mutex_lock(mm_all_locks_mutex) acquired" in labels(out, "kvm@mm2")


def test_without_the_mutex_the_second_registrant_unlocks_the_firsts_i_mmap_lock() -> None:
    out = force("notifier:two-registrants", [
        ("kvm@mm1", "vm_lock_mapping: spin_lock_nest_lock(&mapping->i_mmap_lock)"),
        ("kvm@mm2", "4. hlist_add_head_rcu"),
    ], params=KVM, mutants=["mmap:no-all-locks-mutex"])
    assert out.failure is not None and out.failure.kind == "UnlockNotOwner"


def test_registrations_one_after_the_other() -> None:
    out = force("notifier:two-registrants", [
        ("kvm@mm1", "5. up_write(mmap_sem)"), ("kvm@mm2", "1. down_write(mmap_sem)"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert "mutex_lock(mm_all_locks_mutex) acquired" not in labels(out, "kvm@mm2")


# ------------------------------------------------------------ range nested


def test_two_sections_in_flight_count_to_two() -> None:
    out = force("notifier:range-nested", [
        ("madvise0-2", "B. kvm->mmu_notifier_count++"),
        ("madvise1-2", "B. kvm->mmu_notifier_count++"),
        ("madvise0-2", "C. kvm->mmu_notifier_count--"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()


def test_brackets_one_after_the_other_the_second_finds_nothing() -> None:
    out = force("notifier:range-nested", [
        ("madvise0-2", "madvise: up_read(mmap_sem)"), ("madvise1-2", "madvise: down_read(mmap_sem)"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert not [x for x in labels(out, "madvise1-2") if "ptep_get_and_clear" in x]


# ---------------------------------------------------- take_all_locks -EINTR


# The truncate's step before unmap_mapping_range's spin_lock(i_mmap_lock) is
# run while KVM holds that lock: the truncate's next step is then the
# acquisition, which cannot run (it is not enabled) until mm_drop_all_locks
# releases the lock.  An acquisition of a held lock is never a step of its
# own, so a forced order cannot name it before the release.
SIGNAL_BETWEEN_VMAS = [
    ("kvm", "signal_pending(current)"),
    ("kvm", "vm_lock_mapping: spin_lock_nest_lock(&mapping->i_mmap_lock)"),
    ("truncate", "S. send_sig(driver's task)"),
    ("truncate", "i_size_write(inode, offset)"),
    ("kvm", "signal_pending(current)"),
]


def test_signal_between_the_vmas_drops_i_mmap_lock_for_the_waiting_truncate() -> None:
    out = force("notifier:take-all-locks-eintr", SIGNAL_BETWEEN_VMAS, params=KVM)
    assert out.failure is None, out.failure.report()
    kv = labels(out, "kvm")
    assert "vm_unlock_mapping: spin_unlock(&mapping->i_mmap_lock)" in kv
    assert "4. hlist_add_head_rcu" not in kv and "kvm: access gfn 0" not in kv
    t = out.trace
    order = [(t.cpu_name(e.cpu), e.label) for e in t.events]
    # the truncate waited for the lock until mm_drop_all_locks released it
    assert order.index(("kvm", "vm_unlock_mapping: spin_unlock(&mapping->i_mmap_lock)")) < \
        order.index(("truncate", "unmap_mapping_range: spin_lock(i_mmap_lock)"))


def test_eintr_without_the_drop_leaves_the_truncate_waiting() -> None:
    out = force("notifier:take-all-locks-eintr", SIGNAL_BETWEEN_VMAS, params=KVM,
                mutants=["mmap:eintr-leak"])
    assert out.failure is not None and out.failure.kind in ("Deadlock", "LockHeldAtExit")


def test_a_signal_before_the_registration_fails_it_at_the_first_test() -> None:
    plan = [("truncate", "S. send_sig(driver's task)"),
            ("kvm", "A0. attach: a signal already pending?")]
    out = force("notifier:take-all-locks-eintr", plan, params=KVM)
    assert out.failure is None, out.failure.report()
    assert labels(out, "kvm").count("signal_pending(current)") == 1
    bad = force("notifier:take-all-locks-eintr", plan, params=KVM,
                mutants=["mmap:ignore-signals"])
    assert bad.failure is not None and bad.failure.kind == "SignalIgnored"


def test_a_signal_after_the_last_test_lets_the_registration_complete() -> None:
    out = force("notifier:take-all-locks-eintr", [
        ("kvm", "5. up_write(mmap_sem)"), ("truncate", "S. send_sig(driver's task)"),
    ], params=KVM)
    assert out.failure is None, out.failure.report()
    assert "B. kvm->mmu_notifier_count++" in labels(out, "truncate")


# ------------------------------------------------------ register vs reclaim


def test_registration_waits_for_the_rmap_walks_i_mmap_lock() -> None:
    # KVM's step before its spin_lock_nest_lock runs while kswapd holds the
    # lock: the acquisition is next, and runs only after kswapd's unlock
    out = force("notifier:register-vs-reclaim", [
        ("kswapd", "1. try_to_unmap_file: spin_lock(i_mmap_lock)"),
        ("kvm", "vm_lock_mapping: test_and_set_bit(AS_MM_ALL_LOCKS)"),
        ("kswapd", "try_to_unmap_file: spin_unlock(i_mmap_lock)"),
    ], params=KVM_MODERN)
    assert out.failure is None, out.failure.report()
    t = out.trace
    order = [(t.cpu_name(e.cpu), e.label) for e in t.events]
    assert order.index(("kswapd", "try_to_unmap_file: spin_unlock(i_mmap_lock)")) < \
        order.index(("kvm", "vm_lock_mapping: spin_lock_nest_lock(&mapping->i_mmap_lock)"))
    ks = labels(out, "kswapd")
    assert "B. kvm->mmu_notifier_count++" not in ks and "C. kvm->mmu_notifier_count--" not in ks


def test_registration_before_the_walk_sees_both_ends_of_the_bracket() -> None:
    out = force("notifier:register-vs-reclaim", [
        ("kvm", "5. up_write(mmap_sem)"), ("kswapd", "trylock_page(page0)"),
    ], params=KVM_MODERN)
    assert out.failure is None, out.failure.report()
    ks = labels(out, "kswapd")
    assert "B. kvm->mmu_notifier_count++" in ks and "C. kvm->mmu_notifier_count--" in ks


def test_a_walk_without_i_mmap_lock_lets_register_split_the_bracket() -> None:
    out = force("notifier:register-vs-reclaim", [
        ("kswapd", "mmu_notifier_invalidate_range_start: mm_has_notifiers"),
        ("kvm", "5. up_write(mmap_sem)"),
    ], params=KVM_MODERN, mutants=["rmap:try-to-unmap-no-i-mmap-lock"])
    # the notifier contract checker sees the end without its start before
    # KVM's own BUG_ON(mmu_notifier_count < 0) would
    assert out.failure is not None and out.failure.kind == "UnbalancedRange"
    assert "without its ->invalidate_range_start" in out.failure.message


def test_the_new_mutants_are_documented() -> None:
    for name in ("mmu_notifier:unregister-no-srcu", "mmu_notifier:unregister-del-rcu",
                 "mmu_notifier:nonblock-no-end", "mmu_notifier:itree-nonblock-no-end",
                 "mmap:no-all-locks-mutex", "mmap:ignore-signals", "kvm:zap-first-page-only",
                 "rmap:try-to-unmap-no-i-mmap-lock"):
        m = get_mutant(name)
        assert m.summary and m.caught_as and m.doc
        assert any(name in get_scenario(s).catches for s in SUITES)
    assert mmemu.engine.get_scenario("notifier:range-nested").expect == "pass"
