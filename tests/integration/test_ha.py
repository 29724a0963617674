"""High availability on a real Juju + Kubernetes: a 3-node cluster, scaling, lost pods.

Run after `charmcraft pack`: `pytest tests/integration/test_ha.py -s` (skipped when no Juju
controller is reachable). `-s` (or `-rP`) shows the continuous-writes reports: for every
scaling or failure step, how many events were acknowledged, that none was lost, every
write pause with its duration, and the longest gap between two acknowledged writes.

The writer runs on the test host and reaches the pods by their IPs, with TLS checked
against the charm's CA and the pods' FQDNs (see `continuous_writes.py`): run this on the
MicroK8s host itself. With `kubectl` (or `microk8s kubectl`) the tests also check the pod
role labels and delete pods; without it they skip the label check and kill Pebble (PID 1)
in the workload container instead, which restarts the container rather than the pod.

The tests share one model and run in file order: deploy 3, 3 → 5, 5 → 3, lose the
KurrentDB leader's pod, lose every pod, 3 → 1, 1 → 3.
"""

from __future__ import annotations

import collections
import contextlib
import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import jubilant
import pytest
from continuous_writes import (
    ContinuousWrites,
    PodAddresses,
    admin_credentials,
    app_addresses,
    continuous_writes,
    kubectl_command,
)

APP = "kurrentdb"
ROLE_LABEL = "kurrentdb-role"


# --- helpers --------------------------------------------------------------------------------


def namespace(juju: jubilant.Juju) -> str:
    """The model's Kubernetes namespace (the bare model name)."""
    assert juju.model is not None
    return juju.model.split(":")[-1].split("/")[-1]


def unit_messages(status: jubilant.Status) -> dict[str, str]:
    """{unit: workload message} for the active units of the app."""
    app = status.apps.get(APP)
    if app is None:
        return {}
    return {
        unit: info.workload_status.message
        for unit, info in app.units.items()
        if info.workload_status.current == "active"
    }


def kurrentdb_leader(status: jubilant.Status) -> str | None:
    """The unit whose KurrentDB node is the leader, as the unit statuses say."""
    leaders = [unit for unit, message in unit_messages(status).items() if message == "Leader"]
    return leaders[0] if len(leaders) == 1 else None


def cluster_of(size: int) -> Callable[[jubilant.Status], bool]:
    """Ready when `size` units are active, one Leader and the others Followers, all in sync."""

    def ready(status: jubilant.Status) -> bool:
        app = status.apps.get(APP)
        if app is None or len(app.units) != size:
            return False
        messages = unit_messages(status)
        leader = kurrentdb_leader(status)
        return (
            len(messages) == size
            and sorted(messages.values()) == ["Follower"] * (size - 1) + ["Leader"]
            and app.app_status.current == "active"
            and app.app_status.message.startswith(f"{size} nodes, leader {leader}")
            and "not in sync" not in app.app_status.message
            and jubilant.all_agents_idle(status, APP)
        )

    return ready


def wait_for_cluster(juju: jubilant.Juju, size: int) -> jubilant.Status:
    return juju.wait(cluster_of(size), error=jubilant.any_error, delay=2.0)


def current_units(juju: jubilant.Juju) -> list[str]:
    """The app's units now (Juju may or may not reuse unit numbers after a scale-down)."""
    return sorted(juju.status().apps[APP].units)


def juju_leader_unit(juju: jubilant.Juju) -> str:
    units = juju.status().apps[APP].units
    return next(unit for unit, info in units.items() if info.leader)


def cluster_status(juju: jubilant.Juju) -> tuple[dict[str, dict[str, str]], str]:
    """The `get-cluster-status` action's rows and table, run on the Juju leader."""
    task = juju.run(juju_leader_unit(juju), "get-cluster-status")
    return task.results["nodes"], task.results["table"]


def assert_cluster_status(juju: jubilant.Juju, units: list[str], timeout: float = 180) -> None:
    """get-cluster-status shows exactly `units` alive, one Leader, the others Followers.

    Gossip keeps departed nodes for a while as dead members: those rows are ignored.
    Retried for a while, as gossip takes a few seconds to settle after a change.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows, table = cluster_status(juju)
            alive = [row for row in rows.values() if row["alive"] == "true"]
            assert sorted(row["unit"] for row in alive) == sorted(units), table
            roles = sorted(row["role"] for row in alive)
            assert roles == ["Follower"] * (len(units) - 1) + ["Leader"], table
            for key, row in rows.items():
                if row["alive"] == "true":
                    assert key == row["unit"].replace("/", "-"), table
                    assert int(row["writer-checkpoint"]) >= 0, table
                    assert int(row["lag-bytes"]) >= 0, table
            print(table)
            return
        except (AssertionError, jubilant.TaskError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


@contextlib.contextmanager
def statuses_seen(juju: jubilant.Juju) -> Iterator[list[str]]:
    """Record every distinct app and unit status while the body runs, and print them.

    Statuses such as "waiting to restart to join a 5-node cluster" are transient and may
    fall between two polls, so they are printed for the log, not asserted.
    """
    seen: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                app = juju.status().apps[APP]
                lines = [f"app: {app.app_status.current}: {app.app_status.message}"]
                lines += [
                    f"{unit}: {info.workload_status.current}: {info.workload_status.message}"
                    for unit, info in sorted(app.units.items())
                ]
                for line in lines:
                    if line not in seen:
                        seen.append(line)
            stop.wait(2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=60)
        print("statuses seen:\n  " + "\n  ".join(seen))


def pod_of(unit: str) -> str:
    return unit.replace("/", "-")


def kill_pebble(juju: jubilant.Juju, unit: str) -> None:
    """Kill Pebble (PID 1) in the workload container: Kubernetes restarts the container."""
    with contextlib.suppress(jubilant.CLIError):  # the ssh session dies with the container
        juju.ssh(unit, "bash", "-c", shlex.quote("kill 1"), container="kurrentdb")


def take_down(juju: jubilant.Juju, kubectl: list[str] | None, units: list[str]) -> None:
    """Delete the units' pods all at once (or, without kubectl, kill their containers)."""
    if kubectl:
        subprocess.run(
            [*kubectl, "delete", "pod", "-n", namespace(juju), *map(pod_of, units)],
            check=True,
            timeout=600,
        )
        return
    threads = [threading.Thread(target=kill_pebble, args=(juju, unit)) for unit in units]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)


def pod_labels(kubectl: list[str], model: str) -> dict[str, str | None]:
    """{pod: its kurrentdb-role label} for the app's pods (`kubectl get pods -L ...`)."""
    out = subprocess.run(
        [*kubectl, "get", "pods", "-n", model, "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    labels: dict[str, str | None] = {}
    for pod in json.loads(out)["items"]:
        name = pod["metadata"]["name"]
        if name.startswith(f"{APP}-") and name.removeprefix(f"{APP}-").isdigit():
            labels[name] = (pod["metadata"].get("labels") or {}).get(ROLE_LABEL)
    return labels


def reverify(written: list[ContinuousWrites]) -> None:
    """Every stream written by earlier steps still holds all its acknowledged events."""
    for writes in written:
        report = writes.verify()
        print(report.summary())
        assert report.ok, report.summary()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl() -> list[str] | None:
    return kubectl_command()


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image) -> jubilant.Juju:
    juju.deploy(
        charm_path,
        APP,
        resources={"kurrentdb-image": kurrentdb_image},
        num_units=3,
        trust=True,
    )
    wait_for_cluster(juju, 3)
    return juju


@pytest.fixture(scope="module")
def addresses(deployed: jubilant.Juju) -> PodAddresses:
    return app_addresses(deployed, APP)


@pytest.fixture(scope="module")
def credentials(deployed: jubilant.Juju) -> tuple[str, str]:
    """The admin password and the charm's CA certificate (PEM)."""
    return admin_credentials(deployed, APP)


@pytest.fixture(scope="module")
def written() -> list[ContinuousWrites]:
    """The writers of the steps so far, to check their streams again later."""
    return []


@pytest.fixture
def writes(
    deployed: jubilant.Juju,
    addresses: PodAddresses,
    credentials: tuple[str, str],
    written: list[ContinuousWrites],
) -> Callable[[], contextlib.AbstractContextManager[ContinuousWrites]]:
    """`with writes() as w:` writes during the body, then asserts that nothing was lost."""

    @contextlib.contextmanager
    def during() -> Iterator[ContinuousWrites]:
        with statuses_seen(deployed), continuous_writes(addresses, *credentials) as w:
            yield w
        written.append(w)

    return during


# --- tests ----------------------------------------------------------------------------------


def test_three_units_form_one_cluster(deployed: jubilant.Juju):
    status = deployed.status()
    messages = unit_messages(status)
    assert sorted(messages.values()) == ["Follower", "Follower", "Leader"]
    leader = kurrentdb_leader(status)
    app = status.apps[APP].app_status
    assert app.current == "active"
    assert app.message == f"3 nodes, leader {leader}"


def test_get_cluster_status_lists_every_node(deployed: jubilant.Juju):
    rows, table = cluster_status(deployed)
    print(table)
    assert set(rows) == {"kurrentdb-0", "kurrentdb-1", "kurrentdb-2"}, table
    assert collections.Counter(row["role"] for row in rows.values()) == {
        "Leader": 1,
        "Follower": 2,
    }
    leader_row = next(row for row in rows.values() if row["role"] == "Leader")
    assert leader_row["unit"] == kurrentdb_leader(deployed.status())
    for key, row in rows.items():
        assert row["unit"].replace("/", "-") == key
        assert row["alive"] == "true"
        assert int(row["writer-checkpoint"]) > 0
        assert int(row["chaser-checkpoint"]) >= 0
        assert int(row["lag-bytes"]) >= 0
    assert table.splitlines()[0].split() == [
        "unit",
        "role",
        "alive",
        "writer-checkpoint",
        "chaser-checkpoint",
        "lag-bytes",
    ]


def test_pods_are_labelled_with_their_role(deployed: jubilant.Juju, kubectl: list[str] | None):
    if kubectl is None:
        pytest.skip("no kubectl (nor microk8s kubectl) to read pod labels with")
    expected = {
        pod_of(unit): role.lower() for unit, role in unit_messages(deployed.status()).items()
    }
    labels: dict[str, str | None] = {}
    for _ in range(30):  # the label follows the role within a hook or two
        labels = pod_labels(kubectl, namespace(deployed))
        if labels == expected:
            break
        time.sleep(2)
    assert labels == expected


def test_scale_up_3_to_5_loses_no_writes(deployed: jubilant.Juju, writes):
    with writes() as w:
        deployed.add_unit(APP, num_units=2)
        wait_for_cluster(deployed, 5)
        w.wait_for_acks(20)
    assert_cluster_status(deployed, current_units(deployed))


def test_scale_down_5_to_3_loses_no_writes(deployed: jubilant.Juju, writes):
    with writes() as w:
        deployed.remove_unit(APP, num_units=2)  # Kubernetes removes the highest units
        wait_for_cluster(deployed, 3)
        w.wait_for_acks(20)
    assert_cluster_status(deployed, current_units(deployed))


def test_kurrentdb_leader_pod_lost_elects_a_new_leader(
    deployed: jubilant.Juju, kubectl: list[str] | None, writes
):
    old_leader = kurrentdb_leader(deployed.status())
    assert old_leader is not None
    with writes() as w:
        take_down(deployed, kubectl, [old_leader])

        def new_leader(status: jubilant.Status) -> bool:
            leader = kurrentdb_leader(status)
            return leader not in (None, old_leader) and cluster_of(3)(status)

        status = deployed.wait(new_leader, error=jubilant.any_error, delay=2.0)
        w.wait_for_acks(20)  # writes go on, to the new leader
    assert unit_messages(status)[old_leader] == "Follower", "the old leader came back to follow"
    assert_cluster_status(deployed, current_units(deployed))


def test_all_pods_lost_cluster_reforms_with_its_data(
    deployed: jubilant.Juju, kubectl: list[str] | None, writes, written
):
    units = sorted(deployed.status().apps[APP].units)
    with writes() as w:
        failures_before = w.failed_attempts
        take_down(deployed, kubectl, units)
        assert w.wait_for_failures(since=failures_before), "writes never failed: pods not down?"
        w.wait_for_acks(20, timeout=15 * 60)  # writes resume once the cluster has re-formed
        wait_for_cluster(deployed, 3)
    assert_cluster_status(deployed, units)
    reverify(written)  # everything the earlier steps wrote survived


def test_scale_down_3_to_1_loses_no_writes(deployed: jubilant.Juju, writes, written):
    with writes() as w:
        deployed.remove_unit(APP, num_units=2)
        wait_for_cluster(deployed, 1)
        w.wait_for_acks(20)
    status = deployed.status()
    (unit,) = status.apps[APP].units
    assert unit_messages(status) == {unit: "Leader"}
    assert status.apps[APP].app_status.message == f"1 nodes, leader {unit}"
    reverify(written)


def test_scale_up_1_to_3_loses_no_writes(deployed: jubilant.Juju, writes, written):
    with writes() as w:
        deployed.add_unit(APP, num_units=2)
        wait_for_cluster(deployed, 3)
        w.wait_for_acks(20)
    assert_cluster_status(deployed, current_units(deployed))
    reverify(written)
