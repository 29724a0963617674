"""The fuzz suite's fixtures: one running, related leader per module, copied for each example.

Module-scoped, not function-scoped: hypothesis runs many examples in one test function, and
each example builds its own `testing.Context` and volumes (`fuzz_harness.example`). Nothing
patched here outlives the module, so the unit tests run after it see the real modules.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest
from ops import testing
from scenario_fixtures import (
    ADMIN_PASSWORD,
    OPS_PASSWORD,
    make_volumes,
    no_kubernetes,
    pod_files,
    quiet_hooks,
    unit_state,
)

import tls
from charm import KurrentDBCharm
from fuzz.fuzz_harness import SLOW, STATS, World
from workload import paths


@pytest.fixture(scope="session")
def fuzz_ca() -> tls.KeyPair:
    return tls.generate_ca()


@pytest.fixture(scope="module")
def world(fuzz_ca: tls.KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A leader that runs KurrentDB (the double), with Prometheus, Grafana and Loki related."""
    from doubles.kurrentdb import KurrentDBDouble, NodeState

    import pod

    with pytest.MonkeyPatch.context() as patch:
        quiet_hooks(patch)
        no_kubernetes(patch)
        pod_files(tmp_path_factory.mktemp("pod"), patch)
        # Peer data names hosts; resolving generated names would wait on DNS. Only the
        # double (127.0.0.1) exists here, and every other name fails at once.
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if host in ("127.0.0.1", "localhost", "::1"):
                return real_getaddrinfo(host, *args, **kwargs)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (fuzz)")

        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        with KurrentDBDouble(
            admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD, ca=fuzz_ca
        ) as double:
            patch.setattr(KurrentDBCharm, "api_url", double.url)

            def reset_double() -> None:
                port = double.node.http_port
                double.node = NodeState(http_port=port)
                double.users.clear()
                double.admin_password, double.ops_password = ADMIN_PASSWORD, OPS_PASSWORD
                double.initialise()
                double.members, double.fail_with, double.fail_body = None, None, "injected failure"
                double.requests.clear()

            volumes = make_volumes(tmp_path_factory.mktemp("world"))
            state = unit_state(volumes, fuzz_ca)
            relations = {
                *state.relations,
                testing.Relation("metrics-endpoint", remote_app_name="prometheus"),
                testing.Relation("grafana-dashboard", remote_app_name="grafana"),
                testing.Relation(
                    "logging",
                    remote_app_name="loki",
                    remote_units_data={
                        0: {"endpoint": '{"url": "http://loki-0:3100/loki/api/v1/push"}'}
                    },
                ),
            }
            state = dataclasses.replace(state, relations=relations)
            with testing.Context(KurrentDBCharm) as ctx:
                state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
                state = ctx.run(ctx.on.update_status(), state)
            assert state.unit_status == testing.ActiveStatus("Leader"), state.unit_status
            yield World(base=state, volumes=volumes, double=double, reset_double=reset_double)
        pod.detect.cache_clear()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The issue's table: cases per surface, hook errors, leaks, misleading statuses."""
    if not STATS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz: untrusted input per surface")
    write(f"{'surface':<34} {'cases':>6} {'hooks':>6} {'hook errors':>12} {'leaks':>6} "
          f"{'misleading':>11} {'seconds':>8}")  # fmt: skip
    total = [0, 0, 0, 0, 0]
    for surface, t in sorted(STATS.items()):
        row = [t.cases, t.hooks, t.hook_errors, t.leaks, t.misleading]
        total = [a + b for a, b in zip(total, row, strict=True)]
        write(f"{surface:<34} {row[0]:>6} {row[1]:>6} {row[2]:>12} {row[3]:>6} {row[4]:>11} "
              f"{t.seconds:>8.1f}")  # fmt: skip
    write(f"{'total':<34} {total[0]:>6} {total[1]:>6} {total[2]:>12} {total[3]:>6} {total[4]:>11}")
    for seconds, surface, event in sorted(SLOW, reverse=True)[:5]:
        write(f"slow hook: {seconds:.1f}s {surface}: {event}")
