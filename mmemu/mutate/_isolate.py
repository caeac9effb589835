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

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any


class SourceOverride(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import <name>`` runs ``source`` (compiled as ``filename``), or the
    code object ``code`` with ``namespace`` added to the module first."""

    def __init__(self, name: str, source: str, filename: str, *,
                 code: CodeType | None = None, namespace: dict[str, Any] | None = None) -> None:
        self.name = name
        self.source = source
        self.filename = filename
        self.code = code
        self.namespace = dict(namespace or {})

    def find_spec(self, fullname: str, path: Any = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.filename)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self.filename
        module.__dict__.update(self.namespace)
        code = self.code or compile(self.source, self.filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - running the mutant is the point


def override_module(name: str, source: str, filename: str, *, code: CodeType | None = None,
                    namespace: dict[str, Any] | None = None) -> SourceOverride:
    """Serve ``source`` (or ``code``) for ``import name`` from now on (see
    the module doc)."""
    if name in sys.modules:
        raise RuntimeError(f"cannot mutate {name}: it is already imported")
    hook = SourceOverride(name, source, filename, code=code, namespace=namespace)
    sys.meta_path.insert(0, hook)
    return hook


# ------------------------------------------------------------ reach marks
#
# The baseline must learn which mutated statements each suite run executes.
# sys.settrace does that for any code, but costs a Python call on every
# function call of the whole process (the engine and trio included): five
# times the untraced time.  Instead the baseline compiles each file to
# mutate with a mark in front of every statement some mutant changes,
#
#     __mmemu_reached__[k] = 1      (k: the statement's line range)
#
# and nothing anywhere else.  The marks write to a private bytearray; the
# model's behaviour is that of the original source.

REACHED = "__mmemu_reached__"


def _own_lines(stmt: ast.stmt) -> tuple[int, int]:
    """The lines of a statement without its nested block (an ``if``'s test,
    a ``for``'s header), or all of a simple statement."""
    end = stmt.end_lineno or stmt.lineno
    for field in ("body", "handlers", "cases"):
        sub = getattr(stmt, field, None)
        if isinstance(sub, list) and sub:
            end = min(end, max(stmt.lineno, sub[0].lineno - 1))
    return stmt.lineno, end


def instrument(source: str, filename: str, touched: Iterable[int]
               ) -> tuple[CodeType, list[tuple[int, int]]]:
    """Compile ``source`` with a reach mark before each statement whose own
    lines meet ``touched``; returns the code and the line range of each mark
    (the module needs ``REACHED`` bound to a bytearray of that length)."""
    tree = ast.parse(source, filename)
    wanted = set(touched)
    ranges: list[tuple[int, int]] = []

    def block(stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(s, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    setattr(s, field, block(sub))
            for h in getattr(s, "handlers", None) or []:
                h.body = block(h.body)
            for case in getattr(s, "cases", None) or []:
                case.body = block(case.body)
            a, b = _own_lines(s)
            if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    wanted.intersection(range(a, b + 1)):
                mark = ast.Assign(
                    targets=[ast.Subscript(value=ast.Name(REACHED, ast.Load()),
                                           slice=ast.Constant(len(ranges)), ctx=ast.Store())],
                    value=ast.Constant(1))
                out.append(ast.copy_location(mark, s))
                ranges.append((a, b))
            out.append(s)
        return out

    tree.body = block(tree.body)
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", dont_inherit=True), ranges


def load_instrumented_driver(path: str, class_name: str, spec: str,
                             touched: Iterable[int]) -> tuple[bytearray, list[tuple[int, int]]]:
    """Load the driver class from ``path`` with reach marks and make
    ``load_driver(spec)`` return it (for a driver given as 'file.py:Class',
    which no import hook sees: the loader reads the file itself)."""
    from mmemu.driver import register_driver

    code, ranges = instrument(Path(path).read_text(encoding="utf-8"), path, touched)
    hits = bytearray(len(ranges))
    name = "mmemu_mutate_baseline_" + "".join(c if c.isalnum() else "_" for c in path)
    module = ModuleType(name)
    module.__file__ = path
    module.__dict__[REACHED] = hits
    sys.modules[name] = module
    exec(code, module.__dict__)  # noqa: S102 - the user's driver, as the loader would
    register_driver(spec, getattr(module, class_name))
    return hits, ranges


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


__all__ = ["REACHED", "SourceOverride", "instrument", "load_instrumented_driver",
           "load_mutant_driver", "override_module", "write_source"]
