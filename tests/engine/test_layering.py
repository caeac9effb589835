"""The engine knows nothing above it: no import of mmemu.mm, mmemu.races,
mmemu.kernel, drivers, checkers or front doors, and the registry learns the
suites from the mmemu package (add_suite_module) or entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mmemu.engine

ENGINE = Path(mmemu.engine.__file__).parent


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_engine_imports_nothing_above_it() -> None:
    files = sorted(ENGINE.glob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            if name == "mmemu" or name.startswith("mmemu."):
                assert name.startswith("mmemu.engine"), f"{path.name} imports {name}"
        assert "mmemu.races" not in path.read_text(encoding="utf-8"), path.name


def test_suites_come_from_the_mmemu_package() -> None:
    code = (
        "import sys\n"
        "from mmemu.engine._registry import _SUITE_MODULES, all_scenarios\n"
        "assert _SUITE_MODULES == ['mmemu.races'], _SUITE_MODULES\n"
        "assert 'mmemu.races' not in sys.modules\n"
        "names = [s.name for s in all_scenarios()]\n"
        "assert 'demo:lost-update' in names and 'mmemu.races' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
