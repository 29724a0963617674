"""A test server for a session fixture: started once, skipped (or failed in CI) when it
cannot start, stopped at the end, its logs' place printed when a test failed.

Shared by tests/backup's conftest and tests/sim's (whose restore tests use moto).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import servers


def running_server(
    request: pytest.FixtureRequest,
    factory: pytest.TempPathFactory,
    name: str,
    start: Callable[[Path], servers.Server],
) -> Iterator[servers.Server]:
    """Yield the started server ``name``; CI=true makes a failed start fail the tests."""
    try:
        server = start(factory.mktemp(name))
    except servers.ServerUnavailable as unavailable:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} did not start: {unavailable}", pytrace=False)
        pytest.skip(f"{name} unavailable: {str(unavailable).splitlines()[0]}")
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\n{name} logs: {server.data_dir}")
