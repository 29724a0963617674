"""The same state shows the same status whatever event ran: actions and teardown included.

collect-status runs after every dispatch (ops `_main.py`), so a status found only while
reconciling would vanish after `juju run`.
"""

from __future__ import annotations

import pytest
from conftest import replace_config, unit_state
from ops import testing

from workload import paths

BLOCKED = testing.BlockedStatus("invalid config run-projections='some': allowed: none, system, all")


def started(ctx, volumes, ca):
    state = unit_state(volumes, ca)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


@pytest.mark.parametrize(
    "event",
    [
        lambda ctx: ctx.on.action("get-password"),
        lambda ctx: ctx.on.action("get-cluster-status"),
        lambda ctx: ctx.on.update_status(),
        lambda ctx: ctx.on.leader_elected(),
    ],
    ids=["get-password", "get-cluster-status", "update-status", "leader-elected"],
)
def test_an_invalid_config_stays_blocked_after_any_event(
    ctx, volumes, internal_ca, kurrentdb, event
):
    state = started(ctx, volumes, internal_ca)
    state = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="some"))
    assert state.unit_status == BLOCKED
    out = ctx.run(event(ctx), state)
    assert out.unit_status == BLOCKED
    # Nothing was changed on the node meanwhile.
    assert 'RunProjections: "None"' in volumes.read(paths.CONFIG_FILE)


def test_an_ungranted_system_users_secret_stays_blocked_after_an_action(
    ctx, volumes, internal_ca, kurrentdb
):
    state = started(ctx, volumes, internal_ca)
    state = ctx.run(
        ctx.on.config_changed(), replace_config(state, system_users="secret:cu1g0j7jjcmh5kcbp8rg")
    )
    assert isinstance(state.unit_status, testing.BlockedStatus)
    message = state.unit_status.message
    assert message.startswith("invalid config system-users='secret:cu1g0j7jjcmh5kcbp8rg'")
    out = ctx.run(ctx.on.action("get-password"), state)
    assert out.unit_status == testing.BlockedStatus(message)


def test_fixing_the_config_clears_the_status(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    state = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="some"))
    out = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="none"))
    assert out.unit_status == testing.ActiveStatus("Leader")
