"""This unit's part in the cluster: report, schedule (leader), restart in turn, leave.

`cluster.py` decides; this module talks to Juju (peer data), Kubernetes (the pod's role
label) and the local KurrentDB node to carry the decisions out.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import ops

import cluster
import pod
from node import Node, NodeHealth
from state import CharmState
from workload.render import ClusterView, NodeIdentity

if TYPE_CHECKING:
    from kurrentdb_api import KurrentDBClient

logger = logging.getLogger(__name__)

# The longest a single KurrentDB request may take while the node is leaving.
LEAVE_REQUEST_TIMEOUT = 2.0
# The teardown hooks of one scale-down (relation-departed per peer, storage-detaching,
# stop) follow each other within this many seconds.
TEARDOWN_WINDOW = 600.0


class ClusterCoordinator:
    """Carries out the leader's cluster plan for this unit."""

    def __init__(
        self,
        charm: ops.CharmBase,
        state: CharmState,
        node: Node,
        stored: ops.framework.BoundStoredState,
        anonymous_client: Callable[[], KurrentDBClient],
        admin_client: Callable[[], KurrentDBClient],
    ):
        self._charm = charm
        self._state = state
        self._node = node
        self._stored = stored
        self._stored.set_default(pod_role_label=None, teardown_started=0.0)
        self._anonymous_client = anonymous_client
        self._admin_client = admin_client
        self.identity = self.identity_of(charm.unit.name)
        self._health: NodeHealth | None = None
        self._settings = ""

    @property
    def _unit(self) -> str:
        return self._charm.unit.name

    def identity_of(self, unit: str) -> NodeIdentity:
        """The Kubernetes names of any unit of this app."""
        where = pod.detect(self._charm.model.name)
        return NodeIdentity(
            app=self._charm.app.name,
            unit_number=cluster.unit_number(unit),
            namespace=where.namespace,
            cluster_domain=where.cluster_domain,
        )

    # --- peer data --------------------------------------------------------------------------

    def publish_address(self) -> None:
        """Every unit: its stable address, which also makes it a candidate member."""
        if self._state.own_report().address != self.identity.pod_fqdn:
            self.report(address=self.identity.pod_fqdn)

    def report(self, **changes: object) -> None:
        """Update some fields of this unit's report."""
        report = dataclasses.replace(self._state.own_report(), **changes)  # type: ignore[arg-type]
        self._state.save_own_report(report)

    def report_health(self, restart_pending: bool) -> None:
        """Publish how this node is doing, and label its pod with its role."""
        health = self.health()
        self.report(
            role=health.role,
            caught_up=health.caught_up,
            has_data=self._state.own_report().has_data or (health.serving and health.caught_up),
            restart_wanted=restart_pending,
            settings=self._settings,
        )
        self._label_pod(health.role)

    def note_settings(self, config: dict, members: tuple[str, ...]) -> None:
        """Remember which config and membership this unit has processed (see cluster.py)."""
        self._settings = cluster.settings_fingerprint(config, members)

    # --- the leader's schedule --------------------------------------------------------------

    def schedule(self) -> None:
        """Leader: membership, which new units may start, which unit restarts next."""
        current = self._state.cluster_plan()
        new = cluster.plan(current, self._state.unit_reports(), self._charm.app.planned_units())
        if new != current:
            logger.info(
                "Cluster plan: members %s, may start %s, restart grant %s",
                ", ".join(new.members),
                ", ".join(new.fresh_allowed) or "-",
                new.restart_grant,
            )
            self._state.save_cluster_plan(new)

    def view(self) -> ClusterView | None:
        """The membership to render, None until the leader has made this unit a member."""
        members = self._state.cluster_plan().members
        if self._unit not in members:
            return None
        peers = [self.identity_of(u).pod_fqdn for u in members if u != self._unit]
        return ClusterView(size=len(members), peer_fqdns=tuple(peers))

    # --- this node ----------------------------------------------------------------------------

    def health(self) -> NodeHealth:
        """The node's health, asked once per hook."""
        if self._health is None:
            self._health = self._probe()
        return self._health

    def _probe(self) -> NodeHealth:
        clustered = len(self._state.cluster_plan().members) > 1
        return self._node.health(self._anonymous_client(), self.identity.pod_fqdn, clustered)

    def restart_in_turn(self, members: tuple[str, ...]) -> None:
        """This unit holds the restart grant: hand leadership over, restart, wait until back."""
        role = self.health().role
        leading = (
            role in cluster.LEADING_ROLES and len(self._state.own_report().running_members) > 1
        )
        if leading and not self._node.resign_and_wait(
            self._admin_client(),
            self.identity.pod_fqdn,
            already_resigning=role == "ResigningLeader",
        ):
            return  # keep the grant; a later hook checks for the new leader again
        logger.info("Restarting KurrentDB into a %d-node cluster", len(members))
        self._node.restart()
        self.report(running_members=members, restart_wanted=False, role=None, caught_up=False)
        self._health = self._node.wait_until_serving(self._probe)

    @property
    def leaving(self) -> bool:
        """Whether this unit's teardown began lately (its later hooks need not wait again).

        A time window, not a flag: a charm container that restarts keeps its stored state,
        and a unit that stays must hand over again when it really leaves later.
        """
        return time.time() - float(self._stored.teardown_started) < TEARDOWN_WINDOW

    def stay(self) -> None:
        """The workload came (back) up in this pod: a later teardown hands over again."""
        self._stored.teardown_started = 0.0

    def leave_once(self, deadline: float) -> None:
        """Before this node goes away: hand leadership over, let the others catch up.

        Done once per teardown, by the first teardown hook (relation-departed, then
        storage-detaching, then stop), and never past ``deadline`` (time.monotonic()).
        Decided from the node's own gossip, not peer data: storage-detaching runs after
        the peer relation is gone. Remembered in stored state: it only has to last as long
        as this pod, and forgetting it costs one more bounded wait.
        """
        if self.leaving:
            return
        self._stored.teardown_started = time.time()
        # Each request must fit in what is left, so that no call outlives the deadline.
        request_timeout = min(LEAVE_REQUEST_TIMEOUT, max(0.0, deadline - time.monotonic()))

        def client(make: Callable[[], KurrentDBClient]) -> KurrentDBClient:
            bounded = make()
            bounded.timeout = min(bounded.timeout, max(request_timeout, 0.1))
            return bounded

        def remaining() -> float:  # a wait may start one request and end with another
            return max(0.0, deadline - time.monotonic() - 2 * request_timeout)

        if remaining() <= 0:
            return
        anonymous = client(self._anonymous_client)
        health = self._node.health(anonymous, self.identity.pod_fqdn, True)
        others = [
            m
            for m in (health.gossip.alive_members if health.gossip else ())
            if m.http_host != self.identity.pod_fqdn
        ]
        if not others:
            return
        if health.role == "Leader":
            logger.info("Handing KurrentDB leadership over before leaving")
            self._node.resign_and_wait(
                client(self._admin_client), self.identity.pod_fqdn, timeout=remaining()
            )
        # Events this node acknowledged must be on the nodes that stay.
        self._node.wait_until_others_in_sync(anonymous, self.identity.pod_fqdn, remaining())

    def _label_pod(self, role: str | None) -> None:
        """Show the node's role where Kubernetes users look: a label on the pod."""
        if role is None or role == self._stored.pod_role_label:
            return
        import kubernetes

        # Remembered even when the patch fails, so a missing permission costs one API call
        # per role change rather than one per hook.
        kubernetes.label_pod(self.identity.pod_name, self.identity.namespace, role)
        self._stored.pod_role_label = role
