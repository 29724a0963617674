"""The objects a backup writes besides file contents, and their strict parsing.

Under a store's root (the relation's bucket/container and path):

- ``owner.json``: the application and model that write backups there. Another cluster may
  read and restore them, but never writes into that path.
- ``backups/<id>/started``: written first; a backup with it and no manifest is incomplete.
- ``backups/<id>/manifest.json``: written last, once every file is stored; only a backup
  with a manifest is complete and may be restored.
- ``blobs/<sha256>`` (``.zz`` when zlib-compressed): file contents, cut in blocks, each
  stored once under the sha256 of its uncompressed bytes.

Everything read back from storage is untrusted: another application, an older or newer
charm, or a person may have written it. Parsing refuses anything malformed with a
`ManifestError` naming the field and what is allowed, and never raises anything else.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_LIMIT = 64 << 20
"""Largest manifest read back: about 500,000 blocks, 4 TB of data at 8 MiB blocks."""
MARKER_LIMIT = 64 << 10
MAX_BLOCK_SIZE = 64 << 20
MAX_FILE_SIZE = 1 << 44
OWNER_KEY = "owner.json"
BACKUPS_PREFIX = "backups/"
BLOBS_PREFIX = "blobs/"
COMPRESSIONS = {"none": "", "zlib": ".zz"}

_MANIFEST_KIND = "kurrentdb-backup-manifest"
_STARTED_KIND = "kurrentdb-backup-started"
_OWNER_KIND = "kurrentdb-backup-owner"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_BACKUP_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOB_KEY = re.compile(r"^blobs/([0-9a-f]{64})(\.zz)?$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_APP = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_UNIT = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*/\d{1,9}$")
_MODEL = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_VERSION = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}([.+-][0-9A-Za-z.+-]{1,40})?$")
_MAX_POSITION = 1 << 62


class ManifestError(Exception):
    """A manifest or marker from storage is malformed; the message says where and why."""


def backup_id_for(now: datetime.datetime, token: str | None = None) -> str:
    """A sortable backup id: the UTC time to the second, then 6 random hex digits."""
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{token if token is not None else secrets.token_hex(3)}"


def is_backup_id(value: str) -> bool:
    """Whether ``value`` has the form of a backup id (safe to put in an object key)."""
    match = _BACKUP_ID.match(value)
    if match is None:
        return False
    try:
        datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
    except ValueError:
        return False
    return True


def manifest_key(backup_id: str) -> str:
    """Where a backup's manifest lives."""
    return f"{BACKUPS_PREFIX}{backup_id}/manifest.json"


def started_key(backup_id: str) -> str:
    """Where a backup's started marker lives."""
    return f"{BACKUPS_PREFIX}{backup_id}/started"


def alive_key(backup_id: str) -> str:
    """Where a running backup renews the time it was last seen working.

    A backup runs inside a Juju action, whose peer-relation writes land only when it ends,
    so the object store is the one place the leader can see a backup that is running now.
    """
    return f"{BACKUPS_PREFIX}{backup_id}/alive"


def parse_time(data: bytes) -> datetime.datetime | None:
    """A stored UTC time (``format_time``'s form), or None when it is not one."""
    try:
        moment = datetime.datetime.strptime(data.decode("ascii"), _TIME_FORMAT)
    except (UnicodeDecodeError, ValueError):
        return None
    return moment.replace(tzinfo=datetime.timezone.utc)


def blob_key(sha256: str, compression: str) -> str:
    """The object holding a block: its content's sha256, and the encoding stored.

    The key names the uncompressed bytes, so a block found under it is the same content
    whatever zlib build compressed it; the suffix tells how to read it back.
    """
    return f"{BLOBS_PREFIX}{sha256}{COMPRESSIONS[compression]}"


def format_time(moment: datetime.datetime) -> str:
    """A UTC time as stored: ISO 8601 to the second."""
    return moment.astimezone(datetime.timezone.utc).strftime(_TIME_FORMAT)


def _encode(kind: str, fields: dict[str, Any]) -> bytes:
    """An object as stored: what it is and its schema, then its fields, compact JSON."""
    body = {"kind": kind, "schema": SCHEMA_VERSION, **fields}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SourceInfo:
    """Where a backup comes from: the charm passes what Juju and the image told it."""

    kurrentdb_version: str
    cluster: str
    application: str
    unit: str
    model: str
    model_uuid: str
    charm_revision: int


@dataclass(frozen=True)
class Block:
    """One stored piece of a file, in file order."""

    sha256: str
    size: int
    compression: str

    @property
    def key(self) -> str:
        """The object holding this block."""
        return blob_key(self.sha256, self.compression)


@dataclass(frozen=True)
class FileEntry:
    """One backed-up file: its path relative to the data directory, its bytes' identity."""

    path: str
    size: int
    sha256: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Manifest:
    """A complete backup."""

    backup_id: str
    source: SourceInfo
    started_at: str
    finished_at: str
    writer_checkpoint: int
    chaser_checkpoint: int
    files: tuple[FileEntry, ...]
    bytes_total: int
    bytes_uploaded: int

    def to_json(self) -> bytes:
        """The manifest as stored."""
        body = {
            "backup_id": self.backup_id,
            "source": asdict(self.source),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "writer_checkpoint": self.writer_checkpoint,
            "chaser_checkpoint": self.chaser_checkpoint,
            "bytes_total": self.bytes_total,
            "bytes_uploaded": self.bytes_uploaded,
            "files": [
                {
                    "path": entry.path,
                    "size": entry.size,
                    "sha256": entry.sha256,
                    "blocks": [
                        {"key": b.key, "size": b.size, "compression": b.compression}
                        for b in entry.blocks
                    ],
                }
                for entry in self.files
            ],
        }
        return _encode(_MANIFEST_KIND, body)


@dataclass(frozen=True)
class Started:
    """The marker a backup writes before anything else."""

    backup_id: str
    source: SourceInfo
    started_at: str

    def to_json(self) -> bytes:
        """The marker as stored."""
        return _encode(_STARTED_KIND, asdict(self))


@dataclass(frozen=True)
class Owner:
    """The application (in its model) allowed to write backups under a path."""

    application: str
    model: str
    model_uuid: str

    def to_json(self) -> bytes:
        """The marker as stored."""
        return _encode(_OWNER_KIND, asdict(self))

    def describe(self) -> str:
        """How a message names this owner."""
        return f"application {self.application!r} of model {self.model!r} ({self.model_uuid})"


# -- parsing -------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ManifestError(f"{name} is not a JSON number allowed here")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(f"the key {key[:40]!r} appears twice")
        result[key] = value
    return result


def _load(data: bytes, what: str) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray):
        raise ManifestError(f"the {what} is not bytes")
    try:
        text = bytes(data).decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_refuse_constant)
    except ManifestError as e:
        raise ManifestError(f"the {what} is not valid: {e}") from None
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"the {what} is not UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise ManifestError(f"the {what} is not a JSON object")
    return value


class _Reader:
    """Typed access to one JSON object's fields, each failure naming the field."""

    def __init__(self, value: Any, where: str, allowed: set[str], kind: str | None = None):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} is not an object")
        self._value = value
        self._where = where
        if kind is not None:
            # What the object is, and which schema, before any field: the clearest reason.
            self._header(kind)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ManifestError(f"{where} has unknown field {unknown[0][:40]!r}")

    def raw(self, name: str) -> Any:
        if name not in self._value:
            raise ManifestError(f"{self._where} lacks {name!r}")
        return self._value[name]

    def text(self, name: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or len(value) > 300 or not pattern.match(value):
            raise ManifestError(f"{self._where}.{name} must be {allowed}")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ManifestError(f"{self._where}.{name} must be an integer from {low} to {high}")
        return value

    def time(self, name: str) -> str:
        value = self.raw(name)
        try:
            datetime.datetime.strptime(value, _TIME_FORMAT)
        except (TypeError, ValueError):
            raise ManifestError(
                f"{self._where}.{name} must be a UTC time like 2026-01-31T23:59:59Z"
            ) from None
        return str(value)

    def items(self, name: str, limit: int) -> list[Any]:
        value = self.raw(name)
        if not isinstance(value, list) or len(value) > limit:
            raise ManifestError(f"{self._where}.{name} must be a list of at most {limit} items")
        return value

    def _header(self, kind: str) -> None:
        if self.raw("kind") != kind:
            raise ManifestError(f"{self._where} is not a {kind!r} object")
        schema = self.raw("schema")
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise ManifestError(f"{self._where}.schema must be an integer")
        if schema != SCHEMA_VERSION:
            raise ManifestError(
                f"{self._where} has schema {schema}; this charm reads schema {SCHEMA_VERSION}"
            )


def _backup_id(reader: _Reader) -> str:
    value = reader.text("backup_id", _BACKUP_ID, "an id like 20261231T235959Z-0a1b2c")
    if not is_backup_id(value):
        raise ManifestError("backup_id does not hold a valid date and time")
    return value


def _source(value: Any) -> SourceInfo:
    reader = _Reader(value, "source", {f for f in SourceInfo.__dataclass_fields__})
    return SourceInfo(
        kurrentdb_version=reader.text("kurrentdb_version", _VERSION, "a version like 26.1.0"),
        cluster=reader.text("cluster", _APP, "a Juju application name"),
        application=reader.text("application", _APP, "a Juju application name"),
        unit=reader.text("unit", _UNIT, "a Juju unit name like kurrentdb/0"),
        model=reader.text("model", _MODEL, "a Juju model name"),
        model_uuid=reader.text("model_uuid", _UUID, "a lowercase UUID"),
        charm_revision=reader.integer("charm_revision", 0, 1 << 31),
    )


def _safe_path(value: Any, where: str) -> str:
    allowed = "a relative path of letters, digits, '.', '_' and '-' parts, at most 1024 long"
    if not isinstance(value, str) or not 0 < len(value) <= 1024:
        raise ManifestError(f"{where}.path must be {allowed}")
    parts = value.split("/")
    if any(not _PATH_PART.match(part) for part in parts):
        raise ManifestError(f"{where}.path must be {allowed}")
    return value


def _block(value: Any, where: str) -> Block:
    reader = _Reader(value, where, {"key", "size", "compression"})
    compression = reader.text("compression", re.compile(r"^(none|zlib)$"), "'none' or 'zlib'")
    key = reader.text("key", _BLOB_KEY, "blobs/<sha256>, with .zz when compressed")
    match = _BLOB_KEY.match(key)
    assert match is not None  # checked by reader.text
    block = Block(
        sha256=match.group(1),
        size=reader.integer("size", 1, MAX_BLOCK_SIZE),
        compression=compression,
    )
    if block.key != key:
        raise ManifestError(f"{where}.key does not match its compression {compression!r}")
    return block


def _file(value: Any, where: str) -> FileEntry:
    reader = _Reader(value, where, {"path", "size", "sha256", "blocks"})
    path = _safe_path(reader.raw("path"), where)
    size = reader.integer("size", 0, MAX_FILE_SIZE)
    blocks = tuple(
        _block(item, f"{where}.blocks[{n}]")
        for n, item in enumerate(reader.items("blocks", MANIFEST_LIMIT // 64))
    )
    if sum(b.size for b in blocks) != size:
        raise ManifestError(f"{where}: its blocks do not add up to its size {size}")
    return FileEntry(path, size, reader.text("sha256", _SHA256, "64 lowercase hex digits"), blocks)


def parse_manifest(data: bytes) -> Manifest:
    """A manifest read from storage, checked whole; `ManifestError` when malformed."""
    reader = _Reader(
        _load(data, "manifest"),
        "manifest",
        {
            "kind", "schema", "backup_id", "source", "started_at", "finished_at",
            "writer_checkpoint", "chaser_checkpoint", "bytes_total", "bytes_uploaded", "files",
        },
        _MANIFEST_KIND,
    )  # fmt: skip
    files = tuple(
        _file(item, f"files[{n}]") for n, item in enumerate(reader.items("files", 10_000_000))
    )
    paths = [entry.path for entry in files]
    if len(set(paths)) != len(paths):
        raise ManifestError("manifest lists a file twice")
    total = reader.integer("bytes_total", 0, MAX_FILE_SIZE * 1024)
    if total != sum(entry.size for entry in files):
        raise ManifestError("manifest.bytes_total is not the sum of its files' sizes")
    writer = reader.integer("writer_checkpoint", 0, _MAX_POSITION)
    chaser = reader.integer("chaser_checkpoint", -1, _MAX_POSITION)
    if chaser > writer:
        raise ManifestError("manifest.chaser_checkpoint is past its writer_checkpoint")
    started, finished = reader.time("started_at"), reader.time("finished_at")
    if finished < started:
        raise ManifestError("manifest.finished_at is before its started_at")
    return Manifest(
        backup_id=_backup_id(reader),
        source=_source(reader.raw("source")),
        started_at=started,
        finished_at=finished,
        writer_checkpoint=writer,
        chaser_checkpoint=chaser,
        files=files,
        bytes_total=total,
        bytes_uploaded=reader.integer("bytes_uploaded", 0, MAX_FILE_SIZE * 1024),
    )


def parse_started(data: bytes) -> Started:
    """A started marker read from storage; `ManifestError` when malformed."""
    reader = _Reader(
        _load(data, "started marker"),
        "started",
        {"kind", "schema", "backup_id", "source", "started_at"},
        _STARTED_KIND,
    )
    return Started(_backup_id(reader), _source(reader.raw("source")), reader.time("started_at"))


def parse_owner(data: bytes) -> Owner:
    """An ownership marker read from storage; `ManifestError` when malformed."""
    reader = _Reader(
        _load(data, "owner marker"),
        "owner",
        {"kind", "schema", "application", "model", "model_uuid"},
        _OWNER_KIND,
    )
    return Owner(
        application=reader.text("application", _APP, "a Juju application name"),
        model=reader.text("model", _MODEL, "a Juju model name"),
        model_uuid=reader.text("model_uuid", _UUID, "a lowercase UUID"),
    )
