"""What one hook costs: the charm's import next to a bare `import ops`, and a realistic
update-status under Scenario.

Every Juju hook starts a fresh Python process that imports the charm and dispatches one
event, so import cost is paid on every hook of every unit. Targets (issue #2): the charm's
import at most 1.5x ops' own, and update-status within 30 ms.

Run: `.venv/bin/python bench/hook_cost.py [--runs N]`. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "lib"), str(ROOT / "tests"), str(ROOT / "tests/unit")]

IMPORTS = {
    "bare interpreter": "pass",
    "import ops": "import ops",
    "import charm": "import charm",
}


def process_ms(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'lib'}"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return (time.perf_counter() - start) * 1000


def import_costs(runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(runs):  # interleaved, so background load hits every case alike
        for name, code in IMPORTS.items():
            samples[name].append(process_ms(code))
    return {name: statistics.median(values) for name, values in samples.items()}


def update_status_ms(runs: int) -> tuple[float, float]:
    """Median and max of update-status on a running node whose KurrentDB answers."""
    import conftest
    from doubles.kurrentdb import KurrentDBDouble
    from ops import testing

    import tls
    from charm import KurrentDBCharm
    from workload import paths

    ca = tls.generate_ca()
    with (
        tempfile.TemporaryDirectory() as tmp,
        KurrentDBDouble(
            admin_password=conftest.ADMIN_PASSWORD, ops_password=conftest.OPS_PASSWORD, ca=ca
        ) as kurrentdb,
    ):
        KurrentDBCharm.api_url = kurrentdb.url
        volumes = conftest.Volumes(etc=pathlib.Path(tmp, "etc"), data=pathlib.Path(tmp, "data"))
        volumes.etc.mkdir()
        volumes.data.mkdir()
        conftest.write_passwd(volumes.etc, os.getuid(), os.getgid())
        with testing.Context(KurrentDBCharm) as ctx:
            state = conftest.unit_state(volumes, ca)
            state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
            assert state.unit_status == testing.ActiveStatus("Leader"), state.unit_status
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                state = ctx.run(ctx.on.update_status(), state)
                samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    costs = import_costs(args.runs)
    print(f"Whole-process import cost, median of {args.runs} fresh processes:")
    for name, ms in costs.items():
        print(f"  {name:<18} {ms:8.1f} ms")
    bare = costs["bare interpreter"]
    ops_only = costs["import ops"] - bare
    charm_only = costs["import charm"] - bare
    print(
        f"  charm / ops (interpreter start-up subtracted): {charm_only / ops_only:.2f}x"
        "  (target <= 1.5x)"
    )
    print(
        f"  charm / ops (whole process):                   "
        f"{costs['import charm'] / costs['import ops']:.2f}x"
    )

    median, worst = update_status_ms(args.runs * 2)
    print("update-status under Scenario, running Leader node answering over TLS:")
    print(f"  median {median:.1f} ms, max {worst:.1f} ms  (target: median <= 30 ms)")


if __name__ == "__main__":
    main()
