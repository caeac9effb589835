"""Accessed objects as dictionary keys.

A step may declare any object as accessed, hashable or not (a raw scenario's
``dict``).  The analyses that index accesses by object (DPOR's race
detection, the report's conflict annotations) key an unhashable object by
its identity.  That is deterministic: such keys are only looked up, never
iterated in identity order.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class IdKey:
    """An unhashable accessed object, keyed by identity."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdKey) and other.obj is self.obj


def keyed(objs: tuple[Any, ...]) -> tuple[Hashable, ...]:
    """``objs`` usable as dict keys (unhashable objects by identity)."""
    try:
        hash(objs)
        return objs
    except TypeError:
        out: list[Hashable] = []
        for o in objs:
            try:
                hash(o)
                out.append(o)
            except TypeError:
                out.append(IdKey(o))
        return tuple(out)
