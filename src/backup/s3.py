"""`ObjectStore` over S3 (AWS, Ceph radosgw, MinIO, ...), with boto3 loaded only here.

Importing this module costs nothing: boto3 (about a second of imports) loads when an
`S3Store` is built, which only a backup action does.

Checksums: boto3 1.36 and later add CRC32/CRC64 checksum headers and trailers to every
upload unless told `when_required`; Ceph radosgw, MinIO and other S3 servers reject or
mangle those (boto/boto3#4392, boto/s3transfer#327), so both directions are set to
`when_required`.

Memory: uploads and downloads stream in `PART_SIZE` parts with at most `CONCURRENCY` in
flight, so a transfer holds a few tens of MiB whatever the object's size (the charm
container may have 1 GiB).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from backup.backend_errors import ABSENT, checked_code, find_in_chain, quiet, storage_error
from backup.settings import S3Settings
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

MAX_ATTEMPTS = 5  # botocore "standard" retries: throttling, 5xx and connection errors

# Error codes worth retrying (besides any 5xx status), as S3 servers name them.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
    }
)
_ABSENT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store(ObjectStore):
    """One bucket and key prefix (the relation's `path`) of an S3 server."""

    page_size = 1000  # names per listing request (S3's maximum)

    def __init__(self, settings: S3Settings, *, max_attempts: int = MAX_ATTEMPTS):
        import boto3.session
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        quiet("boto3", "botocore", "s3transfer", "urllib3")
        self.settings = settings
        self._prefix = f"{settings.path}/" if settings.path else ""
        verify: str | bool = True
        if settings.tls_ca_chain:
            verify = _ca_bundle_file(settings.tls_ca_chain)
            # The bundle lives as long as the store (the client reads it per connection).
            weakref.finalize(self, _remove_quietly, verify)
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": settings.uri_style},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=CONCURRENCY + 2,
        )
        with _mapped_errors():
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.endpoint,
                # SigV4 needs a region even where the server ignores it (radosgw, MinIO).
                region_name=settings.region or "us-east-1",
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                config=config,
                verify=verify,
            )
        self._transfer = TransferConfig(
            multipart_threshold=PART_SIZE,
            multipart_chunksize=PART_SIZE,
            max_concurrency=CONCURRENCY,
            io_chunksize=256 * 1024,
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.settings.bucket!r}, path={self.settings.path!r})"

    def size_of(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""
        try:
            with _mapped_errors():
                head = self._client.head_object(Bucket=self.settings.bucket, Key=self._key(key))
        except StorageError as error:
            if error.code == ABSENT:
                return None
            raise
        return int(head["ContentLength"])

    def upload(self, key: str, source: BinaryIO) -> None:
        """Store what ``source`` yields until EOF under ``key`` (multipart past 8 MiB)."""
        with _mapped_errors():
            self._client.upload_fileobj(
                source, self.settings.bucket, self._key(key), Config=self._transfer
            )

    def download(self, key: str, sink: BinaryIO) -> None:
        """Write the object's bytes to ``sink``; StorageError("NoSuchKey") when absent."""
        with _mapped_errors():
            self._client.download_fileobj(
                self.settings.bucket, self._key(key), sink, Config=self._transfer
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object in one request."""
        with _mapped_errors():
            self._client.put_object(Bucket=self.settings.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str, limit: int) -> bytes:
        """A small object's bytes; StorageError("TooLarge") past ``limit`` bytes."""
        with _mapped_errors():
            answer = self._client.get_object(Bucket=self.settings.bucket, Key=self._key(key))
            body = answer["Body"]
            try:
                data = body.read(limit + 1)
            finally:
                body.close()
        if len(data) > limit:
            raise StorageError("TooLarge")
        return bytes(data)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix``, in key order."""
        paginator = self._client.get_paginator("list_objects_v2")
        with _mapped_errors():
            pages = paginator.paginate(
                Bucket=self.settings.bucket,
                Prefix=self._key(prefix),
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    yield StoredObject(key=entry["Key"][len(self._prefix) :], size=entry["Size"])

    def delete(self, key: str) -> None:
        """Remove the object (S3 answers success when it is already gone)."""
        with _mapped_errors():
            self._client.delete_object(Bucket=self.settings.bucket, Key=self._key(key))

    def _key(self, key: str) -> str:
        return self._prefix + key


def _ca_bundle_file(chain: tuple[str, ...]) -> str:
    """The relation's CA chain in a private temp file, for botocore's ``verify=``."""
    descriptor, path = tempfile.mkstemp(prefix="s3-ca-", suffix=".pem")
    with os.fdopen(descriptor, "w") as bundle:
        bundle.write("\n".join(chain) + "\n")
    return path


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def _mapped_errors() -> Generator[None, None, None]:
    """Turn boto3/botocore exceptions into StorageError carrying only a code.

    The raw exception text can echo request headers and URLs (with presigned
    credentials), so it never leaves: the StorageError is raised without its cause.
    """
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as error:
        raise mapped_error(error) from None


def mapped_error(error: BaseException) -> StorageError:
    """The StorageError for a boto3 failure: its code, and whether a retry may help."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        SSLError,
    )

    client_error = find_in_chain(error, ClientError)
    if client_error is not None:
        return _client_error(client_error.response)
    if isinstance(error, SSLError):  # a certificate problem: retrying will not help
        return StorageError("SSLError")
    transient = isinstance(
        error,
        EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError,
    )
    return StorageError(type(error).__name__, transient=transient)


def _client_error(response: dict[str, Any]) -> StorageError:
    """The server's error code, checked: it is the server's text and may be anything."""
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = checked_code(response.get("Error", {}).get("Code"), status)
    return storage_error(ABSENT if code in _ABSENT_CODES else code, status, _TRANSIENT_CODES)
