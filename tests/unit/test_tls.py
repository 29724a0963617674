"""The internal CA and node certificates, read back from the PEMs pushed to the container."""

from __future__ import annotations

import dataclasses
import datetime
import os
import stat

import pytest
from conftest import unit_state
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ops import testing

import tls
from workload import paths


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def assert_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    public_key = ca.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    public_key.verify(  # raises InvalidSignature otherwise
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    assert cert.issuer == ca.subject


def test_ca_can_sign_only_leaf_certificates(internal_ca):
    ca = load(internal_ca.certificate)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True and constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > datetime.timedelta(days=3000)


def test_node_certificate_meets_kurrentdb_rules(internal_ca):
    sans = ("kurrentdb-0.kurrentdb-endpoints.m.svc.cluster.local", "localhost", "127.0.0.1")
    node = tls.issue_node_certificate(internal_ca, sans)
    cert = load(node.certificate)
    assert_signed_by(cert, load(internal_ca.certificate))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kurrentdb-node"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [sans[0], "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert node.ca_fingerprint == tls.fingerprint(internal_ca.certificate)
    assert node.private_key.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8


def test_reissue_rules(internal_ca):
    now = tls.utcnow()
    node = tls.issue_node_certificate(internal_ca, ("a", "b"), now=now)
    assert not node.needs_reissue(("b", "a"), internal_ca.certificate, now)
    assert node.needs_reissue(("a", "b", "c"), internal_ca.certificate, now)
    assert node.needs_reissue(("a", "b"), "another CA", now)
    assert node.needs_reissue(
        ("a", "b"), internal_ca.certificate, now + datetime.timedelta(days=340)
    )


def test_leader_creates_ca_and_unit_gets_a_node_certificate(ctx, volumes):
    # Given a fresh deployment: no CA, no passwords yet
    state = unit_state(volumes, ca=None, leader=True)
    out = ctx.run(ctx.on.config_changed(), state)

    # Then the leader stored a CA in an app secret and the unit's certificate chains to it
    ca_secret = next(
        s for s in out.secrets if s.owner == "app" and "private-key" in s.tracked_content
    )
    ca = load(ca_secret.tracked_content["certificate"])
    pushed_ca = load(volumes.read(paths.CA_FILE))
    assert pushed_ca == ca
    node = load(volumes.read(paths.NODE_CERT_FILE))
    assert_signed_by(node, ca)
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local" in san.get_values_for_type(
        x509.DNSName
    )
    # And the node certificate and key are kept in a secret owned by the unit
    unit_secret = next(s for s in out.secrets if s.owner == "unit")
    assert unit_secret.tracked_content["certificate"] == volumes.read(paths.NODE_CERT_FILE)


def test_key_file_is_private(ctx, volumes, internal_ca):
    ctx.run(ctx.on.config_changed(), unit_state(volumes, internal_ca))
    mode = stat.S_IMODE(os.stat(volumes.host_path(paths.NODE_KEY_FILE)).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(volumes.host_path(paths.CONFIG_FILE)).st_mode) == 0o640


def test_non_leader_waits_for_the_leader(ctx, volumes):
    out = ctx.run(ctx.on.config_changed(), unit_state(volumes, ca=None, leader=False))
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to create credentials")
    assert not volumes.host_path(paths.CONFIG_FILE).exists()


def test_certificate_renewal_reloads_instead_of_restarting(ctx, volumes, internal_ca, pebble_calls):
    state = ctx.run(ctx.on.config_changed(), unit_state(volumes, internal_ca))
    first = volumes.read(paths.NODE_CERT_FILE)
    # Given the stored node certificate is close to expiry
    unit_secret = next(s for s in state.secrets if s.owner == "unit")
    expiring = dict(unit_secret.tracked_content)
    expiring["not-after"] = (tls.utcnow() + datetime.timedelta(days=2)).isoformat()
    secrets = {s for s in state.secrets if s is not unit_secret}
    secrets.add(dataclasses.replace(unit_secret, tracked_content=expiring, latest_content=expiring))
    restarts = pebble_calls.restarts

    out = ctx.run(ctx.on.update_status(), dataclasses.replace(state, secrets=secrets))

    assert volumes.read(paths.NODE_CERT_FILE) != first
    assert pebble_calls.restarts == restarts
    assert pebble_calls.signals[-1] == "SIGHUP"
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"


@pytest.mark.parametrize("uid_matches", [True, False])
def test_data_volume_chowned_only_when_owner_is_wrong(ctx, volumes, internal_ca, uid_matches):
    from scenario_fixtures import write_passwd

    if not uid_matches:
        write_passwd(volumes.etc, uid=1001, gid=1001)  # the 26.x image's uid, not the volume's
    ctx.run(ctx.on.config_changed(), unit_state(volumes, internal_ca))
    chowns = [
        e.command for e in ctx.exec_history.get(paths.CONTAINER, []) if e.command[0] == "chown"
    ]
    assert chowns == ([] if uid_matches else [["chown", "1001:1001", paths.DATA_DIR]])
