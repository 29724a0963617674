"""How clusters converge: hooks, restarts and write pauses for each simulated scenario.

Runs the scenarios of the multi-unit simulation (tests/sim/scenarios.py): charm units in
Scenario against a simulated KurrentDB cluster. Targets (issue #3): one restart per node
per size change, zero restarts for hooks that change nothing.

Run: `.venv/bin/python bench/convergence.py [scenario ...]`. Prints a table; asserts nothing.
A tick is one round of hooks plus one step of the simulated cluster (an election, a boot,
about one gossip interval), so write-unavailable ticks measure outages in those units.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "lib"), str(ROOT / "tests")]

from sim.harness import ADMIN_PASSWORD, OPS_PASSWORD, Simulation  # noqa: E402
from sim.kurrentdb_cluster import SimCluster  # noqa: E402
from sim.scenarios import SCENARIOS, StepResult, run_step  # noqa: E402

import tls  # noqa: E402


def run(scenario: str, ca: tls.KeyPair) -> list[StepResult]:
    import kubernetes

    with (
        tempfile.TemporaryDirectory() as tmp,
        pytest.MonkeyPatch.context() as patch,
        SimCluster(ca=ca, admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD) as cluster,
    ):
        patch.setattr(kubernetes, "label_pod", lambda *args: True)
        sim = Simulation(pathlib.Path(tmp), cluster, patch)
        return [run_step(sim, name, action) for name, action in SCENARIOS[scenario]]


def counts(values: dict[str, int]) -> str:
    if not values:
        return "-"
    return " ".join(f"{unit.split('/')[1]}:{n}" for unit, n in sorted(values.items()))


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # Scenario's consistency warnings are not results
    wanted = sys.argv[1:] or list(SCENARIOS)
    ca = tls.generate_ca()
    header = (
        f"{'scenario':<36} {'step':<16} {'hooks':>5} {'rounds':>6} "
        f"{'restarts (unit:n)':<22} {'kurrentdb exits':<16} {'unavail':>7} {'lost':>4}"
    )
    print(header)
    print("-" * len(header))
    for scenario in wanted:
        for step in run(scenario, ca):
            print(
                f"{scenario:<36} {step.name:<16} {step.hooks:>5} {step.rounds:>6} "
                f"{counts(step.restarts):<22} {counts(step.process_exits):<16} "
                f"{step.write_unavailable_ticks:>7} {step.lost_writes:>4}"
            )
    print(
        "\nrestarts: restarts the charm made; kurrentdb exits: surplus shutdowns Pebble "
        "restarted;\nunavail: ticks without an acknowledged write; lost: acknowledged bytes lost."
    )


if __name__ == "__main__":
    main()
