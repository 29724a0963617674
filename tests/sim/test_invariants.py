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
