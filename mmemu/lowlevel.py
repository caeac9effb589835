"""Engine primitives for authors of kernel models (locks, wait queues, RCU).

No guard rails beyond the ones documented: a step that wakes a channel must
declare a write to it; ``block`` is only legal inside a CPU.
"""

from mmemu.engine._execution import (
    CPU,
    Simulation,
    annotate,
    block,
    current_cpu,
    current_simulation,
    fail,
    reach,
    recording,
    touch,
    wake_all,
    wake_one,
)

__all__ = ["CPU", "Simulation", "annotate", "block", "reach", "recording", "touch", "current_cpu", "current_simulation", "fail",
           "wake_all", "wake_one"]
