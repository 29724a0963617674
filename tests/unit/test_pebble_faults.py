"""Pebble failing mid-hook is a status that names the cause, never a hook error.

And statuses say what is wrong when the volume is missing or KurrentDB refuses the charm.
"""

from __future__ import annotations

import dataclasses

import ops
import pytest
from conftest import replace_config, unit_state
from ops import testing

from workload import paths


def started(ctx, volumes, ca, **kwargs):
    state = unit_state(volumes, ca, **kwargs)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def path_error(message: str):
    def push(self, path, *args, **kwargs):
        raise ops.pebble.PathError("generic-file-error", f"open {path}.tmp: {message}")

    return push


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (
            "no space left on device",
            testing.BlockedStatus(
                "the disk of the kurrentdb container is full: free space or use a larger volume"
            ),
        ),
        (
            "read-only file system",
            testing.BlockedStatus(
                "the kurrentdb container has a read-only file system where the charm writes"
            ),
        ),
        (
            "input/output error",
            testing.MaintenanceStatus(
                "Pebble could not use a file in the kurrentdb container "
                "(open /etc/kurrentdb/certs/ca/ca.crt.tmp: input/output error)"
            ),
        ),
    ],
)
def test_a_push_that_fails_names_the_cause(ctx, volumes, internal_ca, monkeypatch, message, status):
    monkeypatch.setattr(ops.Container, "push", path_error(message))
    state = unit_state(volumes, internal_ca)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert out.unit_status == status


@pytest.mark.parametrize(
    ("method", "error", "message"),
    [
        ("get_plan", ops.pebble.ConnectionError("socket closed"),
         "lost the connection to Pebble in the kurrentdb container; will retry"),
        ("get_plan", ops.pebble.APIError({}, 500, "Internal Server Error", "plan\nlocked"),
         "Pebble refused a request (500: plan locked); will retry"),
        ("list_files", ops.pebble.PathError("not-found", "stat /var/lib/kurrentdb: gone"),
         "Pebble could not use a file in the kurrentdb container (stat /var/lib/kurrentdb: gone)"),
    ],
)  # fmt: skip
def test_pebble_failing_mid_hook_is_retried(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch, method, error, message
):
    state = started(ctx, volumes, internal_ca)

    def fails(self, *args, **kwargs):
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(ops.Container, method, fails)
        out = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="all"))
    assert out.unit_status.message == message
    assert "\n" not in out.unit_status.message
    # The next hook, with Pebble back, carries on.
    again = ctx.run(ctx.on.update_status(), out)
    assert again.unit_status == testing.ActiveStatus("Leader")


def test_a_failing_chown_is_retried(ctx, volumes, internal_ca):
    import os

    from scenario_fixtures import write_passwd

    write_passwd(volumes.etc, uid=os.getuid() + 1, gid=os.getgid())  # the volume needs a chown
    state = unit_state(volumes, internal_ca)
    container = state.get_container(paths.CONTAINER)
    execs = {e for e in container.execs if e.command_prefix != ("chown",)}
    execs.add(testing.Exec(["chown"], return_code=1, stderr="chown: Operation not permitted"))
    state = dataclasses.replace(state, containers={dataclasses.replace(container, execs=execs)})
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert out.unit_status == testing.MaintenanceStatus(
        "chown failed in the kurrentdb container (exit code 1); will retry"
    )


def test_no_volume_yet_is_said(ctx, volumes, internal_ca):
    state = dataclasses.replace(unit_state(volumes, internal_ca), storages=frozenset())
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for the data volume")
    assert not volumes.host_path(paths.CONFIG_FILE).exists()


def test_kurrentdb_refusing_the_charm_is_said(ctx, volumes, internal_ca, kurrentdb):
    state = started(ctx, volumes, internal_ca)
    kurrentdb.fail_with, kurrentdb.fail_body = 401, "Unauthorized"
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status.message.startswith("KurrentDB rejected the charm's credentials (")


@pytest.mark.parametrize("state_name", ["", "   "])
def test_an_empty_node_state_is_never_shown_as_a_role(
    ctx, volumes, internal_ca, kurrentdb, state_name
):
    state = started(ctx, volumes, internal_ca)
    kurrentdb.state = state_name
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status.message.startswith("KurrentDB answered what the charm cannot use: ")
    assert "KurrentDB node is " not in out.unit_status.message
    assert "None" not in out.unit_status.message


def test_reordering_extra_options_changes_nothing(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    first = "{MaxAppendSize: 1048576, Metrics: {A: 1, B: 2}, SkipIndexVerify: true}"
    reordered = "{SkipIndexVerify: true, Metrics: {B: 2, A: 1}, MaxAppendSize: 1048576}"
    state = started(ctx, volumes, internal_ca, config={"extra-options": first})
    rendered = volumes.read(paths.CONFIG_FILE)
    ctx.run(ctx.on.config_changed(), replace_config(state, extra_options=reordered))
    assert (pebble_calls.restarts, pebble_calls.signals) == (0, [])
    assert volumes.read(paths.CONFIG_FILE) == rendered
