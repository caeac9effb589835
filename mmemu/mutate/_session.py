"""Mutation testing sessions: a driver against the driver suites, or
modules of the model against the main job."""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from mmemu.mutate._operators import Mutant, MutationSourceError, generate_mutants
from mmemu.mutate._runner import (
    STATUSES,
    Baseline,
    Budget,
    MutantResult,
    MutationError,
    Run,
    Subject,
    _Interrupted,
    _Workers,
    make_workdir,
    remove_workdir,
    run_baseline,
    run_mutants,
)

Progress = Callable[[str], None]


@attrs.frozen
class MutationReport:
    """The outcome of a session: one result per mutant that ran, in the
    mutants' order; ``pending`` lists those Ctrl-C stopped before they ran."""

    subject: str
    runs: tuple[Run, ...]
    results: tuple[MutantResult, ...]
    pending: tuple[Mutant, ...]
    baseline_s: float
    elapsed_s: float
    interrupted: bool
    budget: Budget
    #: where the mutant files were kept (``keep=``), else None
    kept: str | None = None

    def by_status(self, status: str) -> list[MutantResult]:
        return [r for r in self.results if r.status == status]

    @property
    def counted(self) -> list[MutantResult]:
        return [r for r in self.results if r.counts]

    @property
    def caught(self) -> int:
        return len(self.by_status("caught"))

    @property
    def score(self) -> float | None:
        """caught / (caught + survived + unreached + timeout), or None if no
        mutant counts."""
        n = len(self.counted)
        return self.caught / n if n else None

    @property
    def survivors(self) -> list[MutantResult]:
        """Counted mutants that nothing caught (survived, unreached, timeout)."""
        return [r for r in self.counted if r.status != "caught"]

    def summary(self) -> str:
        counts = {s: len(self.by_status(s)) for s in STATUSES}
        score = self.score
        head = (f"mutation score: {self.caught}/{len(self.counted)} caught "
                f"({100 * score:.0f}%)" if score is not None else "mutation score: n/a")
        parts = [f"{counts[s]} {s}" for s in STATUSES[1:] if counts[s]]
        if self.pending:
            parts.append(f"{len(self.pending)} not run")
        return head + (" -- " + ", ".join(parts) if parts else "")

    def to_json(self) -> dict[str, Any]:
        return {"summary": True, "subject": self.subject, "score": self.score,
                "caught": self.caught, "counted": len(self.counted),
                **{s: len(self.by_status(s)) for s in STATUSES},
                "not_run": len(self.pending), "interrupted": self.interrupted,
                "runs": len(self.runs), "baseline_s": round(self.baseline_s, 2),
                "elapsed_s": round(self.elapsed_s, 2), "kept": self.kept}


def _select(mutants: list[Mutant], patterns: Sequence[str]) -> list[Mutant]:
    if not patterns:
        return mutants
    chosen = [m for m in mutants if any(fnmatch.fnmatchcase(m.id, p) for p in patterns)]
    if not chosen:
        raise MutationError(f"no mutant matches {', '.join(repr(p) for p in patterns)} "
                            f"('mmemu mutate --list' shows the ids)")
    return chosen


def _display_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MutationError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def _session(subject_name: str, todo: list[tuple[Subject, Mutant]], runs: list[Run],
             budget: Budget, *, jobs: int, keep: str | os.PathLike[str] | None,
             progress: Progress | None,
             on_result: Callable[[MutantResult], None] | None) -> MutationReport:
    say = progress or (lambda _s: None)
    started = time.perf_counter()
    workdir, temporary = make_workdir(keep)
    workers = _Workers()
    try:
        say(f"{subject_name}: {len(todo)} mutants, {len(runs)} suite runs; "
            f"baseline (the unmutated code, with reach marks) ...")
        try:
            base = run_baseline(todo, runs, budget, workdir=workdir, workers=workers)
        except KeyboardInterrupt:
            workers.stop()
            raise
        baseline_s = time.perf_counter() - started
        say(f"baseline: {len(runs)} runs passed in {baseline_s:.1f}s")
        done = 0

        def show(i: int, r: MutantResult) -> None:
            nonlocal done
            done += 1
            say(f"[{done}/{len(todo)}] {r.mutant.id}: {r.status} ({r.reason})")
            if on_result is not None:
                on_result(r)

        interrupted = False
        try:
            found = run_mutants(todo, base, budget, jobs=jobs, workdir=workdir,
                                on_result=show, workers=workers)
        except _Interrupted as stop:
            found = stop.results
            interrupted = True
        results = tuple(r for r in found if r is not None and r.status != "interrupted")
        pending = tuple(m for (_s, m), r in zip(todo, found)
                        if r is None or r.status == "interrupted")
        return MutationReport(subject=subject_name, runs=tuple(runs), results=results,
                              pending=pending, baseline_s=baseline_s,
                              elapsed_s=time.perf_counter() - started,
                              interrupted=interrupted, budget=budget,
                              kept=None if temporary else str(workdir))
    finally:
        if temporary:
            remove_workdir(workdir)


# ------------------------------------------------------------------ drivers


def driver_source(spec: str) -> tuple[str, str, frozenset[str], str | None]:
    """(file, class name, other classes, module) of the driver ``spec``
    (installed name or 'file.py:Class'); the class must be defined at the
    top of its file.  The third item names the file's classes that are not
    the class or one of its bases: their methods are not the driver's code.
    The fourth is the module's import name when the driver is an installed
    one (a 'file.py:Class' module has none: the loader reads the file)."""
    from mmemu.driver import DriverLoadError, load_driver

    try:
        cls = load_driver(spec)
    except DriverLoadError as exc:
        raise MutationError(str(exc)) from None
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not path or not str(path).endswith(".py"):
        raise MutationError(f"driver {spec!r}: its class {cls.__qualname__} has no source "
                            f"file to mutate")
    if "." in cls.__qualname__ or getattr(module, cls.__qualname__, None) is not cls:
        raise MutationError(f"driver {spec!r}: the class {cls.__qualname__} must be defined "
                            f"at the top level of {path}")
    mine = {c.__qualname__ for c in cls.__mro__ if c.__module__ == cls.__module__}
    others = frozenset(name for name, obj in vars(module).items()
                       if isinstance(obj, type) and obj.__module__ == cls.__module__
                       and name not in mine)
    from mmemu.driver import _is_path

    importable = None if _is_path(spec) else cls.__module__
    return os.path.realpath(path), cls.__qualname__, others, importable


def driver_runs(spec: str, *, api: str | None = None, suites: Sequence[str] = ()) -> list[Run]:
    """Every driver suite x notifier API generation the driver supports
    (``mmemu.testing.check_driver``'s plan), optionally narrowed to the
    suites matching ``suites`` (glob patterns)."""
    from mmemu.engine import ModelError
    from mmemu.testing import _driver_plan

    try:
        plan = _driver_plan(spec, api)
    except ModelError as exc:
        raise MutationError(str(exc)) from None
    runs = [Run(sc.name, dict(params)) for sc, params in plan]
    if suites:
        for pat in suites:
            if not any(fnmatch.fnmatchcase(r.suite, pat) for r in runs):
                known = ", ".join(sorted({r.suite for r in runs}))
                raise MutationError(f"no driver suite matches {pat!r} (the driver runs in: "
                                    f"{known})")
        runs = [r for r in runs if any(fnmatch.fnmatchcase(r.suite, p) for p in suites)]
    if not runs:
        raise MutationError(f"no driver suite runs driver {spec!r}"
                            + (f" with the notifier API {api!r}" if api else ""))
    return runs


def driver_mutants(spec: str, *, operators: Iterable[str] | None = None,
                   select: Sequence[str] = ()) -> tuple[Subject, list[Mutant]]:
    path, cls, others, module = driver_source(spec)
    try:
        mutants = generate_mutants(_read(path), _display_path(path), operators=operators)
    except (MutationSourceError, ValueError) as exc:
        raise MutationError(str(exc)) from None
    # the methods of the file's other classes are not this driver's code
    mutants = [m for m in mutants if m.function.split(".", 1)[0] not in others]
    subject = Subject(path=path, module=module, driver_spec=spec, class_name=cls)
    return subject, _select(mutants, select)


def mutate_driver(
    spec: str,
    *,
    api: str | None = None,
    suites: Sequence[str] = (),
    operators: Iterable[str] | None = None,
    select: Sequence[str] = (),
    budget: Budget = Budget(),
    jobs: int = 1,
    keep: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    on_result: Callable[[MutantResult], None] | None = None,
) -> MutationReport:
    """Mutation-test the driver ``spec`` (an installed name or
    'file.py:Class'): each mutant of its source file runs the driver suites
    (every suite x API generation it supports, or those matching
    ``suites``) and, with ``budget.fuzz`` seconds, the fuzzer.  The user's
    file is never written: each mutant is a copy in a temporary directory
    (or in ``keep``, where it stays, so that the replay tokens of the
    caught mutants work).  Raises MutationError on bad input or when the
    unmutated driver fails its suites; Ctrl-C returns a report marked
    ``interrupted`` with what was found."""
    subject, mutants = driver_mutants(spec, operators=operators, select=select)
    runs = driver_runs(spec, api=api, suites=suites)
    return _session(f"driver {spec}", [(subject, m) for m in mutants], runs, budget,
                    jobs=jobs, keep=keep, progress=progress, on_result=on_result)


# ------------------------------------------------------------------ modules


def main_job_runs(suites: Sequence[str] = ()) -> list[Run]:
    """The main job (``mmemu run`` without arguments): every suite the
    correct model must pass, under each of its parameter combinations."""
    from mmemu.engine import all_scenarios

    runs = [Run(sc.name, dict(params)) for sc in all_scenarios() if sc.expect == "pass"
            for params in sc.combinations()]
    if suites:
        runs = [r for r in runs if any(fnmatch.fnmatchcase(r.suite, p) for p in suites)]
    return runs


def module_name(path: str) -> str:
    """The importable name of the mmemu source file ``path``
    (``mmemu/mm/filemap.py`` -> ``mmemu.mm.filemap``; ``drivers/kvm.py``
    -> ``mmemu.drivers.kvm``)."""
    import importlib

    real = os.path.realpath(path)
    for pkg_name in ("mmemu", "mmemu.drivers"):
        pkg = importlib.import_module(pkg_name)
        for root in getattr(pkg, "__path__", []):
            rel = os.path.relpath(real, os.path.realpath(root))
            if not rel.startswith("..") and rel.endswith(".py"):
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    raise MutationError(f"{path}: mutate modules, not package __init__ files")
                name = ".".join([pkg_name, *parts])
                if pkg_name == "mmemu" and parts[0] == "drivers":
                    continue
                return name
    raise MutationError(f"{path} is not a module of the installed mmemu package")


def module_mutants(paths: Sequence[str], *, operators: Iterable[str] | None = None,
                   exclude: Iterable[str] = (), select: Sequence[str] = ()
                   ) -> list[tuple[Subject, Mutant]]:
    excl = list(exclude)
    out: list[tuple[Subject, Mutant]] = []
    for p in paths:
        real = os.path.realpath(p)
        name = module_name(real)
        subject = Subject(path=real, module=name)
        try:
            ms = generate_mutants(_read(real), _display_path(real), operators=operators,
                                  exclude=excl)
        except (MutationSourceError, ValueError) as exc:
            raise MutationError(str(exc)) from None
        out += [(subject, m) for m in ms]
    ids = set(_select([m for _s, m in out], select)) if select else None
    return [(s, m) for s, m in out if ids is None or m in ids]


def mutate_modules(
    paths: Sequence[str],
    *,
    runs: Sequence[Run] | None = None,
    operators: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    select: Sequence[str] = (),
    budget: Budget = Budget(),
    jobs: int = 1,
    keep: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    on_result: Callable[[MutantResult], None] | None = None,
) -> MutationReport:
    """Mutation-test modules of mmemu itself (``mmemu/mm/*.py``,
    ``mmemu/kernel/locking.py``, ``drivers/*.py``) against ``runs``
    (default: the main job).  Each mutant replaces its module through an
    import hook in a fresh worker process; nothing on disk changes."""
    todo = module_mutants(paths, operators=operators, exclude=exclude, select=select)
    plan = list(runs) if runs is not None else main_job_runs()
    return _session(f"{len(paths)} modules", todo, plan, budget, jobs=jobs, keep=keep,
                    progress=progress, on_result=on_result)


__all__ = ["MutationReport", "driver_mutants", "driver_runs", "driver_source",
           "main_job_runs", "module_mutants", "module_name", "mutate_driver", "mutate_modules"]
