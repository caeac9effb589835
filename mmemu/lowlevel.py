"""Engine primitives for authors of kernel models (locks, wait queues, RCU).

No guard rails beyond the ones documented: a step that wakes a channel must
declare a write to it; ``block`` is only legal inside a CPU.

``Lock`` and ``RwLock`` are locks the scheduler understands: acquiring one
is a single step, and a CPU whose next step acquires a held lock is not
enabled until it is released (no spinning, waking or retry steps).  Build
locks on them rather than on ``block`` / ``wake_all``: DPOR then orders
critical sections and nothing else.
"""

from mmemu.engine._execution import (
    CPU,
    Simulation,
    annotate,
    block,
    current_cpu,
    current_simulation,
    fail,
    loaded,
    reach,
    recording,
    touch,
    wake_all,
    wake_one,
    wrote,
)
from mmemu.engine._locks import SETUP, Lock, RwLock

__all__ = ["CPU", "Lock", "RwLock", "SETUP", "Simulation", "annotate", "block", "current_cpu",
           "current_simulation", "fail", "loaded", "reach", "recording", "touch", "wake_all", "wake_one",
           "wrote"]
