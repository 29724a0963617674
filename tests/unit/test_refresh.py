"""The refresh capability in one unit's hooks (Scenario): what it publishes, what it refuses,
what its actions say, and what it does to the StatefulSet (a recording double of
`refresh.statefulset`). The rollout across units is in tests/sim/test_refresh.py."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import pytest
from ops import testing
from scenario_fixtures import IMAGE_VERSION, unit_state

from refresh import statefulset
from refresh.plan import Original, RefreshRecord, StatefulSetView
from workload import paths

OLD, NEW = "kurrentdb-5b7d", "kurrentdb-6c9f"


class FakeKubernetes:
    """This pod's revision and the StatefulSet, as the charm reads and patches them."""

    def __init__(self, pod: str = OLD, update: str = OLD, partition: int = 0):
        self.pod, self.update, self.partition = pod, update, partition
        self.partitions: list[int] = []
        self.trusted = True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        forbidden = statefulset.KubernetesUnavailable("cannot read (HTTP 403)", needs_trust=True)
        monkeypatch.setattr(statefulset, "pod_revision", lambda pod, ns: self.pod)
        monkeypatch.setattr(
            statefulset,
            "read",
            lambda app, ns: (
                StatefulSetView(self.update, self.partition) if self.trusted else forbidden
            ),
        )

        def set_partition(app: str, ns: str, value: int):
            if not self.trusted:
                return forbidden
            self.partition = value
            self.partitions.append(value)
            return None

        monkeypatch.setattr(statefulset, "set_partition", set_partition)


@pytest.fixture
def ctx2():
    """kurrentdb/2: the highest unit, the first a refresh replaces."""
    from charm import KurrentDBCharm

    with testing.Context(KurrentDBCharm, unit_id=2) as context:
        yield context


@pytest.fixture
def k8s(monkeypatch: pytest.MonkeyPatch) -> FakeKubernetes:
    fake = FakeKubernetes()
    fake.install(monkeypatch)
    return fake


def report(n: int, role: str, revision: str = OLD, version: str = IMAGE_VERSION) -> dict:
    members = json.dumps([f"kurrentdb/{i}" for i in range(3)])
    return {
        "address": f"kurrentdb-{n}.kurrentdb-endpoints.prod.svc.cluster.local",
        "started": "true",
        "has-data": "true",
        "running-members": members,
        "role": role,
        "caught-up": "true",
        "refresh-revision": revision,
        "refresh-version": version,
    }


def three_units(volumes, ca, *, leader: bool, own: int = 0, app: dict | None = None, **peers):
    """Unit ``own`` of a formed 3-unit cluster; ``peers`` override other units' data."""
    state = unit_state(volumes, ca, leader=leader)
    peer = next(iter(state.relations))
    members = json.dumps([f"kurrentdb/{i}" for i in range(3)])
    # The other nodes follow; this unit's node is what the KurrentDB double says (Leader).
    others = {n: report(n, "Follower") for n in range(3) if n != own}
    others.update({int(k.removeprefix("u")): v for k, v in peers.items()})
    peer = dataclasses.replace(
        peer,
        local_app_data=dict(peer.local_app_data) | {"members": members} | (app or {}),
        local_unit_data=report(own, "Follower"),
        peers_data=others,
    )
    return dataclasses.replace(state, relations={peer}, planned_units=3)


def app_data(state: testing.State) -> dict:
    return dict(next(iter(state.relations)).local_app_data)


def record_of(state: testing.State) -> RefreshRecord:
    return RefreshRecord.from_json(app_data(state).get("refresh"))


def test_every_unit_publishes_its_pods_revision_and_version(ctx, volumes, internal_ca, k8s):
    state = three_units(volumes, internal_ca, leader=False)
    out = ctx.run(ctx.on.update_status(), state)
    data = next(iter(out.relations)).local_unit_data
    assert data["refresh-revision"] == OLD and data["refresh-version"] == IMAGE_VERSION


def test_the_leader_records_the_rollback_target_in_steady_state(
    ctx, volumes, internal_ca, k8s, kurrentdb
):
    state = three_units(volumes, internal_ca, leader=True)
    out = ctx.run(ctx.on.update_status(), state)
    record = record_of(out)
    assert record.original is not None
    assert (record.original.revision, record.original.kurrentdb) == (OLD, IMAGE_VERSION)
    assert record.data_version == IMAGE_VERSION
    assert k8s.partitions == [], "no refresh: the StatefulSet is left alone"


def test_a_new_pod_forgets_what_its_old_pod_said_of_its_node(ctx2, volumes, internal_ca, k8s):
    """The unit's databag still holds the old pod's Follower/caught-up: published with the
    new revision, the leader would count a node that does not run yet as serving."""
    k8s.pod = k8s.update = NEW
    state = three_units(volumes, internal_ca, leader=False, own=2)
    container = dataclasses.replace(state.get_container(paths.CONTAINER), can_connect=False)
    state = dataclasses.replace(state, containers={container})
    out = ctx2.run(ctx2.on.upgrade_charm(), state)
    data = next(iter(out.relations)).local_unit_data
    assert data["refresh-revision"] == NEW
    assert data.get("role", "") == "" and data.get("caught-up", "") == ""


def test_the_first_hook_of_a_refreshed_pod_holds_the_units_below(ctx2, volumes, internal_ca, k8s):
    k8s.pod = k8s.update = NEW
    state = three_units(volumes, internal_ca, leader=False, own=2)
    ctx2.run(ctx2.on.upgrade_charm(), state)
    assert k8s.partitions == [2]


def test_the_stop_of_a_pod_being_refreshed_holds_the_units_below(ctx2, volumes, internal_ca, k8s):
    state = three_units(volumes, internal_ca, leader=False, own=2)
    state = ctx2.run(ctx2.on.update_status(), state)  # the pod learnt its revision
    k8s.update = NEW  # `juju refresh`: Kubernetes deletes kurrentdb-2 first
    ctx2.run(ctx2.on.stop(), state)
    assert k8s.partitions == [2]


def test_a_stop_without_a_refresh_leaves_the_partition(ctx2, volumes, internal_ca, k8s):
    state = three_units(volumes, internal_ca, leader=False, own=2)
    state = ctx2.run(ctx2.on.update_status(), state)
    ctx2.run(ctx2.on.stop(), state)
    assert k8s.partitions == []


def refused_state(volumes, ca, k8s):
    """kurrentdb/2 refreshed to an image whose KurrentDB (26.0.3) is an older major than
    the 27.0.0 every node ran on this data."""
    k8s.pod = k8s.update = NEW
    record = RefreshRecord(
        original=Original(OLD, charm="7", image="img:27.0.0", kurrentdb="27.0.0"),
        data_version="27.0.0",
        first="kurrentdb/2",
    )
    state = three_units(
        volumes,
        ca,
        leader=False,
        own=2,
        app={"refresh": record.to_json()},
        u0=report(0, "Leader", version="27.0.0"),
        u1=report(1, "Follower", version="27.0.0"),
    )
    return state


def with_image_version(state: testing.State, cli_output: str) -> testing.State:
    """The same unit, its image's `KurrentDB --version` printing ``cli_output``."""
    container = state.get_container(paths.CONTAINER)
    execs = {e for e in container.execs if e.command_prefix[:2] != (paths.BINARY, "--version")}
    execs.add(testing.Exec([paths.BINARY, "--version"], stdout=cli_output))
    container = dataclasses.replace(container, execs=frozenset(execs))
    return dataclasses.replace(state, containers={container})


def first_unit_refreshed(volumes, ca, k8s, *, leader_elsewhere: bool = True, own: int = 2):
    """kurrentdb/``own`` replaced by `juju refresh` to a compatible image (26.0.3 over
    26.0.2); unit 0's node leads the others unless ``leader_elsewhere`` is False."""
    k8s.pod = k8s.update = NEW
    k8s.partition = own
    record = RefreshRecord(
        original=Original(OLD, charm="7", image="img:26.0.2", kurrentdb="26.0.2"),
        data_version="26.0.2",
        first="kurrentdb/2",
    )
    others = {
        f"u{n}": report(
            n, "Leader" if n == 0 and leader_elsewhere else "Follower", version="26.0.2"
        )
        for n in range(3)
        if n != own
    }
    return three_units(
        volumes, ca, leader=False, own=own, app={"refresh": record.to_json()}, **others
    )


def own_data(state: testing.State) -> dict:
    return dict(next(iter(state.relations)).local_unit_data)


def test_a_refused_version_does_not_start_and_says_how_to_go_on(
    ctx2, volumes, internal_ca, k8s, pebble_calls
):
    state = refused_state(volumes, internal_ca, k8s)
    out = ctx2.run(ctx2.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 0, "KurrentDB must not start on data it may not read"
    status = out.unit_status
    assert isinstance(status, testing.BlockedStatus), status
    assert "older major" in status.message
    assert "juju refresh kurrentdb --revision 7 --resource kurrentdb-image=img:27.0.0" in (
        status.message
    )
    assert "force-refresh-start check-compatibility=false" in status.message


def test_force_refresh_start_lets_a_refused_version_start(
    ctx2, volumes, internal_ca, k8s, pebble_calls, kurrentdb
):
    state = refused_state(volumes, internal_ca, k8s)
    state = ctx2.run(ctx2.on.update_status(), state)
    with pytest.raises(testing.ActionFailed, match="at least one"):
        ctx2.run(ctx2.on.action("force-refresh-start"), state)
    state = ctx2.run(
        ctx2.on.action("force-refresh-start", params={"check-compatibility": False}), state
    )
    assert "check-compatibility" in ctx2.action_results["result"]
    ctx2.run(ctx2.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 1


def test_force_refresh_start_is_refused_on_a_unit_not_refreshed(ctx, volumes, internal_ca, k8s):
    state = three_units(
        volumes,
        internal_ca,
        leader=False,
        app={"refresh": RefreshRecord(original=Original(OLD)).to_json()},
    )
    state = ctx.run(ctx.on.update_status(), state)
    with pytest.raises(testing.ActionFailed, match="not refreshed"):
        ctx.run(ctx.on.action("force-refresh-start", params={"check-compatibility": False}), state)


@pytest.mark.parametrize("action", ["pre-refresh-check", "resume-refresh"])
def test_leader_actions_on_another_unit_say_where_to_run_them(
    ctx, volumes, internal_ca, k8s, action
):
    state = three_units(volumes, internal_ca, leader=False)
    with pytest.raises(testing.ActionFailed, match="run it on the leader"):
        ctx.run(ctx.on.action(action), state)


def test_pre_refresh_check_without_trust_names_juju_trust(
    ctx, volumes, internal_ca, k8s, kurrentdb
):
    k8s.trusted = False
    state = three_units(volumes, internal_ca, leader=True)
    state = ctx.run(ctx.on.update_status(), state)
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("pre-refresh-check"), state)
    assert "juju trust kurrentdb --scope=cluster" in failed.value.message


def test_pre_refresh_check_refuses_while_units_run_two_revisions(
    ctx, volumes, internal_ca, k8s, kurrentdb
):
    state = three_units(volumes, internal_ca, leader=True, u2=report(2, "Follower", revision=NEW))
    with pytest.raises(testing.ActionFailed, match="a refresh is under way"):
        ctx.run(ctx.on.action("pre-refresh-check"), state)
    assert k8s.partitions == []


def test_resume_refresh_without_a_refresh_fails(ctx, volumes, internal_ca, k8s, kurrentdb):
    state = three_units(volumes, internal_ca, leader=True)
    state = ctx.run(ctx.on.update_status(), state)
    with pytest.raises(testing.ActionFailed, match="no refresh is under way"):
        ctx.run(ctx.on.action("resume-refresh"), state)


@pytest.mark.parametrize("action", ["create-backup", "list-backups"])
def test_backups_wait_for_a_refresh(ctx, volumes, internal_ca, k8s, action):
    state = three_units(volumes, internal_ca, leader=False, u2=report(2, "Follower", revision=NEW))
    if action == "list-backups":
        # Listing changes nothing: it stays allowed (it fails here only for lack of storage).
        with pytest.raises(testing.ActionFailed) as failed:
            ctx.run(ctx.on.action(action), state)
        assert "refresh" not in failed.value.message
        return
    with pytest.raises(testing.ActionFailed, match="a refresh is under way"):
        ctx.run(ctx.on.action(action), state)


def test_an_invalid_pause_value_is_reported_and_counts_as_all(
    ctx, volumes, internal_ca, k8s, kurrentdb
):
    state = three_units(volumes, internal_ca, leader=True)
    state = dataclasses.replace(state, config={"pause-after-unit-refresh": "sometimes"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus), out.unit_status
    assert "pause-after-unit-refresh" in out.unit_status.message
    assert "all, first or none" in out.unit_status.message


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_refresh_across_the_uid_line_chowns_the_volume_once_top_last(
    ctx, volumes, internal_ca, k8s, monkeypatch
):
    """26.x images run as uid 1001, older ones as 1000: the first start on the new image
    gives the volume to 1001 (its files first, the top directory last, so that a pod killed
    half-way is finished at the next start) and no later start chowns again. A rollback
    to a uid-1000 image gives it back the same way."""
    import ops
    from scenario_fixtures import write_passwd

    (volumes.data / "chunk-000000.000000").write_bytes(b"x")
    (volumes.data / "index").mkdir()
    (volumes.data / "index" / "indexmap").write_bytes(b"y")
    os.chown(volumes.data, 1000, 1000)
    for path in volumes.data.rglob("*"):
        os.chown(path, 1000, 1000)
    real_exec = ops.Container.exec
    commands: list[list[str]] = []

    def chown_for_real(container, command, **kwargs):
        if command[0] == "chown":
            commands.append(list(command))
            owner = command[-2] if command[1] != "-R" else command[3]
            uid, gid = (int(x) for x in owner.split(":"))
            targets = command[5:] if command[1] == "-R" else [command[-1]]
            for target in targets:
                host = volumes.data / pathlib.PurePosixPath(target).relative_to(paths.DATA_DIR)
                for path in [host, *(host.rglob("*") if host.is_dir() else [])]:
                    os.chown(path, uid, gid)
        return real_exec(container, command, **kwargs)

    monkeypatch.setattr(ops.Container, "exec", chown_for_real)
    write_passwd(volumes.etc, uid=1001, gid=1001)
    state = three_units(volumes, internal_ca, leader=False)
    state = ctx.run(ctx.on.config_changed(), state)
    assert commands[-1] == ["chown", "1001:1001", paths.DATA_DIR], commands
    assert all(c[:3] == ["chown", "-R", "-h"] for c in commands[:-1])
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [volumes.data, *volumes.data.rglob("*")]}
    assert owners == {(1001, 1001)}
    chowns = len(commands)
    ctx.run(ctx.on.update_status(), state)
    assert len(commands) == chowns, "the volume is chowned once, not at every start"
    # Rollback: a new pod of the old image, whose user is 1000 again.
    write_passwd(volumes.etc, uid=1000, gid=1000)
    ctx.run(ctx.on.config_changed(), three_units(volumes, internal_ca, leader=False))
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [volumes.data, *volumes.data.rglob("*")]}
    assert owners == {(1000, 1000)}


def test_the_rollback_revision_comes_from_the_charm_url_juju_unpacked(
    volumes, internal_ca, k8s, kurrentdb, tmp_path
):
    from charm import KurrentDBCharm

    root = tmp_path / "charm"
    root.mkdir()
    (root / ".juju-charm").write_text("ch:amd64/noble/kurrentdb-12\n")
    with testing.Context(KurrentDBCharm, charm_root=root) as ctx:
        out = ctx.run(ctx.on.update_status(), three_units(volumes, internal_ca, leader=True))
    record = record_of(out)
    assert record.original is not None and record.original.charm == "12"


def test_the_first_unit_runs_the_pre_refresh_checks_before_its_new_kurrentdb_starts(
    ctx2, volumes, internal_ca, k8s, pebble_calls, kurrentdb
):
    # Its pod is replaced; the node that led was its own, and nobody leads yet.
    state = first_unit_refreshed(volumes, internal_ca, k8s, leader_elsewhere=False)
    out = ctx2.run(ctx2.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 0, "the rest of the cluster is not whole: do not join it"
    status = out.unit_status
    assert isinstance(status, testing.BlockedStatus), status
    assert status.message.startswith("pre-refresh check failed: 0 nodes lead")
    assert "juju refresh kurrentdb --revision 7 --resource kurrentdb-image=img:26.0.2" in (
        status.message
    )
    assert "force-refresh-start run-pre-refresh-checks=false" in status.message
    assert "refresh-checked" not in own_data(out)

    # kurrentdb/0's node takes the lead: the checks pass, once for this revision.
    peer = next(iter(out.relations))
    peers = dict(peer.peers_data) | {0: report(0, "Leader", version="26.0.2")}
    out = dataclasses.replace(out, relations={dataclasses.replace(peer, peers_data=peers)})
    out = ctx2.run(ctx2.on.update_status(), out)
    assert pebble_calls.replans == 1
    assert own_data(out)["refresh-checked"] == NEW

    # Later trouble elsewhere does not stop the node that already joined.
    peer = next(iter(out.relations))
    peers = dict(peer.peers_data) | {0: report(0, "Follower", version="26.0.2")}
    out = dataclasses.replace(out, relations={dataclasses.replace(peer, peers_data=peers)})
    out = ctx2.run(ctx2.on.update_status(), out)
    assert not any("pre-refresh check" in s.message for s in [out.unit_status])


def test_units_after_the_first_do_not_run_the_cluster_checks(
    ctx, volumes, internal_ca, k8s, pebble_calls, kurrentdb
):
    # kurrentdb/0 is refreshed while nobody else leads: only the first unit checks that.
    state = first_unit_refreshed(volumes, internal_ca, k8s, leader_elsewhere=False, own=0)
    ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 1


def test_force_refresh_start_skips_the_pre_refresh_checks(
    ctx2, volumes, internal_ca, k8s, pebble_calls, kurrentdb
):
    state = first_unit_refreshed(volumes, internal_ca, k8s, leader_elsewhere=False)
    state = ctx2.run(ctx2.on.update_status(), state)
    state = ctx2.run(
        ctx2.on.action("force-refresh-start", params={"run-pre-refresh-checks": False}), state
    )
    assert ctx2.action_results == {"result": "skipping run-pre-refresh-checks for this refresh"}
    ctx2.run(ctx2.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 1


def test_force_refresh_start_fails_when_nothing_is_refused(
    ctx2, volumes, internal_ca, k8s, kurrentdb
):
    state = first_unit_refreshed(volumes, internal_ca, k8s)
    state = ctx2.run(ctx2.on.update_status(), state)
    with pytest.raises(testing.ActionFailed, match="nothing to force"):
        ctx2.run(
            ctx2.on.action("force-refresh-start", params={"check-compatibility": False}), state
        )


def test_force_refresh_start_says_which_check_still_refuses(
    ctx2, volumes, internal_ca, k8s, pebble_calls, kurrentdb
):
    state = refused_state(volumes, internal_ca, k8s)
    state = ctx2.run(ctx2.on.update_status(), state)
    state = ctx2.run(
        ctx2.on.action("force-refresh-start", params={"check-workload-container": False}), state
    )
    assert "older major" in ctx2.action_results["still-refused"]
    assert "check-compatibility=false" in ctx2.action_results["still-refused"]
    ctx2.run(ctx2.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 0


@pytest.mark.parametrize(
    ("cli_output", "expected"),
    [
        ("KurrentDB version 26.9.0 oss (tags/v26.9.0/abc)\n", "newer than every release"),
        ("usage: something else\n", "told no version"),
    ],
)
def test_an_image_the_charm_does_not_know_waits_for_check_workload_container(
    ctx2, volumes, internal_ca, k8s, pebble_calls, kurrentdb, cli_output, expected
):
    state = with_image_version(first_unit_refreshed(volumes, internal_ca, k8s), cli_output)
    out = ctx2.run(ctx2.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 0
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert expected in out.unit_status.message
    assert "force-refresh-start check-workload-container=false" in out.unit_status.message

    out = ctx2.run(
        ctx2.on.action("force-refresh-start", params={"check-workload-container": False}), out
    )
    ctx2.run(ctx2.on.pebble_ready(out.get_container(paths.CONTAINER)), out)
    assert pebble_calls.replans == 1


def test_a_force_on_the_first_unit_holds_for_the_units_after_it(
    ctx, volumes, internal_ca, k8s, pebble_calls, kurrentdb
):
    # kurrentdb/2 forced the version change for this revision; kurrentdb/0 now refreshes.
    state = refused_state(volumes, internal_ca, k8s)
    peer = next(iter(state.relations))
    unit2 = report(2, "Follower", revision=NEW) | {
        "refresh-forced": json.dumps({"revision": NEW, "skipped": ["check-compatibility"]})
    }
    peers = {1: report(1, "Leader", version="27.0.0"), 2: unit2}
    state = dataclasses.replace(
        state,
        relations={
            dataclasses.replace(peer, local_unit_data=report(0, "Follower"), peers_data=peers)
        },
    )
    ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 1

    # A force recorded for another revision (an earlier refresh) does not count.
    unit2["refresh-forced"] = json.dumps({"revision": OLD, "skipped": ["check-compatibility"]})
    peers = {1: report(1, "Leader", version="27.0.0"), 2: unit2}
    state = dataclasses.replace(
        state,
        relations={dataclasses.replace(next(iter(state.relations)), peers_data=peers)},
    )
    ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pebble_calls.replans == 1
