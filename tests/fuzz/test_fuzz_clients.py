"""The database relation's inputs, generated: whatever a client writes in its app databag
(v0 fields, v1 request lists of any shape, resource names, request ids and roles that are
junk or hostile), with the users this charm made in peer data, and the rotation action's
parameter.

Whatever they are: no hook error, no secret shown (the leak check covers the plain relation
data), and every answer is true: a published user exists in KurrentDB with exactly the
published password, in groups the charm allows.
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from clients.requests import NAME
from fuzz.fuzz_harness import example, fuzz_settings

ACTIVE_LEADER = "active"

names = st.sampled_from(
    ["orders", "a", "x" * 65, "", "$all", "orders; drop", "../etc", "ünïcode", "a b", "-x"]
) | st.text(max_size=12)  # fmt: skip
roles = st.sampled_from(
    ["$admins", "$ops", "admin", "ops", "readers", "$root", "a,b", ",", "ops, $ops", "x" * 70]
) | st.text(max_size=12)  # fmt: skip
request_ids = st.sampled_from(["a1b2c3", "", "../x", "x" * 40, "ABC-123"]) | st.text(max_size=8)
json_junk = st.sampled_from(["null", "3", '"x"', "{}", "[[]]", "{not json", '[{"resource": 3}]'])
v1_requests = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "resource": names,
            "request-id": request_ids,
            "salt": st.text(max_size=8),
            "extra-user-roles": roles,
            "entity-type": st.sampled_from(["USER", "GROUP", "x"]),
        },
    ),
    max_size=3,
).map(json.dumps)
client_data = st.one_of(
    st.fixed_dictionaries(
        {"database": names},
        optional={"extra-user-roles": roles, "requested-secrets": st.text(max_size=10)},
    ),
    st.fixed_dictionaries(
        {"version": st.sampled_from(["v1", "v0", "v2", ""])},
        optional={"requests": v1_requests | json_junk | st.text(max_size=10)},
    ),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
managed = st.sampled_from(
    ['{"relation-9": 9}', '{"relation-1": "1"}', "[]", "{", '{"admin": 1}', ""]
) | st.text(max_size=10)  # fmt: skip


@fuzz_settings(40)
@given(remote=client_data, users=managed, rotate=st.none() | st.text(max_size=12) | names)
def test_any_client_request_never_fails_a_hook_and_every_answer_is_true(
    world, remote, users, rotate
):
    with example(world, "database relation data") as ex:
        from ops import testing

        peer = next(r for r in ex.state.relations if r.endpoint == "kurrentdb-peers")
        peer = dataclasses.replace(
            peer, local_app_data={**peer.local_app_data, "client-users": users}
        )
        relation = testing.Relation("database", remote_app_name="client", remote_app_data=remote)
        others = {r for r in ex.state.relations if r.id != peer.id}
        state = dataclasses.replace(ex.state, relations={*others, peer, relation})
        hook = ex.run(ex.ctx.on.relation_changed(relation), state)
        if rotate is not None:
            hook = ex.run(
                ex.ctx.on.action("rotate-client-password", params={"username": rotate}),
                hook.state,
            )
        hook = ex.run(ex.ctx.on.update_status(), hook.state)
        if hook.status.name != ACTIVE_LEADER:
            ex.fail_status(f"{hook.status!r}: a client's request never changes the unit status")

        double = ex.world.double
        for login, user in double.users.items():
            if login in ("admin", "ops"):
                continue
            assert login.startswith(f"relation-{relation.id}"), f"a stray user {login!r}"
            for group in user.groups:
                assert group in ("$admins", "$ops") or NAME.fullmatch(group), group
        data = hook.state.get_relation(relation.id).local_app_data
        published = []
        if "requests" in data:
            published = [a.get("secret-user") for a in json.loads(data["requests"])]
        elif "secret-user" in data:
            published = [data["secret-user"]]
        for uri in filter(None, published):
            content = hook.state.get_secret(id=uri).latest_content or {}
            user = double.users.get(content.get("username", ""))
            assert user is not None, "an answer names a user KurrentDB does not have"
            assert user.password == content.get("password"), "an answer's password is wrong"
