#!/usr/bin/env python3
"""The KurrentDB charm: builds the parts, observes events, one reconcile and one status path.

Every event that can change what KurrentDB should run leads to the same `_reconcile`,
which works out the whole desired state from scratch (config, secrets, peers) and applies
only what differs. Statuses are computed in one place, `_on_collect_unit_status`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ops

import credentials
from cluster_status import app_status, cluster_rows, unit_waiting_status
from config import CharmConfig, ConfigError, parse_config
from coordinator import ClusterCoordinator
from cos import dashboards, logs, metrics
from cos.topology import Topology
from node import Node
from security import Security
from state import PEER_RELATION, SYSTEM_USERS, CharmState
from tls import KeyPair
from workload import paths
from workload.kurrentdb import KurrentDBWorkload, WorkloadUserMissingError

if TYPE_CHECKING:
    from kurrentdb_api import KurrentDBClient

logger = logging.getLogger(__name__)


class KurrentDBCharm(ops.CharmBase):
    """Runs a KurrentDB node in the `kurrentdb` container."""

    # The charm and workload containers share the pod's network namespace.
    api_url = f"https://localhost:{paths.HTTP_PORT}"
    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self._stored.set_default(last_good_config=None)
        self.state = CharmState(self.model)
        self.security = Security(self.model, self.state, self._stored)
        self.node = Node(KurrentDBWorkload(self.unit.get_container(paths.CONTAINER)), self._stored)
        self.cluster = ClusterCoordinator(
            self,
            self.state,
            self.node,
            self._stored,
            self._anonymous_client,
            self._admin_client_now,
        )
        self.identity = self.cluster.identity
        self.topology = Topology(
            model=self.model.name,
            model_uuid=self.model.uuid,
            application=self.app.name,
            unit=self.unit.name,
            charm_name=self.meta.name,
        )
        self.metrics = metrics.MetricsEndpoint(self.model, self.topology, self._stored)
        self.dashboards = dashboards.GrafanaDashboards(self.model, self.topology)
        self.logs = logs.LogForwarding(self.model, self.topology, self._stored)
        # Problems found while reconciling, shown by the status path in the same hook.
        self._problems: list[ops.StatusBase] = []

        container = self.on[paths.CONTAINER]
        peers = self.on[PEER_RELATION]
        for event in (
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.leader_elected,
            self.on.update_status,
            self.on.secret_changed,
            self.on.data_storage_attached,
            container.pebble_ready,
            container.pebble_check_failed,
            container.pebble_check_recovered,
            peers.relation_created,
            peers.relation_joined,
            peers.relation_changed,
            peers.relation_departed,
            self.on[metrics.RELATION].relation_joined,
            self.on[metrics.RELATION].relation_changed,
            self.on[dashboards.RELATION].relation_joined,
            self.on[logs.RELATION].relation_joined,
            self.on[logs.RELATION].relation_changed,
            self.on[logs.RELATION].relation_departed,
            self.on[logs.RELATION].relation_broken,
        ):
            framework.observe(event, self._reconcile)
        # Leaving (scale-down, pod deletion): hand leadership over before the node goes.
        framework.observe(self.on.data_storage_detaching, self._on_leaving)
        framework.observe(self.on.stop, self._on_leaving)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)
        framework.observe(self.on.get_password_action, self._on_get_password_action)
        framework.observe(self.on.get_cluster_status_action, self._on_get_cluster_status_action)

    # --- reconcile ------------------------------------------------------------------------

    def _reconcile(self, event: ops.EventBase) -> None:
        if isinstance(event, ops.RelationDepartedEvent) and event.departing_unit == self.unit:
            self._on_leaving(event)
            return
        config = self._effective_config()
        if config is None or self.state.peer_relation is None:
            return
        chosen = self._chosen_passwords(config)
        self.security.ensure_app_material(chosen or {})
        self.cluster.publish_address()
        self._forward_logs_and_publish_address(event)
        if self.unit.is_leader():
            self.cluster.schedule()
        ca, passwords = self.state.internal_ca(), self.state.system_passwords()
        view = self.cluster.view()
        if ca is None or passwords is None or view is None or not self.node.workload.can_connect():
            return  # the status path says what is missing
        certificate = self.security.node_certificate(ca, self.identity)
        plan, report = self.state.cluster_plan(), self.state.own_report()
        self.cluster.note_settings(config.to_stored(), plan.members)
        may_start = report.started or self.unit.name in plan.fresh_allowed
        try:
            was_running = self.node.workload.is_running()
            self.node.configure(
                config, self.identity, ca, certificate, passwords, view, may_start=may_start
            )
            if not was_running and self.node.workload.is_running():
                # A (re)started process runs the current membership.
                self.cluster.report(
                    started=True, running_members=plan.members, restart_wanted=False
                )
            self.cluster.report_health(self.node.restart_pending)
            if self.unit.is_leader():
                self.cluster.schedule()  # react to this unit's own report at once
            plan = self.state.cluster_plan()
            if self.node.restart_pending and plan.restart_grant == self.unit.name:
                self.cluster.restart_in_turn(plan.members)
                self.cluster.report_health(self.node.restart_pending)
                if self.unit.is_leader():
                    self.cluster.schedule()  # release the grant if this node is back in sync
        except WorkloadUserMissingError as e:
            self._problems.append(ops.BlockedStatus(str(e)))
            return
        except (ops.pebble.ExecError, ops.pebble.ChangeError, ops.pebble.APIError) as e:
            logger.error("Configuring KurrentDB failed: %s", e)
            self._problems.append(ops.MaintenanceStatus("configuring KurrentDB failed; will retry"))
            return
        self.unit.set_ports(paths.HTTP_PORT)
        if self.unit.is_leader() and chosen and self.security.rotation_pending(passwords, chosen):
            self._rotate_passwords(chosen)
        if self.unit.is_leader():
            self._publish_cos_app_data(config, ca)

    def _forward_logs_and_publish_address(self, event: ops.EventBase) -> None:
        """Every unit: its scrape address, and its logs to every related Loki."""
        self.metrics.publish_unit_address(self.identity.pod_fqdn)
        if self.node.workload.can_connect():
            broken = event.relation if isinstance(event, ops.RelationBrokenEvent) else None
            self.node.workload.apply_log_targets(
                self.logs.endpoints(exclude=broken), self.topology.labels()
            )

    def _publish_cos_app_data(self, config: CharmConfig, ca: KeyPair) -> None:
        """Leader: scrape job, dashboards, Loki metadata; each only where related."""
        self.dashboards.publish()
        self.logs.publish_app()
        if self.metrics.relations:
            password = self.security.scrape_user_password(
                metrics.SCRAPE_USER, "Prometheus scraper (kurrentdb charm)", self._admin_client_now
            )
            if password is not None:
                self.metrics.publish_app(ca.certificate, password, config.scrape_interval)

    def _effective_config(self) -> CharmConfig | None:
        """The config to run with: the current one, or the last good one while it is bad."""
        try:
            config = parse_config(dict(self.config))
        except ConfigError as e:
            self._problems.append(ops.BlockedStatus(e.message))
            stored = self._stored.last_good_config
            return None if stored is None else CharmConfig.from_stored(dict(stored))
        self._stored.last_good_config = config.to_stored()
        return config

    def _chosen_passwords(self, config: CharmConfig) -> dict[str, str] | None:
        """The leader's view of the `system-users` secret; None when it cannot be used."""
        if not self.unit.is_leader():
            return None
        try:
            return credentials.read_system_users(self.model, config.system_users)
        except ConfigError as e:
            self._problems.append(ops.BlockedStatus(e.message))
            return None

    def _rotate_passwords(self, chosen: dict[str, str]) -> None:
        from kurrentdb_api import KurrentDBAuthError, KurrentDBError

        passwords = self.state.system_passwords()
        assert passwords is not None
        try:
            self.security.rotate_passwords(passwords, chosen, self._admin_client)
        except KurrentDBAuthError:
            self._problems.append(
                ops.BlockedStatus("KurrentDB rejected the stored admin password; cannot rotate")
            )
        except KurrentDBError as e:
            logger.warning("Password rotation deferred: %s", e)
            self._problems.append(
                ops.WaitingStatus("password rotation pending until KurrentDB answers")
            )

    # --- cluster --------------------------------------------------------------------------

    def _on_leaving(self, event: ops.EventBase) -> None:
        if self.node.workload.can_connect() and self.node.workload.is_running():
            # A stopping pod has 30 s before Kubernetes kills it; a unit being removed
            # (storage-detaching, departing) can take its time.
            self.cluster.leave(timeout=10.0 if isinstance(event, ops.StopEvent) else None)

    # --- status ---------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        for problem in self._problems:
            event.add_status(problem)
        if self.state.peer_relation is None:
            event.add_status(ops.WaitingStatus("waiting for the peer relation"))
            return
        if self.state.internal_ca() is None or self.state.system_passwords() is None:
            event.add_status(ops.WaitingStatus("waiting for the leader to create credentials"))
            return
        if not self.node.workload.can_connect():
            event.add_status(ops.WaitingStatus("waiting for Pebble in the kurrentdb container"))
            return
        plan, report = self.state.cluster_plan(), self.state.own_report()
        waiting = unit_waiting_status(self.unit.name, plan, report, self.node.restart_pending)
        if waiting is not None:
            event.add_status(waiting)  # outranks "not running yet", added next if so
        if not self.node.workload.is_running():
            event.add_status(ops.WaitingStatus("KurrentDB is not running yet"))
            return
        health = self.cluster.health()
        if health.info is None:
            event.add_status(ops.WaitingStatus(f"KurrentDB is not answering: {health.problem}"))
            return
        self.unit.set_workload_version(health.info.db_version)
        if health.serving:
            event.add_status(ops.ActiveStatus(health.info.state))
        else:
            event.add_status(ops.WaitingStatus(f"KurrentDB node is {health.info.state}"))

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        if self.unit.is_leader() and self.state.peer_relation is not None:
            event.add_status(app_status(self.state.cluster_plan(), self.state.unit_reports()))

    # --- actions --------------------------------------------------------------------------

    def _on_get_password_action(self, event: ops.ActionEvent) -> None:
        username = event.params.get("username", "admin")
        if username not in SYSTEM_USERS:
            event.fail(f"unknown user {username!r}; choose one of {', '.join(SYSTEM_USERS)}")
            return
        passwords = self.state.system_passwords()
        if passwords is None:
            event.fail("the leader has not created the passwords yet; try again in a minute")
            return
        event.set_results({"username": username, "password": passwords.current[username]})

    def _on_get_cluster_status_action(self, event: ops.ActionEvent) -> None:
        from kurrentdb_api import KurrentDBError

        try:
            gossip = self._anonymous_client().gossip()
        except KurrentDBError as e:
            event.fail(f"this unit's KurrentDB did not answer ({e}); run it on another unit")
            return
        units = {self.cluster.identity_of(u).pod_fqdn: u for u in self.state.unit_reports()}
        rows, table = cluster_rows(gossip, units)
        event.set_results({"nodes": rows, "table": table})

    # --- KurrentDB API clients -------------------------------------------------------------

    def _anonymous_client(self) -> KurrentDBClient:
        from kurrentdb_api import KurrentDBClient

        ca = self.state.internal_ca()
        return KurrentDBClient(self.api_url, ca_pem=ca.certificate if ca else None, timeout=3.0)

    def _admin_client_now(self) -> KurrentDBClient:
        passwords = self.state.system_passwords()
        return self._admin_client(passwords.current["admin"] if passwords else "")

    def _admin_client(self, admin_password: str) -> KurrentDBClient:
        from kurrentdb_api import KurrentDBClient

        ca = self.state.internal_ca()
        return KurrentDBClient(
            self.api_url,
            ca_pem=ca.certificate if ca else None,
            username="admin",
            password=admin_password,
            timeout=5.0,
        )


if __name__ == "__main__":  # pragma: nocover
    ops.main(KurrentDBCharm)
