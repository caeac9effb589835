"""Drivers that hang, for tests/cli/test_cli_hangs.py (loaded by path)."""

from __future__ import annotations

from typing import Any

import trio

from mmemu.drivers.kvm import KvmDriver


class SleepyDriver(KvmDriver):
    """Its guest fault awaits something mmemu does not schedule."""

    async def fault(self, address: int, write: bool = False) -> Any:
        await trio.sleep_forever()


class BusyDriver(KvmDriver):
    """Its guest fault loops without ever reaching a yield point."""

    async def fault(self, address: int, write: bool = False) -> Any:
        n = 0
        while True:
            n += 1  # the line the report must name
