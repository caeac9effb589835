"""Schedules and their printable tokens.

A schedule is what it takes to replay an execution exactly: the scenario's
registered name, its parameters and mutants, ``max_steps``, and the CPU chosen
at each choice point.  Choices at non-choice points are implied (one CPU can
run), so a schedule is short.

Token format ``mm1.<payload>``: the payload is URL-safe base64 (no padding) of
zlib-compressed compact JSON ``{"s": scenario, "p": params, "m": mutants,
"c": choices, "x": max_steps, "r": [prelude choices...]}``.  ``choices`` is a
string of base-36 digits when every CPU id is below 36, else a list of ints.
``r`` holds earlier executions that must run first in the same exploration
(lockdep reports an order inversion seen across two executions).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from typing import Any

import attrs

from ._errors import ScheduleFormatError

VERSION = "mm1"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _encode_choices(choices: Sequence[int]) -> str | list[int]:
    if all(0 <= c < 36 for c in choices):
        return "".join(_DIGITS[c] for c in choices)
    return list(choices)


def _decode_choices(raw: object) -> tuple[int, ...]:
    if isinstance(raw, str):
        try:
            return tuple(_DIGITS.index(ch) for ch in raw)
        except ValueError:
            raise ScheduleFormatError("token's choices are corrupted") from None
    if isinstance(raw, list) and all(isinstance(c, int) and c >= 0 for c in raw):
        return tuple(raw)
    raise ScheduleFormatError("token's choices are corrupted")


@attrs.frozen
class Schedule:
    """A replayable execution."""

    scenario: str
    choices: tuple[int, ...]
    params: dict[str, Any] = attrs.field(factory=dict)
    mutants: tuple[str, ...] = ()
    max_steps: int = 10_000
    prelude: tuple[tuple[int, ...], ...] = ()

    def to_token(self) -> str:
        doc: dict[str, Any] = {"s": self.scenario, "c": _encode_choices(self.choices)}
        if self.params:
            doc["p"] = self.params
        if self.mutants:
            doc["m"] = list(self.mutants)
        if self.max_steps != 10_000:
            doc["x"] = self.max_steps
        if self.prelude:
            doc["r"] = [_encode_choices(p) for p in self.prelude]
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        payload = base64.urlsafe_b64encode(zlib.compress(raw, 9)).rstrip(b"=").decode()
        return f"{VERSION}.{payload}"

    @classmethod
    def from_token(cls, token: str) -> Schedule:
        if not isinstance(token, str):
            raise ScheduleFormatError(f"a token is a string (got {type(token).__name__})")
        token = token.strip()
        version, dot, payload = token.partition(".")
        if not dot or not version.startswith("mm") or not version[2:].isdigit():
            raise ScheduleFormatError(
                f"not an mmemu schedule token (expected '{VERSION}.' followed by the "
                f"schedule, got {token[:24]!r}{'...' if len(token) > 24 else ''})")
        if version != VERSION:
            raise ScheduleFormatError(
                f"token is in schedule format {version!r}; this mmemu reads {VERSION!r} "
                f"(it was made by another mmemu version)")
        try:
            data = zlib.decompress(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            doc = json.loads(data)
        except (binascii.Error, zlib.error, ValueError, UnicodeDecodeError):
            raise ScheduleFormatError(
                "token is truncated or corrupted (its payload does not decode); "
                "copy the whole token") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("s"), str) or "c" not in doc:
            raise ScheduleFormatError("token does not hold a schedule")
        params = doc.get("p", {})
        mutants = doc.get("m", [])
        max_steps = doc.get("x", 10_000)
        if not isinstance(params, dict) or not isinstance(mutants, list) \
                or not all(isinstance(m, str) for m in mutants) \
                or not isinstance(max_steps, int) or max_steps < 1:
            raise ScheduleFormatError("token's parameters are corrupted")
        prelude = tuple(_decode_choices(p) for p in doc.get("r", []))
        return cls(scenario=doc["s"], choices=_decode_choices(doc["c"]), params=params,
                   mutants=tuple(mutants), max_steps=max_steps, prelude=prelude)
