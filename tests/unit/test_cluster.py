"""Cluster decisions (pure), cluster statuses, the get-cluster-status action, pod labels
and handing leadership over when a unit leaves."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import unit_state
from ops import testing

import cluster
from cluster import (
    CATCH_UP_BYTES,
    CATCH_UP_LEAVE_BYTES,
    ClusterPlan,
    UnitReport,
    growth_pending,
    plan,
    quorum,
    reported_caught_up,
    reported_role,
)
from cluster_status import app_status
from workload import paths

FQDN = "kurrentdb-{}.kurrentdb-endpoints.prod.svc.cluster.local"
SERVING = UnitReport(address="a", started=True, has_data=True, role="Follower", caught_up=True)
LEADER = dataclasses.replace(SERVING, role="Leader")
FRESH = UnitReport(address="a")
MIB = 2**20


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
    alone = dataclasses.replace(LEADER, running_members=members(0))
    reports = {"kurrentdb/0": alone, "kurrentdb/1": FRESH, "kurrentdb/2": FRESH}
    # kurrentdb/0 still runs size 1 and has not asked for its restart: nobody starts.
    assert plan(old, reports, planned_units=3).fresh_allowed == ()
    # It may restart now (the grant), but while it leads at size 1 a new node would join
    # it as a surplus clone and be told to shut down: nobody starts yet.
    reports["kurrentdb/0"] = dataclasses.replace(alone, restart_wanted=True)
    new = plan(old, reports, planned_units=3)
    assert new.restart_grant == "kurrentdb/0" and new.fresh_allowed == ()
    # Restarted into size 3 (it cannot lead alone now): one new node may start, not two
    # ({0@1} and {1@3, 2@3} could each elect a leader, were kurrentdb/0 still at size 1).
    reports["kurrentdb/0"] = dataclasses.replace(
        alone, running_members=members(0, 1, 2), role=None, caught_up=False
    )
    new = plan(new, reports, planned_units=3)
    assert new.restart_grant == "kurrentdb/0" and new.fresh_allowed == members(1)
    # Once kurrentdb/1 started but has not synced, it counts as empty: no more room.
    reports["kurrentdb/0"] = dataclasses.replace(LEADER, running_members=members(0, 1, 2))
    reports["kurrentdb/1"] = UnitReport(
        address="a", started=True, role="CatchingUp", running_members=members(0, 1, 2)
    )
    assert plan(new, reports, planned_units=3).fresh_allowed == ()
    # In sync, it holds the data: the last node may start.
    reports["kurrentdb/1"] = dataclasses.replace(SERVING, running_members=members(0, 1, 2))
    assert plan(new, reports, planned_units=3).fresh_allowed == members(2)


@pytest.mark.parametrize(
    ("sizes", "possible"),
    [
        ((3, 3, 3), False),
        ((1, 3, 3), True),  # {0@1} and {1@3, 2@3}
        ((1, 3), False),
        ((3, 3, 3, 5), True),  # {0, 1} and {2, 3} by size 3
        ((5, 5, 3, 5), False),
        ((5, 5, 3, 5, 5), True),  # {2, x} by size 3, the other three by size 5
        ((3, 5, 5), False),
        ((5, 5, 5, 5, 5), False),
    ],
)
def test_split_brain_possible_with_mixed_sizes(sizes, possible):
    assert cluster.split_brain_possible(sizes) is possible


def test_new_nodes_wait_until_the_old_ones_run_the_new_size():
    five = members(0, 1, 2, 3, 4)
    at = {n: dataclasses.replace(SERVING, running_members=members(0, 1, 2)) for n in five[:3]}
    reports = {**at, "kurrentdb/3": FRESH, "kurrentdb/4": FRESH}
    current = ClusterPlan(members=five)
    assert plan(current, reports, planned_units=5).fresh_allowed == ()
    # Two restarted to size 5, the last one (the leader) restarting: one may start.
    for n in five[:2]:
        reports[n] = dataclasses.replace(SERVING, running_members=five)
    reports["kurrentdb/2"] = dataclasses.replace(
        LEADER, running_members=members(0, 1, 2), restart_wanted=True
    )
    new = plan(current, reports, planned_units=5)
    assert new.restart_grant == "kurrentdb/2"
    # While it leads at size 3 it wants 2 followers: a new node would be a surplus clone.
    assert new.fresh_allowed == ()
    # It resigned (a size-5 node leads now) and holds its restart: one may start, not two
    # ({2@3, x} against the four size-5 nodes).
    reports["kurrentdb/2"] = dataclasses.replace(
        SERVING, running_members=members(0, 1, 2), restart_wanted=True
    )
    reports["kurrentdb/0"] = dataclasses.replace(LEADER, running_members=five)
    new = plan(new, reports, planned_units=5)
    assert new.restart_grant == "kurrentdb/2"
    assert new.fresh_allowed == members(3)
    assert cluster.restart_waits_for_new_node("kurrentdb/2", five, reports)
    # The new node serves: the size-5 nodes without kurrentdb/2 are a quorum, it restarts.
    reports["kurrentdb/3"] = dataclasses.replace(SERVING, running_members=five)
    assert not cluster.restart_waits_for_new_node("kurrentdb/2", five, reports)


def test_no_restart_into_a_smaller_size_while_larger_ones_would_outvote_it():
    three = members(0, 1, 2)
    reports = {
        n: dataclasses.replace(SERVING, running_members=three, restart_wanted=True) for n in three
    }
    # Going to one node while kurrentdb/1 and /2 still run size 3: {0@1} and {1, 2}.
    assert cluster._restart_grant(None, members(0), {**reports}) is None
    # Without them, the restart is safe.
    assert cluster._restart_grant(None, members(0), {"kurrentdb/0": reports["kurrentdb/0"]}) == (
        "kurrentdb/0"
    )


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


# --- one resize per scale request ----------------------------------------------------------


def test_membership_waits_for_pods_whose_units_have_not_appeared_yet():
    # `juju add-unit -n 2`: both pods exist, only kurrentdb/3 has introduced itself, so
    # goal-state says 4 units and agrees with the units present.
    current = ClusterPlan(members=members(0, 1, 2))
    reports = {u: SERVING for u in members(0, 1, 2)} | {"kurrentdb/3": FRESH}
    assert growth_pending(current, reports, planned_units=4)
    pods = frozenset(members(0, 1, 2, 3, 4))
    assert plan(current, reports, planned_units=4, app_pods=pods).members == members(0, 1, 2)
    # Without the pods, goal-state alone would resize now, and again for kurrentdb/4.
    assert plan(current, reports, planned_units=4).members == members(0, 1, 2, 3)
    reports["kurrentdb/4"] = FRESH
    new = plan(current, reports, planned_units=5, app_pods=pods)
    assert new.members == members(0, 1, 2, 3, 4)


def test_a_fresh_deployment_waits_for_every_pod():
    reports = {"kurrentdb/0": FRESH}
    pods = frozenset(members(0, 1, 2))
    assert plan(ClusterPlan(), reports, planned_units=1, app_pods=pods).members == ()
    assert plan(ClusterPlan(), reports, planned_units=1, app_pods=members(0)).members == (
        "kurrentdb/0",
    )


def test_pods_of_departed_members_are_not_awaited():
    # 5 -> 3: the two units have left; Kubernetes has not removed their pods yet.
    current = ClusterPlan(members=members(0, 1, 2, 3, 4))
    reports = {u: SERVING for u in members(0, 1, 2)}
    pods = frozenset(members(0, 1, 2, 3, 4))
    assert not growth_pending(current, reports, planned_units=3), "no pod lookup to shrink"
    assert plan(current, reports, planned_units=3, app_pods=pods).members == members(0, 1, 2)


def test_unknown_goal_state_keeps_the_membership():
    current = ClusterPlan(members=members(0))
    reports = {u: SERVING for u in members(0, 1, 2)}
    assert plan(current, reports, planned_units=None).members == members(0)


# --- reports that do not churn -------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "published"),
    [
        ("Leader", "Leader"),
        ("ResigningLeader", "ResigningLeader"),
        ("Follower", "Follower"),
        ("ReadOnlyReplica", "ReadOnlyReplica"),
        ("CatchingUp", None),
        ("Unknown", None),
        ("PreReplica", None),
        ("Initializing", None),
        (None, None),
    ],
)
def test_roles_are_published_as_the_states_the_schedule_tells_apart(state, published):
    assert reported_role(state) == published


@pytest.mark.parametrize(
    ("was", "lag", "now"),
    [
        (False, CATCH_UP_BYTES, True),  # enters at the threshold
        (False, CATCH_UP_BYTES + 1, False),
        (True, CATCH_UP_BYTES + 1, True),  # and stays while the lag wavers above it
        (True, CATCH_UP_LEAVE_BYTES, True),
        (True, CATCH_UP_LEAVE_BYTES + 1, False),  # leaves only well above it
        (True, None, True),  # gossip shows no leader for a moment: no evidence either way
        (False, None, False),
    ],
)
def test_caught_up_has_hysteresis(was, lag, now):
    assert reported_caught_up(was, "Follower", lag) is now


def test_a_node_that_stops_serving_is_never_caught_up():
    assert reported_caught_up(True, None, 0) is False
    assert reported_caught_up(False, "Leader", None) is True


def gossip_of(states_and_lags, leader_writer=100 * MIB):
    from kurrentdb_api import _gossip

    rows = []
    for n, (state, lag) in enumerate(states_and_lags):
        writer = leader_writer - lag
        rows.append(
            {
                "instanceId": f"id-{n}",
                "state": state,
                "isAlive": state != "Dead",
                "httpEndPointIp": FQDN.format(n),
                "httpEndPointPort": 2113,
                "writerCheckpoint": writer,
                "chaserCheckpoint": writer,
                "lastCommitPosition": writer,
                "epochPosition": 0,
                "epochNumber": 1,
                "epochId": "e",
                "nodePriority": 0,
                "isReadOnlyReplica": False,
            }
        )
    return _gossip({"members": rows, "serverIp": "127.0.0.1", "serverPort": 2113})


@pytest.mark.parametrize(
    ("witness", "confirmed"),
    [
        (("Follower", 0), True),
        (("Follower", CATCH_UP_BYTES), True),
        (("Follower", CATCH_UP_BYTES + 1), False),  # its report may still say caught up
        (("CatchingUp", 0), False),
        (("Dead", 0), False),
    ],
)
def test_a_grant_needs_fresh_gossip_to_agree(witness, confirmed):
    hosts = {f"kurrentdb/{n}": FQDN.format(n) for n in range(3)}
    gossip = gossip_of([("Leader", 0), ("Follower", 0), witness])
    witnesses = ("kurrentdb/0", "kurrentdb/2")
    assert cluster.gossip_confirms(witnesses, hosts, gossip) is confirmed


def test_no_gossip_or_no_leader_confirms_nothing():
    hosts = {"kurrentdb/1": FQDN.format(1)}
    assert cluster.gossip_confirms((), hosts, None) is True, "nothing to confirm"
    assert cluster.gossip_confirms(("kurrentdb/1",), hosts, None) is False
    no_leader = gossip_of([("Unknown", 0), ("Follower", 0)])
    assert cluster.gossip_confirms(("kurrentdb/1",), hosts, no_leader) is False


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
                "internalHttpEndPointIp": FQDN.format(n),
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

    assert unit_waiting_status(unit, plan_, {unit: report}, report, pending) == expected


def test_statuses_while_a_resize_waits_for_a_new_node_or_for_departed_nodes():
    from cluster_status import app_status, unit_waiting_status

    old, new = members(0, 1, 2), members(0, 1, 2, 3, 4)
    on_new = dataclasses.replace(SERVING, running_members=new)
    resigned = dataclasses.replace(SERVING, running_members=old, restart_wanted=True)
    fresh = UnitReport(address="x")
    reports = {"kurrentdb/0": resigned, "kurrentdb/1": on_new, "kurrentdb/2": on_new}
    reports |= {"kurrentdb/3": fresh, "kurrentdb/4": fresh}
    grant = ClusterPlan(members=new, restart_grant="kurrentdb/0")
    assert unit_waiting_status("kurrentdb/0", grant, reports, resigned, True) == (
        testing.WaitingStatus(
            "waiting to restart to join a 5-node cluster until a new node serves "
            "(restarting now would pause writes)"
        )
    )
    # 5 -> 3: kurrentdb/3 and /4 departed; the nodes that stay still run size 5.
    five = dataclasses.replace(SERVING, running_members=new)
    staying = {u: five for u in old}
    assert app_status(ClusterPlan(members=old), staying) == testing.MaintenanceStatus(
        "3 nodes: resizing after kurrentdb/3, kurrentdb/4 departed"
    )
    assert unit_waiting_status("kurrentdb/1", ClusterPlan(members=old), staying, five, True) == (
        testing.WaitingStatus(
            "waiting to restart to join a 3-node cluster (waiting for all nodes to be in sync "
            "and departed kurrentdb/3, kurrentdb/4 gone)"
        )
    )


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


# --- Scenario: the leader's schedule and this unit's report, as peer data shows them -----


def gossip_rows(kurrentdb, rows):
    """`/gossip` members: (state, lag behind a 100 MiB leader) for kurrentdb/0, /1, /2."""
    base = kurrentdb.node.gossip_json()
    return [
        base
        | {
            "state": state,
            "httpEndPointIp": FQDN.format(n),
            "internalHttpEndPointIp": FQDN.format(n),
            "writerCheckpoint": 100 * MIB - lag,
            "chaserCheckpoint": 100 * MIB - lag,
            "instanceId": f"00000000-0000-0000-0000-00000000000{n}",
        }
        for n, (state, lag) in enumerate(rows)
    ]


def with_unit_data(state, own=None, peers=None, planned_units=None):
    peer = next(iter(state.relations))
    peer = dataclasses.replace(
        peer,
        local_unit_data=dict(peer.local_unit_data) | (own or {}),
        peers_data={**peer.peers_data, **(peers or {})},
    )
    changes = {"relations": {peer}}
    if planned_units is not None:
        changes["planned_units"] = planned_units
    return dataclasses.replace(state, **changes)


RUNNING = '["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"]'


def serving_peer(n, role="Follower", **extra):
    data = {
        "address": FQDN.format(n),
        "started": "true",
        "has-data": "true",
        "running-members": RUNNING,
        "role": role,
        "caught-up": "true",
    }
    return data | extra


@pytest.mark.parametrize(("lag_of_2", "granted"), [(MIB, "kurrentdb/1"), (10 * MIB, "")])
def test_leader_grants_a_restart_only_if_its_own_gossip_agrees(
    ctx, volumes, internal_ca, kurrentdb, lag_of_2, granted
):
    # kurrentdb/2's report says caught up (reports are sticky up to 64 MiB); what the
    # leader's node sees right now decides.
    kurrentdb.members = gossip_rows(
        kurrentdb, [("Leader", 0), ("Follower", 0), ("Follower", lag_of_2)]
    )
    state = with_unit_data(
        clustered_state(volumes, internal_ca),
        own=serving_peer(0, role="Leader"),
        peers={1: serving_peer(1, **{"restart-wanted": "true"}), 2: serving_peer(2)},
    )
    out = ctx.run(ctx.on.update_status(), state)
    app_data = out.get_relation(next(iter(out.relations)).id).local_app_data
    assert app_data.get("restart-grant", "") == granted


def test_leader_looks_again_before_holding_a_grant(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch
):
    """Reports no longer churn, so a held grant may wait for update-status: look again."""
    import coordinator

    clock = {"now": 0.0}

    def sleep(seconds):
        clock["now"] += seconds
        if clock["now"] >= 6:  # kurrentdb/2 catches up a few seconds later
            kurrentdb.members = gossip_rows(
                kurrentdb, [("Leader", 0), ("Follower", 0), ("Follower", MIB)]
            )

    monkeypatch.setattr(coordinator, "_grant_confirm_limit", lambda: 30.0)
    monkeypatch.setattr(coordinator, "_monotonic", lambda: clock["now"])
    monkeypatch.setattr(coordinator, "_sleep", sleep)
    kurrentdb.members = gossip_rows(
        kurrentdb, [("Leader", 0), ("Follower", 0), ("Follower", 10 * MIB)]
    )
    state = with_unit_data(
        clustered_state(volumes, internal_ca),
        own=serving_peer(0, role="Leader"),
        peers={1: serving_peer(1, **{"restart-wanted": "true"}), 2: serving_peer(2)},
    )
    out = ctx.run(ctx.on.update_status(), state)
    app_data = out.get_relation(next(iter(out.relations)).id).local_app_data
    assert app_data.get("restart-grant") == "kurrentdb/1"
    assert clock["now"] == 6


FIVE = '["kurrentdb/0", "kurrentdb/1", "kurrentdb/2", "kurrentdb/3", "kurrentdb/4"]'


@pytest.mark.parametrize(
    ("departed_alive", "granted"),
    [((True, True), ""), ((False, True), ""), ((False, False), "kurrentdb/1")],
)
def test_a_scale_down_grant_waits_until_gossip_shows_the_departed_nodes_gone(
    ctx, volumes, internal_ca, kurrentdb, departed_alive, granted
):
    """5 -> 3: kurrentdb/3 and /4 have departed the relation, so no report says they run;
    restarting kurrentdb/1 into size 3 beside a size-5 node still running could allow two
    leaders. The leader's own gossip decides."""
    rows = gossip_rows(kurrentdb, [("Leader", 0)] + [("Follower", 0)] * 4)
    for row, alive in zip(rows[3:], departed_alive, strict=True):
        row["isAlive"] = alive
    kurrentdb.members = rows
    five = {"running-members": FIVE}
    state = clustered_state(volumes, internal_ca)
    peer = next(iter(state.relations))
    peer = dataclasses.replace(peer, local_app_data=dict(peer.local_app_data) | {"members": FIVE})
    state = with_unit_data(
        dataclasses.replace(state, relations={peer}),
        own=serving_peer(0, role="Leader", **five),
        peers={
            1: serving_peer(1, **five, **{"restart-wanted": "true"}),
            2: serving_peer(2, **five),
        },
        planned_units=3,
    )
    out = ctx.run(ctx.on.update_status(), state)
    app_data = out.get_relation(next(iter(out.relations)).id).local_app_data
    assert json.loads(app_data["members"]) == ["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"]
    assert app_data.get("restart-grant", "") == granted


@pytest.mark.parametrize(
    ("node_state", "lag", "was", "role", "caught_up"),
    [
        ("Follower", 10 * MIB, "true", "Follower", "true"),  # wavers above 4 MiB: no change
        ("Follower", 10 * MIB, "", "Follower", ""),  # not in sync yet: not yet
        ("Follower", 100 * MIB, "true", "Follower", ""),  # well behind: says so
        ("CatchingUp", 100 * MIB, "", "", ""),
        ("PreReplica", 100 * MIB, "", "", ""),  # one "not serving" for every such state
    ],
)
def test_a_units_report_changes_only_when_the_schedule_would_care(
    ctx, volumes, internal_ca, kurrentdb, node_state, lag, was, role, caught_up
):
    kurrentdb.state = node_state
    kurrentdb.members = gossip_rows(kurrentdb, [(node_state, lag), ("Leader", 0), ("Follower", 0)])
    own = serving_peer(0, role="Follower" if was else "", **{"caught-up": was})
    state = with_unit_data(
        clustered_state(volumes, internal_ca, leader=False),
        own=own,
        peers={1: serving_peer(1, role="Leader"), 2: serving_peer(2)},
    )
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    out = ctx.run(ctx.on.update_status(), state)
    mine = out.get_relation(next(iter(out.relations)).id).local_unit_data
    assert (mine.get("role", ""), mine.get("caught-up", "")) == (role, caught_up)


@pytest.fixture
def app_pods(monkeypatch):
    """The ordinals `kubernetes.app_pod_ordinals` answers with (None: it cannot tell)."""
    import kubernetes

    answer: dict[str, frozenset[int] | None] = {"ordinals": None}
    monkeypatch.setattr(kubernetes, "app_pod_ordinals", lambda *args: answer["ordinals"])
    return answer


@pytest.mark.parametrize(
    ("ordinals", "expected"),
    [
        (frozenset(range(5)), members(0, 1, 2)),  # kurrentdb/4's pod exists: wait for it
        (frozenset(range(4)), members(0, 1, 2, 3)),  # every pod has its unit: resize
        (None, members(0, 1, 2, 3)),  # no API (and no settle time in tests): goal-state
    ],
)
def test_leader_resizes_once_every_pod_has_its_unit(
    ctx, volumes, internal_ca, kurrentdb, app_pods, ordinals, expected
):
    app_pods["ordinals"] = ordinals
    kurrentdb.members = gossip_rows(kurrentdb, [("Leader", 0), ("Follower", 0), ("Follower", 0)])
    state = with_unit_data(
        clustered_state(volumes, internal_ca),
        own=serving_peer(0, role="Leader"),
        peers={1: serving_peer(1), 2: serving_peer(2), 3: {"address": FQDN.format(3)}},
        planned_units=4,  # goal-state: kurrentdb/4 has not introduced itself yet
    )
    out = ctx.run(ctx.on.update_status(), state)
    plan_ = ClusterPlan.from_databag(out.get_relation(next(iter(out.relations)).id).local_app_data)
    assert plan_.members == expected


def test_without_the_api_the_leader_watches_goal_state_before_growing(
    ctx, volumes, internal_ca, kurrentdb, app_pods, monkeypatch
):
    """The fallback: a bounded wait in the hook, during which kurrentdb/4 introduces itself."""
    import scenario.mocking

    import coordinator

    clock = {"now": 0.0, "slept": 0.0, "arrival": 20.0}
    planned = {"units": 4}

    def sleep(seconds):
        clock["now"] += seconds
        clock["slept"] += seconds
        if clock["now"] >= clock["arrival"]:
            planned["units"] = 5  # kurrentdb/4's pod introduced itself

    monkeypatch.setattr(coordinator, "_growth_settle_limit", lambda: 60.0)
    monkeypatch.setattr(coordinator, "_monotonic", lambda: clock["now"])
    monkeypatch.setattr(coordinator, "_sleep", sleep)
    monkeypatch.setattr(
        scenario.mocking._MockModelBackend, "planned_units", lambda _: planned["units"]
    )
    kurrentdb.members = gossip_rows(kurrentdb, [("Leader", 0), ("Follower", 0), ("Follower", 0)])
    state = with_unit_data(
        clustered_state(volumes, internal_ca),
        own=serving_peer(0, role="Leader"),
        peers={1: serving_peer(1), 2: serving_peer(2), 3: {"address": FQDN.format(3)}},
        planned_units=4,
    )

    def members_after_a_hook():
        out = ctx.run(ctx.on.update_status(), state)
        app_data = out.get_relation(next(iter(out.relations)).id).local_app_data
        return ClusterPlan.from_databag(app_data).members

    assert members_after_a_hook() == members(0, 1, 2)
    assert clock["slept"] == 20, "stops waiting as soon as goal-state grows"
    # Nothing more arrives: the wait runs out (bounded) and the membership grows.
    clock.update(now=100.0, slept=0.0, arrival=float("inf"))
    planned["units"] = 4
    assert members_after_a_hook() == members(0, 1, 2, 3)
    assert clock["slept"] == coordinator.GROWTH_SETTLE_SECONDS == 60
