"""Certificates from self-signed-certificates on a real Juju + Kubernetes, and back.

Deploys 3 units of the packed charm and self-signed-certificates, integrates them while a
writer appends events, waits until every node presents a certificate from the provider's CA
and trusts only that root, then removes the relation and waits until every node is back on
the charm's internal CA. Throughout: no acknowledged event lost, and no KurrentDB process
restarted (each node's gossip `instanceId` is the same before and after: KurrentDB draws a
new one at every start).

The writer trusts both CAs (the charm's and the provider's) so that it can follow the
switch. Run after `charmcraft pack`: `pytest tests/integration/test_tls.py -s` on the
MicroK8s host (see continuous_writes.py for how it reaches the pods).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import jubilant
import pytest
from continuous_writes import admin_credentials, app_addresses, continuous_writes
from cryptography import x509

APP = "kurrentdb"
PROVIDER = "self-signed-certificates"
CERTS = "/etc/kurrentdb/certs"


def node_issuer(juju: jubilant.Juju, unit: str) -> x509.Name:
    pem = juju.ssh(unit, "cat", f"{CERTS}/node.crt", container="kurrentdb")
    return x509.load_pem_x509_certificates(pem.replace("\r\n", "\n").encode())[0].issuer


def trusted_roots(juju: jubilant.Juju, unit: str) -> set[x509.Name]:
    listing = juju.ssh(unit, "ls", f"{CERTS}/ca", container="kurrentdb").split()
    roots = set()
    for name in listing:
        pem = juju.ssh(unit, "cat", f"{CERTS}/ca/{name}", container="kurrentdb")
        roots.add(x509.load_pem_x509_certificate(pem.replace("\r\n", "\n").encode()).subject)
    return roots


def instance_ids(juju: jubilant.Juju, ca_file: str) -> dict[str, str]:
    """Each node's instanceId, from one node's /gossip (anonymous, over TLS)."""
    out = juju.ssh(
        f"{APP}/0",
        "curl",
        "-s",
        "--cacert",
        ca_file,
        "https://localhost:2113/gossip",
        container="kurrentdb",
    )
    members = json.loads(out)["members"]
    return {m["httpEndPointIp"]: m["instanceId"] for m in members if m.get("isAlive")}


def settled_on(issuer: x509.Name) -> Callable[[jubilant.Juju], bool]:
    def check(juju: jubilant.Juju) -> bool:
        status = juju.status()
        if not jubilant.all_active(status, APP) or not jubilant.all_agents_idle(status, APP):
            return False
        return all(
            node_issuer(juju, unit) == issuer and trusted_roots(juju, unit) == {issuer}
            for unit in status.apps[APP].units
        )

    return check


def wait_until(juju: jubilant.Juju, check: Callable[[jubilant.Juju], bool], timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(juju):
            return
        time.sleep(15)
    raise AssertionError(f"not settled within {timeout} s: {juju.status().apps[APP]}")


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image) -> jubilant.Juju:
    juju.deploy(
        charm_path, APP, resources={"kurrentdb-image": kurrentdb_image}, num_units=3, trust=True
    )
    juju.deploy(PROVIDER, channel="1/stable")
    juju.wait(lambda s: jubilant.all_active(s, APP, PROVIDER), timeout=20 * 60)
    return juju


def test_switch_to_the_provider_and_back_without_a_restart(deployed: jubilant.Juju):
    juju = deployed
    password, internal_pem = admin_credentials(juju, APP)
    provider_pem = juju.run(f"{PROVIDER}/0", "get-ca-certificate").results["ca-certificate"]
    internal = x509.load_pem_x509_certificate(internal_pem.encode()).subject
    provider = x509.load_pem_x509_certificate(provider_pem.encode()).subject
    both = internal_pem.strip() + "\n" + provider_pem.strip() + "\n"
    before = instance_ids(juju, f"{CERTS}/trusted-roots.pem")

    with continuous_writes(app_addresses(juju, APP), password, both):
        juju.integrate(f"{APP}:certificates", PROVIDER)
        wait_until(juju, settled_on(provider), timeout=20 * 60)
        assert instance_ids(juju, f"{CERTS}/trusted-roots.pem") == before, "a node restarted"

        juju.remove_relation(f"{APP}:certificates", PROVIDER)
        wait_until(juju, settled_on(internal), timeout=20 * 60)
        assert instance_ids(juju, f"{CERTS}/trusted-roots.pem") == before, "a node restarted"
