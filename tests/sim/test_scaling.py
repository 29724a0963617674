"""Clusters that form, scale and restart safely: several units' Scenario states run
against each other, each with a simulated KurrentDB node, until nothing changes."""

from __future__ import annotations

import itertools

import pytest
from ops import testing

import coordinator
from sim.harness import Simulation
from sim.scenarios import SCENARIOS, StepResult, run_step

FQDN = "kurrentdb-{}.kurrentdb-endpoints.prod.svc.cluster.local"


def run(sim: Simulation, scenario: str) -> list[StepResult]:
    return [run_step(sim, name, action) for name, action in SCENARIOS[scenario]]


def assert_healthy_cluster(sim: Simulation) -> None:
    """Every node agrees on the membership, one leads, the others follow."""
    units = sorted(sim.units, key=lambda u: int(u.split("/")[1]))
    size = len(units)
    for unit in units:
        config = sim.units[unit].rendered_config()
        assert config["ClusterSize"] == size, unit
        others = [FQDN.format(u.split("/")[1]) + ":2113" for u in units if u != unit]
        if size > 1:
            assert config["DiscoverViaDns"] is False
            assert sorted(config["GossipSeed"].split(",")) == sorted(others)
        else:
            assert "GossipSeed" not in config
        assert config["NodeHostAdvertiseAs"] == FQDN.format(unit.split("/")[1])
    statuses = sorted(str(sim.status(u)) for u in units)
    expected = [testing.ActiveStatus("Leader")] + [testing.ActiveStatus("Follower")] * (size - 1)
    assert statuses == sorted(str(s) for s in expected)
    leader_unit = next(u for u in units if sim.status(u) == testing.ActiveStatus("Leader"))
    assert sim.cluster.leader() == leader_unit
    app = sim.app_status()
    assert isinstance(app, testing.ActiveStatus)
    assert app.message.startswith(f"{size} nodes, leader {leader_unit}")


def assert_safe(step: StepResult, leader_last: bool = True) -> None:
    assert step.lost_writes == 0, f"{step.name}: acknowledged events lost"
    assert step.max_serving_down <= 1, f"{step.name}: two serving nodes down at once"
    assert all(n == 1 for n in step.restarts.values()), f"{step.name}: {step.restarts}"
    assert not step.restarted_while_leading, f"{step.name}: restarted without resigning"
    if leader_last and step.leader_before in step.restart_order:
        assert step.restart_order[-1] == step.leader_before, (
            f"{step.name}: the KurrentDB leader {step.leader_before} did not restart last: "
            f"{step.restart_order}"
        )


@pytest.mark.parametrize("scenario", ["deploy 1", "deploy 3", "deploy 5"])
def test_deploy(sim: Simulation, scenario: str):
    deploy, noop = run(sim, scenario)
    assert_healthy_cluster(sim)
    assert_safe(deploy)
    assert_safe(noop)
    # A new cluster starts every node once, at its final size: no restart at all.
    assert deploy.restarts == {}
    assert noop.restarts == {} and noop.write_unavailable_ticks == 0


def test_scale_1_3_5_3_1(sim: Simulation):
    steps = run(sim, "scale 1-3-5-3-1")
    assert_healthy_cluster(sim)
    for step in steps:
        # Once departing nodes are gone, a 5-node configuration has no spare node: the
        # first follower restart costs the leader its quorum, and the first node back at
        # the new size is elected. Nothing restarts while leading, even then.
        assert_safe(step, leader_last=step.name != "5 -> 3")
    by_name = {step.name: step for step in steps}
    # Every node that was in the cluster before a size change restarts exactly once.
    assert set(by_name["1 -> 3"].restarts) == {"kurrentdb/0"}
    assert set(by_name["3 -> 5"].restarts) == {"kurrentdb/0", "kurrentdb/1", "kurrentdb/2"}
    assert set(by_name["5 -> 3"].restarts) == {"kurrentdb/0", "kurrentdb/1", "kurrentdb/2"}
    assert set(by_name["3 -> 1"].restarts) == {"kurrentdb/0"}


def test_intermediate_sizes_are_healthy(sim: Simulation):
    for name, action in SCENARIOS["scale 1-3-5-3-1"]:
        assert_safe(run_step(sim, name, action), leader_last=name != "5 -> 3")
        assert_healthy_cluster(sim)


def test_juju_leader_unit_removed(sim: Simulation):
    _deploy, removal = run(sim, "juju leader unit removed")
    assert "kurrentdb/0" not in sim.units
    # The departing unit led KurrentDB too: it handed leadership over before its pod went.
    assert ("kurrentdb/0", "resign requested") in [(n, w) for _, n, w in sim.cluster.events]
    assert sim.leader == "kurrentdb/1"
    assert_healthy_cluster(sim)
    assert_safe(removal)


def test_juju_leadership_moving_mid_resize(sim: Simulation):
    _deploy, resize = run(sim, "juju leadership moves mid-resize")
    assert sim.leader == "kurrentdb/2"
    assert_healthy_cluster(sim)
    assert_safe(resize)
    assert set(resize.restarts) == {"kurrentdb/0", "kurrentdb/1", "kurrentdb/2"}


def test_kurrentdb_leader_on_another_unit_restarts_last(sim: Simulation):
    _deploy, _move, change = run(sim, "kurrentdb leader not on juju leader")
    assert change.leader_before not in (None, sim.leader)
    assert sorted(change.restarts) == sorted(sim.units)
    assert_safe(change)
    assert_healthy_cluster(sim)


def test_all_pods_restarted_reform_the_cluster(sim: Simulation):
    _deploy, restart = run(sim, "all pods restarted")
    assert_healthy_cluster(sim)
    assert restart.lost_writes == 0


def test_slow_follower_gates_the_next_start(sim: Simulation):
    steps = run(sim, "node slow to catch up")
    assert_healthy_cluster(sim)
    for step in steps:
        assert_safe(step)
    cluster = sim.cluster
    start_of_2 = next(
        t for t, node, what in cluster.events if node == "kurrentdb/2" and what == "start"
    )
    in_sync_1 = next(r.tick for r in cluster.history if "kurrentdb/1" in r.serving_nodes)
    assert in_sync_1 - cluster.events[0][0] > 30, "4 GiB at 64 MiB a tick: a slow catch-up"
    # The second empty node only starts once the first holds the data: two empty nodes
    # could otherwise form a quorum without kurrentdb/0.
    assert start_of_2 >= in_sync_1


def test_config_change_rolls_one_node_at_a_time(sim: Simulation):
    run_step(sim, "deploy 3", SCENARIOS["deploy 3"][0][1])
    step = run_step(sim, "config change", lambda s: s.set_config(run_projections="system"))
    assert_safe(step)
    assert sorted(step.restarts) == sorted(sim.units)
    for unit in sim.units:
        assert sim.units[unit].rendered_config()["RunProjections"] == "System"


def test_one_membership_change_per_scale_request(sim: Simulation):
    """Pods introduce themselves 30 s apart, so goal-state grows unit by unit; the leader
    lists the app's pods and waits for each pod's unit."""
    deploy, grow = run(sim, "staggered arrival")
    assert_healthy_cluster(sim)
    for step in (deploy, grow):
        assert_safe(step)
        assert step.membership_changes == 1, f"{step.name}: resized more than once"
    # Each request became one membership: the final one.
    assert [m for _, m in sim.membership_changes] == [
        tuple(f"kurrentdb/{n}" for n in range(3)),
        tuple(f"kurrentdb/{n}" for n in range(5)),
    ]
    assert deploy.restarts == {}, "a new cluster starts every node once, at its final size"
    assert grow.restarts == {"kurrentdb/0": 1, "kurrentdb/1": 1, "kurrentdb/2": 1}
    assert_spread_out(sim)


def test_one_membership_change_per_scale_request_without_the_kubernetes_api(sim: Simulation):
    """The fallback: the leader cannot list pods and watches goal-state for a minute
    (simulated) in the hook before it grows the membership."""
    _deploy, grow = run(sim, "staggered arrival, no k8s api")
    assert_healthy_cluster(sim)
    assert [m for _, m in sim.membership_changes] == [
        ("kurrentdb/0",),
        tuple(f"kurrentdb/{n}" for n in range(3)),
    ]
    assert_safe(grow)
    assert grow.membership_changes == 1 and grow.restarts == {"kurrentdb/0": 1}
    assert_spread_out(sim)
    # The last unit came, then nothing more within GROWTH_SETTLE_SECONDS: then it resized.
    last_arrival = sim.introduced[-1][0]
    assert sim.membership_changes[-1][0] - last_arrival >= coordinator.GROWTH_SETTLE_SECONDS


def assert_spread_out(sim: Simulation) -> None:
    """The arrivals were 30 s apart (give or take a tick or a poll): goal-state lagged."""
    times = [t for t, _ in sim.introduced]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(g >= 25 for g in gaps) >= 2, sim.introduced
