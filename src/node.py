"""This unit's KurrentDB node: configure it, restart or reload it, and ask it how it is."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ops

import cluster
from config import CharmConfig
from state import SystemPasswords
from tls import NodeTls
from workload import render
from workload.kurrentdb import Applied, DesiredFiles, KurrentDBWorkload, ServiceState

if TYPE_CHECKING:
    from kurrentdb_api import ClusterGossip, KurrentDBClient, NodeInfo

logger = logging.getLogger(__name__)

# How long a hook waits, after restarting the node, for it to be back in sync (so the next
# node can go), and for a new leader after a resign. Past that, later hooks check again.
SETTLE_TIMEOUT = 180.0
POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class NodeHealth:
    """What the node said about itself and its cluster (or why it could not say)."""

    info: NodeInfo | None = None
    gossip: ClusterGossip | None = None
    problem: str | None = None
    caught_up: bool = False

    @property
    def role(self) -> str | None:
        """The node's state (Leader, Follower, ...), None when it did not answer."""
        return self.info.state if self.info else None

    @property
    def serving(self) -> bool:
        """Whether the node is up in a serving role."""
        return self.role in cluster.SERVING_ROLES


class Node:
    """Drives the workload towards the rendered configuration."""

    def __init__(self, workload: KurrentDBWorkload):
        self.workload = workload
        # Known once `configure` ran in this hook; the status path falls back on the
        # unit's last report otherwise.
        self._restart_pending: bool | None = None
        self._level_not_taken: str | None = None
        self._desired = Applied()

    @property
    def log_level_not_taken(self) -> str | None:
        """The log level this hook signalled and KurrentDB has not confirmed (None: none)."""
        return self._level_not_taken

    @property
    def restart_pending(self) -> bool | None:
        """Whether the running process needs a restart for what is on disk (None: unknown)."""
        return self._restart_pending

    def configure(
        self,
        config: CharmConfig,
        identity: render.NodeIdentity,
        node_tls: NodeTls,
        passwords: SystemPasswords,
        view: render.ClusterView,
        *,
        may_start: bool,
    ) -> None:
        """Push files and layer; start a stopped node (if `may_start`) or reload it.

        A running node that needs a restart is only marked `restart_pending`: restarts are
        scheduled cluster-wide, see `restart`. Whether a restart is due is decided from
        what the process was started with (recorded in the container), never from charm
        state a failed hook would forget.
        """
        options = render.kurrentdb_options(config, identity, view)
        files = DesiredFiles(
            config=render.render_config_file(options),
            node_certificate=node_tls.certificate,
            node_private_key=node_tls.private_key,
            trusted_roots=node_tls.trusted_roots,
        )
        layer = render.pebble_layer(passwords.initial)
        restart_inputs = {k: v for k, v in options.items() if k not in render.RELOADABLE_INPUTS}
        reload_inputs = {k: v for k, v in options.items() if k in render.RELOADABLE_INPUTS}
        desired = Applied(
            started=_fingerprint(restart_inputs, layer["services"]),
            # Certificates and the log level are reloaded; the check needs neither.
            reloaded=_fingerprint(reload_inputs, dataclasses.asdict(files), layer["checks"]),
            log_level=config.log_level,
        )
        service = self.workload.service_state()
        applied = self.workload.applied()
        self._desired = desired
        in_effect = (applied.started, applied.reloaded) == (desired.started, desired.reloaded)
        if service == ServiceState.RUNNING and in_effect:
            # Nothing KurrentDB reads changed since it was applied: skip reading every
            # file back through Pebble.
            self._restart_pending = False
            return
        self.workload.ensure_data_ownership()
        files_pushed = self.workload.apply_files(files)
        service_changed = self.workload.apply_layer(layer)
        keep_stop = dataclasses.replace(desired, last_stop=applied.last_stop)
        self._restart_pending = False
        if service == ServiceState.BACKOFF:
            # Pebble restarts the process by itself, with the files now on disk; starting
            # it here would skip the back-off and hammer a failing process.
            logger.warning("KurrentDB keeps exiting; Pebble restarts it with back-off")
            self.workload.record_applied(keep_stop)
        elif service != ServiceState.RUNNING:
            if may_start:
                self._start_or_note_exit(self.workload.start)
                self.workload.record_applied(keep_stop)
        elif not applied.started and not files_pushed and not service_changed:
            # Started by a charm revision that kept no record, with the files it still
            # runs: they are what the process has.
            self.workload.record_applied(keep_stop)
        else:
            self._restart_pending = applied.started != desired.started
            if applied.reloaded != desired.reloaded and self._reload(applied, desired):
                self.workload.record_applied(
                    dataclasses.replace(
                        applied, reloaded=desired.reloaded, log_level=desired.log_level
                    )
                )

    def _reload(self, applied: Applied, desired: Applied) -> bool:
        """Reload the running node; whether what changed is known to have applied."""
        if applied.log_level and applied.log_level != desired.log_level:
            if self.workload.apply_log_level(desired.log_level):
                return True
            # Not recorded as applied: the next hook signals again.
            logger.warning("KurrentDB has not taken log level %s yet", desired.log_level)
            self._level_not_taken = desired.log_level
            return False
        self.workload.reload()  # certificates: KurrentDB checks and loads them itself
        return True

    def restart(self) -> None:
        """Restart now (the caller holds the cluster's restart grant, `configure` ran)."""
        self._start_or_note_exit(lambda: self.workload.restart(self.workload.applied()))
        last_stop = self.workload.applied().last_stop
        self.workload.record_applied(dataclasses.replace(self._desired, last_stop=last_stop))
        self._restart_pending = False

    @staticmethod
    def _start_or_note_exit(start: Callable[[], None]) -> None:
        """Start or restart; a process that exits at once is Pebble's to retry, not ours."""
        try:
            start()
        except ops.pebble.ChangeError as e:
            # Pebble reports an exit within its 1 s okay-delay as a failed change and
            # then restarts the service with back-off; the status path shows it.
            logger.error("KurrentDB exited right after starting: %s", e.err)

    def health(self, client: KurrentDBClient, own_host: str, clustered: bool) -> NodeHealth:
        """Ask the node for its state, version and lag; never raises."""
        from kurrentdb_api import KurrentDBAuthError, KurrentDBError, KurrentDBUnreachable

        try:
            info = client.info()
            gossip = client.gossip() if clustered else None
        except KurrentDBAuthError as e:
            return NodeHealth(problem=f"KurrentDB rejected the charm's credentials ({e})")
        except KurrentDBUnreachable as e:
            return NodeHealth(problem=f"KurrentDB is not answering: {e}")
        except KurrentDBError as e:
            return NodeHealth(problem=f"KurrentDB answered what the charm cannot use: {e}")
        if gossip is None:
            return NodeHealth(info=info, caught_up=info.state in cluster.SERVING_ROLES)
        return NodeHealth(info=info, gossip=gossip, caught_up=_caught_up(info, gossip, own_host))

    def resign_and_wait(
        self,
        client: KurrentDBClient,
        own_host: str,
        *,
        already_resigning: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Hand leadership over; True once another node leads."""
        from kurrentdb_api import KurrentDBError

        if not already_resigning:
            try:
                client.resign_node()
            except KurrentDBError as e:
                logger.warning("Resigning leadership failed: %s", e)
                return False

        def new_leader() -> bool:
            gossip = client.gossip()
            return gossip.leader is not None and gossip.leader.node_host != own_host

        return wait_for(new_leader, "another node to become leader", timeout)

    def wait_until_others_in_sync(
        self, client: KurrentDBClient, own_host: str, timeout: float | None = None
    ) -> bool:
        """Wait (bounded) until every other alive node has the leader's log."""

        def in_sync() -> bool:
            gossip = client.gossip()
            leader = gossip.leader
            if leader is None:
                return False
            return all(
                cluster.caught_up(leader.writer_checkpoint, m.writer_checkpoint)
                for m in gossip.alive_members
                if m.node_host != own_host
            )

        return wait_for(in_sync, "the other nodes to catch up before leaving", timeout)

    def wait_until_serving(self, probe: Callable[[], NodeHealth]) -> NodeHealth:
        """After a restart: wait (bounded) until the node is back and caught up."""
        last: list[NodeHealth] = []

        def back() -> bool:
            last[:] = [probe()]
            return last[0].serving and last[0].caught_up

        wait_for(back, "the restarted node to be back in sync")
        return last[-1] if last else probe()


def _fingerprint(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _caught_up(info: NodeInfo, gossip: ClusterGossip, own_host: str) -> bool:
    if info.state == "Leader":
        return True
    leader = gossip.leader
    me = next((m for m in gossip.members if m.node_host == own_host), None)
    if leader is None or me is None or info.state not in cluster.SERVING_ROLES:
        return False
    return cluster.caught_up(leader.writer_checkpoint, me.writer_checkpoint)


def wait_for(condition: Callable[[], bool], what: str, timeout: float | None = None) -> bool:
    """Poll `condition` until it holds or the timeout (default SETTLE_TIMEOUT) passes.

    KurrentDB errors count as 'not yet'.
    """
    from kurrentdb_api import KurrentDBError

    limit = SETTLE_TIMEOUT if timeout is None else min(timeout, SETTLE_TIMEOUT)
    deadline = time.monotonic() + limit
    while True:
        try:
            if condition():
                return True
        except KurrentDBError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            logger.info("Still waiting for %s; a later hook will check again", what)
            return False
        time.sleep(min(POLL_INTERVAL, left))
