"""The image's KurrentDB version: asked once per pod, deciding the options and support."""

from __future__ import annotations

import dataclasses

import ops
import pytest
from conftest import kurrentdb_container, unit_state
from ops import testing

from workload import paths


def with_version(state: testing.State, volumes, output: str, code: int = 0) -> testing.State:
    container = kurrentdb_container(volumes)
    execs = {e for e in container.execs if e.command_prefix[0] != paths.BINARY}
    execs.add(testing.Exec([paths.BINARY, "--version"], stdout=output, return_code=code))
    return dataclasses.replace(state, containers={dataclasses.replace(container, execs=execs)})


def version_line(version: str) -> str:
    return f"KurrentDB version {version} oss (tags/v{version}/0123abc, Mon, 1 Dec 2026)\n"


def start(ctx, state):
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def test_an_unsupported_image_is_blocked_and_never_started(ctx, volumes, internal_ca):
    state = with_version(unit_state(volumes, internal_ca), volumes, version_line("25.1.4"))
    out = start(ctx, state)
    assert out.unit_status == testing.BlockedStatus(
        "KurrentDB 25.1.4 is not supported: use a KurrentDB 26.0 or newer image, "
        "e.g. docker.kurrent.io/kurrent-lts/kurrentdb:26.0.3"
    )
    assert paths.SERVICE not in out.get_container(paths.CONTAINER).service_statuses
    assert not volumes.host_path(paths.CONFIG_FILE).exists()


def test_options_follow_the_image_version(ctx, volumes, internal_ca, kurrentdb):
    config = {"extra-options": "{MaxPartitionStateCacheSize: 1000}"}
    older = with_version(
        unit_state(volumes, internal_ca, config=config), volumes, version_line("26.0.3")
    )
    out = start(ctx, older)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "not in KurrentDB 26.0.3 (added in 26.1.0)" in out.unit_status.message

    newer = with_version(
        unit_state(volumes, internal_ca, config=config), volumes, version_line("26.1.0")
    )
    out = start(ctx, newer)
    assert "MaxPartitionStateCacheSize: 1000" in volumes.read(paths.CONFIG_FILE)
    assert out.unit_status == testing.ActiveStatus("Leader")


def test_the_version_is_asked_once_per_pod(ctx, volumes, internal_ca, kurrentdb, monkeypatch):
    asked: list[list[str]] = []
    real = ops.Container.exec

    def exec_(self, command, **kwargs):
        if command[0] == paths.BINARY:
            asked.append(list(command))
        return real(self, command, **kwargs)

    monkeypatch.setattr(ops.Container, "exec", exec_)
    state = start(ctx, unit_state(volumes, internal_ca))
    for _ in range(3):
        state = ctx.run(ctx.on.update_status(), state)
    assert asked == [[paths.BINARY, "--version", "--disable-log-file"]]
    # A new pod (empty stored state) asks again: it may run another image.
    ctx.run(ctx.on.update_status(), dataclasses.replace(state, stored_states=frozenset()))
    assert len(asked) == 2


@pytest.mark.parametrize(("output", "code"), [("", 0), ("garbage\n", 0), ("", 127)])
def test_an_unreadable_version_falls_back_on_the_pinned_image(
    ctx, volumes, internal_ca, kurrentdb, output, code
):
    state = with_version(unit_state(volumes, internal_ca), volumes, output, code)
    out = start(ctx, state)
    assert out.unit_status == testing.ActiveStatus("Leader")


def test_a_last_good_config_the_image_cannot_run_is_not_used(ctx, volumes, internal_ca):
    import json

    # Recorded while the cluster ran 26.1; this pod's image is 26.0.3 and the config is bad.
    last_good = {
        "profile": "production",
        "log-level": "Warning",
        "run-projections": "none",
        "start-standard-projections": False,
        "extra-options": {"MaxPartitionStateCacheSize": 1000},
        "system-users": None,
    }
    state = unit_state(volumes, internal_ca, config={"profile": "bogus"})
    peer = next(iter(state.relations))
    data = {**peer.local_app_data, "last-good-config": json.dumps(last_good)}
    state = dataclasses.replace(state, relations={dataclasses.replace(peer, local_app_data=data)})
    out = start(ctx, state)
    assert not volumes.host_path(paths.CONFIG_FILE).exists()
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "profile='bogus'" in out.unit_status.message
