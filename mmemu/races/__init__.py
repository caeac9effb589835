"""Race suites: named scenarios over the kernel model and the mutants each must catch.

Importing this package registers every built-in suite, and every mutant: a
mutant registers when the model module that carries it is imported, so the
whole model is imported here (a suite may import the module it exercises
only inside its scenario).
"""

import importlib
import pkgutil

import mmemu.kernel
import mmemu.mm

for _pkg in (mmemu.kernel, mmemu.mm):
    for _mod in sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__)):
        importlib.import_module(f"{_pkg.__name__}.{_mod}")

from mmemu.races import _filters  # noqa: E402,F401  (driver-aware mutant filters)
from mmemu.races import aging  # noqa: E402,F401
from mmemu.races import aging_shapes  # noqa: E402,F401
from mmemu.races import change_pte_shapes  # noqa: E402,F401
from mmemu.races import cow  # noqa: E402,F401
from mmemu.races import demo  # noqa: E402,F401
from mmemu.races import device_fault_shapes  # noqa: E402,F401
from mmemu.races import fork_shapes  # noqa: E402,F401
from mmemu.races import interval_shapes  # noqa: E402,F401
from mmemu.races import ksm  # noqa: E402,F401
from mmemu.races import ksm_shapes  # noqa: E402,F401
from mmemu.races import locks  # noqa: E402,F401
from mmemu.races import lru_shapes  # noqa: E402,F401
from mmemu.races import migrate_shapes  # noqa: E402,F401
from mmemu.races import mm  # noqa: E402,F401
from mmemu.races import module_shapes  # noqa: E402,F401
from mmemu.races import modern  # noqa: E402,F401
from mmemu.races import mprotect  # noqa: E402,F401
from mmemu.races import notifier  # noqa: E402,F401
from mmemu.races import notifier_shapes  # noqa: E402,F401
from mmemu.races import oom_shapes  # noqa: E402,F401
from mmemu.races import exit_shapes  # noqa: E402,F401
from mmemu.races import pagecache  # noqa: E402,F401
from mmemu.races import pagecache_shapes  # noqa: E402,F401
from mmemu.races import register_shapes  # noqa: E402,F401
from mmemu.races import rmap_shapes  # noqa: E402,F401
from mmemu.races import swap  # noqa: E402,F401
from mmemu.races import swap_shapes  # noqa: E402,F401
from mmemu.races import syscall_checks  # noqa: E402,F401
from mmemu.races import vfork_shapes  # noqa: E402,F401
from mmemu.races import walker_shapes  # noqa: E402,F401
from mmemu.races import young_shapes  # noqa: E402,F401
