"""Where a scenario lives, so that a token replays it from anywhere.

A registered scenario is named by its registration (``pagecache:lookup-vs-
reclaim``): any process that imports mmemu (and its ``mmemu.scenarios``
plugins) finds it.  Any other ``async def scenario(sim)`` is named by where
it is defined: ``module:qualname``, plus ``@/absolute/path/to/file.py``
when the module is not part of an installed distribution.  A user's test
file or script is usually not importable from where ``mmemu replay`` runs
(the ``mmemu`` script does not put the current directory on ``sys.path``,
and a script's module is ``__main__``), so the path is what makes the
printed ``mmemu replay TOKEN`` work where it was printed, and from any other
directory on the same machine.

Resolving ``module:qualname@path``:

1. the module is already imported from that file (the same process, a
   pytest run): use it;
2. the file's directory tree matches the dotted module name
   (``tests/test_x.py`` for ``tests.test_x``): put the root on ``sys.path``
   and import the module by name, so its relative and sibling imports work
   as they did;
3. otherwise (``__main__``, a renamed file) load the file under a private
   module name; its ``if __name__ == "__main__"`` block does not run.

A qualname with ``<locals>`` (a scenario defined inside a function) cannot
be looked up from outside; ``replay_command`` then offers the Python form,
``mmemu.replay(fn, TOKEN)``, the only one that works.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import sysconfig
from types import ModuleType
from typing import Any

from ._errors import ModelError

_SEP = "@"


def _installed_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return [os.path.realpath(p) for k in ("purelib", "platlib", "stdlib", "platstdlib")
            if (p := paths.get(k))]


def _is_installed(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(d + os.sep) for d in _installed_dirs())


def located_name(fn: Any) -> str:
    """``module:qualname``, with ``@file`` when the module lives outside the
    installed packages (see the module docstring)."""
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not mod or not qual:
        raise ModelError(f"cannot name scenario {fn!r}: register it with @mmemu.scenario")
    name = f"{mod}:{qual}"
    module = sys.modules.get(mod)
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and file.endswith(".py") and not _is_installed(file):
        name += _SEP + os.path.abspath(file)
    return name


def split_name(ref: str) -> tuple[str, str, str]:
    """``module:qualname@path`` -> (module, qualname, path or "")."""
    head, sep, path = ref.partition(_SEP) if _SEP in ref else (ref, "", "")
    mod, _colon, qual = head.partition(":")
    return mod, qual, path


def display_name(ref: str) -> str:
    """The name without its file, for titles."""
    return ref.partition(_SEP)[0]


def is_locatable(ref: str) -> bool:
    """Can another process find this scenario from its name alone?"""
    mod, qual, _path = split_name(ref)
    return bool(mod and qual) and "<" not in qual


def _same_file(module: ModuleType, path: str) -> bool:
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and os.path.realpath(file) == os.path.realpath(path)


def _module_for(mod: str, path: str) -> ModuleType:
    """The module ``mod`` defined in ``path`` (see the module docstring)."""
    loaded = sys.modules.get(mod)
    if loaded is not None and _same_file(loaded, path):
        return loaded
    if not os.path.isfile(path):
        raise ModelError(f"the scenario's file {path!r} does not exist (the token was made "
                         f"on another machine, or the file moved)")
    parts = mod.split(".")
    stem = os.path.splitext(os.path.realpath(path))[0]
    if mod != "__main__" and stem.endswith(os.sep + os.sep.join(parts)) and loaded is None:
        root = stem[: -len(os.sep + os.sep.join(parts))] or os.sep
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(mod)
        except ImportError:
            module = None  # fall through to loading the file itself
        if module is not None and _same_file(module, path):
            return module
    private = "_mmemu_scenario_" + "".join(c if c.isalnum() else "_" for c in stem)
    if private in sys.modules:
        return sys.modules[private]
    spec = importlib.util.spec_from_file_location(private, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot load the scenario's file {path!r}")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # its own sibling imports
    sys.modules[private] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[private]
        raise ModelError(f"loading the scenario's file {path!r} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    return module


def locate(ref: str) -> Any | None:
    """The object ``module:qualname[@path]`` names, or None when it cannot
    be found (the caller reports it)."""
    mod, qual, path = split_name(ref)
    if not mod or not qual or "<" in qual:
        return None
    obj: Any
    if path:
        obj = _module_for(mod, path)
    else:
        try:
            obj = importlib.import_module(mod)
        except ImportError:
            return None
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def replay_command(ref: str, token: str) -> str:
    """The line that replays ``token`` of scenario ``ref``: ``mmemu replay
    TOKEN`` when another process can find the scenario, else the Python
    call (a scenario defined inside a function)."""
    from ._registry import is_registered

    if is_registered(ref) or is_locatable(ref):
        return f"mmemu replay {token}"
    fn = split_name(ref)[1].rsplit(".", 1)[-1] or "scenario"
    return f"mmemu.replay({fn}, {token!r})"
