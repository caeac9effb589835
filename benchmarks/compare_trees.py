"""The main job's CPU on two source trees, measured in one run.

Run:  python benchmarks/compare_trees.py BASE_DIR [NEW_DIR] [--rounds N] [--family AREA ...]

BASE_DIR (and NEW_DIR, default: this checkout) hold a source tree of mmemu,
e.g. ``git archive REV | tar -x -C BASE_DIR``.  Each round runs
``benchmarks/main_job.py`` once per tree, alternating, in a child process
whose ``PYTHONPATH`` puts that tree first (the reference drivers and the
benchmarks are linked into its package, as an install maps them), and
prints the CPU seconds each child used; then the medians and their ratio.
Alternating trees within one run is what makes the ratio meaningful on a
busy machine.  A script, not a test: it prints and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _prepare(tree: Path) -> None:
    """Link drivers/ and benchmarks/ into the tree's package (mmemu.drivers,
    mmemu.benchmarks), as pyproject.toml's package mapping does."""
    for name in ("drivers", "benchmarks"):
        link = tree / "mmemu" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)


def _run(tree: Path, family: list[str]) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(tree / "benchmarks" / "main_job.py")]
    if family:
        cmd += ["--family", *family]
    before = os.times()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    after = os.times()
    cpu = (after.children_user - before.children_user) + \
        (after.children_system - before.children_system)
    total = next((line for line in out.splitlines() if line.startswith("total")), "")
    return cpu, re.sub(r"\s+", " ", total)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path, nargs="?", default=HERE)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--family", nargs="*", default=[])
    args = ap.parse_args(argv)
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    for tree in trees.values():
        if tree != HERE:
            _prepare(tree)
    cpu: dict[str, list[float]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            c, total = _run(tree, args.family)
            cpu[name].append(c)
            print(f"round {r + 1} {name:4s} cpu {c:7.2f} s   ({total})", flush=True)
    base, new = statistics.median(cpu["base"]), statistics.median(cpu["new"])
    print(f"median cpu: base {base:.2f} s, new {new:.2f} s, new/base {new / base:.3f}")


if __name__ == "__main__":
    main()
