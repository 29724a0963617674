"""A test CA that issues node certificates the way real providers do, good or broken.

self-signed-certificates copies the CSR's extensions and adds none; Vault signs from an
intermediate; public CAs drop clientAuth. Each knob here is one of those behaviours, so a
test can hand the charm exactly the certificate a provider would.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import tls

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def cert_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class IssuingCA:
    """A root CA, optionally with an intermediate that signs the leaves."""

    name: str = "Test Provider CA"
    with_intermediate: bool = False
    root_key: rsa.RSAPrivateKey = field(default_factory=rsa_key)

    def __post_init__(self) -> None:
        self.root = self._ca(self.name, self.root_key, None, None)
        self.signer_key, self.signer = self.root_key, self.root
        self.intermediate: x509.Certificate | None = None
        if self.with_intermediate:
            key = rsa_key()
            self.intermediate = self._ca(f"{self.name} Intermediate", key, self.root_key, self.root)
            self.signer_key, self.signer = key, self.intermediate

    @staticmethod
    def _ca(name, key, issuer_key, issuer) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> str:
        return cert_pem(self.root)

    @property
    def ca_pem(self) -> str:
        """What a provider sends as `ca`: the certificate that signed the leaf."""
        return cert_pem(self.signer)

    @property
    def chain(self) -> list[str]:
        """What a provider sends as `chain`: the issuing CA up to the root."""
        chain = [cert_pem(self.signer)]
        if self.intermediate is not None:
            chain.append(self.root_pem)
        return chain

    def issue(
        self,
        public_key,
        sans: tuple[str, ...],
        *,
        common_name: str = tls.NODE_COMMON_NAME,
        key_usage: bool = True,
        key_encipherment: bool = True,
        eku: tuple[x509.ObjectIdentifier, ...] | None = (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        days: int = 90,
        starts: datetime.datetime | None = None,
    ) -> str:
        start = starts or NOW - datetime.timedelta(hours=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.signer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
        )
        if key_usage:
            usage = tls.node_key_usage(key_encipherment=key_encipherment)
            builder = builder.add_extension(usage, critical=True)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=True)
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(tls._general_names(sans)), critical=False
            )
        return cert_pem(builder.sign(self.signer_key, hashes.SHA256()))


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sign_request(
    ca: IssuingCA, csr_pem: str, *, drop_client_auth: bool = False, days: int = 90
) -> str:
    """Sign a CSR as self-signed-certificates does: its subject, its key, its extensions
    copied as they are, nothing added (``drop_client_auth``: as a public CA would, serverAuth
    only)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.signer.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(
            datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        )
        .not_valid_after(
            datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
        )
    )
    for extension in csr.extensions:
        value = extension.value
        if drop_client_auth and isinstance(value, x509.ExtendedKeyUsage):
            value = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        builder = builder.add_extension(value, critical=extension.critical)
    return cert_pem(builder.sign(ca.signer_key, hashes.SHA256()))
