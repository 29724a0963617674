"""Every CA switch played on a 3-node cluster: internal CA to a provider's, a provider CA
rotation, and back to the internal CA when the relation goes.

The cluster model loads each node's own certificate and trusted roots at its start and at
every reload (rule 12), so two nodes that could not authenticate each other would stop
gossiping and breach invariant (h); the harness fails the test at the first breach, at any
moment between hooks. No node may restart: every step is a reload.
"""

from __future__ import annotations

import pytest
from issuing_ca import IssuingCA
from ops import testing

import tls
from sim.certificates_provider import SimCertificatesProvider
from sim.harness import Simulation
from sim.scenarios import run_step


@pytest.fixture(scope="module")
def provider_ca() -> IssuingCA:
    return IssuingCA(name="self-signed-certificates operator")


def formed(sim: Simulation, units: int = 3) -> None:
    sim.model_tls()
    for _ in range(units):
        sim.add_unit()
    sim.settle()
    assert sim.cluster.leader() is not None


def roots(sim: Simulation) -> dict[str, tuple[str | None, frozenset[str] | None]]:
    return {name: (node.tls_presents, node.tls_trusts) for name, node in sim.cluster.nodes.items()}


def assert_no_restart(sim: Simulation, before: dict[str, int]) -> None:
    assert dict(sim.cluster.restarts) == before, "a node restarted"
    assert not sim.charm_restarts, sim.charm_restarts


def test_internal_to_provider_to_rotated_and_back_without_a_restart(make_sim, provider_ca) -> None:
    """Newest unit first: the leader (unit 0) acts last in each round, so grants reach
    units that act before the others caught up; this order is the one that catches a
    grant given before every node trusts its root."""
    sim = make_sim(hook_order="newest")
    formed(sim)
    internal = tls.fingerprint(sim._ca_applied or "")
    assert set(roots(sim).values()) == {(internal, frozenset({internal}))}
    restarts = dict(sim.cluster.restarts)

    provider = SimCertificatesProvider(provider_ca)
    result = run_step(sim, "relate certificates", lambda s: s.relate_certificates(provider))
    first = tls.fingerprint(provider_ca.root_pem)
    assert set(roots(sim).values()) == {(first, frozenset({first}))}
    assert result.lost_writes == 0
    assert_no_restart(sim, restarts)
    # trust both, present the provider's, drop the internal one: three reloads a node
    assert set(sim.cluster.tls_reloads.values()) == {3}, sim.cluster.tls_reloads
    assert isinstance(sim.app_status(), testing.ActiveStatus), sim.app_status()

    rotated = IssuingCA(name="self-signed-certificates operator, rotated")
    run_step(sim, "rotate the provider CA", lambda s: s.rotate_certificates_ca(rotated))
    second = tls.fingerprint(rotated.root_pem)
    assert set(roots(sim).values()) == {(second, frozenset({second}))}
    assert_no_restart(sim, restarts)

    run_step(sim, "remove certificates", lambda s: s.unrelate_certificates())
    assert set(roots(sim).values()) == {(internal, frozenset({internal}))}
    assert_no_restart(sim, restarts)
    assert sim.cluster.lost_acknowledged_writes() == 0
    assert isinstance(sim.app_status(), testing.ActiveStatus), sim.app_status()


def test_a_certificate_kurrentdb_would_refuse_leaves_every_node_on_its_own(
    sim, provider_ca
) -> None:
    formed(sim)
    internal = tls.fingerprint(sim._ca_applied or "")
    restarts = dict(sim.cluster.restarts)
    provider = SimCertificatesProvider(provider_ca, drop_client_auth=True)
    run_step(sim, "relate certificates", lambda s: s.relate_certificates(provider))
    assert set(roots(sim).values()) == {(internal, frozenset({internal}))}
    for name in sim.units:
        status = sim.status(name)
        assert isinstance(status, testing.BlockedStatus), status
        assert "lacks clientAuth" in status.message
    assert_no_restart(sim, restarts)
    assert sim.cluster.leader() is not None


def test_a_unit_added_after_the_switch_joins_on_the_providers_certificate(sim, provider_ca) -> None:
    """The new unit's CSR is answered before the resize lets its node start, and the
    plan holds the provider's root alone once it presents its own certificate; the
    resize restarts every node once, as any resize does, and the switch adds none."""
    formed(sim)
    provider = SimCertificatesProvider(provider_ca)
    run_step(sim, "relate certificates", lambda s: s.relate_certificates(provider))
    first = tls.fingerprint(provider_ca.root_pem)
    result = run_step(sim, "add a unit", lambda s: s.add_unit())
    assert set(roots(sim).values()) == {(first, frozenset({first}))}, roots(sim)
    assert len(sim.cluster.nodes) == 4 and result.lost_writes == 0
    assert set(sim.cluster.restarts.values()) == {1}, "the resize's one restart each, no more"
