"""Cluster scenarios shared by the simulation tests and `bench/convergence.py`.

Each scenario is a list of steps (a Juju operation each); running a step settles the
simulation and measures what it cost: hooks, restarts per node, write-unavailable ticks,
how many voting nodes were down at once, and the order in which nodes restarted.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

from kurrentdb_api import KurrentDBClient
from sim.harness import ADMIN_PASSWORD, Simulation
from sim.kurrentdb_cluster import TickRecord

Step = tuple[str, Callable[[Simulation], None]]


@dataclasses.dataclass
class StepResult:
    """What one step cost and how it went."""

    name: str
    hooks: int
    restarts: dict[str, int]  # restarts the charm made, by unit
    process_exits: dict[str, int]  # KurrentDB exits Pebble restarted (surplus, truncation)
    write_unavailable_ticks: int
    max_serving_down: int  # nodes that were serving and were down in the same tick
    leader_before: str | None
    restart_order: list[str]
    restarted_while_leading: list[str]  # stopped in state Leader: without resigning first
    lost_writes: int
    rounds: int


def run_step(sim: Simulation, name: str, action: Callable[[Simulation], None]) -> StepResult:
    cluster = sim.cluster
    hooks, ticks = sim.hooks_run, len(cluster.history)
    restarts_before = dict(sim.charm_restarts)
    exits_before = dict(cluster.surplus_shutdowns)
    log_before = len(cluster.restart_log)
    unavailable = cluster.write_unavailable_ticks
    leader_before = cluster.leader()
    size_before = len(sim.units)
    action(sim)
    rounds = sim.settle()
    return StepResult(
        name=name,
        hooks=sim.hooks_run - hooks,
        restarts=_delta(sim.charm_restarts, restarts_before),
        process_exits=_delta(cluster.surplus_shutdowns, exits_before),
        write_unavailable_ticks=cluster.write_unavailable_ticks - unavailable,
        max_serving_down=_max_serving_down(cluster.history[max(0, ticks - 1) :]),
        leader_before=leader_before,
        restart_order=[node for _, node, _ in cluster.restart_log[log_before:]],
        restarted_while_leading=[
            node
            for _, node, state in cluster.restart_log[log_before:]
            # a single node has nobody to hand leadership to
            if state == "Leader" and size_before > 1
        ],
        lost_writes=cluster.lost_acknowledged_writes(),
        rounds=rounds,
    )


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def _max_serving_down(history: Sequence[TickRecord]) -> int:
    """The most nodes that were serving at one tick and down at the next."""
    worst = 0
    for previous, record in itertools.pairwise(history):
        worst = max(worst, len(set(previous.serving_nodes) & set(record.down)))
    return worst


def add_units(n: int) -> Callable[[Simulation], None]:
    def action(sim: Simulation) -> None:
        for _ in range(n):
            sim.add_unit()

    return action


def remove_highest(n: int) -> Callable[[Simulation], None]:
    def action(sim: Simulation) -> None:
        for unit in sorted(sim.units, key=lambda u: int(u.split("/")[1]))[-n:]:
            sim.remove_unit(unit)

    return action


def add_units_and_move_leadership(sim: Simulation) -> None:
    """Scale 3 -> 5, and Juju moves leadership while the rolling restart is under way."""
    add_units(2)(sim)
    restarts = sum(sim.charm_restarts.values())
    for _ in range(3):  # a few rounds into the resize
        sim.run_hooks(15)
        sim.cluster.tick()
    in_flight = sum(sim.charm_restarts.values()) - restarts
    assert 0 < in_flight < 3, f"leadership should move mid-resize, not after ({in_flight})"
    sim.move_leadership("kurrentdb/2")


def remove_juju_leader(sim: Simulation) -> None:
    assert sim.leader is not None
    sim.remove_unit(sim.leader)


def restart_all_pods(sim: Simulation) -> None:
    sim.restart_all_pods()


def nothing(sim: Simulation) -> None:
    """update-status everywhere: must change nothing."""


def config_change(sim: Simulation) -> None:
    sim.set_config(run_projections="system")


def move_kurrentdb_leader_off_juju_leader(sim: Simulation) -> None:
    """Resign the KurrentDB leader until a unit other than the Juju leader leads."""
    for _ in range(5):
        leader = sim.cluster.leader()
        if leader is not None and leader != sim.leader:
            return
        assert leader is not None
        node = sim.cluster.node(leader)
        KurrentDBClient(
            node.url, ca_pem=node.ca_pem, username="admin", password=ADMIN_PASSWORD
        ).resign_node()
        for _ in range(3):
            sim.cluster.tick()
    raise AssertionError("the KurrentDB leader stayed on the Juju leader")


def load_data(gib: int) -> Callable[[Simulation], None]:
    """Clients write a lot, so that a new node takes many ticks to catch up."""

    def action(sim: Simulation) -> None:
        cluster = sim.cluster
        normal, cluster.write_bytes_per_tick = cluster.write_bytes_per_tick, 2**30
        for _ in range(gib):
            cluster.tick()
        cluster.write_bytes_per_tick = normal

    return action


SCENARIOS: dict[str, list[Step]] = {
    "deploy 1": [("deploy 1", add_units(1)), ("no-op", nothing)],
    "deploy 3": [("deploy 3", add_units(3)), ("no-op", nothing)],
    "deploy 5": [("deploy 5", add_units(5)), ("no-op", nothing)],
    "scale 1-3-5-3-1": [
        ("deploy 1", add_units(1)),
        ("1 -> 3", add_units(2)),
        ("3 -> 5", add_units(2)),
        ("5 -> 3", remove_highest(2)),
        ("3 -> 1", remove_highest(2)),
    ],
    "juju leadership moves mid-resize": [
        ("deploy 3", add_units(3)),
        ("3 -> 5, new leader", add_units_and_move_leadership),
    ],
    "juju leader unit removed": [("deploy 3", add_units(3)), ("remove leader", remove_juju_leader)],
    "kurrentdb leader not on juju leader": [
        ("deploy 3", add_units(3)),
        ("move leader", move_kurrentdb_leader_off_juju_leader),
        ("config change", config_change),
    ],
    "node slow to catch up": [
        ("deploy 1", add_units(1)),
        ("load 4 GiB", load_data(4)),
        ("1 -> 3", add_units(2)),
    ],
    "all pods restarted": [("deploy 3", add_units(3)), ("restart all pods", restart_all_pods)],
}
