"""Pending signals: ``signal_pending(current)`` and sending a signal.

Emulates: kernel/signal.c (2.6.27), just the part mm needs

A signal is a flag on the target CPU's task.  Sending it is a step, so the
explorer decides whether it lands before or after the target tests it
(``mm_take_all_locks`` tests it once per vma).
"""

from __future__ import annotations

from mmemu.engine._execution import CPU, current_simulation, step


def _key(cpu: CPU) -> str:
    return f"cpu{cpu.id}.sigpending"


def current() -> CPU:
    """The task running on this CPU (``current``)."""
    cpu = current_simulation().running
    if cpu is None:
        from mmemu.engine._errors import ModelError
        raise ModelError("'current' is only defined inside an emulated CPU")
    return cpu


async def signal_pending(task: CPU) -> bool:
    await step("signal_pending(current)", reads=(_key(task),))
    return bool(task.data.get("sigpending"))


async def send_sig(task: CPU, *, label: str | None = None) -> None:
    """Make a signal pending on ``task`` (another CPU's step)."""
    await step(label or f"send_sig(cpu{task.id})", writes=(_key(task),))
    task.data["sigpending"] = True


def set_signal_pending(task: CPU) -> None:
    """Scenario setup: start ``task`` with a signal already pending."""
    task.data["sigpending"] = True


def flush_signals(task: CPU) -> None:
    task.data["sigpending"] = False


__all__ = ["current", "flush_signals", "send_sig", "set_signal_pending", "signal_pending"]
