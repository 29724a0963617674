"""The restore's steps on a volume (`backup.swap`): what the data directory holds after each.

Every test builds a live data directory and a staged backup shaped like KurrentDB's
(`datadir.py`), runs the steps, and compares whole trees: content, modes and owners.
Crashes are injected by making the Nth file-system change raise, as a killed hook would
stop, and `recover` must then leave the old tree or the restored one, never a mix.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from datadir import DataDirSpec, SyntheticDataDir, write_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup import swap
from backup.swap import (
    DEFAULT_MAX_TRUNCATION,
    NotEnoughSpace,
    Phase,
    SwapError,
    Truncation,
)

RESTORE_ID = "r-20261202-0001"
WORKLOAD_UID, WORKLOAD_GID = 1001, 1001  # the image's kurrent user from 26.0 on
# The old data belongs to the workload user, as `ensure_data_ownership` leaves it; the
# download runs as root, so the staged files are root's until the swap hands them over.
LIVE_UID, LIVE_GID = 1001, 1001

Tree = dict[str, tuple[Any, ...]]


def snapshot(root: Path, *, owners: bool = True) -> Tree:
    """Every entry under `root` but the restore's own directory: kind, bytes, mode, owner."""
    tree: Tree = {}
    for directory, subdirectories, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        if relative == ".":
            subdirectories[:] = [d for d in subdirectories if d != swap.RESTORE_DIR]
        for name in sorted(subdirectories + files):
            path = Path(directory, name)
            info = path.lstat()
            owner = (info.st_uid, info.st_gid) if owners else ()
            key = os.path.normpath(os.path.join(relative, name))
            if stat.S_ISDIR(info.st_mode):
                tree[key] = ("dir", stat.S_IMODE(info.st_mode), *owner)
            else:
                tree[key] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode), *owner)
    return tree


def chown_tree(root: Path, uid: int, gid: int) -> None:
    for directory, subdirectories, files in os.walk(root):
        for name in (*subdirectories, *files):
            os.chown(os.path.join(directory, name), uid, gid)


class Volume:
    """A data volume with live data, and a backup staged for restore `RESTORE_ID`."""

    def __init__(self, root: Path):
        self.root = root
        SyntheticDataDir.create(root, DataDirSpec(total_size=96 * 1024, chunks=3, seed=1))
        chown_tree(root, LIVE_UID, LIVE_GID)
        (root / "lost+found").mkdir(mode=0o700)  # ext4's, root's: never moves
        self.old = snapshot(root)

    def stage(self, *, writer: int | None = None, chaser: int | None = None) -> Path:
        """Fill the staging directory the way the engine does, and mark it staged."""
        staged = swap.prepare_staging(self.root, RESTORE_ID, 256 * 1024)
        data = SyntheticDataDir.create(staged, DataDirSpec(total_size=128 * 1024, chunks=4, seed=2))
        for name in ("kurrent.ddb", "kurrent.ddb.wal"):  # derived: not in the backup
            (staged / name).unlink()
        if writer is not None:
            write_checkpoint(staged / "writer.chk", writer)
        write_checkpoint(staged / "chaser.chk", data.writer - 4096 if chaser is None else chaser)
        self.restored = snapshot(staged, owners=False)
        swap.mark_staged(self.root, RESTORE_ID)
        return staged

    def tree(self) -> Tree:
        return snapshot(self.root)

    def holds_old(self) -> bool:
        return self.tree() == self.old

    def holds_restored(self) -> bool:
        """The staged files, owned by the workload user, with truncate.chk = chaser.chk."""
        expected = dict(self.restored)
        expected["truncate.chk"] = ("file", *expected["chaser.chk"][1:])
        tree = self.tree()
        found = tree.pop("lost+found", None)
        owners = {entry[-2:] for entry in tree.values()}
        without_owners = {k: v[:-2] for k, v in tree.items()}
        return (
            without_owners == expected
            and owners == {(WORKLOAD_UID, WORKLOAD_GID)}
            and found == self.old["lost+found"]
        )

    def restore_dir(self) -> Path:
        return self.root / swap.RESTORE_DIR


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    return Volume(tmp_path / "data")


def swap_in(volume: Volume) -> Truncation:
    return swap.swap_in(volume.root, RESTORE_ID, WORKLOAD_UID, WORKLOAD_GID)


# -- the steps, one by one ------------------------------------------------------------------


def test_swap_in_puts_the_restored_tree_in_place(volume: Volume):
    volume.stage()
    swap_in(volume)

    assert volume.holds_restored()
    assert swap.read_marker(volume.root).phase is Phase.SWAPPED


def test_swap_in_keeps_the_whole_live_tree_aside_unchanged(volume: Volume):
    volume.stage()
    swap_in(volume)

    previous = snapshot(volume.restore_dir() / RESTORE_ID / "previous")
    assert previous == {k: v for k, v in volume.old.items() if k != "lost+found"}


def test_swap_in_leaves_no_live_file_behind_not_even_the_duckdb_index(volume: Volume):
    # The backup has no DuckDB files: the old ones must not stay beside the restored log,
    # where KurrentDB would take them for an index of it.
    volume.stage()
    swap_in(volume)

    assert not (volume.root / "kurrent.ddb").exists()
    assert not (volume.root / "kurrent.ddb.wal").exists()


def test_truncate_checkpoint_is_a_copy_of_the_chaser_checkpoint(volume: Volume):
    staged = volume.stage()
    assert (staged / "truncate.chk").read_bytes() == struct.pack("<q", -1)
    swap_in(volume)

    truncate = volume.root / "truncate.chk"
    assert truncate.read_bytes() == (volume.root / "chaser.chk").read_bytes()
    assert len(truncate.read_bytes()) == swap.CHECKPOINT_SIZE
    assert (truncate.stat().st_uid, truncate.stat().st_gid) == (WORKLOAD_UID, WORKLOAD_GID)


@pytest.mark.parametrize(("uid", "gid"), [(-1, 1001), (1001, -1), (True, 1001), (1001, "1001")])
def test_swap_in_refuses_owners_that_are_not_ids(volume: Volume, uid: Any, gid: Any):
    volume.stage()
    with pytest.raises(SwapError, match="must be a number from 0"):
        swap.swap_in(volume.root, RESTORE_ID, uid, gid)
    assert volume.holds_old()


def test_swap_in_twice_changes_nothing_the_second_time(volume: Volume):
    volume.stage()
    first = swap_in(volume)
    tree = volume.tree()

    assert swap_in(volume) == first
    assert volume.tree() == tree


def test_roll_back_after_swap_gives_the_old_tree_back(volume: Volume):
    volume.stage()
    swap_in(volume)

    assert swap.roll_back(volume.root, RESTORE_ID) is Phase.ROLLED_BACK
    assert volume.holds_old()


def test_roll_back_after_kurrentdb_ran_on_the_restored_data(volume: Volume):
    # The node started on the restored files: it truncated (deleting a chunk), rebuilt
    # the DuckDB index and wrote a new chunk. None of that may survive a roll back.
    volume.stage()
    swap_in(volume)
    (volume.root / "chunk-000003.000000").unlink()
    (volume.root / "kurrent.ddb").write_bytes(b"rebuilt")
    (volume.root / "chunk-000004.000000").write_bytes(b"new")
    write_checkpoint(volume.root / "truncate.chk", -1)

    swap.roll_back(volume.root, RESTORE_ID)

    assert volume.holds_old()


@pytest.mark.parametrize("phase", [Phase.STAGING, Phase.STAGED])
def test_roll_back_before_the_swap_leaves_the_live_tree_alone(volume: Volume, phase: Phase):
    if phase is Phase.STAGING:
        swap.prepare_staging(volume.root, RESTORE_ID, 1024)
    else:
        volume.stage()

    assert swap.roll_back(volume.root, RESTORE_ID) is Phase.ROLLED_BACK
    assert volume.holds_old()


def test_roll_back_is_idempotent(volume: Volume):
    volume.stage()
    swap_in(volume)
    swap.roll_back(volume.root, RESTORE_ID)
    tree = volume.tree()

    assert swap.roll_back(volume.root, RESTORE_ID) is Phase.ROLLED_BACK
    assert volume.tree() == tree
    assert swap.recover(volume.root) == swap.Recovery(RESTORE_ID, Phase.ROLLED_BACK)


def test_roll_back_refuses_when_the_moved_aside_data_was_removed(volume: Volume):
    volume.stage()
    swap_in(volume)
    shutil.rmtree(volume.restore_dir() / RESTORE_ID / "previous")

    with pytest.raises(SwapError, match=r"moved-aside data .* is missing"):
        swap.roll_back(volume.root, RESTORE_ID)
    assert volume.holds_restored()  # nothing moved: better the restored tree than none


def test_a_rolled_back_restore_cannot_be_swapped_in_again(volume: Volume):
    volume.stage()
    swap_in(volume)
    swap.roll_back(volume.root, RESTORE_ID)

    with pytest.raises(SwapError, match="rolled-back, not staged"):
        swap_in(volume)
    assert volume.holds_old()


def test_discard_after_roll_back_leaves_only_the_old_tree(volume: Volume):
    volume.stage()
    swap_in(volume)
    swap.roll_back(volume.root, RESTORE_ID)

    swap.discard_staging(volume.root, RESTORE_ID)

    assert volume.holds_old()
    assert not volume.restore_dir().exists()
    assert swap.recover(volume.root) is None


def test_discard_of_a_staged_restore_never_touches_live_data(volume: Volume):
    volume.stage()
    swap.discard_staging(volume.root, RESTORE_ID)

    assert volume.holds_old()
    assert not volume.restore_dir().exists()


def test_discard_is_refused_while_the_live_data_is_aside(volume: Volume):
    volume.stage()
    swap_in(volume)

    with pytest.raises(SwapError, match="roll it back or commit it first"):
        swap.discard_staging(volume.root, RESTORE_ID)
    assert volume.holds_restored()
    assert (volume.restore_dir() / RESTORE_ID / "previous" / "writer.chk").exists()


def test_commit_deletes_the_previous_data_and_every_trace_of_the_restore(volume: Volume):
    volume.stage()
    swap_in(volume)

    swap.commit(volume.root, RESTORE_ID)

    assert volume.holds_restored()
    assert not volume.restore_dir().exists()
    swap.commit(volume.root, RESTORE_ID)  # a second commit finds nothing to do
    assert volume.holds_restored()


def test_commit_before_the_swap_is_refused(volume: Volume):
    volume.stage()
    with pytest.raises(SwapError, match="staged, not swapped"):
        swap.commit(volume.root, RESTORE_ID)
    assert volume.holds_old()


def test_no_roll_back_after_commit(volume: Volume):
    volume.stage()
    swap_in(volume)
    swap.commit(volume.root, RESTORE_ID)
    # With the marker gone there is no restore to roll back: the call says so (None).
    assert swap.roll_back(volume.root, RESTORE_ID) is None
    assert volume.holds_restored()


def test_roll_back_of_a_committing_restore_is_refused(volume: Volume):
    volume.stage()
    swap_in(volume)
    with crash_at(0, only=("rename",)), contextlib.suppress(Crash):
        swap.commit(volume.root, RESTORE_ID)  # the marker says committed; then it died

    with pytest.raises(SwapError, match="committed: the previous data is deleted"):
        swap.roll_back(volume.root, RESTORE_ID)


# -- what the restored checkpoints say ----------------------------------------------------


def test_swap_in_reports_the_truncation_of_the_first_start(volume: Volume):
    volume.stage(writer=5_000_000, chaser=1_000_000)
    truncation = swap_in(volume)

    assert truncation == Truncation(writer=5_000_000, chaser=1_000_000)
    assert truncation.requested == 4_000_000
    assert not truncation.needs_raised_limit()


@pytest.mark.parametrize(
    ("requested", "limit", "needs"),
    [
        (DEFAULT_MAX_TRUNCATION, DEFAULT_MAX_TRUNCATION, False),  # the check is `>`
        (DEFAULT_MAX_TRUNCATION + 1, DEFAULT_MAX_TRUNCATION, True),
        (10**12, -1, False),  # -1: no limit
        (20_000, 10_000, True),
        (0, 0, False),
    ],
)
def test_max_truncation_follows_the_truncator(requested: int, limit: int, needs: bool):
    assert Truncation(writer=10**12, chaser=10**12 - requested).needs_raised_limit(limit) is needs


def test_a_backup_more_than_max_truncation_behind_says_so(volume: Volume):
    volume.stage(writer=3 * 2**30, chaser=2 * 2**30)

    truncation = swap_in(volume)

    assert truncation.requested == 2**30
    assert truncation.needs_raised_limit()


@pytest.mark.parametrize(
    ("checkpoints", "message"),
    [
        ({"writer.chk": b"\x00" * 7}, "writer.chk is 7 bytes; KurrentDB writes 8"),
        ({"chaser.chk": b"\x00" * 16}, "chaser.chk is 16 bytes"),
        ({"chaser.chk": struct.pack("<q", 10**9)}, "chaser checkpoint .* is ahead of the writer"),
        ({"writer.chk": struct.pack("<q", -5)}, "negative checkpoint"),
        ({"writer.chk": None}, "cannot read checkpoint writer.chk"),
    ],
)
def test_bad_checkpoints_in_the_backup_are_refused_before_live_data_moves(
    volume: Volume, checkpoints: dict[str, bytes | None], message: str
):
    staged = swap.prepare_staging(volume.root, RESTORE_ID, 1024)
    SyntheticDataDir.create(staged, DataDirSpec(total_size=64 * 1024, chunks=2, seed=3))
    for name, data in checkpoints.items():
        if data is None:
            (staged / name).unlink()
        else:
            (staged / name).write_bytes(data)

    with pytest.raises(SwapError, match=message):
        swap.mark_staged(volume.root, RESTORE_ID)
    with pytest.raises(SwapError, match="staging, not staged"):
        swap_in(volume)
    assert volume.holds_old()


def test_a_backup_holding_the_restore_directory_name_is_refused(volume: Volume):
    staged = swap.prepare_staging(volume.root, RESTORE_ID, 1024)
    SyntheticDataDir.create(staged, DataDirSpec(total_size=64 * 1024, chunks=2, seed=3))
    (staged / ".restore").mkdir()

    with pytest.raises(SwapError, match=r"holds '\.restore'"):
        swap.mark_staged(volume.root, RESTORE_ID)


# -- free space -------------------------------------------------------------------------


def fake_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """The volume has `free` bytes left (in 4 KiB blocks), whatever the test machine has."""
    # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
    result = os.statvfs_result((4096, 4096, 10**9, free // 4096, free // 4096, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: result)


def test_staging_is_refused_when_the_volume_cannot_hold_the_backup(volume: Volume, monkeypatch):
    fake_free_space(monkeypatch, 2 * 2**30)

    with pytest.raises(NotEnoughSpace) as refused:
        swap.prepare_staging(volume.root, RESTORE_ID, 3 * 2**30)

    assert str(refused.value) == (
        "the volume has 2.0 GiB free; the backup needs 3.0 GiB plus a margin of 153.6 MiB"
    )
    assert not volume.restore_dir().exists()  # nothing written, nothing to clean up
    assert volume.holds_old()


def test_the_margin_is_needed_too(volume: Volume, monkeypatch):
    backup = 2**30
    fake_free_space(monkeypatch, backup + swap.free_margin(backup) - 4096)
    with pytest.raises(NotEnoughSpace, match=r"margin of 64\.0 MiB"):
        swap.prepare_staging(volume.root, RESTORE_ID, backup)

    fake_free_space(monkeypatch, backup + swap.free_margin(backup))
    assert swap.prepare_staging(volume.root, RESTORE_ID, backup).is_dir()


def test_bytes_already_staged_count_as_held(volume: Volume, monkeypatch):
    staged = swap.prepare_staging(volume.root, RESTORE_ID, 10 * 2**20)
    (staged / "chunk-000000.000000").write_bytes(b"\1" * (8 * 2**20))  # a download half done
    fake_free_space(monkeypatch, 2 * 2**20 + swap.MIN_FREE_MARGIN)

    assert swap.prepare_staging(volume.root, RESTORE_ID, 10 * 2**20) == staged

    fake_free_space(monkeypatch, 2 * 2**20 + swap.MIN_FREE_MARGIN - 4096)
    with pytest.raises(NotEnoughSpace, match=r"\(8.0 MiB already staged\)"):
        swap.prepare_staging(volume.root, RESTORE_ID, 10 * 2**20)


@pytest.mark.parametrize("size", [-1, 1.5, "100", True, None])
def test_a_backup_size_that_is_not_a_byte_count_is_refused(volume: Volume, size: Any):
    with pytest.raises(SwapError, match="whole number of bytes"):
        swap.prepare_staging(volume.root, RESTORE_ID, size)


def test_free_bytes_measures_the_volume(tmp_path: Path):
    stats = os.statvfs(tmp_path)
    assert swap.free_bytes(tmp_path) == stats.f_bavail * stats.f_frsize


# -- one restore at a time, and ids that name directories ---------------------------------


def test_a_second_restore_is_refused_while_one_is_on_the_volume(volume: Volume):
    volume.stage()
    with pytest.raises(SwapError, match=f"restore {RESTORE_ID} is still on this volume"):
        swap.prepare_staging(volume.root, "another", 1024)
    with pytest.raises(SwapError, match=f"holds restore {RESTORE_ID} \\(staged\\), not another"):
        swap.roll_back(volume.root, "another")


@pytest.mark.parametrize("restore_id", ["", "..", ".", "../data", "a/b", "-x", "x" * 65, 7, None])
def test_restore_ids_that_are_not_one_safe_directory_name_are_refused(volume: Volume, restore_id):
    with pytest.raises(SwapError, match="is not allowed: use 1 to 64 letters"):
        swap.prepare_staging(volume.root, restore_id, 1024)
    assert not volume.restore_dir().exists()


# -- the marker is data on a volume: checked, never trusted ---------------------------------


def test_the_marker_is_json_naming_the_restore_and_phase(volume: Volume):
    volume.stage()
    swap_in(volume)

    marker = json.loads((volume.restore_dir() / swap.MARKER_NAME).read_text())

    assert marker["restore-id"] == RESTORE_ID
    assert marker["phase"] == "swapped"
    assert "writer.chk" in marker["live-entries"]
    assert "lost+found" not in marker["live-entries"]
    assert (marker["uid"], marker["gid"]) == (WORKLOAD_UID, WORKLOAD_GID)
    assert not list(volume.restore_dir().glob("*.tmp"))


marker_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
GOOD_MARKER = json.loads(
    swap.Marker(RESTORE_ID, Phase.SWAPPED, ("chunk-000000.000000",), ("a",), 1001, 1001).to_json()
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(key=st.sampled_from(sorted(GOOD_MARKER)), value=marker_values)
def test_a_marker_with_any_field_replaced_is_read_or_refused_with_a_message(key, value):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp, swap.RESTORE_DIR)
        base.mkdir()
        (base / swap.MARKER_NAME).write_text(json.dumps({**GOOD_MARKER, key: value}))
        try:
            marker = swap.read_marker(tmp)
        except SwapError as e:
            assert "unreadable" in str(e)
            return
        assert marker is not None
        assert all(swap._is_entry_name(n) for n in (*marker.live_entries, *marker.staged_entries))
        swap.validate_restore_id(marker.restore_id)


@pytest.mark.parametrize(
    "content", [b"", b"{", b"\xff\xfe", b"[]", b'{"format": 2}', b"{" * 100_000, b" " * (2 << 20)]
)
def test_an_unreadable_marker_stops_recovery_with_a_message(volume: Volume, content: bytes):
    volume.restore_dir().mkdir()
    (volume.restore_dir() / swap.MARKER_NAME).write_bytes(content)

    with pytest.raises(
        SwapError, match=r"restore marker .* is unreadable .*check the volume by hand"
    ):
        swap.recover(volume.root)
    assert volume.holds_old()


# -- crashes ------------------------------------------------------------------------------


class Crash(BaseException):
    """The hook died here (BaseException: no `except Exception` in the code may catch it)."""


MUTATIONS = ("rename", "replace", "unlink", "rmdir")


@contextlib.contextmanager
def crash_at(n: int | None, only: tuple[str, ...] = MUTATIONS) -> Iterator[list[str]]:
    """Make the file-system change number `n` (from 0) raise Crash; None: count only."""
    done: list[str] = []
    real = {name: getattr(os, name) for name in only}

    def wrap(name: str) -> Callable[..., Any]:
        def mutation(*args: Any, **kwargs: Any) -> Any:
            if n is not None and len(done) == n:
                raise Crash(f"crash before {name} #{n}")
            done.append(name)
            return real[name](*args, **kwargs)

        return mutation

    with pytest.MonkeyPatch.context() as patch:
        for name in only:
            patch.setattr(os, name, wrap(name))
        yield done


def swap_then(step: str, volume: Volume) -> None:
    """The step under test, from the phase it starts in."""
    if step == "swap":
        swap_in(volume)
    elif step == "roll back":
        swap.roll_back(volume.root, RESTORE_ID)
    elif step == "commit":
        swap.commit(volume.root, RESTORE_ID)
    elif step == "discard":
        swap.discard_staging(volume.root, RESTORE_ID)


def prepare(step: str, root: Path) -> Volume:
    volume = Volume(root)
    volume.stage()
    if step in ("roll back", "commit"):
        swap_in(volume)
    if step == "discard":
        swap_in(volume)
        swap.roll_back(volume.root, RESTORE_ID)
    return volume


# Where a step ends once it is through: the old tree or the restored one.
ENDS = {"swap": "restored", "roll back": "old", "commit": "restored", "discard": "old"}


def mutation_count(step: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        volume = prepare(step, Path(tmp, "data"))
        with crash_at(None) as done:
            swap_then(step, volume)
        return len(done)


def assert_whole(volume: Volume, step: str) -> None:
    """The volume holds one whole tree, and the one its marker's phase says."""
    marker = swap.read_marker(volume.root)
    if marker is None:
        expected = ENDS[step]
    else:
        assert marker.phase in (Phase.STAGED, Phase.SWAPPED, Phase.ROLLED_BACK), marker.phase
        expected = "restored" if marker.phase is Phase.SWAPPED else "old"
    old, restored = volume.holds_old(), volume.holds_restored()
    assert old or restored, "a mix of the old and the restored tree"
    assert (old, restored) == (expected == "old", expected == "restored")


@pytest.mark.parametrize("step", list(ENDS))
def test_a_crash_before_any_change_then_recover_ends_whole(step: str):
    # Exhaustive over N for each step: the property test below also varies the second
    # crash, in recover itself.
    for n in range(mutation_count(step) + 1):
        with tempfile.TemporaryDirectory() as tmp:
            volume = prepare(step, Path(tmp, "data"))
            with crash_at(n), contextlib.suppress(Crash):
                swap_then(step, volume)
            swap.recover(volume.root)
            assert_whole(volume, step)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    step=st.sampled_from(list(ENDS)),
    first=st.integers(0, 60),
    second=st.none() | st.integers(0, 60),
    then=st.sampled_from(["roll back", "commit", "nothing"]),
)
def test_crashes_anywhere_and_recover_never_leave_a_mix(step, first, second, then):
    with tempfile.TemporaryDirectory() as tmp:
        volume = prepare(step, Path(tmp, "data"))
        with crash_at(first), contextlib.suppress(Crash):
            swap_then(step, volume)
        if second is not None:  # recover dies too, once
            with crash_at(second), contextlib.suppress(Crash):
                swap.recover(volume.root)
        first_recovery = swap.recover(volume.root)
        tree = volume.tree()
        assert swap.recover(volume.root) == _settled(first_recovery)  # recover is idempotent
        assert volume.tree() == tree
        assert_whole(volume, step)

        # Whatever the plan decides next still works from here.
        marker = swap.read_marker(volume.root)
        if then == "roll back" and (marker is None or marker.phase is not Phase.COMMITTED):
            if marker is not None:
                swap.roll_back(volume.root, RESTORE_ID)
                swap.discard_staging(volume.root, RESTORE_ID)
            assert volume.holds_old() or (marker is None and volume.holds_restored())
        elif then == "commit" and marker is not None and marker.phase is Phase.SWAPPED:
            swap.commit(volume.root, RESTORE_ID)
            assert volume.holds_restored()
            assert not volume.restore_dir().exists()


def _settled(recovery: swap.Recovery | None) -> swap.Recovery | None:
    """What a second recover says after the first finished a step: the phase, nothing done."""
    if recovery is None or recovery.phase is None:
        return None
    return swap.Recovery(recovery.restore_id, recovery.phase)


def test_recover_finishes_a_swap_that_died_half_way(volume: Volume):
    volume.stage()
    with crash_at(5, only=("rename",)), contextlib.suppress(Crash):
        swap_in(volume)
    assert not volume.holds_old() and not volume.holds_restored()  # a mix, for now

    assert swap.recover(volume.root) == swap.Recovery(RESTORE_ID, Phase.SWAPPED, "swap")
    assert volume.holds_restored()


def test_recover_finishes_a_roll_back_that_died_half_way(volume: Volume):
    volume.stage()
    swap_in(volume)
    with crash_at(5, only=("rename",)), contextlib.suppress(Crash):
        swap.roll_back(volume.root, RESTORE_ID)
    assert not volume.holds_old() and not volume.holds_restored()

    assert swap.recover(volume.root) == swap.Recovery(RESTORE_ID, Phase.ROLLED_BACK, "roll back")
    assert volume.holds_old()


def test_recover_with_nothing_on_the_volume(volume: Volume):
    assert swap.recover(volume.root) is None
    assert volume.holds_old()


def test_the_swap_module_costs_a_hook_no_heavy_import():
    # recover() runs in every hook before the workload starts: it may load only the stdlib.
    code = "import sys, backup.swap; print(sorted(m.split('.')[0] for m in sys.modules))"
    src = Path(__file__).parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    loaded = set(ast.literal_eval(out))
    assert "backup" in loaded
    assert not loaded & {"boto3", "botocore", "azure", "cryptography", "jinja2", "ops", "yaml"}
