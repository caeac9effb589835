"""A user's install: ``pip install .`` (not editable) into a fresh target,
then the commands from another directory.  The benchmarks and drivers ship
inside the package, and nothing named ``drivers`` lands at the top level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_install_runs_bench_and_the_main_job_from_anywhere(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stdout + build.stderr
    assert (target / "mmemu" / "drivers" / "kvm.py").is_file()
    assert (target / "mmemu" / "benchmarks" / "engine.py").is_file()
    assert not (target / "drivers").exists() and not (target / "benchmarks").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMU_")}
    env["PYTHONPATH"] = str(target)  # the installed copy, ahead of the repository's

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=300, cwd=elsewhere, env=env)

    where = run("-c", "import mmemu, mmemu.drivers.kvm, mmemu.cli.bench as b; "
                      "print(mmemu.__file__); print(mmemu.drivers.kvm.__file__); "
                      "print(b._benchmarks_dir())")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.splitlines()), where.stdout
    bench = run("-m", "mmemu", "bench", "--help")
    assert bench.returncode == 0, bench.stderr
    assert "Usage: mmemu bench" in bench.stdout
    # a quick benchmark really runs, from the installed scripts
    quick = run("-m", "mmemu", "bench", "--only", "engine")
    assert quick.returncode == 0, quick.stderr
    assert "# benchmarks/engine.py --quick" in quick.stdout
    assert "ex/s" in quick.stdout
    main_job = run("-m", "mmemu", "run", "demo:lost-update-locked")
    assert main_job.returncode == 0, main_job.stderr
    assert main_job.stdout.strip().splitlines()[-1].startswith("total: 1 run, ")
