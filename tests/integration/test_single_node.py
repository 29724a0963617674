"""A single KurrentDB node on a real Juju + Kubernetes: deploy, log in, configure, rotate.

Run after `charmcraft pack`: `pytest tests/integration/test_single_node.py` (skipped when no
Juju controller is reachable).
"""

from __future__ import annotations

import contextlib
import json
import shlex

import jubilant
import pytest

APP = "kurrentdb"
UNIT = f"{APP}/0"
CA_FILE = "/etc/kurrentdb/certs/ca/ca.crt"


def in_workload(juju: jubilant.Juju, command: str) -> str:
    """Run a shell command in the KurrentDB container of the unit."""
    return juju.ssh(UNIT, "bash", "-c", shlex.quote(command), container="kurrentdb")


def curl(juju: jubilant.Juju, path: str, user: str = "", password: str = "") -> tuple[int, str]:
    """GET a KurrentDB endpoint from inside the pod, trusting only the charm's CA."""
    auth = f"-u {shlex.quote(f'{user}:{password}')}" if user else ""
    out = in_workload(
        juju,
        f"curl -s -o /tmp/body -w '%{{http_code}}' --cacert {CA_FILE} {auth}"
        f" https://localhost:2113{path}; echo; cat /tmp/body",
    )
    code, _, body = out.partition("\n")
    return int(code), body


def admin_password(juju: jubilant.Juju) -> str:
    task = juju.run(UNIT, "get-password", {"username": "admin"})
    return task.results["password"]


def restarts(juju: jubilant.Juju) -> int:
    """How many times Pebble restarted the KurrentDB service."""
    changes = in_workload(juju, "/charm/bin/pebble changes || true")
    return sum('Restart service "kurrentdb"' in line for line in changes.splitlines())


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image) -> jubilant.Juju:
    juju.deploy(charm_path, APP, resources={"kurrentdb-image": kurrentdb_image}, trust=True)
    juju.wait(lambda status: jubilant.all_active(status, APP), error=jubilant.any_error)
    return juju


def test_single_node_is_active_as_leader(deployed: jubilant.Juju):
    status = deployed.status()
    unit = status.apps[APP].units[UNIT]
    assert unit.workload_status.message == "Leader"
    assert status.apps[APP].version, "workload version comes from /info"


def test_tls_with_the_charms_ca_only(deployed: jubilant.Juju):
    code, body = curl(deployed, "/info")
    assert code == 200 and json.loads(body)["state"] == "leader"
    # Without the CA, curl refuses the node's certificate: TLS is really on.
    out = in_workload(
        deployed, "curl -s -o /dev/null -w '%{http_code}' https://localhost:2113/info || true"
    )
    assert out.strip() == "000"


def test_admin_password_from_the_action_logs_in(deployed: jubilant.Juju):
    password = admin_password(deployed)
    assert curl(deployed, "/users/admin", "admin", password)[0] == 200
    assert curl(deployed, "/users/admin", "admin", "changeit")[0] == 401


def test_runs_as_non_root_and_owns_its_volume(deployed: jubilant.Juju):
    uid = in_workload(deployed, "id -u kurrent").strip()
    assert in_workload(deployed, "stat -c %u /var/lib/kurrentdb").strip() == uid
    # The image has no procps: find the server's process through /proc.
    owner = in_workload(
        deployed,
        # (match the start of the command line: this shell's own contains the path too)
        "for p in /proc/[0-9]*; do"
        ' [ "$(head -c 24 $p/cmdline 2>/dev/null)" = /opt/kurrentdb/KurrentDB ]'
        " && grep '^Uid:' $p/status | cut -f2 && break; done",
    )
    assert owner.split()[0] == uid
    assert in_workload(deployed, "stat -c %a /etc/kurrentdb/certs/node.key").strip() == "600"


def test_log_level_change_does_not_restart(deployed: jubilant.Juju):
    before = restarts(deployed)
    deployed.config(APP, {"log-level": "Debug"})
    deployed.wait(lambda status: jubilant.all_active(status, APP))
    assert 'LogLevel: "Debug"' in in_workload(deployed, "cat /etc/kurrentdb/kurrentdb.conf")
    assert restarts(deployed) == before
    # The node itself says it took the level (a SIGHUP before its file watcher fired would not).
    logs = in_workload(deployed, "/charm/bin/pebble logs kurrentdb -n 500")
    assert "The log level was adjusted to: Debug" in logs


def test_an_option_the_image_lacks_is_refused_before_it_stops_the_node(deployed: jubilant.Juju):
    # KurrentDB exits on an unknown option; 26.0.x has no MaxPartitionStateCacheSize.
    version = deployed.status().apps[APP].version
    if version.startswith("26.0"):
        deployed.config(APP, {"extra-options": "{MaxPartitionStateCacheSize: 1000}"})
        deployed.wait(lambda status: jubilant.all_blocked(status, APP))
        message = deployed.status().apps[APP].units[UNIT].workload_status.message
        assert "not in KurrentDB 26.0" in message
        assert curl(deployed, "/info")[0] == 200, "the node keeps running"
        deployed.config(APP, reset="extra-options")
        deployed.wait(lambda status: jubilant.all_active(status, APP))


def test_bad_config_blocks_and_recovers(deployed: jubilant.Juju):
    deployed.config(APP, {"profile": "prod"})
    deployed.wait(lambda status: jubilant.all_blocked(status, APP))
    message = deployed.status().apps[APP].units[UNIT].workload_status.message
    assert "profile='prod'" in message and "production" in message
    assert curl(deployed, "/info")[0] == 200, "the node keeps running"
    deployed.config(APP, reset="profile")
    deployed.wait(lambda status: jubilant.all_active(status, APP))


def test_system_users_secret_rotates_passwords_without_restart(deployed: jubilant.Juju):
    before = restarts(deployed)
    secret = deployed.add_secret("kurrentdb-users", {"admin": "Rotated-Admin-Pw-1"})
    deployed.grant_secret("kurrentdb-users", APP)
    deployed.config(APP, {"system-users": secret})
    deployed.wait(lambda status: jubilant.all_active(status, APP))
    assert curl(deployed, "/users/admin", "admin", "Rotated-Admin-Pw-1")[0] == 200
    assert admin_password(deployed) == "Rotated-Admin-Pw-1"

    deployed.update_secret("kurrentdb-users", {"admin": "Rotated-Admin-Pw-2", "ops": "Ops-Pw-2"})
    deployed.wait(lambda status: jubilant.all_active(status, APP))
    assert curl(deployed, "/users/admin", "admin", "Rotated-Admin-Pw-2")[0] == 200
    assert curl(deployed, "/users/ops", "ops", "Ops-Pw-2")[0] == 200
    assert restarts(deployed) == before


def test_pod_restart_keeps_data_and_credentials(deployed: jubilant.Juju):
    password = admin_password(deployed)
    # Kill Pebble (PID 1): Kubernetes restarts the container with an empty /etc/kurrentdb.
    with contextlib.suppress(jubilant.CLIError):  # the ssh session dies with the container
        in_workload(deployed, "kill 1")
    deployed.wait(lambda status: jubilant.all_active(status, APP))
    assert curl(deployed, "/users/admin", "admin", password)[0] == 200
