"""Shared Scenario fixtures: a KurrentDB unit's state with its container, volume and secrets.

The helpers themselves live in `tests/scenario_fixtures.py` (the fuzz suite uses them too);
they are re-exported here for the tests' `from conftest import ...`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import ops
import pytest
from ops import testing
from scenario_fixtures import ADMIN_PASSWORD as ADMIN_PASSWORD
from scenario_fixtures import IMAGE_VERSION as IMAGE_VERSION
from scenario_fixtures import MODEL as MODEL
from scenario_fixtures import OPS_PASSWORD as OPS_PASSWORD
from scenario_fixtures import Calls as Calls
from scenario_fixtures import Volumes as Volumes
from scenario_fixtures import app_secrets as app_secrets
from scenario_fixtures import kurrentdb_container as kurrentdb_container
from scenario_fixtures import make_volumes, no_kubernetes, pod_files, quiet_hooks
from scenario_fixtures import replace_config as replace_config
from scenario_fixtures import unit_state as unit_state
from scenario_fixtures import write_passwd as write_passwd

import tls
from charm import KurrentDBCharm


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks poll KurrentDB for a while after a restart; in tests, one look is enough."""
    quiet_hooks(monkeypatch)


@pytest.fixture(autouse=True)
def pod_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The pod's namespace file and resolv.conf, as a test sets them (none by default)."""
    import pod

    where = tmp_path_factory.mktemp("pod")
    pod_files(where, monkeypatch)
    yield where
    pod.detect.cache_clear()


@pytest.fixture(autouse=True)
def pod_labels(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The role labels the charm put on pods; listing the app's pods is "unavailable" unless a
    test says otherwise (no Kubernetes API here)."""
    return no_kubernetes(monkeypatch)


@pytest.fixture(scope="session")
def internal_ca() -> tls.KeyPair:
    """One CA for the whole run: RSA key generation is the slow part of these tests."""
    return tls.generate_ca()


@pytest.fixture
def ctx() -> Iterator[testing.Context[KurrentDBCharm]]:
    with testing.Context(KurrentDBCharm) as context:
        yield context


@pytest.fixture
def volumes(tmp_path: pathlib.Path) -> Volumes:
    # The volume already belongs to the workload user unless a test says otherwise.
    return make_volumes(tmp_path)


@pytest.fixture
def pebble_calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()
    restart, replan, send_signal = (
        ops.Container.restart,
        ops.Container.replan,
        ops.Container.send_signal,
    )

    def spy_restart(self: ops.Container, *names: str) -> None:
        calls.restarts += 1
        restart(self, *names)

    def spy_replan(self: ops.Container) -> None:
        calls.replans += 1
        replan(self)

    def spy_signal(self: ops.Container, sig: int | str, *names: str) -> None:
        calls.signals.append(str(sig))
        send_signal(self, sig, *names)

    monkeypatch.setattr(ops.Container, "restart", spy_restart)
    monkeypatch.setattr(ops.Container, "replan", spy_replan)
    monkeypatch.setattr(ops.Container, "send_signal", spy_signal)
    return calls


@pytest.fixture
def kurrentdb(internal_ca: tls.KeyPair, monkeypatch: pytest.MonkeyPatch):
    """A KurrentDB test double the charm reaches instead of localhost:2113."""
    from doubles.kurrentdb import KurrentDBDouble

    with KurrentDBDouble(
        admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD, ca=internal_ca
    ) as double:
        monkeypatch.setattr(KurrentDBCharm, "api_url", double.url)
        yield double
