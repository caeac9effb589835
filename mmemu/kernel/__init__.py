"""The emulated kernel/: atomics, locks with lockdep, RCU/SRCU, signals.

Every operation on shared state is a yield point that declares what it reads
and writes; names are the kernel's.
"""
