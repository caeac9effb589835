"""Hangs: a CPU that awaits what mmemu does not schedule, a step that never
yields, and Ctrl-C that must end a run whatever the model is doing.

The engine runs one emulated CPU at a time and hands control from CPU to CPU
itself; trio only ever sees one runnable task of ours.  Two kinds of model
code break that and would hang an exploration for ever:

A *watchdog thread* samples the running execution's step counter every
``TICK_S``; nothing is added to the engine's hot path.  When a CPU's step
stops making progress, where the trio thread is tells the two cases apart.

**A foreign await.**  A driver's ``fault`` that does ``await
trio.sleep_forever()`` (or waits on a ``trio.Event``, a socket, a timeout)
parks its CPU's task somewhere the engine will never reschedule it, and no
other CPU may run meanwhile.  Trio then has nothing to run: its thread sits
in the I/O wait of its run loop.  That never happens while the engine is in
control (every park of ours hands the token to another task first), so
when a CPU is running, the step count has not moved for
``FOREIGN_AWAIT_AFTER_S`` and the trio thread's innermost frame is trio's
I/O wait, the CPU is stuck in a foreign await.  The watchdog then asks trio
(``TrioToken.run_sync_soon``) to run ``_fail_foreign`` in the trio thread:
it walks the stuck CPU's coroutine stack to name the await and the model
code that made it (``SleepyDriver.fault`` at ``sleepy.py:14`` awaits
``trio.sleep_forever``), fails the execution with ``ForeignAwait``, unwinds
the other CPUs as for any failure, and cancels the stuck one out of its
await through the cancel scope of the task it runs on.

**A step that never yields.**  A ``while True: pass`` between two yield
points never gives control back at all: the trio thread is busy in model
code.  When one step has run for longer than the ``step_timeout`` setting
(``MMEMU_STEP_TIMEOUT``, seconds, default 10; 0 turns it off), the watchdog
asks the main thread, through a signal handler of ours, to raise
``_StepInterrupt`` *inside the step*: the handler runs in the main thread
between two bytecodes of the looping code, sees the frame it interrupted,
and raises only when that frame is model code (not trio's or the engine's
own, which must never be unwound half-way; it tries again on the next tick
otherwise).  The execution then fails with ``StepTimeout`` naming the file
and line, and the exploration ends with its results so far.  Signal
handlers run in the main thread only; an exploration in another thread (a
``--dask`` worker runs its units in threads) gets the interrupt from the
watchdog thread itself, with ``PyThreadState_SetAsyncExc``: once the
stuck thread's innermost frame is model code (looked up in
``sys._current_frames()``, else it tries again on the next tick), the
exception is set on that thread and raised there at its next bytecode
boundary, which for a loop that never yields is inside the same loop.

Wall-clock time is used only here, to decide that something is wrong; it
never enters a trace, a schedule or a result.

**Ctrl-C.**  ``request_stop()`` (the CLI calls it from its SIGINT handler,
which only sets flags) asks every exploration to end after the execution it
is in, including a shrink in progress, keeping what was found.  If the
running step does not yield within ``STOP_GRACE_S``, the watchdog
interrupts it as above, so a Ctrl-C ends a run within about a second even
in a step that loops for ever.

Error tree::

    MmemuError
    └── Hang                 the model stopped making progress
        ├── ForeignAwait     a CPU awaits something mmemu does not schedule
        └── StepTimeout      a step ran longer than step_timeout (or was
                             interrupted by Ctrl-C) without reaching a yield point
"""

from __future__ import annotations

import os
import signal
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import trio

from ._errors import MmemuError

if TYPE_CHECKING:
    from ._execution import CPU, Simulation

#: how long a CPU's step may sit in trio's I/O wait before it counts as a
#: foreign await (the engine itself never lets trio's run loop idle)
FOREIGN_AWAIT_AFTER_S = 0.1
#: how long a Ctrl-C waits for the running step to yield before the
#: watchdog interrupts it
STOP_GRACE_S = 0.25
#: the watchdog thread's sampling period
TICK_S = 0.05
#: the step limit when replaying a known StepTimeout to record its trace
REPLAY_LIMIT_S = 1.0

_TRIO_DIR = os.path.dirname(trio.__file__)
_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))


class Hang(MmemuError):
    """The model stopped making progress (see the module docstring).
    ``details``: more lines for the report (where it was called from)."""

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ForeignAwait(Hang):
    """A CPU awaits something mmemu does not schedule (a trio sleep, event,
    socket...): the execution could never go on."""


class StepTimeout(Hang):
    """A step ran for longer than ``step_timeout`` seconds (or until a
    Ctrl-C) without reaching a yield point."""


class _StepInterrupt(BaseException):
    """Raised inside a step that never yields; the CPU turns it into a
    StepTimeout failure (BaseException: model code must not catch it)."""

    def __init__(self, error: StepTimeout, *, interrupted: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.interrupted = interrupted


class _AsyncStepInterrupt(_StepInterrupt):
    """``_StepInterrupt`` raised in another thread by the watchdog thread:
    ``PyThreadState_SetAsyncExc`` takes a class and instantiates it without
    arguments in the target thread, so it takes its error from the
    watchdog."""

    def __init__(self) -> None:
        sent = WATCHDOG.sent
        WATCHDOG.sent = None
        if sent is None:  # cannot happen: the watchdog sets it before sending
            sent = _StepInterrupt(StepTimeout("a step never reached a yield point"),
                                  interrupted=False)
        super().__init__(sent.error, interrupted=sent.interrupted)


# ------------------------------------------------------------ naming frames


def _is_internal(filename: str) -> bool:
    """Frames of trio and of the engine itself (never model code)."""
    path = os.path.abspath(filename)
    return path.startswith(_TRIO_DIR + os.sep) or path.startswith(_ENGINE_DIR + os.sep)


def _frame_name(frame: types.FrameType) -> str:
    code = frame.f_code
    return getattr(code, "co_qualname", code.co_name)


def frame_where(frame: types.FrameType) -> str:
    """``SleepyDriver.fault (/path/sleepy.py:14)``."""
    return f"{_frame_name(frame)} ({frame.f_code.co_filename}:{frame.f_lineno})"


def _public_trio_name(frame: types.FrameType) -> str:
    """``trio.sleep_forever`` rather than ``trio._timeouts.sleep_forever``,
    ``trio.Event.wait`` rather than ``trio._sync.Event.wait``, when trio
    exports it under the short name."""
    module = str(frame.f_globals.get("__name__", "?"))
    qual = _frame_name(frame)
    for public in (trio, trio.lowlevel):
        obj: Any = public
        for part in qual.split("."):
            obj = getattr(obj, part, None)
        if getattr(obj, "__code__", None) is frame.f_code:
            return f"{public.__name__}.{qual}"
    return f"{module}.{qual}"


def await_chain(coro: Any) -> list[types.FrameType]:
    """The frames of a suspended coroutine, outermost first, following
    ``cr_await`` (and generator-based awaitables, as trio's traps are)."""
    frames: list[types.FrameType] = []
    seen = 0
    while coro is not None and seen < 200:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) \
            or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) \
            or getattr(coro, "ag_await", None)
    return frames


def describe_foreign_await(cpu: CPU) -> tuple[str, str]:
    """(message, details) for a CPU whose task is parked outside the engine."""
    frames = await_chain(getattr(cpu.task, "coro", None))
    first_trio = next((k for k, f in enumerate(frames)
                       if os.path.abspath(f.f_code.co_filename).startswith(_TRIO_DIR + os.sep)),
                      None)
    model = [f for f in (frames[:first_trio] if first_trio is not None else frames)
             if not _is_internal(f.f_code.co_filename)]
    awaited = (_public_trio_name(frames[first_trio]) + "()" if first_trio is not None
               else "something mmemu does not schedule")
    if model:
        where = f"in {frame_where(model[-1])}"
    else:
        where = "in code mmemu cannot name"
    message = (f"{cpu.title} awaits {awaited} {where}: mmemu does not schedule that await, "
               f"so the execution can never go on (model and driver code may only await "
               f"mmemu.step() and the mmemu.lowlevel primitives)")
    details = ""
    if len(model) > 1:
        details = "  called from:\n" + "\n".join(f"    {frame_where(f)}"
                                                 for f in reversed(model[:-1]))
    return message, details


def _in_trio_io_wait(frame: types.FrameType | None) -> bool:
    """Is a thread whose innermost frame is ``frame`` idle in trio's run
    loop, waiting for I/O (``_io_epoll.py``, ``_io_kqueue.py``...)?"""
    return frame is not None and os.path.basename(frame.f_code.co_filename).startswith("_io_") \
        and os.path.abspath(frame.f_code.co_filename).startswith(_TRIO_DIR + os.sep)


def _fail_foreign(sim: Simulation, cpu: CPU, steps: int) -> None:
    """Runs in the trio thread (``run_sync_soon``): fail ``sim`` if ``cpu``
    is still the running CPU, stuck at the same step."""
    from . import _execution

    if _execution._current is not sim or sim.running is not cpu or sim.aborting \
            or sim.steps != steps:
        return  # it moved on meanwhile
    message, details = describe_foreign_await(cpu)
    sim.fail_stuck_cpu(cpu, ForeignAwait(message, details=details))


# ------------------------------------------------------------ the watchdog


_stop = threading.Event()


def request_stop() -> None:
    """Ask the running exploration to stop after the current execution
    (signal-handler safe: it only sets a flag)."""
    _stop.set()


def clear_stop() -> None:
    _stop.clear()


def stop_requested() -> bool:
    return _stop.is_set()


def _interrupt_signal() -> int | None:
    for name in ("SIGRTMIN", "SIGUSR2"):
        num = getattr(signal, name, None)
        if num is not None:
            return int(num) + (1 if name == "SIGRTMIN" else 0)
    return None


class _Watchdog:
    """The thread that notices a stuck step (see the module docstring)."""

    def __init__(self) -> None:
        self.limit = 0.0
        self.depth = 0
        #: the trio run the explorations run in, and its thread
        self.token: trio.lowlevel.TrioToken | None = None
        self.thread_id = 0
        #: is our signal handler installed (explorations in the main thread)?
        self.signals = False
        self.pending: _StepInterrupt | None = None
        #: the interrupt raised in a thread other than the main one, for
        #: _AsyncStepInterrupt to pick up there
        self.sent: _StepInterrupt | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._signum = _interrupt_signal()
        self._old_handler: Any = None

    # -- main thread

    @contextmanager
    def guard(self, step_timeout: float) -> Iterator[None]:
        """Watch the explorations run inside this block (called in trio)."""
        outer = self.depth == 0
        signals = (threading.current_thread() is threading.main_thread()
                   and self._signum is not None)
        if outer:
            self.token = trio.lowlevel.current_trio_token()
            self.thread_id = threading.get_ident()
            if signals:
                assert self._signum is not None
                self._old_handler = signal.signal(self._signum, self._on_signal)
            self.signals = signals
        saved = self.limit
        self.limit = step_timeout
        self.depth += 1
        self._start_thread()
        try:
            yield
        finally:
            self.depth -= 1
            self.limit = saved
            if outer:
                if signals:
                    assert self._signum is not None
                    signal.signal(self._signum, self._old_handler)
                self._old_handler = None
                self.pending = None
                self.sent = None
                self.token = None
                self.signals = False

    @contextmanager
    def replaying(self, kind: str | None) -> Iterator[None]:
        """Replaying a StepTimeout to record it: the step is known to hang,
        so a second wait of the whole limit would only cost time."""
        saved = self.limit
        if kind == StepTimeout.__name__ and saved > 0:
            self.limit = min(saved, REPLAY_LIMIT_S)
        try:
            yield
        finally:
            self.limit = saved

    def _on_signal(self, _signum: int, frame: types.FrameType | None) -> None:
        """Runs in the main thread, between two bytecodes of whatever it is
        executing: raise the pending interrupt there if that is model code
        of the running step."""
        from . import _execution

        pending = self.pending
        sim = _execution._current
        if pending is None or sim is None or sim.running is None or sim.aborting:
            return
        if frame is None or _is_internal(frame.f_code.co_filename):
            return  # not inside the step's own code: the thread asks again
        self.pending = None
        pending.error = StepTimeout(f"{pending.error}: at {frame_where(frame)}",
                                    details=pending.error.details)
        raise pending

    # -- the thread

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mmemu watchdog",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._watch()
            except Exception:  # noqa: BLE001 - the watchdog must outlive a bad sample
                time.sleep(TICK_S)

    def _watch(self) -> None:
        from . import _execution

        seen: tuple[int, int] | None = None
        since = time.monotonic()
        while True:
            time.sleep(TICK_S)
            if self.depth == 0:
                seen = None
                continue
            sim = _execution._current
            running = sim.running if sim is not None else None
            if sim is None or running is None or sim.aborting:
                seen = None
                continue
            now = time.monotonic()
            key = (id(sim), sim.steps)  # identity only compared, never ordered
            if key != seen:
                seen, since = key, now
                continue
            stalled = now - since
            if stalled >= FOREIGN_AWAIT_AFTER_S and self._foreign(sim, running):
                seen = None  # asked once; the next sample starts over
                continue
            if stop_requested() and stalled >= STOP_GRACE_S:
                self._interrupt(sim, running, stalled, interrupted=True)
            elif self.limit > 0 and stalled >= self.limit:
                self._interrupt(sim, running, stalled, interrupted=False)

    def _foreign(self, sim: Simulation, cpu: CPU) -> bool:
        """If the trio thread is idle in its I/O wait while ``cpu`` runs, ask
        trio to fail the execution as a foreign await; did it?"""
        import sys

        token = self.token
        if token is None or not _in_trio_io_wait(sys._current_frames().get(self.thread_id)):
            return False
        try:
            token.run_sync_soon(_fail_foreign, sim, cpu, sim.steps)
        except trio.RunFinishedError:
            return False
        return True

    def _interrupt(self, sim: Simulation, cpu: CPU, stalled: float, *, interrupted: bool) -> None:
        import _thread

        if self.pending is None:
            label = cpu.pending[0] if cpu.pending else "?"
            how = ("stopped by Ctrl-C" if interrupted
                   else "stopped by the watchdog (step_timeout, MMEMU_STEP_TIMEOUT)")
            error = StepTimeout(f"{cpu.title} never reached a yield point in its step {label!r} "
                                f"(a loop that never yields?)",
                                details=f"  {how}")
            self.pending = _StepInterrupt(error, interrupted=interrupted)
        if self.signals and self._signum is not None:
            # a real-time signal has no Signals member; the C function takes any int
            _thread.interrupt_main(cast(signal.Signals, self._signum))
        elif not self.signals:
            self._raise_in_thread()

    def _raise_in_thread(self) -> None:
        """The exploration runs in a thread other than the main one (a Dask
        worker's): raise the pending interrupt in it, once it is in model
        code of the running step (see the module docstring)."""
        import ctypes
        import sys

        pending = self.pending
        frame = sys._current_frames().get(self.thread_id)
        if pending is None or self.sent is not None or frame is None \
                or _is_internal(frame.f_code.co_filename):
            return  # not inside the step's own code: asked again next tick
        self.pending = None
        pending.error = StepTimeout(f"{pending.error}: at {frame_where(frame)}",
                                    details=pending.error.details)
        self.sent = pending
        n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id),
                                                       ctypes.py_object(_AsyncStepInterrupt))
        if n != 1:
            # the thread is gone (0), or more than one matched (cannot
            # happen for one id): take it back
            if n > 1:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)
            self.sent = None


WATCHDOG = _Watchdog()
