"""The charm against Pebble as it really behaves (a real Pebble 1.32, juju-facts §12).

- a check runs from the moment its layer is added, so it is added disabled and started
  with the service;
- a process that exits within 1 s makes start/restart/replan raise ChangeError, and Pebble
  backs off, reporting the service as the plain string `backoff`;
- the kill-delay timer of an earlier stop SIGKILLs a process stopped again too soon;
- the user and group are looked up by name, and the image may lack either.
"""

from __future__ import annotations

import dataclasses
import json
import time

import ops
import pytest
from conftest import replace_config, unit_state
from ops import testing

import workload.kurrentdb as workload_module
from workload import paths


def started(ctx, volumes, ca, **kwargs) -> testing.State:
    state = unit_state(volumes, ca, **kwargs)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def waiting_to_join(volumes, ca) -> testing.State:
    """A new unit the leader has made a member but not yet allowed to start."""
    state = unit_state(volumes, ca, leader=False)
    peer = next(iter(state.relations))
    app = {
        **peer.local_app_data,
        "members": json.dumps(["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"]),
        "fresh-allowed": "[]",
    }
    peers = {
        n: {"address": f"kurrentdb-{n}.x", "started": "true", "has-data": "true"} for n in (1, 2)
    }
    peer = dataclasses.replace(peer, local_app_data=app, peers_data=peers)
    return dataclasses.replace(state, relations={peer})


def check_info(state: testing.State) -> testing.CheckInfo:
    return next(
        c for c in state.get_container(paths.CONTAINER).check_infos if c.name == paths.CHECK
    )


def test_the_check_is_added_disabled_and_started_with_the_service(
    ctx, volumes, internal_ca, kurrentdb
):
    out = started(ctx, volumes, internal_ca)
    check = out.get_container(paths.CONTAINER).plan.checks[paths.CHECK]
    assert check.startup == ops.pebble.CheckStartup.DISABLED
    assert check_info(out).status == ops.pebble.CheckStatus.UP


def test_a_unit_waiting_for_its_turn_runs_no_check(ctx, volumes, internal_ca):
    state = waiting_to_join(volumes, internal_ca)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    service = out.get_container(paths.CONTAINER).service_statuses.get(paths.SERVICE)
    assert service != ops.pebble.ServiceStatus.ACTIVE
    # An inactive check never goes down, so the pod stays out of pebble-check-failed.
    assert check_info(out).status == ops.pebble.CheckStatus.INACTIVE
    assert out.unit_status == testing.WaitingStatus(
        "waiting to join the 3-node cluster until nodes with data are in sync"
    )


def test_a_check_failure_while_waiting_changes_nothing(ctx, volumes, internal_ca, pebble_calls):
    state = waiting_to_join(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    container = state.get_container(paths.CONTAINER)
    down = dataclasses.replace(check_info(state), status=ops.pebble.CheckStatus.DOWN, failures=3)
    state = dataclasses.replace(
        state, containers={dataclasses.replace(container, check_infos={down})}
    )
    before_peer = state.get_relation(next(iter(state.relations)).id)
    calls = (pebble_calls.replans, pebble_calls.restarts, list(pebble_calls.signals))

    out = ctx.run(ctx.on.pebble_check_failed(state.get_container(paths.CONTAINER), down), state)

    assert (pebble_calls.replans, pebble_calls.restarts, pebble_calls.signals) == calls
    out_peer = out.get_relation(before_peer.id)
    assert out_peer.local_unit_data == before_peer.local_unit_data
    assert out.unit_status == state.unit_status


def exits_quickly(self, *names):
    raise ops.pebble.ChangeError(
        'cannot perform the following tasks:\n- Start service "kurrentdb" (cannot start '
        "service: exited quickly with code 1, will restart)",
        ops.pebble.Change.from_dict(
            {
                "id": "7",
                "kind": "replan",
                "summary": "",
                "status": "Error",
                "ready": True,
                "spawn-time": "2026-01-01T00:00:00Z",
                "err": "exited quickly with code 1",
            }
        ),
    )


def backoff_service(self, name):
    return ops.pebble.ServiceInfo(
        name=paths.SERVICE, startup=ops.pebble.ServiceStartup.ENABLED, current="backoff"
    )


def test_a_process_exiting_at_start_is_a_clear_status_not_a_crash(
    ctx, volumes, internal_ca, monkeypatch
):
    monkeypatch.setattr(ops.Container, "replan", exits_quickly)
    monkeypatch.setattr(ops.Container, "get_service", backoff_service)
    state = unit_state(volumes, internal_ca)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert out.unit_status == testing.BlockedStatus(
        "KurrentDB exits right after starting; Pebble retries with back-off: "
        "see kubectl logs kurrentdb-0 -c kurrentdb"
    )
    # Pebble is restarting it with the files the charm pushed: recorded as started.
    assert json.loads(volumes.read(paths.APPLIED_FILE))["started"]


def test_backoff_is_left_to_pebble(ctx, volumes, internal_ca, kurrentdb, monkeypatch, pebble_calls):
    state = started(ctx, volumes, internal_ca)
    replans = pebble_calls.replans
    monkeypatch.setattr(ops.Container, "get_service", backoff_service)
    for event in (ctx.on.update_status(), ctx.on.config_changed(), ctx.on.update_status()):
        state = ctx.run(event, replace_config(state, run_projections="system"))
    # A replan during back-off would restart the process at once, on every hook.
    assert pebble_calls.replans == replans
    assert pebble_calls.restarts == 0
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert "back-off" in state.unit_status.message


def test_a_restart_exiting_quickly_does_not_crash_the_hook(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch
):
    state = started(ctx, volumes, internal_ca)
    monkeypatch.setattr(ops.Container, "restart", exits_quickly)
    out = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="system"))
    applied = json.loads(volumes.read(paths.APPLIED_FILE))
    assert applied["last-stop"] > 0
    assert out.unit_status  # the hook completed; the next status follows the service


def test_a_restart_never_follows_a_stop_within_kill_delay(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch, pebble_calls
):
    state = started(ctx, volumes, internal_ca)
    monkeypatch.setattr(workload_module, "STOP_SPACING", 20.0)
    recent = time.time() - 5
    applied = json.loads(volumes.read(paths.APPLIED_FILE))
    volumes.host_path(paths.APPLIED_FILE).write_text(json.dumps({**applied, "last-stop": recent}))
    slept: list[float] = []
    monkeypatch.setattr(workload_module.time, "sleep", slept.append)

    ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="system"))

    assert pebble_calls.restarts == 1
    assert len(slept) == 1 and 14 <= slept[0] <= 15
    assert json.loads(volumes.read(paths.APPLIED_FILE))["last-stop"] >= recent + 5


def test_a_restart_long_after_the_last_stop_does_not_wait(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch, pebble_calls
):
    state = started(ctx, volumes, internal_ca)
    monkeypatch.setattr(workload_module, "STOP_SPACING", 20.0)
    slept: list[float] = []
    monkeypatch.setattr(workload_module.time, "sleep", slept.append)
    ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="system"))
    assert pebble_calls.restarts == 1 and slept == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"passwd": None}, "the image has no /etc/passwd; use a KurrentDB 25.0+ image"),
        ({"group": None}, "the image has no /etc/group; use a KurrentDB 25.0+ image"),
        (
            {"passwd": "root:x:0:0::/:/bin/sh\n"},
            "the image has no 'kurrent' user; use a KurrentDB 25.0+ image",
        ),
        (
            {"group": "root:x:0:\nkurrentdb:x:1001:\n"},
            "the image has no 'kurrent' group; use a KurrentDB 25.0+ image",
        ),
        (
            {"passwd": "kurrent:x:notanumber:1001::/:/bin/sh\n"},
            "the image has no 'kurrent' user; use a KurrentDB 25.0+ image",
        ),
    ],
)
def test_an_image_without_the_user_or_group_blocks(ctx, volumes, internal_ca, files, message):
    for name, content in files.items():
        if content is None:
            (volumes.etc / name).unlink()
        else:
            (volumes.etc / name).write_text(content)
    state = unit_state(volumes, internal_ca)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert out.unit_status == testing.BlockedStatus(message)
    assert not volumes.host_path(paths.CONFIG_FILE).exists()
    # And the same status after an unrelated event.
    assert ctx.run(ctx.on.update_status(), out).unit_status == testing.BlockedStatus(message)


def test_the_group_is_taken_from_etc_group(ctx, volumes, internal_ca, kurrentdb, monkeypatch):
    import os

    (volumes.etc / "group").write_text(f"kurrent:x:{os.getgid()}:\n")
    chowned: list[list[str]] = []
    real_exec = ops.Container.exec

    def exec_(self, command, **kwargs):
        chowned.append(list(command))
        return real_exec(self, command, **kwargs)

    monkeypatch.setattr(ops.Container, "exec", exec_)
    (volumes.etc / "passwd").write_text(f"kurrent:x:{os.getuid()}:4242::/:/bin/sh\n")
    started(ctx, volumes, internal_ca)
    # The volume already belongs to uid:gid (by name), so it is not chowned.
    assert not [command for command in chowned if command[0] == "chown"]
