"""The `database` relation: a KurrentDB user per client request, answered through secrets.

Clients are played as data-integrator does (data_interfaces v0: `database`,
`extra-user-roles`) and as a dpcharmlibs v1 requirer does (`version: v1`, `requests`).
KurrentDB is the double (tests/doubles/kurrentdb.py), whose users API follows
UsersController.cs; every assertion is on what the client or KurrentDB sees.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse

import pytest
from conftest import unit_state
from ops import testing

from workload import paths

FQDN0 = "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local"
REQUESTED_SECRETS = json.dumps(["username", "password", "tls", "tls-ca", "uris"])


def v0_client(roles: str | None = None, database: str = "orders", **kwargs) -> testing.Relation:
    data = {"database": database, "requested-secrets": REQUESTED_SECRETS}
    if roles is not None:
        data["extra-user-roles"] = roles
    return testing.Relation("database", remote_app_name="myapp", remote_app_data=data, **kwargs)


def v1_client(*requests: dict) -> testing.Relation:
    return testing.Relation(
        "database",
        remote_app_name="billing",
        remote_app_data={"version": "v1", "requests": json.dumps(list(requests))},
    )


def with_relations(state: testing.State, *relations: testing.Relation) -> testing.State:
    return dataclasses.replace(state, relations=set(state.relations) | set(relations))


def start(ctx, state: testing.State) -> testing.State:
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def secret_content(state: testing.State, uri: str) -> dict[str, str]:
    secret = state.get_secret(id=uri)
    return dict(secret.latest_content or {})


def statuses(state: testing.State, relation: testing.Relation) -> dict[int, dict]:
    raw = state.get_relation(relation.id).local_app_data.get("status", "[]")
    return {s["code"]: s for s in json.loads(raw)}


def answers(state: testing.State, relation: testing.Relation) -> list[dict]:
    data = state.get_relation(relation.id).local_app_data
    if "requests" in data:
        return json.loads(data["requests"])
    return [dict(data)]


def no_secret_in_plain_data(state: testing.State, relation: testing.Relation, *secrets: str):
    plain = json.dumps(state.get_relation(relation.id).local_app_data)
    for secret in secrets:
        assert secret not in plain
        assert urllib.parse.quote(secret, safe="") not in plain


# --- a v0 client (data-integrator) --------------------------------------------------------------


def test_v0_client_gets_its_own_user_endpoints_and_ca_in_secrets(
    ctx, volumes, internal_ca, kurrentdb
):
    client = v0_client(roles="$ops")
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))

    user = kurrentdb.users[f"relation-{client.id}"]
    assert user.groups == ["$ops"]
    data = out.get_relation(client.id).local_app_data
    assert data["endpoints"] == f"{FQDN0}:2113"
    assert data["version"] == "26.0.3"
    assert data["resource"] == "orders"
    credentials = secret_content(out, data["secret-user"])
    assert credentials == {
        "username": f"relation-{client.id}",
        "password": user.password,
        "uris": f"kurrentdb://relation-{client.id}:{user.password}@{FQDN0}:2113"
        "?tls=true&tlsVerifyCert=true",
    }
    tls = secret_content(out, data["secret-tls"])
    assert tls == {"tls": "true", "tls-ca": internal_ca.certificate}
    assert len(user.password) == 32
    no_secret_in_plain_data(out, client, user.password)
    assert statuses(out, client) == {}


def test_a_served_client_sees_no_new_writes_on_later_hooks(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    user_requests = len([r for r in kurrentdb.requests if r.path.startswith("/users")])

    again = ctx.run(ctx.on.update_status(), out)

    assert (
        again.get_relation(client.id).local_app_data == out.get_relation(client.id).local_app_data
    )
    before = {s.id: s.latest_content for s in out.secrets}
    assert {s.id: s.latest_content for s in again.secrets} == before
    assert len([r for r in kurrentdb.requests if r.path.startswith("/users")]) == user_requests


def test_the_password_survives_a_new_pod_and_is_reapplied(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    password = kurrentdb.users[f"relation-{client.id}"].password
    kurrentdb.users[f"relation-{client.id}"].password = "restored-from-an-old-backup"

    # A recreated pod has no StoredState: only the secrets and peer data carry over.
    fresh = dataclasses.replace(out, stored_states=frozenset())
    again = start(ctx, fresh)

    assert kurrentdb.users[f"relation-{client.id}"].password == password
    data = again.get_relation(client.id).local_app_data
    assert secret_content(again, data["secret-user"])["password"] == password


def test_non_leader_creates_no_user_and_writes_nothing(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca, leader=False), client))

    assert f"relation-{client.id}" not in kurrentdb.users
    assert out.get_relation(client.id).local_app_data == {}


# --- a v1 client with several requests ------------------------------------------------------


def test_v1_requests_each_get_a_user(ctx, volumes, internal_ca, kurrentdb):
    client = v1_client(
        {"resource": "orders", "request-id": "a1b2c3", "salt": "s1"},
        {"resource": "audit", "request-id": "d4e5f6", "salt": "s2", "extra-user-roles": "admin"},
    )
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))

    orders = kurrentdb.users[f"relation-{client.id}-a1b2c3"]
    audit = kurrentdb.users[f"relation-{client.id}-d4e5f6"]
    assert orders.groups == [] and audit.groups == ["$admins"]
    by_id = {a["request-id"]: a for a in answers(out, client)}
    assert by_id["a1b2c3"]["resource"] == "orders" and by_id["a1b2c3"]["salt"] == "s1"
    user = secret_content(out, by_id["d4e5f6"]["secret-user"])
    assert user["username"] == f"relation-{client.id}-d4e5f6"
    assert user["password"] == audit.password
    no_secret_in_plain_data(out, client, orders.password, audit.password)


def test_endpoints_list_every_member_node(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client()
    state = with_relations(unit_state(volumes, internal_ca), client)
    peers = state.get_relations("kurrentdb-peers")[0]
    members = json.dumps(["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"])
    peers = dataclasses.replace(
        peers,
        local_app_data={**peers.local_app_data, "members": members},
        peers_data={
            n: {
                "address": f"kurrentdb-{n}.kurrentdb-endpoints.prod.svc.cluster.local",
                "started": "true",
                "has-data": "true",
                "running-members": members,
                "role": "follower",
                "caught-up": "true",
            }
            for n in (1, 2)
        },
    )
    state = dataclasses.replace(state, relations={client, peers})
    out = ctx.run(ctx.on.update_status(), state)

    data = out.get_relation(client.id).local_app_data
    hosts = [f"kurrentdb-{n}.kurrentdb-endpoints.prod.svc.cluster.local:2113" for n in range(3)]
    assert data["endpoints"] == ",".join(hosts)
    uris = secret_content(out, data["secret-user"])["uris"]
    assert uris.split("@")[1] == ",".join(hosts) + "?tls=true&tlsVerifyCert=true"


# --- refusals and waiting: relation statuses -------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "named"),
    [("$superusers", "'$superusers'"), ("ops, bad group", "'bad group'"), ("a;b", "'a;b'")],
)
def test_refused_roles_give_a_fatal_relation_status_and_no_user(
    ctx, volumes, internal_ca, kurrentdb, roles, named
):
    client = v0_client(roles=roles)
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))

    assert f"relation-{client.id}" not in kurrentdb.users
    status = statuses(out, client)[5001]
    assert named in status["message"]
    assert "$admins, $ops" in status["resolution"]
    assert "secret-user" not in out.get_relation(client.id).local_app_data
    assert out.unit_status == testing.ActiveStatus("Leader")


def test_fixing_the_roles_resolves_the_status(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client(roles="$root")
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    fixed = dataclasses.replace(
        out.get_relation(client.id),
        remote_app_data={**client.remote_app_data, "extra-user-roles": "$ops,readers"},
    )
    others = {r for r in out.relations if r.id != client.id}
    out = dataclasses.replace(out, relations=others | {fixed})

    again = ctx.run(ctx.on.relation_changed(fixed), out)

    assert statuses(again, client) == {}
    assert kurrentdb.users[f"relation-{client.id}"].groups == ["$ops", "readers"]


def test_bad_resource_and_unparsable_requests_are_refused(ctx, volumes, internal_ca, kurrentdb):
    bad_name = v0_client(database="orders; drop")
    garbage = testing.Relation(
        "database",
        remote_app_name="other",
        remote_app_data={"version": "v1", "requests": "{not json"},
    )
    state = with_relations(unit_state(volumes, internal_ca), bad_name, garbage)
    first = start(ctx, state)
    out = ctx.run(ctx.on.relation_changed(first.get_relation(garbage.id)), first)

    assert 5002 in statuses(out, bad_name) and 5002 in statuses(out, garbage)
    assert "orders; drop" in statuses(out, bad_name)[5002]["message"]
    assert not [u for u in kurrentdb.users if u.startswith("relation-")]


def test_kurrentdb_down_means_waiting_then_served(ctx, volumes, internal_ca, kurrentdb):
    fresh = with_relations(unit_state(volumes, internal_ca), v0_client())
    kurrentdb.down()
    waiting = ctx.run(ctx.on.update_status(), fresh)
    relation = waiting.get_relations("database")[0]
    assert 4001 in statuses(waiting, relation)
    assert "secret-user" not in waiting.get_relation(relation.id).local_app_data

    kurrentdb.up()
    served = ctx.run(ctx.on.update_status(), waiting)
    assert statuses(served, relation) == {}
    assert "secret-user" in served.get_relation(relation.id).local_app_data
    assert f"relation-{relation.id}" in kurrentdb.users


# --- the relation goes -----------------------------------------------------------------------


def test_relation_removed_deletes_the_user_and_its_password(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    assert f"relation-{client.id}" in kurrentdb.users

    gone = ctx.run(ctx.on.relation_broken(out.get_relation(client.id)), out)

    assert f"relation-{client.id}" not in kurrentdb.users
    assert not [s for s in gone.secrets if s.label == f"kurrentdb-client-relation-{client.id}"]
    peers = gone.get_relations("kurrentdb-peers")[0]
    assert json.loads(peers.local_app_data["client-users"]) == {}


def test_a_user_whose_relation_went_while_kurrentdb_was_down_is_deleted_later(
    ctx, volumes, internal_ca, kurrentdb
):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    kurrentdb.down()
    gone = ctx.run(ctx.on.relation_broken(out.get_relation(client.id)), out)
    without = dataclasses.replace(gone, relations=gone.relations - {gone.get_relation(client.id)})
    kurrentdb.up()
    assert f"relation-{client.id}" in kurrentdb.users

    ctx.run(ctx.on.update_status(), without)

    assert f"relation-{client.id}" not in kurrentdb.users


# --- rotate-client-password ------------------------------------------------------------------


def test_rotation_changes_the_password_in_kurrentdb_and_the_secret(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    login = f"relation-{client.id}"
    old = kurrentdb.users[login].password
    restarts = pebble_calls.restarts

    rotated = ctx.run(ctx.on.action("rotate-client-password", params={"username": login}), out)

    assert ctx.action_results == {"username": login, "result": "rotated"}
    new = kurrentdb.users[login].password
    assert new != old
    data = rotated.get_relation(client.id).local_app_data
    content = secret_content(rotated, data["secret-user"])
    assert content["password"] == new and f":{new}@" in content["uris"]
    assert pebble_calls.restarts == restarts
    no_secret_in_plain_data(rotated, client, new, old)


def test_rotation_refuses_unknown_users_and_non_leaders(ctx, volumes, internal_ca, kurrentdb):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))

    with pytest.raises(testing.ActionFailed, match=r"'admin' is not a client user.*relation-"):
        ctx.run(ctx.on.action("rotate-client-password", params={"username": "admin"}), out)
    follower = dataclasses.replace(out, leader=False)
    with pytest.raises(testing.ActionFailed, match="leader"):
        ctx.run(
            ctx.on.action("rotate-client-password", params={"username": f"relation-{client.id}"}),
            follower,
        )


def test_rotation_with_kurrentdb_down_fails_and_is_applied_later(
    ctx, volumes, internal_ca, kurrentdb
):
    client = v0_client()
    out = start(ctx, with_relations(unit_state(volumes, internal_ca), client))
    login = f"relation-{client.id}"
    old = kurrentdb.users[login].password
    kurrentdb.down()
    with pytest.raises(testing.ActionFailed, match="retries") as failed:
        ctx.run(ctx.on.action("rotate-client-password", params={"username": login}), out)
    after = failed.value.state
    assert after is not None
    kurrentdb.up()
    assert kurrentdb.users[login].password == old

    healed = ctx.run(ctx.on.update_status(), after)

    new = kurrentdb.users[login].password
    assert new != old
    data = healed.get_relation(client.id).local_app_data
    assert secret_content(healed, data["secret-user"])["password"] == new
