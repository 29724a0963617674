"""What every backend does the same, on each real server (moto, radosgw, Azurite)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from backup.store import ObjectStore, StorageError, StoredObject

MiB = 1024 * 1024
# More than two 8 MiB parts, and not a multiple of the part size.
LARGE = 2 * 8 * MiB + 3 * MiB + 12345


class OneWayStream(io.RawIOBase):
    """A pipe-like source: no seek, no tell, no length; reads return at most 1 MiB."""

    def __init__(self, size: int, seed: bytes):
        self._left = size
        self._block = hashlib.sha256(seed).digest() * (MiB // 32)
        self._offset = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self._left, MiB)
        start = self._offset % len(self._block)
        chunk = (self._block[start:] + self._block)[:count]
        # Vary the bytes along the stream, so misordered parts would change the digest.
        chunk = (self._offset // MiB).to_bytes(8, "big") + chunk[8:] if count >= 8 else chunk
        buffer[:count] = chunk
        self.digest.update(chunk)
        self._left -= count
        self._offset += count
        return count


class HashingSink(io.RawIOBase):
    """A write-only, unseekable sink that keeps only the digest and the length."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def test_a_large_object_round_trips_from_a_stream_with_the_same_sha256(object_store):
    source = OneWayStream(LARGE, b"large")
    object_store.upload("chunks/chunk-000000.000000", source)

    sink = HashingSink()
    object_store.download("chunks/chunk-000000.000000", sink)

    assert sink.size == LARGE
    assert sink.digest.hexdigest() == source.digest.hexdigest()
    assert object_store.size_of("chunks/chunk-000000.000000") == LARGE


def test_a_file_round_trips_into_a_seekable_file(object_store, tmp_path):
    original = tmp_path / "original"
    original.write_bytes(os.urandom(LARGE))
    with original.open("rb") as source:
        object_store.upload("index/table", source)

    copy = tmp_path / "copy"
    with copy.open("wb") as sink:
        object_store.download("index/table", sink)

    assert (
        hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()
    )


def test_small_and_empty_objects(object_store):
    object_store.put_bytes("manifest.json", b'{"files": []}')
    object_store.upload("empty", io.BytesIO(b""))

    assert object_store.get_bytes("manifest.json", limit=1024) == b'{"files": []}'
    assert object_store.get_bytes("empty", limit=1024) == b""
    assert object_store.size_of("empty") == 0


def test_get_bytes_refuses_an_object_past_its_limit(object_store):
    object_store.put_bytes("big", b"x" * 2048)

    with pytest.raises(StorageError) as refused:
        object_store.get_bytes("big", limit=2047)

    assert refused.value.code == "TooLarge"
    assert object_store.get_bytes("big", limit=2048) == b"x" * 2048


def test_listing_is_by_prefix_in_key_order_relative_to_the_path(object_store):
    for key, size in (("b/2", 2), ("a/1", 1), ("a/3", 3), ("ab", 4), ("b/1", 5)):
        object_store.put_bytes(key, b"z" * size)

    assert list(object_store.list("a/")) == [StoredObject("a/1", 1), StoredObject("a/3", 3)]
    assert [entry.key for entry in object_store.list("a")] == ["a/1", "a/3", "ab"]
    assert [entry.key for entry in object_store.list()] == ["a/1", "a/3", "ab", "b/1", "b/2"]
    assert list(object_store.list("nothing/")) == []


def test_a_listing_of_several_pages_is_complete(object_store):
    # Pages of 4 names (S3 answers up to 1000 a page, Azure 5000): 10 names take 3 pages.
    object_store.page_size = 4  # type: ignore[attr-defined]
    keys = [f"many/{index:05d}" for index in range(10)]
    for key in keys:
        object_store.put_bytes(key, b"")

    assert [entry.key for entry in object_store.list("many/")] == keys


def test_absent_objects(object_store):
    assert object_store.size_of("missing") is None
    for read in (
        lambda: object_store.download("missing", HashingSink()),
        lambda: object_store.get_bytes("missing", limit=10),
    ):
        with pytest.raises(StorageError) as absent:
            read()
        assert absent.value.code == "NoSuchKey"
        assert not absent.value.transient
    object_store.delete("missing")  # no error


def test_delete_removes_the_object(object_store):
    object_store.put_bytes("gone-soon", b"1")
    object_store.delete("gone-soon")

    assert object_store.size_of("gone-soon") is None
    assert list(object_store.list("gone")) == []


def test_uploading_again_replaces_the_object(object_store):
    object_store.put_bytes("marker", b"first owner")
    object_store.upload("marker", io.BytesIO(b"second"))

    assert object_store.get_bytes("marker", limit=100) == b"second"


def test_objects_stay_under_the_path(object_store: ObjectStore):
    object_store.put_bytes("inside", b"1")

    # A store on the same bucket without a path sees the key under the path prefix.
    root = type(object_store)(
        type(object_store.settings)(**{**vars(object_store.settings), "path": ""})
    )  # type: ignore[attr-defined]
    assert [entry.key for entry in root.list()] == ["kurrentdb/backups/inside"]
