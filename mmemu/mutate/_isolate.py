"""Running a mutant without touching anybody's files.

Two ways in, both used inside a fresh worker process (``_worker``), so a
mutant never leaks into another and a hung one can be killed:

- ``override_module(name, source, filename)``: an import hook placed first
  on ``sys.meta_path`` that makes ``import name`` execute ``source``
  instead of the installed file.  It must be installed before anything
  imports ``name``: the model's modules import each other by name
  (``from mmemu.mm.page import put_page``), so a module mutated after the
  fact would leave the others holding the original functions.  The shipped
  drivers load through their entry points (``mmemu.drivers.kvm``), which
  the hook serves the same way.
- ``load_mutant_driver(...)``: the mutated source of a driver written to a
  file of its own and loaded as ``file.py:Class`` through the ordinary
  driver loader, so the suites (and any replay token) name that file.

In both cases the code is compiled from a real file holding the mutated
text, so tracebacks and reports show the mutant's lines.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


class SourceOverride(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import <name>`` runs ``source`` (compiled as ``filename``)."""

    def __init__(self, name: str, source: str, filename: str) -> None:
        self.name = name
        self.source = source
        self.filename = filename

    def find_spec(self, fullname: str, path: Any = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.filename)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self.filename
        code = compile(self.source, self.filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - running the mutant is the point


def override_module(name: str, source: str, filename: str) -> SourceOverride:
    """Serve ``source`` for ``import name`` from now on (see the module doc)."""
    if name in sys.modules:
        raise RuntimeError(f"cannot mutate {name}: it is already imported")
    hook = SourceOverride(name, source, filename)
    sys.meta_path.insert(0, hook)
    return hook


def write_source(directory: Path, stem: str, source: str) -> Path:
    """Write a mutant's text as ``directory/stem.py`` (a name Python can
    import: anything but letters, digits and _ becomes _)."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{safe}.py"
    path.write_text(source, encoding="utf-8")
    return path


def load_mutant_driver(path: Path, class_name: str) -> str:
    """Load the driver class ``class_name`` from the mutant file ``path``
    and return the spec the suites should use (``"path:Class"``)."""
    from mmemu.driver import load_driver

    spec = f"{path}:{class_name}"
    load_driver(spec)
    return spec


__all__ = ["SourceOverride", "load_mutant_driver", "override_module", "write_source"]
