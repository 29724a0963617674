"""Cluster decisions (pure), cluster statuses, the get-cluster-status action, pod labels
and handing leadership over when a unit leaves."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import unit_state
from ops import testing

from cluster import ClusterPlan, UnitReport, plan, quorum
from cluster_status import app_status
from workload import paths

FQDN = "kurrentdb-{}.kurrentdb-endpoints.prod.svc.cluster.local"
SERVING = UnitReport(address="a", started=True, has_data=True, role="Follower", caught_up=True)
LEADER = dataclasses.replace(SERVING, role="Leader")
FRESH = UnitReport(address="a")


def members(*numbers: int) -> tuple[str, ...]:
    return tuple(f"kurrentdb/{n}" for n in numbers)


@pytest.mark.parametrize(("size", "expected"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_quorum(size, expected):
    assert quorum(size) == expected


def test_membership_waits_for_every_planned_unit():
    reports = {"kurrentdb/0": FRESH, "kurrentdb/1": FRESH}
    assert plan(ClusterPlan(), reports, planned_units=3).members == ()
    reports["kurrentdb/2"] = FRESH
    new = plan(ClusterPlan(), reports, planned_units=3)
    assert new.members == members(0, 1, 2)
    assert new.fresh_allowed == members(0, 1, 2), "a new cluster starts everyone at once"


def test_membership_uses_unit_order_not_string_order():
    reports = {f"kurrentdb/{n}": FRESH for n in (2, 10, 9)}
    assert plan(ClusterPlan(), reports, planned_units=3).members == members(2, 9, 10)


def test_growing_a_cluster_with_data_starts_at_most_quorum_minus_one_empty_nodes():
    old = ClusterPlan(members=members(0))
    reports = {"kurrentdb/0": LEADER, "kurrentdb/1": FRESH, "kurrentdb/2": FRESH}
    assert plan(old, reports, planned_units=3).fresh_allowed == members(1)
    # Once kurrentdb/1 started but has not synced, it counts as empty: no more room.
    reports["kurrentdb/1"] = UnitReport(address="a", started=True, role="CatchingUp")
    assert plan(old, reports, planned_units=3).fresh_allowed == ()
    # In sync, it holds the data: the last node may start.
    reports["kurrentdb/1"] = SERVING
    assert plan(old, reports, planned_units=3).fresh_allowed == members(2)


def test_followers_restart_before_the_leader():
    current = ClusterPlan(members=members(0, 1, 2))
    wanting = {
        "kurrentdb/0": dataclasses.replace(
            LEADER, restart_wanted=True, running_members=members(0, 1, 2)
        ),
        "kurrentdb/1": dataclasses.replace(
            SERVING, restart_wanted=True, running_members=members(0, 1, 2)
        ),
        "kurrentdb/2": dataclasses.replace(
            SERVING, restart_wanted=True, running_members=members(0, 1, 2)
        ),
    }
    assert plan(current, wanting, planned_units=3).restart_grant == "kurrentdb/1"


def test_no_grant_while_another_data_node_is_not_serving():
    current = ClusterPlan(members=members(0, 1, 2))
    reports = {
        "kurrentdb/0": LEADER,
        "kurrentdb/1": dataclasses.replace(
            SERVING, restart_wanted=True, running_members=members(0, 1, 2)
        ),
        "kurrentdb/2": dataclasses.replace(
            SERVING, role="CatchingUp", caught_up=False, running_members=members(0, 1, 2)
        ),
    }
    assert plan(current, reports, planned_units=3).restart_grant is None


def test_grant_is_kept_until_the_node_is_back_in_sync():
    running = members(0, 1, 2)
    current = ClusterPlan(members=running, restart_grant="kurrentdb/1")
    back = {
        "kurrentdb/0": dataclasses.replace(LEADER, running_members=running),
        "kurrentdb/1": dataclasses.replace(
            SERVING, role="CatchingUp", caught_up=False, running_members=running
        ),
        "kurrentdb/2": dataclasses.replace(SERVING, running_members=running),
    }
    assert plan(current, back, planned_units=3).restart_grant == "kurrentdb/1"
    back["kurrentdb/1"] = dataclasses.replace(SERVING, running_members=running)
    assert plan(current, back, planned_units=3).restart_grant is None


def test_leader_waits_until_others_have_seen_the_change():
    running = members(0, 1, 2)
    reports = {
        "kurrentdb/0": dataclasses.replace(
            LEADER, restart_wanted=True, running_members=running, settings="new"
        ),
        "kurrentdb/1": dataclasses.replace(SERVING, running_members=running, settings="old"),
        "kurrentdb/2": dataclasses.replace(SERVING, running_members=running, settings="old"),
    }
    assert plan(ClusterPlan(members=running), reports, planned_units=3).restart_grant is None


@pytest.mark.parametrize(
    ("size", "suffix"),
    [
        (3, ""),
        (2, "; 2 nodes cannot survive a node failure, use 3"),
        (4, "; 4 nodes survive no more failures than 3, use an odd size"),
    ],
)
def test_app_status_summarises_the_cluster(size, suffix):
    units = members(*range(size))
    reports = {u: SERVING for u in units} | {units[0]: LEADER}
    status = app_status(ClusterPlan(members=units), reports)
    assert status == testing.ActiveStatus(f"{size} nodes, leader kurrentdb/0{suffix}")


def test_app_status_names_nodes_out_of_sync_and_rolling_restarts():
    units = members(0, 1, 2)
    reports = {
        "kurrentdb/0": LEADER,
        "kurrentdb/1": SERVING,
        "kurrentdb/2": dataclasses.replace(SERVING, caught_up=False),
    }
    assert app_status(ClusterPlan(members=units), reports) == testing.ActiveStatus(
        "3 nodes, leader kurrentdb/0, not in sync: kurrentdb/2"
    )
    rolling = ClusterPlan(members=units, restart_grant="kurrentdb/1")
    assert app_status(rolling, reports) == testing.MaintenanceStatus(
        "3 nodes: rolling restart, kurrentdb/1 restarting"
    )


# --- Scenario: one unit of a three-unit cluster ---------------------------------------------


def three_node_gossip(kurrentdb, leader_writer=5000, lag=(0, 1200)):
    base = kurrentdb.node.gossip_json()
    rows = []
    for n, (state, writer) in enumerate(
        [
            ("Leader", leader_writer),
            ("Follower", leader_writer - lag[0]),
            ("Follower", leader_writer - lag[1]),
        ]
    ):
        rows.append(
            base
            | {
                "state": state,
                "httpEndPointIp": FQDN.format(n),
                "writerCheckpoint": writer,
                "chaserCheckpoint": writer,
                "instanceId": f"00000000-0000-0000-0000-00000000000{n}",
            }
        )
    return rows


def clustered_state(volumes, ca, leader=True, unit_data=None):
    state = unit_state(volumes, ca, leader=leader)
    peer = next(iter(state.relations))
    app_data = dict(peer.local_app_data) | ClusterPlan(members=members(0, 1, 2)).to_databag()
    peers_data = {n: {"address": FQDN.format(n), "started": "true"} for n in (1, 2)}
    if unit_data:
        peers_data.update(unit_data)
    peer = dataclasses.replace(peer, local_app_data=app_data, peers_data=peers_data)
    return dataclasses.replace(state, relations={peer}, planned_units=3)


def test_get_cluster_status_action(ctx, volumes, internal_ca, kurrentdb):
    kurrentdb.members = three_node_gossip(kurrentdb)
    ctx.run(ctx.on.action("get-cluster-status"), clustered_state(volumes, internal_ca))
    nodes = ctx.action_results["nodes"]
    assert nodes["kurrentdb-0"] == {
        "unit": "kurrentdb/0",
        "role": "Leader",
        "alive": "true",
        "writer-checkpoint": "5000",
        "chaser-checkpoint": "5000",
        "lag-bytes": "0",
    }
    assert nodes["kurrentdb-2"]["lag-bytes"] == "1200"
    assert nodes["kurrentdb-1"]["role"] == "Follower"
    table = ctx.action_results["table"].splitlines()
    assert table[0].split() == [
        "unit",
        "role",
        "alive",
        "writer-checkpoint",
        "chaser-checkpoint",
        "lag-bytes",
    ]
    assert table[3].split() == ["kurrentdb/2", "Follower", "true", "3800", "3800", "1200"]


def test_get_cluster_status_fails_clearly_when_kurrentdb_is_down(
    ctx, volumes, internal_ca, kurrentdb
):
    kurrentdb.down()
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("get-cluster-status"), clustered_state(volumes, internal_ca))
    assert (
        "did not answer" in failure.value.message
        and "run it on another unit" in failure.value.message
    )


def test_clustered_node_renders_the_membership(ctx, volumes, internal_ca, kurrentdb):
    kurrentdb.members = three_node_gossip(kurrentdb)
    state = clustered_state(volumes, internal_ca)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    import yaml

    config = yaml.safe_load(volumes.read(paths.CONFIG_FILE))
    assert config["ClusterSize"] == 3
    assert config["DiscoverViaDns"] is False
    assert config["GossipSeed"] == f"{FQDN.format(1)}:2113,{FQDN.format(2)}:2113"
    mine = out.get_relation(next(iter(out.relations)).id).local_unit_data
    assert mine["address"] == FQDN.format(0)
    assert (mine["role"], mine["caught-up"], mine["started"]) == ("Leader", "true", "true")


def test_unit_waits_until_the_leader_adds_it(ctx, volumes, internal_ca):
    state = unit_state(volumes, internal_ca, leader=False)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to add this unit to the cluster"
    )
    assert not volumes.host_path(paths.CONFIG_FILE).exists()
    peer = out.get_relation(next(iter(out.relations)).id)
    assert peer.local_unit_data["address"] == FQDN.format(0)


def test_pod_is_labelled_with_its_role_once(ctx, volumes, internal_ca, kurrentdb, pod_labels):
    state = unit_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    state = ctx.run(ctx.on.update_status(), state)
    assert pod_labels == [("kurrentdb-0", "prod", "Leader")]
    kurrentdb.state = "Follower"
    ctx.run(ctx.on.update_status(), state)
    assert pod_labels[-1] == ("kurrentdb-0", "prod", "Follower")


@pytest.mark.parametrize("role", ["Leader", "Follower"])
def test_leaving_unit_hands_leadership_over(ctx, volumes, internal_ca, kurrentdb, role):
    kurrentdb.members = three_node_gossip(kurrentdb)
    kurrentdb.state = role
    state = clustered_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    ctx.run(ctx.on.storage_detaching(next(iter(state.storages))), state)
    assert kurrentdb.resign_count == (1 if role == "Leader" else 0)


@pytest.mark.parametrize(
    ("unit", "report", "pending", "plan_", "expected"),
    [
        (
            "kurrentdb/3",
            FRESH,
            False,
            ClusterPlan(members=members(0, 1, 2)),
            testing.WaitingStatus("waiting for the leader to add this unit to the cluster"),
        ),
        (
            "kurrentdb/2",
            FRESH,
            False,
            ClusterPlan(members=members(0, 1, 2), fresh_allowed=members(1)),
            testing.WaitingStatus(
                "waiting to join the 3-node cluster until nodes with data are in sync"
            ),
        ),
        (
            "kurrentdb/1",
            dataclasses.replace(SERVING, running_members=members(0, 1, 2)),
            True,
            ClusterPlan(members=members(0, 1, 2, 3, 4), restart_grant="kurrentdb/1"),
            testing.MaintenanceStatus("restarting to join a 5-node cluster"),
        ),
        (
            "kurrentdb/2",
            dataclasses.replace(SERVING, running_members=members(0, 1, 2)),
            True,
            ClusterPlan(members=members(0, 1, 2, 3, 4), restart_grant="kurrentdb/1"),
            testing.WaitingStatus(
                "waiting to restart to join a 5-node cluster (waiting for kurrentdb/1)"
            ),
        ),
        (
            "kurrentdb/2",
            dataclasses.replace(SERVING, running_members=members(0, 1, 2)),
            True,
            ClusterPlan(members=members(0, 1, 2)),
            testing.WaitingStatus(
                "waiting to restart to apply the new configuration (waiting for all nodes to be in sync)"
            ),
        ),
        (
            "kurrentdb/2",
            dataclasses.replace(SERVING, running_members=members(0, 1, 2)),
            False,
            ClusterPlan(members=members(0, 1, 2)),
            None,
        ),
    ],
)
def test_unit_status_says_what_it_waits_for(unit, report, pending, plan_, expected):
    from cluster_status import unit_waiting_status

    assert unit_waiting_status(unit, plan_, report, pending) == expected


def test_leaving_leader_resigns_even_after_the_peer_relation_is_gone(
    ctx, volumes, internal_ca, kurrentdb
):
    # storage-detaching runs after relation-broken: the charm finds its secrets by label.
    kurrentdb.members = three_node_gossip(kurrentdb)
    state = clustered_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    labels = {"certificate": "kurrentdb-ca", "admin-password": "kurrentdb-passwords"}
    secrets = {
        dataclasses.replace(s, label=next(v for k, v in labels.items() if k in s.tracked_content))
        if s.owner == "app"
        else s
        for s in state.secrets
    }
    gone = dataclasses.replace(state, relations=set(), secrets=secrets)
    ctx.run(ctx.on.storage_detaching(next(iter(state.storages))), gone)
    assert kurrentdb.resign_count == 1
    assert [r.user for r in kurrentdb.requests if r.path == "/admin/node/resign"] == ["admin"]


def test_stopping_pod_hands_leadership_over(ctx, volumes, internal_ca, kurrentdb):
    kurrentdb.members = three_node_gossip(kurrentdb)
    state = clustered_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    ctx.run(ctx.on.stop(), state)
    assert kurrentdb.resign_count == 1


def test_single_node_never_resigns_when_leaving(ctx, volumes, internal_ca, kurrentdb):
    kurrentdb.node.http_host = FQDN.format(0)  # gossip shows the node under its advertised name
    state = unit_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    ctx.run(ctx.on.stop(), state)
    assert kurrentdb.resign_count == 0
