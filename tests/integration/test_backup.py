"""Backups on a real Juju + Kubernetes: write events, back up to S3, restore into a new app.

Needs an S3 endpoint reachable from the pods, given by the environment (skipped without):
`KURRENTDB_TEST_S3_ENDPOINT`, `KURRENTDB_TEST_S3_ACCESS_KEY`, `KURRENTDB_TEST_S3_SECRET_KEY`,
`KURRENTDB_TEST_S3_BUCKET` (existing), optional `KURRENTDB_TEST_S3_REGION`. On MicroK8s,
`microk8s enable minio` gives one (its endpoint is the `minio` service of the
`minio-operator` namespace).

Run after `charmcraft pack`: `pytest tests/integration/test_backup.py`.
"""

from __future__ import annotations

import json
import os
import uuid

import jubilant
import pytest
from continuous_writes import (
    PodAddresses,
    cluster_client,
    juju_unit_ips,
    kubectl_command,
    kubectl_pod_ips,
)
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

APP = "kurrentdb"
RESTORED = "kurrentdb-restored"
S3 = "s3-integrator"
CA_FILE = "/etc/kurrentdb/certs/ca/ca.crt"
EVENTS = 200

S3_ENV = {
    "endpoint": "KURRENTDB_TEST_S3_ENDPOINT",
    "access-key": "KURRENTDB_TEST_S3_ACCESS_KEY",
    "secret-key": "KURRENTDB_TEST_S3_SECRET_KEY",
    "bucket": "KURRENTDB_TEST_S3_BUCKET",
}


@pytest.fixture(scope="module")
def s3() -> dict[str, str]:
    missing = [var for var in S3_ENV.values() if not os.environ.get(var)]
    if missing:
        pytest.skip(f"no S3 endpoint for backups: set {', '.join(missing)}")
    settings = {key: os.environ[var] for key, var in S3_ENV.items()}
    settings["region"] = os.environ.get("KURRENTDB_TEST_S3_REGION", "us-east-1")
    return settings


def namespace(juju: jubilant.Juju) -> str:
    assert juju.model is not None
    return juju.model.split(":")[-1]


def addresses_of(juju: jubilant.Juju, app: str) -> PodAddresses:
    kubectl = kubectl_command()
    model = namespace(juju)
    if kubectl:
        return PodAddresses(kubectl_pod_ips(kubectl, model, app))
    return PodAddresses(juju_unit_ips(juju, app, model))


def client_for(juju: jubilant.Juju, app: str) -> KurrentDBClient:
    unit = f"{app}/0"
    password = juju.run(unit, "get-password", {"username": "admin"}).results["password"]
    ca_pem = juju.ssh(unit, "cat", CA_FILE, container="kurrentdb").replace("\r\n", "\n")
    return cluster_client(addresses_of(juju, app), password, ca_pem)


def follower_unit(juju: jubilant.Juju, app: str) -> str:
    status = juju.status()
    return next(
        name
        for name, unit in status.apps[app].units.items()
        if unit.workload_status.message == "Follower"
    )


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image, s3) -> jubilant.Juju:
    resources = {"kurrentdb-image": kurrentdb_image}
    juju.deploy(charm_path, APP, resources=resources, num_units=3, trust=True)
    juju.deploy(S3, channel="1/stable", config={
        "endpoint": s3["endpoint"], "bucket": s3["bucket"], "region": s3["region"],
        "path": f"kurrentdb-it/{uuid.uuid4().hex[:8]}", "s3-uri-style": "path",
    })  # fmt: skip
    juju.wait(lambda status: jubilant.all_blocked(status, S3))
    juju.run(
        f"{S3}/0",
        "sync-s3-credentials",
        {"access-key": s3["access-key"], "secret-key": s3["secret-key"]},
    )
    juju.integrate(f"{APP}:s3-parameters", S3)
    juju.wait(lambda status: jubilant.all_active(status, APP, S3), error=jubilant.any_error)
    return juju


@pytest.fixture(scope="module")
def stream(deployed: jubilant.Juju) -> tuple[str, list[bytes]]:
    """EVENTS events written to one stream before the backup."""
    name = f"backup-it-{uuid.uuid4().hex[:8]}"
    payloads = [json.dumps({"n": n}).encode() for n in range(EVENTS)]
    client = client_for(deployed, APP)
    client.append_to_stream(
        name,
        current_version=StreamState.NO_STREAM,
        events=[NewEvent(type="Written", data=p) for p in payloads],
    )
    return name, payloads


@pytest.fixture(scope="module")
def backup_id(deployed: jubilant.Juju, stream) -> str:
    task = deployed.run(follower_unit(deployed, APP), "create-backup")
    assert task.results["downtime-seconds"] in (0, "0")
    return task.results["backup-id"]


def test_the_kurrentdb_leader_refuses_to_be_the_source(deployed: jubilant.Juju):
    status = deployed.status()
    leader = next(
        name
        for name, unit in status.apps[APP].units.items()
        if unit.workload_status.message == "Leader"
    )
    with pytest.raises(jubilant.TaskError) as failed:
        deployed.run(leader, "create-backup")
    assert "force=true" in failed.value.task.message


def test_a_follower_backs_up_and_list_backups_shows_it(deployed: jubilant.Juju, backup_id: str):
    task = deployed.run(f"{APP}/0", "list-backups", {"format": "json"})
    rows = {row["id"]: row for row in json.loads(task.results["backups"])}
    assert rows[backup_id]["state"] == "complete"
    assert rows[backup_id]["application"] == APP


def test_a_second_backup_is_incremental(deployed: jubilant.Juju, backup_id: str):
    task = deployed.run(follower_unit(deployed, APP), "create-backup")
    assert task.results["backup-id"] != backup_id
    assert int(task.results["bytes-uploaded"]) < int(task.results["bytes-total"]) // 2


def test_restore_into_a_new_application_reads_the_same_events(
    deployed: jubilant.Juju, charm_path, kurrentdb_image, backup_id: str, stream
):
    resources = {"kurrentdb-image": kurrentdb_image}
    deployed.deploy(charm_path, RESTORED, resources=resources, num_units=3, trust=True)
    deployed.integrate(f"{RESTORED}:s3-parameters", S3)
    deployed.wait(lambda status: jubilant.all_active(status, RESTORED), error=jubilant.any_error)
    listing = deployed.run(f"{RESTORED}/leader", "list-backups", {"format": "json"})
    assert backup_id in {row["id"] for row in json.loads(listing.results["backups"])}

    deployed.run(f"{RESTORED}/leader", "restore", {"backup-id": backup_id})
    deployed.wait(
        lambda status: (
            jubilant.all_active(status, RESTORED)
            and "restor" not in status.apps[RESTORED].app_status.message
        ),
        error=jubilant.any_error,
        timeout=30 * 60,
    )
    name, payloads = stream
    events = list(client_for(deployed, RESTORED).get_stream(name))
    assert [e.data for e in events] == payloads
