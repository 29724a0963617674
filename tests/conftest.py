"""Test modules' `from conftest import ...` always reach their own directory's conftest.

The suites that are not packages (tests/unit, tests/backup, tests/artifact, ...) each have
a conftest that Python knows as the module `conftest`, and pytest leaves the last one it
loaded in `sys.modules`: with several such suites in one run, a test module would import
another suite's helpers. Before pytest imports a test module, point `conftest` at the
conftest of that module's directory, if it has one.
"""

from __future__ import annotations

import sys

import pytest


def pytest_collectstart(collector: pytest.Collector) -> None:
    if not isinstance(collector, pytest.Module):
        return
    # pytest registers each conftest as a plugin under its file's path.
    own = collector.config.pluginmanager.get_plugin(str(collector.path.parent / "conftest.py"))
    if own is not None and getattr(own, "__name__", "") == "conftest":
        sys.modules["conftest"] = own
