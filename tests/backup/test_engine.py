"""The backup engine end to end: backup, list, download and verify, over an object store."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from datadir import HEADER_SIZE, DataDirSpec, SyntheticDataDir, chunk_name
from local_store import FailingStore, FlakyStore, LocalStore, PassThrough, Recording
from sources import SOURCE, source

from backup import engine
from backup.engine import (
    BackupNotFoundError,
    PathOwnedError,
    VerificationError,
    create_backup,
    download_and_verify,
    list_backups,
    load_manifest,
    running_backups,
)
from backup.manifest import SourceInfo, alive_key, format_time, manifest_key, started_key
from backup.store import ObjectStore, StorageError
from backup.transfer import BLOCK_SIZE

MiB = 1 << 20
INFO = SOURCE
OTHER = source(
    cluster="kurrentdb-new",
    application="kurrentdb-new",
    unit="kurrentdb-new/0",
    model="dr",
    model_uuid="9a8b7c6d-5e4f-4321-8765-43210fedcba9",
)
NOT_RESTORED = {"truncate.chk", "kurrent.ddb", "kurrent.ddb.wal"}


class Clock:
    """A `now` that moves a second per call, so backup ids differ and sort by time."""

    def __init__(self) -> None:
        self.moment = datetime.datetime(2026, 12, 2, 1, 0, tzinfo=datetime.timezone.utc)

    def __call__(self) -> datetime.datetime:
        self.moment += datetime.timedelta(seconds=1)
        return self.moment


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "bucket")


@pytest.fixture(params=["local", "moto", "radosgw", "azurite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The local store, then a fresh store on each real server (tests/backup/conftest.py)."""
    if request.param == "local":
        return LocalStore(tmp_path / "bucket")
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def node(tmp_path: Path) -> SyntheticDataDir:
    # Chunks of 12 MiB: two blocks each, the active one half full (a zero tail).
    spec = DataDirSpec(total_size=48 * MiB, chunks=3, chunk_size=12 * MiB, seed=3)
    return SyntheticDataDir.create(tmp_path / "data", spec)


def no_sleep(_: float) -> None:
    pass


def backup(
    store: ObjectStore,
    node: SyntheticDataDir,
    clock: Clock | None = None,
    info: SourceInfo = INFO,
    lines: list[str] | None = None,
) -> engine.BackupResult:
    return create_backup(
        store,
        node.root,
        info,
        (lines if lines is not None else []).append,
        now=clock or Clock(),
        sleep=no_sleep,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def restored_equals_source(source: Path, restored: Path) -> None:
    expected = {path: data for path, data in tree(source).items() if path not in NOT_RESTORED}
    got = tree(restored)
    assert sorted(got) == sorted(expected)
    for path in expected:
        assert got[path] == expected[path], path


def test_backup_then_download_gives_the_same_tree(
    store: ObjectStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    result = backup(store, node)
    manifest = load_manifest(store, result.backup_id)
    staging = tmp_path / "staging"
    download_and_verify(store, manifest, staging, [].append, sleep=no_sleep)
    restored_equals_source(node.root, staging)
    assert result.writer_checkpoint == node.writer == manifest.writer_checkpoint
    assert manifest.chaser_checkpoint == node.writer
    assert result.files == len(manifest.files)
    assert result.bytes_total == sum(len(d) for p, d in tree(staging).items())


def test_the_active_chunks_zero_tail_costs_next_to_nothing(
    local: LocalStore, node: SyntheticDataDir
) -> None:
    result = backup(local, node)
    active = node.root / chunk_name(2)
    written = node.writer - 2 * node.chunk_size
    # Everything but the zeros after the writer is uploaded once; the zeros compress away.
    assert (
        result.bytes_uploaded
        < result.bytes_total - (active.stat().st_size - HEADER_SIZE - written) + MiB
    )


def test_records_past_the_writer_checkpoint_are_not_backed_up(
    local: LocalStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    # The node wrote past what writer.chk says (not flushed yet when the backup read it).
    active = node.root / chunk_name(2)
    written = node.writer - 2 * node.chunk_size
    with active.open("r+b") as f:
        f.seek(HEADER_SIZE + written)
        f.write(b"\xff" * 4096)
    result = backup(local, node)
    staging = tmp_path / "staging"
    download_and_verify(local, load_manifest(local, result.backup_id), staging, [].append)
    restored = (staging / chunk_name(2)).read_bytes()
    original = active.read_bytes()
    assert restored[: HEADER_SIZE + written] == original[: HEADER_SIZE + written]
    assert restored[HEADER_SIZE + written :] == bytes(len(original) - HEADER_SIZE - written)


def test_a_second_backup_after_one_more_chunk_uploads_only_what_changed(
    store: ObjectStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    recording = Recording(store)
    clock = Clock()
    first = backup(recording, node, clock)
    first_keys = {key for key, _ in recording.uploads}
    recording.uploads.clear()
    appended_from = node.writer
    node.append_chunk()
    appended = node.writer - appended_from
    second = backup(recording, node, clock)

    # The new records must go up; at most one block on either side of them more, and the
    # indexmap and checkpoints; never a block the first backup stored.
    assert appended <= second.bytes_uploaded <= appended + 2 * BLOCK_SIZE + 64 * 1024
    assert not first_keys & {key for key, _ in recording.uploads}
    assert (
        sum(n for key, n in recording.uploads if key.startswith("blobs/")) == second.bytes_uploaded
    )
    assert second.bytes_total > first.bytes_total
    assert len(list_backups(recording)) == 2

    staging = tmp_path / "staging"
    download_and_verify(store, load_manifest(store, second.backup_id), staging, [].append)
    restored_equals_source(node.root, staging)


def test_another_units_backup_of_the_same_data_uploads_nothing_new(
    local: LocalStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    backup(local, node)
    copy = SyntheticDataDir(tmp_path / "unit0", node.spec)
    shutil.copytree(node.root, copy.root)
    second = backup(local, copy, info=source(unit="kurrentdb/0"))
    # Only the small files that are not content-addressed duplicates: none, the data is equal.
    assert second.bytes_uploaded == 0


def test_a_corrupted_object_fails_verification_naming_the_file(
    store: ObjectStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    result = backup(store, node)
    manifest = load_manifest(store, result.backup_id)
    entry = next(e for e in manifest.files if e.path == chunk_name(1))
    key = entry.blocks[1].key
    data = bytearray(store.get_bytes(key, BLOCK_SIZE))
    data[100] ^= 0xFF
    store.put_bytes(key, bytes(data))
    staging = tmp_path / "staging"
    with pytest.raises(VerificationError) as caught:
        download_and_verify(store, manifest, staging, [].append, sleep=no_sleep)
    assert caught.value.path == chunk_name(1)
    assert "sha256" in caught.value.reason
    assert not staging.exists()


def test_a_missing_object_fails_verification_naming_the_file(
    store: ObjectStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    result = backup(store, node)
    manifest = load_manifest(store, result.backup_id)
    entry = next(e for e in manifest.files if e.path.startswith("index/") and e.blocks)
    store.delete(entry.blocks[0].key)
    with pytest.raises(VerificationError, match=f"{entry.path}: object .* is missing") as caught:
        download_and_verify(store, manifest, tmp_path / "staging", [].append, sleep=no_sleep)
    assert caught.value.path == entry.path


def test_a_truncated_or_oversized_object_fails_verification(
    store: ObjectStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    result = backup(store, node)
    manifest = load_manifest(store, result.backup_id)
    entry = next(e for e in manifest.files if e.path == chunk_name(0))
    key = entry.blocks[0].key
    original = store.get_bytes(key, BLOCK_SIZE)
    for tampered in (original[:-1], original + b"x"):
        store.put_bytes(key, tampered)
        with pytest.raises(VerificationError) as caught:
            download_and_verify(store, manifest, tmp_path / "staging", [].append, sleep=no_sleep)
        assert caught.value.path == chunk_name(0)


def test_download_refuses_a_staging_directory_in_use(
    local: LocalStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    result = backup(local, node)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "keep").write_text("mine")
    with pytest.raises(VerificationError, match="not empty"):
        download_and_verify(local, load_manifest(local, result.backup_id), staging, [].append)
    assert (staging / "keep").read_text() == "mine"


class Watching(PassThrough):
    """Lists the backups the first time a block goes up: what the leader sees meanwhile."""

    def __init__(self, inner: ObjectStore, clock: Clock):
        super().__init__(inner)
        self.clock, self.seen = clock, None

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.seen is None and key.startswith("blobs/"):
            self.seen = list_backups(self.inner, now=self.clock)
        super().put_bytes(key, data)


def test_a_running_backup_lists_as_running_and_leaves_no_alive_object(
    local: LocalStore, node: SyntheticDataDir
) -> None:
    clock = Clock()
    watching = Watching(local, clock)
    result = backup(watching, node, clock)
    assert watching.seen is not None
    (during,) = watching.seen
    assert (during.backup_id, during.state, during.unit) == (
        result.backup_id,
        "running",
        "kurrentdb/1",
    )
    assert local.size_of(alive_key(result.backup_id)) is None
    (after,) = list_backups(local, now=clock)
    assert after.state == "complete"
    assert running_backups(local, "kurrentdb", INFO.model_uuid, now=clock) == []


def test_a_backup_whose_process_died_stops_counting_as_running(
    local: LocalStore, node: SyntheticDataDir
) -> None:
    """A killed action leaves its started marker and its alive object: after ALIVE_WINDOW
    the backup is incomplete, and a restore is no longer refused for it."""
    clock = Clock()
    failing = FailingStore(local, budget=20 * MiB, transient=False)
    with pytest.raises(StorageError):
        backup(failing, node, clock)
    (summary,) = list_backups(local, now=clock)
    last_seen = clock.moment
    local.put_bytes(alive_key(summary.backup_id), format_time(last_seen).encode())

    def at(seconds: int) -> Callable[[], datetime.datetime]:
        return lambda: last_seen + datetime.timedelta(seconds=seconds)

    running = running_backups(local, "kurrentdb", INFO.model_uuid, now=at(60))
    assert [b.backup_id for b in running] == [summary.backup_id]
    assert running_backups(local, "other-app", INFO.model_uuid, now=at(60)) == []
    assert running_backups(local, "kurrentdb", INFO.model_uuid, now=at(91)) == []
    assert list_backups(local, now=at(91))[0].state == "incomplete"
    local.put_bytes(alive_key(summary.backup_id), b"not a time")
    assert list_backups(local, now=at(1))[0].state == "incomplete"


@pytest.mark.parametrize("transient", [True, False])
def test_storage_failing_half_way_leaves_no_manifest(
    store: ObjectStore, node: SyntheticDataDir, transient: bool
) -> None:
    failing = FailingStore(store, budget=20 * MiB, transient=transient)
    with pytest.raises(StorageError) as caught:
        backup(failing, node)
    assert caught.value.code == "ConnectionError"
    assert not [o for o in store.list("backups/") if o.key.endswith("manifest.json")]
    (summary,) = list_backups(store)
    assert summary.state == "incomplete"
    assert (summary.unit, summary.application) == ("kurrentdb/1", "kurrentdb")
    with pytest.raises(BackupNotFoundError):
        load_manifest(store, summary.backup_id)


def test_transient_failures_are_retried(
    local: LocalStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    flaky = FlakyStore(local, per_key=2)
    result = backup(flaky, node)
    assert flaky.failures > 0
    download_and_verify(
        local, load_manifest(local, result.backup_id), tmp_path / "staging", [].append
    )
    restored_equals_source(node.root, tmp_path / "staging")


def test_retries_are_bounded(local: LocalStore, node: SyntheticDataDir) -> None:
    flaky = FlakyStore(local, per_key=100)
    with pytest.raises(StorageError, match="SlowDown"):
        backup(flaky, node)
    assert flaky.failures <= 4 * engine.UPLOAD_IN_FLIGHT + 4


def test_list_shows_every_backup_newest_first(store: ObjectStore, node: SyntheticDataDir) -> None:
    clock = Clock()
    first = backup(store, node, clock)
    node.grow_active(MiB)
    second = backup(store, node, clock)
    listed = list_backups(store)
    assert [b.backup_id for b in listed] == [second.backup_id, first.backup_id]
    newest = listed[0]
    assert newest.state == "complete"
    assert (newest.application, newest.model, newest.unit) == ("kurrentdb", "prod", "kurrentdb/1")
    assert newest.kurrentdb_version == "26.1.0"
    assert newest.size == second.bytes_total
    assert newest.new_bytes == second.bytes_uploaded


def test_a_malformed_manifest_is_listed_as_unreadable_and_never_restored(
    local: LocalStore, node: SyntheticDataDir
) -> None:
    result = backup(local, node)
    local.put_bytes(
        manifest_key(result.backup_id), b'{"kind": "kurrentdb-backup-manifest", "schema": 9}'
    )
    (summary,) = list_backups(local)
    assert summary.state == "unreadable"
    assert "schema 9" in (summary.reason or "")
    with pytest.raises(engine.ManifestError):
        load_manifest(local, result.backup_id)


def test_foreign_keys_under_backups_are_ignored(local: LocalStore, node: SyntheticDataDir) -> None:
    local.put_bytes("backups/20261202T010000Z-abcdef/nested/manifest.json", b"{}")
    local.put_bytes("backups/not-an-id/manifest.json", b"{}")
    assert list_backups(local) == []
    with pytest.raises(BackupNotFoundError, match="looks like"):
        load_manifest(local, "../owner.json")


def test_another_application_may_not_write_into_an_owned_path(
    store: ObjectStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    result = backup(store, node)
    with pytest.raises(PathOwnedError, match="'kurrentdb' of model 'prod'"):
        backup(store, node, info=OTHER)
    assert [b.backup_id for b in list_backups(store)] == [result.backup_id]
    # ...but it may list and restore what is there.
    download_and_verify(
        store, load_manifest(store, result.backup_id), tmp_path / "staging", [].append
    )


def test_a_malformed_owner_marker_blocks_writing(local: LocalStore, node: SyntheticDataDir) -> None:
    local.put_bytes("owner.json", b"not json")
    with pytest.raises(PathOwnedError, match="not this charm's marker"):
        backup(local, node)
    assert list(local.list("backups/")) == []


def test_progress_is_a_line_every_few_percent(
    local: LocalStore, node: SyntheticDataDir, tmp_path: Path
) -> None:
    lines: list[str] = []
    result = backup(local, node, lines=lines)
    percents = [int(line.split(": ")[1].split("%")[0]) for line in lines if "%" in line]
    assert 5 <= len(percents) <= 20
    assert percents == sorted(set(percents))
    assert lines[-1].startswith(f"backup {result.backup_id}: complete")
    downloads: list[str] = []
    download_and_verify(
        local, load_manifest(local, result.backup_id), tmp_path / "s", downloads.append
    )
    assert 5 <= len(downloads) <= 21


def test_no_manifest_is_written_before_the_files(node: SyntheticDataDir, tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "bucket")
    order: list[str] = []

    class Watching(Recording):
        def put_bytes(self, key: str, data: bytes) -> None:
            order.append(key)
            super().put_bytes(key, data)

        def upload(self, key: str, source: BinaryIO) -> None:
            order.append(key)
            super().upload(key, source)

    result = backup(Watching(inner), node)
    assert order[0] == "owner.json"
    assert order[1] == started_key(result.backup_id)
    assert order[-1] == manifest_key(result.backup_id)


def test_memory_stays_bounded_whatever_the_chunk_size(local: LocalStore, tmp_path: Path) -> None:
    spec = DataDirSpec(total_size=160 * MiB, chunks=2, chunk_size=96 * MiB, active_fill=0.9, seed=5)
    node = SyntheticDataDir.create(tmp_path / "big", spec)
    tracemalloc.start()
    try:
        backup(local, node)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A few blocks in flight (measured: 52 MiB), never a whole 96 MiB chunk.
    assert peak < (engine.UPLOAD_IN_FLIGHT + 2) * BLOCK_SIZE < node.chunk_size


def test_a_hook_importing_the_engine_pays_for_no_storage_client() -> None:
    code = (
        "import sys; sys.path[:0] = ['src', 'lib'];"
        "import backup.engine, backup.layout, backup.manifest;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
