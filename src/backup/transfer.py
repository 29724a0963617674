"""Moving blocks to and from a store: encoding, retries, bounded buffers, progress lines.

A block is at most `BLOCK_SIZE` bytes of one file. It is compressed only when that pays,
decided from a sample so that incompressible data (most chunk payloads) costs one small
trial instead of a full zlib pass (level 1 runs at about 27 MB/s on random bytes here, far
below the network; on zeros at about 400 MB/s). The active chunk's preallocated tail is all
zeros and shrinks to a few kilobytes.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable
from typing import TypeVar

from backup.manifest import Block, blob_key
from backup.store import ObjectStore, StorageError

BLOCK_SIZE = 8 << 20
"""Small enough that appending to the active chunk re-uploads little, large enough that a
request's overhead is small next to its transfer; the same as boto3's multipart part."""

ATTEMPTS = 4
_BACKOFF_SECONDS = 0.5
_SAMPLE_PIECES = 4
_SAMPLE_PIECE = 16 << 10
_WORTH_COMPRESSING = 0.8  # the sample must shrink to 80% or less

T = TypeVar("T")
Progress = Callable[[str], None]
Sleep = Callable[[float], None]


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_MMAP_FROM = 1 << 20


def map_blocks_outside_the_heap() -> None:
    """Ask glibc to give every allocation of 1 MiB or more its own mapping (idempotent).

    glibc raises its mmap threshold each time a large mapped buffer is freed (up to 32 MiB),
    after which 8 MiB blocks come from per-thread heaps, and a block allocated by a worker
    and freed by the main thread stays in that worker's heap: measured on a 0.5 GiB restore
    from moto, the download peaked at 198 MB RSS this way and at 113 MB with the threshold
    fixed (the backup 166 and 157 MB). A fixed threshold keeps the peak at what is really
    in flight. Nothing happens where the C library is not glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has no such threshold to fix


def with_retries(operation: Callable[[], T], sleep: Sleep = time.sleep) -> T:
    """Run ``operation``; retry a transient `StorageError` up to `ATTEMPTS` times in all."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return operation()
        except StorageError as e:
            if not e.transient or attempt == ATTEMPTS:
                raise
            sleep(_BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def choose_compression(data: bytes | memoryview) -> str:
    """'zlib' when a sample of ``data`` shrinks enough at level 1, else 'none'."""
    if len(data) <= _SAMPLE_PIECES * _SAMPLE_PIECE:
        sample = bytes(data)
    else:
        stride = (len(data) - _SAMPLE_PIECE) // (_SAMPLE_PIECES - 1)
        sample = b"".join(
            data[n * stride : n * stride + _SAMPLE_PIECE] for n in range(_SAMPLE_PIECES)
        )
    if not sample:
        return "none"
    return "zlib" if len(zlib.compress(sample, 1)) <= len(sample) * _WORTH_COMPRESSING else "none"


def encode_block(data: bytes | memoryview) -> tuple[Block, bytes | memoryview]:
    """The block ``data`` becomes, and the bytes to store for it."""
    sha256 = hashlib.sha256(data).hexdigest()
    compression = choose_compression(data)
    payload: bytes | memoryview = data
    if compression == "zlib":
        payload = zlib.compress(data, 1)
        if len(payload) >= len(data):
            compression, payload = "none", data
    return Block(sha256=sha256, size=len(data), compression=compression), payload


def put_block(
    store: ObjectStore, data: bytes | memoryview, sleep: Sleep = time.sleep
) -> tuple[Block, int]:
    """Store ``data`` as a block unless the store already has it; the bytes uploaded."""
    block, payload = encode_block(data)
    key = blob_key(block.sha256, block.compression)
    if with_retries(lambda: store.size_of(key), sleep) == len(payload):
        return block, 0
    # One request per block: blocks are no larger than a multipart part anyway.
    data_to_store = bytes(payload)
    with_retries(lambda: store.put_bytes(key, data_to_store), sleep)
    return block, len(payload)


class BlockError(Exception):
    """A stored block is not what the manifest says; the message says how."""


def fetch_block(
    store: ObjectStore, block: Block, sleep: Sleep = time.sleep, *, check_digest: bool = True
) -> bytes:
    """A block's original bytes, checked against its size and (unless told not to) sha256.

    One bounded read: a stored block is never larger than the block (compression is kept
    only when it shrinks it), so a larger object is refused before it can fill memory.
    A caller that hashes the whole file anyway skips the block's digest: it would hash
    the same bytes twice, on a CPU the storage server may be sharing.
    """
    try:
        payload = with_retries(lambda: store.get_bytes(block.key, block.size), sleep)
    except StorageError as e:
        if e.code == "TooLarge":
            raise BlockError(f"object {block.key} is larger than the block it holds") from None
        raise
    if block.compression == "zlib":
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(payload, block.size + 1)
        except zlib.error:
            raise BlockError(f"object {block.key} is not valid zlib data") from None
        if not inflater.eof or inflater.unconsumed_tail:
            raise BlockError(f"object {block.key} does not inflate to {block.size} bytes")
    else:
        data = payload
    if len(data) != block.size:
        raise BlockError(f"object {block.key} holds {len(data)} bytes, not {block.size}")
    if check_digest and hashlib.sha256(data).hexdigest() != block.sha256:
        raise BlockError(f"object {block.key} does not match its sha256")
    return data


def human(size: float) -> str:
    """A byte count for people: 1.5 GiB, 12.0 MiB, 512 B."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class ProgressLines:
    """One line each time another ``step`` percent of ``total`` bytes is done, no more."""

    def __init__(self, emit: Progress, verb: str, total: int, step: int = 5):
        self._emit = emit
        self._verb = verb
        self._total = max(total, 1)
        self._step = step
        self._done = 0
        self._extra = 0
        self._reported = 0

    def advance(self, size: int, extra: int = 0) -> None:
        """``size`` more bytes done (``extra``: more new bytes uploaded, for the line)."""
        self._done += size
        self._extra += extra
        percent = min(99, self._done * 100 // self._total)
        if percent >= self._reported + self._step:
            self._reported = percent - percent % self._step
            line = f"{self._verb}: {self._reported}% ({human(self._done)} of {human(self._total)})"
            if self._extra:
                line += f", {human(self._extra)} uploaded"
            self._emit(line)
