"""One execution of a scenario under the controlled scheduler.

Design
------
Every emulated CPU is a trio task, but exactly one of them runs at a time and
the engine, not trio, decides which.  A CPU gives up control only at a *yield
point*: ``await mmemu.step(...)``, a blocking primitive (``block``), or its
end.  There the engine asks the strategy which runnable CPU executes next and
hands the token over directly with ``trio.lowlevel.reschedule`` and
``wait_task_rescheduled``: CPU to CPU, one trio switch per context switch and
no switch at all when the same CPU continues.  Because at most one of our
tasks is ever runnable in trio's run queue, trio's own (shuffled) order never
matters.

The code between two yield points is one atomic *step*.  The accesses given to
``step`` describe the step about to run, so the strategies can reason about
what a CPU *would* do if chosen (sleep sets, DPOR).  A CPU starts parked at an
implicit ``<start>`` yield point with no declared accesses: the code a CPU runs
before its first ``step`` must not touch shared state.

Blocking: ``block(channel, ...)`` takes the current CPU off the runnable set
until another CPU calls ``wake_all(channel)``.  A step that wakes ``channel``
must declare a write to it, so a wake always conflicts with the resumed step
of the CPUs it wakes; partial-order reduction relies on that.  Locks
(``_locks.py``) are finer: a CPU whose next step acquires a held lock is
simply not enabled until the lock is released, so acquiring costs one step
whether the lock was free or not.

Abandoning: a strategy may end an execution early without a failure
(``abandon``), e.g. DPOR when every CPU that could run is in its sleep set.
``watch`` (a set of CPU ids) makes the engine ask the chooser even where only
one CPU can run, when it is one of those: DPOR needs to see it when a CPU
that may be asleep is the only one left, and costs nothing otherwise.

Aborting: when an execution fails, every parked CPU is resumed with
``_Aborted`` (a BaseException model code does not catch), which unwinds it;
steps taken while aborting raise ``_Aborted`` again.  No trio cancellation is
involved, so an aborted execution is as deterministic as a finished one.

Invariants (checked by the tests):
- ``runnable`` holds exactly the CPUs in state RUNNABLE, sorted by id;
- ``running`` is the CPU whose task is executing, or None in the scenario's
  own (setup / final check) code;
- ``choices`` has one entry per choice point (two or more runnable CPUs).
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable
from typing import Any, TypeVar

import outcome
import trio
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from ._errors import (
    Deadlock,
    InvariantViolation,
    Livelock,
    MmemuError,
    ModelError,
    NondeterminismError,
    UnexpectedException,
)
from ._report import Namer
from ._watchdog import _StepInterrupt, stop_requested

RUNNABLE = "runnable"
BLOCKED = "blocked"
DONE = "done"
NEW = "new"

#: a chooser picks the CPU that runs next among ``runnable`` (two or more).
Chooser = Callable[["Simulation", "CPU | None", "list[CPU]"], "CPU"]

_EMPTY: tuple[Hashable, ...] = ()

_F = TypeVar("_F", bound=Callable[..., Any])
#: trio's decorator, typed: SIGINT lands in a protected frame only as a
#: deferred delivery at the main task's next park (see Simulation._defer_abort)
_ki_protected: Callable[[_F], _F] = trio.lowlevel.enable_ki_protection


class _Aborted(BaseException):
    """Unwinds a CPU (or the scenario) once the execution has failed."""


def _abort_ok(_raise_cancel: Any) -> Abort:
    return Abort.SUCCEEDED


async def _park() -> None:
    await wait_task_rescheduled(_abort_ok)


def _abort_refused(_raise_cancel: Any) -> Abort:
    return Abort.FAILED


async def _park_uninterruptible() -> None:
    """Park a task that others will reschedule and that must still be parked
    when they do (trio asserts it): neither Ctrl-C nor a cancellation may
    wake it early.  Trio keeps what it could not deliver pending and tries
    again at the task's next park or checkpoint."""
    await wait_task_rescheduled(_abort_refused)


class CPU:
    """An emulated CPU: a trio task that runs only when the engine says so.

    ``held`` is a list the kernel's locking keeps up to date (the locks this
    CPU holds, as strings or objects that print as their description) so
    that deadlock reports can say who holds what.
    """

    __slots__ = (
        "id", "name", "sim", "task", "state", "pending", "channel", "why",
        "held", "labels", "exc", "data", "scope", "op", "lock_wait", "until",
        "channels", "blocked_on",
    )

    def __init__(self, sim: Simulation, cpu_id: int, name: str) -> None:
        self.id = cpu_id
        self.name = name
        self.sim = sim
        self.task: Any = None
        self.state = NEW
        # (label, reads, writes) of the step this CPU runs when next chosen
        self.pending: tuple[str, tuple[Hashable, ...], tuple[Hashable, ...]] = (
            "<start>", _EMPTY, _EMPTY)
        self.channel: Hashable | None = None
        self.why = ""
        self.held: list[Any] = []
        self.labels: list[str] = []  # step history, kept for reports of exceptions
        self.exc: BaseException | None = None
        #: free for the kernel model (current->signal, lockdep's held stack...)
        self.data: dict[str, Any] = {}
        #: the cancel scope of the task the CPU runs on: cancelled only to
        #: unwind a CPU stuck in a foreign await (see _watchdog); the task
        #: then ends with the CPU
        self.scope: trio.CancelScope | None = None
        #: what the pending step is to partial-order reduction besides its
        #: accesses (a woken step, see Simulation.ops); recorded runs only
        self.op: Any = None
        #: (lock, mode) when the pending step acquires a lock (see _locks.py)
        self.lock_wait: Any = None
        #: while BLOCKED on a channel: wake only once this returns true
        self.until: Callable[[], bool] | None = None
        #: while BLOCKED on several channels: all of them
        self.channels: tuple[Hashable, ...] = ()
        #: the channels of the last block, which its pending step "writes"
        #: only for the search's sake (read by step hooks, which clear it)
        self.blocked_on: tuple[Hashable, ...] = ()

    @property
    def title(self) -> str:
        return f"cpu{self.id} ({self.name})"

    def __repr__(self) -> str:
        return f"<CPU {self.title} {self.state}>"


class Simulation:
    """The state of one execution; the ``sim`` a scenario receives.

    Scenarios use ``sim.cpus()``, ``sim.check()``, ``sim.params`` and
    ``sim.mutants``; everything else is for the engine and the kernel model.
    """

    def __init__(
        self,
        *,
        chooser: Chooser,
        params: dict[str, Any] | None = None,
        mutants: frozenset[str] = frozenset(),
        max_steps: int = 10_000,
        record: bool = False,
        exploration: dict[str, Any] | None = None,
        pool: CpuPool | None = None,
        cover: bool = False,
        trace: bool | None = None,
    ) -> None:
        self.chooser = chooser
        #: long-lived tasks to run the CPUs on (None: a nursery per sim.cpus())
        self.pool = pool
        self.params: dict[str, Any] = dict(params or {})
        self.mutants = mutants
        self.max_steps = max_steps
        #: state that lives across the executions of one exploration (lockdep)
        self.exploration: dict[str, Any] = exploration if exploration is not None else {}
        #: free for the kernel model within one execution
        self.data: dict[str, Any] = {}
        self.cpu_list: list[CPU] = []
        self.runnable: list[CPU] = []
        #: the ids of ``runnable`` as a tuple, while it has not changed
        #: (None: rebuild); every change of ``runnable`` resets it
        self._run_ids: tuple[int, ...] | None = None
        self.running: CPU | None = None
        self.steps = 0
        self.preemptions = 0
        self.choices: list[int] = []
        #: keep the per-step event log (events, enabled, ops): strategies
        #: that reason about accesses (DFS) and reports need it
        self.record = record
        #: keep what only reports use (spans, model annotations); by default
        #: whenever ``record``
        self.trace = record if trace is None else trace
        #: coverage events of this execution: (kind, name) -> times reached
        #: (``reach``; with ``cover`` also every step label and span)
        self.reached: dict[tuple[str, str], int] = {}
        self.cover = cover
        # events, when recording: (cpu_id, label, reads, writes, preempted)
        self.events: list[tuple[int, str, tuple[Hashable, ...], tuple[Hashable, ...], bool]] = []
        # runnable CPU ids before each event, when recording
        self.enabled: list[tuple[int, ...]] = []
        #: per event, when recording: None, or what partial-order reduction
        #: must know beyond the accesses: ("woken", waker event) for the step
        #: a wake_all made runnable, and the lock operations of _locks.py
        self.ops: list[Any] = []
        #: per event index, when recording: the accesses ``touch`` added to
        #: it (reads, writes), beyond those declared at its yield point
        self.touched: dict[int, tuple[tuple[Hashable, ...], tuple[Hashable, ...]]] = {}
        #: the strategy ended this execution early (not a failure)
        self.abandoned = False
        #: the execution ended because no CPU could run
        self.deadlocked = False
        self._at_yield = False
        #: the CPUs that had not finished when the execution stopped early
        #: (failure, deadlock, abandon), with their state then, except the
        #: one running; their ``pending`` is the step each would have run next
        self.unfinished: list[tuple[CPU, str]] = []
        #: ids of CPUs for which to ask the chooser even where only that
        #: CPU can run (DFS: those that may be asleep); empty: never
        self.watch: Collection[int] = ()
        self.spans: list[tuple[str, int, int, str]] = []  # (B|E, cpu, step, name)
        #: model-supplied trace annotations, when recording (see annotate())
        self.annotations: list[dict[str, Any]] = []
        self.failure: MmemuError | None = None
        #: an exception from the chooser, re-raised by run() once every CPU is unwound
        self.foreign: BaseException | None = None
        self.failure_step: int = -1
        self.aborting = False
        self._waiters: dict[Hashable, list[CPU]] = {}
        self._live = 0
        self._parked = 0
        self._started = 0
        self._main_task: Any = None
        self._main_waiting = False
        self._cpu_exit_hooks: list[Callable[[CPU], None]] = []
        self._end_hooks: list[Callable[[Simulation], None]] = []
        #: see on_step; empty in most executions, so step() pays one test
        self._step_hooks: list[Callable[[CPU, str, tuple[Hashable, ...],
                                         tuple[Hashable, ...]], None]] = []
        #: see on_write; empty unless a checker watches stores
        self._write_hooks: list[Callable[[CPU, Hashable, str], None]] = []
        #: see on_load; empty unless a checker watches loads
        self._load_hooks: list[Callable[[CPU, Hashable, str], None]] = []
        # Ctrl-C / a cancellation that trio tried to deliver to the
        # scenario's task while CPUs ran; acted upon when the execution ends
        self._ki_deferred = False
        self._cancel_deferred = False
        #: leave a Ctrl-C that came during the execution in ``interrupted``
        #: for the caller instead of raising KeyboardInterrupt after it
        self.defer_interrupt = False

    # ----------------------------------------------------------------- public

    def cpus(self) -> _CpuNursery:
        """``async with sim.cpus() as cpus: cpus.start(fn, *args, name=...)``.

        Leaving the block runs the CPUs under the engine's scheduler and waits
        for all of them.
        """
        return _CpuNursery(self)

    def check(self, cond: object, message: str, *, details: str = "") -> None:
        """Fail the execution with an InvariantViolation unless ``cond``."""
        if not cond:
            raise InvariantViolation(message, details=details)

    def mutant(self, name: str) -> bool:
        """Is the named mutant switched on in this exploration?

        Asking about a mutant that is on counts as the coverage event
        ``("mutant", name)``: a run whose executions never asked tested
        nothing the mutant changes (``mmemu run`` says so).
        """
        if name in self.mutants:
            key = ("mutant", name)
            self.reached[key] = self.reached.get(key, 0) + 1
            return True
        return False

    def on_cpu_exit(self, hook: Callable[[CPU], None]) -> None:
        """Call ``hook(cpu)`` when a CPU finishes normally (lockdep: held locks)."""
        self._cpu_exit_hooks.append(hook)

    def on_step(self, hook: Callable[[CPU, str, tuple[Hashable, ...], tuple[Hashable, ...]],
                                     None]) -> None:
        """Call ``hook(cpu, label, reads, writes)`` each time the scheduler
        has chosen ``cpu`` to run its next step (numbered ``steps - 1``):
        the accesses that step declared (a woken step's wait channels left
        out), with whatever ``cpu`` holds while it runs it (lockset
        checking).  A hook may fail the execution."""
        self._step_hooks.append(hook)

    def on_write(self, hook: Callable[[CPU, Hashable, str], None]) -> None:
        """Call ``hook(cpu, key, what)`` each time the running step reports
        with ``wrote(key, what)`` that it stores to ``key`` now.  Where
        ``on_step`` sees the accesses a step declared at its yield point,
        this sees the store where it really happens: a store that the code
        (or a mutant) moved past the unlock that followed its declaring
        step is seen after the unlock.  A hook may fail the execution."""
        self._write_hooks.append(hook)

    def on_load(self, hook: Callable[[CPU, Hashable, str], None]) -> None:
        """Call ``hook(cpu, key, what)`` each time the running step reports
        with ``loaded(key, what)`` that it reads ``key`` now: ``on_write``'s
        counterpart for a read that must hold a lock where it runs."""
        self._load_hooks.append(hook)

    def at_end(self, hook: Callable[[Simulation], None]) -> None:
        """Call ``hook(sim)`` after the scenario returned without failing (leak checks)."""
        self._end_hooks.append(hook)

    @property
    def interrupted(self) -> bool:
        """Did Ctrl-C come while this execution ran (see ``defer_interrupt``)?"""
        return self._ki_deferred

    @property
    def current(self) -> CPU | None:
        return self.running

    def dispose(self) -> None:
        """Drop what this finished execution recorded, once nobody needs it.

        The model's objects refer to the execution (``Kernel.sim``, every
        ``CPU.sim``) and to each other in cycles, so without this the whole
        execution -- its event log above all, a few tuples per step -- is
        freed only by Python's cyclic garbage collector, which then spends
        about a sixth of an exploration's time tracing it.  Cleared here, the
        log, the CPUs and the scenario's data are freed by reference counting
        at once; only the model's own small object graph is left to the
        collector.  Nothing may use the Simulation afterwards.
        """
        for c in self.cpu_list:
            c.sim = None  # type: ignore[assignment]
            c.pending = ("<disposed>", _EMPTY, _EMPTY)
            c.held = []
            c.labels = []
            c.data = {}
            c.op = c.lock_wait = c.until = None
            c.exc = None
        self.cpu_list = []
        self.runnable = []
        self._run_ids = None
        self.unfinished = []
        self.events = []
        self.enabled = []
        self.ops = []
        self.touched = {}
        self.choices = []
        self.spans = []
        self.annotations = []
        self.data = {}
        self.reached = {}
        self._waiters = {}
        self._cpu_exit_hooks = []
        self._end_hooks = []
        self._step_hooks = []
        self._write_hooks = []
        self.running = None

    # ---------------------------------------------------------- the scheduler

    def _pick(self, prev: CPU | None) -> CPU | None:
        """Choose the CPU that runs the next step; None when none can run."""
        run = self.runnable
        n = len(run)
        if n == 0:
            return None
        preempted = False
        if self.record:
            # before the chooser, which may use them (sim.enabled[-1])
            ids = self._run_ids
            if ids is None:
                ids = self._run_ids = tuple([c.id for c in run])
            self.enabled.append(ids)
        watch = self.watch
        if n == 1 and (not watch or run[0].id not in watch):
            nxt = run[0]
        else:
            try:
                nxt = self.chooser(self, prev, run)
            except _Aborted:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed back to explore's caller
                # A chooser that raises (Hypothesis's StopTest when its data
                # runs out, a bug in a user strategy) ends the execution: every
                # CPU is unwound as for a failure, and run() re-raises it.
                if self.foreign is None:
                    self.foreign = exc
                self._abort_all()
                raise _Aborted() from None
            if n > 1:
                self.choices.append(nxt.id)
                if prev is not None and nxt is not prev and prev.state == RUNNABLE:
                    self.preemptions += 1
                    preempted = True
        if self.cover:
            key = ("step", nxt.pending[0])
            self.reached[key] = self.reached.get(key, 0) + 1
        if self.record:
            label, reads, writes = nxt.pending
            self.events.append((nxt.id, label, reads, writes, preempted))
            self.ops.append(nxt.op)
            nxt.op = None
            if self.trace:
                nxt.labels.append(label)
        self.steps += 1
        if self.steps > self.max_steps:
            self._at_yield = True
            self.fail(Livelock(
                f"execution exceeded max_steps={self.max_steps} steps "
                f"(a CPU spinning?); {nxt.title} was about to run {nxt.pending[0]!r}"))
        if self._step_hooks:
            self._at_yield = True
            label, reads, writes = nxt.pending
            chans = nxt.blocked_on
            if chans:
                # a woken step "writes" its wait channels so that the search
                # orders it after its waker; the hooks see the code's own writes
                nxt.blocked_on = ()
                writes = tuple([w for w in writes if w not in chans])
            for hook in self._step_hooks:
                hook(nxt, label, reads, writes)
            self._at_yield = False
        self.running = nxt
        return nxt

    def _switch_from(self, cpu: CPU) -> CPU | None:
        nxt = self._pick(cpu)
        if nxt is None:
            self._deadlock()
        return nxt

    def _deadlock(self) -> None:
        lines = []
        # Name channels as reports do: a default repr() holds an address,
        # which would make the message differ from one process to the next.
        namer = Namer()
        for c in self.cpu_list:
            if c.state == DONE:
                continue
            held = ", ".join(map(str, c.held)) if c.held else "nothing"
            if c.lock_wait is not None:
                lock, mode = c.lock_wait
                waits = lock.describe_wait(c, mode)
            else:
                waits = c.why or (namer(c.channel) if c.channel is not None else "?")
            lines.append(f"  {c.title}: waits for {waits}; holds {held}")
        self.deadlocked = True
        self._at_yield = True
        self.fail(Deadlock("no CPU can run:\n" + "\n".join(lines)))

    def fail(self, exc: MmemuError) -> None:
        """Record ``exc`` as this execution's failure and unwind the caller.

        Unlike raising ``exc``, this cannot be swallowed by model or driver
        code that catches ``Exception``.
        """
        if self.failure is None:
            self.failure = exc
            self.failure_step = self.steps if self.running is not None else -1
        self._abort_all()
        raise _Aborted()

    def abandon(self) -> None:
        """End this execution now, without a failure (a strategy saw that
        nothing new can come of it).  Unwinds the caller like ``fail``."""
        self.abandoned = True
        self._at_yield = True
        self._abort_all()
        raise _Aborted()

    def _abort_all(self, spare: CPU | None = None) -> None:
        """Resume every parked CPU (but ``spare``) with _Aborted so that it unwinds."""
        if self.aborting:
            return
        self.aborting = True
        #: the CPUs that had not finished when the execution stopped
        # the running CPU's pending step is the one it runs now, unless the
        # execution stops at a yield point (its next step is pending then)
        stale = None if self._at_yield else self.running
        self.unfinished = [(c, c.state) for c in self.cpu_list
                           if c.state in (RUNNABLE, BLOCKED) and c is not stale]
        me = current_task()
        for c in self.cpu_list:
            if c.state in (RUNNABLE, BLOCKED) and c.task is not None and c.task is not me \
                    and c is not spare:
                reschedule(c.task, outcome.Error(_Aborted()))
        self._waiters.clear()

    def fail_stuck_cpu(self, cpu: CPU, exc: MmemuError) -> None:
        """Fail the execution with ``exc`` while ``cpu``, the running one,
        is parked in an await the engine does not own (called by the
        watchdog, in the trio thread): every other CPU unwinds as for any failure,
        and ``cpu`` is cancelled out of its await."""
        if self.failure is None:
            self.failure = exc
            self.failure_step = self.steps
        self._abort_all(spare=cpu)
        if cpu.scope is not None:
            cpu.scope.cancel()

    # ------------------------------------------------------ interruptions

    def _defer_abort(self, raise_cancel: Callable[[], Any]) -> Abort:
        """Abort function of the scenario's task while its CPUs run.

        Trio delivers Ctrl-C (to the run's main task) and cancellations by
        waking a parked task early.  Woken while CPUs still run, the
        scenario's task would go on (to the next execution, or out of
        ``explore``) and the last CPU's ``reschedule`` of it would then trip
        trio's own assertion: a TrioInternalError.  So the wake-up is
        refused and remembered; ``run`` acts on it once every CPU has
        finished, i.e. between two executions.
        """
        try:
            raise_cancel()
        except KeyboardInterrupt:
            # raise_cancel cleared trio's pending flag: this is ours now
            self._ki_deferred = True
        except BaseException:  # noqa: BLE001 - trio.Cancelled: trio re-delivers it
            self._cancel_deferred = True
        return Abort.FAILED

    async def _park_main(self) -> None:
        await wait_task_rescheduled(self._defer_abort)

    # ------------------------------------------------------ CPU task plumbing

    @_ki_protected
    async def _cpu_main(self, cpu: CPU, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        """A CPU on a task of its own (no pool): register, park, run."""
        with trio.CancelScope() as cpu.scope:
            await self._cpu_start(cpu, fn, args)

    async def _cpu_start(self, cpu: CPU, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        cpu.task = current_task()
        cpu.state = RUNNABLE
        self.runnable.append(cpu)  # trio starts tasks in any order: sorted below
        self._run_ids = None
        self._parked += 1
        if self._parked == self._started and self._main_waiting:
            self._main_waiting = False
            reschedule(self._main_task)
        try:
            await _park()  # the implicit <start> yield point
        except _Aborted:
            self._cpu_exit(cpu)
            return
        await self._cpu_run(cpu, fn, args)

    async def _cpu_run(self, cpu: CPU, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        """Run a CPU chosen at its <start> yield point, then retire it."""
        try:
            await fn(*args)
        except _Aborted:
            pass
        except trio.Cancelled:
            # the watchdog unwound this CPU out of a foreign await (the
            # failure is recorded); anything else is the run being cancelled
            if not self.aborting:
                raise
        except _StepInterrupt as exc:
            # the watchdog stopped a step that never yields (see _watchdog)
            if exc.interrupted:
                self._ki_deferred = True
            self._record_cpu_failure(cpu, exc.error)
        except MmemuError as exc:
            self._record_cpu_failure(cpu, exc)
        except Exception as exc:  # noqa: BLE001 - reported, with its traceback
            tb = traceback.format_exc()
            self._record_cpu_failure(cpu, UnexpectedException(
                f"{cpu.title} raised {type(exc).__name__}: {exc}\n"
                f"  after steps: {', '.join(cpu.labels[-8:]) or '<none>'}",
                original=exc, traceback_text=tb))
        self._cpu_exit(cpu)

    def _record_cpu_failure(self, cpu: CPU, exc: MmemuError) -> None:
        if self.failure is None:
            self.failure = exc
            self.failure_step = self.steps
        self._abort_all()

    def _cpu_exit(self, cpu: CPU) -> None:
        if cpu.state == RUNNABLE:
            self.runnable.remove(cpu)
            self._run_ids = None
        cpu.state = DONE
        self._live -= 1
        if not self.aborting:
            try:
                for hook in self._cpu_exit_hooks:
                    hook(cpu)
            except _Aborted:
                pass
            except MmemuError as exc:
                self._record_cpu_failure(cpu, exc)
        if self.aborting:
            if self._live == 0:
                self.running = None
                reschedule(self._main_task)
            return
        if self._live == 0:
            self.running = None
            reschedule(self._main_task)
            return
        try:
            nxt = self._switch_from(cpu)
        except _Aborted:
            if self._live == 0:
                reschedule(self._main_task)
            return
        assert nxt is not None
        reschedule(nxt.task)

    # -------------------------------------------------------- yield points

    async def _block(self, cpu: CPU, channels: tuple[Hashable, ...], label: str,
                     reads: tuple[Hashable, ...], writes: tuple[Hashable, ...], why: str) -> None:
        cpu.state = BLOCKED
        self.runnable.remove(cpu)
        self._run_ids = None
        cpu.pending = (label, reads, writes)
        cpu.channel = channels[0]
        cpu.blocked_on = channels
        cpu.why = why
        for ch in channels:
            self._waiters.setdefault(ch, []).append(cpu)
        nxt = self._switch_from(cpu)
        assert nxt is not None and nxt is not cpu
        reschedule(nxt.task)
        await _park()

    def _wake(self, channel: Hashable, all_: bool) -> int:
        waiters = self._waiters.get(channel)
        if not waiters:
            return 0
        woken: list[CPU] = []
        keep: list[CPU] = []
        for c in waiters:
            # a waiter with a condition stays asleep until it holds, so that
            # a wake-up that changes nothing for it costs it no step
            if (all_ or not woken) and (c.until is None or c.until()):
                woken.append(c)
            else:
                keep.append(c)
        if not woken:
            return 0
        if keep:
            self._waiters[channel] = keep
        else:
            del self._waiters[channel]
        waker = self.steps - 1
        for c in woken:
            extra = c.channels
            if extra:
                # it waited on several channels: leave the others' lists
                for ch in extra:
                    lst = self._waiters.get(ch)
                    if lst is not None and c in lst:
                        lst.remove(c)
                        if not lst:
                            del self._waiters[ch]
                c.channels = ()
            c.state = RUNNABLE
            c.channel = None
            c.why = ""
            c.until = None
            if self.record:
                # the woken step could not have run before this one: DPOR
                # must not try to reverse them (see _strategies)
                c.op = ("woken", waker)
            self._enable(c)
        return len(woken)

    def _enable(self, c: CPU) -> None:
        """Put a (blocked) CPU back in the runnable set, keeping it sorted."""
        c.state = RUNNABLE
        run = self.runnable
        i = len(run)
        cid = c.id
        while i and run[i - 1].id > cid:
            i -= 1
        run.insert(i, c)
        self._run_ids = None

    def _disable(self, c: CPU) -> None:
        """Take a runnable CPU off the runnable set (its next step cannot run)."""
        c.state = BLOCKED
        self.runnable.remove(c)
        self._run_ids = None

    async def _yield_or_wait(self, cpu: CPU) -> None:
        """The current CPU reached a yield point whose step may not be
        enabled (``cpu.state`` says): hand the token on and wait until the
        engine chooses this CPU again."""
        if cpu.state == RUNNABLE:
            nxt = self._pick(cpu)
        else:
            nxt = self._switch_from(cpu)
        if nxt is not cpu:
            assert nxt is not None
            reschedule(nxt.task)
            await _park()

    # ---------------------------------------------------------- one execution

    @_ki_protected
    async def run(self, scenario: Callable[[Simulation], Awaitable[Any]]) -> None:
        """Run the scenario once; the outcome is left in ``self.failure``.

        KI-protected: Ctrl-C never lands inside an execution (where the
        scenario's task and its CPUs hand control to each other).  It is
        raised as KeyboardInterrupt when the execution is over, and a
        cancellation of the calling task is delivered at a checkpoint then.
        """
        global _current
        if _current is not None:
            raise ModelError("an mmemu execution is already running in this thread")
        _current = self
        try:
            await scenario(self)
        except _Aborted:
            pass
        except MmemuError as exc:
            # Misuse outranks whatever failure it may have caused.
            if self.failure is None or isinstance(exc, (ModelError, NondeterminismError)):
                self.failure = exc
                self.failure_step = -1
        except Exception as exc:  # noqa: BLE001 - the scenario's own code failed
            if self.failure is None:
                self.failure = UnexpectedException(
                    f"the scenario raised {type(exc).__name__}: {exc}",
                    original=exc, traceback_text=traceback.format_exc())
                self.failure_step = -1
        else:
            if self.failure is None:
                try:
                    for hook in self._end_hooks:
                        hook(self)
                except _Aborted:
                    pass
                except MmemuError as exc:
                    self.failure = exc
                    self.failure_step = -1
        finally:
            _current = None
        if self.foreign is not None:
            raise self.foreign
        if stop_requested():
            # Ctrl-C in the CLI (request_stop): the same as a deferred KI
            self._ki_deferred = True
        if self._ki_deferred and not self.defer_interrupt:
            raise KeyboardInterrupt
        if self._cancel_deferred:
            await trio.lowlevel.checkpoint()


def _cpu_id(c: CPU) -> int:
    return c.id


class _CpuNursery:
    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self._nursery_cm: Any = None
        self._nursery: Any = None
        self._pending: list[tuple[CPU, Callable[..., Awaitable[Any]], tuple[Any, ...]]] = []

    async def __aenter__(self) -> _CpuNursery:
        if self._sim.running is not None:
            raise ModelError("sim.cpus() must be used by the scenario, not inside a CPU")
        return self

    def start(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> CPU:
        """Start an emulated CPU running ``await fn(*args)``; it starts parked."""
        sim = self._sim
        cpu = CPU(sim, len(sim.cpu_list), name or str(getattr(fn, "__name__", "cpu")))
        sim.cpu_list.append(cpu)
        self._pending.append((cpu, fn, args))
        return cpu

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        sim = self._sim
        if exc_type is not None or not self._pending:
            return False
        if sim.pool is not None:
            await self._run_on_pool(sim, sim.pool)
        else:
            await self._run_on_nursery(sim)
        if sim.failure is not None or sim.foreign is not None or sim.abandoned:
            raise _Aborted()
        return False

    async def _run_on_pool(self, sim: Simulation, pool: CpuPool) -> None:
        # A parked pool worker *is* a CPU at its <start> yield point: binding
        # it to the CPU is all it takes to start one.  No task is spawned and
        # trio is not entered until the first CPU runs.
        pending, self._pending = self._pending, []
        workers = await pool.take(len(pending))
        for w, (cpu, fn, args) in zip(workers, pending):
            w.sim, w.cpu, w.fn, w.args = sim, cpu, fn, args
            cpu.task = w.task
            cpu.scope = w.scope
            cpu.state = RUNNABLE
            sim.runnable.append(cpu)  # ids increase: stays sorted
        sim._run_ids = None
        sim._live += len(pending)
        sim._main_task = current_task()
        try:
            first = sim._pick(None)
        except _Aborted:
            first = None  # see _run_on_nursery
        if first is not None:
            reschedule(first.task)
        await sim._park_main()  # until every CPU has finished (or the run aborted)

    async def _run_on_nursery(self, sim: Simulation) -> None:
        async with trio.open_nursery() as nursery:
            sim._started += len(self._pending)
            sim._live += len(self._pending)
            for cpu, fn, args in self._pending:
                nursery.start_soon(sim._cpu_main, cpu, fn, args, name=cpu.title)
            self._pending = []
            sim._main_task = current_task()
            if sim._parked < sim._started:
                sim._main_waiting = True
                await sim._park_main()
            # Every CPU now sits at its <start> yield point: make the first choice.
            sim.runnable.sort(key=_cpu_id)
            sim._run_ids = None
            try:
                first = sim._pick(None)
            except _Aborted:
                # The first choice failed (a replay that diverges at once):
                # every CPU has been resumed with _Aborted.  We still park:
                # the last CPU to exit reschedules this task, and trio must
                # find it waiting in wait_task_rescheduled, not in the
                # nursery's own wait.
                first = None
            if first is not None:
                reschedule(first.task)
            await sim._park_main()  # until every CPU has finished (or the run aborted)


class _Worker:
    """A pool task and the CPU it serves in the current execution."""

    __slots__ = ("task", "sim", "cpu", "fn", "args", "scope")

    def __init__(self, task: Any, scope: trio.CancelScope) -> None:
        self.task = task
        #: cancelled only to unwind a CPU stuck in a foreign await; the
        #: worker then ends (one cancel scope per worker, not per CPU run:
        #: entering a scope costs more than a small execution's steps)
        self.scope = scope
        self.sim: Simulation | None = None
        self.cpu: CPU | None = None
        self.fn: Callable[..., Awaitable[Any]] | None = None
        self.args: tuple[Any, ...] = ()


class CpuPool:
    """Trio tasks that outlive executions and run their CPUs.

    Spawning a task and opening a nursery for every execution costs more
    than the steps of a small scenario; the pool pays for each task once per
    trio run.  ``CpuPool.current()`` is the pool of the running trio run
    (kept in a RunVar); its workers are trio *system* tasks, so that
    successive explorations in one run (pytest-trio, benchmarks) share them
    and trio cancels them when the run ends.  Which worker serves which CPU
    never matters: a CPU runs only when the engine reschedules its task.

    Danger, no guard rails: the CPUs of successive executions share trio
    tasks, hence contextvars (those of the run's system context, not the
    caller's).  Model state belongs in the ``Simulation``, never in a context
    variable.
    """

    def __init__(self) -> None:
        # Invariant: every worker in _idle is parked in _serve, unbound.
        self._idle: list[_Worker] = []
        self._starting = 0
        self._waiter: Any = None

    @classmethod
    def current(cls) -> CpuPool:
        pool = _POOL.get(None)  # type: ignore[arg-type]  # RunVar's default
        if pool is None:
            pool = cls()
            _POOL.set(pool)
        return pool

    async def take(self, n: int) -> list[_Worker]:
        """``n`` idle workers, spawning what is missing."""
        idle = self._idle
        short = n - len(idle)
        if short > 0:
            # New workers start in whatever order trio picks; the last one to
            # park wakes us, so that every worker is parked when we return.
            self._starting = short
            self._waiter = current_task()
            for _ in range(short):
                trio.lowlevel.spawn_system_task(self._serve, name="mmemu cpu worker")
            # the last new worker reschedules us: we must still be parked
            await _park_uninterruptible()
        taken = idle[-n:]
        del idle[-n:]
        return taken

    async def _serve(self) -> None:
        with trio.CancelScope() as scope:
            await self._serve_in(scope)

    async def _serve_in(self, scope: trio.CancelScope) -> None:
        w = _Worker(current_task(), scope)
        self._idle.append(w)
        self._starting -= 1
        if self._starting == 0:
            reschedule(self._waiter)
        while True:
            try:
                await _park()  # idle, or a CPU at its <start> yield point
            except _Aborted:
                # the execution failed before this CPU ever ran
                sim, cpu = w.sim, w.cpu
                assert sim is not None and cpu is not None
                w.sim = w.cpu = w.fn = None
                self._idle.append(w)
                sim._cpu_exit(cpu)
                continue
            # (trio.Cancelled at the park ends the worker: the run is over)
            sim, cpu, fn = w.sim, w.cpu, w.fn
            assert sim is not None and cpu is not None and fn is not None
            await sim._cpu_run(cpu, fn, w.args)
            # _cpu_exit has handed the token on; back to idle before parking
            w.sim = w.cpu = w.fn = None
            w.args = ()
            if scope.cancel_called:
                return  # it was unwound out of a foreign await: retire
            self._idle.append(w)


_POOL: trio.lowlevel.RunVar[CpuPool] = trio.lowlevel.RunVar("mmemu_cpu_pool")


_current: Simulation | None = None


def current_simulation() -> Simulation:
    """The running execution; ModelError outside one."""
    sim = _current
    if sim is None:
        raise ModelError("no mmemu execution is running (call this from a scenario)")
    return sim


def _sim_or_none() -> Simulation | None:
    return _current


# ----------------------------------------------------------------- public API

async def step(label: str, reads: Iterable[Hashable] = (), writes: Iterable[Hashable] = ()) -> None:
    """A yield point: the engine may switch CPUs here.

    ``reads`` / ``writes`` are the shared objects the step *about to run*
    (the code between this call and the next yield point) reads and writes.
    Any hashable object will do: model objects, strings, ``(page, "_count")``.

    Called from the scenario's own code (setup, final checks) it does nothing.
    """
    sim = _current
    if sim is None:
        raise ModelError(f"mmemu.step({label!r}) called outside an execution")
    cpu = sim.running
    if cpu is None:
        return
    if sim.aborting:
        raise _Aborted()
    # The yield point itself, inline: this is the engine's hottest path and
    # every extra coroutine frame is paid on each step.
    cpu.pending = (label,
                   reads if type(reads) is tuple else tuple(reads),
                   writes if type(writes) is tuple else tuple(writes))
    nxt = sim._pick(cpu)
    if nxt is not cpu:
        assert nxt is not None  # cpu itself is runnable
        reschedule(nxt.task)
        await wait_task_rescheduled(_abort_ok)


async def block(channel: Hashable, label: str, *, reads: Iterable[Hashable] = (),
                writes: Iterable[Hashable] = (), why: str = "",
                until: Callable[[], bool] | None = None,
                also: Iterable[Hashable] = ()) -> None:
    """Take the current CPU off the runnable set until ``wake_all(channel)``.

    When woken and chosen, the CPU runs the step described by ``label``,
    ``reads`` and ``writes``; ``channel`` is added to its writes.  ``why``
    names what it waits for in deadlock reports ("completion done").
    ``until``: the waker leaves the CPU blocked while ``until()`` is false
    (a wake-up that cannot let it proceed costs it no step); the caller
    still re-checks its condition when it runs, as kernel code does.
    ``also``: more channels whose ``wake_all`` wakes it too (a grace period
    waits for several readers); they are added to the writes as well.

    Locks have their own primitive (``mmemu.lowlevel.Lock``), cheaper for
    the search: prefer it to a lock built on ``block``.
    """
    sim = current_simulation()
    cpu = sim.running
    if cpu is None:
        raise ModelError(f"block({label!r}) in the scenario's own code would wait forever")
    if sim.aborting:
        raise _Aborted()
    w = tuple(writes)
    chans = (channel,) + tuple(c for c in also if c != channel)
    for ch in chans:
        if ch not in w:
            w = w + (ch,)
    cpu.until = until
    cpu.channels = chans if len(chans) > 1 else ()
    await sim._block(cpu, chans, label, tuple(reads), w, why)


def wake_all(channel: Hashable) -> int:
    """Make every CPU blocked on ``channel`` runnable; returns how many.

    The current step must have declared a write to ``channel``.
    """
    return _wake(channel, True)


def wake_one(channel: Hashable) -> int:
    """Make the CPU that has waited longest on ``channel`` runnable."""
    return _wake(channel, False)


def _wake(channel: Hashable, all_: bool) -> int:
    sim = current_simulation()
    cpu = sim.running
    if cpu is not None and channel not in cpu.pending[2] and sim._waiters.get(channel):
        raise ModelError(
            f"step {cpu.pending[0]!r} of {cpu.title} wakes waiters on {channel!r} "
            f"but did not declare writes=({channel!r},)")
    return sim._wake(channel, all_)


def current_cpu() -> CPU | None:
    """The CPU running now, or None in the scenario's own code."""
    return current_simulation().running


def mutant(name: str) -> bool:
    """Is the named mutant switched on in the running exploration?"""
    sim = _current
    return sim is not None and sim.mutant(name)


def fail(exc: MmemuError) -> None:
    """Fail the running execution with ``exc`` (cannot be swallowed)."""
    current_simulation().fail(exc)


class span:
    """``with span("truncate_inode_pages"):`` marks a kernel function on the
    current CPU's track in traces.  Costs nothing unless the execution records."""

    __slots__ = ("name", "_cpu")

    def __init__(self, name: str) -> None:
        self.name = name
        self._cpu: CPU | None = None

    def __enter__(self) -> span:
        sim = _current
        if sim is not None and sim.running is not None:
            if sim.cover:
                key = ("span", self.name)
                sim.reached[key] = sim.reached.get(key, 0) + 1
            if sim.trace:
                self._cpu = sim.running
                sim.spans.append(("B", self._cpu.id, sim.steps, self.name))
        return self

    def __exit__(self, *exc: object) -> None:
        cpu = self._cpu
        if cpu is not None:
            sim = cpu.sim
            sim.spans.append(("E", cpu.id, sim.steps, self.name))
            self._cpu = None


def reach(event: str, *, kind: str = "event") -> None:
    """Count a coverage event in the running execution (see _coverage).

    Cheap (one dictionary update), so the model may call it on any path that
    a suite's goals name: "the lookup retried at step 3".  ``kind`` is
    "event" or "callback".  Only events on an emulated CPU count: the
    scenario's own setup code and final checks are not an interleaving.
    """
    sim = _current
    if sim is not None and sim.running is not None:
        key = (kind, event)
        sim.reached[key] = sim.reached.get(key, 0) + 1


def annotate(kind: str, **fields: Any) -> None:
    """Attach a trace annotation to the running step (only when recording).

    The kernel model uses it for what only it knows: ``annotate("flow",
    name="page free -> reuse", src=12, object="page3")`` (an arrow from step
    ``src`` to this step), ``annotate("counter", name="page3._count",
    values={"count": 2})``, ``annotate("blame", objects=["page3"])``.  The
    exporters (``mmemu trace``, ``mmemu report``) draw them; nothing else
    reads them, so they cost nothing during exploration.
    """
    sim = _current
    if sim is None or not sim.trace:
        return
    cpu = sim.running
    ann: dict[str, Any] = {"kind": kind, "step": max(sim.steps - 1, 0)}
    if cpu is not None:
        ann["cpu"] = cpu.id
    ann.update(fields)
    sim.annotations.append(ann)


def recording() -> bool:
    """Is the running execution recording a full trace (cheap guard)?"""
    sim = _current
    return sim is not None and sim.trace


def wrote(key: Hashable, what: str) -> None:
    """The running step stores to ``key`` now (``what`` names the store,
    for reports); the ``on_write`` hooks see it.  Observation only: the
    search does not (the step's declared accesses must cover the store, or
    ``touch`` it).  Outside a CPU's step it does nothing."""
    sim = _current
    if sim is not None and sim._write_hooks:
        _observed(sim, sim._write_hooks, key, what)


def loaded(key: Hashable, what: str) -> None:
    """The running step reads ``key`` now; the ``on_load`` hooks see it.
    Observation only, as ``wrote``."""
    sim = _current
    if sim is not None and sim._load_hooks:
        _observed(sim, sim._load_hooks, key, what)


def _observed(sim: Simulation, hooks: list[Callable[[CPU, Hashable, str], None]],
              key: Hashable, what: str) -> None:
    cpu = sim.running
    if cpu is not None:
        for hook in hooks:
            hook(cpu, key, what)


def touch(*, reads: Iterable[Hashable] = (), writes: Iterable[Hashable] = ()) -> None:
    """Record accesses the running step made that it could not declare at its
    yield point (the allocator only knows which page it hands out when the
    step runs).

    ``touch`` adds the objects to the recorded event, so the race analysis
    of later steps sees them.  Sleep sets see them too: a CPU whose step was
    explored at a choice point sleeps there in the later branches with its
    declared accesses *and* those its step touched when it ran, the latter
    compared by stable names (``__mmemu_name__``, else the type), which can
    only wake it more often.  So a touched access that no declared access
    covers (a watch that records which callbacks run) is still ordered.
    Declaring what can be declared keeps the reduction tight
    (``alloc_page`` declares the free list, which every alloc and free
    writes, and touches the page it hands out).
    """
    sim = _current
    if sim is None or sim.running is None or not sim.record or not sim.events:
        return
    r_more, w_more = tuple(reads), tuple(writes)
    j = len(sim.events) - 1
    cpu, label, r, w, pre = sim.events[j]
    sim.events[j] = (cpu, label, r + r_more, w + w_more, pre)
    tr, tw = sim.touched.get(j, ((), ()))
    sim.touched[j] = (tr + r_more, tw + w_more)
