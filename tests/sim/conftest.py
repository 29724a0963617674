"""Fixtures for multi-unit simulations."""

from __future__ import annotations

import pathlib
import sys

import pytest

import tls
from sim.harness import ADMIN_PASSWORD, OPS_PASSWORD, Simulation
from sim.kurrentdb_cluster import SimCluster


@pytest.fixture(scope="session")
def bootstrap_ca() -> tls.KeyPair:
    """The doubles' certificates until the charm's leader has made its own CA."""
    return tls.generate_ca()


@pytest.fixture
def sim(tmp_path, monkeypatch, bootstrap_ca):
    with SimCluster(
        ca=bootstrap_ca, admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD
    ) as cluster:
        yield Simulation(tmp_path, cluster, monkeypatch)


@pytest.fixture
def make_sim(tmp_path, monkeypatch, bootstrap_ca):
    """A simulation with a chosen hook order (and strictness)."""
    clusters: list[SimCluster] = []

    def make(hook_order: str = "number", strict: bool = True, **cluster_options) -> Simulation:
        cluster = SimCluster(
            ca=bootstrap_ca,
            admin_password=ADMIN_PASSWORD,
            ops_password=OPS_PASSWORD,
            **cluster_options,
        )
        clusters.append(cluster)
        return Simulation(tmp_path, cluster, monkeypatch, hook_order=hook_order, strict=strict)

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture(autouse=True)
def no_kubernetes(monkeypatch):
    """No Kubernetes API here: pod labels are recorded, not patched."""
    import kubernetes

    monkeypatch.setattr(kubernetes, "label_pod", lambda *args: True)


# The backup suite's server and data-directory helpers (tests/backup is not a package: its
# name would shadow src/backup), importable as `servers`, `backends` and `datadir`. At
# the end of the path, so nothing else is shadowed by them.
_BACKUP_TESTS = str(pathlib.Path(__file__).resolve().parents[1] / "backup")
if _BACKUP_TESTS not in sys.path:
    sys.path.append(_BACKUP_TESTS)


@pytest.fixture(scope="session")
def moto_server(request, tmp_path_factory):
    """moto's S3 server, started once (as tests/backup's conftest does)."""
    import servers
    from server_fixtures import running_server

    yield from running_server(request, tmp_path_factory, "moto", servers.start_moto)
