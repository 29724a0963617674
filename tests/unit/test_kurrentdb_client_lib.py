"""The client library (lib/charms/kurrentdb/v0/kurrentdb_client.py) against a real provider.

Both sides run the real code: a tiny provider charm answers with dpcharmlibs-interfaces'
`ResourceProviderEventHandler`, as the contract says the kurrentdb charm does, and its
relation data and secrets are handed to a tiny client charm that uses the library. Then:
the request the client sends, the events and connection it gets, rotation, the relation
going away, refusals surfaced as statuses, and whatever a broken provider could send.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from urllib.parse import quote

import ops
import pytest
from charms.kurrentdb.v0.kurrentdb_client import KurrentDBConnection, KurrentDBRequires
from dpcharmlibs.interfaces import (
    RelationStatus,
    RequirerCommonModel,
    ResourceProviderEventHandler,
    ResourceProviderModel,
    gen_hash,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from issuing_ca import IssuingCA
from ops import testing

REL_ID = 7
RESOURCE = "orders"
HOSTS = tuple(f"kurrentdb-{i}.kurrentdb-endpoints.prod.svc.cluster.local:2113" for i in range(3))
PASSWORD = "Aq3xZ9kLm2Pw7Rt5Vb8Nc1Hd4Jf6Gs0Y"  # 32 characters, as the provider makes them
VERSION = "26.0.3"
OTHER_MODEL = "00000000-0000-4000-8000-00000000beef"

CLIENT_META = {"name": "client", "requires": {"database": {"interface": "kurrentdb_client"}}}
PROVIDER_META = {"name": "kurrentdb", "provides": {"database": {"interface": "kurrentdb_client"}}}
PROVIDER_OPTIONS = ("endpoints", "password", "ca", "version")
PROVIDER_CONFIG = {"options": {name: {"type": "string"} for name in PROVIDER_OPTIONS}}

SEEN: list[tuple[str, KurrentDBConnection | None]] = []  # the client's events, in order


class ClientCharm(ops.CharmBase):
    """A client as the library's docstring shows one: records what each event gives it."""

    resource: str | None = RESOURCE
    roles: str | None = "admin"

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.kurrentdb = KurrentDBRequires(
            self, resource=self.resource, extra_user_roles=self.roles
        )
        for event in self.kurrentdb.on.events().values():
            framework.observe(event, self._record)
        framework.observe(self.on.collect_unit_status, self._status)

    def _record(self, event: ops.RelationEvent) -> None:
        SEEN.append((event.handle.kind, self.kurrentdb.connection(event.relation)))

    def _status(self, event: ops.CollectStatusEvent) -> None:
        if self.kurrentdb.connection():
            event.add_status(ops.ActiveStatus())
            return
        for status in self.kurrentdb.statuses():
            event.add_status(ops.BlockedStatus(f"kurrentdb: {status.message}"))
        event.add_status(ops.WaitingStatus("waiting for kurrentdb"))


class GreedyClient(ClientCharm):
    roles = "admin,superuser"


class DefaultClient(ClientCharm):
    resource = None
    roles = None


class ProviderCharm(ops.CharmBase):
    """Answers each request from its config, per the contract; refuses unknown roles (5001)."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.database = ResourceProviderEventHandler(self, "database", RequirerCommonModel)
        framework.observe(self.database.on.resource_requested, self._on_requested)
        framework.observe(self.on.config_changed, self._on_config_changed)

    def _on_requested(self, event) -> None:
        self._answer(event.relation, event.request)

    def _on_config_changed(self, _: ops.ConfigChangedEvent) -> None:
        for relation in self.model.relations["database"]:
            for request in self.database.requests(relation):
                self._answer(relation, request)

    def _answer(self, relation: ops.Relation, request: RequirerCommonModel) -> None:
        roles = {role for role in (request.extra_user_roles or "").split(",") if role}
        if refused := sorted(roles - {"admin", "ops"}):
            status = RelationStatus(
                code=5001,
                message=f"role {refused[0]} refused",
                resolution="ask for admin, ops or a named group",
            )
            self.database.raise_status(relation.id, status)
            return
        username = f"relation-{relation.id}-{request.request_id}"
        password, endpoints = str(self.config["password"]), str(self.config["endpoints"])
        uris = f"kurrentdb://{username}:{quote(password, safe='')}@{endpoints}"
        response = ResourceProviderModel(
            request_id=request.request_id,
            salt=request.salt,
            resource=request.resource,
            endpoints=endpoints,
            version=str(self.config["version"]),
            username=username,
            password=password,
            uris=uris + "?tls=true&tlsVerifyCert=true",
            tls=True,
            tls_ca=str(self.config["ca"]),
        )
        self.database.set_response(relation.id, response)


@pytest.fixture(scope="module")
def ca() -> IssuingCA:
    return IssuingCA(name="kurrentdb internal CA")


@pytest.fixture(scope="module")
def other_ca() -> IssuingCA:
    return IssuingCA(name="provider CA")


@pytest.fixture
def seen() -> list[tuple[str, KurrentDBConnection | None]]:
    SEEN.clear()
    return SEEN


def client_ctx(charm: type[ClientCharm] = ClientCharm) -> testing.Context:
    return testing.Context(charm, meta=CLIENT_META)


def provider_ctx() -> testing.Context:
    return testing.Context(ProviderCharm, meta=PROVIDER_META, config=PROVIDER_CONFIG)


def provider_config(root: IssuingCA, **changes: str) -> dict[str, str | int | float | bool]:
    config = {"endpoints": ",".join(HOSTS), "password": PASSWORD, "ca": root.root_pem}
    return {**config, "version": VERSION, **changes}


def database(state: testing.State) -> testing.Relation:
    return next(r for r in state.relations if isinstance(r, testing.Relation))


def secret_holding(state: testing.State, key: str) -> testing.Secret:
    return next(s for s in state.secrets if key in s.latest_content)


def with_relation(state: testing.State, **changes) -> testing.State:
    return dataclasses.replace(state, relations={dataclasses.replace(database(state), **changes)})


def requested(ctx: testing.Context, leader: bool = True) -> testing.State:
    """The client after relation-created: its request (leader) in its app data."""
    relation = testing.Relation("database", id=REL_ID, remote_app_name="kurrentdb")
    state = testing.State(leader=leader, relations={relation})
    return ctx.run(ctx.on.relation_created(relation), state)


def provide(client: testing.State, config: dict, cross_model: bool = False) -> testing.State:
    """The provider leader's hook on the client's request: its state afterwards."""
    ctx = provider_ctx()
    relation = testing.Relation(
        "database",
        id=REL_ID,
        remote_app_name="client",
        remote_app_data=database(client).local_app_data,
        remote_model_uuid=OTHER_MODEL if cross_model else None,
    )
    state = testing.State(leader=True, relations={relation}, config=config)
    return ctx.run(ctx.on.relation_changed(relation, remote_unit=0), state)


def reconfigure(provider: testing.State, config: dict) -> testing.State:
    """The provider answering again with new values (rotation, CA switch, scaling)."""
    ctx = provider_ctx()
    return ctx.run(ctx.on.config_changed(), dataclasses.replace(provider, config=config))


def hand_over(provider: testing.State, client: testing.State) -> testing.State:
    """What the client sees of the provider's answer: its app data and the secrets it was
    granted (at their latest revision; the client still tracks the revision it read)."""
    tracked = {s.id: s.tracked_content for s in client.secrets}
    granted = [s for s in provider.secrets if REL_ID in s.remote_grants]
    secrets = [
        testing.Secret(
            tracked.get(s.id, s.latest_content), latest_content=s.latest_content, id=s.id
        )
        for s in granted
    ]
    data = database(provider).local_app_data
    return dataclasses.replace(with_relation(client, remote_app_data=data), secrets=secrets)


def answered(ctx: testing.Context, config: dict, leader: bool = True) -> testing.State:
    """The client once the provider's answer is in its relation data (no hook run on it yet)."""
    client = requested(ctx, leader=leader)
    leaders = client if leader else requested(ctx)  # the request comes from the leader
    return hand_over(provide(leaders, config), client)


def changed(ctx: testing.Context, state: testing.State) -> testing.State:
    return ctx.run(ctx.on.relation_changed(database(state), remote_unit=0), state)


def ready(ctx: testing.Context, ca: IssuingCA, **config: str) -> tuple[testing.State, ...]:
    """A client that has its connection, and the provider that gave it."""
    client = requested(ctx)
    provider = provide(client, provider_config(ca, **config))
    return changed(ctx, hand_over(provider, client)), provider


def now(
    ctx: testing.Context, state: testing.State
) -> tuple[KurrentDBConnection | None, list[RelationStatus]]:
    """What the library says in a hook on `state`: connection and statuses."""
    with ctx(ctx.on.update_status(), state) as manager:
        library = manager.charm.kurrentdb
        return library.connection(), library.statuses()


def request_id(state: testing.State) -> str:
    return json.loads(database(state).local_app_data["requests"])[0]["request-id"]


def expected(state: testing.State, ca: IssuingCA, **changes) -> KurrentDBConnection:
    fields = {
        "endpoints": HOSTS,
        "username": f"relation-{REL_ID}-{request_id(state)}",
        "password": PASSWORD,
        "ca_pem": ca.root_pem,
        "version": VERSION,
        "resource": RESOURCE,
    }
    return KurrentDBConnection(**{**fields, **changes})


# ---- the request ---------------------------------------------------------------------------


def test_the_leader_sends_one_v1_request_with_its_resource_and_roles() -> None:
    ctx = client_ctx()
    state = requested(ctx)
    data = database(state).local_app_data
    assert data["version"] == "v1"
    [request] = json.loads(data["requests"])
    assert request["resource"] == RESOURCE
    assert request["extra-user-roles"] == "admin"
    assert request["request-id"] == gen_hash(RESOURCE, request["salt"])
    assert {k for k, v in request.items() if v not in (None, False)} == {
        "resource",
        "request-id",
        "salt",
        "extra-user-roles",
    }
    # Later hooks (and a later leader) leave it alone: the provider refuses a changed request.
    for event in (ctx.on.relation_changed(database(state)), ctx.on.leader_elected()):
        assert database(ctx.run(event, state)).local_app_data == data


def test_the_app_name_is_the_default_resource_and_roles_are_optional() -> None:
    [request] = json.loads(
        database(requested(client_ctx(DefaultClient))).local_app_data["requests"]
    )
    assert request["resource"] == "client"
    assert request["extra-user-roles"] is None


def test_a_relation_without_a_request_gets_one_from_the_next_leader() -> None:
    # e.g. the library adopted on an existing relation: upgrade-charm or leader-elected sends it
    ctx = client_ctx()
    relation = testing.Relation("database", id=REL_ID, remote_app_name="kurrentdb")
    for event in (ctx.on.upgrade_charm(), ctx.on.leader_elected()):
        out = ctx.run(event, testing.State(leader=True, relations={relation}))
        assert json.loads(database(out).local_app_data["requests"])[0]["resource"] == RESOURCE


def test_a_non_leader_sends_nothing() -> None:
    assert database(requested(client_ctx(), leader=False)).local_app_data == {}


# ---- the answer ----------------------------------------------------------------------------


def test_the_answer_is_connection_ready_once_with_the_whole_connection(seen, ca) -> None:
    ctx = client_ctx()
    state, provider = ready(ctx, ca)
    assert seen == [("connection_ready", expected(state, ca))]
    # The same answer again (another hook on the relation, any secret event) is no news.
    state = changed(ctx, state)
    state = ctx.run(ctx.on.secret_changed(secret_holding(state, "password")), state)
    assert seen == [("connection_ready", expected(state, ca))]
    assert ctx.run(ctx.on.update_status(), state).unit_status == testing.ActiveStatus()
    # The contract: no password, CA or URI in plain relation data.
    plain = json.dumps(database(provider).local_app_data)
    assert (
        PASSWORD not in plain and "BEGIN CERTIFICATE" not in plain and "kurrentdb://" not in plain
    )


def test_a_non_leader_unit_gets_the_connection_too(seen, ca) -> None:
    ctx = client_ctx()
    state = changed(ctx, answered(ctx, provider_config(ca), leader=False))
    assert [kind for kind, _ in seen] == ["connection_ready"]
    assert now(ctx, state)[0] is not None


def test_a_cross_model_relation_gets_the_connection_too(seen, ca) -> None:
    # dpcharmlibs 1.2.2's own requirer handler gives a None password on a cross-model relation
    # (models.py skips CROSS_MODEL_RELATION_CONSUMER_SECRETS); this library reads the secrets.
    ctx = client_ctx()
    client = with_relation(requested(ctx), remote_model_uuid=OTHER_MODEL)
    state = changed(ctx, hand_over(provide(client, provider_config(ca), cross_model=True), client))
    assert seen == [("connection_ready", expected(state, ca))]


def test_the_connection_string_is_the_official_clients_format(ca) -> None:
    ctx = client_ctx()
    password = "p@ss:w/rd?#&=+% é"  # every character here needs encoding in a URI's userinfo
    state, _ = ready(ctx, ca, password=password, endpoints=",".join(HOSTS[:2]))
    connection = now(ctx, state)[0]
    assert connection is not None
    base = (
        f"kurrentdb://relation-{REL_ID}-{request_id(state)}:p%40ss%3Aw%2Frd%3F%23%26%3D%2B%25%20%C3%A9"
        "@kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local:2113"
        ",kurrentdb-1.kurrentdb-endpoints.prod.svc.cluster.local:2113"
        "?tls=true&tlsVerifyCert=true"
    )
    assert connection.connection_string() == base
    ca_file = "/var/lib/my app/kurrentdb-ca.pem"
    assert connection.connection_string(ca_file) == base + (
        "&tlsCaFile=%2Fvar%2Flib%2Fmy%20app%2Fkurrentdb-ca.pem"
    )


def test_the_python_client_reads_the_connection_string_as_meant(ca) -> None:
    # kurrentdbclient decodes query values but not the userinfo (urlparse's .password): with
    # the provider's alphanumeric passwords, nothing there needs decoding.
    from kurrentdbclient.connection_spec import ConnectionSpec

    ctx = client_ctx()
    state, _ = ready(ctx, ca)
    connection = now(ctx, state)[0]
    assert connection is not None
    spec = ConnectionSpec(connection.connection_string(ca_file="/etc/app/ca file.pem"))
    assert (spec.username, spec.password) == (connection.username, PASSWORD)
    assert list(spec.targets) == list(HOSTS)
    assert spec.options.tls and spec.options.tls_verify_cert
    assert spec.options.tls_ca_file == "/etc/app/ca file.pem"


# ---- changes and the end -------------------------------------------------------------------


ROTATED = "Nw8Qe2Rt6Yu0Io4Pa7Sd1Fg5Hj9Kl3Zx"


@pytest.mark.parametrize("what", ["password", "ca", "endpoints"])
def test_each_later_change_is_one_connection_changed(seen, ca, other_ca, what) -> None:
    ctx = client_ctx()
    state, provider = ready(ctx, ca)
    before = expected(state, ca)
    both_roots = other_ca.root_pem + ca.root_pem  # a CA switch: the provider sends both
    config, after = {
        "password": ({"password": ROTATED}, {"password": ROTATED}),  # rotate-client-password
        "ca": ({"ca": both_roots}, {"ca_pem": both_roots}),
        "endpoints": ({"endpoints": ",".join(HOSTS[:2])}, {"endpoints": HOSTS[:2]}),  # scaled in
    }[what]
    state = hand_over(reconfigure(provider, provider_config(ca, **config)), state)
    if what == "endpoints":
        state = changed(ctx, state)
    else:  # the provider changed a secret's content: the client sees secret-changed
        key = {"password": "password", "ca": "tls-ca"}[what]
        state = ctx.run(ctx.on.secret_changed(secret_holding(state, key)), state)
    after_change = expected(state, ca, **after)
    assert seen == [("connection_ready", before), ("connection_changed", after_change)]
    assert now(ctx, state)[0] == after_change


def test_a_new_server_version_alone_is_no_event_but_shows(seen, ca) -> None:
    ctx = client_ctx()
    state, provider = ready(ctx, ca)
    state = hand_over(reconfigure(provider, provider_config(ca, version="26.1.0")), state)
    state = changed(ctx, state)
    assert [kind for kind, _ in seen] == ["connection_ready"]
    assert now(ctx, state)[0] == expected(state, ca, version="26.1.0")


def test_relation_broken_is_connection_lost_and_no_connection(seen, ca) -> None:
    ctx = client_ctx()
    state, _ = ready(ctx, ca)
    out = ctx.run(ctx.on.relation_broken(database(state)), state)
    assert seen[1:] == [("connection_lost", None)]
    assert out.unit_status == testing.WaitingStatus("waiting for kurrentdb")
    # A relation that never had a connection goes without a word.
    seen.clear()
    never = requested(ctx)
    ctx.run(ctx.on.relation_broken(database(never)), never)
    assert seen == []


def test_refused_roles_show_as_the_providers_status_and_no_connection(seen, ca) -> None:
    ctx = client_ctx(GreedyClient)
    state = changed(ctx, answered(ctx, provider_config(ca)))
    assert seen == []
    connection, statuses = now(ctx, state)
    assert connection is None
    assert [(s.code, s.message, s.resolution) for s in statuses] == [
        (5001, "role superuser refused", "ask for admin, ops or a named group")
    ]
    assert statuses[0].is_fatal
    status = ctx.run(ctx.on.update_status(), state).unit_status
    assert status == testing.BlockedStatus("kurrentdb: role superuser refused")


def test_a_malformed_status_entry_hides_no_other(ca) -> None:
    ctx = client_ctx(GreedyClient)
    state = answered(ctx, provider_config(ca))
    [good] = json.loads(database(state).remote_app_data["status"])
    state = edit_app_data(state, status=json.dumps([{"code": "soon"}, good, "5002"]))
    assert [s.code for s in now(ctx, state)[1]] == [5001]
    assert now(ctx, edit_app_data(state, status="{not json"))[1] == []


# ---- what a broken provider could send ------------------------------------------------------


def edit_answer(state: testing.State, **fields: object) -> testing.State:
    """The provider's answer with fields replaced (None: removed)."""
    data = database(state).remote_app_data
    [answer] = json.loads(data["requests"])
    for key, value in fields.items():
        answer.pop(key) if value is None else answer.__setitem__(key, value)
    return with_relation(state, remote_app_data={**data, "requests": json.dumps([answer])})


def edit_secret(state: testing.State, key: str, **content: str | None) -> testing.State:
    """The content of the secret holding `key`, with entries replaced (None: removed)."""
    old = secret_holding(state, key)
    new = {k: v for k, v in {**old.latest_content, **content}.items() if v is not None}
    secret = testing.Secret(new, id=old.id)
    return dataclasses.replace(
        state, secrets=[*(s for s in state.secrets if s.id != old.id), secret]
    )


def edit_app_data(state: testing.State, **fields: str) -> testing.State:
    data = database(state).remote_app_data
    return with_relation(state, remote_app_data={**data, **fields})


NOT_A_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
MALFORMED: dict[str, Callable[[testing.State], testing.State]] = {
    "requests not JSON": lambda s: edit_app_data(s, requests="[{"),
    "requests an object": lambda s: edit_app_data(s, requests='{"resource": "orders"}'),
    "requests a number": lambda s: edit_app_data(s, requests="7"),
    "requests null": lambda s: edit_app_data(s, requests="null"),
    "answer for another resource": lambda s: edit_answer(s, resource="payments"),
    "no endpoints": lambda s: edit_answer(s, endpoints=None),
    "empty endpoints": lambda s: edit_answer(s, endpoints=""),
    "endpoints a list": lambda s: edit_answer(s, endpoints=list(HOSTS)),
    "endpoint without port": lambda s: edit_answer(s, endpoints=f"{HOSTS[0]},kurrentdb-1"),
    "port 0": lambda s: edit_answer(s, endpoints="kurrentdb-0:0"),
    "port too big": lambda s: edit_answer(s, endpoints="kurrentdb-0:65536"),
    "port in Arabic digits": lambda s: edit_answer(s, endpoints="kurrentdb-0:٢١١٣"),
    "empty endpoint": lambda s: edit_answer(s, endpoints=f"{HOSTS[0]},"),
    "host with underscore": lambda s: edit_answer(s, endpoints="kurrent_db:2113"),
    "host with space": lambda s: edit_answer(s, endpoints=f" {HOSTS[0]}"),
    "host with userinfo": lambda s: edit_answer(s, endpoints="evil@kurrentdb-0:2113"),
    "host with query": lambda s: edit_answer(s, endpoints="kurrentdb-0:2113?tls=false"),
    "host too long": lambda s: edit_answer(s, endpoints="a." * 127 + "b:2113"),
    "no user secret": lambda s: edit_answer(s, **{"secret-user": None}),
    "user secret not a URI": lambda s: edit_answer(s, **{"secret-user": "password"}),
    "user secret unknown": lambda s: edit_answer(
        s, **{"secret-user": "secret:d4unknown0000000000"}
    ),
    "no TLS secret": lambda s: edit_answer(s, **{"secret-tls": None}),
    "no password": lambda s: edit_secret(s, "password", password=None),
    "empty password": lambda s: edit_secret(s, "password", password=""),
    "password with newline": lambda s: edit_secret(s, "password", password="abc\ndef"),
    "no username": lambda s: edit_secret(s, "username", username=None),
    "username with colon": lambda s: edit_secret(s, "username", username="relation:7"),
    "username with space": lambda s: edit_secret(s, "username", username="relation 7"),
    "username with NUL": lambda s: edit_secret(s, "username", username="relation\x007"),
    "no CA": lambda s: edit_secret(s, "tls-ca", **{"tls-ca": None}),
    "CA not PEM": lambda s: edit_secret(s, "tls-ca", **{"tls-ca": "a CA, trust me"}),
    "CA PEM of garbage": lambda s: edit_secret(s, "tls-ca", **{"tls-ca": NOT_A_CERTIFICATE}),
}


@pytest.mark.parametrize("corrupt", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_provider_data_is_no_connection_and_no_error(seen, ca, caplog, corrupt) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = client_ctx()
    state = corrupt(answered(ctx, provider_config(ca)))
    changed(ctx, state)  # Scenario raises if the hook does
    assert seen == []
    assert now(ctx, state)[0] is None
    assert PASSWORD not in caplog.text


def test_an_unusable_version_is_dropped_not_the_connection(seen, ca) -> None:
    ctx = client_ctx()
    state = changed(
        ctx, edit_answer(answered(ctx, provider_config(ca)), version="26.0.3; rm -rf /")
    )
    assert seen == [("connection_ready", expected(state, ca, version=None))]


def test_a_corrupted_answer_after_a_good_one_keeps_quiet(seen, ca) -> None:
    ctx = client_ctx()
    state, _ = ready(ctx, ca)
    state = changed(ctx, edit_answer(state, endpoints="nonsense"))
    assert [kind for kind, _ in seen] == ["connection_ready"]  # no "changed" to nothing
    assert now(ctx, state)[0] is None


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)  # Juju data is UTF-8
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["resource", "endpoints", "secret-user", "secret-tls", "version", "request-id"]


@pytest.fixture(scope="module")
def one_answer(ca: IssuingCA) -> testing.State:
    """One real answer for all the generated examples, each editing its own copy."""
    return answered(client_ctx(), provider_config(ca))


def sometimes(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """`strategy` one time in four, else None: a fair share of examples stays usable."""
    return st.tuples(st.integers(0, 3), strategy).map(lambda t: t[1] if t[0] == 1 else None)


@settings(max_examples=50)
@given(
    answer=sometimes(st.dictionaries(st.sampled_from(FIELDS), JSON | st.sampled_from(HOSTS))),
    raw_requests=sometimes(TEXT | JSON.map(json.dumps)),
    status=TEXT | JSON.map(json.dumps),
    user=sometimes(st.dictionaries(st.sampled_from(["username", "password"]), TEXT)),
    tls_ca=sometimes(TEXT),  # None: the provider's real CA
)
def test_no_provider_data_breaks_a_hook_or_fills_half_a_connection(
    ca, one_answer, answer, raw_requests, status, user, tls_ca
) -> None:
    ctx = client_ctx()
    state = edit_app_data(edit_answer(one_answer, **(answer or {})), status=status)
    if raw_requests is not None:
        state = edit_app_data(state, requests=raw_requests)
    if user:
        state = edit_secret(state, "password", **{"username": None, "password": None, **user})
    if tls_ca is not None:
        state = edit_secret(state, "tls-ca", **{"tls-ca": tls_ca or None})
    seen = SEEN  # not the fixture: one list per example, not per test
    seen.clear()
    changed(ctx, state)  # Scenario raises if the hook does
    connection, statuses = now(ctx, state)
    assert all(isinstance(s, RelationStatus) for s in statuses)
    if connection is None:
        assert seen == []
        return
    # Whatever got through is whole, and exactly what the provider sent.
    assert seen == [("connection_ready", connection)]
    assert tls_ca is None and connection.ca_pem == ca.root_pem
    content = secret_holding(state, "password").latest_content
    assert (connection.username, connection.password) == (content["username"], content["password"])
    assert connection.username and connection.password
    sent = json.loads(database(state).remote_app_data["requests"])[0]["endpoints"]
    assert connection.endpoints == tuple(sent.split(",")) and all(connection.endpoints)


# ---- secrecy -------------------------------------------------------------------------------


def test_the_password_never_shows_in_repr_logs_or_stored_state(seen, ca, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = client_ctx()
    rotated = "Zx3Lk9Jh7Gf5Ds1Aq2Ws4Ed6Rf8Tg0Yh"
    state, provider = ready(ctx, ca)
    state = hand_over(reconfigure(provider, provider_config(ca, password=rotated)), state)
    state = ctx.run(ctx.on.secret_changed(secret_holding(state, "password")), state)
    state = changed(ctx, edit_answer(state, endpoints="nonsense"))  # the warning path too
    connections = [connection for _, connection in seen if connection]
    assert [c.password for c in connections] == [PASSWORD, rotated]
    for password in (PASSWORD, rotated):
        assert password not in caplog.text
        assert all(password not in repr(c) and password not in str(c) for c in connections)
        assert password not in repr(state.stored_states)
        assert password not in json.dumps(database(state).local_app_data)
        assert password not in json.dumps(database(state).local_unit_data)
    assert "unusable data (endpoints)" in caplog.text
