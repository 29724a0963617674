"""The internal certificate authority and the node certificates it signs (pure crypto).

KurrentDB nodes authenticate each other with their node certificates: a node accepts a peer
whose client certificate carries the reserved common name and chains to a trusted root. So
every node certificate here has the same CN (``NODE_COMMON_NAME``), both the serverAuth and
clientAuth extended key usages, and the SANs under which other nodes and clients reach it.

`cryptography` is imported inside the functions: every hook pays the import cost of the
modules the charm loads at start, and only certificate issuance needs it.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NODE_COMMON_NAME = "kurrentdb-node"
INTERNAL_ROOT_FILE = "ca.crt"  # the internal CA's file in the trusted-roots directory
CA_COMMON_NAME = "KurrentDB charm internal CA"
CA_VALIDITY = datetime.timedelta(days=3650)
NODE_VALIDITY = datetime.timedelta(days=365)
# Reissue a node certificate this long before it expires, so a missed hook or two never
# lets it lapse.
RENEW_BEFORE = datetime.timedelta(days=30)
_RSA_KEY_SIZE = 2048


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    certificate: str
    private_key: str


@dataclass(frozen=True)
class NodeCertificate:
    """A node certificate with the facts needed to decide on reissue without parsing it."""

    certificate: str
    private_key: str
    sans: tuple[str, ...]
    ca_fingerprint: str
    not_after: datetime.datetime

    def needs_reissue(
        self, sans: tuple[str, ...], ca_certificate: str, now: datetime.datetime
    ) -> bool:
        """Whether this certificate no longer fits: other SANs, another CA, or near expiry."""
        return (
            tuple(sorted(self.sans)) != tuple(sorted(sans))
            or self.ca_fingerprint != fingerprint(ca_certificate)
            or self.not_after - now < RENEW_BEFORE
        )


@dataclass(frozen=True)
class NodeTls:
    """What a node presents and trusts: the files KurrentDB reads for TLS."""

    certificate: str  # the leaf, then any intermediates
    private_key: str
    trusted_roots: Mapping[str, str]  # file name in the trusted-roots directory: PEM

    @classmethod
    def internal(cls, ca: KeyPair, node: NodeCertificate) -> NodeTls:
        """The internal CA's certificate, trusting the internal CA alone."""
        return cls(node.certificate, node.private_key, {INTERNAL_ROOT_FILE: ca.certificate})


def pem_bundle(pems: Iterable[str]) -> str:
    """PEM documents as one bundle (each ending in a newline), as curl and ssl read it."""
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in pems)


def fingerprint(pem: str) -> str:
    """A stable identifier of a PEM document (no parsing needed)."""
    return hashlib.sha256(pem.strip().encode()).hexdigest()


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware."""
    return datetime.datetime.now(datetime.timezone.utc)


def generate_ca(common_name: str = CA_COMMON_NAME, now: datetime.datetime | None = None) -> KeyPair:
    """Create a self-signed CA certificate that may sign node certificates only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = now or utcnow()
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        # path_length=0: this CA signs leaf certificates, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(certificate), _key_pem(key))


def issue_node_certificate(
    ca: KeyPair, sans: tuple[str, ...], now: datetime.datetime | None = None
) -> NodeCertificate:
    """Sign a node certificate for KurrentDB with the given CA.

    ``sans`` holds DNS names and IP addresses; each goes in as the matching SAN type.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    now = now or utcnow()
    ca_key = serialization.load_pem_private_key(ca.private_key.encode(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.certificate.encode())
    key = _new_key()
    not_after = now + NODE_VALIDITY
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_COMMON_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(node_key_usage(), critical=True)
        .add_extension(node_extended_key_usage(), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return NodeCertificate(
        certificate=_cert_pem(certificate),
        private_key=_key_pem(key),
        sans=tuple(sans),
        ca_fingerprint=fingerprint(ca.certificate),
        not_after=not_after.replace(microsecond=0),
    )


def node_key_usage(*, key_encipherment: bool = True):
    """The KeyUsage KurrentDB 24.2+ requires of a node certificate with an RSA key.

    digitalSignature and keyEncipherment (`src/KurrentDB.Common/Utils/CertificateExtensions.cs`,
    `HasCorrectKeyUsages`).
    """
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def node_extended_key_usage():
    """A node is a server to clients and a client to the other nodes: both usages."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def _general_names(sans: tuple[str, ...]) -> list:
    from cryptography import x509

    names: list = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_SIZE)


def _cert_pem(certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    from cryptography.hazmat.primitives import serialization

    # PKCS#8, which KurrentDB loads for X.509 certificate files.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
