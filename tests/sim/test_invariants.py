"""Quorum safety as an invariant, checked at every simulated tick of every scenario
(tests/sim/harness.py `check_invariants`, tests/sim/scenarios.py `run_step`), under more than
one hook order; and a demonstration that the plan of before issue #8 breaks it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

import cluster
from cluster import UnitReport, quorum
from sim.harness import Simulation
from sim.scenarios import SCENARIOS, StepResult, run_step
from sim.test_scaling import assert_healthy_cluster, assert_safe


def run(sim: Simulation, scenario: str) -> list[StepResult]:
    return [run_step(sim, name, action) for name, action in SCENARIOS[scenario]]


def legacy_fresh_allowed(
    members: Sequence[str], reports: Mapping[str, UnitReport], grant: str | None = None
) -> tuple[str, ...]:
    """`cluster._fresh_allowed` before issue #8: new nodes start while old ones run the
    old size (kept to show that the invariant checker catches it)."""
    present = [u for u in members if u in reports]
    fresh = [u for u in present if not reports[u].started]
    if not any(reports[u].has_data for u in present):
        return tuple(fresh)
    empty_running = [u for u in present if reports[u].started and not reports[u].has_data]
    budget = max(0, quorum(len(members)) - 1 - len(empty_running))
    return tuple(fresh[:budget])


def _grow_with_the_old_plan(sim: Simulation, monkeypatch) -> None:
    run_step(sim, "deploy 3", SCENARIOS["deploy 3"][0][1])
    assert not sim.cluster.breaches
    monkeypatch.setattr(cluster, "_fresh_allowed", legacy_fresh_allowed)
    sim.add_unit()
    sim.add_unit()
    for _ in range(60):  # the resize, until the first breach
        sim.drain()
        sim.tick()
        for name in sim.ordered(sim.units):
            sim._enqueue(name, "update-status", lambda ctx, s: ctx.on.update_status())
        if sim.cluster.breaches:
            return


def test_the_old_3_to_5_plan_breaks_quorum_safety(make_sim, monkeypatch):
    sim = make_sim(strict=False)
    _grow_with_the_old_plan(sim, monkeypatch)
    first = sim.cluster.first_breach
    assert first is not None and first.invariant.startswith("a:"), sim.cluster.breaches
    # Two size-3 nodes are a majority by their size while the new size-5 nodes run.
    assert "@3" in first.detail and "@5" in first.detail


def test_the_checker_fails_the_test_at_the_first_breach(make_sim, monkeypatch):
    sim = make_sim()
    with pytest.raises(Exception, match="invariant a: two disjoint majorities possible"):
        _grow_with_the_old_plan(sim, monkeypatch)


@pytest.mark.parametrize(
    ("scenario", "hook_order"),
    [
        ("scale 1-3-5-3-1", "newest"),
        ("scale 1-5-1", "number"),
        ("scale 1-5-1", "newest"),
        ("scale 3-4-5", "number"),
        ("scale 3-4-5", "newest"),
    ],
)
def test_every_resize_keeps_the_invariants(make_sim, scenario: str, hook_order: str):
    """(scale 1-3-5-3-1 in number order is tests/sim/test_scaling.py.) Strict: any breach,
    at any tick, fails here; `run_step` checks that each resize completed in time."""
    sim = make_sim(hook_order)
    steps = run(sim, scenario)
    assert_healthy_cluster(sim)
    for step in steps:
        assert not step.breaches
        assert step.lost_writes == 0
        assert step.max_serving_down <= 1
        assert all(n == 1 for n in step.restarts.values()), (step.name, step.restarts)
        assert not step.restarted_while_leading, step.name


def test_1_to_3_pauses_writes_only_while_the_node_restarts(make_sim):
    """The Juju leader restarts its own node into a 3-node cluster; the node serves only
    once the second node starts, which it may only once the plan of that very hook is
    visible: the hook does not wait for it (it used to, for SETTLE_TIMEOUT)."""
    sim = make_sim()
    run_step(sim, "deploy 1", SCENARIOS["deploy 1"][0][1])
    grow = run_step(sim, "1 -> 3", lambda s: [s.add_unit() for _ in range(2)] and None)
    assert_safe(grow)
    assert grow.write_unavailable_ticks <= 5, grow


@pytest.mark.parametrize("hook_order", ["number", "newest"])
def test_a_scale_down_waits_for_the_departing_pods_to_go(make_sim, hook_order: str):
    """The remaining units hear relation-departed while the departing pods still run
    KurrentDB at size 5 (then at 3): no node restarts into the smaller size until the
    leader's own gossip shows them gone."""
    sim = make_sim(hook_order)
    steps = run(sim, "scale 5-3-1, pods linger")
    assert_healthy_cluster(sim)
    for step in steps:
        assert not step.breaches, step.breaches
        assert step.lost_writes == 0
        assert all(n == 1 for n in step.restarts.values()), (step.name, step.restarts)


def test_without_the_departure_guard_lingering_pods_break_quorum_safety(make_sim, monkeypatch):
    """The grant as it was before: decided from the peer reports alone, in which a departed
    unit no longer appears, so the first remaining node restarts into size 3 beside two
    size-5 nodes that are leaving but still run."""
    monkeypatch.setattr(cluster, "leaving_units", lambda members, reports: ())
    sim = make_sim(strict=False)
    run(sim, "scale 5-3-1, pods linger")
    first = sim.cluster.first_breach
    assert first is not None and first.invariant.startswith("a:"), sim.cluster.breaches
    assert "@3" in first.detail and "@5" in first.detail, first


@pytest.mark.parametrize("hook_order", ["number", "newest"])
def test_3_to_5_the_old_leader_resigns_lets_a_new_node_join_then_restarts(
    make_sim, hook_order: str
):
    """The last node on size 3 leads: it resigns, a new node joins the size-5 leader as a
    follower (no surplus exit), and only once it serves does the old leader restart, so
    the size-5 nodes without it are a quorum throughout."""
    sim = make_sim(hook_order)
    run(sim, "deploy 3")
    leader = sim.cluster.leader()
    cluster_model = sim.cluster
    log_from, events_from = len(cluster_model.restart_log), len(cluster_model.events)
    grow = run_step(sim, "3 -> 5", SCENARIOS["scale 1-3-5-3-1"][2][1])
    assert not grow.breaches and not grow.process_exits, grow
    restarts = {node: tick for tick, node, _ in cluster_model.restart_log[log_from:]}
    assert grow.restart_order[-1] == leader, grow.restart_order
    assert cluster_model.restart_log[-1][2] != "Leader", "it resigned first"
    first_new = next(
        (tick, node)
        for tick, node, what in cluster_model.events[events_from:]
        if what == "start" and node in ("kurrentdb/3", "kurrentdb/4")
    )
    assert first_new[0] <= restarts[leader], (first_new, restarts)
    before_restart = next(r for r in cluster_model.history if r.tick == restarts[leader])
    assert first_new[1] in before_restart.serving_nodes, before_restart
    assert grow.write_unavailable_ticks == 0


@pytest.mark.parametrize("order", ["resign, new node serves, restart", "resign, restart"])
def test_3_to_5_with_slow_booting_nodes_pauses_writes_only_in_the_old_order(
    make_sim, monkeypatch, order: str
):
    """Nodes that take 8 s (4 ticks) to boot, as a real node with data does: restarting the
    old leader right after its resign leaves the two size-5 nodes without a quorum until it
    is back; holding the restart until a new node serves does not."""
    if order == "resign, restart":
        monkeypatch.setattr(cluster, "restart_waits_for_new_node", lambda *args: False)
    sim = make_sim(boot_ticks=4)
    run(sim, "deploy 3")
    grow = run_step(sim, "3 -> 5", SCENARIOS["scale 1-3-5-3-1"][2][1])
    assert not grow.breaches and grow.lost_writes == 0
    if order == "resign, restart":
        assert grow.write_unavailable_ticks >= 3, grow
    else:
        assert grow.write_unavailable_ticks == 0, grow
