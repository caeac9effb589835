"""mmemu/mm imports nothing above it: no driver, no checker, no suite, no
workload.  Checkers and drivers hook in through objects the kernel holds;
mutant filters that need to know about drivers live with the suites."""

from __future__ import annotations

import ast
from pathlib import Path

import mmemu.mm
from mmemu.engine import get_mutant

MM = Path(mmemu.mm.__file__).parent
UPWARD = ("mmemu.driver", "mmemu.drivers", "mmemu.check", "mmemu.races", "mmemu.workload",
          "mmemu.testing", "mmemu.cli", "mmemu._mutants", "mmemu._explain")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
    return out


def test_mm_imports_nothing_above_it() -> None:
    bad = [f"{p.name}:{line}: {mod}" for p in sorted(MM.glob("*.py"))
           for line, mod in _imports(p) if mod.startswith(UPWARD)]
    assert not bad, "mm/ imports upward:\n" + "\n".join(bad)


def test_the_layering_test_sees_an_upward_import(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from mmemu.driver import load_driver\n")
    assert [m for _, m in _imports(f) if m.startswith(UPWARD)] == ["mmemu.driver"]


def test_core_mutant_filters_come_from_the_suites_layer() -> None:
    reg = get_mutant("mmu_notifier:register-unlocked")
    assert reg.applies is not None and reg.applies.__module__ == "mmemu.races._filters"
    # an SVA IOTLB is flushed under the PTL at the pte clear: no bracket to split
    assert not reg.applies_to({"driver": "sva", "api": "modern"})
    assert reg.applies_to({"driver": "kvm"})
    rel = get_mutant("mmu_notifier:release-after-unhash")
    assert rel.applies is not None and rel.applies.__module__ == "mmemu.races._filters"
    # an interval notifier is not on the hlist that __mmu_notifier_release walks
    assert not rel.applies_to({"driver": "hmm", "api": "modern"})
    assert rel.applies_to({"driver": "gru"})
