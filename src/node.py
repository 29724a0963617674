"""This unit's KurrentDB node: configure it, restart or reload it, and ask it how it is."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ops

from config import CharmConfig
from state import SystemPasswords
from tls import KeyPair, NodeCertificate
from workload import render
from workload.kurrentdb import Change, DesiredFiles, KurrentDBWorkload

if TYPE_CHECKING:
    from kurrentdb_api import KurrentDBClient, NodeInfo

logger = logging.getLogger(__name__)

# Node states in which the node serves its role in the cluster.
SERVING_STATES = frozenset({"Leader", "Follower", "ReadOnlyReplica"})


@dataclass(frozen=True)
class NodeHealth:
    """What the node said about itself (or why it could not say)."""

    info: NodeInfo | None = None
    problem: str | None = None

    @property
    def serving(self) -> bool:
        """Whether the node is up and in a serving role."""
        return self.info is not None and self.info.state in SERVING_STATES


class Node:
    """Drives the workload towards the rendered configuration."""

    def __init__(self, workload: KurrentDBWorkload, stored: ops.framework.BoundStoredState):
        self.workload = workload
        # `restart-pending` survives a hook that fails between pushing a file and
        # restarting, so the restart is never lost.
        self._stored = stored
        self._stored.set_default(restart_pending=False)

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
        cluster: render.ClusterView | None = None,
    ) -> Change:
        """Push files and layer; start, reload or restart KurrentDB as the change needs."""
        self.workload.ensure_data_ownership()
        options = render.kurrentdb_options(config, identity, cluster)
        files = DesiredFiles(
            config=render.render_config_file(options),
            node_certificate=certificate.certificate,
            node_private_key=certificate.private_key,
            ca_certificate=ca.certificate,
        )
        change = max(
            self.workload.apply_files(files),
            self.workload.apply_layer(render.pebble_layer(passwords.initial)),
        )
        if change == Change.RESTART:
            self._stored.restart_pending = True
        if not self.workload.is_running():
            self.workload.start()
            self._stored.restart_pending = False
        elif self.restart_pending:
            self.workload.restart()
            self._stored.restart_pending = False
        elif change == Change.RELOAD:
            self.workload.reload()
        return change

    def health(self, client: KurrentDBClient) -> NodeHealth:
        """Ask the node for its state and version; never raises."""
        from kurrentdb_api import KurrentDBError

        try:
            return NodeHealth(info=client.info())
        except KurrentDBError as e:
            return NodeHealth(problem=str(e))
