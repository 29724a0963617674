"""This unit's part in the cluster: report, schedule (leader), restart in turn, leave.

`cluster.py` decides; this module talks to Juju (peer data, goal-state), Kubernetes (the
app's pods, the pod's role label) and the local KurrentDB node to carry the decisions out.

Why the leader asks Kubernetes before it grows the membership (juju/juju, 3.6):
- `juju add-unit -n 2` on a Kubernetes model calls ScaleApplication
  (cmd/juju/application/addunit.go), which only raises the application's scale
  (apiserver/facades/client/application/application.go, `app.ChangeScale`); the
  provisioner then patches the StatefulSet's replicas to the new scale in one call
  (internal/worker/caasapplicationprovisioner/ops.go, `worker/...` in older trees:
  `EnsureScale` -> caas/kubernetes/provider/application/scale.go `Scale`).
- A unit exists only once its pod's init container introduces itself
  (apiserver/facades/agent/caasapplication/application.go `UnitIntroduction` ->
  `UpsertCAASUnit`), and goal-state lists the application's units as they are in state
  (apiserver/facades/agent/uniter/uniter.go `goalStateUnits`, `app.AllUnits()`); ops'
  `planned_units()` counts those that are not dying. So it grows pod by pod.
- The hook tool re-reads goal-state on each call (worker/uniter/runner/context/context.go
  `GoalState`), so a hook can watch it grow.
- Without `--trust`, the app's Role allows get, list and patch on pods and services of
  its namespace, nothing on StatefulSets (caas/kubernetes/provider/application/trust.go
  `getDefaultApplicationNamespaceRules`): the app's pods are what the charm can read.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import ops

import cluster
import node as node_module
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
# Without the Kubernetes API, the leader waits this long in the hook, watching goal-state,
# before it grows the membership: pods of one scale request introduce themselves seconds
# to tens of seconds apart. Never longer than node.SETTLE_TIMEOUT, the longest any hook
# waits for the cluster (tests set that to 0).
GROWTH_SETTLE_SECONDS = 60.0
GROWTH_POLL_SECONDS = 5.0
# When the leader's own gossip does not confirm a restart grant yet (a follower a few MiB
# behind under write load), it looks again for this long before leaving it to a later
# hook: with reports that no longer churn, that later hook may be update-status.
GRANT_CONFIRM_SECONDS = 30.0
GRANT_POLL_SECONDS = 2.0
# In a scale-down, the leader waits this long for the departing nodes to vanish from its
# gossip before leaving the grant to a later hook: their units' teardown (handover, at
# most charm.LEAVE_BUDGET) and the pod's deletion come after the remaining units hear
# relation-departed, and no other hook is due on the leader once they are gone.
SHRINK_CONFIRM_SECONDS = 150.0

# Clock seams: the multi-unit simulation runs this wait against simulated time.
_monotonic = time.monotonic
_sleep = time.sleep


def _growth_settle_limit() -> float:
    return min(GROWTH_SETTLE_SECONDS, node_module.SETTLE_TIMEOUT)


def _grant_confirm_limit() -> float:
    return min(GRANT_CONFIRM_SECONDS, node_module.SETTLE_TIMEOUT)


def _shrink_confirm_limit() -> float:
    return min(SHRINK_CONFIRM_SECONDS, node_module.SETTLE_TIMEOUT)


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
        # Set by the charm while a refresh runs: restarts for a config change wait for it
        # (a pod being replaced and a node restarting would be two nodes down).
        self.hold_config_restarts = False
        # Asked at most once per hook: (present units, what was learnt about the arrivals).
        self._arrivals: tuple[tuple[str, ...], frozenset[str] | None, int | None] | None = None

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
        """Publish how this node is doing, and label its pod with its role.

        Only what the schedule uses, so that a busy cluster does not churn peer data:
        the role as `cluster.reported_role` names it, caught-up with hysteresis.
        """
        health = self.health()
        previous = self._state.own_report()
        role = cluster.reported_role(health.role)
        self.report(
            role=role,
            caught_up=cluster.reported_caught_up(previous.caught_up, role, self._lag(health)),
            has_data=previous.has_data or (health.serving and health.caught_up),
            restart_wanted=restart_pending,
            settings=self._settings,
        )
        self._label_pod(health.role)

    def _lag(self, health: NodeHealth) -> int | None:
        """How far this node is behind the leader in its own gossip; None if it cannot say."""
        gossip = health.gossip
        if gossip is None or gossip.leader is None:
            return None
        me = next((m for m in gossip.members if m.node_host == self.identity.pod_fqdn), None)
        if me is None:
            return None
        return cluster.lag_bytes(gossip.leader.writer_checkpoint, me.writer_checkpoint)

    def note_settings(self, config: dict, members: tuple[str, ...]) -> None:
        """Remember which config and membership this unit has processed (see cluster.py)."""
        self._settings = cluster.settings_fingerprint(config, members)

    # --- the leader's schedule --------------------------------------------------------------

    def schedule(self) -> None:
        """Leader: membership, which new units may start, which unit restarts next."""
        current = self._state.cluster_plan()
        reports = self._state.unit_reports()
        planned: int | None = self._charm.app.planned_units()
        app_pods: frozenset[str] | None = None
        if cluster.growth_pending(current, reports, planned):
            app_pods, planned = self._arrivals_of(cluster.present_units(reports), planned)
        new = cluster.plan(
            current, reports, planned, app_pods, hold_config_restarts=self.hold_config_restarts
        )
        if app_pods is not None and new.members == current.members:
            awaited = cluster.awaited_units(
                current.members, cluster.present_units(reports), app_pods
            )
            if awaited:
                logger.info("Waiting for %s to join before resizing", ", ".join(awaited))
        if new.restart_grant not in (None, current.restart_grant) and not self._grant_confirmed(
            new, reports
        ):
            new = dataclasses.replace(new, restart_grant=None)
        if new != current:
            logger.info(
                "Cluster plan: members %s, may start %s, restart grant %s",
                ", ".join(new.members),
                ", ".join(new.fresh_allowed) or "-",
                new.restart_grant,
            )
            self._state.save_cluster_plan(new)

    def _arrivals_of(
        self, present: tuple[str, ...], planned: int | None
    ) -> tuple[frozenset[str] | None, int | None]:
        """Before growing to ``present``: the app's pods, or else goal-state after a wait.

        Returns the units that have a pod (None when Kubernetes cannot tell) and the
        planned units to decide with. Asked once per hook.
        """
        if self._arrivals is not None and self._arrivals[0] == present:
            return self._arrivals[1], self._arrivals[2]
        import kubernetes

        ordinals = kubernetes.app_pod_ordinals(
            self._charm.app.name, self.identity.namespace, self.identity.pod_name
        )
        app_pods = (
            None if ordinals is None else frozenset(f"{self._charm.app.name}/{n}" for n in ordinals)
        )
        if app_pods is None:
            planned = self._settled_planned_units(planned)
        self._arrivals = (present, app_pods, planned)
        return app_pods, planned

    def _settled_planned_units(self, planned: int | None) -> int | None:
        """Goal-state once it stopped growing for a while (bounded), or None if unreadable.

        The fallback when the app's pods cannot be listed: more units of the same scale
        request are likely to appear within GROWTH_SETTLE_SECONDS. If one does, the
        membership waits for it (its relation-joined brings the leader back).
        """
        deadline = _monotonic() + _growth_settle_limit()
        while _monotonic() < deadline:
            _sleep(min(GROWTH_POLL_SECONDS, max(0.0, deadline - _monotonic())))
            try:
                now = self._charm.app.planned_units()
            except ops.ModelError as e:
                logger.warning("Cannot read goal-state: %s", e)
                return None
            if now != planned:
                logger.info("Juju plans %s units now, not %s: not resizing yet", now, planned)
                return now
        return planned

    def _grant_confirmed(
        self, new: cluster.ClusterPlan, reports: Mapping[str, cluster.UnitReport]
    ) -> bool:
        """Whether this unit's own node confirms, fresh, what the reports say.

        Two things the reports cannot show for sure:
        - that the nodes holding data are in sync now: reports are sticky (see
          `cluster.reported_caught_up`), so every other node holding data must be alive,
          serving and within CATCH_UP_BYTES in this node's /gossip;
        - in a scale-down, that the departing nodes are gone: a departed unit has no report
          left, but its pod may still run KurrentDB at the larger size, and restarting a
          node into the smaller size beside it could allow two leaders
          (`cluster.leaving_units`). Only gossip showing them dead lets the grant out.
        The leader looks again for up to GRANT_CONFIRM_SECONDS (SHRINK_CONFIRM_SECONDS
        while departing nodes still run), then leaves it to a later hook. Only a node that
        serves sees the whole cluster; when the leader's node does not (it holds no data
        yet), the reports decide the sync part, as they are the freshest view left.
        """
        assert new.restart_grant is not None
        witnesses = cluster.grant_witnesses(new.restart_grant, new.members, reports)
        leaving = cluster.leaving_units(new.members, reports)
        if not witnesses and not leaving:
            return True
        hosts = {u: self.identity_of(u).pod_fqdn for u in (*witnesses, *leaving)}
        health = self.health()
        limit = _grant_confirm_limit()
        if leaving:
            limit = max(limit, _shrink_confirm_limit())
        deadline = _monotonic() + limit
        while True:
            held = self._grant_held_by(health, witnesses, leaving, hosts)
            if held is None:
                return True
            if held == "" or _monotonic() >= deadline:
                logger.info("Restart of %s held: %s", new.restart_grant, held or "no gossip")
                return False
            _sleep(GRANT_POLL_SECONDS)
            health = self._health = self._probe()

    def _grant_held_by(
        self,
        health: NodeHealth,
        witnesses: tuple[str, ...],
        leaving: tuple[str, ...],
        hosts: Mapping[str, str],
    ) -> str | None:
        """Why this node's view holds a grant back (None: it does not; "": give up now)."""
        if leaving and not cluster.gossip_shows_gone(leaving, hosts, health.gossip):
            if health.gossip is None:
                return "" if self._unit in witnesses else "no gossip to show departed nodes gone"
            return f"departed {', '.join(leaving)} still in gossip"
        if not witnesses:
            return None
        if not health.serving or health.gossip is None:
            if self._unit in witnesses:
                return ""  # this node holds data and does not serve: no restart now
            logger.debug("No gossip of a serving node here: the reports decide the grant")
            return None
        if not cluster.gossip_confirms(witnesses, hosts, health.gossip):
            return "gossip shows a node not in sync"
        return None

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
        # Gossip while the membership or the process's own one has several nodes: a node
        # still running a larger size (3 -> 1) must show whether the others are gone.
        clustered = (
            len(self._state.cluster_plan().members) > 1
            or len(self._state.own_report().running_members) > 1
        )
        return self._node.health(self._anonymous_client(), self.identity.pod_fqdn, clustered)

    def restart_in_turn(self, members: tuple[str, ...]) -> None:
        """This unit holds the restart grant: hand leadership over, restart, wait until back."""
        role = self.health().role
        reports = self._state.unit_reports()
        # Hand over only to a node that can take over: a member of the new membership that
        # runs (3 -> 1: nobody; a resign would wait SETTLE_TIMEOUT for no new leader).
        successors = [u for u in members if u != self._unit and u in reports and reports[u].started]
        leading = (
            role in cluster.LEADING_ROLES
            and len(self._state.own_report().running_members) > 1
            and bool(successors)
        )
        if leading and not self._node.resign_and_wait(
            self._admin_client(),
            self.identity.pod_fqdn,
            already_resigning=role == "ResigningLeader",
        ):
            return  # keep the grant; a later hook checks for the new leader again
        if cluster.restart_waits_for_new_node(self._unit, members, reports):
            # Restarting now would pause writes; a new node joining first avoids it. Its
            # report, once it serves, brings this unit back here.
            logger.info("Restart held until a new node serves: restarting now pauses writes")
            return
        logger.info("Restarting KurrentDB into a %d-node cluster", len(members))
        self._node.restart()
        self.report(running_members=members, restart_wanted=False, role=None, caught_up=False)
        if not cluster.can_serve_alone_with_started(
            self._unit, members, self._state.unit_reports()
        ):
            # Its quorum needs a node that starts only once this hook's plan is visible,
            # that is, after this hook: waiting here would only delay it (1 -> 3).
            logger.info("Not waiting: the node serves once a new member starts")
            self._health = self._probe()
            return
        self._health = self._node.wait_until_serving(self._probe)

    def leads(self) -> bool:
        """Whether this unit's node leads KurrentDB now (or is resigning)."""
        return self.health().role in cluster.LEADING_ROLES

    def hand_over_leadership(self, timeout: float) -> bool:
        """Resign this node's leadership and wait (bounded) for another node to lead."""
        resigned = self._node.resign_and_wait(
            self._admin_client(),
            self.identity.pod_fqdn,
            already_resigning=self.health().role == "ResigningLeader",
            timeout=timeout,
        )
        self._health = self._probe()
        return resigned

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
            if m.node_host != self.identity.pod_fqdn
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
