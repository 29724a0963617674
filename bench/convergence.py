"""How clusters converge: hooks, restarts and write pauses for each simulated scenario.

Runs the scenarios of the multi-unit simulation (tests/sim/scenarios.py): charm units in
Scenario against a simulated KurrentDB cluster. Targets (issue #3): one restart per node
per size change, zero restarts for hooks that change nothing; (issue #7) one membership
change per scale request, also when pods introduce themselves 30 s apart; no
relation-changed caused by health flapping in a steady cluster under write load.

(issue #11) a refresh starts each node once (its new pod), pauses writes only for the
leader's hand-over, and loses nothing.

Run: `.venv/bin/python bench/convergence.py [--both-orders] [--boot-ticks=N] [scenario ...]`.
Prints tables; asserts nothing. `--boot-ticks=4` makes every node take 8 s to boot, closer
to a real node with data than the default single tick.
A tick is one round of hooks plus one step of the simulated cluster (an election, a boot,
about one gossip interval), so write-unavailable ticks measure outages in those units.
Simulated time runs at SECONDS_PER_TICK (2 s, KurrentDB's gossip interval) per tick; a
minute of it is 30 ticks. Quiet windows (steady load) run each unit's update-status every
UPDATE_STATUS_INTERVAL (Juju's default 5 min) and at most one hook per unit per tick.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "lib"), str(ROOT / "tests")]

from sim.harness import (  # noqa: E402
    ADMIN_PASSWORD,
    OPS_PASSWORD,
    SECONDS_PER_TICK,
    UPDATE_STATUS_INTERVAL,
    Simulation,
)
from sim.kurrentdb_cluster import SimCluster  # noqa: E402
from sim.scenarios import SCENARIOS, StepResult, run_step  # noqa: E402

import tls  # noqa: E402


def run(
    scenario: str, ca: tls.KeyPair, hook_order: str = "number", boot_ticks: int = 1
) -> list[StepResult]:
    import kubernetes

    with (
        tempfile.TemporaryDirectory() as tmp,
        pytest.MonkeyPatch.context() as patch,
        SimCluster(
            ca=ca, admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD, boot_ticks=boot_ticks
        ) as cluster,
    ):
        patch.setattr(kubernetes, "label_pod", lambda *args: True)
        # Not strict: a breach is counted and shown, not raised.
        sim = Simulation(pathlib.Path(tmp), cluster, patch, hook_order=hook_order, strict=False)
        return [run_step(sim, name, action) for name, action in SCENARIOS[scenario]]


def counts(values: dict[str, int]) -> str:
    if not values:
        return "-"
    return " ".join(f"{unit.split('/')[1]}:{n}" for unit, n in sorted(values.items()))


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # Scenario's consistency warnings are not results
    args = sys.argv[1:]
    orders = ["number", "newest"] if "--both-orders" in args else ["number"]
    # --boot-ticks=N: nodes take N ticks to boot (1, the default, is the kindest).
    boot = [int(a.split("=", 1)[1]) for a in args if a.startswith("--boot-ticks=")]
    boot_ticks = boot[-1] if boot else 1
    wanted = [a for a in args if not a.startswith("--")] or list(SCENARIOS)
    ca = tls.generate_ca()
    header = (
        f"{'scenario':<36} {'step':<18} {'hooks':>5} {'rounds':>6} {'resizes':>7} "
        f"{'restarts (unit:n)':<22} {'node starts':<16} {'kurrentdb exits':<16} "
        f"{'unavail':>7} {'lost':>4} {'lead-stop':>9} "
        f"{'breaches':>8} {'order':<6}"
    )
    print(header)
    print("-" * len(header))
    windows: list[tuple[str, StepResult]] = []
    for scenario, order in [(s, o) for s in wanted for o in orders]:
        for step in run(scenario, ca, order, boot_ticks):
            print(
                f"{scenario:<36} {step.name:<18} {step.hooks:>5} {step.rounds:>6} "
                f"{step.membership_changes:>7} {counts(step.restarts):<22} "
                f"{counts(step.node_starts):<16} {counts(step.process_exits):<16} "
                f"{step.write_unavailable_ticks:>7} {step.lost_writes:>4} "
                f"{len(step.restarted_while_leading):>9} "
                f"{len(step.breaches):>8} {order:<6}"
            )
            for breach in step.breaches[:3]:
                print(f"    {breach}")
            if step.window is not None:
                windows.append((scenario, step))
    print(
        "\nresizes: membership changes the leader published; restarts: restarts the charm "
        "made;\nnode starts: KurrentDB starts after the first, whatever the cause (a pod "
        "replaced by a refresh included);\nkurrentdb exits: surplus shutdowns Pebble "
        "restarted; unavail: ticks without an acknowledged write;\nlead-stop: nodes stopped "
        "while leading (not handed over first);\nlost: acknowledged bytes "
        "lost; breaches: invariant breaches "
        "(tests/sim/kurrentdb_cluster.py, scenarios.py);\norder: the hook order (--both-orders "
        "plays each scenario in unit-number order and newest first)."
    )
    if not windows:
        return
    header = (
        f"\n{'scenario':<36} {'step':<18} {'sim min':>7} {'hooks/unit/min':>14} "
        f"{'update-status':>13} {'rel-changed health':>18} {'rel-changed other':>17}"
    )
    print(header)
    print("-" * len(header.strip()))
    for scenario, step in windows:
        w = step.window
        assert w is not None
        other = sum(n for k, n in w.hooks.items() if k.startswith("relation-changed")) - (
            w.health_relation_changed
        )
        print(
            f"{scenario:<36} {step.name:<18} {w.minutes:>7.1f} {w.per_unit_per_minute():>14.2f} "
            f"{w.hooks['update-status']:>13} {w.health_relation_changed:>18} {other:>17}"
        )
    print(
        f"\nA simulated minute is {60 / SECONDS_PER_TICK:.0f} ticks of {SECONDS_PER_TICK:.0f} s; "
        f"update-status every {UPDATE_STATUS_INTERVAL / 60:.0f} min per unit, so "
        f"{60 / UPDATE_STATUS_INTERVAL:.2f} hooks/unit/min is the floor.\n"
        "rel-changed health: relation-changed hooks woken by a peer whose only change was "
        "its role or caught-up flag\n(health flapping when nothing is scheduled; a real role "
        "change in an election)."
    )


if __name__ == "__main__":
    main()
