"""Object stores for the engine's fast tests: a local directory, and wrappers that fail.

`LocalStore` keeps each object as a file under a root directory; writes go to a temporary
file renamed into place, so a reader never sees half an object and threads may share it.
It answers a missing object with StorageError("NoSuchKey"), as both real backends do.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backup.store import ObjectStore, StorageError, StoredObject

ABSENT = "NoSuchKey"


class LocalStore(ObjectStore):
    """An object store over a local directory."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise StorageError("InvalidKey")
        return self.root.joinpath(*parts)

    def size_of(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def upload(self, key: str, source: BinaryIO) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(source, f, 1 << 20)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def download(self, key: str, sink: BinaryIO) -> None:
        try:
            with self._path(key).open("rb") as f:
                shutil.copyfileobj(f, sink, 1 << 20)
        except FileNotFoundError:
            raise StorageError(ABSENT) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self.upload(key, io.BytesIO(data))

    def get_bytes(self, key: str, limit: int) -> bytes:
        try:
            with self._path(key).open("rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise StorageError(ABSENT) from None
        if len(data) > limit:
            raise StorageError("TooLarge")
        return data

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        found = []
        for directory, _, names in os.walk(self.root):
            for name in names:
                if name.startswith(".upload-"):
                    continue
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(StoredObject(key, path.stat().st_size))
        yield from sorted(found, key=lambda stored: stored.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class PassThrough(ObjectStore):
    """Hands every call to ``inner``: the base of the wrappers below."""

    def __init__(self, inner: ObjectStore):
        self.inner = inner

    def size_of(self, key: str) -> int | None:
        return self.inner.size_of(key)

    def upload(self, key: str, source: BinaryIO) -> None:
        self.inner.upload(key, source)

    def download(self, key: str, sink: BinaryIO) -> None:
        self.inner.download(key, sink)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(key, data)

    def get_bytes(self, key: str, limit: int) -> bytes:
        return self.inner.get_bytes(key, limit)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


class FailingStore(PassThrough):
    """Passes everything to ``inner`` until ``budget`` bytes were uploaded, then fails.

    Every write past the budget raises StorageError(``code``, transient=``transient``): the
    storage went away mid-upload. ``failures`` counts the refused calls.
    """

    def __init__(
        self, inner: ObjectStore, budget: int, code: str = "ConnectionError", transient: bool = True
    ):
        super().__init__(inner)
        self.budget = budget
        self.code = code
        self.transient = transient
        self.uploaded = 0
        self.failures = 0
        self._lock = threading.Lock()

    def _spend(self, size: int) -> None:
        with self._lock:
            if self.uploaded + size > self.budget:
                self.failures += 1
                raise StorageError(self.code, transient=self.transient)
            self.uploaded += size

    def upload(self, key: str, source: BinaryIO) -> None:
        data = source.read()
        self._spend(len(data))
        self.inner.upload(key, io.BytesIO(data))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._spend(len(data))
        self.inner.put_bytes(key, data)


class FlakyStore(FailingStore):
    """Fails the first ``per_key`` writes of each key transiently, then lets them through."""

    def __init__(self, inner: ObjectStore, per_key: int = 1):
        super().__init__(inner, budget=1 << 62)
        self.per_key = per_key
        self._seen: dict[str, int] = {}

    def _spend(self, size: int, key: str = "") -> None:
        with self._lock:
            attempts = self._seen.get(key, 0)
            self._seen[key] = attempts + 1
            if attempts < self.per_key:
                self.failures += 1
                raise StorageError("SlowDown", transient=True)

    def upload(self, key: str, source: BinaryIO) -> None:
        self._spend(0, key)
        self.inner.upload(key, source)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._spend(0, key)
        self.inner.put_bytes(key, data)


class Recording(PassThrough):
    """Remembers which keys were written (either way), and how many bytes each."""

    def __init__(self, inner: ObjectStore):
        super().__init__(inner)
        self.uploads: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def upload(self, key: str, source: BinaryIO) -> None:
        data = source.read()
        with self._lock:
            self.uploads.append((key, len(data)))
        self.inner.upload(key, io.BytesIO(data))

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            self.uploads.append((key, len(data)))
        self.inner.put_bytes(key, data)
