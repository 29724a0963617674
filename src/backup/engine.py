"""Content-addressed, incremental backups of a KurrentDB data directory; their download.

`create_backup` walks `layout` in the documented order and cuts each file into blocks of
`transfer.BLOCK_SIZE` bytes at fixed offsets. A block is stored under the sha256 of its
bytes (`manifest.blob_key`), and only when the store does not hold it yet, whichever unit
or backup stored it: completed chunks and PTables are uploaded once, and a backup after
more records were appended uploads only the active chunk's new blocks and the small files
that changed. Files are read with bounded memory (a few blocks in flight, whatever the
dataset's size), blocks go up on a few threads, and the manifest is written last: a
storage failure anywhere leaves a started marker and no manifest, which `list_backups`
shows as incomplete and a restore never offers. While it runs, a thread renews an alive
object every `HEARTBEAT_SECONDS`, so the leader can refuse a restore that would pull the
data from under it (`running_backups`).

`download_and_verify` writes a backup's files into a staging directory and checks every
block's sha256 and size as it arrives, then every file's; the first mismatch or missing
object stops it with the file's name, and nothing outside the staging directory is touched.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from backup import layout
from backup.manifest import (
    BACKUPS_PREFIX,
    MANIFEST_LIMIT,
    MARKER_LIMIT,
    OWNER_KEY,
    Block,
    FileEntry,
    Manifest,
    ManifestError,
    Owner,
    SourceInfo,
    Started,
    alive_key,
    backup_id_for,
    format_time,
    is_backup_id,
    manifest_key,
    parse_manifest,
    parse_owner,
    parse_started,
    parse_time,
    started_key,
)
from backup.store import ObjectStore, StorageError
from backup.transfer import (
    BLOCK_SIZE,
    BlockError,
    Progress,
    ProgressLines,
    Sleep,
    fetch_block,
    human,
    map_blocks_outside_the_heap,
    put_block,
    with_retries,
)

UPLOAD_WORKERS = 6
UPLOAD_IN_FLIGHT = 7
DOWNLOAD_WORKERS = DOWNLOAD_IN_FLIGHT = 8
"""Threads, and blocks held at once (read ahead of the oldest one not yet stored, or
downloaded ahead of the one being written). Each block costs its 8 MiB and what the HTTP
client holds of it: measured on radosgw with 2 GiB, the backup peaked at 170 MB RSS with 6
in flight on 4 threads and 208 MB with 10 on 8 threads, before the malloc threshold was
fixed (`transfer.map_blocks_outside_the_heap`); with it and these values, 155-177 MB for
the backup and 131-133 MB for the download, 0.5 to 2 GiB (boto3's own upload_file: 85 MB).
10 download threads were no faster than 8 (bench/backup.py). The charm container may be
limited to 1 GiB."""

_ZEROS = bytes(BLOCK_SIZE)

HEARTBEAT_SECONDS = 20.0
"""How often a running backup renews its alive object."""
ALIVE_WINDOW = datetime.timedelta(seconds=90)
"""A backup seen alive this recently still runs: four renewals missed before it counts as
dead (a killed action leaves its alive object behind), with room for clock skew between
units."""


class PathOwnedError(Exception):
    """The store's path holds another application's backups: this one may not write there."""


class BackupNotFoundError(Exception):
    """No complete backup with the requested id exists under the path."""


class VerificationError(Exception):
    """A downloaded file is not what the manifest says; ``path`` names it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class BackupResult:
    """What one backup did."""

    backup_id: str
    files: int
    bytes_total: int
    bytes_uploaded: int
    seconds: float
    writer_checkpoint: int
    chaser_checkpoint: int


@dataclass(frozen=True)
class BackupSummary:
    """One backup as `list_backups` shows it.

    ``state`` is "complete" (a manifest), "running" (no manifest yet, seen alive within
    `ALIVE_WINDOW`), "incomplete" (started, no manifest, not running) or "unreadable" (its
    manifest or marker is malformed: ``reason`` says why).
    """

    backup_id: str
    state: str
    started_at: str | None = None
    finished_at: str | None = None
    application: str | None = None
    model: str | None = None
    model_uuid: str | None = None
    unit: str | None = None
    kurrentdb_version: str | None = None
    size: int | None = None
    new_bytes: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DownloadResult:
    """What one download did."""

    files: int
    bytes_total: int
    seconds: float


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# -- ownership -----------------------------------------------------------------------------


def read_owner(store: ObjectStore) -> Owner | None:
    """The path's ownership marker, None when there is none; `ManifestError` when bad."""
    if store.size_of(OWNER_KEY) is None:
        return None
    return parse_owner(store.get_bytes(OWNER_KEY, MARKER_LIMIT))


def claim_path(store: ObjectStore, owner: Owner, sleep: Sleep = time.sleep) -> None:
    """Make ``owner`` the path's writer, or refuse when another application owns it.

    Reading and restoring another owner's backups stays allowed: only writing is refused.
    """
    try:
        current = with_retries(lambda: read_owner(store), sleep)
    except ManifestError as e:
        raise PathOwnedError(f"the path's {OWNER_KEY} is not this charm's marker ({e})") from None
    if current is None:
        with_retries(lambda: store.put_bytes(OWNER_KEY, owner.to_json()), sleep)
    elif (current.application, current.model_uuid) != (owner.application, owner.model_uuid):
        raise PathOwnedError(
            f"the path holds the backups of {current.describe()}; this application may "
            "restore them but not write there: give it its own bucket or path"
        )


# -- backup --------------------------------------------------------------------------------


@dataclass
class _PendingFile:
    """A file whose blocks are read and maybe not all stored yet (None until stored)."""

    path: str
    size: int = 0
    sha256: str = ""
    blocks: list[Block | None] = field(default_factory=list)

    def entry(self) -> FileEntry:
        """The manifest's entry, once every block is stored."""
        blocks = tuple(b for b in self.blocks if b is not None)
        assert len(blocks) == len(self.blocks), f"{self.path} has blocks not stored"
        return FileEntry(self.path, self.size, self.sha256, blocks)


def _source_blocks(data_dir: Path, source: layout.SourceFile) -> Iterator[bytes]:
    """The file's bytes as stored, block by block (see `layout.SourceFile`)."""
    if source.content is not None:
        for offset in range(0, len(source.content), BLOCK_SIZE):
            yield source.content[offset : offset + BLOCK_SIZE]
        return
    produced = 0
    with (data_dir / source.path).open("rb") as f:
        while source.read_limit is None or produced < source.read_limit:
            want = (
                BLOCK_SIZE
                if source.read_limit is None
                else min(BLOCK_SIZE, source.read_limit - produced)
            )
            data = f.read(want)
            if not data:
                break
            produced += len(data)
            yield data
    if source.read_limit is not None and produced < source.read_limit:
        raise layout.BackupSourceError(f"{source.path} ended before the writer checkpoint")
    # The active chunk's tail past the writer: zeros, aligned so later blocks stay the same.
    while produced < source.size:
        size = min(BLOCK_SIZE - produced % BLOCK_SIZE, source.size - produced)
        produced += size
        yield _ZEROS[:size]


_InFlight = tuple[_PendingFile, int, int, Future[tuple[Block, int]]]


class _Uploader:
    """Stores blocks on a few threads, keeping at most `UPLOAD_IN_FLIGHT` in memory.

    A stored block's future is dropped as soon as its `Block` is in its file's list, so
    what a backup holds grows with its manifest only, not with futures and their locks.
    """

    def __init__(self, store: ObjectStore, sleep: Sleep, progress: ProgressLines):
        self._store = store
        self._sleep = sleep
        self._progress = progress
        self._pool = ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="backup")
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self.uploaded = 0

    def submit(self, data: bytes, pending: _PendingFile) -> None:
        while len(self._in_flight) >= UPLOAD_IN_FLIGHT:
            self._settle(self._in_flight.popleft())
        future = self._pool.submit(put_block, self._store, data, self._sleep)
        pending.blocks.append(None)
        self._in_flight.append((pending, len(pending.blocks) - 1, len(data), future))

    def _settle(self, item: _InFlight) -> None:
        pending, index, size, future = item
        block, uploaded = future.result()
        pending.blocks[index] = block
        self.uploaded += uploaded
        self._progress.advance(size, uploaded)

    def drain(self) -> None:
        while self._in_flight:
            self._settle(self._in_flight.popleft())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _estimate(data_dir: Path) -> int:
    """Roughly what the backup reads, for progress lines."""
    total = 0
    for path in [*data_dir.glob("chunk-*"), *data_dir.glob("index/**/*")]:
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
    return total


def create_backup(
    store: ObjectStore,
    data_dir: Path,
    info: SourceInfo,
    progress: Progress,
    *,
    now: Callable[[], datetime.datetime] = _utcnow,
    sleep: Sleep = time.sleep,
) -> BackupResult:
    """Back up the node's data directory into ``store``; see the module docstring.

    Raises `StorageError` (no manifest written), `PathOwnedError` or
    `layout.BackupSourceError`.
    """
    clock = time.monotonic()
    map_blocks_outside_the_heap()
    claim_path(store, Owner(info.application, info.model, info.model_uuid), sleep)
    started = now()
    backup_id = backup_id_for(started)
    marker = Started(backup_id, info, format_time(started))
    with_retries(lambda: store.put_bytes(started_key(backup_id), marker.to_json()), sleep)
    with _Heartbeat(store, backup_id, now):
        manifest = _store_files(store, data_dir, marker, progress, now, sleep)
    seconds = time.monotonic() - clock
    progress(
        f"backup {backup_id}: complete, {len(manifest.files)} files, "
        f"{human(manifest.bytes_total)}, {human(manifest.bytes_uploaded)} uploaded "
        f"in {seconds:.1f} s"
    )
    return BackupResult(
        backup_id=backup_id,
        files=len(manifest.files),
        bytes_total=manifest.bytes_total,
        bytes_uploaded=manifest.bytes_uploaded,
        seconds=seconds,
        writer_checkpoint=manifest.writer_checkpoint,
        chaser_checkpoint=manifest.chaser_checkpoint,
    )


def _store_files(
    store: ObjectStore,
    data_dir: Path,
    marker: Started,
    progress: Progress,
    now: Callable[[], datetime.datetime],
    sleep: Sleep,
) -> Manifest:
    """Upload what the walk finds, then the manifest; return the manifest."""
    backup_id = marker.backup_id
    lines = ProgressLines(progress, f"backup {backup_id}", _estimate(data_dir))
    progress(f"backup {backup_id}: started")
    walk = layout.BackupWalk(data_dir)
    pending: dict[str, _PendingFile] = {}
    uploader = _Uploader(store, sleep, lines)
    try:
        for source in walk.files():
            read = _read_file(data_dir, source, uploader, walk)
            if read is not None:
                pending[source.path] = read
        uploader.drain()
    finally:
        uploader.close()

    files = tuple(p.entry() for p in pending.values() if p.path not in walk.superseded)
    manifest = Manifest(
        backup_id=backup_id,
        source=marker.source,
        started_at=marker.started_at,
        finished_at=max(format_time(now()), marker.started_at),
        writer_checkpoint=walk.checkpoints[layout.WRITER_CHECKPOINT],
        chaser_checkpoint=walk.checkpoints[layout.CHASER_CHECKPOINT],
        files=files,
        bytes_total=sum(entry.size for entry in files),
        bytes_uploaded=uploader.uploaded,
    )
    with_retries(lambda: store.put_bytes(manifest_key(backup_id), manifest.to_json()), sleep)
    return manifest


class _Heartbeat:
    """Renews a running backup's alive object from a thread; removes it when the backup ends.

    Best effort: a renewal that fails only makes the backup look dead sooner (the upload's
    own errors decide the backup's fate), and an alive object left behind by a killed
    process stops counting after `ALIVE_WINDOW`.
    """

    def __init__(self, store: ObjectStore, backup_id: str, now: Callable[[], datetime.datetime]):
        self._store, self._key, self._now = store, alive_key(backup_id), now
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-alive", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join()
        with contextlib.suppress(StorageError):  # it stops counting after ALIVE_WINDOW
            self._store.delete(self._key)

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            self._beat()

    def _beat(self) -> None:
        with contextlib.suppress(StorageError):
            self._store.put_bytes(self._key, format_time(self._now()).encode())


def _read_file(
    data_dir: Path, source: layout.SourceFile, uploader: _Uploader, walk: layout.BackupWalk
) -> _PendingFile | None:
    """Read one file into the uploader; None when a file allowed to vanish had."""
    pending = _PendingFile(source.path)
    digest = hashlib.sha256()
    try:
        for data in _source_blocks(data_dir, source):
            digest.update(data)
            pending.size += len(data)
            uploader.submit(data, pending)
    except FileNotFoundError:
        if not source.may_vanish or pending.blocks:
            raise layout.BackupSourceError(f"{source.path} vanished while being read") from None
        walk.vanished(source.path)
        return None
    pending.sha256 = digest.hexdigest()
    return pending


# -- listing -------------------------------------------------------------------------------


_MARKER_NAMES = ("manifest.json", "started", "alive")


def list_backups(
    store: ObjectStore, *, now: Callable[[], datetime.datetime] = _utcnow
) -> list[BackupSummary]:
    """Every backup under the path, whoever wrote it, newest first."""
    markers: dict[str, set[str]] = {}
    for stored in store.list(BACKUPS_PREFIX):
        parts = stored.key[len(BACKUPS_PREFIX) :].split("/")
        if len(parts) == 2 and is_backup_id(parts[0]) and parts[1] in _MARKER_NAMES:
            markers.setdefault(parts[0], set()).add(parts[1])
    moment = now()
    return [
        _summary(store, backup_id, markers[backup_id], moment)
        for backup_id in sorted(markers, reverse=True)
        if markers[backup_id] != {"alive"}  # a renewal that raced the backup's end
    ]


def running_backups(
    store: ObjectStore,
    application: str,
    model_uuid: str,
    *,
    now: Callable[[], datetime.datetime] = _utcnow,
) -> list[BackupSummary]:
    """The backups of ``application`` (in its model) running now, under this path."""
    return [
        summary
        for summary in list_backups(store, now=now)
        if summary.state == "running"
        and summary.application == application
        and summary.model_uuid == model_uuid
    ]


def _seen_alive(store: ObjectStore, backup_id: str, moment: datetime.datetime) -> bool:
    try:
        seen = parse_time(store.get_bytes(alive_key(backup_id), MARKER_LIMIT))
    except StorageError:
        return False  # gone since the listing: the backup ended
    return seen is not None and abs(moment - seen) <= ALIVE_WINDOW


def _summary(
    store: ObjectStore, backup_id: str, names: set[str], moment: datetime.datetime
) -> BackupSummary:
    try:
        if "manifest.json" in names:
            manifest = parse_manifest(store.get_bytes(manifest_key(backup_id), MANIFEST_LIMIT))
            if manifest.backup_id != backup_id:
                raise ManifestError(f"the manifest is that of backup {manifest.backup_id}")
            source = manifest.source
            return BackupSummary(
                backup_id=backup_id,
                state="complete",
                started_at=manifest.started_at,
                finished_at=manifest.finished_at,
                application=source.application,
                model=source.model,
                model_uuid=source.model_uuid,
                unit=source.unit,
                kurrentdb_version=source.kurrentdb_version,
                size=manifest.bytes_total,
                new_bytes=manifest.bytes_uploaded,
            )
        started = parse_started(store.get_bytes(started_key(backup_id), MARKER_LIMIT))
        running = "alive" in names and _seen_alive(store, backup_id, moment)
        return BackupSummary(
            backup_id=backup_id,
            state="running" if running else "incomplete",
            started_at=started.started_at,
            application=started.source.application,
            model=started.source.model,
            model_uuid=started.source.model_uuid,
            unit=started.source.unit,
            kurrentdb_version=started.source.kurrentdb_version,
        )
    except ManifestError as e:
        return BackupSummary(backup_id=backup_id, state="unreadable", reason=str(e))
    except StorageError as e:
        return BackupSummary(
            backup_id=backup_id, state="unreadable", reason=f"storage error {e.code}"
        )


def load_manifest(store: ObjectStore, backup_id: str) -> Manifest:
    """The manifest of the complete backup ``backup_id``.

    Raises `BackupNotFoundError` when there is none, `ManifestError` when it is malformed.
    """
    if not is_backup_id(backup_id):
        raise BackupNotFoundError("a backup id looks like 20261231T235959Z-0a1b2c")
    key = manifest_key(backup_id)
    if store.size_of(key) is None:
        raise BackupNotFoundError(f"no complete backup {backup_id} under this path")
    manifest = parse_manifest(store.get_bytes(key, MANIFEST_LIMIT))
    if manifest.backup_id != backup_id:
        raise ManifestError(f"the manifest of {backup_id} names backup {manifest.backup_id}")
    return manifest


# -- download and verify -------------------------------------------------------------------


def download_and_verify(
    store: ObjectStore,
    manifest: Manifest,
    staging_dir: Path,
    progress: Progress,
    *,
    sleep: Sleep = time.sleep,
) -> DownloadResult:
    """Write every file of ``manifest`` under ``staging_dir``, each checked as it arrives.

    ``staging_dir`` must be absent or empty. On any failure it is removed again and
    `VerificationError` names the first bad file (a `StorageError` that is not about one
    object, such as lost credentials, is raised as it is).
    """
    clock = time.monotonic()
    map_blocks_outside_the_heap()
    if staging_dir.exists() and any(staging_dir.iterdir()):
        raise VerificationError(str(staging_dir), "the staging directory is not empty")
    staging_dir.mkdir(parents=True, exist_ok=True)
    lines = ProgressLines(progress, f"download {manifest.backup_id}", manifest.bytes_total)
    pool = ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="restore")
    try:
        for entry in manifest.files:
            _download_file(store, entry, staging_dir, pool, lines, sleep)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    pool.shutdown(wait=True)
    seconds = time.monotonic() - clock
    progress(
        f"download {manifest.backup_id}: {len(manifest.files)} files verified, "
        f"{human(manifest.bytes_total)} in {seconds:.1f} s"
    )
    return DownloadResult(len(manifest.files), manifest.bytes_total, seconds)


_MISSING_CODES = {"NoSuchKey", "NotFound", "404", "BlobNotFound", "ResourceNotFound"}


def _place_block(store: ObjectStore, block: Block, fd: int, offset: int, sleep: Sleep) -> bytes:
    """Fetch a block and write it at its offset; return its bytes for the file's hash.

    Zeros are not written: they stay sparse, as the preallocated chunk was.
    """
    data = fetch_block(store, block, sleep, check_digest=False)
    if data != _ZEROS[: len(data)]:
        os.pwrite(fd, data, offset)
    return data


def _download_file(
    store: ObjectStore,
    entry: FileEntry,
    staging_dir: Path,
    pool: ThreadPoolExecutor,
    lines: ProgressLines,
    sleep: Sleep,
) -> None:
    """Write one file from its blocks, on the pool's threads; check its size and sha256.

    Every block is checked for its size as it arrives, and the file's sha256, computed in
    order over what was written, covers every byte: one hash per byte, not two.
    """
    target = staging_dir.joinpath(*entry.path.split("/"))
    if staging_dir.resolve() not in target.resolve().parents:
        raise VerificationError(entry.path, "the path leaves the staging directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    in_flight: collections.deque[tuple[Block, Future[bytes]]] = collections.deque()
    blocks = iter(entry.blocks)
    offset = 0
    with target.open("wb") as f:
        fd = f.fileno()
        while True:
            while len(in_flight) < DOWNLOAD_IN_FLIGHT:
                block = next(blocks, None)
                if block is None:
                    break
                in_flight.append(
                    (block, pool.submit(_place_block, store, block, fd, offset, sleep))
                )
                offset += block.size
            if not in_flight:
                break
            block, future = in_flight.popleft()
            try:
                data = future.result()
            except BlockError as e:
                raise VerificationError(entry.path, str(e)) from None
            except StorageError as e:
                if e.code in _MISSING_CODES:
                    raise VerificationError(entry.path, f"object {block.key} is missing") from None
                if not e.transient:
                    raise VerificationError(
                        entry.path, f"object {block.key} could not be read ({e.code})"
                    ) from None
                raise
            digest.update(data)
            lines.advance(len(data))
        f.truncate(entry.size)
    if digest.hexdigest() != entry.sha256:
        raise VerificationError(entry.path, "the file does not match its sha256")
