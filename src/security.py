"""Security material: the internal CA, node certificates and system users' passwords.

The leader creates the app-wide material (CA, passwords) once; every unit keeps its own
node certificate current (right SANs, signed by the current CA, not close to expiry).
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
            logger.info("Creating the system users' passwords")
            self._state.save_system_passwords(credentials.initial_passwords(chosen_passwords))

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

    @staticmethod
    def rotation_pending(passwords: SystemPasswords, wanted: Mapping[str, str]) -> bool:
        """Whether some chosen password differs from the one KurrentDB has."""
        return any(passwords.current[user] != pw for user, pw in wanted.items())
