"""Workloads as values, and their one-line text form.

A workload is a small world (which drivers are attached to the process, the
notifier API generation, the process's vmas) and, per CPU, a short sequence
of operations.  Its text form is one line::

    drivers=kvm,gru api=modern vmas=a2,s2,p2; cpu0: fault(0,w) access(0); cpu1: munmap(0-1)

- the optional *header* (first segment, not starting with ``cpu``) holds
  ``key=value`` settings: ``drivers=`` a comma-separated list of driver
  names or ``path/file.py:Class`` (the same driver may appear twice: two
  instances, each with its own notifier), a name ending in ``@2`` being
  attached to a second process that maps the same vmas and the same file
  (``drivers=kvm,kvm@2``: two VMs backed by one shared file); ``api=`` ``2.6.27`` or
  ``modern``; ``vmas=`` the process's vmas in address order, each a kind
  (``a`` anonymous, ``s`` shared file, ``p`` private file) and a number of
  pages;
- then one segment per CPU, ``cpuN:`` (numbered from 0, in order) followed
  by its operations, separated by spaces;
- an operation is ``name``, or ``name(arg,arg)``, optionally prefixed by the
  driver it acts through (``d1.fault(0,w)``; ``d0`` is the default and is
  not written).  Pages are numbered across the vmas from 0; a range is
  ``lo-hi`` (inclusive) or a single page.

``parse_workload(text)`` checks everything it can without running anything
(operation names, argument counts and kinds, pages within the vmas, driver
and CPU numbers, operations the API generation lacks) and raises
``WorkloadError`` naming the bad token; ``str(workload)`` is the canonical
text, and ``parse_workload(str(w)) == w``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import attrs

from mmemu.engine._errors import ModelError

API_GENERATIONS = ("2.6.27", "modern")
VMA_KINDS = {"a": "anonymous", "s": "shared file", "p": "private file"}
#: a vma whose kind is written in capitals (``S2``) is *fresh*: nothing of it
#: is faulted in by the world's setup (first touches race: two faults adding
#: the same pagecache page, or allocating the same anonymous page)
DEFAULT_VMAS: tuple[tuple[str, int], ...] = (("a", 2), ("s", 2), ("p", 2))
MAX_PAGES_PER_VMA = 16


class WorkloadError(ModelError):
    """Workload text (or a Workload value) that cannot be run: one line,
    naming the bad token."""


@attrs.frozen
class Op:
    """One operation: ``name`` with its arguments, through driver ``driver``
    (an index into the workload's drivers; only meaningful for driver
    operations).  Arguments are ints, ``(lo, hi)`` page ranges, or words."""

    name: str
    args: tuple[int | tuple[int, int] | str, ...] = ()
    driver: int = 0

    def __str__(self) -> str:
        prefix = f"d{self.driver}." if self.driver else ""
        if not self.args:
            return prefix + self.name
        return f"{prefix}{self.name}({','.join(_arg_text(a) for a in self.args)})"


def _arg_text(a: int | tuple[int, int] | str) -> str:
    if isinstance(a, tuple):
        lo, hi = a
        return str(lo) if lo == hi else f"{lo}-{hi}"
    return str(a)


@attrs.frozen
class Workload:
    """CPUs running operations over a small world (see the module docstring)."""

    cpus: tuple[tuple[Op, ...], ...]
    drivers: tuple[str, ...] = ()
    api: str | None = None
    vmas: tuple[tuple[str, int], ...] = DEFAULT_VMAS

    @property
    def npages(self) -> int:
        """Pages of the process, across its vmas."""
        return sum(n for _kind, n in self.vmas)

    def page_kind(self, page: int) -> str:
        """The kind of the vma page ``page`` is in (``a``, ``s`` or ``p``)."""
        return vma_kind(self.vmas, page)

    @property
    def ops(self) -> int:
        return sum(len(ops) for ops in self.cpus)

    def header(self) -> str:
        items = []
        if self.drivers:
            items.append("drivers=" + ",".join(self.drivers))
        if self.api is not None:
            items.append(f"api={self.api}")
        if self.vmas != DEFAULT_VMAS:
            items.append("vmas=" + ",".join(f"{k}{n}" for k, n in self.vmas))
        return " ".join(items)

    def body(self) -> str:
        return "; ".join(f"cpu{i}:" + "".join(f" {op}" for op in ops)
                         for i, ops in enumerate(self.cpus))

    def __str__(self) -> str:
        head = self.header()
        return f"{head}; {self.body()}" if head else self.body()

    def size(self) -> tuple[int, ...]:
        """What workload shrinking makes smaller, most important first: CPUs,
        operations, pages named by ranges, pages of the world, drivers."""
        span = sum(_op_pages(op) for ops in self.cpus for op in ops)
        return (len(self.cpus), self.ops, span, self.npages, len(self.drivers))


#: how many processes a world can have (drivers named ``...@2`` attach to the second)
PROCESSES = 2


def driver_process(entry: str) -> tuple[str, int]:
    """A ``drivers=`` entry split into the driver spec and the process it is
    attached to, numbered from 0: ``kvm`` -> (kvm, 0), ``kvm@2`` -> (kvm, 1)."""
    spec, at, proc = entry.rpartition("@")
    if at and proc.isdigit():
        return spec, int(proc) - 1
    return entry, 0


def vma_kind(vmas: Sequence[tuple[str, int]], page: int) -> str:
    """The kind (``a``, ``s`` or ``p``) of the vma (of ``vmas``, in address
    order) page ``page`` is in."""
    for kind, n in vmas:
        if page < n:
            return kind.lower()
        page -= n
    raise IndexError(page)


def vma_fresh(vmas: Sequence[tuple[str, int]], page: int) -> bool:
    """Is page ``page`` in a fresh vma (kind in capitals: not faulted in by
    the world's setup)?"""
    for kind, n in vmas:
        if page < n:
            return kind.isupper()
        page -= n
    raise IndexError(page)


def _op_pages(op: Op) -> int:
    n = 0
    for a in op.args:
        if isinstance(a, tuple):
            n += a[1] - a[0] + 1
    return n


# ------------------------------------------------------------------ parsing

_OP_RE = re.compile(r"^(?:d(?P<driver>\d+)\.)?(?P<name>[a-z_][a-z0-9_]*)"
                    r"(?:\((?P<args>[^()]*)\))?$")


def _split_ops(text: str) -> list[str]:
    """Split a CPU's operations on spaces outside parentheses."""
    out: list[str] = []
    cur = ""
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        out.append(cur)
    return out


def _parse_vmas(value: str) -> tuple[tuple[str, int], ...]:
    vmas: list[tuple[str, int]] = []
    for item in value.split(","):
        item = item.strip()
        m = re.fullmatch(r"([a-zA-Z])(\d+)", item)
        if m is None or m.group(1).lower() not in VMA_KINDS:
            raise WorkloadError(
                f"workload: bad vma {item!r} in 'vmas={value}' (expected a kind "
                f"{'/'.join(VMA_KINDS)} -- in capitals: not faulted in at setup -- and a "
                f"page count, e.g. 'a2' or 'S1')")
        n = int(m.group(2))
        if not 1 <= n <= MAX_PAGES_PER_VMA:
            raise WorkloadError(f"workload: vma {item!r} must have 1 to {MAX_PAGES_PER_VMA} "
                                f"pages (got {n})")
        vmas.append((m.group(1), n))
    if not vmas:
        raise WorkloadError("workload: 'vmas=' lists no vma")
    return tuple(vmas)


def _parse_header(text: str) -> tuple[tuple[str, ...], str | None, tuple[tuple[str, int], ...]]:
    drivers: tuple[str, ...] = ()
    api: str | None = None
    vmas = DEFAULT_VMAS
    for item in text.split():
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise WorkloadError(
                f"workload: bad setting {item!r} (expected drivers=..., api=... or vmas=...; "
                f"CPU segments start with 'cpuN:')")
        if key == "drivers":
            drivers = tuple(d.strip() for d in value.split(","))
            if not all(driver_process(d)[0] for d in drivers):
                raise WorkloadError(f"workload: empty driver name in {item!r}")
            for d in drivers:
                if not 0 <= driver_process(d)[1] < PROCESSES:
                    raise WorkloadError(f"workload: bad process in driver {d!r} (a driver is "
                                        f"attached to process 1, the default, or to process "
                                        f"2: 'name@2')")
        elif key == "api":
            if value not in API_GENERATIONS:
                raise WorkloadError(f"workload: bad setting {item!r} (api is one of "
                                    f"{', '.join(API_GENERATIONS)})")
            api = value
        elif key == "vmas":
            vmas = _parse_vmas(value)
        else:
            close = difflib.get_close_matches(key, ["drivers", "api", "vmas"], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise WorkloadError(f"workload: unknown setting {key!r} in {item!r}{hint}")
    return drivers, api, vmas


def _parse_arg(raw: str, kind: str, token: str) -> int | tuple[int, int] | str:
    raw = raw.strip()
    if kind in ("page", "count", "cpu"):
        if not raw.isdigit():
            raise WorkloadError(f"workload: bad argument {raw!r} in {token!r} (expected a "
                                f"{'page number' if kind == 'page' else 'number'})")
        return int(raw)
    if kind == "range":
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", raw)
        if m is None:
            raise WorkloadError(f"workload: bad page range {raw!r} in {token!r} (expected "
                                f"'lo-hi' or a page number)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise WorkloadError(f"workload: empty page range {raw!r} in {token!r}")
        return (lo, hi)
    # a word from a fixed set: "rw" -> r|w, "prot" -> r|rw|none
    choices = {"rw": ("r", "w"), "prot": ("none", "r", "rw")}[kind]
    if raw not in choices:
        raise WorkloadError(f"workload: bad argument {raw!r} in {token!r} (expected "
                            f"{' or '.join(choices)})")
    return raw


def parse_op(token: str) -> Op:
    """One operation token (``d1.fault(0,w)``), checked against the catalogue
    of operations (names, argument counts and kinds), not against a world."""
    from mmemu.workload._ops import OPERATIONS

    m = _OP_RE.match(token)
    if m is None:
        raise WorkloadError(f"workload: cannot read operation {token!r} (expected name or "
                            f"name(args), e.g. fault(0,w))")
    name = m.group("name")
    spec = OPERATIONS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(OPERATIONS), n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise WorkloadError(f"workload: unknown operation {name!r} in {token!r}{hint}; "
                            f"known: {', '.join(sorted(OPERATIONS))}")
    raw_args = m.group("args")
    parts = [a for a in raw_args.split(",")] if raw_args is not None and raw_args.strip() else []
    if not len(spec.args) - spec.optional <= len(parts) <= len(spec.args):
        counts = (f"{len(spec.args) - spec.optional} to {len(spec.args)}" if spec.optional
                  else str(len(spec.args)))
        raise WorkloadError(f"workload: {token!r} takes {counts} argument(s): {spec.usage()}")
    args = tuple(_parse_arg(p, kind, token) for p, kind in zip(parts, spec.args))
    driver = int(m.group("driver")) if m.group("driver") is not None else 0
    if m.group("driver") is not None and not spec.driver_op:
        raise WorkloadError(f"workload: {token!r}: {name} is not a driver operation "
                            f"(no 'dN.' prefix)")
    return Op(name, args, driver)


def parse_workload(text: str, *, check: bool = True) -> Workload:
    """Read a workload from its one-line text form (see the module docstring);
    ``check=False`` leaves the checks against the world to ``validate``."""
    if not isinstance(text, str):
        raise WorkloadError(f"workload: expected text (got {type(text).__name__})")
    segments = [s.strip() for s in text.strip().split(";")]
    if segments and segments[-1] == "":
        segments.pop()
    drivers: tuple[str, ...] = ()
    api: str | None = None
    vmas = DEFAULT_VMAS
    cpus: list[tuple[Op, ...]] = []
    for k, seg in enumerate(segments):
        head, colon, rest = seg.partition(":")
        if re.fullmatch(r"cpu\d+", head.strip()) and colon:
            n = int(head.strip()[3:])
            if n != len(cpus):
                raise WorkloadError(f"workload: {head.strip()!r} out of order (expected "
                                    f"'cpu{len(cpus)}:'; CPUs are numbered from 0)")
            cpus.append(tuple(parse_op(t) for t in _split_ops(rest)))
        elif k == 0 and "=" in seg and not seg.startswith("cpu"):
            drivers, api, vmas = _parse_header(seg)
        else:
            shown = seg if len(seg) <= 30 else seg[:27] + "..."
            raise WorkloadError(f"workload: bad segment {shown!r} (expected 'cpuN: op op ...'"
                                f"{' or settings' if k == 0 else ''})")
    if not cpus:
        raise WorkloadError("workload: no CPU (write 'cpu0: op op ...; cpu1: ...')")
    wl = Workload(tuple(cpus), drivers, api, vmas)
    if check:
        validate(wl)
    return wl


def validate(wl: Workload, *, drivers: Sequence[str] | None = None) -> None:
    """Check a workload against its own world: pages within the vmas, driver
    and CPU numbers, operations the API generation has.  ``drivers``
    overrides ``wl.drivers`` (``mmemu run --workload ... --driver D``)."""
    from mmemu.workload._ops import OPERATIONS

    names = tuple(drivers) if drivers is not None else wl.drivers
    npages = wl.npages
    for c, ops in enumerate(wl.cpus):
        for op in ops:
            spec = OPERATIONS[op.name]
            where = f"{op}' on cpu{c}"
            if spec.driver_op and op.driver >= max(len(names), 1):
                raise WorkloadError(f"workload: '{where} names driver d{op.driver}, but the "
                                    f"workload has {len(names)} driver(s)")
            for kind, a in zip(spec.args, op.args):
                if kind == "page" and isinstance(a, int) and a >= npages:
                    raise WorkloadError(f"workload: '{where}: page {a} is beyond the "
                                        f"{npages} pages of the vmas")
                if kind == "range" and isinstance(a, tuple) and a[1] >= npages:
                    raise WorkloadError(f"workload: '{where}: page range {_arg_text(a)} "
                                        f"goes beyond the {npages} pages of the vmas")
                if kind == "cpu" and isinstance(a, int) and a >= len(wl.cpus):
                    raise WorkloadError(f"workload: '{where}: there is no cpu{a}")
            if op.name == "ksm" and isinstance(op.args[1], int) and op.args[1] < npages \
                    and (wl.page_kind(op.args[1]) != "a" or vma_fresh(wl.vmas, op.args[1])):
                raise WorkloadError(f"workload: '{where}: page {op.args[1]} is not anonymous "
                                    f"and faulted in (the KSM page must be in an 'a' vma)")
            if spec.apis is not None and (wl.api or "2.6.27") not in spec.apis:
                raise WorkloadError(f"workload: '{where}: {op.name} exists only in the "
                                    f"{'/'.join(spec.apis)} notifier API (set api=...)")
    exits = sum(1 for ops in wl.cpus for op in ops if op.name == "exit")
    if exits > 1:
        raise WorkloadError("workload: the process can exit only once ('exit' appears "
                            f"{exits} times)")


__all__ = ["API_GENERATIONS", "DEFAULT_VMAS", "PROCESSES", "Op", "driver_process", "VMA_KINDS", "Workload", "WorkloadError",
           "parse_op", "parse_workload", "validate", "vma_fresh", "vma_kind"]
