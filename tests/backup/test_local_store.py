"""The local test store keeps the `ObjectStore` contract the engine relies on."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from local_store import FailingStore, LocalStore

from backup.store import StorageError, StoredObject


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "bucket")


def test_an_uploaded_object_reads_back_with_its_size(store: LocalStore) -> None:
    data = bytes(range(256)) * 5000
    store.upload("blobs/x", io.BytesIO(data))
    assert store.size_of("blobs/x") == len(data)
    sink = io.BytesIO()
    store.download("blobs/x", sink)
    assert sink.getvalue() == data


def test_a_missing_object_has_no_size_and_cannot_be_read(store: LocalStore) -> None:
    assert store.size_of("nothing") is None
    with pytest.raises(StorageError) as caught:
        store.download("nothing", io.BytesIO())
    assert caught.value.code == "NoSuchKey"
    with pytest.raises(StorageError, match="NoSuchKey"):
        store.get_bytes("nothing", 10)


def test_small_objects_are_bounded_by_their_reader(store: LocalStore) -> None:
    store.put_bytes("a/b", b"12345")
    assert store.get_bytes("a/b", 5) == b"12345"
    with pytest.raises(StorageError, match="TooLarge"):
        store.get_bytes("a/b", 4)


def test_a_listing_is_in_key_order_and_filtered_by_prefix(store: LocalStore) -> None:
    for key in ("b/2", "a/1", "b/1", "bb"):
        store.put_bytes(key, b"x" * len(key))
    assert list(store.list("b/")) == [StoredObject("b/1", 3), StoredObject("b/2", 3)]
    assert [o.key for o in store.list()] == ["a/1", "b/1", "b/2", "bb"]


def test_overwrite_and_delete(store: LocalStore) -> None:
    store.put_bytes("k", b"one")
    store.put_bytes("k", b"three")
    assert store.get_bytes("k", 10) == b"three"
    store.delete("k")
    store.delete("k")  # already gone: no error
    assert store.size_of("k") is None


def test_keys_cannot_leave_the_root(store: LocalStore) -> None:
    for key in ("../escape", "a/../../b", "", "a//b"):
        with pytest.raises(StorageError, match="InvalidKey"):
            store.put_bytes(key, b"x")


def test_concurrent_uploads_of_one_key_leave_one_whole_object(store: LocalStore) -> None:
    data = b"z" * (1 << 20)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.upload("same", io.BytesIO(data)), range(16)))
    assert store.get_bytes("same", 2 << 20) == data
    assert [o.key for o in store.list()] == ["same"]


def test_a_failing_store_refuses_writes_past_its_budget(store: LocalStore) -> None:
    failing = FailingStore(store, budget=10, transient=False)
    failing.put_bytes("a", b"12345")
    with pytest.raises(StorageError) as caught:
        failing.upload("b", io.BytesIO(b"123456"))
    assert (caught.value.code, caught.value.transient) == ("ConnectionError", False)
    assert store.size_of("b") is None
