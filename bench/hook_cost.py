"""What one hook costs: the charm's import next to a bare `import ops`, and a realistic
update-status under Scenario.

Every Juju hook starts a fresh Python process that imports the charm and dispatches one
event, so import cost is paid on every hook of every unit. Targets (issue #2): the charm's
import at most 1.5x ops' own, and update-status within 30 ms.

Scenario itself costs a run a good part of that: it writes the charm's metadata, config and
actions out as YAML into a fresh charm root on every run (about 10 ms for this charm's
actions.yaml alone), which no real hook does. So the do-nothing control charm gets the same
metadata, config and actions, and the hook's cost is the difference: what the charm and ops'
dispatch of it add.

Run: `.venv/bin/python bench/hook_cost.py [--runs N]`. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import ops

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "lib"), str(ROOT / "tests"), str(ROOT / "tests/unit")]

IMPORTS = {
    "bare interpreter": "pass",
    "import ops": "import ops",
    "import charm": "import charm",
}
TLS_LIBRARY = "import charm; import charmlibs.interfaces.tls_certificates"
# The charm imports dpcharmlibs (and pydantic with it) only while a `database` relation
# exists, under a filter for the warnings pydantic gives at its import: the same here.
DATA_INTERFACES_LIBRARY = (
    "import charm, warnings; from clients.capability import _PYDANTIC_ALIAS_WARNING;"
    " warnings.filterwarnings('ignore', message=_PYDANTIC_ALIAS_WARNING);"
    " import dpcharmlibs.interfaces"
)


# A deployed charm's hooks import from bytecode Python cached at the first hook; a sandbox
# with PYTHONDONTWRITEBYTECODE=1 would compile every module in every process instead, so
# the import runs cache bytecode in a directory of their own.
_PYCACHE = tempfile.mkdtemp(prefix="hook-cost-pycache-")


def process_ms(code: str) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'lib'}",
        "PYTHONPYCACHEPREFIX": _PYCACHE,
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return (time.perf_counter() - start) * 1000


def import_costs(runs: int, more: dict[str, str] | None = None) -> dict[str, float]:
    cases = {**IMPORTS, **(more or {})}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for code in cases.values():
        process_ms(code)  # the first hook compiles and caches the bytecode
    for _ in range(runs):  # interleaved, so background load hits every case alike
        for name, code in cases.items():
            samples[name].append(process_ms(code))
    return {name: statistics.median(values) for name, values in samples.items()}


DOUBLE_SCRIPT = """
import json, sys, threading
sys.path[:0] = [{src!r}, {tests!r}]
import tls
from doubles.kurrentdb import KurrentDBDouble
ca = tls.KeyPair(**json.loads(sys.stdin.readline()))
with KurrentDBDouble(admin_password={admin!r}, ops_password={ops!r}, ca=ca) as double:
    print(double.url, flush=True)
    sys.stdin.readline()  # runs until the benchmark closes stdin
"""


def update_status_ms(
    runs: int, *, certificates: bool = False, database: bool = False
) -> tuple[float, ...]:
    """Median and max of update-status on a running node whose KurrentDB answers.

    The KurrentDB double runs in its own process, as a real server would: in-process, its
    TLS and request handling would be charged to the hook. With ``certificates``, the unit
    is related to a certificates provider and its node presents the provider's certificate
    (the double serves one from that CA): every hook then loads the tls-certificates library.
    With ``database``, the unit also serves one data_interfaces v0 client, answered before
    the timed hooks: those are the steady state, in which the charm checks its user and its
    answer and writes nothing; every hook then loads dpcharmlibs (imported once here, as the
    tls-certificates library is: its import cost is measured apart).
    """
    import json

    import scenario_fixtures as conftest  # the helpers tests/unit/conftest.py re-exports
    from ops import testing

    import kubernetes
    import tls
    from charm import KurrentDBCharm
    from refresh import statefulset
    from workload import paths

    # A real pod reads its controller revision from Kubernetes once, in its first hook.
    statefulset.pod_revision = lambda pod, namespace: "kurrentdb-5b7d"  # type: ignore[assignment]
    # and the leader lists the app's pods (here only its own) in its first hook: without an
    # answer it would wait a minute for goal-state to settle, in the set-up, not the timing.
    kubernetes.app_pod_ordinals = lambda *args: frozenset({0})  # type: ignore[assignment]

    ca = tls.generate_ca()
    served = ca
    if certificates:
        from issuing_ca import IssuingCA, key_pem

        provider = IssuingCA(name="bench provider")
        served = tls.KeyPair(provider.root_pem, key_pem(provider.root_key))
    script = DOUBLE_SCRIPT.format(
        src=str(ROOT / "src"),
        tests=str(ROOT / "tests"),
        admin=conftest.ADMIN_PASSWORD,
        ops=conftest.OPS_PASSWORD,
    )
    double = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert double.stdin is not None and double.stdout is not None
    double.stdin.write(
        json.dumps({"certificate": served.certificate, "private_key": served.private_key}) + "\n"
    )
    double.stdin.flush()
    KurrentDBCharm.api_url = double.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            volumes = conftest.Volumes(etc=pathlib.Path(tmp, "etc"), data=pathlib.Path(tmp, "data"))
            volumes.etc.mkdir()
            volumes.data.mkdir()
            conftest.write_passwd(volumes.etc, os.getuid(), os.getgid())
            charm_ms = _time_charm_code(KurrentDBCharm)
            with testing.Context(KurrentDBCharm) as ctx:
                state = conftest.unit_state(volumes, ca)
                state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
                if certificates:
                    state = _switch_to_provider(ctx, state, provider)
                if database:
                    state = _serve_client(ctx, state)
                assert state.unit_status == testing.ActiveStatus("Leader"), state.unit_status
                written = _writable(state)
                samples = []
                charm_ms.clear()
                for _ in range(runs):
                    start = time.perf_counter()
                    state = ctx.run(ctx.on.update_status(), state)
                    samples.append((time.perf_counter() - start) * 1000)
                in_charm = sum(charm_ms) / runs
                assert _writable(state) == written, "the timed hooks were not the steady state"
            spec = ctx.charm_spec
            with testing.Context(
                BareCharm, meta=spec.meta, actions=spec.actions, config=spec.config
            ) as bare_ctx:
                bare = []
                bare_state = testing.State.from_context(bare_ctx)
                for _ in range(runs):
                    start = time.perf_counter()
                    bare_ctx.run(bare_ctx.on.update_status(), bare_state)
                    bare.append((time.perf_counter() - start) * 1000)
    finally:
        double.stdin.close()
        double.wait(timeout=10)
    return statistics.median(samples), max(samples), statistics.median(bare), in_charm


def _switch_to_provider(ctx, state, provider):
    """Relate a provider, answer the unit's CSR, and run the hooks the CA switch takes."""
    import dataclasses
    import json

    from issuing_ca import sign_request
    from ops import testing

    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    state = dataclasses.replace(state, relations={*state.relations, relation})
    state = ctx.run(ctx.on.relation_created(relation), state)
    relation = state.get_relation(relation.id)
    csr = json.loads(relation.local_unit_data["certificate_signing_requests"])[0][
        "certificate_signing_request"
    ]
    issued = {
        "certificate_signing_request": csr,
        "certificate": sign_request(provider, csr),
        "ca": provider.ca_pem,
        "chain": provider.chain,
    }
    relation = dataclasses.replace(relation, remote_app_data={"certificates": json.dumps([issued])})
    others = {r for r in state.relations if r.id != relation.id}
    state = dataclasses.replace(state, relations={*others, relation})
    for _ in range(4):
        state = ctx.run(ctx.on.relation_changed(state.get_relation(relation.id)), state)
    return state


def _serve_client(ctx, state):
    """Relate one data_interfaces v0 client (as data-integrator asks) and answer it."""
    import dataclasses
    import json

    from ops import testing

    requested = json.dumps(["username", "password", "tls", "tls-ca", "uris"])
    relation = testing.Relation(
        "database",
        remote_app_name="myapp",
        remote_app_data={"database": "orders", "requested-secrets": requested},
    )
    state = dataclasses.replace(state, relations={*state.relations, relation})
    state = ctx.run(ctx.on.relation_created(relation), state)
    state = ctx.run(ctx.on.relation_changed(state.get_relation(relation.id), remote_unit=0), state)
    assert "secret-user" in state.get_relation(relation.id).local_app_data, "not served"
    return state


def _writable(state) -> tuple:
    """What a hook can leave behind for others: relation data and secrets."""
    relations = sorted(
        (r.id, sorted(r.local_app_data.items()), sorted(r.local_unit_data.items()))
        for r in state.relations
    )
    secrets = sorted((s.id, sorted((s.latest_content or {}).items())) for s in state.secrets)
    return relations, secrets


def _time_charm_code(charm_type: type) -> list[float]:
    """Time spent in the charm's own code (construction and handlers), per call, in ms."""
    spent: list[float] = []

    def timing(original):
        # ops finds observers by name and checks their signature: keep both.
        @functools.wraps(original)
        def timed(self, arg):
            start = time.perf_counter()
            try:
                return original(self, arg)
            finally:
                spent.append((time.perf_counter() - start) * 1000)

        return timed

    for name in ("__init__", "_reconcile", "_on_collect_unit_status", "_on_collect_app_status"):
        setattr(charm_type, name, timing(getattr(charm_type, name)))
    return spent


class BareCharm(ops.CharmBase):
    """A charm that does nothing: what Scenario itself costs per run."""


def main() -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # Scenario's, not a result
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

    median, worst, bare, in_charm = update_status_ms(args.runs * 2)
    print("update-status under Scenario, running Leader node answering over TLS (own process):")
    print(f"  median {median:.1f} ms, max {worst:.1f} ms under Scenario")
    print(
        f"  a charm that does nothing, same metadata, config and actions: median {bare:.1f} ms"
        " (Scenario's share)"
    )
    print(f"  the hook's own cost (median minus that): {median - bare:.1f} ms  (target <= 30 ms)")
    print(f"  of which in the charm's own code (init + handlers): mean {in_charm:.1f} ms")
    median, worst, bare, in_charm = update_status_ms(args.runs * 2, certificates=True)
    print("the same, related to a certificates provider whose certificate the node presents:")
    print(
        f"  median {median:.1f} ms, max {worst:.1f} ms; the hook's own cost {median - bare:.1f} ms"
    )
    print(f"  of which in the charm's own code (init + handlers): mean {in_charm:.1f} ms")
    median, worst, bare, in_charm = update_status_ms(
        args.runs * 2, certificates=True, database=True
    )
    print("the same, also serving one database client (data_interfaces v0, answered before):")
    print(
        f"  median {median:.1f} ms, max {worst:.1f} ms; the hook's own cost {median - bare:.1f} ms"
    )
    print(f"  of which in the charm's own code (init + handlers): mean {in_charm:.1f} ms")
    costs = import_costs(
        args.runs,
        {
            "import the tls-certificates library": TLS_LIBRARY,
            "import dpcharmlibs.interfaces": DATA_INTERFACES_LIBRARY,
        },
    )
    print(
        "  importing the tls-certificates library, on top of the charm: "
        f"{costs['import the tls-certificates library'] - costs['import charm']:.1f} ms"
    )
    print(
        "  importing dpcharmlibs.interfaces (and pydantic), on top of the charm: "
        f"{costs['import dpcharmlibs.interfaces'] - costs['import charm']:.1f} ms"
    )


if __name__ == "__main__":
    main()
