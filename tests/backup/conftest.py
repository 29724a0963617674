"""Object-storage servers for the backup tests, and a fresh empty store per test.

Session fixtures start each server once (`radosgw_server`, `moto_server`,
`azurite_server`); `radosgw_store`, `moto_store` and `azurite_store` give each test its
own new bucket or container (with a `path`), and `object_store` runs a test on all three.
A server that cannot start fails the tests that need it in CI (CI=true) and skips them,
with the reason, elsewhere. Server logs stay in pytest's temporary directory; their place
is printed when a test failed.

Test modules here never `from conftest import`: this directory is not a package (its name
would shadow src/backup), so its conftest is the module `conftest`, like tests/unit's.
"""

from __future__ import annotations

from collections.abc import Iterator

import backends
import pytest
import servers
from server_fixtures import running_server

from backup.store import ObjectStore


@pytest.fixture(scope="session")
def radosgw_server(request, tmp_path_factory) -> Iterator[servers.Server]:
    yield from running_server(request, tmp_path_factory, "radosgw", servers.start_radosgw)


@pytest.fixture(scope="session")
def moto_server(request, tmp_path_factory) -> Iterator[servers.Server]:
    yield from running_server(request, tmp_path_factory, "moto", servers.start_moto)


@pytest.fixture(scope="session")
def azurite_server(request, tmp_path_factory) -> Iterator[servers.Server]:
    yield from running_server(request, tmp_path_factory, "azurite", servers.start_azurite)


@pytest.fixture
def radosgw_store(radosgw_server) -> Iterator[ObjectStore]:
    with backends.fresh_s3_store(radosgw_server) as store:
        yield store


@pytest.fixture
def moto_store(moto_server) -> Iterator[ObjectStore]:
    with backends.fresh_s3_store(moto_server) as store:
        yield store


@pytest.fixture
def azurite_store(azurite_server) -> Iterator[ObjectStore]:
    with backends.fresh_azure_store(azurite_server) as store:
        yield store


@pytest.fixture(params=["moto", "radosgw", "azurite"])
def object_store(request) -> ObjectStore:
    """A fresh empty store on each of the three servers in turn."""
    return request.getfixturevalue(f"{request.param}_store")
