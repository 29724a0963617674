"""Unit status and workload version, from what KurrentDB says about itself."""

from __future__ import annotations

import dataclasses

import ops
import pytest
from conftest import unit_state
from ops import testing

from workload import paths


def started(ctx, volumes, ca):
    state = unit_state(volumes, ca)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


@pytest.mark.parametrize("role", ["Leader", "Follower", "ReadOnlyReplica"])
def test_active_with_the_node_role(ctx, volumes, internal_ca, kurrentdb, role):
    kurrentdb.state = role
    out = started(ctx, volumes, internal_ca)
    assert out.unit_status == testing.ActiveStatus(role)
    assert out.workload_version == "26.1.0"


def test_workload_version_follows_the_running_node(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    kurrentdb.version = "26.0.3"
    assert ctx.run(ctx.on.update_status(), state).workload_version == "26.0.3"


@pytest.mark.parametrize("node_state", ["Initializing", "CatchingUp", "PreReplica", "ShuttingDown"])
def test_waiting_while_the_node_is_not_serving(ctx, volumes, internal_ca, kurrentdb, node_state):
    kurrentdb.state = node_state
    out = started(ctx, volumes, internal_ca)
    assert out.unit_status == testing.WaitingStatus(f"KurrentDB node is {node_state}")


def test_kurrentdb_down_is_a_waiting_status_not_a_crash(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    kurrentdb.down()
    out = ctx.run(ctx.on.update_status(), state)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert out.unit_status.message.startswith("KurrentDB is not answering: ")
    assert "connection refused" in out.unit_status.message


def test_kurrentdb_answering_errors_is_a_waiting_status(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    kurrentdb.fail_with = 500
    out = ctx.run(ctx.on.update_status(), state)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "500" in out.unit_status.message


def test_check_failure_updates_status(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    kurrentdb.state = "Initializing"
    container = state.get_container(paths.CONTAINER)
    check = testing.CheckInfo(
        paths.CHECK,
        level="ready",
        startup=ops.pebble.CheckStartup.DISABLED,
        status="down",
        failures=3,
    )
    failing = dataclasses.replace(container, check_infos={check})
    state = dataclasses.replace(state, containers={failing})
    out = ctx.run(ctx.on.pebble_check_failed(failing, check), state)
    assert out.unit_status == testing.WaitingStatus("KurrentDB node is Initializing")


def test_waiting_without_peer_relation(ctx, volumes, internal_ca):
    state = dataclasses.replace(unit_state(volumes, internal_ca), relations=set())
    out = ctx.run(ctx.on.install(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for the peer relation")


def test_stopped_service_is_reported(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    container = state.get_container(paths.CONTAINER)
    stopped = dataclasses.replace(
        container, service_statuses={paths.SERVICE: ops.pebble.ServiceStatus.INACTIVE}
    )
    # A stopped service (e.g. the pod restarted) is started again by the next reconcile.
    out = ctx.run(ctx.on.update_status(), dataclasses.replace(state, containers={stopped}))
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"
    assert out.unit_status == testing.ActiveStatus("Leader")
