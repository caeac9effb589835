"""mm:syscall-errors (mmemu/races/syscall_checks.py): the correct model
refuses each bad call; a check skipped (as the mutation benchmark's recheck
operator skips it, made here in process) is seen."""

from __future__ import annotations

import pytest

import mmemu
from mmemu.engine._registry import load_builtin

from tests.check.test_pte_vma import _mutant

load_builtin()

SUITE = "mm:syscall-errors"


def _run() -> mmemu.Result:
    return mmemu.explore(SUITE, strategy=mmemu.DFS(), executions=10)


def test_the_correct_syscalls_refuse_every_bad_call() -> None:
    res = _run()
    assert res.failure is None, res.failure.report()
    assert res.exhausted and res.executions == 1


@pytest.mark.parametrize("module,fn_name,edit,message", [
    # madvise(MADV_DONTNEED) of a VM_LOCKED vma zaps it
    ("mmemu.mm.madvise", "madvise_dontneed",
     ("    if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):\n", "    if False:\n"),
     "call 3 (see the scenario's list) returned 0, expected -22"),
    # madvise goes on to the next vma after an error: N's page is zapped
    # and N's success overwrites L's error
    ("mmemu.mm.madvise", "sys_madvise",
     ("                if error:\n                    break\n", ""),
     "call 3 (see the scenario's list) returned 0, expected -22"),
    # PAGE_ALIGN's wrap to 0 not checked
    ("mmemu.mm.madvise", "sys_madvise",
     ("    if len_in and not length:\n", "    if False:\n"),
     "call 9 (see the scenario's list) returned 0, expected -22"),
    # mprotect of a read-only file's shared mapping to PROT_WRITE
    ("mmemu.mm.mprotect", "do_mprotect",
     ("            if (newflags & ~(newflags >> 4)) & (VM_READ | VM_WRITE | VM_EXEC):\n",
      "            if False:\n"),
     "call 7 (see the scenario's list) returned 0, expected -13"),
    # mprotect_fixup going on with flags that do not change: change_protection
    # rewrites the private page's pte read-only (vm_page_prot of a private
    # writable mapping is COW) and the vma is split
    ("mmemu.mm.mprotect", "mprotect_fixup",
     ("    if newflags == vma.vm_flags:\n", "    if False:\n"),
     "a refused call changed the pte at 0x10000"),
], ids=["dontneed-locked", "madvise-no-break", "madvise-align-wrap", "mprotect-eacces",
        "mprotect-unchanged"])
def test_a_skipped_check_is_seen(module: str, fn_name: str, edit: tuple[str, str], message: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    fn = getattr(importlib.import_module(module), fn_name)
    monkeypatch.setattr(fn, "__code__", _mutant(fn, edit).__code__)
    f = _run().failure
    assert f is not None and message in f.message, f and f.report()
