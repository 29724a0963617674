"""A synthetic KurrentDB data directory, shaped like v26.1.0 writes it, for backup tests.

What it copies from the server (v26.1.0 source):

- Chunks are named ``chunk-NNNNNN.VVVVVV`` (index, version) in the database directory
  (`TransactionLog/FileNamingStrategy/VersionedPatternFileNamingStrategy.cs`, prefix
  ``chunk-`` from `ClusterVNode.cs`). A chunk file is a 128-byte header, the data, the
  position map and a 128-byte footer (`TransactionLog/Chunks/TFConsts.cs`,
  `ChunkHeader.cs`, `ChunkFooter.cs`). The header starts with the file type (2 = chunk),
  the minimum compatible version, then little-endian ChunkSize, ChunkStartNumber,
  ChunkEndNumber, IsScavenged (int32), the chunk id (16 bytes), version and transform.
  The footer's first byte holds the flags (1 = completed, 2 = 12-byte map), then the
  physical and logical data sizes and the map size; its last 16 bytes are an MD5.
- A new chunk is preallocated to its full aligned size, header + ChunkSize + footer
  rounded up to 4096 bytes (`TFChunk.cs` ``CreateWriterWorkItemForNewChunk``,
  ``SetLength``; ``GetAlignedSize``), so the active chunk is mostly zeros; completing it
  shrinks the file to what it holds (``ResizeFileStream``).
- Checkpoints are 8-byte little-endian int64 files (`Checkpoint/FileCheckpoint.cs`):
  ``writer.chk``, ``chaser.chk``, ``epoch.chk``, ``proposal.chk``, ``truncate.chk`` in the
  database directory, the last three initialised to -1 (`ClusterVNode.cs` l.422-441).
- The index directory is ``<db>/index`` (`ESConsts.DefaultIndexDirectoryName`): the text
  file ``indexmap`` (MD5 line, version 2, ``prepare/commit`` checkpoint, max level, then
  ``level,position,file`` lines: `Index/IndexMap.cs` l.325-346), GUID-named PTables whose
  first byte is the file type 1 (`Index/FileType.cs`), each with ``<guid>.bloomfilter``
  (`Index/PTable.cs` l.73); ``stream-existence/streamExistenceFilter.{chk,dat}``
  (`ClusterVNode.cs` l.419-427); ``scavenging/scavenging.db``, an SQLite database
  (`ClusterVNode.cs` l.1288-1290).
- The secondary index is DuckDB's ``kurrent.ddb`` (+ ``kurrent.ddb.wal``) in the database
  directory itself (`DuckDB/DuckDBConnectionPoolLifetime.cs` l.36).

Bulk bytes come from an AES-CTR keystream keyed by the seed: incompressible, deterministic
and fast (about 700 MB/s here), so a 2 GiB directory takes a few seconds. Zeros are never
written: files are extended with ``truncate``, which leaves them sparse.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HEADER_SIZE = 128
FOOTER_SIZE = 128
ALIGNMENT = 4096
CHUNK_FILE_TYPE = 2
PTABLE_FILE_TYPE = 1
CHUNK_VERSION = 4  # ChunkVersions.Transformed, TFChunk.cs l.43-50
_WRITE_PIECE = 8 << 20

DB_CHECKPOINTS = ("writer.chk", "chaser.chk", "epoch.chk", "proposal.chk", "truncate.chk")


def aligned(size: int) -> int:
    """``TFChunk.GetAlignedSize``: rounded up to 4096 bytes."""
    return -(-size // ALIGNMENT) * ALIGNMENT


def chunk_name(index: int, version: int = 0) -> str:
    """The file name KurrentDB gives chunk ``index`` at ``version``."""
    return f"chunk-{index:06d}.{version:06d}"


class _Noise:
    """Deterministic incompressible bytes: the AES-CTR keystream of a seed and a label."""

    def __init__(self, seed: int, label: str):
        key = hashlib.sha256(f"{seed}:{label}".encode()).digest()[:16]
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def take(self, size: int) -> bytes:
        return self._encryptor.update(bytes(size))


def _write_noise(path: Path, offset: int, size: int, noise: _Noise) -> None:
    with path.open("r+b" if path.exists() else "wb") as f:
        f.seek(offset)
        while size > 0:
            piece = min(size, _WRITE_PIECE)
            f.write(noise.take(piece))
            size -= piece


def _chunk_header(chunk_size: int, index: int, chunk_id: bytes) -> bytes:
    header = struct.pack(
        "<BBiiii16sBB",
        CHUNK_FILE_TYPE,
        3,  # MinCompatibleVersion: Aligned, for the identity transform
        chunk_size,
        index,
        index,
        0,
        chunk_id,
        CHUNK_VERSION,
        0,
    )
    return header.ljust(HEADER_SIZE, b"\0")


def _chunk_footer(physical_size: int, md5: bytes) -> bytes:
    body = struct.pack("<Biqi", 0b11, physical_size, physical_size, 0)
    return body.ljust(FOOTER_SIZE - 16, b"\0") + md5


def write_checkpoint(path: Path, value: int) -> None:
    """Write an 8-byte little-endian checkpoint, as `FileCheckpoint.Flush` does."""
    path.write_bytes(struct.pack("<q", value))


def read_checkpoint(path: Path) -> int:
    """Read a checkpoint file written by `write_checkpoint` (or by KurrentDB)."""
    return int(struct.unpack("<q", path.read_bytes()[:8])[0])


@dataclass(frozen=True)
class DataDirSpec:
    """What to generate.

    ``total_size`` is split into ``chunks`` chunks (the last one active when ``active``)
    plus about 5% of index files; ``chunk_size`` is the chunk's data size (KurrentDB's
    ChunkSize, 256 MiB by default), derived from the total when not given.
    """

    total_size: int
    chunks: int = 4
    active: bool = True
    seed: int = 0
    ptables: int = 3
    active_fill: float = 0.5
    chunk_size: int | None = None

    def resolved_chunk_size(self) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        log_share = self.total_size * 0.95
        full_chunks = self.chunks - (1 - self.active_fill if self.active else 0)
        return max(ALIGNMENT, int(log_share / max(full_chunks, 0.5)) // ALIGNMENT * ALIGNMENT)


class SyntheticDataDir:
    """A data directory on disk that can grow the way a running node's does."""

    def __init__(self, root: Path, spec: DataDirSpec):
        self.root = root
        self.spec = spec
        self.chunk_size = spec.resolved_chunk_size()
        self._labels = 0
        indexmap = root / "index" / "indexmap"
        self._tables: list[str] = self.ptable_names() if indexmap.exists() else []

    # -- building ----------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, spec: DataDirSpec) -> SyntheticDataDir:
        """Generate the whole directory under ``root`` (created if needed)."""
        root.mkdir(parents=True, exist_ok=True)
        data_dir = cls(root, spec)
        completed = spec.chunks - 1 if spec.active else spec.chunks
        for index in range(completed):
            data_dir._write_completed_chunk(index, data_dir.chunk_size)
        writer = completed * data_dir.chunk_size
        if spec.active:
            filled = int(data_dir.chunk_size * spec.active_fill)
            data_dir._start_active_chunk(completed)
            data_dir._fill_active(completed, 0, filled)
            writer += filled
        data_dir._write_db_checkpoints(writer)
        data_dir._write_index(writer)
        data_dir._write_duckdb()
        return data_dir

    def _noise(self, what: str) -> _Noise:
        self._labels += 1
        return _Noise(self.spec.seed, f"{what}:{self._labels}:{self._generation()}")

    def _generation(self) -> int:
        writer = self.root / "writer.chk"
        return read_checkpoint(writer) if writer.exists() else -1

    def _chunk_id(self, index: int) -> bytes:
        return hashlib.md5(f"{self.spec.seed}:{index}".encode(), usedforsecurity=False).digest()

    def _preallocated_size(self) -> int:
        return aligned(HEADER_SIZE + self.chunk_size + FOOTER_SIZE)

    def _write_completed_chunk(self, index: int, physical_size: int) -> None:
        path = self.root / chunk_name(index)
        path.write_bytes(_chunk_header(self.chunk_size, index, self._chunk_id(index)))
        _write_noise(path, HEADER_SIZE, physical_size, self._noise(f"chunk{index}"))
        self._complete(path, physical_size)

    def _complete(self, path: Path, physical_size: int) -> None:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("r+b") as f:
            remaining = HEADER_SIZE + physical_size
            while remaining > 0:
                piece = f.read(min(remaining, _WRITE_PIECE))
                md5.update(piece)
                remaining -= len(piece)
            footer = _chunk_footer(physical_size, md5.digest())
            end = aligned(HEADER_SIZE + physical_size + FOOTER_SIZE)
            f.truncate(end)
            f.seek(end - FOOTER_SIZE)
            f.write(footer)

    def _start_active_chunk(self, index: int) -> None:
        path = self.root / chunk_name(index)
        with path.open("wb") as f:
            f.write(_chunk_header(self.chunk_size, index, self._chunk_id(index)))
            f.truncate(self._preallocated_size())

    def _fill_active(self, index: int, start: int, size: int) -> None:
        path = self.root / chunk_name(index)
        _write_noise(path, HEADER_SIZE + start, size, self._noise(f"active{index}"))

    def _write_db_checkpoints(self, writer: int) -> None:
        write_checkpoint(self.root / "writer.chk", writer)
        write_checkpoint(self.root / "chaser.chk", writer)
        write_checkpoint(self.root / "epoch.chk", max(0, writer - 4096) if writer else -1)
        write_checkpoint(self.root / "proposal.chk", -1)
        write_checkpoint(self.root / "truncate.chk", -1)

    def _write_index(self, writer: int) -> None:
        index = self.root / "index"
        index.mkdir(exist_ok=True)
        table_size = max(4096, int(self.spec.total_size * 0.04) // max(self.spec.ptables, 1))
        for _ in range(self.spec.ptables):
            self._write_ptable(table_size)
        self._write_indexmap(writer)
        existence = index / "stream-existence"
        existence.mkdir(exist_ok=True)
        write_checkpoint(existence / "streamExistenceFilter.chk", writer)
        filter_size = max(4096, int(self.spec.total_size * 0.005))
        _write_noise(existence / "streamExistenceFilter.dat", 0, filter_size, self._noise("sef"))
        scavenging = index / "scavenging"
        scavenging.mkdir(exist_ok=True)
        with sqlite3.connect(scavenging / "scavenging.db") as db:
            db.execute("CREATE TABLE IF NOT EXISTS ScavengeCheckpoint (key INTEGER, value TEXT)")
            db.execute("INSERT INTO ScavengeCheckpoint VALUES (0, 'Done')")
        db.close()

    def ptable_names(self) -> list[str]:
        """The PTables the indexmap names, in its order."""
        lines = (self.root / "index" / "indexmap").read_text().splitlines()[4:]
        return [line.split(",")[2] for line in lines if line.count(",") == 2]

    def _write_ptable(self, size: int) -> str:
        name = str(uuid.UUID(bytes=self._noise("guid").take(16), version=4))
        path = self.root / "index" / name
        path.write_bytes(bytes([PTABLE_FILE_TYPE, 4]))
        _write_noise(path, 2, size - 2, self._noise("ptable"))
        bloom = path.with_name(f"{name}.bloomfilter")
        _write_noise(bloom, 0, max(4096, size // 64), self._noise("bloom"))
        self._tables.append(name)
        return name

    def _write_indexmap(self, writer: int) -> None:
        # The index trails the chaser: a node refuses an indexmap whose commit checkpoint is
        # at or past it (Index/TableIndex.cs l.168-172).
        indexed = writer - 1 if writer > 0 else -1
        body = "2\n" + f"{indexed}/{indexed}\n" + "4\n"
        body += "".join(f"0,{position},{name}\n" for position, name in enumerate(self._tables))
        md5 = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest().upper()
        (self.root / "index" / "indexmap").write_text(md5 + "\n" + body)

    def _write_duckdb(self) -> None:
        size = max(4096, int(self.spec.total_size * 0.005))
        _write_noise(self.root / "kurrent.ddb", 0, size, self._noise("ddb"))
        _write_noise(self.root / "kurrent.ddb.wal", 0, 4096, self._noise("wal"))

    # -- growing -----------------------------------------------------------------------

    @property
    def writer(self) -> int:
        """The writer checkpoint's value."""
        return read_checkpoint(self.root / "writer.chk")

    def active_index(self) -> int:
        """The number of the chunk the writer checkpoint points into."""
        return self.writer // self.chunk_size

    def grow_active(self, size: int) -> None:
        """Append ``size`` bytes of records to the active chunk and move the checkpoints.

        Completes the chunk and starts the next one when ``size`` reaches past its end.
        """
        while size > 0:
            index = self.active_index()
            used = self.writer - index * self.chunk_size
            path = self.root / chunk_name(index)
            if not path.exists():
                self._start_active_chunk(index)
            piece = min(size, self.chunk_size - used)
            self._fill_active(index, used, piece)
            size -= piece
            if used + piece == self.chunk_size:
                self._complete(path, self.chunk_size)
            self._write_db_checkpoints(self.writer + piece)
        self._write_indexmap(self.writer)

    def append_chunk(self) -> None:
        """Fill the active chunk up, complete it, and start a new, empty active chunk."""
        used = self.writer - self.active_index() * self.chunk_size
        self.grow_active(self.chunk_size - used)
        self._start_active_chunk(self.active_index())

    def add_ptable(self, size: int) -> str:
        """Write one more PTable (and its bloom filter) and list it in the indexmap."""
        name = self._write_ptable(size)
        self._write_indexmap(self.writer)
        return name

    def merge_ptable(self, old: str, size: int) -> str:
        """Replace table ``old`` by a new one, as an index merge does: new table, new
        indexmap, then the old files deleted."""
        name = self._write_ptable(size)
        self._tables.remove(old)
        self._write_indexmap(self.writer)
        (self.root / "index" / old).unlink()
        (self.root / "index" / f"{old}.bloomfilter").unlink()
        return name
