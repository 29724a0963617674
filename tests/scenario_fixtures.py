"""Scenario helpers shared by the unit and fuzz suites: a KurrentDB unit's state and volumes.

Plain functions and classes (no fixtures), so a hypothesis test can build a fresh state per
example; `tests/unit/conftest.py` and `tests/fuzz/conftest.py` wrap them in fixtures.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import pytest
from ops import testing

import tls
from state import PEER_RELATION, SystemPasswords
from workload import paths

ADMIN_PASSWORD = "admin-Secret-0001"
OPS_PASSWORD = "ops-Secret-0002"
MODEL = "prod"
IMAGE_VERSION = "26.0.3"  # what the unit tests' image says `KurrentDB --version` is


def quiet_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks poll KurrentDB for a while after a restart; in tests, one look is enough."""
    import node
    import state
    import workload.kurrentdb

    monkeypatch.setattr(node, "SETTLE_TIMEOUT", 0.0)
    monkeypatch.setattr(workload.kurrentdb, "STOP_SPACING", 0.0)
    monkeypatch.setattr(workload.kurrentdb, "CONFIG_WATCH_DELAY", 0.0)
    monkeypatch.setattr(state, "SECRET_RETRY_DELAY", 0.0)


def no_kubernetes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """No Kubernetes API: pod labels are recorded, and listing the app's pods is "unavailable"
    (never a real cluster through a developer's KUBECONFIG). Returns the label calls."""
    import kubernetes
    from refresh import statefulset

    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(kubernetes, "label_pod", lambda *args: calls.append(args) or True)
    monkeypatch.setattr(kubernetes, "app_pod_ordinals", lambda *args, **kwargs: None)
    unavailable = statefulset.KubernetesUnavailable("no Kubernetes API here")
    for call in ("pod_revision", "read", "set_partition"):
        monkeypatch.setattr(statefulset, call, lambda *args, **kwargs: unavailable)
    return calls


def pod_files(where: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's namespace file and resolv.conf live in `where` (absent unless written)."""
    import pod

    monkeypatch.setattr(pod, "NAMESPACE_FILE", where / "namespace")
    monkeypatch.setattr(pod, "RESOLV_CONF", where / "resolv.conf")
    pod.detect.cache_clear()


def make_volumes(root: pathlib.Path) -> Volumes:
    """Fresh etc and data directories under `root`, the volume owned by the workload user."""
    etc = root / "etc"
    data = root / "data"
    etc.mkdir()
    data.mkdir()
    write_passwd(etc, uid=os.getuid(), gid=os.getgid())
    return Volumes(etc=etc, data=data)


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


def replace_config(state: testing.State, **config: Any) -> testing.State:
    """The same state with config options changed (underscores become dashes)."""
    new = {**state.config, **{k.replace("_", "-"): v for k, v in config.items()}}
    return dataclasses.replace(state, config=new)
