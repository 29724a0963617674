"""Security material: the internal CA, node certificates and system users' passwords.

The leader creates the app-wide material (CA, passwords) once; every unit keeps its own
node certificate current (right SANs, signed by the current CA, not close to expiry).
"""

from __future__ import annotations

import hashlib
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


class Security:
    """Creates and renews the charm's TLS material and credentials."""

    def __init__(self, model: ops.Model, state: CharmState, stored: ops.framework.BoundStoredState):
        self._model = model
        self._state = state
        self._stored = stored
        self._stored.set_default(scrape_user_applied="")

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

    def scrape_user_password(
        self, login: str, full_name: str, client: Callable[[], KurrentDBClient]
    ) -> str | None:
        """Leader: the password of the user Prometheus scrapes as, once that user exists.

        The password lives in an app secret; the user is created (or its password reset)
        through the users API whenever the stored password is not the one last applied.
        Returns None while KurrentDB cannot be reached.
        """
        from kurrentdb_api import KurrentDBError

        password = self._state.metrics_password()
        if password is None:
            password = credentials.generate_password()
            self._state.save_metrics_password(password)
        applied = hashlib.sha256(f"{login}:{password}".encode()).hexdigest()
        if applied == self._stored.scrape_user_applied:
            return password
        try:
            credentials.ensure_user(client(), login, full_name, password)
        except KurrentDBError as e:
            logger.warning("Cannot create the KurrentDB user %r yet: %s", login, e)
            return None
        self._stored.scrape_user_applied = applied
        return password

    @staticmethod
    def rotation_pending(passwords: SystemPasswords, wanted: Mapping[str, str]) -> bool:
        """Whether some chosen password differs from the one KurrentDB has."""
        return any(passwords.current[user] != pw for user, pw in wanted.items())
