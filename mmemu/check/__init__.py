"""Sanitizers that watch the emulated kernel: page state, secondary-MMU
use-after-free (shadow TLBs), leaks.  Lockdep lives with the locks
(mmemu.kernel.locking).

``boot_checked(sim, **kw)`` boots the emulated kernel and installs every
checker listed in ``INSTALLERS`` (``"module:function"``, each taking the
kernel); a checker whose module does not exist yet is skipped.
"""

from __future__ import annotations

import importlib
from typing import Any

#: checker installers, in order: "module:function(kernel)"
INSTALLERS: list[str] = [
    "mmemu.check.page_state:install_page_state_checker",
    "mmemu.check.shadow_tlb:install",
]


def boot_checked(sim: Any, **kw: Any) -> Any:
    """``mmemu.mm.init.boot(sim, **kw)``, then install every checker."""
    from mmemu.mm.init import boot

    kernel = boot(sim, **kw)
    for spec in INSTALLERS:
        modname, _, fname = spec.partition(":")
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        getattr(mod, fname)(kernel)
    return kernel
