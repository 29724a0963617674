"""The backup actions as a user runs them: `juju run kurrentdb/1 create-backup`, `list-backups`.

Scenario runs the charm with an s3-parameters relation (s3-integrator's v0 data) pointing
at a real S3 server (moto, started once per session), the KurrentDB double answering the
charm's API calls, and a synthetic KurrentDB data directory on the `data` storage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json

import backends
import ops
import pytest
from datadir import DataDirSpec, SyntheticDataDir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops import testing
from scenario_fixtures import unit_state
from secret_forms import encodings
from unit.conftest import (  # noqa: F401 (fixtures)
    ctx,
    internal_ca,
    kurrentdb,
    no_waiting,
    pod_environment,
    pod_labels,
    volumes,
)

from backup import engine
from backup.manifest import Started, alive_key, format_time, started_key
from backup.s3 import S3Store
from charm import KurrentDBCharm

MIB = 2**20
FQDN = "kurrentdb-{}.kurrentdb-endpoints.prod.svc.cluster.local"


def s3_relation(server, bucket: str, **overrides: str) -> testing.Relation:
    """s3-integrator's (v0) app data: plain keys, credentials included."""
    data = backends.s3_integrator_data(server, bucket)
    return testing.Relation("s3-parameters", remote_app_name="s3", remote_app_data=data | overrides)


@pytest.fixture
def bucket(moto_server):
    with backends.fresh_bucket(moto_server) as name:
        yield name


def peer_report(n: int, role: str) -> dict[str, str]:
    return {
        "address": FQDN.format(n),
        "started": "true",
        "has-data": "true",
        "running-members": json.dumps([f"kurrentdb/{i}" for i in range(3)]),
        "role": role,
        "caught-up": "true",
    }


def gossip(kurrentdb, roles: dict[int, str]) -> list[dict]:
    """The double's /gossip: these nodes alive, in sync, in these roles."""
    base = kurrentdb.node.gossip_json()
    return [
        base
        | {
            "state": role,
            "httpEndPointIp": FQDN.format(n),
            "internalHttpEndPointIp": FQDN.format(n),
            "instanceId": f"00000000-0000-0000-0000-00000000000{n}",
        }
        for n, role in roles.items()
    ]


def backup_state(ctx, volumes, ca, relation, role="Follower", peers=None, data=True):
    """A member of a 3-node cluster whose node has the given role, a data directory on its
    storage (as the charm container sees it) and the storage relation."""
    state = unit_state(volumes, ca, leader=False)
    peer = next(iter(state.relations))
    peer = dataclasses.replace(
        peer,
        local_unit_data=peer_report(0, role),
        peers_data=peers or {1: peer_report(1, "Leader"), 2: peer_report(2, "Follower")},
    )
    relations = {peer} if relation is None else {peer, relation}
    state = dataclasses.replace(state, relations=relations)
    if data:
        root = next(iter(state.storages)).get_filesystem(ctx)
        SyntheticDataDir.create(root, DataDirSpec(total_size=24 * MIB, chunk_size=8 * MIB))
    return state


@pytest.fixture
def follower_state(ctx, volumes, internal_ca, kurrentdb, moto_server, bucket):
    """kurrentdb/0, an in-sync Follower of a 3-node cluster, related to the moto bucket."""
    kurrentdb.state = "Follower"
    kurrentdb.members = gossip(kurrentdb, {0: "Follower", 1: "Leader", 2: "Follower"})
    return backup_state(ctx, volumes, internal_ca, s3_relation(moto_server, bucket))


def test_create_backup_without_a_storage_relation_says_what_to_relate(
    ctx, volumes, internal_ca, kurrentdb
):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("create-backup"), backup_state(ctx, volumes, internal_ca, None))
    assert "relate s3-integrator" in failed.value.message


def test_a_follower_backs_up_online_and_list_backups_shows_it(
    ctx, kurrentdb, moto_server, bucket, follower_state
):
    state = follower_state
    ctx.run(ctx.on.action("create-backup"), state)
    results = dict(ctx.action_results or {})
    assert results["downtime-seconds"] == 0
    # The active chunk's preallocated zeros compress: less goes up than the files hold.
    assert 16 * MIB < int(results["bytes-uploaded"]) <= int(results["bytes-total"])
    assert any("complete" in line for line in ctx.action_logs)
    # The manifest is in the bucket, under the relation's path, and names this unit.
    store = S3Store(backends.s3_settings(moto_server, bucket))
    manifest = engine.load_manifest(store, results["backup-id"])
    assert manifest.source.unit == "kurrentdb/0"
    assert manifest.source.kurrentdb_version == kurrentdb.node.version

    ctx.run(ctx.on.action("list-backups", params={"format": "json"}), state)
    rows = json.loads(ctx.action_results["backups"])
    assert [(r["id"], r["state"], r["unit"]) for r in rows] == [
        (results["backup-id"], "complete", "kurrentdb/0")
    ]
    ctx.run(ctx.on.action("list-backups"), state)
    table = ctx.action_results["backups"].splitlines()
    assert table[0].split()[:2] == ["id", "state"]
    assert table[1].split()[:2] == [results["backup-id"], "complete"]


def test_a_second_backup_uploads_only_what_changed(
    ctx, kurrentdb, moto_server, bucket, follower_state
):
    state = follower_state
    ctx.run(ctx.on.action("create-backup"), state)
    first = dict(ctx.action_results or {})
    ctx.run(ctx.on.action("create-backup"), state)
    second = dict(ctx.action_results or {})
    assert second["backup-id"] != first["backup-id"]
    assert int(second["bytes-uploaded"]) < int(first["bytes-total"]) // 10


def test_the_kurrentdb_leader_refuses_unless_forced(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket
):
    kurrentdb.state = "Leader"
    kurrentdb.members = gossip(kurrentdb, {0: "Leader", 1: "Follower", 2: "Follower"})
    peers = {1: peer_report(1, "Follower"), 2: peer_report(2, "Follower")}
    state = backup_state(
        ctx, volumes, internal_ca, s3_relation(moto_server, bucket), role="Leader", peers=peers
    )
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("create-backup"), state)
    assert "kurrentdb/1, kurrentdb/2" in failed.value.message
    assert "force=true" in failed.value.message
    ctx.run(ctx.on.action("create-backup", params={"force": True}), state)
    assert ctx.action_results["backup-id"]


def test_scavenging_pauses_for_the_backup_and_resumes_after(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket
):
    kurrentdb.state = "Follower"
    kurrentdb.members = gossip(kurrentdb, {0: "Follower", 1: "Leader", 2: "Follower"})
    kurrentdb.auto_scavenge.enabled = True
    kurrentdb.auto_scavenge.status = "Waiting"
    kurrentdb.auto_scavenge.schedule = "0 36 1 * * *"
    state = backup_state(ctx, volumes, internal_ca, s3_relation(moto_server, bucket))
    ctx.run(ctx.on.action("create-backup"), state)
    assert any("pausing auto-scavenge" in line for line in ctx.action_logs)
    assert any("auto-scavenge resumed" in line for line in ctx.action_logs)
    assert kurrentdb.auto_scavenge.status == "Waiting"


def test_a_storage_failure_fails_with_its_code_and_no_secret(
    ctx, volumes, internal_ca, kurrentdb, moto_server
):
    kurrentdb.state = "Follower"
    kurrentdb.members = gossip(kurrentdb, {0: "Follower", 1: "Leader", 2: "Follower"})
    secret = "a-distinctive-secret-key-0123456789"
    relation = s3_relation(moto_server, "no-such-bucket-here", **{"secret-key": secret})
    state = backup_state(ctx, volumes, internal_ca, relation)
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("create-backup"), state)
    message = failed.value.message
    assert "(NoSuchBucket)" in message, message
    for form in encodings(secret) | encodings(moto_server.access_key):
        assert form not in message
        assert all(form not in line for line in ctx.action_logs)


def test_a_hook_without_a_backup_imports_no_storage_library(ctx, volumes, internal_ca, kurrentdb):
    import sys

    for name in [m for m in sys.modules if m.startswith(("boto3", "botocore", "azure"))]:
        del sys.modules[name]
    ctx.run(ctx.on.update_status(), backup_state(ctx, volumes, internal_ca, None, data=False))
    assert not [m for m in sys.modules if m.startswith(("boto3", "botocore", "azure.storage"))]


def tree(root) -> dict[str, bytes]:
    """Every file under ``root`` (but a restore's own directory) with its content."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".restore" not in p.relative_to(root).parts
    }


def single_node_state(ctx, volumes, ca, relation, seed: int):
    """kurrentdb/0 alone, leading, with its own (different) data on its storage."""
    state = unit_state(volumes, ca, leader=True)
    peer = next(iter(state.relations))
    members = json.dumps(["kurrentdb/0"])
    report = peer_report(0, "Leader") | {"running-members": members}
    peer = dataclasses.replace(
        peer,
        local_app_data=dict(peer.local_app_data) | {"members": members},
        local_unit_data=report,
    )
    state = dataclasses.replace(state, relations={peer, relation}, planned_units=1)
    root = next(iter(state.storages)).get_filesystem(ctx)
    SyntheticDataDir.create(root, DataDirSpec(total_size=24 * MIB, chunk_size=8 * MIB, seed=seed))
    return state, root


@contextlib.contextmanager
def restore_started(kurrentdb, volumes, ca, server, bucket, backup_id):
    """A one-unit app with data of its own, on which `restore backup-id=...` just ran."""
    with testing.Context(KurrentDBCharm) as target_ctx:
        kurrentdb.state = "Leader"
        kurrentdb.members = gossip(kurrentdb, {0: "Leader"})
        state, root = single_node_state(
            target_ctx, volumes, ca, s3_relation(server, bucket), seed=7
        )
        before = tree(root)
        state = target_ctx.run(target_ctx.on.pebble_ready(state.get_container("kurrentdb")), state)
        state = target_ctx.run(
            target_ctx.on.action("restore", params={"backup-id": backup_id}), state
        )
        yield target_ctx, state, root, before


def test_restore_into_another_single_node_app_gives_the_backups_files(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket, follower_state, tmp_path
):
    """Back up one cluster's follower, restore into a one-unit app with other data: the
    volume ends byte-identical to the backup, but truncate.chk (the chaser's copy) and the
    secondary index (derived, rebuilt by KurrentDB)."""
    ctx.run(ctx.on.action("create-backup"), follower_state)
    backup_id = dict(ctx.action_results or {})["backup-id"]
    source = tree(next(iter(follower_state.storages)).get_filesystem(ctx))

    with restore_started(kurrentdb, volumes, internal_ca, moto_server, bucket, backup_id) as (
        target_ctx,
        state,
        root,
        before,
    ):
        assert any("initiated" in line for line in target_ctx.action_logs)
        phases = []
        for _ in range(8):
            state = target_ctx.run(target_ctx.on.update_status(), state)
            peer = next(r for r in state.relations if isinstance(r, testing.PeerRelation))
            plan = json.loads(peer.local_app_data["restore"])
            phases.append(plan["phase"])
            if plan["phase"] == "done":
                break
        assert phases[-1] == "done" and plan["outcome"] == "restored", phases
        assert "swap" in phases and "start" in phases and "commit" in phases, phases

        after = tree(root)
        assert after != before
        expected = {p: c for p, c in source.items() if not p.startswith("kurrent.ddb")}
        assert after["truncate.chk"] == source["chaser.chk"]
        assert {p: c for p, c in after.items() if p != "truncate.chk"} == {
            p: c for p, c in expected.items() if p != "truncate.chk"
        }
        assert not (root / ".restore").exists(), "the old data is removed once restored"
        assert state.get_container("kurrentdb").service_statuses["kurrentdb"].value == "active"
        assert "run create-backup for a fresh backup" in state.app_status.message
        # The fresh backup: the old cluster's path is not this one's to write (it belongs to
        # another model), so it goes to a path of its own; once taken, the request goes.
        s3 = next(r for r in state.relations if r.endpoint == "s3-parameters")
        own_path = dataclasses.replace(
            s3, remote_app_data={**s3.remote_app_data, "path": "restored-cluster"}
        )
        state = dataclasses.replace(state, relations=(state.relations - {s3}) | {own_path})
        state = target_ctx.run(target_ctx.on.action("create-backup", params={"force": True}), state)
        state = target_ctx.run(target_ctx.on.update_status(), state)
        assert "fresh backup" not in state.app_status.message, state.app_status


def test_a_corrupted_backup_fails_the_restore_before_live_data_is_touched(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket, follower_state
):
    ctx.run(ctx.on.action("create-backup"), follower_state)
    backup_id = dict(ctx.action_results or {})["backup-id"]
    admin = backends.s3_admin(moto_server)
    blobs = admin.list_objects_v2(Bucket=bucket, Prefix=f"{backends.PATH}/blobs/")["Contents"]
    victim = max(blobs, key=lambda o: o["Size"])["Key"]
    admin.put_object(Bucket=bucket, Key=victim, Body=b"not the block that was stored")

    with restore_started(kurrentdb, volumes, internal_ca, moto_server, bucket, backup_id) as (
        target_ctx,
        state,
        root,
        before,
    ):
        for _ in range(4):
            state = target_ctx.run(target_ctx.on.update_status(), state)
        peer = next(r for r in state.relations if isinstance(r, testing.PeerRelation))
        plan = json.loads(peer.local_app_data["restore"])
        assert (plan["phase"], plan["outcome"], plan["failed-in"]) == ("done", "failed", "stage")
        assert "verification-failed" in plan["reason"]
        assert tree(root) == before, "live data untouched"
        assert state.get_container("kurrentdb").service_statuses["kurrentdb"].value == "active"
        assert (
            "failed" in state.app_status.message
            and "previous data kept" in state.app_status.message
        )


def test_the_cheap_restore_checks_look_where_the_restore_modules_write():
    """The charm decides from these whether to import the restore modules at all."""
    import backup
    from backup import restore, swap

    assert backup.RESTORE_KEY == restore.DATABAG_KEY
    assert f"{swap.RESTORE_DIR}/{swap.MARKER_NAME}" == backup.RESTORE_MARKER


def test_the_provider_credentials_are_never_copied_into_this_charms_relation_data(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket
):
    """object-storage-charmlib keeps a copy of the provider's databag in ours to diff it;
    a v0 s3-integrator's databag holds the secret key in plain text."""
    secret = "a-distinctive-secret-key-for-the-copy-0123456789"
    relation = s3_relation(moto_server, bucket, **{"secret-key": secret})
    state = backup_state(ctx, volumes, internal_ca, relation, data=False)
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), state)
    ours = out.get_relation(relation.id)
    written = json.dumps([dict(ours.local_unit_data), dict(ours.local_app_data)])
    assert "data" in ours.local_unit_data or "data" in ours.local_app_data  # it did diff
    for form in encodings(secret):
        assert form not in written


def test_another_application_never_writes_into_a_path_it_does_not_own(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket, follower_state
):
    ctx.run(ctx.on.action("create-backup"), follower_state)
    with testing.Context(KurrentDBCharm, app_name="kurrentdb-other") as other:
        state = backup_state(other, volumes, internal_ca, s3_relation(moto_server, bucket))
        with pytest.raises(testing.ActionFailed) as failed:
            other.run(other.on.action("create-backup"), state)
        assert "kurrentdb" in failed.value.message
        # Reading is allowed: the other cluster's backup is listed (and could be restored).
        other.run(other.on.action("list-backups", params={"format": "json"}), state)
        rows = json.loads(other.action_results["backups"])
        assert [r["application"] for r in rows] == ["kurrentdb"]


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(backup_id=st.text(max_size=80) | st.sampled_from(["20261202T000000Z-00000000", "../x"]))
def test_any_restore_backup_id_fails_cleanly(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket, backup_id
):
    """Whatever the user types, restore fails with a sentence (no such backup here),
    starts nothing, and never shows the storage credentials."""
    relation = s3_relation(moto_server, bucket)
    state, _ = single_node_state(ctx, volumes, internal_ca, relation, seed=1)
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("restore", params={"backup-id": backup_id}), state)
    message = failed.value.message
    assert message and "\n" not in message
    assert all(form not in message for form in encodings(moto_server.secret_key))


def test_the_storage_going_away_mid_upload_fails_cleanly_and_leaves_no_manifest(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket, monkeypatch
):
    """The connection to S3 drops after two blocks went up (a proxy in front of the server
    cuts every connection): the action fails with the error code, no manifest is written
    (the backup lists as incomplete once its alive object is stale), and the node was never
    touched."""
    import servers

    host, port = moto_server.endpoint.removeprefix("http://").rsplit(":", 1)
    proxy = servers.TcpProxy((host, int(port)))
    relation = s3_relation(moto_server, bucket, endpoint=f"http://127.0.0.1:{proxy.port}")
    kurrentdb.state = "Follower"
    kurrentdb.members = gossip(kurrentdb, {0: "Follower", 1: "Leader", 2: "Follower"})
    state = backup_state(ctx, volumes, internal_ca, relation)
    stops: list[tuple[str, ...]] = []
    monkeypatch.setattr(ops.Container, "stop", lambda container, *names: stops.append(names))
    blocks = {"stored": 0}
    put_bytes = S3Store.put_bytes

    def cut_after_two_blocks(store, key, data):
        if key.startswith("blobs/"):
            blocks["stored"] += 1
            if blocks["stored"] == 3:
                proxy.cut()
        return put_bytes(store, key, data)

    monkeypatch.setattr(S3Store, "put_bytes", cut_after_two_blocks)
    monkeypatch.setattr("backup.transfer.time.sleep", lambda seconds: None)  # retries, fast
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("create-backup"), state)
    assert "no backup was recorded" in failed.value.message
    assert "(EndpointConnectionError)" in failed.value.message or "(ConnectionClosedError)" in (
        failed.value.message
    ), failed.value.message
    direct = S3Store(backends.s3_settings(moto_server, bucket))
    # Its alive object could not be removed either: the backup counts as running until it
    # has not been renewed for engine.ALIVE_WINDOW, then as incomplete.
    assert [(b.state, b.unit) for b in engine.list_backups(direct)] == [("running", "kurrentdb/0")]
    later = datetime.datetime.now(datetime.timezone.utc) + engine.ALIVE_WINDOW
    assert [(b.state, b.unit) for b in engine.list_backups(direct, now=lambda: later)] == [
        ("incomplete", "kurrentdb/0")
    ]
    assert not [o for o in direct.list("backups/") if o.key.endswith("manifest.json")]
    assert stops == [] and kurrentdb.shutdown_count == 0, "the node was left alone"


def test_restore_is_refused_while_a_backup_of_this_application_runs(
    ctx, volumes, internal_ca, kurrentdb, moto_server, bucket, follower_state
):
    """A backup runs inside its own action on another unit, whose peer data lands only when
    it ends: the leader sees it by its alive object in the bucket, and refuses to pull the
    data from under it until the backup ends (or has not been seen for 90 s)."""
    ctx.run(ctx.on.action("create-backup"), follower_state)
    backup_id = dict(ctx.action_results or {})["backup-id"]
    relation = s3_relation(moto_server, bucket)
    state, root = single_node_state(ctx, volumes, internal_ca, relation, seed=1)
    before = tree(root)
    direct = S3Store(backends.s3_settings(moto_server, bucket))
    running_id = "20991231T235959Z-abcdef"
    now = datetime.datetime.now(datetime.timezone.utc)
    source = dataclasses.replace(
        engine.load_manifest(direct, backup_id).source,
        unit="kurrentdb/2",
        model_uuid=state.model.uuid,
    )
    direct.put_bytes(
        started_key(running_id), Started(running_id, source, format_time(now)).to_json()
    )
    direct.put_bytes(alive_key(running_id), format_time(now).encode())

    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("restore", params={"backup-id": backup_id}), state)
    assert "a backup is running on kurrentdb/2" in failed.value.message
    assert tree(root) == before

    stale = now - datetime.timedelta(seconds=120)
    direct.put_bytes(alive_key(running_id), format_time(stale).encode())
    state = ctx.run(ctx.on.action("restore", params={"backup-id": backup_id}), state)
    assert "restore-id" in (ctx.action_results or {})
