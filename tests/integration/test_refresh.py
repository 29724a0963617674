"""Refresh on a real Juju + Kubernetes: the previous image to the current one, with writes.

Deploys 3 units of the packed charm on the previous KurrentDB image
(`KURRENTDB_TEST_PREVIOUS_IMAGE`, default the 26.0 LTS image below), runs
`pre-refresh-check`, then `juju refresh --path <charm> --resource kurrentdb-image=<current>`
while a writer appends events; `resume-refresh` when the status asks (the default
`pause-after-unit-refresh=first`). Then rolls back to the previous image and checks again.
No acknowledged event may be lost, and every node must end on one version.

Run after `charmcraft pack`: `pytest tests/integration/test_refresh.py -s` on the MicroK8s
host (the writer reaches the pods by their IPs; see continuous_writes.py). The tests share
one model and run in file order.
"""

from __future__ import annotations

import contextlib
import os
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
)

APP = "kurrentdb"
PREVIOUS_IMAGE = os.environ.get(
    "KURRENTDB_TEST_PREVIOUS_IMAGE", "docker.kurrent.io/kurrent-lts/kurrentdb:26.0.2"
)


def versions(juju: jubilant.Juju) -> set[str]:
    """The KurrentDB version each unit's image holds, as its binary prints it."""
    found = set()
    for unit in juju.status().apps[APP].units:
        out = juju.ssh(unit, "/opt/kurrentdb/KurrentDB", "--version", container="kurrentdb")
        found.add(out.split("version", 1)[1].split()[0] if "version" in out else out.strip())
    return found


def serving(size: int, version: str | None = None) -> Callable[[jubilant.Status], bool]:
    def ready(status: jubilant.Status) -> bool:
        units = status.apps[APP].units
        roles = sorted(unit.workload_status.message for unit in units.values())
        return (
            len(units) == size
            and roles == ["Follower"] * (size - 1) + ["Leader"]
            and jubilant.all_agents_idle(status, APP)
            and (version is None or status.apps[APP].version == version)
        )

    return ready


def image_version(image: str) -> str:
    return image.rsplit(":", 1)[-1]


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path) -> jubilant.Juju:
    juju.deploy(
        charm_path,
        APP,
        resources={"kurrentdb-image": PREVIOUS_IMAGE},
        num_units=3,
        trust=True,
    )
    juju.wait(serving(3), timeout=20 * 60)
    return juju


@pytest.fixture(scope="module")
def addresses(deployed: jubilant.Juju) -> PodAddresses:
    return app_addresses(deployed, APP)


@pytest.fixture(scope="module")
def credentials(deployed: jubilant.Juju) -> tuple[str, str]:
    return admin_credentials(deployed, APP)


@pytest.fixture
def writes(
    addresses: PodAddresses, credentials: tuple[str, str]
) -> Callable[[], contextlib.AbstractContextManager[ContinuousWrites]]:
    @contextlib.contextmanager
    def during() -> Iterator[ContinuousWrites]:
        with continuous_writes(addresses, *credentials) as w:
            yield w

    return during


def leader_unit(juju: jubilant.Juju) -> str:
    status = juju.status()
    return next(name for name, unit in status.apps[APP].units.items() if unit.leader)


def refresh_through(juju: jubilant.Juju, start: Callable[[], None], version: str) -> list[str]:
    """Run the refresh ``start`` begins, resuming when asked; the app statuses seen."""
    start()
    seen: list[str] = []
    deadline = time.monotonic() + 40 * 60
    while time.monotonic() < deadline:
        status = juju.status()
        message = status.apps[APP].app_status.message
        if not seen or seen[-1] != message:
            seen.append(message)
        if "resume-refresh" in message and status.apps[APP].app_status.current == "blocked":
            juju.run(leader_unit(juju), "resume-refresh")
        if serving(3, version)(status):
            return seen
        time.sleep(10)
    raise AssertionError(f"the refresh did not finish; statuses seen: {seen}")


def test_pre_refresh_check_passes_and_prints_the_rollback(deployed: jubilant.Juju):
    task = deployed.run(leader_unit(deployed), "pre-refresh-check")
    assert task.results["first-unit"] == f"{APP}/2"
    assert task.results["rollback"].startswith(f"juju refresh {APP} --revision")


def test_refresh_to_the_current_image_loses_no_events(
    deployed: jubilant.Juju, charm_path, kurrentdb_image, writes
):
    version = image_version(kurrentdb_image)
    with writes() as w:
        seen = refresh_through(
            deployed,
            lambda: deployed.refresh(
                APP, path=charm_path, resources={"kurrentdb-image": kurrentdb_image}
            ),
            version,
        )
        w.wait_for_acks(20)
    print("\n".join(seen))
    assert any("refreshing" in message for message in seen), seen
    assert versions(deployed) == {version}


def test_rollback_to_the_previous_image_loses_no_events(
    deployed: jubilant.Juju, charm_path, writes
):
    with writes() as w:
        refresh_through(
            deployed,
            lambda: deployed.refresh(
                APP, path=charm_path, resources={"kurrentdb-image": PREVIOUS_IMAGE}
            ),
            image_version(PREVIOUS_IMAGE),
        )
        w.wait_for_acks(20)
    assert versions(deployed) == {image_version(PREVIOUS_IMAGE)}
