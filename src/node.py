"""This unit's KurrentDB node: configure it, restart or reload it, and ask it how it is."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ops

import cluster
from config import CharmConfig
from state import SystemPasswords
from tls import KeyPair, NodeCertificate
from workload import render
from workload.kurrentdb import Change, DesiredFiles, KurrentDBWorkload

if TYPE_CHECKING:
    from collections.abc import Callable

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

    def __init__(self, workload: KurrentDBWorkload, stored: ops.framework.BoundStoredState):
        self.workload = workload
        # `restart-pending` survives a hook that fails between pushing a file and
        # restarting, so the restart is never lost.
        self._stored = stored
        self._stored.set_default(restart_pending=False, applied_fingerprint="")

    @property
    def restart_pending(self) -> bool:
        """Whether the files on disk need a restart that has not happened yet."""
        return bool(self._stored.restart_pending)

    def configure(
        self,
        config: CharmConfig,
        identity: render.NodeIdentity,
        ca: KeyPair,
        certificate: NodeCertificate,
        passwords: SystemPasswords,
        view: render.ClusterView,
        *,
        may_start: bool,
    ) -> Change:
        """Push files and layer; start a stopped node (if `may_start`) or reload it.

        A running node that needs a restart is only marked `restart_pending`: restarts are
        scheduled cluster-wide, see `restart`.
        """
        options = render.kurrentdb_options(config, identity, view)
        files = DesiredFiles(
            config=render.render_config_file(options),
            node_certificate=certificate.certificate,
            node_private_key=certificate.private_key,
            ca_certificate=ca.certificate,
        )
        layer = render.pebble_layer(passwords.initial)
        fingerprint = _fingerprint(files, layer)
        running = self.workload.is_running()
        if running and fingerprint == self._stored.applied_fingerprint:
            # Nothing KurrentDB reads changed since it was applied to this running
            # container (a new container always comes with pebble-ready and a stopped
            # service): skip reading every file back through Pebble.
            return Change.NONE
        self.workload.ensure_data_ownership()
        change = max(self.workload.apply_files(files), self.workload.apply_layer(layer))
        if change == Change.RESTART:
            self._stored.restart_pending = True
        if not running:
            if may_start:
                # A stopped node starts with the current files: nothing to roll.
                self.workload.start()
                self._stored.restart_pending = False
        elif change == Change.RELOAD:
            self.workload.reload()
        self._stored.applied_fingerprint = fingerprint
        return change

    def restart(self) -> None:
        """Restart now (the caller holds the cluster's restart grant)."""
        self.workload.restart()
        self._stored.restart_pending = False

    def health(self, client: KurrentDBClient, own_host: str, clustered: bool) -> NodeHealth:
        """Ask the node for its state, version and lag; never raises."""
        from kurrentdb_api import KurrentDBError

        try:
            info = client.info()
            gossip = client.gossip() if clustered else None
        except KurrentDBError as e:
            return NodeHealth(problem=str(e))
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
            return gossip.leader is not None and gossip.leader.http_host != own_host

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
                if m.http_host != own_host
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


def _fingerprint(files: DesiredFiles, layer: dict) -> str:
    text = json.dumps([dataclasses.asdict(files), layer], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _caught_up(info: NodeInfo, gossip: ClusterGossip, own_host: str) -> bool:
    if info.state == "Leader":
        return True
    leader = gossip.leader
    me = next((m for m in gossip.members if m.http_host == own_host), None)
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
        if time.monotonic() >= deadline:
            logger.info("Still waiting for %s; a later hook will check again", what)
            return False
        time.sleep(POLL_INTERVAL)
