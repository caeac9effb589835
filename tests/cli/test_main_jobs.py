"""The two main jobs: `mmemu run` (every suite, correct model) and
`mmemu mutants` (every catalogued mutant caught, the model clean)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmemu.cli import main

KERNEL_MD = Path(__file__).resolve().parents[2].parent / "shared" / "KERNEL.md"


def _catalogue() -> list[str]:
    """Mutant names in KERNEL.md's table "Mutants each suite must catch"."""
    text = KERNEL_MD.read_text(encoding="utf-8")
    section = text.split("## Mutants each suite must catch", 1)[1]
    return re.findall(r"^\| `([a-z_]+:[a-z-]+)` \|", section, flags=re.M)


def test_main_job_passes_on_the_correct_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    suites = {r["suite"] for r in rows}
    # every registered suite that must pass ran, each with every parameter
    # combination (workload:run has none of its own: it runs a workload given
    # with --workload)
    from mmemu.engine import all_scenarios
    expected = {s.name for s in all_scenarios() if s.expect == "pass" and s.combinations()}
    assert suites == expected
    assert all(r["failure"] is None for r in rows)
    assert {r["driver"] for r in rows} >= {"kvm", "gru", "hmm", "sva"}


@pytest.mark.skipif(not KERNEL_MD.exists(), reason=f"{KERNEL_MD} (the shared kernel notes) is not beside the checkout")
def test_every_catalogued_mutant_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    catalogue = _catalogue()
    assert len(catalogue) == 19, catalogue  # the table has 19 rows today
    assert main(["mutants", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    summary = rows[-1]
    assert summary["mutants_caught"] and summary["correct_model_clean"]
    caught = {r["mutant"] for r in rows[:-1] if r.get("mutant") and r["caught_as"]}
    assert set(catalogue) <= caught
    for r in rows[:-1]:
        if r.get("mutant"):
            assert r["caught_as"] and r["preemptions"] <= 2, r


def test_run_filters_suites_and_drivers_by_glob(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--suite", "notifier:trunc*", "--driver", "[gk]*", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {r["suite"] for r in rows} == {"notifier:truncate-vs-fault"}
    assert {r["driver"] for r in rows} == {"gru", "kvm"}
    assert main(["run", "--suite", "nope:*"]) == 2
    assert "unknown suite 'nope:*'" in capsys.readouterr().err
