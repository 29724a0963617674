"""The object-store interface the backup engine talks to, whatever the backend.

Keys are relative to the store's root (the relation's bucket or container, and its
`path`): a backend adds its own prefix. Every method streams: nothing holds a whole
object in memory except `get_bytes`, which is bounded by its caller.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MiB = 1024 * 1024
# How every backend streams: parts of PART_SIZE, at most CONCURRENCY in flight, so a
# transfer holds a few tens of MiB whatever the object's size (the charm container may
# have 1 GiB of memory).
PART_SIZE = 8 * MiB
CONCURRENCY = 4
CONNECT_TIMEOUT = 10  # seconds
READ_TIMEOUT = 60


class StorageError(Exception):
    """A storage operation failed.

    ``code`` is the backend's error code ("NoSuchBucket", "AccessDenied",
    "ConnectionError", ...): safe for action results and statuses, unlike the raw
    exception text, which may echo request headers. ``transient`` errors are worth
    retrying.
    """

    def __init__(self, code: str, *, transient: bool = False):
        super().__init__(code)
        self.code = code
        self.transient = transient


@dataclass(frozen=True)
class StoredObject:
    """An object as a listing shows it."""

    key: str
    size: int


class ObjectStore(abc.ABC):
    """One bucket (or container) and path of an object store."""

    @abc.abstractmethod
    def size_of(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    @abc.abstractmethod
    def upload(self, key: str, source: BinaryIO) -> None:
        """Store what ``source`` yields until EOF under ``key`` (multipart when large)."""

    @abc.abstractmethod
    def download(self, key: str, sink: BinaryIO) -> None:
        """Write the object's bytes to ``sink``; StorageError("NoSuchKey") when absent."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object."""

    @abc.abstractmethod
    def get_bytes(self, key: str, limit: int) -> bytes:
        """A small object's bytes; StorageError("TooLarge") past ``limit`` bytes.

        StorageError("NoSuchKey") when absent (every backend uses that code).
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (no error when it is already gone)."""
