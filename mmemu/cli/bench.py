"""``mmemu bench``: the scripts of benchmarks/, installed as mmemu.benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from ._app import EXIT_FAILURE, EXIT_OK, UsageError, app

@app.command
def bench(
    *,
    full: Annotated[bool, Parameter(help="every benchmark, bigger budgets (minutes)")] = False,
    only: Annotated[str | None, Parameter(
        help="run one script of benchmarks/ (engine, kernel, scale, notifier, ...)")] = None,
) -> int:
    """Run the benchmarks in benchmarks/ (quick mode unless --full) and print their tables.

    Quick: engine step cost against a bare trio handoff, the kernel suites'
    cost per step and the 10k-vma build (small), executions/s per suite,
    frontrun and thread-stress comparisons.  --full adds time to first
    failure per mutant, the --jobs / Dask speed-up and the notifier figures
    (mm_take_all_locks against vma count).  --only NAME runs the one script
    benchmarks/NAME.py.  Figures on a shared machine are noisy: compare the
    ratios printed by one run.

    Example: mmemu bench --full
    """
    import subprocess

    root = _benchmarks_dir()
    flag = ["--full"] if full else []
    quick = [] if full else ["--quick"]
    runs = [("engine.py", quick), ("kernel.py", quick), ("scale.py", flag)]
    if full:
        runs.append(("notifier.py", []))
    if only is not None:
        scripts = sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))
        if only not in scripts:
            raise UsageError(f"--only {only}: no such benchmark (one of {', '.join(scripts)})")
        runs = [next((r for r in runs if r[0] == f"{only}.py"), (f"{only}.py", flag))]
    code = 0
    for script, args in runs:
        print(f"# benchmarks/{script} {' '.join(args)}".rstrip(), flush=True)
        code = code or subprocess.run([sys.executable, str(root / script), *args]).returncode
    return EXIT_OK if code == 0 else EXIT_FAILURE


def _benchmarks_dir() -> Path:
    """Where the benchmark scripts are: installed as the ``mmemu.benchmarks``
    package (the repository's ``benchmarks/`` folder), whichever way mmemu
    was installed."""
    import importlib.util

    spec = importlib.util.find_spec("mmemu.benchmarks")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(loc) / "scale.py").exists():
            return Path(loc)
    raise UsageError("the benchmark scripts are not installed with this mmemu "
                     "(reinstall it: python3 -m pip install .)")


