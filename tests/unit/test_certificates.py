"""The `certificates` relation in one unit's hooks (Scenario): the CSR the charm sends, a
provider's certificate taken in by reloads and never a restart, a certificate KurrentDB
would refuse, renewal, and the relation going away. Across units: tests/sim."""

from __future__ import annotations

import dataclasses
import json

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from issuing_ca import IssuingCA, sign_request
from ops import testing
from scenario_fixtures import replace_config, unit_state

import tls
from certificates.switch import Plan, UnitTls
from workload import paths

PROVIDER_APP = "self-signed-certificates"


@pytest.fixture(scope="module")
def provider_ca() -> IssuingCA:
    return IssuingCA(name="self-signed-certificates operator")


def related(state: testing.State, remote_app_data: dict | None = None) -> testing.State:
    relation = testing.Relation(
        "certificates", remote_app_name=PROVIDER_APP, remote_app_data=remote_app_data or {}
    )
    return dataclasses.replace(state, relations={*state.relations, relation})


def certificates_relation(state: testing.State) -> testing.Relation:
    return next(r for r in state.relations if r.endpoint == "certificates")


def peer(state: testing.State) -> testing.PeerRelation:
    return next(r for r in state.relations if r.endpoint == "kurrentdb-peers")


def sent_csr(state: testing.State) -> str:
    requests = json.loads(
        certificates_relation(state).local_unit_data["certificate_signing_requests"]
    )
    assert len(requests) == 1
    return requests[0]["certificate_signing_request"]


def issue(state: testing.State, ca: IssuingCA, **kwargs) -> testing.State:
    """The provider answers the CSR in the relation."""
    csr = sent_csr(state)
    answer = {
        "certificates": json.dumps(
            [
                {
                    "certificate_signing_request": csr,
                    "certificate": sign_request(ca, csr, **kwargs),
                    "ca": ca.ca_pem,
                    "chain": ca.chain,
                }
            ]
        )
    }
    relation = dataclasses.replace(certificates_relation(state), remote_app_data=answer)
    others = {r for r in state.relations if r.endpoint != "certificates"}
    return dataclasses.replace(state, relations={*others, relation})


def run_hooks(ctx, state: testing.State, count: int) -> testing.State:
    for _ in range(count):
        state = ctx.run(ctx.on.relation_changed(certificates_relation(state)), state)
    return state


def on_provider_certificate(ctx, volumes, ca, provider_ca: IssuingCA) -> testing.State:
    """A running unit, related, once its node presents the provider's certificate."""
    state = ctx.run(ctx.on.config_changed(), unit_state(volumes, ca))
    state = related(state)
    state = ctx.run(ctx.on.relation_created(certificates_relation(state)), state)
    return run_hooks(ctx, issue(state, provider_ca), 4)


def pushed_roots(volumes) -> dict[str, str]:
    directory = volumes.host_path(paths.CA_DIR)
    return {p.name: p.read_text() for p in directory.iterdir()}


def test_the_csr_carries_what_kurrentdb_checks_as_critical_extensions(
    ctx, volumes, internal_ca, kurrentdb
) -> None:
    state = related(unit_state(volumes, internal_ca))
    out = ctx.run(ctx.on.relation_created(certificates_relation(state)), state)
    csr = x509.load_pem_x509_csr(sent_csr(out).encode())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == tls.NODE_COMMON_NAME
    usage = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert set(eku.value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local",
        "kurrentdb-endpoints.prod.svc.cluster.local",
        "kurrentdb-endpoints",
        "kurrentdb.prod.svc.cluster.local",
        "kurrentdb",
        "localhost",
    }
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # The private key is the unit's own secret; it never appears in relation data.
    assert "PRIVATE KEY" not in json.dumps(certificates_relation(out).local_unit_data)


def test_a_provider_certificate_is_switched_in_by_reloads_alone(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls, provider_ca
) -> None:
    state = ctx.run(ctx.on.config_changed(), unit_state(volumes, internal_ca))
    starts = pebble_calls.replans + pebble_calls.restarts
    state = related(state)
    state = ctx.run(ctx.on.relation_created(certificates_relation(state)), state)
    state = issue(state, provider_ca)
    # trust both roots; present the provider's; drop the internal one
    state = run_hooks(ctx, state, 4)
    node = x509.load_pem_x509_certificate(volumes.read(paths.NODE_CERT_FILE).encode())
    assert node.issuer == provider_ca.root.subject
    assert set(pushed_roots(volumes).values()) == {provider_ca.root_pem}
    assert volumes.read(paths.TRUST_BUNDLE) == provider_ca.root_pem
    assert pebble_calls.replans + pebble_calls.restarts == starts, "no restart"
    assert pebble_calls.signals.count("SIGHUP") >= 3, pebble_calls.signals
    plan = Plan.from_json(peer(state).local_app_data["tls-plan"])
    root = tls.fingerprint(provider_ca.root_pem)
    assert plan.trust == {root} and plan.grants == {"kurrentdb/0": root}
    ack = UnitTls.from_json(peer(state).local_unit_data["tls"])
    assert ack == UnitTls(wants=root, trusts=frozenset({root}), presents=root)


def test_a_certificate_without_client_auth_is_refused_and_the_node_keeps_its_own(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls, provider_ca
) -> None:
    state = ctx.run(ctx.on.config_changed(), unit_state(volumes, internal_ca))
    before = volumes.read(paths.NODE_CERT_FILE)
    state = related(state)
    state = ctx.run(ctx.on.relation_created(certificates_relation(state)), state)
    state = issue(state, provider_ca, drop_client_auth=True)
    state = run_hooks(ctx, state, 3)
    status = state.unit_status
    assert isinstance(status, testing.BlockedStatus), status
    assert (
        "lacks clientAuth" in status.message and "DisableClientAuthEkuValidation" in status.message
    )
    assert volumes.read(paths.NODE_CERT_FILE) == before
    assert set(pushed_roots(volumes)) == {tls.INTERNAL_ROOT_FILE}

    # The operator accepts public-CA certificates: the same certificate goes in.
    state = replace_config(state, extra_options="{DisableClientAuthEkuValidation: true}")
    state = run_hooks(ctx, state, 4)
    node = x509.load_pem_x509_certificate(volumes.read(paths.NODE_CERT_FILE).encode())
    assert node.issuer == provider_ca.root.subject


def test_removing_the_relation_switches_back_to_the_internal_ca(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls, provider_ca
) -> None:
    state = on_provider_certificate(ctx, volumes, internal_ca, provider_ca)
    starts = pebble_calls.replans + pebble_calls.restarts
    relation = certificates_relation(state)
    state = ctx.run(ctx.on.relation_broken(relation), state)
    state = dataclasses.replace(state, relations={r for r in state.relations if r != relation})
    for _ in range(4):
        state = ctx.run(ctx.on.update_status(), state)
    node = x509.load_pem_x509_certificate(volumes.read(paths.NODE_CERT_FILE).encode())
    assert node.issuer == x509.load_pem_x509_certificate(internal_ca.certificate.encode()).subject
    assert set(pushed_roots(volumes)) == {tls.INTERNAL_ROOT_FILE}
    assert pebble_calls.replans + pebble_calls.restarts == starts, "no restart"


def test_a_renewed_certificate_is_reloaded_not_restarted(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls, provider_ca
) -> None:
    state = on_provider_certificate(ctx, volumes, internal_ca, provider_ca)
    first = volumes.read(paths.NODE_CERT_FILE)
    starts, hups = (
        pebble_calls.replans + pebble_calls.restarts,
        pebble_calls.signals.count("SIGHUP"),
    )
    state = run_hooks(ctx, issue(state, provider_ca, days=30), 1)
    assert volumes.read(paths.NODE_CERT_FILE) != first
    assert pebble_calls.replans + pebble_calls.restarts == starts
    assert pebble_calls.signals.count("SIGHUP") == hups + 1
