#!/usr/bin/env python3
"""The KurrentDB charm: builds the parts, observes events, one reconcile and one status path.

Every event that can change what KurrentDB should run leads to the same `_reconcile`,
which works out the whole desired state from scratch (config, secrets, peers) and applies
only what differs. Statuses are computed in one place, `_on_collect_unit_status`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import ops

from backup.capability import Backups
from certificates.capability import Certificates
from clients.capability import Clients
from cluster_status import app_status, cluster_rows, unit_waiting_status
from config_source import ConfigSource
from coordinator import ClusterCoordinator
from cos import dashboards, logs, metrics
from cos.topology import Topology
from image import Image
from node import Node
from refresh.capability import Refresh
from security import Security
from state import PEER_RELATION, SYSTEM_USERS, CharmState, SecretUnavailableError
from tls import KeyPair
from workload import paths
from workload.kurrentdb import (
    KurrentDBWorkload,
    ServiceState,
    WorkloadUserMissingError,
    describe_pebble_error,
)

if TYPE_CHECKING:
    from config import CharmConfig
    from kurrentdb_api import KurrentDBClient

logger = logging.getLogger(__name__)

# A deleted pod has terminationGracePeriodSeconds (30 s) for its stop hook, and its Pebble
# is told to stop KurrentDB at the same moment; dispatching the hook takes some of that.
STOP_DEADLINE = 20.0
# A scale-down runs relation-departed (once per peer), storage-detaching and stop on the
# leaving unit: the handover happens once, in the first of them, within this budget.
LEAVE_BUDGET = 90.0


class KurrentDBCharm(ops.CharmBase):
    """Runs a KurrentDB node in the `kurrentdb` container."""

    # The charm and workload containers share the pod's network namespace.
    api_url = f"https://localhost:{paths.HTTP_PORT}"
    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.state = CharmState(self.model)
        self.security = Security(self.model, self.state)
        container = self.unit.get_container(paths.CONTAINER)
        self.image = Image(container, self._stored)
        self.options = ConfigSource(self, self.state, self.image)
        self.node = Node(KurrentDBWorkload(container))
        self.cluster = ClusterCoordinator(
            self,
            self.state,
            self.node,
            self._stored,
            self._anonymous_client,
            self._admin_client_now,
        )
        self.identity = self.cluster.identity
        self.certificates = Certificates(self, self.state, self.identity)
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
        self.backups = Backups(
            self,
            self.state,
            self.cluster.health,
            self._admin_client_now,
            self.image.version,
            self.node.workload.stop,
            self.node.workload.workload_uid_gid,
        )
        self.refresh = Refresh(
            self,
            self.state,
            self._stored,
            self.identity,
            self.image,
            self.cluster.hand_over_leadership,
            self.cluster.leads,
        )
        self.clients = Clients(
            self, self.state, self._stored, self._admin_client_now,
            self.cluster, self.certificates, self.image,
        )  # fmt: skip
        self.refresh.check_also(self.backups.busy)
        self.backups.wait_for(self.refresh.refusal)
        # Failures of this hook's own work, shown by the status path in the same hook.
        # Anything that lasts (bad config, a missing user) the status path finds itself.
        self._problems: list[ops.StatusBase] = []

        container_events = self.on[paths.CONTAINER]
        peers = self.on[PEER_RELATION]
        for event in (
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.leader_elected,
            self.on.update_status,
            self.on.secret_changed,
            self.on.data_storage_attached,
            container_events.pebble_ready,
            container_events.pebble_check_failed,
            container_events.pebble_check_recovered,
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
            *self.certificates.events,
            *self.clients.events,
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
        if self.state.peer_relation is None:
            return
        try:
            self._reconcile_unit(event)
        except SecretUnavailableError as e:
            # Never read as "absent" (that would replace the CA or passwords): wait.
            logger.warning("Reconcile deferred: %s", e)
            self._problems.append(ops.WaitingStatus(f"{e}; will retry"))
        except ops.pebble.Error as e:  # the workload container, mid-hook
            message, needs_user = describe_pebble_error(e)
            logger.error("Configuring KurrentDB failed: %s", message)
            status = ops.BlockedStatus if needs_user else ops.MaintenanceStatus
            self._problems.append(status(message))

    def _reconcile_unit(self, event: ops.EventBase) -> None:
        if isinstance(event, ops.PebbleReadyEvent):
            self.cluster.stay()
        # The leader's duties do not wait for a valid config.
        chosen = self.options.chosen_passwords()[0]
        self.security.ensure_app_material(chosen or {})
        self.cluster.publish_address()
        self.refresh.publish()
        self._forward_logs_and_publish_address(event)
        config = self.options.effective()
        restore = self.backups.take_turn()  # before anything may start KurrentDB
        self.cluster.hold_config_restarts = self.refresh.in_progress()
        if self.unit.is_leader() and not restore.pauses_schedule:
            self.cluster.schedule()
        ca, passwords = self.state.internal_ca(), self.state.system_passwords()
        view = self.cluster.view()
        if config is None or ca is None or passwords is None or view is None:
            return  # the status path says what is missing
        if not self.node.workload.can_connect() or not self.model.storages.get("data"):
            return  # the status path says which
        if self.image.problem() and not self.node.workload.is_running():
            return  # never start an image the charm cannot run; the status says which works
        certificate = self.security.node_certificate(ca, self.identity)
        plan, report = self.state.cluster_plan(), self.state.own_report()
        self.cluster.note_settings(config.to_stored(), plan.members)
        may_start = report.started or self.unit.name in plan.fresh_allowed
        may_start = may_start and not restore.holds_node_stopped
        may_start = may_start and self.refresh.workload_allowed_to_start()
        config = self.backups.with_restore_options(config, restore)
        try:
            was_running = self.node.workload.is_running()
            node_tls = self.certificates.node_tls(ca, certificate, config.extra_options)
            self.node.configure(
                config, self.identity, node_tls, passwords, view, may_start=may_start
            )
            self.certificates.acknowledge()
            self.backups.after_configure(self.node.workload.is_running())
            pending = bool(self.node.restart_pending)
            started_now = not was_running and (
                self.node.workload.service_state() != ServiceState.STOPPED
            )
            # A (re)started process runs the current membership; so does a running one with
            # nothing pending, even if its report says otherwise (another revision wrote it).
            if started_now or (was_running and not pending and not report.started):
                self.cluster.report(
                    started=True, running_members=plan.members, restart_wanted=False
                )
            self.cluster.report_health(pending)
            if restore.pauses_schedule:
                return  # the restore decides when nodes stop and start
            self.refresh.take_turn()  # resign if this unit's pod is refreshed next
            if self.unit.is_leader():
                self.cluster.schedule()  # react to this unit's own report at once
                self.refresh.coordinate(busy=self._refresh_must_wait_for())
                self.certificates.coordinate(ca)
            plan = self.state.cluster_plan()
            if pending and plan.restart_grant == self.unit.name:
                self.cluster.restart_in_turn(plan.members)
                self.cluster.report_health(bool(self.node.restart_pending))
                if self.unit.is_leader():
                    self.cluster.schedule()  # release the grant if this node is back in sync
        except WorkloadUserMissingError:
            return  # the status path names what the image lacks
        self.unit.set_ports(paths.HTTP_PORT)
        if self.unit.is_leader() and chosen and self.security.rotation_pending(passwords, chosen):
            if self.refresh.in_progress():
                self._problems.append(
                    ops.WaitingStatus("password rotation deferred until the refresh completes")
                )
            else:
                self._rotate_passwords(chosen)
        if self.unit.is_leader():
            self._publish_cos_app_data(config, ca)
            self.clients.reconcile(event)

    def _refresh_must_wait_for(self) -> str | None:
        """Why no pod may be replaced now for a refresh: another node is restarting."""
        grant = self.state.cluster_plan().restart_grant
        return f"{grant} is restarting" if grant else None

    def _forward_logs_and_publish_address(self, event: ops.EventBase) -> None:
        """Every unit: its scrape address, and its logs to every related Loki."""
        self.metrics.publish_unit_address(self.identity.pod_fqdn)
        if self.node.workload.can_connect():
            broken = event.relation if isinstance(event, ops.RelationBrokenEvent) else None
            self.node.workload.apply_log_targets(
                self.logs.endpoints(exclude=broken), self.topology.labels()
            )

    def _publish_cos_app_data(self, config: CharmConfig, ca: KeyPair) -> None:
        """Leader: scrape job, dashboards, Loki metadata; each only where related.

        The scrape job has no credentials (every node serves /metrics anonymously). The
        scrape user an earlier revision created goes once the refresh is over: until then
        nodes not yet refreshed want it, so the job that logs in as it stays too.
        """
        self.dashboards.publish()
        self.logs.publish_app()
        if self.security.has_leftover_scrape_user() and self.refresh.in_progress():
            return
        if self.metrics.relations:
            roots = self.certificates.trusted_roots_pem(ca) or ca.certificate
            self.metrics.publish_app(roots, config.scrape_interval)
        self.security.remove_leftover_scrape_user(self._admin_client_now)

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
        """Hand leadership over and let the others catch up: once per teardown, bounded."""
        # A stop alone means the pod is being deleted and Kubernetes kills it soon; in a
        # scale-down the first teardown hook comes well before that.
        budget = STOP_DEADLINE if isinstance(event, ops.StopEvent) else LEAVE_BUDGET
        deadline = time.monotonic() + budget
        if isinstance(event, ops.StopEvent):
            self.refresh.on_stop()  # a refresh replacing this pod: hold the others back
        if self.node.workload.can_connect() and self.node.workload.is_running():
            self.cluster.leave_once(deadline)

    # --- status ---------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        for problem in [
            *self._problems,
            *self.backups.statuses(),
            *self.refresh.unit_statuses(),
            *self.certificates.unit_statuses(),
        ]:
            event.add_status(problem)
        # Lasting problems are found here, whatever event ran (actions and teardown hooks
        # included), so the same state always shows the same status.
        for error in self.options.errors():
            event.add_status(ops.BlockedStatus(error.message))
        if image_problem := self.image.problem():
            event.add_status(ops.BlockedStatus(image_problem))
        try:
            self._add_unit_status(event)
        except SecretUnavailableError as e:
            event.add_status(ops.WaitingStatus(f"{e}; will retry"))
        except ops.pebble.Error as e:
            event.add_status(ops.WaitingStatus(describe_pebble_error(e)[0]))

    def _add_unit_status(self, event: ops.CollectStatusEvent) -> None:
        if self.cluster.leaving:
            # A teardown hook: the node is going, and asking it costs time the hook lacks.
            event.add_status(ops.MaintenanceStatus("leaving the cluster"))
            return
        if self.state.peer_relation is None:
            event.add_status(ops.WaitingStatus("waiting for the peer relation"))
            return
        if self.state.internal_ca() is None or self.state.system_passwords() is None:
            event.add_status(ops.WaitingStatus("waiting for the leader to create credentials"))
            return
        if not self.node.workload.can_connect():
            event.add_status(ops.WaitingStatus("waiting for Pebble in the kurrentdb container"))
            return
        if not self.model.storages.get("data"):
            event.add_status(ops.WaitingStatus("waiting for the data volume"))
            return
        plan, report = self.state.cluster_plan(), self.state.own_report()
        pending = self.node.restart_pending
        if pending is None:  # configure did not run in this hook: as last reported
            pending = report.restart_wanted
        waiting = unit_waiting_status(
            self.unit.name, plan, self.state.unit_reports(), report, pending
        )
        if waiting is not None:
            event.add_status(waiting)  # outranks "not running yet", added next if so
        service = self.node.workload.service_state()
        if service == ServiceState.BACKOFF:
            event.add_status(
                ops.BlockedStatus(
                    "KurrentDB exits right after starting; Pebble retries with back-off: "
                    f"see kubectl logs {self.identity.pod_name} -c {paths.CONTAINER}"
                )
            )
            return
        if service != ServiceState.RUNNING:
            try:
                self.node.workload.workload_uid_gid()
            except WorkloadUserMissingError as e:
                event.add_status(ops.BlockedStatus(str(e)))
            event.add_status(ops.WaitingStatus("KurrentDB is not running yet"))
            return
        health = self.cluster.health()
        if health.info is None:
            event.add_status(ops.WaitingStatus(health.problem or "KurrentDB is not answering"))
            return
        self.unit.set_workload_version(health.info.db_version)
        if level := self.node.log_level_not_taken:
            event.add_status(
                ops.WaitingStatus(
                    f"KurrentDB has not applied log level {level} yet; the next hook signals again"
                )
            )
        if health.serving:
            event.add_status(ops.ActiveStatus(health.info.state))
        else:
            event.add_status(ops.WaitingStatus(f"KurrentDB node is {health.info.state}"))

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        if self.unit.is_leader() and self.state.peer_relation is not None:
            if (refreshing := self.refresh.app_status()) is not None:
                event.add_status(refreshing)
                return
            if (switching := self.certificates.app_status()) is not None:
                event.add_status(switching)
                return
            status = app_status(self.state.cluster_plan(), self.state.unit_reports())
            if isinstance(status, ops.ActiveStatus) and (note := self.backups.app_note()):
                status = ops.ActiveStatus(f"{status.message}; {note}")
            event.add_status(status)

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
        from kurrentdb_api import KurrentDBClient, basic_token

        roots = self.certificates.trusted_roots_pem(self.state.internal_ca())
        # An answer echoing a system user's password (a proxy, a bug) is redacted here too.
        passwords = self.state.system_passwords()
        known = passwords.current.items() if passwords else ()
        redact = tuple(p for u, pw in known for p in (pw, basic_token(u, pw)))
        return KurrentDBClient(self.api_url, ca_pem=roots, timeout=3.0, redact_also=redact)

    def _admin_client_now(self) -> KurrentDBClient:
        passwords = self.state.system_passwords()
        return self._admin_client(passwords.current["admin"] if passwords else "")

    def _admin_client(self, admin_password: str) -> KurrentDBClient:
        from kurrentdb_api import KurrentDBClient

        return KurrentDBClient(
            self.api_url,
            ca_pem=self.certificates.trusted_roots_pem(self.state.internal_ca()),
            username="admin",
            password=admin_password,
            timeout=5.0,
        )


if __name__ == "__main__":  # pragma: nocover
    ops.main(KurrentDBCharm)
