"""The clients capability: the `database` relation, a KurrentDB user per client request.

What it owns:
- the `database` relation (kurrentdb_client, data_interfaces v1 and v0 through
  dpcharmlibs' `ResourceProviderEventHandler`, built only while such a relation exists, so
  a deployment without clients never imports the library or pydantic);
- the users it made, in peer app data (`client-users`: login -> relation id), so a user is
  deleted when its relation goes even if that happens while KurrentDB is down or another
  unit leads;
- the answers: endpoints and version in plain data, the credentials and the connection
  string in `secret-user`, the CA in `secret-tls` (both app secrets the library grants to
  the relation), which also hold the password across pod recreations and leader changes;
- the relation statuses a client sees (4001 waiting, 5001 roles refused, 5002 bad request)
  and the `rotate-client-password` action.

Only the leader talks to KurrentDB's users API; the answers go out once the user exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ops

import credentials
from clients import requests
from clients.requests import ClientUser, Refusal, RefusedError
from databag import relation_library_needed

if TYPE_CHECKING:
    from certificates.capability import Certificates
    from coordinator import ClusterCoordinator
    from image import Image
    from kurrentdb_api import KurrentDBClient
    from state import CharmState

logger = logging.getLogger(__name__)

RELATION = "database"
USERS_KEY = "client-users"


class Clients(ops.Object):
    """Per-application KurrentDB users over the `database` relation."""

    def __init__(
        self,
        charm: ops.CharmBase,
        state: CharmState,
        stored: ops.framework.BoundStoredState,
        admin_client: Callable[[], KurrentDBClient],
        cluster: ClusterCoordinator,
        certificates: Certificates,
        image: Image,
    ):
        super().__init__(charm, RELATION)
        self._charm = charm
        self._state = state
        self._stored = stored
        self._stored.set_default(client_users_applied={}, client_answered={})
        self._passwords = _Passwords(charm.model)
        self._admin_client = admin_client
        self._cluster, self._certificates, self._image = cluster, certificates, image
        self._provider: Any = None
        if relation_library_needed(charm.model, RELATION):
            self._provider = _build_provider(charm)
        charm.framework.observe(
            charm.on.rotate_client_password_action, self._on_rotate_client_password
        )

    @property
    def events(self) -> tuple[ops.BoundEvent, ...]:
        """The events on which the charm must reconcile for this capability."""
        endpoint = self._charm.on[RELATION]
        return endpoint.relation_changed, endpoint.relation_broken

    # --- the leader's part of the reconcile ------------------------------------------------

    def reconcile(self, event: ops.EventBase) -> None:
        """Leader: users, answers and statuses for every request; users of gone relations go."""
        if not self._charm.unit.is_leader() or self._state.peer_relation is None:
            return
        broken = event.relation if isinstance(event, ops.RelationBrokenEvent) else None
        relations = [
            r for r in self._charm.model.relations.get(RELATION, []) if r != broken and r.app
        ]
        self._delete_users_of_gone_relations({r.id for r in relations})
        if not relations or self._provider is None:
            return
        context = self._context()
        for relation in relations:
            if context is None:  # no CA or members yet: the client hears why it waits
                self._set_status(relation, _WAITING)
            else:
                self._answer(relation, context)

    def _context(self) -> _Context | None:
        """What every answer tells: the nodes, the CA bundle, the version; None until known."""
        ca = self._state.internal_ca()
        members = self._state.cluster_plan().members
        if ca is None or not members:
            return None
        hosts = tuple(self._cluster.identity_of(unit).pod_fqdn for unit in members)
        roots = self._certificates.trusted_roots_pem(ca) or ca.certificate
        return _Context(hosts, roots, self._image.version())

    def _answer(self, relation: ops.Relation, context: _Context) -> set[str]:
        """Serve every request of one relation; show the client the first thing that is wrong.

        Returns the logins whose user is up to date and answered.
        """
        from dpcharmlibs.interfaces import DataInterfacesError

        problem: Refusal | None = None
        served: set[str] = set()
        try:
            asked = list(self._provider.requests(relation))
        except (ValueError, TypeError, DataInterfacesError, ops.ModelError) as e:
            # pydantic's ValidationError is a ValueError: the client's data does not parse.
            logger.warning("Unreadable request on %s:%d: %s", RELATION, relation.id, e)
            asked = []
            problem = Refusal(requests.REQUEST_UNUSABLE, "the request does not parse", _PARSE_FIX)
        for request in asked:
            if not request.resource:
                continue  # v0 clients send requested-secrets before the database name
            try:
                user = requests.client_user(
                    relation.id, request.resource, request.request_id, request.extra_user_roles
                )
            except RefusedError as refused:
                logger.warning("Refused a request on %s:%d: %s", RELATION, relation.id, refused)
                problem = problem or refused.refusal
                continue
            password = self._passwords.get(user.login)
            if password is None or not self._ensure_user(user, password):
                problem = problem or _WAITING
                continue
            self._respond(relation, request, user, password, context)
            served.add(user.login)
        self._set_status(relation, problem)
        return served

    # --- KurrentDB's users ------------------------------------------------------------------

    def _ensure_user(self, user: ClientUser, password: str) -> bool:
        """Create the user or bring its groups and password up to date; False if not now."""
        from kurrentdb_api import KurrentDBError

        marker = user.applied_marker(password)
        if self._stored.client_users_applied.get(user.login) == marker:
            return True
        self._remember(user.login, user.relation_id)  # before creating: never an orphan
        full_name = f"{RELATION} relation {user.relation_id} ({user.resource})"
        try:
            client = self._admin_client()
            found = client.get_user(user.login)
            if found is None:
                client.create_user(user.login, full_name, list(user.groups), password)
                logger.info("Created the KurrentDB user %r for a client", user.login)
            else:
                if tuple(sorted(found.groups)) != user.groups:
                    client.update_user(user.login, full_name, list(user.groups))
                client.reset_password(user.login, password)
        except KurrentDBError as e:
            logger.warning("Cannot set up the KurrentDB user %r yet: %s", user.login, e)
            return False
        self._stored.client_users_applied = {
            **self._stored.client_users_applied,
            user.login: marker,
        }
        return True

    def _delete_users_of_gone_relations(self, present: set[int]) -> None:
        from kurrentdb_api import KurrentDBError, KurrentDBNotFound

        managed = self._managed()
        gone = {login: rid for login, rid in managed.items() if rid not in present}
        for login in sorted(gone):
            try:
                self._admin_client().delete_user(login)
                logger.info("Deleted the KurrentDB user %r: its relation is gone", login)
            except KurrentDBNotFound:
                pass
            except KurrentDBError as e:
                logger.warning("Cannot delete the KurrentDB user %r yet: %s", login, e)
                continue
            managed.pop(login)
            self._passwords.remove(login)
            self._forget(login)
        if gone:
            self._save_managed(managed)

    def _forget(self, login: str) -> None:
        """Drop this hook-cache of what KurrentDB and the client were told about `login`."""
        self._stored.client_users_applied = {
            k: v for k, v in self._stored.client_users_applied.items() if k != login
        }
        self._stored.client_answered = {
            k: v for k, v in self._stored.client_answered.items() if k.split("/")[1] != login
        }

    def _managed(self) -> dict[str, int]:
        """The users this charm made for clients (untrusted shapes are dropped)."""
        relation = self._state.peer_relation
        raw = relation.data[self._charm.app].get(USERS_KEY, "") if relation else ""
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            return {}
        return {
            login: rid
            for login, rid in parsed.items()
            if isinstance(login, str) and login.startswith("relation-") and type(rid) is int
        }

    def _remember(self, login: str, relation_id: int) -> None:
        managed = self._managed()
        if managed.get(login) != relation_id:
            managed[login] = relation_id
            self._save_managed(managed)

    def _save_managed(self, managed: dict[str, int]) -> None:
        relation = self._state.peer_relation
        if relation is not None:
            relation.data[self._charm.app][USERS_KEY] = json.dumps(managed, sort_keys=True)

    # --- the answer ---------------------------------------------------------------------------

    def _respond(
        self,
        relation: ops.Relation,
        request: Any,
        user: ClientUser,
        password: str,
        context: _Context,
    ) -> None:
        from dpcharmlibs.interfaces import ResourceProviderModel

        fields = {
            "resource": user.resource,
            "endpoints": requests.endpoints(context.hosts),
            "username": user.login,
            "password": password,
            "uris": requests.connection_string(user.login, password, context.hosts),
            "tls_ca": context.ca_pem,
            "version": context.version,
        }
        # Only a change is written: each write is a relation-changed (and, for the
        # secrets, a new revision) on the client side.
        key = f"{relation.id}/{user.login}"
        marker = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        if self._stored.client_answered.get(key) == marker:
            return
        known: dict[str, str] = {}
        if request.request_id is None:
            # A v0 answer is rewritten whole, and the library finds its secrets again by
            # label, which gives no URI: without these the URIs would drop out of the data.
            ours = relation.data[self._charm.app]
            known = {
                field.replace("-", "_"): ours[field]
                for field in ("secret-user", "secret-tls")
                if ours.get(field, "").startswith("secret:")
            }
        answer = ResourceProviderModel(
            **known,
            salt=request.salt,
            request_id=request.request_id,
            resource=user.resource,
            endpoints=requests.endpoints(context.hosts),
            username=user.login,
            password=password,
            uris=requests.connection_string(user.login, password, context.hosts),
            tls=True,
            tls_ca=context.ca_pem,
            version=context.version,
        )
        self._provider.set_response(relation.id, answer)
        self._stored.client_answered = {**self._stored.client_answered, key: marker}

    def _set_status(self, relation: ops.Relation, refusal: Refusal | None) -> None:
        """Show one status to the client, or none once its request is answered."""
        codes = (requests.WAITING, *requests.REFUSALS)
        current = self._provider.get_statuses(relation.id)
        wanted = {refusal.code: refusal} if refusal else {}
        if {c: (s.message, s.resolution) for c, s in current.items() if c in codes} == {
            c: (r.message, r.resolution) for c, r in wanted.items()
        }:
            return
        for code in codes:
            if code in current and code not in wanted:
                self._provider.resolve_status(relation.id, code)
        if refusal is not None:
            self._provider.raise_status(relation.id, refusal.as_status())

    # --- rotate-client-password -----------------------------------------------------------

    def _on_rotate_client_password(self, event: ops.ActionEvent) -> None:
        login = event.params.get("username")
        if not self._charm.unit.is_leader():
            event.fail("run this action on the leader unit: kurrentdb/leader")
            return
        managed = self._managed()
        if login not in managed:
            known = ", ".join(sorted(managed)) or "none yet"
            event.fail(f"{login!r} is not a client user of this charm; client users: {known}")
            return
        relation = next(
            (r for r in self._charm.model.relations.get(RELATION, []) if r.id == managed[login]),
            None,
        )
        context = self._context()
        if relation is None or self._provider is None or context is None:
            event.fail(f"the relation of {login!r} is not served now; try again later")
            return
        # The new password is kept first: if KurrentDB does not take it now, every later
        # hook applies it (the applied marker no longer matches) and then tells the client.
        if not self._passwords.rotate(login):
            event.fail("the client's password secret cannot be written now; try again")
            return
        if login not in self._answer(relation, context):
            event.fail("KurrentDB has not taken the new password yet; the charm retries")
            return
        event.set_results({"username": login, "result": "rotated"})


@dataclass(frozen=True)
class _Context:
    hosts: tuple[str, ...]
    ca_pem: str
    version: str | None


class _Passwords:
    """Each client user's password, in an app secret of its own (label by login).

    The charm keeps them itself rather than reading them back from the answer's secret:
    that one belongs to the relation library and its labels follow the client's protocol
    version, while this must survive pod recreation and leader changes as it is.
    """

    def __init__(self, model: ops.Model):
        self._model = model

    def get(self, login: str) -> str | None:
        """The login's password, made and kept on first use; None if secrets fail now."""
        try:
            # Owners track revisions too (Juju 3.1.7+): refresh to read the newest.
            content = self._model.get_secret(label=_label(login)).get_content(refresh=True)
            if content.get("password"):
                return content["password"]
        except ops.SecretNotFoundError:
            pass
        except ops.ModelError as e:
            logger.warning("Cannot read the password secret of %r now: %s", login, e)
            return None
        return self._save(login, credentials.generate_password())

    def rotate(self, login: str) -> bool:
        return self._save(login, credentials.generate_password()) is not None

    def remove(self, login: str) -> None:
        try:
            self._model.get_secret(label=_label(login)).remove_all_revisions()
        except ops.SecretNotFoundError:
            pass
        except ops.ModelError as e:
            logger.warning("Cannot remove the password secret of %r: %s", login, e)

    def _save(self, login: str, password: str) -> str | None:
        content = {"password": password}
        try:
            try:
                self._model.get_secret(label=_label(login)).set_content(content)
            except ops.SecretNotFoundError:
                self._model.app.add_secret(
                    content,
                    label=_label(login),
                    description=f"Password of the KurrentDB client user {login}",
                )
        except ops.ModelError as e:
            logger.warning("Cannot keep the password of %r now: %s", login, e)
            return None
        return password


def _label(login: str) -> str:
    return f"kurrentdb-client-{login}"


_PYDANTIC_ALIAS_WARNING = r"The '(default|exclude)' attribute with value .* was provided"
_PARSE_FIX = "send data_interfaces v0 fields or v1 requests (dpcharmlibs-interfaces)"
_WAITING = Refusal(
    requests.WAITING,
    "the KurrentDB user is not created yet",
    "wait: the charm creates it as soon as KurrentDB answers",
)


def _build_provider(charm: ops.CharmBase) -> Any:
    with warnings.catch_warnings():
        # dpcharmlibs-interfaces 1.2.2 (types.py) puts Field(default=..., exclude=...) in
        # Annotated aliases; pydantic warns at import, on every hook's stderr otherwise.
        warnings.filterwarnings("ignore", message=_PYDANTIC_ALIAS_WARNING)
        from dpcharmlibs.interfaces import (
            DataInterfacesError,
            RequirerCommonModel,
            ResourceProviderEventHandler,
        )

    class GuardedProvider(ResourceProviderEventHandler):
        """The library's own relation-changed work, which raises on bad client data.

        A client's bad data must never fail our hook; the reconcile reads the same data
        again and answers with a relation status.
        """

        def _on_relation_changed_event(self, event: ops.RelationChangedEvent) -> None:
            try:
                super()._on_relation_changed_event(event)
            except (ValueError, TypeError, KeyError, DataInterfacesError, ops.ModelError) as e:
                logger.warning("Client data on %s:%d: %s", RELATION, event.relation.id, e)

    return GuardedProvider(charm, RELATION, RequirerCommonModel)
