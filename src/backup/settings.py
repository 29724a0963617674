"""The storage relations' data, validated into the settings a backend is built from.

Everything here comes from another application (s3-integrator, azure-storage-integrator
or anything speaking their interfaces), so nothing is trusted: a value that is missing or
malformed becomes `StorageNotReady` with a message naming the key and what is allowed.
Messages never quote a credential; other values are quoted shortened and with control
characters escaped, so a hostile value cannot forge lines in a status or an action result.

Relation keys, as the providers write them (object-storage-charmlib 1.0.0,
`object_storage/domain.py` `S3Info` and `AzureStorageInfo`): s3 `bucket`, `access-key`,
`secret-key`, `endpoint`, `region`, `path`, `s3-uri-style`, `tls-ca-chain` (a JSON list of
PEM certificates); azure `container`, `storage-account`, `secret-key`,
`connection-protocol`, `endpoint`, `path`. A v0 provider writes them all in its
application databag; a v1 provider puts the credentials in a Juju secret, which the
library resolves before these functions see the data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"

# Longest value a message quotes; the rest is elided.
_QUOTE_LIMIT = 60
# Bounds on what the relation may hand us, so a hostile provider cannot make the charm
# hold or write out megabytes.
_MAX_CA_CHAIN_CHARS = 256 * 1024
_MAX_PATH_CHARS = 512
_MAX_CREDENTIAL_CHARS = 4096

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PATH_CHAR = re.compile(r"[^\x00-\x1f\x7f\\]*")
_CREDENTIAL_CHAR = re.compile(r"[\x21-\x7e]+")

# s3-integrator names virtual-hosted addressing "host"; boto3 names it "virtual".
_URI_STYLES = {"path": "path", "host": "virtual", "virtual": "virtual"}
# azure-storage-integrator speaks of the Hadoop schemes; all the blob client needs is
# whether to use TLS.
_PROTOCOLS = {
    "https": "https",
    "http": "http",
    "abfss": "https",
    "wasbs": "https",
    "abfs": "http",
    "wasb": "http",
}


class StorageNotReady(Exception):  # noqa: N818 (a state the user fixes, not a fault)
    """The object storage cannot be used yet; ``message`` says what to relate or set."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class S3Settings:
    """One S3 bucket and path, and how to reach it."""

    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    endpoint: str | None = None
    region: str | None = None
    path: str = ""
    uri_style: str = "auto"  # boto3's addressing_style: path, virtual or auto
    tls_ca_chain: tuple[str, ...] = ()

    def summary(self) -> dict[str, str]:
        """What may be shown to anyone who can run an action (no credential)."""
        return {
            "backend": "s3",
            "endpoint": self.endpoint or "(AWS default)",
            "region": self.region or "(default)",
            "bucket": self.bucket,
            "path": self.path,
            "uri-style": self.uri_style,
            "tls-ca-chain": f"{len(self.tls_ca_chain)} certificate(s)",
        }


@dataclass(frozen=True)
class AzureSettings:
    """One Azure storage container and path, and how to reach it."""

    storage_account: str
    secret_key: str = field(repr=False)
    container: str
    protocol: str = "https"
    endpoint: str | None = None
    path: str = ""

    def summary(self) -> dict[str, str]:
        """What may be shown to anyone who can run an action (no credential)."""
        return {
            "backend": "azure",
            "storage-account": self.storage_account,
            "endpoint": self.endpoint or "(Azure default)",
            "container": self.container,
            "path": self.path,
            "connection-protocol": self.protocol,
        }

    @property
    def account_url(self) -> str:
        """The blob service URL: the endpoint given, else Azure's public one."""
        if self.endpoint:
            return self.endpoint
        return f"{self.protocol}://{self.storage_account}.blob.core.windows.net"


def quoted(value: object) -> str:
    """A value for a message: repr-escaped (no raw newlines or escapes) and bounded."""
    text = value if isinstance(value, str) else repr(value)
    shown = repr(text[:_QUOTE_LIMIT])
    return shown + ("..." if len(text) > _QUOTE_LIMIT else "")


def _text(data: Mapping[str, object], key: str, relation: str) -> str | None:
    """The key's value as stripped text, None when absent or empty."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise StorageNotReady(f"{relation} relation: {key} must be text, got {quoted(value)}")
    return value.strip() or None


def _required(data: Mapping[str, object], key: str, relation: str, hint: str) -> str:
    value = _text(data, key, relation)
    if value is None:
        raise StorageNotReady(f"{relation} relation has no {key}: {hint}")
    return value


def _credential(data: Mapping[str, object], key: str, relation: str, hint: str) -> str:
    """A credential: required, printable, bounded; never quoted back in a message."""
    value = _required(data, key, relation, hint)
    if len(value) > _MAX_CREDENTIAL_CHARS or not _CREDENTIAL_CHAR.fullmatch(value):
        raise StorageNotReady(
            f"{relation} relation: {key} is not usable (printable ASCII without spaces, "
            f"at most {_MAX_CREDENTIAL_CHARS} characters)"
        )
    return value


def _endpoint(data: Mapping[str, object], relation: str) -> str | None:
    value = _text(data, "endpoint", relation)
    if value is None:
        return None
    parts = urlsplit(value) if _PATH_CHAR.fullmatch(value) and " " not in value else None
    try:
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        port_ok = False
    if (
        parts is None
        or not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
    ):
        raise StorageNotReady(
            f"{relation} relation: endpoint {quoted(value)} is not an http:// or https:// URL "
            "without credentials, query or fragment"
        )
    return value.rstrip("/")


def _path(data: Mapping[str, object], relation: str) -> str:
    """The key prefix: no leading or trailing slash, no empty, '.' or '..' segment."""
    value = _text(data, "path", relation) or ""
    stripped = value.strip("/")
    segments = stripped.split("/") if stripped else []
    if (
        len(value) > _MAX_PATH_CHARS
        or not _PATH_CHAR.fullmatch(value)
        or any(segment in ("", ".", "..") for segment in segments)
    ):
        raise StorageNotReady(
            f"{relation} relation: path {quoted(value)} is not usable (at most "
            f"{_MAX_PATH_CHARS} characters, no control characters or backslashes, "
            "no empty, '.' or '..' segment)"
        )
    return stripped


def _one_of(
    data: Mapping[str, object], key: str, relation: str, allowed: Mapping[str, str], default: str
) -> str:
    value = _text(data, key, relation)
    if value is None:
        return default
    if value.lower() not in allowed:
        raise StorageNotReady(
            f"{relation} relation: {key} {quoted(value)} is not one of {', '.join(allowed)}"
        )
    return allowed[value.lower()]


def _matching(
    data: Mapping[str, object], key: str, relation: str, pattern: re.Pattern[str], rule: str
) -> str | None:
    value = _text(data, key, relation)
    if value is not None and not pattern.fullmatch(value):
        raise StorageNotReady(f"{relation} relation: {key} {quoted(value)} is not valid: {rule}")
    return value


def _ca_chain(data: Mapping[str, object], relation: str) -> tuple[str, ...]:
    """`tls-ca-chain`: a JSON list of PEM certificates (a list already decoded is taken too)."""
    raw = data.get("tls-ca-chain")
    if raw is None or raw == "" or raw == []:
        return ()
    problem = f"{relation} relation: tls-ca-chain must be a JSON list of PEM certificates"
    if isinstance(raw, str):
        if len(raw) > _MAX_CA_CHAIN_CHARS:
            raise StorageNotReady(f"{problem}, at most {_MAX_CA_CHAIN_CHARS} characters")
        try:
            raw = json.loads(raw)
        except ValueError:
            raise StorageNotReady(problem) from None
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise StorageNotReady(problem)
    if sum(len(item) for item in raw) > _MAX_CA_CHAIN_CHARS:
        raise StorageNotReady(f"{problem}, at most {_MAX_CA_CHAIN_CHARS} characters")
    chain = tuple(item.strip() for item in raw if item.strip())
    for index, pem in enumerate(chain):
        if not (pem.startswith(PEM_BEGIN) and pem.endswith(PEM_END)):
            raise StorageNotReady(f"{problem}: entry {index} is not one")
    return chain


def parse_s3(data: Mapping[str, object]) -> S3Settings:
    """The s3-parameters relation's data as settings, or StorageNotReady saying what is wrong."""
    relation = "s3-parameters"
    return S3Settings(
        bucket=_matching(
            data,
            "bucket",
            relation,
            _BUCKET,
            "3-63 letters, digits, '.', '-' or '_', starting and ending with a letter or digit",
        )
        or _required(data, "bucket", relation, "set the bucket on s3-integrator (`bucket` option)"),
        access_key=_credential(
            data, "access-key", relation, "give s3-integrator its credentials (sync-s3-credentials)"
        ),
        secret_key=_credential(
            data, "secret-key", relation, "give s3-integrator its credentials (sync-s3-credentials)"
        ),
        endpoint=_endpoint(data, relation),
        region=_matching(
            data, "region", relation, _REGION, "up to 64 letters, digits, '.', '-' or '_'"
        ),
        path=_path(data, relation),
        uri_style=_one_of(data, "s3-uri-style", relation, _URI_STYLES, "auto"),
        tls_ca_chain=_ca_chain(data, relation),
    )


def parse_azure(data: Mapping[str, object]) -> AzureSettings:
    """The azure-storage relation's data as settings, or StorageNotReady saying what is wrong."""
    relation = "azure-storage"
    account = _matching(
        data, "storage-account", relation, _ACCOUNT, "3-24 lowercase letters and digits"
    )
    container = _matching(
        data,
        "container",
        relation,
        _CONTAINER,
        "3-63 lowercase letters, digits and single hyphens, starting and ending with a "
        "letter or digit",
    )
    return AzureSettings(
        storage_account=account
        or _required(data, "storage-account", relation, "set storage-account on the integrator"),
        secret_key=_credential(
            data, "secret-key", relation, "give azure-storage-integrator the account key secret"
        ),
        container=container
        or _required(data, "container", relation, "set container on the integrator"),
        protocol=_one_of(data, "connection-protocol", relation, _PROTOCOLS, "https"),
        endpoint=_endpoint(data, relation),
        path=_path(data, relation),
    )
