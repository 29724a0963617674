"""The Pebble side of the workload: files in the container, the layer, service control.

`apply` pushes only what changed and reports what KurrentDB must do to pick it up: nothing,
a configuration reload (log level, certificates) or a restart. The caller decides when to
restart, so that a cluster can roll restarts one node at a time.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ops
import yaml

from workload import paths
from workload.render import RELOADABLE_OPTIONS

logger = logging.getLogger(__name__)

LOG_FORWARDING_LAYER = "kurrentdb-log-forwarding"


class Change(enum.IntEnum):
    """What the running KurrentDB needs for the files on disk to take effect."""

    NONE = 0
    RELOAD = 1
    RESTART = 2


class WorkloadUserMissingError(Exception):
    """The image has no `kurrent` user to run KurrentDB as."""


@dataclass(frozen=True)
class DesiredFiles:
    """Everything KurrentDB reads from the container's filesystem."""

    config: str
    node_certificate: str
    node_private_key: str
    ca_certificate: str


@dataclass(frozen=True)
class _File:
    path: str
    content: str
    permissions: int
    change: Change


class KurrentDBWorkload:
    """KurrentDB in its Pebble-managed container."""

    def __init__(self, container: ops.Container):
        self.container = container

    def can_connect(self) -> bool:
        """Whether Pebble in the workload container answers."""
        return self.container.can_connect()

    def is_running(self) -> bool:
        """Whether the KurrentDB service is running."""
        try:
            service = self.container.get_service(paths.SERVICE)
        except ops.ModelError:
            return False
        return service.is_running()

    def workload_uid_gid(self) -> tuple[int, int]:
        """The image's `kurrent` uid and gid (1001 from KurrentDB 26.0, 1000 before)."""
        with self.container.pull(paths.PASSWD_FILE) as file:
            passwd = file.read()
        for line in passwd.splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == paths.WORKLOAD_USER:
                return int(fields[2]), int(fields[3])
        raise WorkloadUserMissingError(
            f"the image has no {paths.WORKLOAD_USER!r} user; use a KurrentDB 25.0+ image"
        )

    def ensure_data_ownership(self) -> bool:
        """Give the data volume to the workload user when it is not already theirs.

        A root Pebble leaves a fresh volume owned by root, and volumes written by older
        images belong to uid 1000. The recursive chown only runs when the volume's top
        directory has the wrong owner, since on a large volume it is slow.
        Returns whether ownership was changed.
        """
        uid, gid = self.workload_uid_gid()
        info = self.container.list_files(paths.DATA_DIR, itself=True)[0]
        if info.user_id == uid and info.group_id == gid:
            return False
        logger.info("Changing ownership of %s to %d:%d", paths.DATA_DIR, uid, gid)
        self.container.exec(["chown", "-R", f"{uid}:{gid}", paths.DATA_DIR]).wait()
        return True

    def apply_files(self, desired: DesiredFiles) -> Change:
        """Push the files that differ from what the container holds; say what that needs."""
        needed = Change.NONE
        for file in self._files(desired):
            current = self._read(file.path)
            if current == file.content:
                continue
            change = file.change
            if file.path == paths.CONFIG_FILE and current is not None:
                change = _config_change(current, file.content)
            self.container.push(
                file.path,
                file.content,
                make_dirs=True,
                permissions=file.permissions,
                user=paths.WORKLOAD_USER,
                group=paths.WORKLOAD_USER,
            )
            logger.info("Updated %s", file.path)
            needed = max(needed, change)
        return needed

    def apply_layer(self, layer: Mapping[str, Any]) -> Change:
        """Add the layer when it differs from the plan; a service change needs a restart."""
        plan: dict[str, Any] = dict(self.container.get_plan().to_dict())
        wanted: dict[str, Any] = dict(ops.pebble.Layer(dict(layer)).to_dict())  # type: ignore[arg-type]
        if all(
            plan.get(section, {}).get(name) == spec
            for section in ("services", "checks")
            for name, spec in wanted.get(section, {}).items()
        ):
            return Change.NONE
        self.container.add_layer(paths.SERVICE, dict(layer), combine=True)  # type: ignore[arg-type]
        service_changed = plan.get("services", {}).get(paths.SERVICE) != wanted["services"].get(
            paths.SERVICE
        )
        return Change.RESTART if service_changed else Change.NONE

    def apply_log_targets(self, targets: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        """Forward the service's output to these Loki push URLs; stop forwarding to others.

        Log targets live in their own layer and never touch the service, so changing them
        restarts nothing. Returns whether the plan changed.
        """
        current = {
            name: target.to_dict() for name, target in self.container.get_plan().log_targets.items()
        }
        wanted: dict[str, dict[str, Any]] = {
            name: {
                "override": "replace",
                "type": "loki",
                "location": url,
                "services": ["all"],
                "labels": dict(labels),
            }
            for name, url in targets.items()
        }
        for name, target in current.items():
            if name not in wanted:
                # Pebble cannot delete a target from a layer: forward nothing to it instead.
                wanted[name] = {
                    "override": "replace",
                    "type": "loki",
                    "location": target.get("location", ""),
                    "services": ["-all"],
                }
        strip = lambda target: {k: v for k, v in target.items() if k != "override"}  # noqa: E731
        if all(strip(current.get(name, {})) == strip(spec) for name, spec in wanted.items()):
            return False
        layer = ops.pebble.Layer({"log-targets": wanted})  # type: ignore[arg-type]
        self.container.add_layer(LOG_FORWARDING_LAYER, layer, combine=True)
        logger.info("Forwarding KurrentDB logs to %d Loki endpoint(s)", len(targets))
        return True

    def start(self) -> None:
        """Start KurrentDB (and the health check) as the plan says."""
        self.container.replan()

    def restart(self) -> None:
        """Restart KurrentDB; Pebble waits `kill-delay` for a clean shutdown."""
        logger.info("Restarting KurrentDB")
        self.container.restart(paths.SERVICE)

    def reload(self) -> None:
        """Make KurrentDB re-read its log level and certificates without a restart."""
        logger.info("Reloading KurrentDB configuration")
        self.container.send_signal("SIGHUP", paths.SERVICE)

    def _read(self, path: str) -> str | None:
        try:
            with self.container.pull(path) as file:
                return file.read()
        except (ops.pebble.PathError, FileNotFoundError):
            return None

    @staticmethod
    def _files(desired: DesiredFiles) -> tuple[_File, ...]:
        # Certificates are reloadable, so they never force a restart.
        return (
            _File(paths.CA_FILE, desired.ca_certificate, 0o644, Change.RELOAD),
            _File(paths.NODE_CERT_FILE, desired.node_certificate, 0o644, Change.RELOAD),
            _File(paths.NODE_KEY_FILE, desired.node_private_key, 0o600, Change.RELOAD),
            _File(paths.CONFIG_FILE, desired.config, 0o640, Change.RESTART),
        )


def _config_change(current: str, desired: str) -> Change:
    """Restart unless the two config files differ only in options KurrentDB reloads."""
    try:
        old = yaml.safe_load(current) or {}
        new = yaml.safe_load(desired) or {}
    except yaml.YAMLError:
        return Change.RESTART
    if not isinstance(old, dict) or not isinstance(new, dict):
        return Change.RESTART
    strip = lambda options: {k: v for k, v in options.items() if k not in RELOADABLE_OPTIONS}  # noqa: E731
    return Change.RELOAD if strip(old) == strip(new) else Change.RESTART
