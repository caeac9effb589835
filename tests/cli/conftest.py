from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmemu.engine import _registry
from mmemu.engine import all_scenarios

from . import _models


@pytest.fixture
def cli_registry() -> Iterator[None]:
    """Register the CLI test scenarios and mutant for one test only."""
    all_scenarios()  # load the built-in suites first, so the snapshot holds them
    scenarios, mutants = dict(_registry._SCENARIOS), dict(_registry._MUTANTS)
    _models.register()
    try:
        yield
    finally:
        _registry._SCENARIOS.clear()
        _registry._SCENARIOS.update(scenarios)
        _registry._MUTANTS.clear()
        _registry._MUTANTS.update(mutants)
