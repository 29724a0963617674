"""Shared Scenario fixtures: a KurrentDB unit's state with its container, volume and secrets."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import ops
import pytest
from ops import testing

import tls
from charm import KurrentDBCharm
from state import PEER_RELATION, SystemPasswords
from workload import paths

ADMIN_PASSWORD = "admin-Secret-0001"
OPS_PASSWORD = "ops-Secret-0002"
MODEL = "prod"
IMAGE_VERSION = "26.0.3"  # what the unit tests' image says `KurrentDB --version` is


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks poll KurrentDB for a while after a restart; in tests, one look is enough."""
    import node
    import state
    import workload.kurrentdb

    monkeypatch.setattr(node, "SETTLE_TIMEOUT", 0.0)
    monkeypatch.setattr(workload.kurrentdb, "STOP_SPACING", 0.0)
    monkeypatch.setattr(workload.kurrentdb, "CONFIG_WATCH_DELAY", 0.0)
    monkeypatch.setattr(state, "SECRET_RETRY_DELAY", 0.0)


@pytest.fixture(autouse=True)
def pod_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The pod's namespace file and resolv.conf, as a test sets them (none by default)."""
    import pod

    where = tmp_path_factory.mktemp("pod")
    monkeypatch.setattr(pod, "NAMESPACE_FILE", where / "namespace")
    monkeypatch.setattr(pod, "RESOLV_CONF", where / "resolv.conf")
    pod.detect.cache_clear()
    yield where
    pod.detect.cache_clear()


@pytest.fixture(autouse=True)
def pod_labels(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The role labels the charm put on pods (no Kubernetes API here)."""
    import kubernetes

    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(kubernetes, "label_pod", lambda *args: calls.append(args) or True)
    return calls


@pytest.fixture(autouse=True)
def no_pod_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach a real cluster through a developer's KUBECONFIG: the API is "unavailable"
    unless a test says otherwise."""
    import kubernetes

    monkeypatch.setattr(kubernetes, "app_pod_ordinals", lambda *args, **kwargs: None)


@pytest.fixture(scope="session")
def internal_ca() -> tls.KeyPair:
    """One CA for the whole run: RSA key generation is the slow part of these tests."""
    return tls.generate_ca()


@pytest.fixture
def ctx() -> Iterator[testing.Context[KurrentDBCharm]]:
    with testing.Context(KurrentDBCharm) as context:
        yield context


@dataclasses.dataclass
class Volumes:
    """Host directories standing in for the container's /etc and data volume."""

    etc: pathlib.Path
    data: pathlib.Path

    def read(self, container_path: str) -> str:
        return self.host_path(container_path).read_text()

    def host_path(self, container_path: str) -> pathlib.Path:
        if container_path.startswith("/etc/"):
            return self.etc / container_path.removeprefix("/etc/")
        return self.data / container_path.removeprefix(paths.DATA_DIR + "/")


@pytest.fixture
def volumes(tmp_path: pathlib.Path) -> Volumes:
    etc = tmp_path / "etc"
    data = tmp_path / "data"
    etc.mkdir()
    data.mkdir()
    # The volume already belongs to the workload user unless a test says otherwise.
    write_passwd(etc, uid=os.getuid(), gid=os.getgid())
    return Volumes(etc=etc, data=data)


def write_passwd(etc: pathlib.Path, uid: int, gid: int) -> None:
    """The image's user and group databases, with `kurrent` as uid and gid."""
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\nkurrent:x:{uid}:{gid}::/home/kurrent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nkurrent:x:{gid}:\n")


def kurrentdb_container(volumes: Volumes, **kwargs: Any) -> testing.Container:
    kwargs.setdefault("can_connect", True)
    return testing.Container(
        paths.CONTAINER,
        mounts={
            "etc": testing.Mount(location="/etc", source=volumes.etc),
            "data": testing.Mount(location=paths.DATA_DIR, source=volumes.data),
        },
        execs={
            testing.Exec(["chown"], return_code=0),
            testing.Exec(
                [paths.BINARY, "--version"],
                stdout=f"KurrentDB version {IMAGE_VERSION} oss (tags/v{IMAGE_VERSION}/abc, "
                "Mon, 1 Dec 2026 00:00:00 +0000)\n",
            ),
        },
        **kwargs,
    )


def app_secrets(
    ca: tls.KeyPair, admin: str = ADMIN_PASSWORD, ops_password: str = OPS_PASSWORD
) -> tuple[testing.Secret, testing.Secret]:
    ca_secret = testing.Secret(
        {"certificate": ca.certificate, "private-key": ca.private_key}, owner="app"
    )
    passwords = SystemPasswords(
        current={"admin": admin, "ops": ops_password},
        initial={"admin": admin, "ops": ops_password},
    )
    return ca_secret, testing.Secret(passwords.to_content(), owner="app")


def unit_state(
    volumes: Volumes,
    ca: tls.KeyPair | None,
    *,
    leader: bool = True,
    config: dict[str, Any] | None = None,
    extra_secrets: tuple[testing.Secret, ...] = (),
    **container_kwargs: Any,
) -> testing.State:
    """A unit whose leader already created the CA and passwords (unless `ca` is None)."""
    secrets: list[testing.Secret] = list(extra_secrets)
    app_data: dict[str, str] = {}
    if ca is not None:
        ca_secret, pw_secret = app_secrets(ca)
        secrets += [ca_secret, pw_secret]
        app_data = {"ca-secret-id": ca_secret.id, "passwords-secret-id": pw_secret.id}
    return testing.State(
        leader=leader,
        config=config or {},
        containers={kurrentdb_container(volumes, **container_kwargs)},
        relations={testing.PeerRelation(PEER_RELATION, local_app_data=app_data)},
        secrets=secrets,
        storages={testing.Storage("data")},
        model=testing.Model(name=MODEL),
    )


@dataclasses.dataclass
class Calls:
    """What the charm asked Pebble to do to the KurrentDB service."""

    restarts: int = 0
    replans: int = 0
    signals: list[str] = dataclasses.field(default_factory=list)


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


def replace_config(state: testing.State, **config: Any) -> testing.State:
    """The same state with config options changed (underscores become dashes)."""
    new = {**state.config, **{k.replace("_", "-"): v for k, v in config.items()}}
    return dataclasses.replace(state, config=new)
