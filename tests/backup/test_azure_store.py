"""The Azure backend against Azurite: errors as codes only, staged blocks, bounded reads."""

from __future__ import annotations

import base64
import io
import logging
import os

import backends
import pytest
import servers

from backup.azure import AzureStore
from backup.settings import AzureSettings
from backup.store import PART_SIZE, StorageError


def test_a_wrong_account_key_fails_with_the_code_and_no_key(azurite_server, azurite_store, caplog):
    caplog.set_level(logging.DEBUG)  # the charm's root logger takes DEBUG records
    wrong_key = base64.b64encode(b"a wrong key that must never be shown" * 2).decode()
    container = azurite_store.settings.container
    store = AzureStore(backends.azure_settings(azurite_server, container, secret_key=wrong_key))

    with pytest.raises(StorageError) as failed:
        store.put_bytes("key", b"data")

    assert failed.value.code == "AuthorizationFailure"
    assert not failed.value.transient
    shown = f"{failed.value} {failed.value!r} {failed.value.args} {store!r} {caplog.text}"
    assert wrong_key not in shown and azurite_server.secret_key not in shown
    assert failed.value.__suppress_context__


def test_a_key_that_is_not_base64_is_refused_before_any_request(azurite_server):
    with pytest.raises(StorageError) as refused:
        AzureStore(backends.azure_settings(azurite_server, "any", secret_key="not base64!"))

    assert refused.value.code == "InvalidAccountKey"
    assert "not base64" not in repr(refused.value)


def test_a_missing_container_fails_with_the_code(azurite_server):
    store = AzureStore(backends.azure_settings(azurite_server, backends.unique_name("none")))

    for operation in (
        lambda: store.put_bytes("k", b"1"),
        lambda: list(store.list()),
        lambda: store.upload("k", io.BytesIO(os.urandom(PART_SIZE * 2 + 1))),
    ):
        with pytest.raises(StorageError) as failed:
            operation()
        assert failed.value.code == "ContainerNotFound"


def test_a_service_that_does_not_answer_is_a_transient_connection_error(caplog):
    caplog.set_level(logging.DEBUG)
    settings = AzureSettings(
        storage_account=servers.AZURITE_ACCOUNT,
        secret_key=servers.AZURITE_KEY,
        container="any",
        protocol="http",
        endpoint=f"http://127.0.0.1:{servers.free_port()}/{servers.AZURITE_ACCOUNT}",
    )
    store = AzureStore(settings, retries=0)  # the code, not the SDK's back-off, is tested

    with pytest.raises(StorageError) as failed:
        store.put_bytes("k", b"1")

    assert failed.value.code == "ServiceRequestError"
    assert failed.value.transient
    assert servers.AZURITE_KEY not in caplog.text + repr(failed.value) + repr(settings)


def test_a_failed_staged_upload_commits_nothing(azurite_store):
    class FailsAfterTwoParts(io.RawIOBase):
        def __init__(self):
            self.served = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.served >= 2 * PART_SIZE:
                raise OSError("the disk went away")
            count = min(len(buffer), PART_SIZE)
            buffer[:count] = b"p" * count
            self.served += count
            return count

    azurite_store.put_bytes("chunk", b"old and complete")

    with pytest.raises(OSError, match="disk went away"):
        azurite_store.upload("chunk", FailsAfterTwoParts())

    assert azurite_store.get_bytes("chunk", limit=100) == b"old and complete"


def test_large_uploads_are_staged_in_blocks_of_the_part_size(azurite_server, azurite_store):
    data = os.urandom(2 * PART_SIZE + 777)
    azurite_store.upload("blocks", io.BytesIO(data))

    blob = (
        backends.azure_admin(azurite_server)
        .get_container_client(azurite_store.settings.container)
        .get_blob_client(f"{backends.PATH}/blocks")
    )
    committed, _ = blob.get_block_list("committed")
    assert [block.size for block in committed] == [PART_SIZE, PART_SIZE, 777]
    assert blob.download_blob().readall() == data
