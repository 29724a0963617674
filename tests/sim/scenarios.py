"""Cluster scenarios shared by the simulation tests and `bench/convergence.py`.

Each scenario is a list of steps (a Juju operation each); running a step settles the
simulation and measures what it cost: hooks, restarts per node, membership changes,
write-unavailable ticks, how many voting nodes were down at once, and the order in which
nodes restarted. Steps that let time pass in a quiet cluster (`steady_load`) also return
what that window cost in hooks, by kind.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import cluster as cluster_rules
from kurrentdb_api import KurrentDBClient
from sim.harness import ADMIN_PASSWORD, Simulation
from sim.kurrentdb_cluster import TickRecord


@dataclasses.dataclass
class Window:
    """What a stretch of quiet simulated time cost."""

    seconds: float
    units: int
    hooks: collections.Counter[str]  # by kind; relation-changed by what changed

    @property
    def minutes(self) -> float:
        return self.seconds / 60

    def per_unit_per_minute(self, kind: str | None = None) -> float:
        count = sum(self.hooks.values()) if kind is None else self.hooks[kind]
        return count / self.units / self.minutes

    @property
    def health_relation_changed(self) -> int:
        """relation-changed hooks caused by a peer whose only change was its health."""
        return self.hooks["relation-changed (health)"]


Step = tuple[str, Callable[[Simulation], Window | None]]

# Invariant (d): a step (a resize, say) is done within this many ticks: 10 simulated minutes.
RESIZE_BOUND_TICKS = 300


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
    membership_changes: int = 0  # times the leader published a new membership
    window: Window | None = None
    ticks: int = 0  # cluster ticks the step took, in-hook waits included
    breaches: tuple[str, ...] = ()  # invariants broken (with strict=False)
    node_starts: dict[str, int] = dataclasses.field(default_factory=dict)  # all causes


def run_step(
    sim: Simulation, name: str, action: Callable[[Simulation], Window | None]
) -> StepResult:
    cluster = sim.cluster
    hooks, ticks = sim.hooks_run, len(cluster.history)
    restarts_before = dict(sim.charm_restarts)
    exits_before = dict(cluster.surplus_shutdowns)
    log_before = len(cluster.restart_log)
    unavailable = cluster.write_unavailable_ticks
    leader_before = cluster.leader()
    size_before = len(sim.units)
    resizes = len(sim.membership_changes)
    breaches_before = len(cluster.breaches)
    starts_before = dict(cluster.restarts)
    window = action(sim)
    rounds = sim.settle()
    elapsed = len(cluster.history) - ticks
    breaches = [str(b) for b in cluster.breaches[breaches_before:]]
    # Invariant (d): the resize completes, within a bounded time.
    if len(sim.membership_changes) > resizes and elapsed > RESIZE_BOUND_TICKS:
        breaches.append(f"d: {name} took {elapsed} ticks (bound {RESIZE_BOUND_TICKS})")
    size = len(sim.units)
    configured = {u: sim.units[u].rendered_config().get("ClusterSize") for u in sim.units}
    if any(v != size for v in configured.values()):
        breaches.append(f"d: {name}: not every node on size {size}: {configured}")
    serving = set(cluster.history[-1].serving_nodes) if cluster.history else set()
    if cluster.leader() is None or serving != set(sim.units):
        breaches.append(f"d: {name}: not one leader with every node serving: {sorted(serving)}")
    if sim.strict and breaches:
        raise AssertionError(f"{name}: {breaches[0]}")
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
            # a single node, or the one that stays of a scale-down to 1, has nobody to
            # hand leadership to
            if state == "Leader" and size_before > 1 and len(sim.units) > 1
        ],
        lost_writes=cluster.lost_acknowledged_writes(),
        rounds=rounds,
        membership_changes=len(sim.membership_changes) - resizes,
        window=window,
        ticks=elapsed,
        breaches=tuple(breaches),
        node_starts=_delta(cluster.restarts, starts_before),
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
    for _ in range(200):  # into the resize: once the first node restarted
        if sum(sim.charm_restarts.values()) > restarts:
            break
        if not sim.queue:
            sim.tick()
        sim.run_hooks(1)
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
        _resign_leader(sim)
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


def add_units_staggered(n: int, gap: float = 30.0) -> Callable[[Simulation], None]:
    """`juju add-unit -n N` as Kubernetes and Juju do it: the N pods exist at once, their
    units introduce themselves ``gap`` simulated seconds apart (image pulls, PVCs)."""

    def action(sim: Simulation) -> None:
        sim.add_pods(n)
        sim.introduce_at(*(sim.clock + i * gap for i in range(n)))
        sim.advance(0)  # the first pod introduces itself right away
        sim.run_until_arrived()

    return action


def without_kubernetes_api(step: Callable[[Simulation], None]) -> Callable[[Simulation], None]:
    """The same step, and all that follow, with the charm unable to list the app's pods
    (a 403, say)."""

    def action(sim: Simulation) -> None:
        sim.kubernetes_api = False
        step(sim)

    return action


def pods_lingering(
    seconds: float, step: Callable[[Simulation], None]
) -> Callable[[Simulation], None]:
    """The same step, and all that follow, with removed units' pods (and their KurrentDB)
    running for ``seconds`` after the other units heard relation-departed."""

    def action(sim: Simulation) -> None:
        sim.pod_linger_seconds = seconds
        step(sim)

    return action


# How long a removed unit's pod outlives it in the scenarios: the unit's stop hook has
# ended, the StatefulSet is scaled down, Kubernetes deletes the pod, KurrentDB shuts down.
POD_LINGER_SECONDS = 30.0


def steady_load(minutes: float, election: bool = False) -> Callable[[Simulation], Window]:
    """Clients write steadily: followers' lag wavers around CATCH_UP_BYTES (0 to twice it,
    anew each tick). Nothing is scheduled; with ``election``, the KurrentDB leader resigns
    half-way and the cluster elects another one."""

    def action(sim: Simulation) -> Window:
        cluster = sim.cluster
        start, first, units = sim.clock, len(sim.hook_log), len(sim.units)
        cluster.lag_jitter_bytes = 2 * cluster_rules.CATCH_UP_BYTES
        try:
            if election:
                sim.run_for(minutes * 30)
                _resign_leader(sim)
                sim.run_for(minutes * 30)
            else:
                sim.run_for(minutes * 60)
        finally:
            cluster.lag_jitter_bytes = 0
        return Window(sim.clock - start, units, sim.hooks_since(first))

    return action


def _resign_leader(sim: Simulation) -> None:
    leader = sim.cluster.leader()
    assert leader is not None
    node = sim.cluster.node(leader)
    KurrentDBClient(
        node.url, ca_pem=node.ca_pem, username="admin", password=ADMIN_PASSWORD
    ).resign_node()


REFRESH_FROM, REFRESH_TO = "26.0.3", "26.1.0"


def deploy_for_refresh(n: int) -> Callable[[Simulation], None]:
    """Deploy n units of the 26.0.3 image (revision rev-1), refreshing without pauses."""

    def action(sim: Simulation) -> None:
        sim.image_version = REFRESH_FROM
        sim.statefulset.versions["rev-1"] = REFRESH_FROM
        sim.set_config(pause_after_unit_refresh="none")
        add_units(n)(sim)

    return action


def kurrentdb_leader_on(unit: str) -> Callable[[Simulation], None]:
    """Resign KurrentDB leaders until ``unit``'s node leads."""

    def action(sim: Simulation) -> None:
        for _ in range(12):
            if sim.cluster.leader() == unit:
                return
            _resign_leader(sim)
            for _ in range(3):
                sim.cluster.tick()
        raise AssertionError(f"{unit} never came to lead")

    return action


def pre_refresh_check(sim: Simulation) -> None:
    """`juju run kurrentdb/leader pre-refresh-check` (it must pass)."""
    assert sim.leader is not None
    sim.run_action(sim.leader, "pre-refresh-check")


def juju_refresh(revision: str, version: str | None = None) -> Callable[[Simulation], None]:
    """`juju refresh`: the StatefulSet's new revision, rolled out by its controller."""
    return lambda sim: sim.juju_refresh(revision, version)


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
    "scale 1-5-1": [
        ("deploy 1", add_units(1)),
        ("1 -> 5", add_units(4)),
        ("5 -> 1", remove_highest(4)),
    ],
    # Juju delivers relation-departed to the remaining units while the departing pods still
    # run KurrentDB at the larger size (Juju does not wait for the pods to go).
    "scale 5-3-1, pods linger": [
        ("deploy 5", add_units(5)),
        ("5 -> 3", pods_lingering(POD_LINGER_SECONDS, remove_highest(2))),
        ("3 -> 1", remove_highest(2)),
    ],
    "scale 3-4-5": [
        ("deploy 3", add_units(3)),
        ("3 -> 4", add_units(1)),
        ("4 -> 5", add_units(1)),
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
    # Pods introduce themselves 30 s apart; the leader can list the app's pods.
    "staggered arrival": [
        ("deploy 3", add_units_staggered(3)),
        ("3 -> 5", add_units_staggered(2)),
    ],
    # The same without the Kubernetes API: the leader watches goal-state for a while.
    "staggered arrival, no k8s api": [
        ("deploy 1", without_kubernetes_api(add_units(1))),
        ("1 -> 3", add_units_staggered(2)),
    ],
    # Followers' lag wavers around CATCH_UP_BYTES; then the KurrentDB leader resigns.
    "steady load": [
        ("deploy 3", add_units(3)),
        ("10 min load", steady_load(10)),
        ("10 min, election", steady_load(10, election=True)),
    ],
    # `juju refresh` to a new KurrentDB: pods replaced highest first, the charm moving the
    # StatefulSet partition (tests/sim/statefulset.py).
    "refresh 3": [
        ("deploy 3", deploy_for_refresh(3)),
        ("leader on 0", kurrentdb_leader_on("kurrentdb/0")),
        ("pre-refresh-check", pre_refresh_check),
        ("refresh", juju_refresh("rev-2", REFRESH_TO)),
    ],
    "refresh 3, leader first": [
        ("deploy 3", deploy_for_refresh(3)),
        ("leader on 2", kurrentdb_leader_on("kurrentdb/2")),
        ("pre-refresh-check", pre_refresh_check),
        ("refresh", juju_refresh("rev-2", REFRESH_TO)),
        ("roll back", juju_refresh("rev-1")),
    ],
    # The same without pre-refresh-check: the first pod's leader goes unannounced.
    "refresh 3, leader first, no check": [
        ("deploy 3", deploy_for_refresh(3)),
        ("leader on 2", kurrentdb_leader_on("kurrentdb/2")),
        ("refresh", juju_refresh("rev-2", REFRESH_TO)),
    ],
    "refresh 5": [
        ("deploy 5", deploy_for_refresh(5)),
        ("pre-refresh-check", pre_refresh_check),
        ("refresh", juju_refresh("rev-2", REFRESH_TO)),
    ],
    "refresh 3, charm only": [
        ("deploy 3", deploy_for_refresh(3)),
        ("pre-refresh-check", pre_refresh_check),
        ("refresh", juju_refresh("rev-2")),
    ],
}
