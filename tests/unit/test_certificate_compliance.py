"""KurrentDB's node-certificate rules (certificates.compliance) against certificates issued
the ways real providers issue them: each broken one is refused naming what is wrong."""

from __future__ import annotations

import datetime

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from issuing_ca import NOW, IssuingCA, cert_pem, ec_key, key_pem, rsa_key

import tls
from certificates.compliance import Expectations, RejectedError, accept, common_name_matches

SANS = (
    "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local",
    "kurrentdb-endpoints.prod.svc.cluster.local",
    "localhost",
    "127.0.0.1",
)
EXPECTED = Expectations(reserved_common_name=tls.NODE_COMMON_NAME, sans=SANS)


@pytest.fixture(scope="module")
def ca() -> IssuingCA:
    return IssuingCA()


@pytest.fixture(scope="module")
def key():
    return rsa_key()


def check(ca: IssuingCA, key, expected: Expectations = EXPECTED, **issue):
    certificate = ca.issue(key.public_key(), issue.pop("sans", SANS), **issue)
    return accept(certificate, ca.chain, ca.ca_pem, key_pem(key), expected, now=NOW)


def test_a_compliant_certificate_gives_the_leaf_and_the_root_to_trust(ca, key) -> None:
    material = check(ca, key)
    assert material.root == ca.root_pem
    assert material.root_fingerprint == tls.fingerprint(ca.root_pem)
    assert material.certificate.count("BEGIN CERTIFICATE") == 1


def test_an_intermediate_goes_after_the_leaf_and_the_root_is_trusted(key) -> None:
    vault = IssuingCA(name="Vault", with_intermediate=True)
    material = check(vault, key)
    assert material.certificate.count("BEGIN CERTIFICATE") == 2
    assert material.certificate.endswith(vault.ca_pem)
    assert material.root == vault.root_pem, "KurrentDB trusts only self-signed roots"


def test_an_intermediate_without_its_root_is_refused(key) -> None:
    vault = IssuingCA(name="Vault", with_intermediate=True)
    certificate = vault.issue(key.public_key(), SANS)
    with pytest.raises(RejectedError, match="self-signed root"):
        accept(certificate, [vault.ca_pem], vault.ca_pem, key_pem(key), EXPECTED, now=NOW)


@pytest.mark.parametrize(
    ("issue", "reason"),
    [
        ({"key_usage": False}, "no KeyUsage"),
        ({"key_encipherment": False}, "lacks keyEncipherment"),
        ({"eku": (ExtendedKeyUsageOID.SERVER_AUTH,)}, "lacks clientAuth"),
        ({"eku": (ExtendedKeyUsageOID.CLIENT_AUTH,)}, "lacks serverAuth"),
        ({"common_name": "kurrentdb-0.example.com"}, "not the reserved node CN"),
        ({"sans": SANS[1:]}, "SANs lack kurrentdb-0.kurrentdb-endpoints"),
        ({"sans": ()}, "no DNS or IP SAN"),
        ({"days": 1, "starts": NOW - datetime.timedelta(days=2)}, "valid only from"),
    ],
)
def test_a_certificate_kurrentdb_would_refuse_says_why(ca, key, issue, reason) -> None:
    with pytest.raises(RejectedError, match=reason):
        check(ca, key, **issue)


def test_the_clientauth_hint_names_the_option_for_public_cas(ca, key) -> None:
    with pytest.raises(RejectedError) as refused:
        check(ca, key, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    assert "DisableClientAuthEkuValidation" in str(refused.value)
    relaxed = Expectations(tls.NODE_COMMON_NAME, SANS, client_auth_optional=True)
    assert check(ca, key, relaxed, eku=(ExtendedKeyUsageOID.SERVER_AUTH,)).root == ca.root_pem


def test_no_extended_key_usage_at_all_is_a_server_certificate(ca, key) -> None:
    assert check(ca, key, eku=None).root == ca.root_pem


def test_a_wildcard_san_covers_the_pod_names(ca, key) -> None:
    wildcard = ("*.kurrentdb-endpoints.prod.svc.cluster.local", *SANS[1:])
    assert check(ca, key, sans=wildcard).root == ca.root_pem


def test_a_certificate_for_another_key_is_refused(ca, key) -> None:
    certificate = ca.issue(rsa_key().public_key(), SANS)
    with pytest.raises(RejectedError, match="not for this unit's private key"):
        accept(certificate, ca.chain, ca.ca_pem, key_pem(key), EXPECTED, now=NOW)


def test_an_ec_key_is_refused(ca) -> None:
    key = ec_key()
    certificate = ca.issue(key.public_key(), SANS)
    with pytest.raises(RejectedError, match="not RSA"):
        accept(certificate, ca.chain, ca.ca_pem, key_pem(key), EXPECTED, now=NOW)


def test_a_certificate_from_another_ca_is_refused(ca, key) -> None:
    other = IssuingCA(name="Other")
    certificate = other.issue(key.public_key(), SANS)
    with pytest.raises(RejectedError, match="self-signed root"):
        accept(certificate, ca.chain, ca.ca_pem, key_pem(key), EXPECTED, now=NOW)


def test_garbage_is_refused_as_not_a_certificate(ca, key) -> None:
    with pytest.raises(RejectedError, match="not a PEM"):
        accept("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ca.chain,
               ca.ca_pem, key_pem(key), EXPECTED, now=NOW)  # fmt: skip
    assert cert_pem(ca.root)  # the fixture itself is sound


@pytest.mark.parametrize(
    ("cn", "reserved", "matches"),
    [
        ("kurrentdb-node", "kurrentdb-node", True),
        ("KurrentDB-Node", "kurrentdb-node", True),
        ("a.nodes.example.com", "*.nodes.example.com", True),
        ("*.nodes.example.com", "*.nodes.example.com", True),
        ("*.nodes.example.com", "a.nodes.example.com", False),  # a wildcard CN: exact only
        ("a.b.nodes.example.com", "*.nodes.example.com", False),
        ("a.example", "*.example", False),  # a wildcard needs three labels
        ("", "kurrentdb-node", False),
    ],
)
def test_common_names_match_as_kurrentdb_matches_them(cn, reserved, matches) -> None:
    assert common_name_matches(cn, reserved) is matches
