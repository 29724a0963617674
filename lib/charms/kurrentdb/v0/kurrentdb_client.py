"""Requirer side of the kurrentdb charm's `database` relation (interface `kurrentdb_client`).

A client charm asks for a KurrentDB user and gets endpoints, credentials and the CA to trust:

```yaml
# charmcraft.yaml of the client
requires:
  database:
    interface: kurrentdb_client
    limit: 1
```

```python
from charms.kurrentdb.v0.kurrentdb_client import KurrentDBRequires

class MyCharm(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        self.kurrentdb = KurrentDBRequires(self, extra_user_roles="ops")
        for event in self.kurrentdb.on.events().values():  # ready, changed, lost
            framework.observe(event, self._configure)
        framework.observe(self.on.collect_unit_status, self._status)

    def _configure(self, event):
        if connection := self.kurrentdb.connection():
            container.push("/etc/app/kurrentdb-ca.pem", connection.ca_pem)
            uri = connection.connection_string(ca_file="/etc/app/kurrentdb-ca.pem")
            ...  # configure the workload with uri

    def _status(self, event):
        if not self.kurrentdb.connection():  # not there yet, gone, or refused: say why
            for status in self.kurrentdb.statuses():  # e.g. 5001: extra_user_roles refused
                event.add_status(ops.BlockedStatus(f"kurrentdb: {status.message}"))
            event.add_status(ops.WaitingStatus("waiting for kurrentdb"))
```

The events carry only the relation, never credentials (a deferred event is stored on disk).
`connection_ready` comes once per relation and unit, when endpoints, credentials and CA are
all there; `connection_changed` when one of them changes afterwards (password rotation, CA
switch, scaling); `connection_lost` when a relation that was ready is broken.

`resource` names the application's data (default: the app name); `extra_user_roles` asks for
KurrentDB groups (`admin`, `ops` or named groups). Both are sent once, when the relation is
created (the provider refuses a changed request): re-relate to change them. Any KurrentDB user
can read and write every non-`$` stream: `resource` is a label, not an isolation boundary.

Everything the provider sends is checked: anything malformed gives `connection() -> None`,
never an exception in a hook nor a half-filled connection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import warnings
from urllib.parse import quote

import ops
from cryptography import x509  # a dependency of dpcharmlibs-interfaces
from cryptography.hazmat.primitives.serialization import Encoding

with warnings.catch_warnings():
    # dpcharmlibs-interfaces 1.2.2's models make pydantic >= 2.12 warn at import time about
    # its own field declarations; nothing a client can act on, and fatal under `-W error`.
    warnings.filterwarnings(
        "ignore", message=r".*was provided to the `Field\(\)` function", category=UserWarning
    )
    from dpcharmlibs.interfaces import (
        OpsRelationRepository,
        RelationStatus,
        RequirerCommonModel,
        RequirerDataContractV1,
        ResourceProviderModel,
        gen_hash,
        write_model,
    )

LIBID = "f23a1714246b4aaf8cadcf053d8e8d11"
LIBAPI = 0
LIBPATCH = 1
PYDEPS = ["dpcharmlibs-interfaces>=1.2.2,<2"]

logger = logging.getLogger(__name__)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ENDPOINT = re.compile(rf"(?=[^:]{{1,253}}:){_LABEL}(?:\.{_LABEL})*:(?P<port>[0-9]{{1,5}})")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")


class _UnusableError(ValueError):
    """The provider's data is there but wrong; the message names the field, never a value."""


@dataclasses.dataclass(frozen=True)
class KurrentDBConnection:
    """What a client needs to reach KurrentDB. The password stays out of `repr`."""

    endpoints: tuple[str, ...]  # host:port of every node: gossip seeds for the client
    username: str
    password: str = dataclasses.field(repr=False)
    ca_pem: str  # the root CA(s) the nodes' certificates chain to; always there (TLS only)
    version: str | None
    resource: str

    def connection_string(self, ca_file: str | None = None) -> str:
        """The official clients' connection string; `ca_file` is where `ca_pem` was written."""
        credentials = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}"
        uri = f"kurrentdb://{credentials}@{','.join(self.endpoints)}?tls=true&tlsVerifyCert=true"
        return uri + (f"&tlsCaFile={quote(ca_file, safe='')}" if ca_file else "")

    def _fingerprint(self) -> str:
        # Kept in the unit's stored state to tell "changed" from "same": a hash, so the state
        # never holds the password (32 random characters from the provider: not guessable).
        fields = [list(self.endpoints), self.username, self.password, self.ca_pem]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class ConnectionReadyEvent(ops.RelationEvent):
    """Endpoints, credentials and CA are all there for the first time on this relation."""


class ConnectionChangedEvent(ops.RelationEvent):
    """Endpoints, credentials or CA changed since the connection was ready."""


class ConnectionLostEvent(ops.RelationEvent):
    """A relation whose connection was ready is broken."""


class KurrentDBRequirerEvents(ops.ObjectEvents):
    """Events of `KurrentDBRequires`."""

    connection_ready = ops.EventSource(ConnectionReadyEvent)
    connection_changed = ops.EventSource(ConnectionChangedEvent)
    connection_lost = ops.EventSource(ConnectionLostEvent)


class KurrentDBRequires(ops.Object):
    """Sends the request (data_interfaces v1) and turns the provider's answer into events."""

    on = KurrentDBRequirerEvents()
    _stored = ops.StoredState()

    def __init__(
        self,
        charm: ops.CharmBase,
        relation_name: str = "database",
        resource: str | None = None,
        extra_user_roles: str | None = None,
    ) -> None:
        super().__init__(charm, relation_name)
        self.relation_name = relation_name
        self.resource = resource or charm.app.name
        self.extra_user_roles = extra_user_roles
        self._stored.set_default(fingerprints={})  # relation id -> last announced connection
        events = charm.on[relation_name]
        # The request is sent when the relation is created, and by a later leader if the one
        # then had not (or the charm adopted this library on an existing relation).
        for event in (events.relation_created, charm.on.leader_elected, charm.on.upgrade_charm):
            self.framework.observe(event, self._send_requests)
        self.framework.observe(events.relation_changed, self._on_changed)
        # Any secret: rotation changes secret content without touching relation data.
        self.framework.observe(charm.on.secret_changed, self._on_changed)
        self.framework.observe(events.relation_broken, self._on_broken)

    def connection(self, relation: ops.Relation | None = None) -> KurrentDBConnection | None:
        """The connection on `relation` (default: the endpoint's first), or None if unusable."""
        relation = relation or self._first_relation()
        if relation is None or not relation.active or relation.app is None:
            return None
        try:
            return self._read(relation, relation.app)
        except (ValueError, TypeError, ops.ModelError) as e:
            # Only our own reasons are logged as text: pydantic's messages quote the input.
            reason = str(e) if isinstance(e, _UnusableError) else type(e).__name__
            logger.warning("kurrentdb relation %d: unusable data (%s)", relation.id, reason)
            return None

    def statuses(self, relation: ops.Relation | None = None) -> list[RelationStatus]:
        """The provider's statuses on `relation` (code, message, resolution): why no connection.

        4001: the user is not created yet; 5001: `extra_user_roles` refused; 5002: bad request.
        """
        relation = relation or self._first_relation()
        if relation is None or relation.app is None:
            return []
        try:
            raw = json.loads(relation.data[relation.app].get("status", "[]"))
        except ValueError:
            return []
        if not isinstance(raw, list):
            return []
        found = []
        for item in raw:
            try:
                found.append(RelationStatus.model_validate(item))
            except ValueError:  # pydantic's ValidationError; one bad entry hides no other
                continue
        return found

    def _send_requests(self, _: ops.EventBase) -> None:
        if not self.model.unit.is_leader():
            return
        for relation in self.model.relations[self.relation_name]:
            if relation.data[self.model.app].get("requests"):
                continue  # never rewritten: the provider refuses a changed request
            request = RequirerCommonModel(
                resource=self.resource, extra_user_roles=self.extra_user_roles
            )
            request.request_id = gen_hash(request.resource, request.salt)
            contract = RequirerDataContractV1[RequirerCommonModel](requests=[request])
            write_model(OpsRelationRepository(self.model, relation, self.model.app), contract)

    def _on_changed(self, event: ops.EventBase) -> None:
        if isinstance(event, ops.RelationChangedEvent):
            self._send_requests(event)
        fingerprints = self._stored.fingerprints
        for relation in self.model.relations[self.relation_name]:
            connection = self.connection(relation)
            if connection is None:
                continue  # keep the last good one: a client may go on using it
            old, new = fingerprints.get(str(relation.id)), connection._fingerprint()
            if old == new:
                continue
            fingerprints[str(relation.id)] = new
            ready = old is None
            source = self.on.connection_ready if ready else self.on.connection_changed
            source.emit(relation, app=relation.app)

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        if self._stored.fingerprints.pop(str(event.relation.id), None) is not None:
            self.on.connection_lost.emit(event.relation, app=event.app)

    def _first_relation(self) -> ops.Relation | None:
        return next(iter(self.model.relations[self.relation_name]), None)

    def _read(self, relation: ops.Relation, app: ops.Application) -> KurrentDBConnection | None:
        entries = json.loads(relation.data[app].get("requests", "[]"))
        mine = [e for e in entries if isinstance(e, dict) and e.get("resource") == self.resource]
        if not mine or "secret-user" not in mine[0]:
            return None  # no answer yet, or refused (see statuses())
        response = ResourceProviderModel.model_validate(mine[0])  # reads no secret
        user = self._secret(response.secret_user)
        username, password = user.get("username", ""), user.get("password", "")
        endpoints = tuple((response.endpoints or "").split(","))
        if not all((m := _ENDPOINT.fullmatch(e)) and 0 < int(m["port"]) < 65536 for e in endpoints):
            raise _UnusableError("endpoints")
        if not (re.fullmatch(r"[^\s:]{1,256}", username) and username.isprintable()):
            raise _UnusableError("username")
        if not (0 < len(password) <= 1024 and password.isprintable()):
            raise _UnusableError("password")
        try:
            pem = self._secret(response.secret_tls).get("tls-ca", "")
            certificates = x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            raise _UnusableError("tls-ca") from None
        # Re-encoded from the parsed certificates: only certificates reach the client's file.
        ca_pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in certificates)
        version = response.version if _VERSION.fullmatch(response.version or "") else None
        return KurrentDBConnection(endpoints, username, password, ca_pem, version, self.resource)

    def _secret(self, uri: str | None) -> dict[str, str]:
        if not uri:
            return {}
        # refresh: a rotated password is the latest revision, and this unit then tracks it.
        return self.model.get_secret(id=uri).get_content(refresh=True)
