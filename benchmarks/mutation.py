"""Benchmark: the mutation score of the model's own protocols.

Run:  python benchmarks/mutation.py [--jobs N] [--module PATH]... [--operator OP]...
                                    [--suite GLOB]... [--timeout S] [--json FILE]
                                    [--jsonl FILE]

Mutates ``mmemu/mm/*.py``, ``mmemu/kernel/locking.py`` and ``drivers/*.py``
with every operator of ``mmemu.mutate`` (drop a lock/unlock pair, a seq or
count update, a retry test or recheck, a wake_up, a notifier call, a
get/put, move a zap after its unlock, free before the invalidate, freeze at
the wrong count, ignore a signal...) and runs each mutant against the main
job -- every suite the correct model must pass, under each parameter
combination and its default budget -- in a worker process of its own,
stopping at the first suite that fails.

Prints, from one run: the baseline (the unmutated main job, with reach marks), then a
table per file (mutants, caught, survived, unreached, timeout, invalid,
score), the overall mutation score, the median time per mutant, and every
survivor with what it changes.  ``--json FILE`` also writes every verdict
(with diffs) for comparing runs.

What is left out, and why (the same rules for every run):
- code that only runs with one of mmemu's own named mutants switched on,
  and code that only runs while a scenario builds its initial state
  (``if cpu is None``): neither is the correct protocol (the operators skip
  them);
- lockdep (the lock-order graph, ``in_atomic``, ``might_sleep``) and the
  hooks through which ``mm/`` reports to the checkers: mutating a checker
  tests nothing about the protocol, only whether the checker can fire,
  which the correct model never makes it do;
- object construction (``__init__``) and dumps.

A script, not a test: it prints numbers and asserts nothing.  With the
default budget it takes a while (minutes per hundred mutants and core);
``--jobs`` runs mutants side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from mmemu.mutate import (
    OPERATORS,
    STATUSES,
    Budget,
    MutantResult,
    MutationError,
    main_job_runs,
    mutate_modules,
)

#: checker-side code in the mutated files (see the module doc)
EXCLUDE = [
    # kernel/locking.py: lockdep
    r"LockdepGraph\..*", r"_graph", r"_held", r"_sync_engine_view", r"_check_exit", r"_site",
    r"_lockdep_\w+", r"in_atomic", r"might_sleep", r"_owner_title",
    # mm/: the checker interface (mm reports, the checkers judge)
    r"_checker", r"_lookup_returned", r"_page_added", r"_swap_page_\w+", r"_free_hook", r"_end_check",
    r"install_\w*checks?", r"_check_\w+", r"\w*_check", r"_dumper", r"\w*dump\w*", r"_where",
]


def default_modules() -> list[Path]:
    """The model's protocol code, where the imported mmemu has it (the
    checkout for an editable install)."""
    import mmemu
    import mmemu.drivers

    pkg = Path(mmemu.__file__).parent
    drv = Path(mmemu.drivers.__file__).parent
    mm = sorted(p for p in (pkg / "mm").glob("*.py") if p.name != "__init__.py")
    drivers = sorted(p for p in drv.glob("*.py") if p.name != "__init__.py")
    return mm + [pkg / "kernel" / "locking.py"] + drivers


def _rel(path: str) -> str:
    """mmemu/mm/filemap.py, drivers/kvm.py: the same names wherever mmemu is."""
    posix = Path(path).as_posix()
    if "/drivers/" in posix:
        return "drivers/" + posix.rsplit("/drivers/", 1)[1]
    if "/mmemu/" in posix:
        return "mmemu/" + posix.rsplit("/mmemu/", 1)[1]
    return path


def read_ids(path: str) -> list[str]:
    """Mutant ids (or globs) from a file, one a line; blank lines and what
    follows a '#' are ignored, so a previous run's survivor list can be
    annotated."""
    ids = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    return ids


def print_report(results: list[MutantResult], pending: int) -> None:
    per_file: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        per_file[_rel(r.mutant.path)][r.status] += 1
    cols = ["caught", "survived", "unreached", "timeout", "invalid"]
    print(f"\n{'file':34} {'mutants':>7} " + " ".join(f"{c:>9}" for c in cols) + f" {'score':>6}")
    total: Counter[str] = Counter()
    for f in sorted(per_file):
        c = per_file[f]
        total.update(c)
        counted = c["caught"] + c["survived"] + c["unreached"] + c["timeout"]
        score = f"{100 * c['caught'] / counted:5.0f}%" if counted else "   n/a"
        print(f"{f:34} {sum(c.values()):>7} " + " ".join(f"{c[k]:>9}" for k in cols) +
              f" {score}")
    counted = total["caught"] + total["survived"] + total["unreached"] + total["timeout"]
    print(f"{'total':34} {sum(total.values()):>7} " + " ".join(f"{total[k]:>9}" for k in cols)
          + (f" {100 * total['caught'] / counted:5.0f}%" if counted else ""))
    by_op: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        by_op[r.mutant.operator][r.status] += 1
    print("\nper operator (caught/counted):  " + ", ".join(
        f"{op} {c['caught']}/{c['caught'] + c['survived'] + c['unreached'] + c['timeout']}"
        for op, c in sorted(by_op.items())))
    if counted:
        print(f"\nMUTATION SCORE: {total['caught']}/{counted} caught = "
              f"{100 * total['caught'] / counted:.1f}%  "
              f"(invalid, not counted: {total['invalid']}; not run: {pending})")
    times = [r.elapsed_s for r in results if r.elapsed_s > 0]
    caught_t = [r.by.elapsed_s for r in results if r.status == "caught" and r.by]
    if times:
        print(f"median wall time per mutant run: {statistics.median(times):.2f}s; median time "
              f"to the catching failure: {statistics.median(caught_t or [0]):.2f}s")
    for status in ("survived", "unreached", "timeout", "invalid"):
        group = [r for r in results if r.status == status]
        if not group:
            continue
        print(f"\n{status.upper()} ({len(group)}):")
        for r in group:
            print(f"  {r.mutant.id}  [{_rel(r.mutant.path)}:{r.mutant.line}]  "
                  f"{r.mutant.description}")
            if status in ("invalid", "timeout"):
                print(f"      {r.reason}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", default=[],
                    help="a file to mutate (repeatable; default: mm/, locking.py, drivers/)")
    ap.add_argument("--operator", action="append", default=[], choices=sorted(OPERATORS))
    ap.add_argument("--mutant", action="append", default=[], help="glob over mutant ids")
    ap.add_argument("--mutants-from", action="append", default=[], metavar="FILE",
                    help="a file of mutant ids or globs, one a line ('#' starts a comment); "
                         "adds to --mutant (to re-run a previous run's survivors)")
    ap.add_argument("--suite", action="append", default=[],
                    help="only main-job runs of suites matching this glob (weakens the job)")
    ap.add_argument("--max-preemptions", type=int, default=None,
                    help="DFS preemption bound of every run (default: each suite's own); "
                         "to measure what a lower bound would lose")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant (default: 30 + 10x its runs' baseline time)")
    ap.add_argument("--fuzz", type=int, default=0,
                    help="random fuzz workloads for each mutant the main job misses (default 0)")
    ap.add_argument("--json", default=None, help="write every verdict to this file")
    ap.add_argument("--jsonl", default=None,
                    help="append each verdict to this file as it comes (one JSON object a line)")
    ap.add_argument("--list", action="store_true", help="list the mutants only")
    args = ap.parse_args()

    try:
        select = args.mutant + [pattern for f in args.mutants_from for pattern in read_ids(f)]
    except OSError as exc:
        print(f"mutation.py: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.mutants_from and not select:
        print("mutation.py: --mutants-from names no mutant", file=sys.stderr)
        return 2
    modules = [Path(m) for m in args.module] or default_modules()
    runs = main_job_runs(args.suite)
    started = time.perf_counter()
    if args.list:
        from mmemu.mutate import module_mutants
        todo = module_mutants([str(m) for m in modules], operators=args.operator or None,
                              exclude=EXCLUDE, select=select)
        for _s, m in todo:
            print(f"{m.id}  [{_rel(m.path)}:{m.line}]  {m.operator}: {m.description}")
        print(f"{len(todo)} mutants")
        return 0
    print(f"# mutation benchmark: {len(modules)} files, {len(runs)} main-job runs per mutant "
          f"at most, jobs={args.jobs}", flush=True)
    stream = open(args.jsonl, "a", encoding="utf-8") if args.jsonl else None

    def on_result(r: MutantResult) -> None:
        if stream is not None:
            stream.write(json.dumps(r.to_json()) + "\n")
            stream.flush()

    try:
        report = mutate_modules(
            [str(m) for m in modules], runs=runs, operators=args.operator or None,
            exclude=EXCLUDE, select=select,
            budget=Budget(timeout=args.timeout, fuzz=args.fuzz,
                          max_preemptions=args.max_preemptions),
            jobs=args.jobs, progress=lambda line: print(line, file=sys.stderr, flush=True),
            on_result=on_result)
    except MutationError as exc:
        print(f"mutation.py: {exc}", file=sys.stderr)
        return 2
    finally:
        if stream is not None:
            stream.close()
    results = list(report.results)
    print(f"baseline (unmutated main job): {report.baseline_s:.1f}s; "
          f"total {time.perf_counter() - started:.0f}s" +
          ("; INTERRUPTED" if report.interrupted else ""))
    print_report(results, len(report.pending))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"summary": report.to_json(), "statuses": list(STATUSES),
             "mutants": [r.to_json() for r in results]}, indent=1), encoding="utf-8")
        print(f"\nverdicts written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
