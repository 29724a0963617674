"""The Pebble plan, the files on the volume and when KurrentDB is (not) restarted."""

from __future__ import annotations

import yaml
from conftest import ADMIN_PASSWORD, OPS_PASSWORD, replace_config, unit_state
from ops import testing

from workload import paths


def running(ctx, volumes, ca, **config):
    """Deploy and start a node; return the state after its first pebble-ready."""
    state = unit_state(volumes, ca, config=config)
    container = state.get_container(paths.CONTAINER)
    return ctx.run(ctx.on.pebble_ready(container), state)


def test_pebble_plan_runs_kurrentdb_with_initial_passwords(ctx, volumes, internal_ca, pebble_calls):
    out = running(ctx, volumes, internal_ca)
    plan = out.get_container(paths.CONTAINER).plan
    service = plan.services[paths.SERVICE]
    assert service.command == "/opt/kurrentdb/KurrentDB --config /etc/kurrentdb/kurrentdb.conf"
    assert (service.user, service.group) == ("kurrent", "kurrent")
    assert service.kill_delay == "20s"
    assert service.environment == {
        "KURRENTDB_DEFAULT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KURRENTDB_DEFAULT_OPS_PASSWORD": OPS_PASSWORD,
    }
    check = plan.checks[paths.CHECK]
    assert check.level.value == "ready"
    assert (
        check.exec is not None
        and "--cacert /etc/kurrentdb/certs/trusted-roots.pem" in check.exec["command"]
    )
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"
    assert pebble_calls.replans == 1 and pebble_calls.restarts == 0
    assert out.opened_ports == {testing.TCPPort(2113)}


def test_config_file_on_the_volume(ctx, volumes, internal_ca):
    running(ctx, volumes, internal_ca, **{"run-projections": "all", "profile": "staging"})
    text = volumes.read(paths.CONFIG_FILE)
    assert text.startswith("---\n# KurrentDB configuration, rendered by the kurrentdb charm.")
    options = yaml.safe_load(text)
    assert options["RunProjections"] == "All"
    assert options["LogLevel"] == "Information"
    assert (
        options["NodeHostAdvertiseAs"] == "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local"
    )
    # Passwords only travel through the environment: never in a file KurrentDB reads.
    assert ADMIN_PASSWORD not in text and "Password" not in text


def test_second_run_changes_nothing(ctx, volumes, internal_ca, pebble_calls):
    state = running(ctx, volumes, internal_ca)
    mtimes = {
        p: volumes.host_path(p).stat().st_mtime_ns
        for p in (
            paths.CONFIG_FILE,
            paths.NODE_CERT_FILE,
            paths.NODE_KEY_FILE,
            paths.CA_FILE,
            paths.TRUST_BUNDLE,
        )
    }
    calls = (pebble_calls.replans, pebble_calls.restarts, len(pebble_calls.signals))

    for event in (ctx.on.update_status(), ctx.on.config_changed(), ctx.on.upgrade_charm()):
        state = ctx.run(event, state)

    assert (pebble_calls.replans, pebble_calls.restarts, len(pebble_calls.signals)) == calls
    for path, mtime in mtimes.items():
        assert volumes.host_path(path).stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert state.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"


def test_log_level_change_reloads_without_restart(ctx, volumes, internal_ca, pebble_calls):
    state = running(ctx, volumes, internal_ca)
    out = ctx.run(ctx.on.config_changed(), replace_config(state, log_level="Debug"))
    assert yaml.safe_load(volumes.read(paths.CONFIG_FILE))["LogLevel"] == "Debug"
    assert pebble_calls.restarts == 0
    assert pebble_calls.signals == ["SIGHUP"]
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"


def test_other_config_changes_restart_once(ctx, volumes, internal_ca, pebble_calls):
    state = running(ctx, volumes, internal_ca)
    state = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="system"))
    assert yaml.safe_load(volumes.read(paths.CONFIG_FILE))["RunProjections"] == "System"
    assert pebble_calls.restarts == 1
    state = ctx.run(ctx.on.update_status(), state)
    assert pebble_calls.restarts == 1


def test_restart_is_not_lost_when_the_hook_fails_after_pushing(
    ctx, volumes, internal_ca, monkeypatch, pebble_calls
):
    import ops

    state = running(ctx, volumes, internal_ca)

    def broken_restart(self, *names):
        raise ops.pebble.APIError({}, 500, "Internal Server Error", "service failed to stop")

    with monkeypatch.context() as patch:
        patch.setattr(ops.Container, "restart", broken_restart)
        state = ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="all"))
    assert state.unit_status == testing.MaintenanceStatus(
        "Pebble refused a request (500: service failed to stop); will retry"
    )
    # The file is already new, but the next hook still restarts the node.
    assert "All" in volumes.read(paths.CONFIG_FILE)
    ctx.run(ctx.on.update_status(), state)
    assert pebble_calls.restarts == 1


def test_container_not_ready_waits(ctx, volumes, internal_ca):
    state = unit_state(volumes, internal_ca, can_connect=False)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for Pebble in the kurrentdb container")


def test_image_without_kurrent_user_blocks(ctx, volumes, internal_ca):
    (volumes.etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    out = ctx.run(ctx.on.config_changed(), unit_state(volumes, internal_ca))
    assert out.unit_status == testing.BlockedStatus(
        "the image has no 'kurrent' user; use a KurrentDB 25.0+ image"
    )
    assert not volumes.host_path(paths.CONFIG_FILE).exists()
