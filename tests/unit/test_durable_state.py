"""What must survive a controller error or a pod's recreation survives it.

- a secret read that fails for a passing reason never leads to new material;
- the last good configuration comes from the peer relation, not from stored state;
- a restart is due whenever the running process was started with other files, even when
  the hook that pushed them failed and Juju forgot it.
"""

from __future__ import annotations

import dataclasses
import json

import ops
import pytest
import yaml
from conftest import kurrentdb_container, replace_config, unit_state
from ops import testing
from scenario import mocking

import state as state_module
from workload import paths

BAD_PROFILE = {"profile": "bogus"}
BLOCKED_PROFILE = testing.BlockedStatus(
    "invalid config profile='bogus': allowed: development, staging, uat, production"
)


@pytest.fixture
def failing_secret_reads(monkeypatch: pytest.MonkeyPatch):
    """Make `secret-get` fail with a controller error for the labels or ids a test names.

    Returns the set to fill and a counter of failed calls.
    """
    targets: set[str] = set()
    failures: list[str] = []
    real = mocking._MockModelBackend.secret_get

    def secret_get(self, *, id=None, label=None, refresh=False, peek=False):
        for key in (id, label):
            if key is not None and any(t in key for t in targets):
                failures.append(key)
                raise ops.ModelError("ERROR connection is shut down")
        return real(self, id=id, label=label, refresh=refresh, peek=peek)

    monkeypatch.setattr(mocking._MockModelBackend, "secret_get", secret_get)
    return targets, failures


def app_secret_contents(state: testing.State) -> list[dict[str, str]]:
    return sorted(
        (dict(s.latest_content or s.tracked_content) for s in state.secrets if s.owner == "app"),
        key=lambda c: sorted(c),
    )


def started(ctx, volumes, ca, **kwargs) -> testing.State:
    state = unit_state(volumes, ca, **kwargs)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["ca-secret", "passwords-secret", "both"])
def test_a_secret_read_error_never_replaces_the_ca_or_passwords(
    ctx, volumes, internal_ca, kurrentdb, failing_secret_reads, failing
):
    state = started(ctx, volumes, internal_ca)
    before = app_secret_contents(state)
    peer = next(iter(state.relations))
    ids = {k: v for k, v in peer.local_app_data.items() if k.endswith("-secret-id")}
    targets, failures = failing_secret_reads
    wanted = ["ca-secret-id", "passwords-secret-id"] if failing == "both" else [f"{failing}-id"]
    targets.update(ids[key] for key in wanted)

    out = ctx.run(ctx.on.config_changed(), state)

    assert failures, "the injected error was never hit"
    assert app_secret_contents(out) == before
    assert len([s for s in out.secrets if s.owner == "app"]) == len(before)
    out_peer = out.get_relation(peer.id)
    assert {k: out_peer.local_app_data[k] for k in ids} == ids
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert "now (ModelError); will retry" in out.unit_status.message
    # Once the controller answers again, everything carries on with the same material.
    targets.clear()
    again = ctx.run(ctx.on.update_status(), out)
    assert app_secret_contents(again) == before
    assert again.unit_status == testing.ActiveStatus("Leader")


def test_a_passing_secret_error_is_retried_within_the_hook(
    ctx, volumes, internal_ca, kurrentdb, failing_secret_reads, monkeypatch
):
    state = started(ctx, volumes, internal_ca)
    before = app_secret_contents(state)
    _, failures = failing_secret_reads
    real = mocking._MockModelBackend.secret_get
    calls = {"n": 0}

    def flaky(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            failures.append("first")
            raise ops.ModelError("ERROR connection is shut down")
        return real(self, **kwargs)

    monkeypatch.setattr(mocking._MockModelBackend, "secret_get", flaky)
    out = ctx.run(ctx.on.config_changed(), state)
    assert failures == ["first"]
    assert app_secret_contents(out) == before
    assert out.unit_status == testing.ActiveStatus("Leader")


def test_a_node_certificate_read_error_never_reissues(
    ctx, volumes, internal_ca, kurrentdb, failing_secret_reads
):
    state = started(ctx, volumes, internal_ca)
    [node_secret] = [s for s in state.secrets if s.owner == "unit"]
    certificate = volumes.read(paths.NODE_CERT_FILE)
    targets, failures = failing_secret_reads
    targets.add("node-certificate")

    out = ctx.run(ctx.on.config_changed(), state)

    assert failures
    [after] = [s for s in out.secrets if s.owner == "unit"]
    assert (after.latest_content or after.tracked_content) == (
        node_secret.latest_content or node_secret.tracked_content
    )
    assert volumes.read(paths.NODE_CERT_FILE) == certificate
    assert "cannot read the node certificate secret now" in out.unit_status.message


def test_no_recorded_secret_means_the_leader_creates_one(ctx, volumes, internal_ca, kurrentdb):
    out = started(ctx, volumes, ca=None)
    peer = out.get_relation(next(iter(out.relations)).id)
    assert peer.local_app_data["ca-secret-id"] and peer.local_app_data["passwords-secret-id"]
    labels = {s.label for s in out.secrets if s.owner == "app"}
    assert {"kurrentdb-ca", "kurrentdb-passwords"} <= labels


def test_a_recorded_secret_that_is_gone_is_recreated_and_recorded(ctx, volumes, internal_ca):
    state = unit_state(volumes, internal_ca)
    peer = next(iter(state.relations))
    gone = dataclasses.replace(
        state,
        secrets=[s for s in state.secrets if s.id != peer.local_app_data["ca-secret-id"]],
    )
    out = ctx.run(ctx.on.config_changed(), gone)
    new_id = out.get_relation(peer.id).local_app_data["ca-secret-id"]
    assert new_id != peer.local_app_data["ca-secret-id"]
    assert any(s.id == new_id and "private-key" in s.tracked_content for s in out.secrets)


def test_a_non_leader_never_creates_app_secrets(ctx, volumes):
    out = ctx.run(ctx.on.config_changed(), unit_state(volumes, None, leader=False))
    assert not [s for s in out.secrets if s.owner == "app"]
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to create credentials")


# --- the last good configuration ---------------------------------------------------------------


def test_last_good_config_is_kept_in_the_peer_relation(ctx, volumes, internal_ca, kurrentdb):
    out = started(ctx, volumes, internal_ca, config={"run-projections": "all"})
    peer = out.get_relation(next(iter(out.relations)).id)
    recorded = json.loads(peer.local_app_data["last-good-config"])
    assert recorded["run-projections"] == "all"
    bad = ctx.run(ctx.on.config_changed(), replace_config(out, **BAD_PROFILE))
    assert (
        bad.get_relation(peer.id).local_app_data["last-good-config"]
        == (peer.local_app_data["last-good-config"])
    )


def test_a_new_pod_with_invalid_config_starts_on_the_last_good_one(
    ctx, volumes, internal_ca, kurrentdb, tmp_path
):
    from scenario_fixtures import Volumes, write_passwd

    # The leader recorded a good config; then the user set a bad one.
    first = started(ctx, volumes, internal_ca, config={"run-projections": "all"})
    peer = first.get_relation(next(iter(first.relations)).id)

    # This pod was deleted: a new one has no stored state and an empty /etc/kurrentdb;
    # the volume, the secrets and the peer relation stay. It is not the leader.
    etc, data = tmp_path / "new-etc", volumes.data
    etc.mkdir()
    import os

    write_passwd(etc, os.getuid(), os.getgid())
    fresh_volumes = Volumes(etc=etc, data=data)
    own = {"started": "true", "has-data": "true", "running-members": json.dumps(["kurrentdb/0"])}
    new_pod = dataclasses.replace(
        first,
        leader=False,
        config={**BAD_PROFILE},
        containers={kurrentdb_container(fresh_volumes)},
        relations={dataclasses.replace(peer, local_unit_data=own)},
        stored_states=frozenset(),
    )
    out = ctx.run(ctx.on.pebble_ready(new_pod.get_container(paths.CONTAINER)), new_pod)

    rendered = yaml.safe_load(fresh_volumes.read(paths.CONFIG_FILE))
    assert rendered["RunProjections"] == "All"
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"
    assert out.unit_status == BLOCKED_PROFILE


def test_the_leader_keeps_its_duties_while_the_config_is_invalid(ctx, volumes):
    # A brand-new deployment with a bad option: credentials and the plan still appear.
    out = ctx.run(ctx.on.config_changed(), unit_state(volumes, None, config=BAD_PROFILE))
    peer = out.get_relation(next(iter(out.relations)).id)
    assert peer.local_app_data.get("ca-secret-id")
    assert json.loads(peer.local_app_data["members"]) == ["kurrentdb/0"]
    assert "last-good-config" not in peer.local_app_data
    assert out.unit_status == BLOCKED_PROFILE
    assert not volumes.host_path(paths.CONFIG_FILE).exists()


@pytest.mark.parametrize("recorded", ["{not json", "[1, 2]", '{"profile": "bogus"}', '"x"'])
def test_an_unreadable_last_good_config_is_ignored(ctx, volumes, internal_ca, recorded):
    state = unit_state(volumes, internal_ca, leader=False, config=BAD_PROFILE)
    peer = next(iter(state.relations))
    data = {**peer.local_app_data, "last-good-config": recorded, "members": '["kurrentdb/0"]'}
    state = dataclasses.replace(state, relations={dataclasses.replace(peer, local_app_data=data)})
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == BLOCKED_PROFILE
    assert not volumes.host_path(paths.CONFIG_FILE).exists()


# --- a pending restart is never lost -------------------------------------------------------------


def test_a_hook_dying_after_the_push_still_leads_to_the_restart(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch, pebble_calls
):
    state = started(ctx, volumes, internal_ca)

    def dies(self, *names):
        raise RuntimeError("the hook was killed mid-restart")

    with monkeypatch.context() as patch:
        patch.setattr(ops.Container, "restart", dies)
        with pytest.raises(testing.errors.UncaughtCharmError):
            ctx.run(ctx.on.config_changed(), replace_config(state, run_projections="all"))
    # Juju forgets the failed hook (stored state, relation data); the pushed file stays.
    assert yaml.safe_load(volumes.read(paths.CONFIG_FILE))["RunProjections"] == "All"
    assert pebble_calls.restarts == 0

    out = ctx.run(ctx.on.update_status(), replace_config(state, run_projections="all"))
    assert pebble_calls.restarts == 1
    applied = json.loads(volumes.read(paths.APPLIED_FILE))
    again = ctx.run(ctx.on.update_status(), out)
    assert pebble_calls.restarts == 1, "the restart is done once"
    assert json.loads(volumes.read(paths.APPLIED_FILE))["started"] == applied["started"]
    assert again.unit_status == testing.ActiveStatus("Leader")


def test_a_hook_dying_after_pushing_certificates_still_reloads(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch, pebble_calls
):
    state = started(ctx, volumes, internal_ca)

    def dies(self, sig, *names):
        raise RuntimeError("the hook was killed before the reload")

    with monkeypatch.context() as patch:
        patch.setattr(ops.Container, "send_signal", dies)
        with pytest.raises(testing.errors.UncaughtCharmError):
            ctx.run(ctx.on.config_changed(), replace_config(state, log_level="Debug"))
    assert pebble_calls.signals == []
    ctx.run(ctx.on.update_status(), replace_config(state, log_level="Debug"))
    assert pebble_calls.signals == ["SIGHUP"]
    assert pebble_calls.restarts == 0


def test_a_running_node_without_a_record_is_adopted_not_restarted(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    # A node started by an earlier charm revision, which kept no record in the container.
    state = started(ctx, volumes, internal_ca)
    volumes.host_path(paths.APPLIED_FILE).unlink()
    ctx.run(ctx.on.upgrade_charm(), dataclasses.replace(state, stored_states=frozenset()))
    assert pebble_calls.restarts == 0
    assert volumes.host_path(paths.APPLIED_FILE).exists()


def test_secret_read_attempts_are_bounded(monkeypatch):
    calls: list[int] = []

    def read():
        calls.append(1)
        raise ops.ModelError("ERROR timeout")

    with pytest.raises(state_module.SecretUnavailableError) as raised:
        state_module._read_secret("test", read)
    assert len(calls) == state_module.SECRET_READ_ATTEMPTS
    assert str(raised.value) == "cannot read the test secret now (ModelError)"


# --- secrets whose content is incomplete are repaired, never a KeyError ----------------------


def with_app_secret(state: testing.State, key: str, content: dict[str, str]) -> testing.State:
    peer = next(iter(state.relations))
    secret_id = peer.local_app_data[key]
    secrets = [
        dataclasses.replace(s, tracked_content=content, latest_content=content)
        if s.id == secret_id
        else s
        for s in state.secrets
    ]
    return dataclasses.replace(state, secrets=secrets)


def secret_content(state: testing.State, key: str) -> dict[str, str]:
    peer = next(iter(state.relations))
    secret_id = state.get_relation(peer.id).local_app_data[key]
    secret = next(s for s in state.secrets if s.id == secret_id)
    return dict(secret.latest_content or secret.tracked_content)


@pytest.mark.parametrize(
    "content",
    [
        {"admin-password": "kept-admin-pw", "ops-password": "kept-ops-pw"},
        {"admin-initial-password": "kept-admin-pw", "ops-initial-password": "kept-ops-pw"},
    ],
    ids=["no-initial", "no-current"],
)
def test_a_passwords_secret_missing_keys_is_read_as_what_it_holds(
    ctx, volumes, internal_ca, content
):
    state = with_app_secret(unit_state(volumes, internal_ca), "passwords-secret-id", content)
    out = ctx.run(ctx.on.config_changed(), state)
    layer = out.get_container(paths.CONTAINER).plan.services[paths.SERVICE].environment
    assert layer["KURRENTDB_DEFAULT_ADMIN_PASSWORD"] == "kept-admin-pw"


def test_a_passwords_secret_missing_a_user_is_repaired_by_the_leader(ctx, volumes, internal_ca):
    state = with_app_secret(
        unit_state(volumes, internal_ca), "passwords-secret-id", {"admin-password": "kept-admin"}
    )
    out = ctx.run(ctx.on.config_changed(), state)
    repaired = secret_content(out, "passwords-secret-id")
    assert repaired["admin-password"] == repaired["admin-initial-password"] == "kept-admin"
    assert len(repaired["ops-password"]) == 32


def test_an_incomplete_passwords_secret_leaves_a_non_leader_waiting(ctx, volumes, internal_ca):
    state = unit_state(volumes, internal_ca, leader=False)
    state = with_app_secret(state, "passwords-secret-id", {"admin-password": "x"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to create credentials")


def test_a_ca_secret_without_its_key_is_replaced_by_the_leader(ctx, volumes, internal_ca):
    state = with_app_secret(
        unit_state(volumes, internal_ca), "ca-secret-id", {"certificate": internal_ca.certificate}
    )
    out = ctx.run(ctx.on.config_changed(), state)
    replaced = secret_content(out, "ca-secret-id")
    assert replaced["private-key"] and replaced["certificate"] != internal_ca.certificate
