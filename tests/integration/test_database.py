"""The `database` relation (interface kurrentdb_client) with a real client charm, on Juju + K8s.

Deploys 3 units of the packed charm and the test client charm in requirer-charm/ (packed by
this module, with the work tree's lib/charms/kurrentdb/v0/kurrentdb_client.py copied in),
integrates them, and checks the provider contract (/tmp/work/database-contract.md, and
docs/explanation/security.md) from the client's side:

- the client gets endpoints, a user and the CA, and can append to and read a stream with
  kurrentdbclient, trusting only the CA it was given;
- its user is not an admin (KurrentDB's HTTP `GET /users` answers 401 to it);
- it is not isolated from other clients: a second client app reads its stream (KurrentDB's
  default $userStreamAcl is $all: if a KurrentDB release changes that, this test fails and
  the docs that say so must change with it);
- `rotate-client-password` gives the user a new password that the client sees; the old one
  stops working;
- a refused `extra-user-roles` (`$root`) blocks the client with relation status 5001;
- removing the relation deletes the user.

The tests run in file order on one model and build on each other. The test host reaches
the pods as continuous_writes.py explains (pod IPs, TLS still checked against the pod
FQDNs). Run after `charmcraft pack`: `pytest tests/integration/test_database.py -s` on the
MicroK8s host; set REQUIRER_CHARM_PATH to use an already packed client charm.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import jubilant
import pytest
from continuous_writes import (
    PORT,
    PodIPClient,
    admin_credentials,
    app_addresses,
    pod_fqdn,
    retry,
)
from cryptography import x509
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

ROOT = Path(__file__).resolve().parents[2]
REQUIRER_DIR = Path(__file__).resolve().parent / "requirer-charm"
CLIENT_LIB = ROOT / "lib" / "charms" / "kurrentdb" / "v0" / "kurrentdb_client.py"
# The project's destructive-mode pack (scripts/pack_charm.py), when its charmcraft is installed.
CHARMCRAFT_PYTHON = ROOT / ".tools" / "charmcraft" / "bin" / "python"
PACK_SCRIPT = ROOT / "scripts" / "pack_charm.py"

APP = "kurrentdb"
CLIENT = "orders-app"  # the client under test
OTHER = "other-app"  # another client: shows what "not isolated" means
GREEDY = "root-app"  # asks for a role the provider refuses
STREAM = "orders-1"
ORDER_ID = uuid.uuid4()  # the event the client appends and the others look for
TRUSTED_ROOTS = "/etc/kurrentdb/certs/trusted-roots.pem"
# Short timeouts, added to the provider's connection string: fail fast, then retry.
CLIENT_OPTIONS = "MaxDiscoverAttempts=3&DiscoveryInterval=500&GossipTimeout=3"

T = TypeVar("T")


# --- the client charm -----------------------------------------------------------------------


def pack_requirer_charm(workdir: Path) -> Path | None:
    """Pack requirer-charm/ with the work tree's client library; None without charmcraft.

    The library is copied into a scratch copy of the charm (never into requirer-charm/
    itself), so the charm always carries the library as it is now.
    """
    project = workdir / "requirer-charm"
    shutil.copytree(
        REQUIRER_DIR,
        project,
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.charm", ".venv", "lib", "parts", "stage", "prime"
        ),
    )
    lib_dir = project / "lib" / "charms" / "kurrentdb" / "v0"
    lib_dir.mkdir(parents=True)
    shutil.copy2(CLIENT_LIB, lib_dir / CLIENT_LIB.name)
    output = workdir / "out"
    output.mkdir()
    if CHARMCRAFT_PYTHON.is_file():
        command = [
            str(CHARMCRAFT_PYTHON),
            str(PACK_SCRIPT),
            f"--project-dir={project}",
            str(output),
        ]
    elif charmcraft := shutil.which("charmcraft"):
        command = [charmcraft, "pack", f"--project-dir={project}"]
    else:
        return None
    subprocess.run(command, cwd=project, check=True, stdin=subprocess.DEVNULL)
    charms = sorted(output.glob("*.charm")) or sorted(project.glob("*.charm"))
    if len(charms) != 1:
        raise RuntimeError(f"expected one packed client charm, found {charms}")
    return charms[0]


@pytest.fixture(scope="session")
def requirer_charm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed client charm: $REQUIRER_CHARM_PATH, else packed now."""
    if env := os.environ.get("REQUIRER_CHARM_PATH"):
        path = Path(env).resolve()
        if not path.is_file():
            pytest.fail(f"REQUIRER_CHARM_PATH={env} is not a file")
        return path
    charm = pack_requirer_charm(tmp_path_factory.mktemp("requirer-charm"))
    if charm is None:
        pytest.skip("no charmcraft to pack the client charm (or set REQUIRER_CHARM_PATH)")
    return charm


# --- helpers --------------------------------------------------------------------------------


def eventually(check: Callable[[], T], timeout: float = 600, interval: float = 10) -> T:
    """Wait until `check()` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(jubilant.CLIError, jubilant.TaskError, ValueError, KeyError):
            if result := check():
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{check.__name__} did not hold within {timeout} s")
        time.sleep(interval)


def unit_message(status: jubilant.Status, app: str) -> str:
    return status.apps[app].units[f"{app}/0"].workload_status.message


def connected(app: str, nodes: int = 3) -> Callable[[jubilant.Status], bool]:
    def check(status: jubilant.Status) -> bool:
        return (
            jubilant.all_active(status, APP, app)
            and unit_message(status, app) == f"connected to {nodes} endpoints"
        )

    return check


def get_connection(juju: jubilant.Juju, app: str) -> dict[str, str]:
    """What the client charm got: uri, username, password, ca, endpoints."""
    return dict(juju.run(f"{app}/0", "get-connection").results)


@contextlib.contextmanager
def user_client(juju: jubilant.Juju, connection: dict[str, str]) -> Iterator[KurrentDBClient]:
    """kurrentdbclient on the provider's connection string, trusting only the relation's CA.

    The string names the pods by FQDN; PodIPClient sends each channel to the pod's IP and
    still checks the certificate against that FQDN (continuous_writes.py).
    """
    uri = f"{connection['uri']}&{CLIENT_OPTIONS}"
    client = PodIPClient(
        uri, addresses=app_addresses(juju, APP), root_certificates=connection["ca"]
    )
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def read_ids(juju: jubilant.Juju, connection: dict[str, str]) -> list[uuid.UUID]:
    """The ids of the events in STREAM, read as the connection's user."""

    def read() -> list[uuid.UUID]:
        with user_client(juju, connection) as client:
            return [event.id for event in client.get_stream(STREAM, timeout=30)]

    return retry(read, interval=5)


def http_status(juju: jubilant.Juju, path: str, username: str, password: str) -> int:
    """The status of `GET https://localhost:2113<path>` on kurrentdb/0 with basic auth."""
    argv = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        f"{username}:{password}",
        "--cacert",
        TRUSTED_ROOTS,
        f"https://localhost:{PORT}{path}",
    ]
    # `juju ssh --container` runs the command through `sh -c`: quote every argument.
    out = juju.ssh(f"{APP}/0", *map(shlex.quote, argv), container="kurrentdb")
    return int(out.strip())


def whoami_status(juju: jubilant.Juju, username: str, password: str) -> int:
    """200 when the credentials are valid (any user may read `/users/$current`), else 401."""
    return http_status(juju, "/users/$current", username, password)


def provider_statuses(juju: jubilant.Juju, app: str) -> list[dict]:
    """The dpcharmlibs `status` list that kurrentdb wrote on `app`'s database relation."""
    for relation in juju.show_unit(f"{app}/0").relation_info:
        if relation.endpoint == "database":
            return json.loads(relation.app_data.get("status") or "[]")
    return []


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image, requirer_charm) -> jubilant.Juju:
    juju.deploy(
        charm_path, APP, resources={"kurrentdb-image": kurrentdb_image}, num_units=3, trust=True
    )
    juju.deploy(requirer_charm, CLIENT)
    juju.integrate(f"{CLIENT}:database", f"{APP}:database")
    juju.wait(connected(CLIENT), error=jubilant.any_error, timeout=20 * 60)
    return juju


def test_client_gets_a_working_connection(deployed: jubilant.Juju):
    juju = deployed
    connection = get_connection(juju, CLIENT)
    username, password = connection["username"], connection["password"]
    model = juju.model.split(":")[-1]
    hosts = [f"{pod_fqdn(APP, n, model)}:{PORT}" for n in range(3)]
    assert connection["endpoints"] == ",".join(hosts)
    assert username.startswith("relation-")
    assert connection["uri"] == (
        f"kurrentdb://{username}:{password}@{','.join(hosts)}?tls=true&tlsVerifyCert=true"
    )
    # The CA on the relation is the one the nodes' certificates chain to (the charm's own).
    _, internal_pem = admin_credentials(juju, APP)
    given = x509.load_pem_x509_certificates(connection["ca"].encode())
    assert {c.subject for c in given} == {
        x509.load_pem_x509_certificate(internal_pem.encode()).subject
    }

    def append() -> None:
        with user_client(juju, connection) as client:
            event = NewEvent(type="OrderPlaced", data=b'{"order": 1}', id=ORDER_ID)
            client.append_to_stream(
                STREAM, events=event, current_version=StreamState.ANY, timeout=30
            )

    retry(append, interval=5)  # idempotent: a retry of an append that landed adds nothing
    assert read_ids(juju, connection) == [ORDER_ID]


def test_client_user_is_not_an_admin(deployed: jubilant.Juju):
    juju = deployed
    connection = get_connection(juju, CLIENT)
    admin_password, _ = admin_credentials(juju, APP)
    assert http_status(juju, "/users", "admin", admin_password) == 200  # the probe works
    assert whoami_status(juju, connection["username"], connection["password"]) == 200
    # Listing users needs $admins; KurrentDB's HTTP authorization answers 401 when denied.
    assert http_status(juju, "/users", connection["username"], connection["password"]) in {
        401,
        403,
    }


def test_other_clients_can_read_and_write_its_streams(deployed: jubilant.Juju, requirer_charm):
    """Documented, not wished for: `resource` is a label and the default ACL is $all."""
    juju = deployed
    juju.deploy(requirer_charm, OTHER)
    juju.integrate(f"{OTHER}:database", f"{APP}:database")
    juju.wait(connected(OTHER), error=jubilant.any_error, timeout=10 * 60)
    mine, theirs = get_connection(juju, CLIENT), get_connection(juju, OTHER)
    assert theirs["username"] != mine["username"]

    assert ORDER_ID in read_ids(juju, theirs), "the other app could not read orders-1"
    intruder = uuid.uuid4()

    def append() -> None:
        with user_client(juju, theirs) as client:
            event = NewEvent(type="NotMyOrder", data=b"{}", id=intruder)
            client.append_to_stream(
                STREAM, events=event, current_version=StreamState.ANY, timeout=30
            )

    retry(append, interval=5)
    assert read_ids(juju, mine) == [ORDER_ID, intruder]


def test_rotate_client_password(deployed: jubilant.Juju):
    juju = deployed
    before = get_connection(juju, CLIENT)
    login, old = before["username"], before["password"]
    juju.run(f"{APP}/leader", "rotate-client-password", {"username": login})

    def new_password() -> str | None:
        password = get_connection(juju, CLIENT)["password"]
        return password if password != old else None

    new = eventually(new_password, timeout=5 * 60)
    after = get_connection(juju, CLIENT)
    assert after["username"] == login
    assert after["uri"].startswith(f"kurrentdb://{login}:{new}@")
    assert whoami_status(juju, login, old) == 401
    assert whoami_status(juju, login, new) == 200
    assert ORDER_ID in read_ids(juju, after)
    juju.wait(connected(CLIENT), timeout=5 * 60)


def test_refused_role_blocks_the_client(deployed: jubilant.Juju, requirer_charm):
    juju = deployed
    juju.deploy(requirer_charm, GREEDY, config={"roles": "$root"})
    juju.integrate(f"{GREEDY}:database", f"{APP}:database")

    def blocked_on_root(status: jubilant.Status) -> bool:
        message = unit_message(status, GREEDY)
        return jubilant.all_blocked(status, GREEDY) and "5001" in message and "$root" in message

    juju.wait(blocked_on_root, timeout=10 * 60)
    statuses = provider_statuses(juju, GREEDY)
    assert any(s["code"] == 5001 and "$root" in s["message"] for s in statuses), statuses
    with pytest.raises(jubilant.TaskError):
        get_connection(juju, GREEDY)  # no user, no credentials
    assert jubilant.all_active(juju.status(), APP)  # the provider itself is fine


def test_removing_the_relation_deletes_the_user(deployed: jubilant.Juju):
    juju = deployed
    connection = get_connection(juju, CLIENT)
    login, password = connection["username"], connection["password"]
    admin_password, _ = admin_credentials(juju, APP)
    assert http_status(juju, f"/users/{login}", "admin", admin_password) == 200

    juju.remove_relation(f"{CLIENT}:database", f"{APP}:database")
    juju.wait(
        lambda s: not s.apps[CLIENT].relations.get("database") and jubilant.all_active(s, APP),
        timeout=10 * 60,
    )

    def gone() -> bool:
        return http_status(juju, f"/users/{login}", "admin", admin_password) == 404

    eventually(gone, timeout=5 * 60)
    assert whoami_status(juju, login, password) == 401
    # The other client's user is untouched.
    other = get_connection(juju, OTHER)
    assert whoami_status(juju, other["username"], other["password"]) == 200
