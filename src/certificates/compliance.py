"""Would KurrentDB take this certificate as a node certificate? Its rules, one by one.

A certificate the provider issued is checked before any node sees it: one KurrentDB would
refuse to load stops that node's TLS on the next reload, and one it loads but its peers
reject splits the cluster (`node/gossip : update Deny`). The rules, from KurrentDB v26.1.0:

- KeyUsage must hold digitalSignature and keyEncipherment or keyAgreement; an absent
  extension counts as none (`src/KurrentDB.Common/Utils/CertificateExtensions.cs`,
  `TryGetKeyUsages`, `HasCorrectKeyUsages`);
- ExtendedKeyUsage, when present, must hold serverAuth, and clientAuth unless
  `DisableClientAuthEkuValidation` (26.0.2+) is set (same file, `IsServerCertificate`);
- the certificate's CN must match the reserved node CN: a wildcard CN only exactly, a plain
  CN also a wildcard reserved name of three labels or more (same file,
  `ClientCertificateMatchesName`; `src/KurrentDB.Core/Certificates/OptionsCertificateProvider.cs`
  refuses to load a certificate that does not match `CertificateReservedNodeCommonName`);
- a node's certificate must carry a DNS or IP SAN
  (`src/KurrentDB.Core/Services/Transport/Http/Authentication/NodeCertificateAuthenticationProvider.cs`),
  and the names it is reached by (docs/server/security/protocol-security.md);
- the chain must build from the leaf, through the intermediates bundled after it in the
  certificate file, to a trusted root, and every trusted root must be self-signed
  (`src/KurrentDB.Core/Certificates/OptionsCertificateProvider.cs` `VerifyCertificates`,
  `src/KurrentDB.Core/Certificates/CertificateUtils.cs` `IsValidRootCertificate`);
- the key must be RSA, and the certificate must be for the unit's own key.

`cryptography` is imported only here, in the functions: a hook that checks nothing never
loads it.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import tls


@dataclass(frozen=True)
class NodeMaterial:
    """What a node presents and what it must trust, from an accepted certificate."""

    certificate: str  # the leaf, then the intermediates (KurrentDB reads them from the file)
    root: str  # the self-signed root the chain ends in: the CA the other nodes must trust
    root_fingerprint: str
    not_after: datetime.datetime


@dataclass(frozen=True)
class Expectations:
    """What this node's certificate must satisfy."""

    reserved_common_name: str
    sans: tuple[str, ...]
    client_auth_optional: bool = False  # DisableClientAuthEkuValidation is set


class RejectedError(ValueError):
    """KurrentDB would not take the certificate; the message says why, for a status."""


def accept(
    certificate: str,
    chain: Sequence[str],
    ca: str,
    private_key: str,
    expected: Expectations,
    now: datetime.datetime | None = None,
) -> NodeMaterial:
    """The material a node can use, or `RejectedError` naming the first rule it breaks."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    leaf = _load(certificate, "the issued certificate")
    now = now or tls.utcnow()
    if (
        not leaf.not_valid_before_utc
        <= now.replace(tzinfo=datetime.timezone.utc)
        < (leaf.not_valid_after_utc)
    ):
        raise RejectedError(
            f"the issued certificate is valid only from {leaf.not_valid_before_utc} "
            f"to {leaf.not_valid_after_utc}"
        )
    # Only its public half is compared: the RSA consistency check that loading does by
    # default costs ~50 ms a hook, and this key never signs anything here.
    key = load_pem_private_key(
        private_key.encode(), password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey) or not isinstance(
        leaf.public_key(), rsa.RSAPublicKey
    ):
        raise RejectedError("the certificate's key is not RSA: KurrentDB loads only RSA node keys")
    if key.public_key().public_numbers() != leaf.public_key().public_numbers():
        raise RejectedError("the issued certificate is not for this unit's private key")
    _check_key_usage(leaf, x509)
    _check_extended_key_usage(leaf, expected, x509)
    common_name = _common_name(leaf, x509)
    if not common_name_matches(common_name, expected.reserved_common_name):
        raise RejectedError(
            f"its CN is {common_name or '(none)'!r}, not the reserved node CN "
            f"{expected.reserved_common_name!r} every node must share"
        )
    names = _subject_alternative_names(leaf, x509)
    missing = [name for name in expected.sans if not any(_san_covers(n, name) for n in names)]
    if missing:
        raise RejectedError(f"its SANs lack {', '.join(missing)}, by which the node is reached")
    intermediates, root = _chain_to_root(leaf, [*chain, ca], x509)
    bundle = "".join(_pem(c) for c in (leaf, *intermediates))
    root_pem = _pem(root)
    return NodeMaterial(
        certificate=bundle,
        root=root_pem,
        root_fingerprint=tls.fingerprint(root_pem),
        not_after=leaf.not_valid_after_utc.replace(tzinfo=None),
    )


def common_name_matches(common_name: str, reserved: str) -> bool:
    """KurrentDB's `ClientCertificateMatchesName`: the CN against the reserved node CN."""
    if not common_name or not reserved:
        return False
    if common_name.startswith("*."):
        return common_name.lower() == reserved.lower()  # a wildcard CN: exact match only
    return _dns_match(reserved, common_name)


def _dns_match(pattern: str, name: str) -> bool:
    """RFC 6125 matching as KurrentDB does it: a whole first-label wildcard, no partial."""
    if _is_ip(pattern) or _is_ip(name):
        return pattern.lower() == name.lower()
    wanted, given = pattern.lower().split("."), name.lower().split(".")
    if len(wanted) != len(given) or "" in wanted or "" in given:
        return False
    if wanted[0] != "*":
        return wanted == given
    return len(wanted) > 2 and wanted[1:] == given[1:]


def _san_covers(san: str, name: str) -> bool:
    return _dns_match(san, name)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _load(pem: str, what: str):
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError) as e:
        raise RejectedError(f"{what} is not a PEM X.509 certificate") from e


def _pem(certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.PEM).decode()


def _check_key_usage(leaf, x509) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise RejectedError(
            "it has no KeyUsage: KurrentDB needs digitalSignature and keyEncipherment "
            "(the CSR asks for them; this CA dropped them)"
        ) from None
    if not usage.digital_signature:
        raise RejectedError("its KeyUsage lacks digitalSignature, which KurrentDB requires")
    if not (usage.key_encipherment or usage.key_agreement):
        raise RejectedError(
            "its KeyUsage lacks keyEncipherment (or keyAgreement), which KurrentDB requires"
        )


def _check_extended_key_usage(leaf, expected: Expectations, x509) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return  # absent: KurrentDB accepts it as a server certificate (RFC 5280 4.2.1.12)
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise RejectedError("its ExtendedKeyUsage lacks serverAuth, which KurrentDB requires")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages and not expected.client_auth_optional:
        raise RejectedError(
            "its ExtendedKeyUsage lacks clientAuth, with which nodes authenticate each other; "
            "ask the CA for it, or (KurrentDB 26.0.2+) set DisableClientAuthEkuValidation: true "
            "in extra-options"
        )


def _common_name(leaf, x509) -> str:
    from cryptography.x509.oid import NameOID

    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _subject_alternative_names(leaf, x509) -> list[str]:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise RejectedError("it has no DNS or IP SAN: KurrentDB denies such a node") from None
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    names += [str(n) for n in sans.get_values_for_type(x509.IPAddress)]
    if not names:
        raise RejectedError("it has no DNS or IP SAN: KurrentDB denies such a node")
    return names


def _chain_to_root(leaf, given: Sequence[str], x509):
    """The intermediates from the leaf up, and the self-signed root they end in."""
    from cryptography.exceptions import InvalidSignature

    pool = []
    for pem in given:
        for block in _pem_blocks(pem):
            pool.append(_load(block, "a CA certificate the provider sent"))
    intermediates: list = []
    current = leaf
    for _ in range(len(pool) + 1):
        issuer = None
        for candidate in pool:
            if candidate.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            issuer = candidate
            break
        if issuer is None:
            raise RejectedError(
                "its chain does not reach a self-signed root among the CA certificates the "
                "provider sent: KurrentDB trusts only self-signed roots"
            )
        if issuer.subject == issuer.issuer:
            return intermediates, issuer
        intermediates.append(issuer)
        current = issuer
    raise RejectedError("its chain loops without reaching a self-signed root")


def _pem_blocks(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part + marker + "\n" for part in text.split(marker) if "-----BEGIN" in part]
