"""Atomic counters: every operation is one indivisible step.

Emulates: include/asm-x86/atomic_64.h (2.6.27)

Each operation is a yield point followed by the read-modify-write, so the
scheduler may run other CPUs between two atomic operations but never inside
one.  Protocol code passes its own step label ("2. get_page_unless_zero") so
that traces and reports speak the words of the protocol comment.
"""

from __future__ import annotations

from mmemu.engine._execution import step


class atomic_t:
    """``atomic_t``: an integer only touched through the functions below."""

    __slots__ = ("counter", "__mmemu_name__")

    def __init__(self, value: int = 0, name: str = "atomic") -> None:
        self.counter = value
        self.__mmemu_name__ = name

    def __repr__(self) -> str:
        return f"<atomic_t {self.__mmemu_name__}={self.counter}>"


async def atomic_read(v: atomic_t, *, label: str | None = None) -> int:
    await step(label or f"atomic_read({v.__mmemu_name__})", reads=(v,))
    return v.counter


async def atomic_set(v: atomic_t, i: int, *, label: str | None = None) -> None:
    await step(label or f"atomic_set({v.__mmemu_name__}, {i})", writes=(v,))
    v.counter = i


async def atomic_add_return(i: int, v: atomic_t, *, label: str | None = None) -> int:
    await step(label or f"atomic_add({v.__mmemu_name__}, {i})", writes=(v,))
    v.counter += i
    return v.counter


async def atomic_inc(v: atomic_t, *, label: str | None = None) -> None:
    await atomic_add_return(1, v, label=label or f"atomic_inc({v.__mmemu_name__})")


async def atomic_dec(v: atomic_t, *, label: str | None = None) -> None:
    await atomic_add_return(-1, v, label=label or f"atomic_dec({v.__mmemu_name__})")


async def atomic_inc_return(v: atomic_t, *, label: str | None = None) -> int:
    return await atomic_add_return(1, v, label=label or f"atomic_inc_return({v.__mmemu_name__})")


async def atomic_dec_return(v: atomic_t, *, label: str | None = None) -> int:
    return await atomic_add_return(-1, v, label=label or f"atomic_dec_return({v.__mmemu_name__})")


async def atomic_dec_and_test(v: atomic_t, *, label: str | None = None) -> bool:
    """Decrement; true when the result is zero."""
    return await atomic_add_return(-1, v, label=label or f"atomic_dec_and_test({v.__mmemu_name__})") == 0


async def atomic_inc_not_zero(v: atomic_t, *, label: str | None = None) -> bool:
    """Increment unless the counter is zero; true if it incremented."""
    name = v.__mmemu_name__
    await step(label or f"atomic_inc_not_zero({name})", writes=(v,))
    if v.counter == 0:
        return False
    v.counter += 1
    return True


async def atomic_cmpxchg(v: atomic_t, old: int, new: int, *, label: str | None = None) -> int:
    """Set to ``new`` if the counter equals ``old``; returns the value seen."""
    await step(label or f"atomic_cmpxchg({v.__mmemu_name__}, {old}, {new})", writes=(v,))
    seen = v.counter
    if seen == old:
        v.counter = new
    return seen
