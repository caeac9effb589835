"""Sanitizers that watch the emulated kernel: page state, leaks and data
loss (page_state), secondary-MMU use-after-free (shadow_tlb), ptes against
their vmas (pte_vma), the mmu-notifier contract on both sides (notifier),
mapcounts, rss counters and map_count against what they count (counters),
page aging that ignores a secondary MMU's accessed bit (young), lock-guarded
data accessed without its lock (lockset).
Lockdep lives with the locks (mmemu.kernel.locking); coverage goals with
the engine (mmemu.engine._coverage).

``boot_checked(sim, **kw)`` boots the emulated kernel and installs every
checker listed in ``INSTALLERS`` (``"module:function"``, each taking the
kernel); a checker whose module does not exist yet is skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: checker installers, in order: "module:function(kernel)"
INSTALLERS: list[str] = [
    "mmemu.check.page_state:install_page_state_checker",
    "mmemu.check.shadow_tlb:install",
    "mmemu.check.pte_vma:install",
    "mmemu.check.notifier:install",
    "mmemu.check.counters:install",
    "mmemu.check.young:install",
    "mmemu.check.lockset:install",
]


def install_once(kernel: Any, key: str, make: Callable[[Any], T]) -> T:
    """The checker kept in ``kernel.data[key]``: ``make(kernel)`` builds it
    and hooks it into the kernel the first time (installers are idempotent)."""
    existing = kernel.data.get(key)
    if existing is None:
        existing = kernel.data[key] = make(kernel)
    return existing  # type: ignore[no-any-return]


def boot_checked(sim: Any, **kw: Any) -> Any:
    """``mmemu.mm.init.boot(sim, **kw)``, then install every checker."""
    from mmemu.mm.init import boot

    kernel = boot(sim, **kw)
    for spec in INSTALLERS:
        install = _RESOLVED.get(spec, _UNRESOLVED)
        if install is _UNRESOLVED:
            install = _RESOLVED[spec] = _resolve(spec)
        if install is not None:
            install(kernel)
    return kernel


_UNRESOLVED: Any = object()
#: installer spec -> its function (None: its module does not exist); every
#: execution boots a kernel, and importing by name each time cost ~1% of a
#: short suite's exploration
_RESOLVED: dict[str, Callable[[Any], Any] | None] = {}


def _resolve(spec: str) -> Callable[[Any], Any] | None:
    modname, _, fname = spec.partition(":")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name != modname:
            raise
        return None
    fn: Callable[[Any], Any] = getattr(mod, fname)
    return fn
