"""Test modules' `from conftest import ...` always reach their own directory's conftest.

The suites that are not packages (tests/unit, tests/backup, tests/artifact, ...) each have
a conftest that Python knows as the module `conftest`, and pytest leaves the last one it
loaded in `sys.modules`: with several such suites in one run, a test module would import
another suite's helpers. Before pytest imports a test module, point `conftest` at the
conftest of that module's directory, if it has one, and again before each test runs.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import settings

# No per-example deadline anywhere: examples that run hooks or talk to test servers take
# as long as the (shared, 2-core) machine lets them, and a slow example is not a failure.
settings.register_profile("kurrentdb-charm", deadline=None)
settings.load_profile("kurrentdb-charm")


def _own_conftest(config: pytest.Config, directory: object) -> None:
    # pytest registers each conftest as a plugin under its file's path.
    own = config.pluginmanager.get_plugin(f"{directory}/conftest.py")
    if own is not None and getattr(own, "__name__", "") == "conftest":
        sys.modules["conftest"] = own


def pytest_collectstart(collector: pytest.Collector) -> None:
    if isinstance(collector, pytest.Module):
        _own_conftest(collector.config, collector.path.parent)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Tests that import from `conftest` inside their body run after every suite was
    # collected: point it at their own directory's again.
    _own_conftest(item.config, item.path.parent)
