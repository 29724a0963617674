"""`ObjectStore` over Azure Blob Storage (or Azurite), with azure-storage-blob loaded only here.

Importing this module costs nothing: the SDK (about a second of imports) loads when an
`AzureStore` is built, which only a backup action does.

Uploads are staged blocks of `PART_SIZE`, at most `CONCURRENCY` in flight, committed in
order by one Put Block List: memory stays at a few blocks whatever the blob's size, and a
failed upload commits nothing (uncommitted blocks expire on the service's side).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

from backup.backend_errors import ABSENT, checked_code, quiet, storage_error
from backup.settings import AzureSettings
from backup.store import (
    CONCURRENCY,
    CONNECT_TIMEOUT,
    PART_SIZE,
    READ_TIMEOUT,
    ObjectStore,
    StorageError,
    StoredObject,
)

if TYPE_CHECKING:
    from collections.abc import Generator

RETRIES = 5  # the SDK's exponential retry: 408, 429, 5xx and connection errors

_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})
_ABSENT_CODES = frozenset({"BlobNotFound", "HTTP404"})


class AzureStore(ObjectStore):
    """One container and blob-name prefix (the relation's `path`) of a storage account."""

    page_size = 5000  # names per listing request (the service's maximum)

    def __init__(self, settings: AzureSettings, *, retries: int = RETRIES):
        quiet("azure", "urllib3")
        try:
            base64.b64decode(settings.secret_key, validate=True)
        except (binascii.Error, ValueError):
            # The SDK would fail on it at the first request, with the key in the traceback.
            raise StorageError("InvalidAccountKey") from None
        from azure.storage.blob import BlobServiceClient

        self.settings = settings
        self._prefix = f"{settings.path}/" if settings.path else ""
        with _mapped_errors():
            service = BlobServiceClient(
                account_url=settings.account_url,
                credential={
                    "account_name": settings.storage_account,
                    "account_key": settings.secret_key,
                },
                max_single_put_size=PART_SIZE,
                max_block_size=PART_SIZE,
                max_single_get_size=PART_SIZE,
                max_chunk_get_size=PART_SIZE,
                retry_total=retries,
                connection_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
            )
            self._container = service.get_container_client(settings.container)

    def __repr__(self) -> str:
        return f"AzureStore(container={self.settings.container!r}, path={self.settings.path!r})"

    def size_of(self, key: str) -> int | None:
        """The blob's size in bytes, or None when there is no such blob."""
        try:
            with _mapped_errors():
                properties = self._blob(key).get_blob_properties()
        except StorageError as error:
            if error.code == ABSENT:
                return None
            raise
        return int(properties.size)

    def upload(self, key: str, source: BinaryIO) -> None:
        """Store what ``source`` yields until EOF under ``key``, in staged blocks."""
        blob = self._blob(key)
        first = _read_part(source)
        with _mapped_errors():
            if len(first) < PART_SIZE:  # the whole object fits one request
                blob.upload_blob(first, overwrite=True)
                return
            self._upload_blocks(blob, first, source)

    def _upload_blocks(self, blob: Any, first: bytes, source: BinaryIO) -> None:
        from azure.storage.blob import BlobBlock

        # Ids of equal length (the service requires it), unique per upload so that blocks
        # left by an earlier failed upload of the same blob are never committed.
        upload_id = uuid.uuid4().hex
        block_ids: list[str] = []
        pending: list[Future[Any]] = []
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            part = first
            while part:
                block_id = base64.b64encode(f"{upload_id}-{len(block_ids):08d}".encode()).decode()
                block_ids.append(block_id)
                pending.append(pool.submit(blob.stage_block, block_id, part, length=len(part)))
                if len(pending) >= CONCURRENCY:  # bounded memory: wait for the oldest
                    pending.pop(0).result()
                part = _read_part(source)
            for future in pending:
                future.result()
        blob.commit_block_list([BlobBlock(block_id=block_id) for block_id in block_ids])

    def download(self, key: str, sink: BinaryIO) -> None:
        """Write the blob's bytes to ``sink``; StorageError("NoSuchKey") when absent."""
        # The SDK downloads ranges in parallel only into a seekable sink.
        concurrency = CONCURRENCY if _seekable(sink) else 1
        with _mapped_errors():
            self._blob(key).download_blob(max_concurrency=concurrency).readinto(sink)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small blob in one request."""
        with _mapped_errors():
            self._blob(key).upload_blob(data, overwrite=True)

    def get_bytes(self, key: str, limit: int) -> bytes:
        """A small blob's bytes; StorageError("TooLarge") past ``limit`` bytes."""
        with _mapped_errors():
            downloader = self._blob(key).download_blob()
            if downloader.size > limit:  # known from the first answer; read no further
                raise StorageError("TooLarge")
            return bytes(downloader.readall())

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every blob whose name starts with ``prefix``, in name order."""
        with _mapped_errors():
            blobs = self._container.list_blobs(
                name_starts_with=self._key(prefix), results_per_page=self.page_size
            )
            for blob in blobs:
                yield StoredObject(key=blob.name[len(self._prefix) :], size=int(blob.size))

    def delete(self, key: str) -> None:
        """Remove the blob (no error when it is already gone)."""
        try:
            with _mapped_errors():
                self._blob(key).delete_blob()
        except StorageError as error:
            if error.code != ABSENT:
                raise

    def _blob(self, key: str) -> Any:
        return self._container.get_blob_client(self._key(key))

    def _key(self, key: str) -> str:
        return self._prefix + key


def _read_part(source: BinaryIO) -> bytes:
    """Up to PART_SIZE bytes: short reads from pipes and sockets are filled up."""
    chunks: list[bytes] = []
    wanted = PART_SIZE
    while wanted:
        chunk = source.read(wanted)
        if not chunk:
            break
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)


def _seekable(sink: BinaryIO) -> bool:
    try:
        return bool(sink.seekable())
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def _mapped_errors() -> Generator[None, None, None]:
    """Turn azure-core exceptions into StorageError carrying only a code.

    The SDK's exception text quotes the request (URL, headers) and the service's whole
    error body, so it never leaves: the StorageError is raised without its cause.
    """
    from azure.core.exceptions import (
        AzureError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        yield
    except HttpResponseError as error:
        status = error.status_code
        code = checked_code(getattr(error, "error_code", None), status)
        code = ABSENT if code in _ABSENT_CODES else code
        raise storage_error(code, status, _TRANSIENT_CODES) from None
    except (ServiceRequestError, ServiceResponseError) as error:  # connection errors
        raise StorageError(type(error).__name__, transient=True) from None
    except AzureError as error:
        raise StorageError(type(error).__name__) from None
