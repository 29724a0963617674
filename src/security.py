"""Security material: the internal CA, node certificates and system users' passwords.

The leader creates the app-wide material (CA, passwords) once; every unit keeps its own
node certificate current (right SANs, signed by the current CA, not close to expiry).
It also deletes the Prometheus scrape user earlier revisions created, whose password was
in plain relation data (docs/explanation/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import ops

import credentials
import tls
from state import CharmState, SystemPasswords
from workload.render import NodeIdentity

if TYPE_CHECKING:
    from kurrentdb_api import KurrentDBClient

logger = logging.getLogger(__name__)

# The KurrentDB user earlier revisions made Prometheus scrape as. With KurrentDB's default
# stream ACLs any authenticated user may read, write and delete every user stream, and its
# password was in the metrics-endpoint relation data; /metrics needs no user now.
LEFTOVER_SCRAPE_USER = "charm-metrics"


class Security:
    """Creates and renews the charm's TLS material and credentials."""

    def __init__(self, model: ops.Model, state: CharmState):
        self._model = model
        self._state = state

    def ensure_app_material(self, chosen_passwords: Mapping[str, str]) -> None:
        """Leader only: create the internal CA and the system passwords if missing."""
        if not self._model.unit.is_leader() or self._state.peer_relation is None:
            return
        if self._state.internal_ca() is None:
            logger.info("Creating the internal certificate authority")
            self._state.save_internal_ca(tls.generate_ca())
        if self._state.system_passwords() is None:
            # Passwords an incomplete secret still holds are what KurrentDB has: they win
            # over the chosen ones, which a rotation applies afterwards.
            known = self._state.known_passwords()
            logger.info("Creating the system users' passwords" + (" again" if known else ""))
            self._state.save_system_passwords(
                credentials.initial_passwords({**chosen_passwords, **known})
            )

    def node_certificate(self, ca: tls.KeyPair, node: NodeIdentity) -> tls.NodeCertificate:
        """This unit's node certificate, (re)issued when it no longer fits."""
        sans = node.sans()
        current = self._state.node_certificate()
        if current is not None and not current.needs_reissue(sans, ca.certificate, tls.utcnow()):
            return current
        logger.info("Issuing the node certificate for %s", node.pod_fqdn)
        issued = tls.issue_node_certificate(ca, sans)
        self._state.save_node_certificate(issued)
        return issued

    def rotate_passwords(
        self,
        passwords: SystemPasswords,
        wanted: Mapping[str, str],
        client_for: Callable[[str], KurrentDBClient],
    ) -> SystemPasswords:
        """Leader only: apply the passwords the user chose in `system-users`."""
        return credentials.rotate_passwords(
            passwords, wanted, client_for, self._state.save_system_passwords
        )

    def has_leftover_scrape_user(self) -> bool:
        """Whether an earlier revision's scrape user may still exist (peer data only)."""
        return self._state.has_metrics_secret()

    def remove_leftover_scrape_user(self, client: Callable[[], KurrentDBClient]) -> None:
        """Leader: delete the scrape user an earlier revision created, then its secret.

        Once: the peer data records that secret until both are gone, and nothing else is
        asked while it does not (no hook-tool call, no request). The user already gone
        (404) counts as deleted. A KurrentDB that does not answer, or refuses, leaves both
        for a later hook; nothing here fails a hook.
        """
        if not self.has_leftover_scrape_user():
            return
        from kurrentdb_api import KurrentDBError, KurrentDBNotFound

        try:
            client().delete_user(LEFTOVER_SCRAPE_USER)
            logger.info("Deleted the KurrentDB user %r: /metrics needs none", LEFTOVER_SCRAPE_USER)
        except KurrentDBNotFound:
            pass
        except KurrentDBError as e:
            logger.warning(
                "Cannot delete the KurrentDB user %r yet (a later hook retries): %s",
                LEFTOVER_SCRAPE_USER,
                e,
            )
            return
        try:
            self._state.remove_metrics_secret()
        except ops.ModelError as e:
            logger.warning(
                "Cannot remove the former scrape user's secret yet (a later hook retries): %s",
                type(e).__name__,
            )

    @staticmethod
    def rotation_pending(passwords: SystemPasswords, wanted: Mapping[str, str]) -> bool:
        """Whether some chosen password differs from the one KurrentDB has."""
        return any(passwords.current[user] != pw for user, pw in wanted.items())
