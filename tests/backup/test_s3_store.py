"""The S3 backend against real servers: errors as codes only, a private CA, no checksum headers."""

from __future__ import annotations

import io
import logging
import os
import ssl
from dataclasses import replace

import backends
import pytest
import servers

import tls
from backup.s3 import S3Store
from backup.settings import S3Settings
from backup.store import StorageError

MiB = 1024 * 1024
# Headers boto3 1.36+ adds by default, which Ceph radosgw and MinIO reject or mangle.
CHECKSUM_MARKERS = (b"x-amz-checksum-", b"x-amz-sdk-checksum-algorithm", b"x-amz-trailer")


@pytest.fixture(params=["moto", "radosgw"])
def s3_server(request) -> servers.Server:
    return request.getfixturevalue(f"{request.param}_server")


def _leaks(text: str, *secrets: str) -> list[str]:
    return [secret for secret in secrets if secret in text]


def test_a_wrong_secret_key_fails_with_the_code_and_no_credential(
    radosgw_server, radosgw_store, caplog
):
    # moto accepts any credentials: only radosgw checks signatures. The charm's root
    # logger takes DEBUG records; botocore's carry the Authorization header.
    caplog.set_level(logging.DEBUG)
    wrong_secret = "wrong-secret-key-that-must-not-leak-0123456789"
    bucket = radosgw_store.settings.bucket
    store = S3Store(backends.s3_settings(radosgw_server, bucket, secret_key=wrong_secret))
    with pytest.raises(StorageError) as failed:
        store.put_bytes("key", b"data")

    assert failed.value.code == "SignatureDoesNotMatch"
    assert not failed.value.transient
    shown = f"{failed.value} {failed.value!r} {failed.value.args} {store!r} {caplog.text}"
    assert not _leaks(shown, wrong_secret, radosgw_server.access_key)
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_an_unknown_access_key_fails_with_the_code(radosgw_server, radosgw_store):
    bucket = radosgw_store.settings.bucket
    store = S3Store(backends.s3_settings(radosgw_server, bucket, access_key="NOSUCHACCESSKEY00000"))
    with pytest.raises(StorageError) as failed:
        list(store.list())

    assert failed.value.code == "InvalidAccessKeyId"


def test_a_missing_bucket_fails_with_the_code_and_no_credential(s3_server, caplog):
    caplog.set_level(logging.DEBUG)
    store = S3Store(backends.s3_settings(s3_server, backends.unique_name("no-such-bucket")))

    for operation in (
        lambda: store.put_bytes("k", b"1"),
        lambda: list(store.list()),
        lambda: store.upload("k", io.BytesIO(os.urandom(9 * MiB))),
    ):
        with pytest.raises(StorageError) as failed:
            operation()
        assert failed.value.code == "NoSuchBucket"
        assert not failed.value.transient

    assert not _leaks(caplog.text, s3_server.access_key, s3_server.secret_key)


def test_a_server_that_does_not_answer_is_a_transient_connection_error(caplog):
    caplog.set_level(logging.DEBUG)
    settings = S3Settings(
        bucket="any-bucket",
        access_key=servers.S3_ACCESS_KEY,
        secret_key=servers.S3_SECRET_KEY,
        endpoint=f"http://127.0.0.1:{servers.free_port()}",
        uri_style="path",
    )
    store = S3Store(settings, max_attempts=1)  # the code, not botocore's back-off, is tested

    with pytest.raises(StorageError) as failed:
        store.put_bytes("k", b"1")

    assert failed.value.code == "EndpointConnectionError"
    assert failed.value.transient
    assert not _leaks(caplog.text + repr(failed.value), servers.S3_SECRET_KEY)
    assert servers.S3_SECRET_KEY not in repr(settings)


@pytest.fixture(scope="module")
def private_ca() -> tls.KeyPair:
    return tls.generate_ca("backup test CA")


@pytest.fixture
def tls_proxy(moto_server, private_ca, tmp_path):
    """moto behind TLS, with a certificate for 127.0.0.1 signed by the private CA."""
    leaf = tls.issue_node_certificate(private_ca, ("127.0.0.1",))
    (tmp_path / "cert.pem").write_text(leaf.certificate + private_ca.certificate)
    (tmp_path / "key.pem").write_text(leaf.private_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    port = int(moto_server.endpoint.rsplit(":", 1)[1])
    proxy = servers.TcpProxy(("127.0.0.1", port), tls=context)
    yield f"https://127.0.0.1:{proxy.port}"
    proxy.stop()


def test_a_private_ca_given_in_tls_ca_chain_is_trusted(moto_server, tls_proxy, private_ca):
    with backends.fresh_bucket(moto_server) as bucket:
        untrusting = S3Store(backends.s3_settings(moto_server, bucket, endpoint=tls_proxy))
        with pytest.raises(StorageError) as refused:
            untrusting.put_bytes("k", b"over tls")
        assert refused.value.code == "SSLError"
        assert not refused.value.transient

        trusting = S3Store(
            backends.s3_settings(
                moto_server, bucket, endpoint=tls_proxy, tls_ca_chain=(private_ca.certificate,)
            )
        )
        data = os.urandom(17 * MiB)  # multipart, over TLS
        trusting.upload("k", io.BytesIO(data))
        sink = io.BytesIO()
        trusting.download("k", sink)

    assert sink.getvalue() == data


def test_the_ca_bundle_file_is_private_and_removed_with_the_store(moto_server, private_ca):
    store = S3Store(
        backends.s3_settings(moto_server, "any", tls_ca_chain=(private_ca.certificate,))
    )
    bundle = store._client._endpoint.http_session._verify
    assert os.stat(bundle).st_mode & 0o077 == 0
    with open(bundle) as written:
        assert private_ca.certificate in written.read()

    del store
    import gc

    gc.collect()
    assert not os.path.exists(bundle)


def _recorded_uploads(server: servers.Server, store_for) -> bytes:
    port = int(server.endpoint.rsplit(":", 1)[1])
    proxy = servers.TcpProxy(("127.0.0.1", port), record=True)
    try:
        with backends.fresh_bucket(server) as bucket:
            store = store_for(
                replace(
                    backends.s3_settings(server, bucket), endpoint=f"http://127.0.0.1:{proxy.port}"
                )
            )
            store.upload("multipart", io.BytesIO(os.urandom(17 * MiB)))
            store.upload("single", io.BytesIO(b"small"))
            store.put_bytes("put", b"small")
            store.get_bytes("put", limit=10)
    finally:
        proxy.stop()
    return proxy.recorded.lower()


def test_uploads_carry_no_checksum_headers(s3_server):
    recorded = _recorded_uploads(s3_server, S3Store)

    assert b"put /backup-test-" in recorded  # path-style: the bucket is in the path
    assert b"uploadid=" in recorded  # the 17 MiB upload was multipart
    assert [marker for marker in CHECKSUM_MARKERS if marker in recorded] == []


def test_the_checksum_check_sees_headers_when_a_client_sends_them(moto_server):
    # The control: the same uploads from a store whose client keeps boto3's defaults.
    class DefaultChecksums(S3Store):
        def __init__(self, settings):
            super().__init__(settings)
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=settings.endpoint,
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                region_name="us-east-1",
            )

    recorded = _recorded_uploads(moto_server, DefaultChecksums)

    assert [marker for marker in CHECKSUM_MARKERS if marker in recorded] != []


@pytest.mark.parametrize(
    ("uri_style", "url_start"),
    [
        ("path", "https://s3.example.com/my-bucket/kurrentdb/backups/key?"),
        # Unset in the relation: botocore keeps the bucket in the path for an endpoint of
        # its own (radosgw, MinIO), as s3-integrator's default does.
        ("auto", "https://s3.example.com/my-bucket/kurrentdb/backups/key?"),
        ("virtual", "https://my-bucket.s3.example.com/kurrentdb/backups/key?"),
    ],
)
def test_the_relation_uri_style_decides_where_the_bucket_goes(uri_style, url_start):
    # No server needed: a presigned URL shows the address a request would use.
    settings = S3Settings(
        bucket="my-bucket",
        access_key=servers.S3_ACCESS_KEY,
        secret_key=servers.S3_SECRET_KEY,
        endpoint="https://s3.example.com",
        path=backends.PATH,
        uri_style=uri_style,
    )
    store = S3Store(settings)

    url = store._client.generate_presigned_url(
        "get_object", Params={"Bucket": "my-bucket", "Key": store._key("key")}
    )

    assert url.startswith(url_start)
