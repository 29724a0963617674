"""Which files of a KurrentDB data directory a backup takes, in which order, and why.

KurrentDB has no backup command: the documented online backup is a file copy in a fixed
order (`docs/server/operations/backup.md`, "Simple full backup" and "Differential
backup"), which this module walks, reading nothing but plain files:

1. index checkpoints, ``index/**/*.chk`` (only ``stream-existence/streamExistenceFilter.chk``
   in v26.1.0);
2. the other index files: ``index/indexmap`` and the PTables it names with their
   ``.bloomfilter`` files, then ``stream-existence/streamExistenceFilter.dat`` and
   ``scavenging/scavenging.db``;
3. the database checkpoints ``chaser.chk``, ``epoch.chk``, ``writer.chk``, ``proposal.chk``,
   in the order of backup.md's differential procedure;
4. the chunks ``chunk-NNNNNN.VVVVVV``.

Why this order makes a consistent copy of a running node: every later step only covers
data an earlier step already points at or before.

- A checkpoint is read (8 bytes, `TransactionLog/Checkpoint/FileCheckpoint.cs`) into
  memory once: the value recorded in the manifest is exactly the stored bytes.
- The index is read before the chaser checkpoint, and both only grow, so the stored
  indexmap's commit checkpoint stays behind the stored chaser; a node refuses an indexmap
  whose CommitCheckpoint is at or past the chaser and rebuilds its whole index
  (`Index/TableIndex.cs` l.168-172).
- The indexmap is replaced atomically (written to a temp file and moved,
  `Index/IndexMap.cs` l.325-353) and PTables are immutable, but a merge may delete a table
  the indexmap we hold still names. As backup.md prescribes, the indexmap is read again
  after its tables were copied and the index step repeats until it did not change; the
  stored indexmap is that last, stable snapshot, and only the tables it names are kept: at
  start a node deletes every other file in ``index/`` (`Index/TableIndex.cs` l.196-207).
- ``chaser.chk`` is read before ``writer.chk``, so the stored chaser never exceeds the
  stored writer.
- Chunks are listed only after ``writer.chk`` was read, and only those the writer covers
  are taken: a node refuses to start on a chunk past the writer's chunk
  (``ExtraneousFileFoundException``, `TransactionLog/Chunks/TFChunkDb.cs` l.290-316), and
  removes older versions of a chunk it has a newer one of (l.318-331), so only the newest
  version of each chunk is taken, and none a merged (scavenged) chunk covers.
- A completed chunk is never rewritten (scavenge writes a new version instead), so it is
  read whole. The chunk the writer points into is the active one: preallocated to its full
  size (`TFChunk.cs` l.648-665) and written as records arrive. It is read only up to the
  writer checkpoint we stored, and stored as zeros from there to the end of the file.
  Reading it whole would take records the stored checkpoints do not cover and that the
  restored node would overwrite anyway (it resumes writing at the writer checkpoint,
  `TFChunkDb.cs` l.221-231); bounding it makes the stored copy exactly what the checkpoints
  describe, and its zero tail costs nothing to store. Records up to the writer are on disk
  before the checkpoint moves: the writer flushes the chunk, then its checkpoint
  (`TransactionLog/Chunks/TFChunkWriter.cs` l.170-177).

What is not backed up, and why:

- ``truncate.chk``: a restore overwrites it with a copy of ``chaser.chk`` (backup.md,
  Restore step 3). On start a node truncates the log to it when it is not -1
  (`ClusterVNode.cs` l.1639-1647), and refuses to when the writer is more than
  ``MaxTruncation`` (256 MiB by default, -1 = no limit) ahead of it
  (`TransactionLog/Chunks/TFChunkDbTruncator.cs` l.33-41): the manifest records both
  checkpoints so the restore can check the gap and raise the limit for that one start.
- The secondary-index DuckDB files ``kurrent.ddb`` and ``kurrent.ddb.wal``, in the
  database directory (`DuckDB/DuckDBConnectionPoolLifetime.cs` l.36). They are changed in
  place, so an online copy is not consistent (backup.md; `features/indexes/secondary.md`,
  "Backup and restore"). They are derived data: when the file is absent, DuckDB creates it
  and the schema setup creates empty tables (`SecondaryIndexing/Storage/1_Schema.sql`);
  `DefaultIndexProcessor.ReadLastIndexedRecord` then finds no row and returns
  ``TFPos.Invalid`` (`SecondaryIndexing/Indexes/Default/DefaultIndexProcessor.cs`
  l.62, l.136-141), and `DefaultIndexSubscription.Subscribe` starts reading ``$all`` from
  ``Position.Start``, logging "Rebuilding secondary index from scratch"
  (`SecondaryIndexing/Subscriptions/DefaultIndexSubscription.cs` l.35-42); user indexes
  resume the same way from their own last position (`Subscriptions/UserIndexSubscription.cs`
  l.42). So a restored node rebuilds the secondary indexes from the log in the background
  while it serves; only secondary-index reads lag until the rebuild catches up.
  One caveat found in the same file: the schema registry plugin (enabled by default)
  projects schema events into DuckDB starting from ``SubscriptionInitialPosition.Latest``
  (`SchemaRegistry/KurrentDB.SchemaRegistry/Planes/Projection/DuckDBProjectorService.cs`
  l.20-22); where that projector keeps its checkpoint lives in the Kurrent.Surge package,
  not in this source tree, so whether schemas registered before the backup reappear in its
  queries after a restore is not verified here.
- Anything else in the directory (temporary ``*.tmp`` files, unknown files).
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK_HEADER_SIZE = 128  # TransactionLog/Chunks/TFConsts.cs
CHUNK_FOOTER_SIZE = 128
_CHUNK_FILE_TYPE = 2  # Index/FileType.cs
_FOOTER_COMPLETED = 1  # ChunkFooter.cs: flags bit 0
_CHUNK_NAME = re.compile(r"^chunk-(\d{6})\.(\d{6})$")  # VersionedPatternFileNamingStrategy.cs
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

INDEX_DIR = "index"
INDEXMAP = f"{INDEX_DIR}/indexmap"
STREAM_EXISTENCE_DATA = f"{INDEX_DIR}/stream-existence/streamExistenceFilter.dat"
SCAVENGE_DB = f"{INDEX_DIR}/scavenging/scavenging.db"
DB_CHECKPOINTS = ("chaser.chk", "epoch.chk", "writer.chk", "proposal.chk")
TRUNCATE_CHECKPOINT = "truncate.chk"
CHASER_CHECKPOINT = "chaser.chk"
WRITER_CHECKPOINT = "writer.chk"
DERIVED_FILES = ("kurrent.ddb", "kurrent.ddb.wal")
"""Rebuilt by the node from the log after a restore: never backed up (see above)."""

_INDEX_ATTEMPTS = 10
_SMALL_FILE_LIMIT = 16 << 20  # an indexmap of 100,000 tables is about 6 MB


class BackupSourceError(Exception):
    """The data directory is not one a backup can be taken from; the message says why."""


class Phase(enum.Enum):
    """The documented steps, in their order."""

    INDEX_CHECKPOINTS = "index checkpoints"
    INDEX_FILES = "index files"
    DB_CHECKPOINTS = "database checkpoints"
    CHUNKS = "chunks"


@dataclass(frozen=True)
class SourceFile:
    """One file to back up.

    ``content`` holds the bytes of a small file read once (checkpoints, the indexmap): those
    are the bytes stored. Otherwise the file is read from disk: its first ``read_limit``
    bytes (all when None), then zeros up to ``size``.
    """

    path: str
    phase: Phase
    size: int
    content: bytes | None = None
    read_limit: int | None = None
    may_vanish: bool = False


@dataclass(frozen=True)
class ChunkInfo:
    """What a chunk's name and header say about it."""

    name: str
    start: int
    end: int
    version: int
    chunk_size: int
    completed: bool
    size: int


def decode_checkpoint(data: bytes) -> int:
    """A checkpoint file's value: a little-endian int64 (`FileCheckpoint.cs`)."""
    if len(data) != 8:
        raise BackupSourceError(f"a checkpoint holds 8 bytes, this one {len(data)}")
    return int(struct.unpack("<q", data)[0])


def indexmap_tables(data: bytes) -> list[str]:
    """The PTable names an indexmap lists (`IndexMap.cs` l.329-335: four lines, then tables)."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError as e:
        raise BackupSourceError("index/indexmap is not text") from e
    tables = []
    for line in lines[4:]:
        parts = line.split(",")
        if len(parts) != 3 or not _GUID.match(parts[2]):
            raise BackupSourceError(f"index/indexmap has a line that names no table: {line[:80]!r}")
        tables.append(parts[2])
    return tables


def read_chunk(path: Path) -> ChunkInfo | None:
    """Name, header and footer of a chunk file; None when the name is not a chunk's."""
    match = _CHUNK_NAME.match(path.name)
    if match is None:
        return None
    with path.open("rb") as f:
        header = f.read(CHUNK_HEADER_SIZE)
        size = f.seek(0, 2)
        if size >= CHUNK_HEADER_SIZE + CHUNK_FOOTER_SIZE:
            f.seek(size - CHUNK_FOOTER_SIZE)
            flags = f.read(1)[0]
        else:
            flags = 0
    if len(header) < CHUNK_HEADER_SIZE or header[0] != _CHUNK_FILE_TYPE:
        raise BackupSourceError(f"{path.name} has no chunk header")
    chunk_size, start, end = struct.unpack_from("<iii", header, 2)
    if chunk_size <= 0 or not 0 <= start <= end:
        raise BackupSourceError(f"{path.name} has a malformed chunk header")
    return ChunkInfo(
        name=path.name,
        start=start,
        end=end,
        version=int(match.group(2)),
        chunk_size=chunk_size,
        completed=bool(flags & _FOOTER_COMPLETED),
        size=size,
    )


def _read_small(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(_SMALL_FILE_LIMIT + 1)
    if len(data) > _SMALL_FILE_LIMIT:
        raise BackupSourceError(f"{path.name} is larger than {_SMALL_FILE_LIMIT} bytes")
    return data


@dataclass
class BackupWalk:
    """The files of one backup, produced lazily in the documented order.

    Each step is listed only once the steps before it were consumed, so the caller must
    store each file before asking for the next. A table listed earlier and left out of
    the final indexmap ends up in ``superseded``: the caller drops it from the backup.
    The caller reports files that vanished before it could read them with `vanished`.
    """

    data_dir: Path
    checkpoints: dict[str, int] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)
    _vanished: set[str] = field(default_factory=set)

    def vanished(self, path: str) -> None:
        """``path`` (a `SourceFile.may_vanish` one) was gone when the caller opened it."""
        self._vanished.add(path)

    def files(self) -> Iterator[SourceFile]:
        """Every file to back up, in order."""
        if not (self.data_dir / WRITER_CHECKPOINT).is_file():
            raise BackupSourceError(f"{self.data_dir} holds no KurrentDB database (no writer.chk)")
        yield from self._index_checkpoints()
        yield from self._index_files()
        yield from self._db_checkpoints()
        yield from self._chunks()

    def _checkpoint_file(self, path: str, phase: Phase) -> SourceFile:
        data = _read_small(self.data_dir / path)
        self.checkpoints[path] = decode_checkpoint(data)
        return SourceFile(path, phase, len(data), content=data)

    def _index_checkpoints(self) -> Iterator[SourceFile]:
        index = self.data_dir / INDEX_DIR
        for path in sorted(index.glob("**/*.chk")) if index.is_dir() else []:
            if path.is_file():
                yield self._checkpoint_file(
                    path.relative_to(self.data_dir).as_posix(), Phase.INDEX_CHECKPOINTS
                )

    def _index_files(self) -> Iterator[SourceFile]:
        indexmap = self.data_dir / INDEXMAP
        if indexmap.is_file():
            yield from self._index_tables(indexmap)
        for path in (STREAM_EXISTENCE_DATA, SCAVENGE_DB):
            source = self.data_dir / path
            if source.is_file():
                yield SourceFile(path, Phase.INDEX_FILES, source.stat().st_size)

    def _index_tables(self, indexmap: Path) -> Iterator[SourceFile]:
        taken: set[str] = set()
        for _ in range(_INDEX_ATTEMPTS):
            snapshot = _read_small(indexmap)
            tables = indexmap_tables(snapshot)
            wanted = {
                f"{INDEX_DIR}/{name}{suffix}" for name in tables for suffix in ("", ".bloomfilter")
            }
            for path in sorted(wanted - taken):
                source = self.data_dir / path
                if not source.exists() and path.endswith(".bloomfilter"):
                    continue  # tables written with bloom filters off have none
                taken.add(path)
                yield SourceFile(path, Phase.INDEX_FILES, _size_or_zero(source), may_vanish=True)
            if _read_small_or_none(indexmap) == snapshot:
                if wanted & self._vanished:
                    gone = sorted(wanted & self._vanished)[0]
                    raise BackupSourceError(f"{gone} vanished while its indexmap still names it")
                self.superseded |= taken - wanted
                yield SourceFile(INDEXMAP, Phase.INDEX_FILES, len(snapshot), content=snapshot)
                return
        raise BackupSourceError(f"index/indexmap changed on each of {_INDEX_ATTEMPTS} reads")

    def _db_checkpoints(self) -> Iterator[SourceFile]:
        for name in DB_CHECKPOINTS:
            if (self.data_dir / name).is_file():
                yield self._checkpoint_file(name, Phase.DB_CHECKPOINTS)
        if CHASER_CHECKPOINT not in self.checkpoints:
            raise BackupSourceError(f"{self.data_dir} has no chaser.chk")

    def _chunks(self) -> Iterator[SourceFile]:
        writer = self.checkpoints[WRITER_CHECKPOINT]
        for chunk in select_chunks(self.data_dir, writer):
            start_position = chunk.start * chunk.chunk_size
            if chunk.completed:
                yield SourceFile(chunk.name, Phase.CHUNKS, chunk.size)
                continue
            written = min(writer, (chunk.end + 1) * chunk.chunk_size) - start_position
            yield SourceFile(
                chunk.name,
                Phase.CHUNKS,
                chunk.size,
                read_limit=min(chunk.size, CHUNK_HEADER_SIZE + written),
            )


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_small_or_none(path: Path) -> bytes | None:
    try:
        return _read_small(path)
    except FileNotFoundError:
        return None


def select_chunks(data_dir: Path, writer: int) -> list[ChunkInfo]:
    """The chunks a node with this writer checkpoint opens, in log order (see above)."""
    newest: dict[int, ChunkInfo] = {}
    chunk_size = None
    for path in data_dir.iterdir():
        chunk = read_chunk(path) if path.is_file() else None
        if chunk is None:
            continue
        if chunk_size is not None and chunk.chunk_size != chunk_size:
            raise BackupSourceError(
                f"{chunk.name} has chunk size {chunk.chunk_size}, others {chunk_size}"
            )
        chunk_size = chunk.chunk_size
        known = newest.get(chunk.start)
        if known is None or chunk.version > known.version:
            newest[chunk.start] = chunk
    if chunk_size is None:
        return []
    last = writer // chunk_size
    selected: list[ChunkInfo] = []
    covered_to = -1
    for start in sorted(newest):
        chunk = newest[start]
        if start > last:
            break
        if start <= covered_to:
            continue  # an old chunk a scavenged (merged) chunk replaces
        selected.append(chunk)
        covered_to = chunk.end
    expected = 0
    for chunk in selected:
        if chunk.start != expected:
            raise BackupSourceError(f"chunk {expected:06d} is missing before {chunk.name}")
        expected = chunk.end + 1
    if expected <= last and writer % chunk_size:
        raise BackupSourceError(f"chunk {last:06d}, which writer.chk points into, is missing")
    return selected
