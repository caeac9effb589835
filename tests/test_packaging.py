"""The install layout: every package of the source tree is installed, the
reference drivers and the benchmarks inside the mmemu package."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed() -> None:
    cfg = _setuptools()
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "mmemu").rglob("__init__.py")}
    missing = found - listed
    assert not missing, f"pyproject.toml [tool.setuptools] packages misses {sorted(missing)}"
    assert cfg["package-dir"] == {"mmemu.drivers": "drivers", "mmemu.benchmarks": "benchmarks"}


def test_no_top_level_drivers_package() -> None:
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    for name, target in eps["mmemu.drivers"].items():
        assert target.startswith("mmemu.drivers."), (name, target)
    import mmemu.benchmarks
    import mmemu.drivers.kvm

    assert Path(mmemu.drivers.kvm.__file__).resolve().parent == ROOT / "drivers"
    assert any(Path(p).resolve() == ROOT / "benchmarks" for p in mmemu.benchmarks.__path__)
