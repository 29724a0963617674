"""Where the charm keeps what it must remember: Juju secrets and the peer relation.

- the internal CA (cert + key) in an app secret, created by the leader;
- the system users' passwords in an app secret, created by the leader;
- each unit's node certificate in a secret owned by that unit.

Earlier revisions also kept the password of a Prometheus scrape user in an app secret
(`metrics-secret-id`); the leader removes it once that user is deleted (`Security`).

App secrets are readable by every unit of the app, but only the leader knows their IDs at
creation, so the leader publishes them in the peer relation's app databag.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ops

from cluster import ClusterPlan, UnitReport
from databag import update_databag
from tls import KeyPair, NodeCertificate

logger = logging.getLogger(__name__)

PEER_RELATION = "kurrentdb-peers"
_CA_SECRET_KEY = "ca-secret-id"  # noqa: S105 - a databag key, not a secret
_PASSWORDS_SECRET_KEY = "passwords-secret-id"  # noqa: S105 - a databag key
# Earlier revisions' scrape user password: only ever removed now.
_METRICS_SECRET_KEY = "metrics-secret-id"  # noqa: S105 - a databag key
_LAST_GOOD_CONFIG_KEY = "last-good-config"
_NODE_CERT_LABEL = "node-certificate"
SYSTEM_USERS = ("admin", "ops")
# A secret read that fails for another reason than "not found" is tried this many times,
# this far apart, before the hook gives up on it (and a later hook tries again).
SECRET_READ_ATTEMPTS = 3
SECRET_RETRY_DELAY = 1.0
_T = TypeVar("_T")


class SecretUnavailableError(Exception):
    """A secret that exists could not be read now (a controller or hook-tool error).

    Never read as "absent": material is created only when no secret exists, so a
    transient error can never replace the CA or the passwords.
    """

    def __init__(self, what: str, error: Exception):
        super().__init__(f"cannot read the {what} secret now ({type(error).__name__})")
        self.what = what


@dataclass(frozen=True)
class SystemPasswords:
    """The `admin` and `ops` passwords: the current ones and the ones KurrentDB started with.

    KurrentDB only reads its initial passwords when it first creates the users; changing
    them later would restart the node for nothing, so they stay fixed while `current`
    follows rotations.
    """

    current: dict[str, str]
    initial: dict[str, str]

    def to_content(self) -> dict[str, str]:
        """Secret content (keys must be lower-case words joined by dashes)."""
        content = {f"{user}-password": pw for user, pw in self.current.items()}
        content.update({f"{user}-initial-password": pw for user, pw in self.initial.items()})
        return content

    @classmethod
    def from_content(cls, content: dict[str, str]) -> SystemPasswords | None:
        """Read the secret's content; None if some user has no password in it at all.

        A missing current or initial password is taken from the other one: the secret may
        have been written by another charm revision, or edited.
        """
        current, initial = {}, {}
        for user in SYSTEM_USERS:
            now = content.get(f"{user}-password") or content.get(f"{user}-initial-password")
            if not now:
                return None
            current[user] = now
            initial[user] = content.get(f"{user}-initial-password") or now
        return cls(current=current, initial=initial)

    @staticmethod
    def known_in(content: dict[str, str] | None) -> dict[str, str]:
        """Whatever password each user has in a secret that is incomplete."""
        found = {}
        for user in SYSTEM_USERS:
            password = (content or {}).get(f"{user}-password") or (content or {}).get(
                f"{user}-initial-password"
            )
            if password:
                found[user] = password
        return found

    def with_password(self, user: str, password: str) -> SystemPasswords:
        """A copy in which `user`'s current password is `password`."""
        return SystemPasswords(current={**self.current, user: password}, initial=self.initial)


class CharmState:
    """Typed access to the secrets and peer data the charm keeps."""

    def __init__(self, model: ops.Model):
        self._model = model
        # Secret contents read in this hook: each read is a hook-tool call, and the charm
        # asks for the CA and passwords several times per hook.
        self._secret_cache: dict[str, dict[str, str]] = {}

    @property
    def peer_relation(self) -> ops.Relation | None:
        """The peer relation, once Juju has created it."""
        return self._model.get_relation(PEER_RELATION)

    # --- internal CA (app secret) ---------------------------------------------------------

    def internal_ca(self) -> KeyPair | None:
        """The internal CA, once the leader has created it."""
        content = self._app_secret_content(_CA_SECRET_KEY)
        if content is None:
            return None
        if not content.get("certificate") or not content.get("private-key"):
            # Without both, it can neither sign nor be trusted: the leader replaces it.
            logger.error("The internal CA secret is incomplete")
            return None
        return KeyPair(certificate=content["certificate"], private_key=content["private-key"])

    def save_internal_ca(self, ca: KeyPair) -> None:
        """Store a new internal CA (leader only)."""
        self._save_app_secret(
            _CA_SECRET_KEY,
            {"certificate": ca.certificate, "private-key": ca.private_key},
            description="KurrentDB internal certificate authority",
        )

    # --- system users' passwords (app secret) ---------------------------------------------

    def system_passwords(self) -> SystemPasswords | None:
        """The system users' passwords, once the leader has generated them."""
        content = self._app_secret_content(_PASSWORDS_SECRET_KEY)
        return None if content is None else SystemPasswords.from_content(content)

    def known_passwords(self) -> dict[str, str]:
        """The passwords an incomplete system users' secret still holds (for its repair)."""
        return SystemPasswords.known_in(self._app_secret_content(_PASSWORDS_SECRET_KEY))

    def save_system_passwords(self, passwords: SystemPasswords) -> None:
        """Store the system users' passwords (leader only)."""
        self._save_app_secret(
            _PASSWORDS_SECRET_KEY,
            passwords.to_content(),
            description="KurrentDB system users' passwords",
        )

    # --- the scrape user's password an earlier revision kept (app secret) ------------------

    def has_metrics_secret(self) -> bool:
        """Whether the peer data still records an earlier revision's scrape user secret."""
        relation = self.peer_relation
        data = relation.data[self._model.app] if relation is not None else {}
        return bool(data.get(_METRICS_SECRET_KEY))

    def remove_metrics_secret(self) -> None:
        """Leader: remove that secret (every revision), then its record in the peer data.

        Found by its label, which only that secret has: whatever the record says, no other
        secret can be removed. One already gone counts as removed; any other error
        (ops.ModelError) leaves the record, so a later hook tries again.
        """
        relation = self.peer_relation
        if relation is None:
            return
        try:
            self._model.get_secret(label=_label(_METRICS_SECRET_KEY)).remove_all_revisions()
            logger.info("Removed the secret of the former Prometheus scrape user")
        except ops.SecretNotFoundError:
            pass
        update_databag(relation.data[self._model.app], {_METRICS_SECRET_KEY: ""})

    # --- this unit's node certificate (unit secret) ---------------------------------------

    def node_certificate(self) -> NodeCertificate | None:
        """This unit's node certificate; None when it has none (or an unusable one)."""
        try:
            content = _read_secret(
                "node certificate",
                lambda: self._model.get_secret(label=_NODE_CERT_LABEL).get_content(refresh=True),
            )
        except ops.SecretNotFoundError:
            return None
        try:
            return NodeCertificate(
                certificate=content["certificate"],
                private_key=content["private-key"],
                sans=tuple(content["sans"].split(",")),
                ca_fingerprint=content["ca-fingerprint"],
                not_after=datetime.datetime.fromisoformat(content["not-after"]),
            )
        except (KeyError, ValueError, AttributeError):
            # This unit's own secret, so reissuing into it loses nothing.
            logger.warning("The node certificate secret is incomplete; issuing a new one")
            return None

    def save_node_certificate(self, cert: NodeCertificate) -> None:
        """Store this unit's node certificate."""
        content = {
            "certificate": cert.certificate,
            "private-key": cert.private_key,
            "sans": ",".join(cert.sans),
            "ca-fingerprint": cert.ca_fingerprint,
            "not-after": cert.not_after.isoformat(),
        }
        try:
            self._model.get_secret(label=_NODE_CERT_LABEL).set_content(content)
        except ops.SecretNotFoundError:
            self._model.unit.add_secret(
                content, label=_NODE_CERT_LABEL, description="KurrentDB node certificate"
            )

    # --- the last configuration that was valid (peer app data) ----------------------------

    def last_good_config(self) -> dict[str, Any] | None:
        """What the leader last recorded as valid config; None if nothing usable is there.

        Kept in the peer relation, not in stored state: a new pod (deleted, evicted,
        refreshed) must still start KurrentDB on it while the current config is invalid.
        """
        relation = self.peer_relation
        raw = relation.data[self._model.app].get(_LAST_GOOD_CONFIG_KEY) if relation else None
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def save_last_good_config(self, config: dict[str, Any]) -> None:
        """Leader: record a configuration that was valid."""
        relation = self.peer_relation
        if relation is not None:
            text = json.dumps(config, sort_keys=True)
            update_databag(relation.data[self._model.app], {_LAST_GOOD_CONFIG_KEY: text})

    # --- cluster: each unit's report, the leader's plan ------------------------------------

    def unit_reports(self) -> dict[str, UnitReport]:
        """Every present unit's report, this unit's included."""
        relation = self.peer_relation
        if relation is None:
            return {}
        reports = {
            unit.name: UnitReport.from_databag(relation.data[unit]) for unit in relation.units
        }
        reports[self._model.unit.name] = self.own_report()
        return reports

    def own_report(self) -> UnitReport:
        """What this unit last reported."""
        relation = self.peer_relation
        if relation is None:
            return UnitReport()
        return UnitReport.from_databag(relation.data[self._model.unit])

    def save_own_report(self, report: UnitReport) -> None:
        """Publish this unit's report (only the keys that changed are written)."""
        relation = self.peer_relation
        if relation is None:
            return
        update_databag(relation.data[self._model.unit], report.to_databag())

    def cluster_plan(self) -> ClusterPlan:
        """The leader's current plan (empty before the leader wrote one)."""
        relation = self.peer_relation
        if relation is None:
            return ClusterPlan()
        return ClusterPlan.from_databag(relation.data[self._model.app])

    def save_cluster_plan(self, plan: ClusterPlan) -> None:
        """Publish the plan (leader only; only changed keys are written)."""
        relation = self.peer_relation
        if relation is None:
            return
        update_databag(relation.data[self._model.app], plan.to_databag())

    # --- helpers --------------------------------------------------------------------------

    def _app_secret_content(self, key: str) -> dict[str, str] | None:
        """The content of an app secret; None only when no such secret exists.

        Raises SecretUnavailableError when the secret exists but cannot be read now.
        """
        if key in self._secret_cache:
            return self._secret_cache[key]
        relation = self.peer_relation
        secret_id = relation.data[self._model.app].get(key) if relation is not None else None
        # The label lets a leaving unit find the secret after its peer relation is gone
        # (storage-detaching runs after relation-broken).
        label = _label(key)

        def read() -> dict[str, str]:
            if secret_id:
                secret = self._model.get_secret(id=secret_id, label=label)
            else:
                secret = self._model.get_secret(label=label)
            return secret.get_content(refresh=True)

        try:
            content = _read_secret(key.removesuffix("-secret-id"), read)
        except ops.SecretNotFoundError:
            if secret_id:
                logger.warning("The app secret recorded as %s no longer exists", key)
            return None
        self._secret_cache[key] = content
        return content

    def _save_app_secret(self, key: str, content: dict[str, str], description: str) -> None:
        relation = self.peer_relation
        if relation is None:
            raise RuntimeError("the peer relation does not exist yet")
        secret_id = relation.data[self._model.app].get(key)
        if secret_id:
            try:
                self._model.get_secret(id=secret_id).set_content(content)
                self._secret_cache[key] = dict(content)
                return
            except ops.SecretNotFoundError:
                logger.warning("Recording a new secret as %s: the old one is gone", key)
        secret = self._model.app.add_secret(content, label=_label(key), description=description)
        assert secret.id is not None
        relation.data[self._model.app][key] = secret.id
        self._secret_cache[key] = dict(content)


def _label(key: str) -> str:
    return f"kurrentdb-{key.removesuffix('-secret-id')}"


def _read_secret(what: str, read: Callable[[], _T]) -> _T:
    """Read a secret, retrying errors other than SecretNotFoundError (which propagates)."""
    for attempt in range(1, SECRET_READ_ATTEMPTS + 1):
        try:
            return read()
        except ops.SecretNotFoundError:
            raise
        except ops.ModelError as e:
            if attempt == SECRET_READ_ATTEMPTS:
                raise SecretUnavailableError(what, e) from None
            logger.warning("Reading the %s secret failed (%s); retrying", what, type(e).__name__)
            time.sleep(SECRET_RETRY_DELAY * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
