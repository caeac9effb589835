"""Sanitizers that watch the emulated kernel: page state, secondary-MMU
use-after-free (shadow TLBs), leaks.  Lockdep lives with the locks
(mmemu.kernel.locking)."""
