"""What Scenario cannot show, on a real Juju + Kubernetes (issue #7).

- the packed charm deploys without `--trust`, with the storage size asked for;
- a pod deleted while the config is invalid comes back on the last good configuration;
- the Pebble check is added disabled and started with the service;
- the node's names use the namespace and cluster domain read from the pod.

Run after `charmcraft pack`: `pytest tests/integration/test_real_platform.py`; skipped when no
Juju controller is reachable. Deleting a pod needs `kubectl` (or `microk8s kubectl`).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import jubilant
import pytest
import yaml

APP = "kurrentdb"
UNIT = f"{APP}/0"


def in_workload(juju: jubilant.Juju, command: str, unit: str = UNIT) -> str:
    return juju.ssh(unit, "bash", "-c", shlex.quote(command), container="kurrentdb")


def kubectl() -> list[str]:
    if path := shutil.which("kubectl"):
        return [path]
    if path := shutil.which("microk8s"):
        return [path, "kubectl"]
    pytest.skip("deleting a pod needs kubectl or microk8s")


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image) -> jubilant.Juju:
    # No --trust: nothing the charm does yet needs more than Juju's default role.
    juju.deploy(
        charm_path, APP, resources={"kurrentdb-image": kurrentdb_image}, storage={"data": "2G"}
    )
    juju.wait(lambda status: jubilant.all_active(status, APP), error=jubilant.any_error)
    return juju


def test_runs_without_trust_on_the_requested_volume(deployed: jubilant.Juju):
    status = deployed.status()
    assert status.apps[APP].units[UNIT].workload_status.message == "Leader"
    storage = json.loads(deployed.cli("storage", "--format", "json"))
    sizes = [v.get("size") for v in storage.get("filesystems", {}).values()]
    assert any(size and size >= 2000 for size in sizes), sizes


def test_the_check_runs_once_the_service_does(deployed: jubilant.Juju):
    checks = in_workload(deployed, "/charm/bin/pebble checks")
    line = next(row for row in checks.splitlines() if row.startswith("kurrentdb-live"))
    assert " up " in f" {line} ", line
    plan = yaml.safe_load(in_workload(deployed, "/charm/bin/pebble plan"))
    assert plan["checks"]["kurrentdb-live"]["startup"] == "disabled"


def test_names_use_the_pods_namespace_and_domain(deployed: jubilant.Juju):
    search = in_workload(deployed, "grep ^search /etc/resolv.conf").split()
    namespace = deployed.model
    domain = next(n.removeprefix(f"{namespace}.svc.") for n in search if n.startswith(namespace))
    rendered = yaml.safe_load(in_workload(deployed, "cat /etc/kurrentdb/kurrentdb.conf"))
    assert rendered["NodeHostAdvertiseAs"] == f"{APP}-0.{APP}-endpoints.{namespace}.svc.{domain}"


def test_a_deleted_pod_with_invalid_config_starts_on_the_last_good_one(deployed: jubilant.Juju):
    deployed.config(APP, {"run-projections": "system"})
    deployed.wait(lambda status: jubilant.all_active(status, APP))
    deployed.config(APP, {"profile": "prod"})  # invalid
    deployed.wait(lambda status: jubilant.all_blocked(status, APP))

    subprocess.run(
        [*kubectl(), "-n", deployed.model, "delete", "pod", f"{APP}-0", "--wait=true"],
        check=True,
        timeout=300,
    )
    # The new pod has no stored state; the unit stays blocked on the config, but runs.
    deployed.wait(
        lambda status: (
            jubilant.all_blocked(status, APP)
            and "profile='prod'" in status.apps[APP].units[UNIT].workload_status.message
        ),
        delay=5,
    )

    def rendered_again(_: jubilant.Status) -> bool:
        try:
            return "RunProjections" in in_workload(deployed, "cat /etc/kurrentdb/kurrentdb.conf")
        except jubilant.CLIError:  # the new container is not up yet
            return False

    deployed.wait(rendered_again, delay=5)
    rendered = yaml.safe_load(in_workload(deployed, "cat /etc/kurrentdb/kurrentdb.conf"))
    assert rendered["RunProjections"] == "System"
    code = in_workload(
        deployed,
        "curl -s -o /dev/null -w '%{http_code}' --cacert /etc/kurrentdb/certs/ca/ca.crt"
        " https://localhost:2113/health/live",
    )
    assert code.strip() == "204"
    deployed.config(APP, reset="profile")
    deployed.wait(lambda status: jubilant.all_active(status, APP))
