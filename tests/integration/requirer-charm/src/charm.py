#!/usr/bin/env python3
"""Test charm: a client of the kurrentdb charm's `database` relation (integration tests only)."""

from __future__ import annotations

import logging

import ops
from charms.kurrentdb.v0.kurrentdb_client import KurrentDBRequires

logger = logging.getLogger(__name__)


class KurrentDBRequirerCharm(ops.CharmBase):
    """Requests a user for resource `orders`; reports the connection in status and an action."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        roles = str(self.config.get("roles", "")).strip()
        self.kurrentdb = KurrentDBRequires(
            self, "database", resource="orders", extra_user_roles=roles or None
        )
        for event in self.kurrentdb.on.events().values():  # ready, changed, lost
            framework.observe(event, self._log_event)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.get_connection_action, self._on_get_connection)

    def _log_event(self, event: ops.EventBase) -> None:
        logger.info("kurrentdb: %s", type(event).__name__)

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        if connection := self.kurrentdb.connection():
            event.add_status(
                ops.ActiveStatus(f"connected to {len(connection.endpoints)} endpoints")
            )
            return
        if not self.model.relations["database"]:
            event.add_status(ops.BlockedStatus("needs a database relation"))
            return
        for status in self.kurrentdb.statuses():
            if status.is_fatal:  # 5001 (role refused), 5002 (bad request)
                event.add_status(ops.BlockedStatus(f"kurrentdb {status.code}: {status.message}"))
        event.add_status(ops.WaitingStatus("waiting for kurrentdb"))

    def _on_get_connection(self, event: ops.ActionEvent) -> None:
        connection = self.kurrentdb.connection()
        if connection is None:
            event.fail("no usable connection from kurrentdb yet")
            return
        event.set_results(
            {
                "uri": connection.connection_string(),
                "username": connection.username,
                "password": connection.password,
                "ca": connection.ca_pem,
                "endpoints": ",".join(connection.endpoints),
            }
        )


if __name__ == "__main__":  # pragma: nocover
    ops.main(KurrentDBRequirerCharm)
