"""Which files a backup takes from a KurrentDB data directory, and in which order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from datadir import HEADER_SIZE, DataDirSpec, SyntheticDataDir, chunk_name, write_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup import layout
from backup.layout import BackupSourceError, BackupWalk, Phase

MiB = 1 << 20


@pytest.fixture
def node(tmp_path: Path) -> SyntheticDataDir:
    return SyntheticDataDir.create(
        tmp_path / "data", DataDirSpec(total_size=8 * MiB, chunks=3, chunk_size=2 * MiB, seed=1)
    )


def walk_all(data_dir: Path) -> tuple[BackupWalk, list[layout.SourceFile]]:
    walk = BackupWalk(data_dir)
    return walk, list(walk.files())


def test_files_follow_the_documented_order(node: SyntheticDataDir) -> None:
    _, files = walk_all(node.root)
    phases = [f.phase for f in files]
    order = [Phase.INDEX_CHECKPOINTS, Phase.INDEX_FILES, Phase.DB_CHECKPOINTS, Phase.CHUNKS]
    assert phases == sorted(phases, key=order.index)
    paths = [f.path for f in files]
    assert paths[0] == "index/stream-existence/streamExistenceFilter.chk"
    db_checkpoints = [f.path for f in files if f.phase is Phase.DB_CHECKPOINTS]
    assert db_checkpoints == ["chaser.chk", "epoch.chk", "writer.chk", "proposal.chk"]
    assert [f.path for f in files if f.phase is Phase.CHUNKS] == [chunk_name(i) for i in range(3)]
    tables = node.ptable_names()
    for name in tables:
        assert paths.index(f"index/{name}") < paths.index("index/indexmap")
        assert f"index/{name}.bloomfilter" in paths
    assert "index/stream-existence/streamExistenceFilter.dat" in paths
    assert "index/scavenging/scavenging.db" in paths


def test_derived_and_overwritten_files_are_left_out(node: SyntheticDataDir) -> None:
    (node.root / "write-attempt-1.tmp").write_bytes(b"x")
    _, files = walk_all(node.root)
    paths = {f.path for f in files}
    assert not paths & {"kurrent.ddb", "kurrent.ddb.wal", "truncate.chk", "write-attempt-1.tmp"}


def test_checkpoints_are_recorded_from_the_bytes_stored(node: SyntheticDataDir) -> None:
    walk, files = walk_all(node.root)
    by_path = {f.path: f for f in files}
    assert walk.checkpoints["writer.chk"] == node.writer
    assert by_path["writer.chk"].content == (node.root / "writer.chk").read_bytes()


def test_the_active_chunk_is_read_up_to_the_writer_checkpoint(node: SyntheticDataDir) -> None:
    _, files = walk_all(node.root)
    active = next(f for f in files if f.path == chunk_name(2))
    written = node.writer - 2 * node.chunk_size
    assert active.read_limit == HEADER_SIZE + written
    assert active.size == (node.root / chunk_name(2)).stat().st_size
    completed = next(f for f in files if f.path == chunk_name(0))
    assert completed.read_limit is None


def test_chunks_past_the_writer_checkpoint_are_left_out(node: SyntheticDataDir) -> None:
    # A chunk the writer does not cover yet would make the restored node refuse to start.
    shutil.copy(node.root / chunk_name(2), node.root / chunk_name(3))
    shutil.copy(node.root / chunk_name(2), node.root / chunk_name(5))
    _, files = walk_all(node.root)
    assert [f.path for f in files if f.phase is Phase.CHUNKS] == [chunk_name(i) for i in range(3)]


def test_only_the_newest_version_of_a_chunk_is_taken(node: SyntheticDataDir) -> None:
    shutil.copy(node.root / chunk_name(0), node.root / chunk_name(0, 1))
    _, files = walk_all(node.root)
    chunks = [f.path for f in files if f.phase is Phase.CHUNKS]
    assert chunks == [chunk_name(0, 1), chunk_name(1), chunk_name(2)]


def test_a_merged_chunk_replaces_the_chunks_it_covers(node: SyntheticDataDir) -> None:
    merged = bytearray((node.root / chunk_name(0)).read_bytes())
    merged[10:14] = (1).to_bytes(4, "little")  # ChunkEndNumber: covers chunks 0 and 1
    (node.root / chunk_name(0, 1)).write_bytes(bytes(merged))
    _, files = walk_all(node.root)
    assert [f.path for f in files if f.phase is Phase.CHUNKS] == [chunk_name(0, 1), chunk_name(2)]


def test_a_missing_chunk_is_refused(node: SyntheticDataDir) -> None:
    (node.root / chunk_name(1)).unlink()
    with pytest.raises(BackupSourceError, match="chunk 000001 is missing"):
        walk_all(node.root)


def test_a_missing_active_chunk_is_refused(node: SyntheticDataDir) -> None:
    (node.root / chunk_name(2)).unlink()
    with pytest.raises(BackupSourceError, match=r"000002, which writer\.chk points into"):
        walk_all(node.root)


def test_a_directory_without_a_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupSourceError, match=r"no writer\.chk"):
        walk_all(tmp_path)


def test_a_malformed_checkpoint_is_refused(node: SyntheticDataDir) -> None:
    (node.root / "chaser.chk").write_bytes(b"\0" * 3)
    with pytest.raises(BackupSourceError, match="8 bytes"):
        walk_all(node.root)


def test_an_indexmap_that_changes_mid_walk_is_read_again(node: SyntheticDataDir) -> None:
    # A merge replaces a table while the backup copies the tables: the walk takes the
    # new table, stores the final indexmap, and drops the table it no longer names.
    walk = BackupWalk(node.root)
    old = node.ptable_names()[0]
    yielded: dict[str, layout.SourceFile] = {}
    order: list[str] = []
    new = ""
    for source in walk.files():
        yielded[source.path] = source
        order.append(source.path)
        if source.path == f"index/{old}":
            new = node.merge_ptable(old, 8192)
    assert f"index/{new}" in yielded
    kept = set(yielded) - walk.superseded
    assert f"index/{old}" not in kept and f"index/{old}.bloomfilter" not in kept
    assert order.index("index/indexmap") > order.index(f"index/{new}")
    stored_indexmap = yielded["index/indexmap"].content
    assert stored_indexmap is not None
    assert layout.indexmap_tables(stored_indexmap) == node.ptable_names()


def test_a_table_that_vanishes_is_tolerated_when_the_indexmap_moved_on(
    node: SyntheticDataDir,
) -> None:
    walk = BackupWalk(node.root)
    old = node.ptable_names()[0]
    for source in walk.files():
        if source.path == f"index/{old}":
            node.merge_ptable(old, 8192)
            walk.vanished(source.path)  # what the engine reports when it finds it gone
    assert f"index/{old}" in walk.superseded


def test_a_table_that_vanishes_while_named_is_refused(node: SyntheticDataDir) -> None:
    walk = BackupWalk(node.root)
    old = node.ptable_names()[0]
    with pytest.raises(BackupSourceError, match="vanished while its indexmap still names it"):
        for source in walk.files():
            if source.path == f"index/{old}":
                walk.vanished(source.path)


def test_an_indexmap_naming_no_table_is_refused(node: SyntheticDataDir) -> None:
    indexmap = node.root / "index" / "indexmap"
    indexmap.write_text(indexmap.read_text() + "0,9,../../etc/passwd\n")
    with pytest.raises(BackupSourceError, match="names no table"):
        walk_all(node.root)


def test_an_empty_log_has_no_chunks(tmp_path: Path) -> None:
    for name in ("writer.chk", "chaser.chk"):
        write_checkpoint(tmp_path / name, 0)
    _, files = walk_all(tmp_path)
    assert [f.path for f in files] == ["chaser.chk", "writer.chk"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_indexmap_gives_tables_or_a_source_error(data: bytes) -> None:
    try:
        tables = layout.indexmap_tables(data)
    except BackupSourceError:
        return
    assert all(len(name) == 36 and "/" not in name for name in tables)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=st.binary(max_size=400))
def test_any_chunk_file_is_read_or_refused_with_a_source_error(
    tmp_path: Path, header: bytes
) -> None:
    path = tmp_path / chunk_name(0)
    path.write_bytes(header)
    try:
        chunk = layout.read_chunk(path)
    except BackupSourceError:
        return
    assert chunk is not None
    assert chunk.chunk_size > 0 and 0 <= chunk.start <= chunk.end
