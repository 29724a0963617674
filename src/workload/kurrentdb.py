"""The Pebble side of the workload: files in the container, the layer, service control.

`apply_files` and `apply_layer` push only what changed; what the running process needs to
pick it up (nothing, a reload, a restart) the caller decides from the `Applied` record, so
that a cluster can roll restarts one node at a time.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ops

import tls
from workload import paths

logger = logging.getLogger(__name__)

LOG_FORWARDING_LAYER = "kurrentdb-log-forwarding"
# The least time between two stops of the service (tests set it to 0).
STOP_SPACING: float = paths.KILL_DELAY_SECONDS
# Longer than .NET's 250 ms file-watcher debounce, so a SIGHUP sees the file just pushed.
CONFIG_WATCH_DELAY: float = 1.0
LOG_LEVEL_ATTEMPTS = 3
LOG_LINES = 200
_LOG_LEVEL_ADJUSTED = re.compile(r"The log level was adjusted to: (\w+)")


class WorkloadUserMissingError(Exception):
    """The image lacks what KurrentDB runs as: its user database, the user or the group."""


class ServiceState(enum.Enum):
    """The KurrentDB service as Pebble reports it."""

    MISSING = "missing"  # not in the plan yet
    STOPPED = "stopped"
    RUNNING = "running"
    # The process exited and Pebble restarts it after a growing delay (0.5 s up to 30 s).
    # Pebble reports the plain string `backoff`, which ops' ServiceStatus does not know.
    BACKOFF = "backoff"


@dataclass(frozen=True)
class Applied:
    """What the running process was started with, and what it last reloaded.

    Kept in the workload container beside the files it describes, so a restart that a
    failed hook never made is still seen as due (the pushed files stay, Juju forgets the
    hook), and a new container, which has neither the files nor this, starts afresh.
    """

    started: str = ""  # fingerprint of what only a restart applies
    reloaded: str = ""  # fingerprint of everything the process reads
    last_stop: float = 0.0  # when the charm last asked Pebble to stop the service (epoch s)
    log_level: str = ""  # the level the process logs at

    def to_json(self) -> str:
        """The file's content."""
        return json.dumps(
            {
                "started": self.started,
                "reloaded": self.reloaded,
                "last-stop": self.last_stop,
                "log-level": self.log_level,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Applied:
        """Read the file; anything unreadable counts as nothing known."""
        try:
            data = json.loads(text)
            return cls(
                started=str(data["started"]),
                reloaded=str(data["reloaded"]),
                last_stop=float(data["last-stop"]),
                log_level=str(data.get("log-level", "")),
            )
        except (ValueError, KeyError, TypeError):
            return cls()


@dataclass(frozen=True)
class DesiredFiles:
    """Everything KurrentDB reads from the container's filesystem."""

    config: str
    node_certificate: str  # the leaf, then any intermediates
    node_private_key: str
    # Trusted roots by file name in CA_DIR (`ca.crt` for the internal CA): PEM each.
    trusted_roots: Mapping[str, str]


@dataclass(frozen=True)
class _File:
    path: str
    content: str
    permissions: int


class KurrentDBWorkload:
    """KurrentDB in its Pebble-managed container."""

    def __init__(self, container: ops.Container):
        self.container = container

    def can_connect(self) -> bool:
        """Whether Pebble in the workload container answers."""
        return self.container.can_connect()

    def service_state(self) -> ServiceState:
        """What Pebble says the KurrentDB service is doing (MISSING if it cannot say)."""
        try:
            service = self.container.get_service(paths.SERVICE)
        except (ops.ModelError, ops.pebble.Error):
            return ServiceState.MISSING
        if service.is_running():
            return ServiceState.RUNNING
        if str(getattr(service.current, "value", service.current)) == "backoff":
            return ServiceState.BACKOFF
        return ServiceState.STOPPED

    def is_running(self) -> bool:
        """Whether the KurrentDB service is running."""
        return self.service_state() == ServiceState.RUNNING

    def workload_uid_gid(self) -> tuple[int, int]:
        """The uid of the image's `kurrent` user and the gid of its `kurrent` group.

        Looked up by name: the uid is 1001 from KurrentDB 26.0 and 1000 before. Raises
        WorkloadUserMissingError naming what the image lacks.
        """
        hint = "use a KurrentDB 25.0+ image"
        ids = []
        for database, name, kind in (
            (paths.PASSWD_FILE, paths.WORKLOAD_USER, "user"),
            (paths.GROUP_FILE, paths.WORKLOAD_GROUP, "group"),
        ):
            content = self._read(database)
            if content is None:
                raise WorkloadUserMissingError(f"the image has no {database}; {hint}")
            found = _lookup_id(content, name)
            if found is None:
                raise WorkloadUserMissingError(f"the image has no {name!r} {kind}; {hint}")
            ids.append(found)
        return ids[0], ids[1]

    def ensure_data_ownership(self) -> bool:
        """Give the data volume to the workload user when it is not already theirs.

        A root Pebble leaves a fresh volume owned by root, and volumes written by older
        images belong to uid 1000 (26.x runs as 1001: a refresh across that line, or its
        rollback, changes the owner once). The recursive chown only runs when the
        volume's top directory has the wrong owner, since on a large volume it is slow;
        the top directory is changed last, so a pod killed half-way leaves it wrong and
        the next start finishes the job. Returns whether ownership was changed.
        """
        uid, gid = self.workload_uid_gid()
        info = self.container.list_files(paths.DATA_DIR, itself=True)[0]
        if info.user_id == uid and info.group_id == gid:
            return False
        owner = f"{uid}:{gid}"
        logger.info("Changing ownership of %s to %s", paths.DATA_DIR, owner)
        children = [f.path for f in self.container.list_files(paths.DATA_DIR)]
        for start in range(0, len(children), CHOWN_BATCH):
            batch = children[start : start + CHOWN_BATCH]
            self.container.exec(["chown", "-R", "-h", owner, "--", *batch]).wait()
        self.container.exec(["chown", owner, paths.DATA_DIR]).wait()
        return True

    def apply_files(self, desired: DesiredFiles) -> bool:
        """Push the files that differ from what the container holds; whether any did."""
        pushed = False
        for file in self._files(desired):
            if self._read(file.path) == file.content:
                continue
            self.container.push(
                file.path,
                file.content,
                make_dirs=True,
                permissions=file.permissions,
                user=paths.WORKLOAD_USER,
                group=paths.WORKLOAD_GROUP,
            )
            logger.info("Updated %s", file.path)
            pushed = True
        return self._remove_untrusted_roots(desired) or pushed

    def _remove_untrusted_roots(self, desired: DesiredFiles) -> bool:
        """Delete root files no longer trusted: KurrentDB trusts every file in CA_DIR."""
        try:
            present = self.container.list_files(paths.CA_DIR)
        except (ops.pebble.Error, FileNotFoundError):
            return False
        stale = [f.path for f in present if f.name not in desired.trusted_roots]
        for path in stale:
            self.container.remove_path(path)
            logger.info("Removed %s (no longer trusted)", path)
        return bool(stale)

    def apply_layer(self, layer: Mapping[str, Any]) -> bool:
        """Add the layer when its service or check differs from the plan.

        Returns whether the service itself changed (a check runs without a restart).
        """
        plan: dict[str, Any] = dict(self.container.get_plan().to_dict())
        wanted: dict[str, Any] = dict(ops.pebble.Layer(dict(layer)).to_dict())  # type: ignore[arg-type]
        if all(
            plan.get(section, {}).get(name) == spec
            for section in ("services", "checks")
            for name, spec in wanted.get(section, {}).items()
        ):
            return False
        self.container.add_layer(paths.SERVICE, dict(layer), combine=True)  # type: ignore[arg-type]
        services = plan.get("services", {})
        return bool(services.get(paths.SERVICE) != wanted["services"].get(paths.SERVICE))

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

    def applied(self) -> Applied:
        """What the running process was started with (nothing known on a new container)."""
        text = self._read(paths.APPLIED_FILE)
        return Applied() if text is None else Applied.from_json(text)

    def record_applied(self, applied: Applied) -> None:
        """Remember what the process now runs with."""
        self.container.push(paths.APPLIED_FILE, applied.to_json(), make_dirs=True)

    def start(self) -> None:
        """Start KurrentDB as the plan says, and its health check with it."""
        try:
            self.container.replan()
        finally:
            # Even when the process exits at once (ChangeError): Pebble keeps restarting
            # it, and the check then tells the pod's readiness the truth.
            self.container.start_checks(paths.CHECK)

    def restart(self, applied: Applied) -> None:
        """Restart KurrentDB; Pebble waits `kill-delay` for a clean shutdown.

        Pebble's kill-delay timer of an earlier stop keeps running and would SIGKILL a
        process stopped again within kill-delay (juju-facts §12), so a restart never
        follows the previous stop sooner than that. The stop is recorded before it is
        asked for, so that even a hook dying right after it keeps the spacing.
        """
        self._space_and_record_stop(applied)
        logger.info("Restarting KurrentDB")
        try:
            self.container.restart(paths.SERVICE)
        finally:
            self.container.start_checks(paths.CHECK)

    def stop(self) -> None:
        """Stop KurrentDB (a restore swaps its files); a no-op when it is not running.

        Spaced from the previous stop like a restart, and recorded first (see `restart`).
        """
        if not self.is_running():
            return
        self._space_and_record_stop(self.applied())
        logger.info("Stopping KurrentDB")
        self.container.stop(paths.SERVICE)

    def _space_and_record_stop(self, applied: Applied) -> None:
        """Wait out the kill-delay since the last stop, then record this one (see `restart`)."""
        _wait_since(applied.last_stop, STOP_SPACING)
        self.record_applied(dataclasses.replace(applied, last_stop=time.time()))

    def reload(self) -> None:
        """Make KurrentDB re-read its log level and certificates without a restart."""
        logger.info("Reloading KurrentDB configuration")
        self.container.send_signal("SIGHUP", paths.SERVICE)

    def apply_log_level(self, level: str) -> bool:
        """Reload after the config file got a new `LogLevel`; False if it did not apply.

        A reload re-binds the configuration KurrentDB already holds
        (`ClusterVNodeOptionsExtensions.Reload`); the YAML file itself is re-read by a file
        watcher that .NET debounces by 250 ms (`KurrentConfiguration.cs`,
        `reloadOnChange: true`). A SIGHUP right after the push can thus apply the old
        level, so each signal waits for the watcher, and the node's own log line says which
        level it took (`ClusterVNode.ReloadLogOptions`: "The log level was adjusted to: X";
        `/info/options` shows the start-up values only). Where the log cannot be read, one
        signal after the watcher has to do.
        """
        for attempt in range(1, LOG_LEVEL_ATTEMPTS + 1):
            time.sleep(CONFIG_WATCH_DELAY)
            self.reload()
            time.sleep(CONFIG_WATCH_DELAY)  # the reload runs in the background
            seen = self._logged_level()
            if seen is None:
                logger.warning("Cannot read KurrentDB's log to confirm log level %s", level)
                return True
            if seen == level:
                return True
            logger.info("KurrentDB still logs at %s (attempt %d), signalling again", seen, attempt)
        return False

    def _logged_level(self) -> str | None:
        """The level KurrentDB last said it adjusted to ("" if none), None if unreadable."""
        try:
            process = self.container.exec(
                [paths.PEBBLE_BINARY, "logs", paths.SERVICE, "-n", str(LOG_LINES)],
                environment={"PEBBLE_SOCKET": paths.PEBBLE_SOCKET},
                timeout=10,
            )
            output, _ = process.wait_output()
        except (ops.pebble.Error, OSError) as e:
            logger.debug("pebble logs failed: %s", e)
            return None
        found = _LOG_LEVEL_ADJUSTED.findall(output or "")
        return found[-1] if found else ""

    def _read(self, path: str) -> str | None:
        try:
            with self.container.pull(path) as file:
                return file.read()
        except (ops.pebble.Error, FileNotFoundError):  # absent, or Pebble did not answer
            return None

    @staticmethod
    def _files(desired: DesiredFiles) -> tuple[_File, ...]:
        roots = tuple(
            _File(f"{paths.CA_DIR}/{name}", pem, 0o644)
            for name, pem in sorted(desired.trusted_roots.items())
        )
        bundle = tls.pem_bundle(pem for _, pem in sorted(desired.trusted_roots.items()))
        return (
            *roots,
            _File(paths.TRUST_BUNDLE, bundle, 0o644),
            _File(paths.NODE_CERT_FILE, desired.node_certificate, 0o644),
            _File(paths.NODE_KEY_FILE, desired.node_private_key, 0o600),
            _File(paths.CONFIG_FILE, desired.config, 0o640),
        )


# Paths per chown command: a data directory holds one file per 256 MiB chunk.
CHOWN_BATCH = 500


def _lookup_id(database: str | None, name: str) -> int | None:
    """The id of `name` in /etc/passwd or /etc/group content (name:x:id:...)."""
    for line in (database or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            try:
                return int(fields[2])
            except ValueError:
                return None
    return None


def _wait_since(moment: float, spacing: float) -> None:
    """Sleep until `spacing` seconds have passed since `moment` (at most `spacing`)."""
    remaining = min(spacing, moment + spacing - time.time())
    if remaining > 0:
        logger.info("Waiting %.0f s so that Pebble's earlier kill-delay has passed", remaining)
        time.sleep(remaining)


def describe_pebble_error(error: ops.pebble.Error) -> tuple[str, bool]:
    """A one-line status for a Pebble failure, and whether the user must act (blocked).

    Pebble's messages name the path and the OS error ("no space left on device",
    "read-only file system"); those need someone to fix the volume or the image, anything
    else is retried by the next hook.
    """
    where = f"the {paths.CONTAINER} container"
    if isinstance(error, ops.pebble.PathError):
        text = error.message.lower()
        if "no space left" in text:
            return f"the disk of {where} is full: free space or use a larger volume", True
        if "read-only file system" in text:
            return f"{where} has a read-only file system where the charm writes", True
        if "permission denied" in text:
            return f"Pebble may not write a file in {where} (permission denied)", True
        return f"Pebble could not use a file in {where} ({_one_line(error.message)})", False
    if isinstance(error, ops.pebble.ConnectionError):
        return f"lost the connection to Pebble in {where}; will retry", False
    if isinstance(error, ops.pebble.ExecError):
        return (
            f"{error.command[0]} failed in {where} (exit code {error.exit_code}); will retry",
            False,
        )
    if isinstance(error, ops.pebble.APIError):
        return (
            f"Pebble refused a request ({error.code}: {_one_line(error.message)}); will retry",
            False,
        )
    if isinstance(error, ops.pebble.ChangeError):
        return f"Pebble could not complete a change ({_one_line(error.err)}); will retry", False
    return f"Pebble failed ({type(error).__name__}); will retry", False


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
