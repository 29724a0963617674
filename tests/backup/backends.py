"""Stores on the test servers: a fresh bucket or container each, removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from servers import Server

from backup.azure import AzureStore
from backup.s3 import S3Store
from backup.settings import AzureSettings, S3Settings

PATH = "kurrentdb/backups"  # every store has a path, so prefixing is always exercised


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def s3_settings(server: Server, bucket: str, **overrides: Any) -> S3Settings:
    settings = S3Settings(
        bucket=bucket,
        access_key=server.access_key,
        secret_key=server.secret_key,
        endpoint=server.endpoint,
        region="us-east-1",
        path=PATH,
        uri_style="path",
    )
    return replace(settings, **overrides)


def s3_integrator_data(server: Server, bucket: str) -> dict[str, str]:
    """What s3-integrator (v0) puts in its app data for this bucket: plain keys,
    credentials included."""
    return {
        "bucket": bucket,
        "access-key": server.access_key,
        "secret-key": server.secret_key,
        "endpoint": server.endpoint,
        "region": "us-east-1",
        "path": PATH,
        "s3-uri-style": "path",
    }


def s3_admin(server: Server, **client_options: Any) -> Any:
    """A plain boto3 client for the test's own set-up and checks."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        **client_options,
    )


@contextmanager
def fresh_bucket(server: Server) -> Iterator[str]:
    """A new empty bucket, emptied and removed afterwards (radosgw keeps data in RAM)."""
    admin = s3_admin(server)
    bucket = unique_name("backup-test")
    admin.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        paginator = admin.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            if entries := [{"Key": entry["Key"]} for entry in page.get("Contents", [])]:
                admin.delete_objects(Bucket=bucket, Delete={"Objects": entries, "Quiet": True})
        admin.delete_bucket(Bucket=bucket)


@contextmanager
def fresh_s3_store(server: Server, **overrides: Any) -> Iterator[S3Store]:
    with fresh_bucket(server) as bucket:
        yield S3Store(s3_settings(server, bucket, **overrides))


def azure_settings(server: Server, container: str, **overrides: Any) -> AzureSettings:
    settings = AzureSettings(
        storage_account=server.access_key,
        secret_key=server.secret_key,
        container=container,
        protocol="http",
        endpoint=server.endpoint,
        path=PATH,
    )
    return replace(settings, **overrides)


def azure_admin(server: Server) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(
        account_url=server.endpoint,
        credential={"account_name": server.access_key, "account_key": server.secret_key},
    )


@contextmanager
def fresh_azure_store(server: Server, **overrides: Any) -> Iterator[AzureStore]:
    container = unique_name("backup-test")
    admin = azure_admin(server)
    admin.create_container(container)
    try:
        yield AzureStore(azure_settings(server, container, **overrides))
    finally:
        admin.delete_container(container)
