"""System users' passwords: generated or chosen, shown by get-password, rotated live."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from conftest import ADMIN_PASSWORD, OPS_PASSWORD, unit_state
from ops import testing

from workload import paths


def passwords_secret(state: testing.State) -> testing.Secret:
    return next(s for s in state.secrets if "admin-password" in s.tracked_content)


def environment(state: testing.State) -> dict:
    return state.get_container(paths.CONTAINER).plan.services[paths.SERVICE].environment


def test_leader_generates_strong_passwords_used_as_initial_passwords(ctx, volumes):
    state = unit_state(volumes, ca=None)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    content = passwords_secret(out).tracked_content
    admin, ops_ = content["admin-password"], content["ops-password"]
    assert len(admin) == len(ops_) == 32 and admin != ops_ and admin.isalnum()
    assert environment(out) == {
        "KURRENTDB_DEFAULT_ADMIN_PASSWORD": admin,
        "KURRENTDB_DEFAULT_OPS_PASSWORD": ops_,
    }


@pytest.mark.parametrize("leader", [True, False])
def test_get_password_action(ctx, volumes, internal_ca, leader):
    state = unit_state(volumes, internal_ca, leader=leader)
    ctx.run(ctx.on.action("get-password", params={"username": "ops"}), state)
    assert ctx.action_results == {"username": "ops", "password": OPS_PASSWORD}
    ctx.run(ctx.on.action("get-password"), state)
    assert ctx.action_results == {"username": "admin", "password": ADMIN_PASSWORD}


def test_get_password_before_the_leader_created_them_fails_clearly(ctx, volumes):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("get-password"), unit_state(volumes, ca=None, leader=False))
    assert failure.value.message == (
        "the leader has not created the passwords yet; try again in a minute"
    )


def test_system_users_chosen_at_deploy_become_the_initial_passwords(ctx, volumes):
    chosen = testing.Secret({"admin": "my-admin-pw", "ops": "my-ops-pw"})
    state = unit_state(volumes, None, config={"system-users": chosen.id}, extra_secrets=(chosen,))
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert environment(out) == {
        "KURRENTDB_DEFAULT_ADMIN_PASSWORD": "my-admin-pw",
        "KURRENTDB_DEFAULT_OPS_PASSWORD": "my-ops-pw",
    }


def running_with_system_users(ctx, volumes, ca, content):
    secret = testing.Secret({"admin": ADMIN_PASSWORD, "ops": OPS_PASSWORD})
    state = unit_state(volumes, ca, config={"system-users": secret.id}, extra_secrets=(secret,))
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    changed = dataclasses.replace(secret, latest_content=content)
    return dataclasses.replace(state, secrets=(state.secrets - {secret}) | {changed}), changed


def test_changing_system_users_rotates_through_the_api_without_restart(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    state, secret = running_with_system_users(
        ctx, volumes, internal_ca, {"admin": "new-admin-pw", "ops": "new-ops-pw"}
    )
    env_before = environment(state)

    out = ctx.run(ctx.on.secret_changed(secret), state)

    # KurrentDB got the new passwords, ops first, authenticated with the old admin one
    resets = [r for r in kurrentdb.requests if r.path.endswith("/command/reset-password")]
    assert [(r.path, r.user) for r in resets] == [
        ("/users/ops/command/reset-password", "admin"),
        ("/users/admin/command/reset-password", "admin"),
    ]
    assert kurrentdb.users["admin"].password == "new-admin-pw"
    assert kurrentdb.users["ops"].password == "new-ops-pw"
    # The charm's record follows, the Pebble environment and the service do not change
    content = passwords_secret(out).latest_content
    assert (content["admin-password"], content["ops-password"]) == ("new-admin-pw", "new-ops-pw")
    assert environment(out) == env_before
    assert pebble_calls.restarts == 0 and pebble_calls.replans == 1
    assert out.unit_status == testing.ActiveStatus("Leader")
    # And nothing is done twice
    ctx.run(ctx.on.update_status(), out)
    assert len([r for r in kurrentdb.requests if r.path.endswith("reset-password")]) == 2


def test_rotation_waits_for_kurrentdb_and_retries(ctx, volumes, internal_ca, kurrentdb):
    state, secret = running_with_system_users(
        ctx, volumes, internal_ca, {"admin": ADMIN_PASSWORD, "ops": "rotated"}
    )
    kurrentdb.down()
    out = ctx.run(ctx.on.secret_changed(secret), state)
    assert out.unit_status == testing.WaitingStatus(
        "password rotation pending until KurrentDB answers"
    )
    kurrentdb.up()
    out = ctx.run(ctx.on.update_status(), out)
    assert kurrentdb.users["ops"].password == "rotated"
    assert out.unit_status == testing.ActiveStatus("Leader")


def test_rotation_with_a_wrong_stored_admin_password_blocks(ctx, volumes, internal_ca, kurrentdb):
    state, secret = running_with_system_users(
        ctx, volumes, internal_ca, {"admin": "next", "ops": OPS_PASSWORD}
    )
    kurrentdb.users["admin"].password = "changed-behind-the-charms-back"
    out = ctx.run(ctx.on.secret_changed(secret), state)
    assert out.unit_status == testing.BlockedStatus(
        "KurrentDB rejected the stored admin password; cannot rotate"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"root": "x"},
            "invalid config system-users='keys root': the secret may hold keys admin, ops",
        ),
        ({"admin": " "}, "invalid config system-users='empty admin': passwords must not be empty"),
    ],
)
def test_bad_system_users_secret_blocks(ctx, volumes, internal_ca, kurrentdb, content, message):
    state, secret = running_with_system_users(ctx, volumes, internal_ca, content)
    out = ctx.run(ctx.on.secret_changed(secret), state)
    assert out.unit_status == testing.BlockedStatus(message)
    assert not [r for r in kurrentdb.requests if r.path.endswith("reset-password")]


def test_system_users_secret_not_granted_blocks(ctx, volumes, internal_ca):
    state = unit_state(volumes, internal_ca, config={"system-users": "secret:cu1g0j7jjcmh5kcbp8rg"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith(
        "invalid config system-users='secret:cu1g0j7jjcmh5kcbp8rg'"
    )
    assert "juju grant-secret" in out.unit_status.message


def test_passwords_never_reach_logs_or_statuses(ctx, volumes, internal_ca, kurrentdb, caplog):
    caplog.set_level(logging.DEBUG)
    state, secret = running_with_system_users(
        ctx, volumes, internal_ca, {"admin": "Rotated-Admin-1", "ops": "Rotated-Ops-2"}
    )
    kurrentdb.down()
    state = ctx.run(ctx.on.secret_changed(secret), state)
    kurrentdb.up()
    state = ctx.run(ctx.on.update_status(), state)
    secrets = (ADMIN_PASSWORD, OPS_PASSWORD, "Rotated-Admin-1", "Rotated-Ops-2")
    logged = caplog.text + "\n".join(entry.message for entry in ctx.juju_log)
    statuses = " ".join(str(s) for s in [*ctx.unit_status_history, state.unit_status])
    for secret_text in secrets:
        assert secret_text not in logged
        assert secret_text not in statuses
