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
from config import CharmConfig, ConfigError, parse_config
from node import Node, NodeHealth
from security import Security
from state import PEER_RELATION, SYSTEM_USERS, CharmState
from workload import paths
from workload.kurrentdb import KurrentDBWorkload, WorkloadUserMissingError
from workload.render import NodeIdentity

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
        self.security = Security(self.model, self.state)
        self.node = Node(KurrentDBWorkload(self.unit.get_container(paths.CONTAINER)), self._stored)
        # Problems found while reconciling, shown by the status path in the same hook.
        self._problems: list[ops.StatusBase] = []
        self._health: NodeHealth | None = None

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
            peers.relation_changed,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.get_password_action, self._on_get_password_action)

    # --- reconcile ------------------------------------------------------------------------

    def _reconcile(self, _: ops.EventBase) -> None:
        config = self._effective_config()
        if config is None:
            return
        chosen = self._chosen_passwords(config)
        self.security.ensure_app_material(chosen or {})
        ca, passwords = self.state.internal_ca(), self.state.system_passwords()
        if ca is None or passwords is None or not self.node.workload.can_connect():
            return  # the status path says what is missing
        identity = self._identity()
        certificate = self.security.node_certificate(ca, identity)
        try:
            self.node.configure(config, identity, ca, certificate, passwords)
        except WorkloadUserMissingError as e:
            self._problems.append(ops.BlockedStatus(str(e)))
            return
        except (ops.pebble.ExecError, ops.pebble.ChangeError, ops.pebble.APIError) as e:
            logger.error("Configuring KurrentDB failed: %s", e)
            self._problems.append(ops.WaitingStatus("configuring KurrentDB failed; will retry"))
            return
        self.unit.set_ports(paths.HTTP_PORT)
        if self.unit.is_leader() and chosen and self.security.rotation_pending(passwords, chosen):
            self._rotate_passwords(chosen)

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
        if not self.node.workload.is_running():
            event.add_status(ops.WaitingStatus("KurrentDB is not running yet"))
            return
        health = self._node_health()
        if health.info is None:
            event.add_status(ops.WaitingStatus(f"KurrentDB is not answering: {health.problem}"))
            return
        self.unit.set_workload_version(health.info.db_version)
        if health.serving:
            event.add_status(ops.ActiveStatus(health.info.state))
        else:
            event.add_status(ops.WaitingStatus(f"KurrentDB node is {health.info.state}"))

    def _node_health(self) -> NodeHealth:
        if self._health is None:
            self._health = self.node.health(self._anonymous_client())
        return self._health

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

    # --- helpers --------------------------------------------------------------------------

    def _identity(self) -> NodeIdentity:
        return NodeIdentity(
            app=self.app.name,
            unit_number=int(self.unit.name.split("/")[1]),
            model=self.model.name,
        )

    def _anonymous_client(self) -> KurrentDBClient:
        from kurrentdb_api import KurrentDBClient

        ca = self.state.internal_ca()
        return KurrentDBClient(self.api_url, ca_pem=ca.certificate if ca else None, timeout=3.0)

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
