"""Manifests and markers: what a backup writes, and the strict reading of what storage holds."""

from __future__ import annotations

import contextlib
import datetime
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources import source

from backup.manifest import (
    Block,
    FileEntry,
    Manifest,
    ManifestError,
    Owner,
    Started,
    backup_id_for,
    blob_key,
    is_backup_id,
    parse_manifest,
    parse_owner,
    parse_started,
)

SOURCE = source(unit="kurrentdb/2", charm_revision=12)
SHA_A = "a" * 64
SHA_B = "b" * 64


def manifest() -> Manifest:
    return Manifest(
        backup_id="20261202T014512Z-0a1b2c",
        source=SOURCE,
        started_at="2026-12-02T01:45:12Z",
        finished_at="2026-12-02T01:46:40Z",
        writer_checkpoint=1000,
        chaser_checkpoint=990,
        files=(
            FileEntry("writer.chk", 8, SHA_A, (Block(SHA_A, 8, "none"),)),
            FileEntry(
                "chunk-000000.000000",
                12,
                SHA_B,
                (Block(SHA_B, 4, "zlib"), Block(SHA_A, 8, "none")),
            ),
            FileEntry("index/empty", 0, "e" * 64, ()),
        ),
        bytes_total=20,
        bytes_uploaded=9,
    )


def as_json() -> dict[str, Any]:
    return json.loads(manifest().to_json())


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_a_manifest_reads_back_as_written() -> None:
    assert parse_manifest(manifest().to_json()) == manifest()


def test_a_block_key_names_the_content_and_its_encoding() -> None:
    assert blob_key(SHA_A, "none") == f"blobs/{SHA_A}"
    assert blob_key(SHA_A, "zlib") == f"blobs/{SHA_A}.zz"
    assert as_json()["files"][1]["blocks"][0]["key"] == f"blobs/{SHA_B}.zz"


def test_backup_ids_sort_by_time() -> None:
    early = backup_id_for(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    late = backup_id_for(datetime.datetime(2026, 11, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    assert early.startswith("20260102T030405Z-") and is_backup_id(early)
    assert sorted([late, early]) == [early, late]
    assert not is_backup_id("20261341T000000Z-0a1b2c")  # month 13
    assert not is_backup_id("../../owner.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(schema=2), "schema 2; this charm reads schema 1"),
        (lambda m: m.update(schema=True), "schema must be an integer"),
        (lambda m: m.update(kind="something"), "not a 'kurrentdb-backup-manifest'"),
        (lambda m: m.update(extra=1), "unknown field 'extra'"),
        (lambda m: m.pop("files"), "lacks 'files'"),
        (lambda m: m["files"][0].update(path="../etc/passwd"), "files\\[0\\].path must be"),
        (lambda m: m["files"][0].update(path="/etc/passwd"), "files\\[0\\].path must be"),
        (lambda m: m["files"][0].update(path="index//x"), "files\\[0\\].path must be"),
        (lambda m: m["files"][1].update(path="writer.chk"), "lists a file twice"),
        (lambda m: m["files"][0].update(size=9), "blocks do not add up"),
        (lambda m: m["files"][0].update(size=True), "size must be an integer"),
        (lambda m: m["files"][0].update(sha256="A" * 64), "sha256 must be 64 lowercase hex"),
        (
            lambda m: m["files"][0]["blocks"][0].update(key="blobs/" + SHA_A + ".zz"),
            "does not match its compression",
        ),
        (
            lambda m: m["files"][0]["blocks"][0].update(key="backups/x/manifest.json"),
            "key must be blobs/<sha256>",
        ),
        (lambda m: m["files"][0]["blocks"][0].update(compression="lz4"), "'none' or 'zlib'"),
        (lambda m: m["files"][0]["blocks"][0].update(size=0), "size must be an integer from 1"),
        (lambda m: m.update(bytes_total=21), "bytes_total is not the sum"),
        (lambda m: m.update(chaser_checkpoint=1001), "chaser_checkpoint is past"),
        (lambda m: m.update(finished_at="2026-12-01T00:00:00Z"), "finished_at is before"),
        (lambda m: m.update(started_at="yesterday"), "must be a UTC time"),
        (lambda m: m.update(backup_id="20261302T014512Z-0a1b2c"), "valid date"),
        (lambda m: m["source"].update(unit="kurrentdb"), "source.unit must be a Juju unit"),
        (lambda m: m["source"].update(model_uuid="X"), "source.model_uuid must be"),
        (lambda m: m["source"].update(kurrentdb_version="latest"), "a version like 26.1.0"),
        (lambda m: m["source"].update(charm_revision=-1), "charm_revision must be an integer"),
        (lambda m: m.update(files={}), "files must be a list"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_field(change: Any, message: str) -> None:
    body = as_json()
    change(body)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(encode(body))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind": 1, "kind": 2}', "appears twice"),
        (b'{"schema": NaN}', "not a JSON number allowed"),
        (b"[" * 100_000 + b"]" * 100_000, "not UTF-8 JSON|not a JSON object"),
        (b'{"schema": 1' + b"0" * 5000 + b"}", "not UTF-8 JSON"),
    ],
)
def test_bytes_that_are_no_manifest_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data)


def test_markers_read_back_as_written() -> None:
    owner = Owner("kurrentdb", "prod", SOURCE.model_uuid)
    assert parse_owner(owner.to_json()) == owner
    started = Started("20261202T014512Z-0a1b2c", SOURCE, "2026-12-02T01:45:12Z")
    assert parse_started(started.to_json()) == started
    with pytest.raises(ManifestError, match="not a 'kurrentdb-backup-owner'"):
        parse_owner(started.to_json())
    with pytest.raises(ManifestError, match=r"owner\.application must be"):
        parse_owner(encode({**json.loads(owner.to_json()), "application": "Bad App"}))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
PARSERS = [parse_manifest, parse_owner, parse_started]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_manifest_or_a_manifest_error(data: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(ManifestError):
            parse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_manifest_with_any_field_replaced_parses_or_is_refused(data: st.DataObject) -> None:
    # Walk down to a random place in a valid manifest and put an arbitrary JSON value there.
    body: Any = as_json()
    node = body
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(JSON)
        break
    try:
        parsed = parse_manifest(encode(body))
    except ManifestError as e:
        assert str(e)
        return
    # What parses must still be a manifest that holds together.
    assert parsed.bytes_total == sum(f.size for f in parsed.files)
    for entry in parsed.files:
        assert ".." not in entry.path.split("/") and not entry.path.startswith("/")
        assert all(b.key.startswith("blobs/") for b in entry.blocks)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_value_gives_a_manifest_or_a_manifest_error(value: Any) -> None:
    for parse in PARSERS:
        with contextlib.suppress(ManifestError):
            parse(encode(value))
