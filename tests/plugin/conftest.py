"""Tests of the pytest plugin and mmemu.testing.

The plugin tests use pytest's ``pytester`` fixture.  ``pytest_plugins =
["pytester"]`` would do in the rootdir's conftest only: pytest refuses it in
a conftest it loads during collection (a plain ``pytest`` run from the root
reaches this directory only then).  So register the pytester plugin here when
it is not already on; its options are added late, with their defaults.
"""

from __future__ import annotations

import pytest

from mmemu.engine import all_scenarios


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


# pytester's in-process runs put sys.modules back as they found it: a model
# module first imported inside one (mmemu.races, mmemu.mm.*) would be
# imported again afterwards, and objects of the first copy (the registered
# suites) would no longer be instances of the second's classes.  Load the
# model before any test runs.
all_scenarios()
