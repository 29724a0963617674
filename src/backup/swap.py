"""A restore's steps on one unit's volume: stage, swap in, roll back or commit.

KurrentDB's data directory is the root of the `data` volume (`workload.paths.DATA_DIR`, which
the charm container sees at the same path). A restore keeps its files on that same volume,
so every move is a rename and no step copies data::

    <volume>/.restore/marker.json           the one restore on this volume, and its phase
    <volume>/.restore/<id>/staged/          the verified backup (filled by the engine)
    <volume>/.restore/<id>/previous/        the live data, moved aside by `swap_in`
    <volume>/.restore/<id>/rejected/        restored data, moved away again by `roll_back`

The marker is JSON written atomically (temp file, fsync, rename, fsync of the directory). It
is written before every step that moves live data, and it records the names of the live
entries, so a unit that dies at any point finds on its next hook (`recover`) whether each
name at the volume root is old or restored: a live name whose old entry is no longer in
`previous/` is old; anything else at the root is restored. That one rule lets an
interrupted swap finish and an interrupted roll back finish, from any point, as often as
asked, and always ends on the whole old tree or the whole restored one, never a mix.

Phases, in order (the final two exclude each other)::

    staging -> staged -> swapping -> swapped -> committed (then nothing is left)
    any phase before committed -> rolling-back -> rolled-back

KurrentDB must be stopped whenever live data moves (`swap_in`, `roll_back`, and `recover`
when it finishes one of them): the caller guarantees it, as the restore procedure requires
("A restore must happen on a stopped node", docs/server/operations/backup.md, v26.1.0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

RESTORE_DIR = ".restore"
MARKER_NAME = "marker.json"
# Entries of the volume root that are not KurrentDB's data and never move: the restore's
# own directory, and ext4's lost+found, which fsck expects to find where mkfs put it.
UNTOUCHED = frozenset({RESTORE_DIR, "lost+found"})
MARKER_FORMAT = 1
# A restore id names a directory: one path component, nothing a shell or a path would read
# as something else.
_RESTORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_MARKER_BYTES = 1 << 20
TRASH_PREFIX = ".trash-"

# KurrentDB's checkpoint files hold one little-endian Int64 in exactly 8 bytes
# (src/KurrentDB.Core/TransactionLog/Checkpoint/FileCheckpoint.cs l.34-35 and l.46-49:
# `SetLength(8)`, `BinaryReader.ReadInt64`; Linux uses FileCheckpoint, ClusterVNode.cs
# l.429-440).
CHECKPOINT_SIZE = 8
WRITER_CHECKPOINT, CHASER_CHECKPOINT, TRUNCATE_CHECKPOINT = (
    "writer.chk",
    "chaser.chk",
    "truncate.chk",
)
# The MaxTruncation default: ClusterVNodeOptions.cs l.429 (`256 * 1_024 * 1_024`).
DEFAULT_MAX_TRUNCATION = 256 * 2**20
# What staging keeps free beyond the backup's own size: KurrentDB's first start after the
# restore writes (truncation, index), and a full volume stops it.
MIN_FREE_MARGIN = 64 * 2**20
FREE_MARGIN_FRACTION = 0.05


class Phase(str, enum.Enum):
    """Where a restore stands on this volume."""

    STAGING = "staging"
    STAGED = "staged"
    SWAPPING = "swapping"
    SWAPPED = "swapped"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    COMMITTED = "committed"


# The phases in which the live data is in place, so the restore's files may simply go.
_DISCARDABLE = (Phase.STAGING, Phase.STAGED, Phase.ROLLED_BACK)


class SwapError(Exception):
    """A restore step refused or could not run; the message names the cause."""


class NotEnoughSpace(SwapError):  # noqa: N818 (reads better than NotEnoughSpaceError)
    """The volume cannot hold the backup beside the live data."""


@dataclasses.dataclass(frozen=True)
class Marker:
    """The marker file's content."""

    restore_id: str
    phase: Phase
    # Set from `swapping` on: the live entries at the volume root when the swap began, the
    # staged entries it moves in, and who the restored files belong to.
    live_entries: tuple[str, ...] = ()
    staged_entries: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps(
            {
                "format": MARKER_FORMAT,
                "restore-id": self.restore_id,
                "phase": self.phase.value,
                "live-entries": list(self.live_entries),
                "staged-entries": list(self.staged_entries),
                "uid": self.uid,
                "gid": self.gid,
                "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Marker:
        """Parse strictly: a hand-edited or foreign marker is refused, never guessed at."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
            raise ValueError(f"not a format-{MARKER_FORMAT} marker")
        restore_id = validate_restore_id(data.get("restore-id"))
        phase = Phase(data.get("phase"))
        names = {key: data.get(key, []) for key in ("live-entries", "staged-entries")}
        for key, value in names.items():
            if not isinstance(value, list) or not all(_is_entry_name(n) for n in value):
                raise ValueError(f"{key} must be a list of file names")
        ids = {key: data.get(key) for key in ("uid", "gid")}
        for key, value in ids.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{key} must be an integer")
            if isinstance(value, int) and not 0 <= value < 2**32:
                raise ValueError(f"{key} is out of range")
        if phase in (Phase.SWAPPING, Phase.SWAPPED) and (ids["uid"] is None or ids["gid"] is None):
            raise ValueError(f"a {phase.value} marker must name the uid and gid")
        return cls(
            restore_id,
            phase,
            tuple(names["live-entries"]),
            tuple(names["staged-entries"]),
            ids["uid"],
            ids["gid"],
        )


@dataclasses.dataclass(frozen=True)
class Truncation:
    """What KurrentDB's first start after the restore truncates.

    With `truncate.chk` := `chaser.chk`, the node truncates the log from the writer
    checkpoint back to the chaser checkpoint on its first start, then exits with code 0
    and expects to be started again (ClusterVNode.cs l.1638-1663). If that is more than
    `MaxTruncation` bytes it refuses to start instead ("MaxTruncation is set and truncate
    checkpoint is out of bounds", TFChunkDbTruncator.cs l.33-42: `writerChk - truncateChk >
    MaxTruncation` when `MaxTruncation >= 0`).
    """

    writer: int
    chaser: int

    @property
    def requested(self) -> int:
        """The bytes of log the first start removes."""
        return self.writer - self.chaser

    def needs_raised_limit(self, max_truncation: int = DEFAULT_MAX_TRUNCATION) -> bool:
        """Whether a node with this `MaxTruncation` refuses its first start (-1: no limit)."""
        return max_truncation >= 0 and self.requested > max_truncation


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What `recover` found, and the interrupted step it finished (if any)."""

    restore_id: str
    phase: Phase | None  # None: the restore committed and nothing of it is left
    finished: str | None = None


@dataclasses.dataclass(frozen=True)
class RestoreDirs:
    """The paths of one restore on one volume."""

    volume: Path
    restore_id: str

    @property
    def base(self) -> Path:
        """`<volume>/.restore`."""
        return self.volume / RESTORE_DIR

    @property
    def marker(self) -> Path:
        """The marker file."""
        return self.base / MARKER_NAME

    @property
    def work(self) -> Path:
        """`<volume>/.restore/<id>`."""
        return self.base / self.restore_id

    @property
    def staged(self) -> Path:
        """Where the engine puts the verified backup."""
        return self.work / "staged"

    @property
    def previous(self) -> Path:
        """Where the live data waits until commit or roll back."""
        return self.work / "previous"

    @property
    def rejected(self) -> Path:
        """Where a roll back puts the restored data."""
        return self.work / "rejected"

    @property
    def trash(self) -> Path:
        """Where the restore's directory goes to be deleted (no restore id looks like it)."""
        return self.base / f"{TRASH_PREFIX}{self.restore_id}"


def validate_restore_id(restore_id: Any) -> str:
    """The id if it can name a directory; SwapError saying what is allowed otherwise."""
    if not isinstance(restore_id, str) or not _RESTORE_ID.fullmatch(restore_id):
        raise SwapError(
            f"restore id {restore_id!r} is not allowed: use 1 to 64 letters, digits, '.', '_'"
            " or '-', starting with a letter or digit"
        )
    return restore_id


def read_marker(volume: Path | str) -> Marker | None:
    """The restore on this volume, or None; SwapError if the marker cannot be read."""
    path = Path(volume, RESTORE_DIR, MARKER_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_MARKER_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SwapError(f"cannot read the restore marker {path}: {e.strerror}") from None
    try:
        if len(raw) > _MAX_MARKER_BYTES:
            raise ValueError("it is too large")
        return Marker.from_json(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError, SwapError) as e:
        raise SwapError(
            f"the restore marker {path} is unreadable ({e}); check the volume by hand"
        ) from None


def read_checkpoint(path: Path) -> int:
    """A KurrentDB checkpoint file's value; SwapError unless it is 8 bytes."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SwapError(f"cannot read checkpoint {path.name}: {e.strerror}") from None
    if len(data) != CHECKPOINT_SIZE:
        raise SwapError(
            f"checkpoint {path.name} is {len(data)} bytes; KurrentDB writes {CHECKPOINT_SIZE}"
        )
    return int(struct.unpack("<q", data)[0])


def truncation_of(directory: Path) -> Truncation:
    """The writer and chaser checkpoints of a data directory, checked as KurrentDB does.

    A chaser ahead of the writer is a corrupt database to KurrentDB (TFChunkDb.cs
    l.282-286, ReaderCheckpointHigherThanWriterException); a negative writer or chaser is
    not one it writes (both start at 0, ClusterVNode.cs l.431-432).
    """
    writer = read_checkpoint(directory / WRITER_CHECKPOINT)
    chaser = read_checkpoint(directory / CHASER_CHECKPOINT)
    if writer < 0 or chaser < 0:
        raise SwapError(f"negative checkpoint (writer {writer}, chaser {chaser})")
    if chaser > writer:
        raise SwapError(f"the chaser checkpoint ({chaser}) is ahead of the writer ({writer})")
    return Truncation(writer, chaser)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def free_margin(backup_bytes: int) -> int:
    """What staging leaves free beyond the backup: 5%, at least 64 MiB."""
    return max(MIN_FREE_MARGIN, int(backup_bytes * FREE_MARGIN_FRACTION))


def prepare_staging(volume: Path | str, restore_id: str, backup_bytes: int) -> Path:
    """Make the staging directory for a backup of `backup_bytes`; return its path.

    Refuses while another restore is on the volume, and when the volume cannot hold the
    backup plus `free_margin` (bytes already staged for this restore count as held, so a
    download that failed half-way may be resumed).
    """
    dirs = RestoreDirs(Path(volume), validate_restore_id(restore_id))
    if isinstance(backup_bytes, bool) or not isinstance(backup_bytes, int) or backup_bytes < 0:
        raise SwapError(f"the backup size must be a whole number of bytes, not {backup_bytes!r}")
    marker = read_marker(dirs.volume)
    if marker is not None and marker.restore_id != restore_id:
        raise SwapError(
            f"restore {marker.restore_id} is still on this volume ({marker.phase.value});"
            " finish or discard it first"
        )
    if marker is not None and marker.phase is not Phase.STAGING:
        raise SwapError(f"restore {restore_id} is already {marker.phase.value}")
    already = _tree_bytes(dirs.staged)
    needed = max(0, backup_bytes - already) + free_margin(backup_bytes)
    available = free_bytes(dirs.volume)
    if available < needed:
        raise NotEnoughSpace(
            f"the volume has {_size(available)} free; the backup needs {_size(backup_bytes)}"
            + (f" ({_size(already)} already staged)" if already else "")
            + f" plus a margin of {_size(free_margin(backup_bytes))}"
        )
    _empty_trash(dirs.base)
    if marker is None:
        _write_marker(dirs, Marker(restore_id, Phase.STAGING))
    dirs.staged.mkdir(parents=True, exist_ok=True)
    return dirs.staged


def mark_staged(volume: Path | str, restore_id: str) -> Truncation:
    """Record that the staging directory holds the whole backup, every checksum verified.

    Checks the staged checkpoints as KurrentDB will, so that a bad backup is refused
    before live data is touched; returns what the first start will truncate.
    """
    dirs, marker = _current(volume, restore_id, Phase.STAGING, Phase.STAGED)
    truncation = truncation_of(dirs.staged)
    clash = sorted(UNTOUCHED & set(os.listdir(dirs.staged)))
    if clash:
        raise SwapError(f"the backup holds {clash[0]!r}, which a data directory may not hold")
    if marker.phase is Phase.STAGING:
        _write_marker(dirs, dataclasses.replace(marker, phase=Phase.STAGED))
    return truncation


def swap_in(volume: Path | str, restore_id: str, uid: int, gid: int) -> Truncation:
    """Put the staged backup in place of the live data; KurrentDB must be stopped.

    Moves every live entry of the volume root into `previous/`, the staged entries to the
    root, owned by `uid`:`gid`, and writes `truncate.chk` as a copy of `chaser.chk` (the
    documented restore, docs/server/operations/backup.md). Resumes an interrupted swap;
    a finished one returns at once. Returns what the first start truncates: the caller
    raises `MaxTruncation` for that start when `needs_raised_limit` says so.
    """
    for name, value in (("uid", uid), ("gid", gid)):  # os.chown takes -1 as "leave it"
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise SwapError(f"the workload {name} must be a number from 0, not {value!r}")
    dirs, marker = _current(volume, restore_id, Phase.STAGED, Phase.SWAPPING, Phase.SWAPPED)
    if marker.phase is Phase.SWAPPED:
        return truncation_of(dirs.volume)
    if marker.phase is Phase.STAGED:
        truncation_of(dirs.staged)  # refuse a bad backup before live data moves
        if os.stat(dirs.staged).st_dev != os.stat(dirs.volume).st_dev:
            raise SwapError("the staging directory is not on the data volume")
        _chown_tree(dirs.staged, uid, gid)
        marker = Marker(
            restore_id,
            Phase.SWAPPING,
            live_entries=tuple(sorted(_data_entries(dirs.volume))),
            staged_entries=tuple(sorted(os.listdir(dirs.staged))),
            uid=uid,
            gid=gid,
        )
        _write_marker(dirs, marker)
    _finish_swap(dirs, marker)
    return truncation_of(dirs.volume)


def roll_back(volume: Path | str, restore_id: str) -> Phase | None:
    """Put the live data back exactly as it was; KurrentDB must be stopped.

    Works from any phase before `committed`, resumes an interrupted roll back, and does
    nothing the second time. Restored files (and anything KurrentDB wrote since) go to
    `rejected/`, which `discard_staging` removes. Returns the phase it ended on (None when
    no restore is on the volume).
    """
    dirs = RestoreDirs(Path(volume), validate_restore_id(restore_id))
    marker = read_marker(dirs.volume)
    if marker is None:
        return None
    _same_restore(marker, restore_id)
    if marker.phase is Phase.COMMITTED:
        raise SwapError(f"restore {restore_id} is committed: the previous data is deleted")
    if marker.phase is Phase.ROLLED_BACK:
        return Phase.ROLLED_BACK
    if marker.phase is Phase.SWAPPED and marker.live_entries and not dirs.previous.is_dir():
        # Something outside the restore removed it: what is at the root is all there is.
        raise SwapError(f"the moved-aside data {dirs.previous} is missing; check by hand")
    if marker.phase in (Phase.SWAPPING, Phase.SWAPPED):
        marker = dataclasses.replace(marker, phase=Phase.ROLLING_BACK)
        _write_marker(dirs, marker)
    if marker.phase is Phase.ROLLING_BACK:
        _finish_roll_back(dirs, marker)
    _write_marker(dirs, dataclasses.replace(marker, phase=Phase.ROLLED_BACK))
    return Phase.ROLLED_BACK


def commit(volume: Path | str, restore_id: str) -> None:
    """Delete the moved-aside data once the cluster serves the restored data.

    The point of no return: call it only when every unit swapped and the cluster serves.
    Resumes an interrupted commit; a finished one (no marker left) is a no-op.
    """
    dirs = RestoreDirs(Path(volume), validate_restore_id(restore_id))
    marker = read_marker(dirs.volume)
    if marker is None:
        return
    _same_restore(marker, restore_id)
    if marker.phase not in (Phase.SWAPPED, Phase.COMMITTED):
        raise SwapError(f"restore {restore_id} is {marker.phase.value}, not swapped")
    if marker.phase is Phase.SWAPPED:
        _write_marker(dirs, dataclasses.replace(marker, phase=Phase.COMMITTED))
    _remove_restore(dirs)


def discard_staging(volume: Path | str, restore_id: str) -> None:
    """Remove a restore that will not go ahead (or was rolled back), and its marker.

    Never touches live data: refused while the live data is moved aside (swapping,
    swapped, rolling-back), where `roll_back` or `commit` must come first.
    """
    dirs = RestoreDirs(Path(volume), validate_restore_id(restore_id))
    marker = read_marker(dirs.volume)
    if marker is None:
        return
    _same_restore(marker, restore_id)
    if marker.phase is Phase.COMMITTED:
        _remove_restore(dirs)
        return
    if marker.phase not in _DISCARDABLE:
        raise SwapError(
            f"restore {restore_id} is {marker.phase.value}: roll it back or commit it first"
        )
    if dirs.previous.exists() and os.listdir(dirs.previous):
        raise SwapError(f"{dirs.previous} still holds data; check the volume by hand")
    _remove_restore(dirs)


def recover(volume: Path | str) -> Recovery | None:
    """Finish whatever step a dead hook left half done; None when no restore is here.

    An interrupted swap is finished (the backup was verified and the swap decided), as is
    an interrupted roll back or commit. The phase returned is stable: the caller's restore
    plan decides what follows (start the node, roll back, commit, discard). KurrentDB
    must not run before this returns.
    """
    marker = read_marker(Path(volume))
    if marker is None:
        return None
    dirs = RestoreDirs(Path(volume), marker.restore_id)
    if marker.phase is Phase.SWAPPING:
        _finish_swap(dirs, marker)
        return Recovery(marker.restore_id, Phase.SWAPPED, "swap")
    if marker.phase is Phase.ROLLING_BACK:
        roll_back(volume, marker.restore_id)
        return Recovery(marker.restore_id, Phase.ROLLED_BACK, "roll back")
    if marker.phase is Phase.COMMITTED:
        _remove_restore(dirs)
        return Recovery(marker.restore_id, None, "commit")
    if marker.phase in _DISCARDABLE and not dirs.work.exists():
        _remove_restore(dirs)  # a discard stopped between moving the directory and the marker
        return Recovery(marker.restore_id, None, "discard")
    _empty_trash(dirs.base)
    return Recovery(marker.restore_id, marker.phase)


# -- the steps ---------------------------------------------------------------------------


def _finish_swap(dirs: RestoreDirs, marker: Marker) -> None:
    """Carry a `swapping` marker's swap through from wherever it stopped."""
    assert marker.uid is not None and marker.gid is not None  # Marker.from_json checks it
    dirs.previous.mkdir(exist_ok=True)
    for name in marker.live_entries:  # an entry already in previous/ moved; its name at
        if _exists(dirs.volume / name) and not _exists(dirs.previous / name):  # the root is
            _move(dirs.volume / name, dirs.previous / name)  # then the restored one
    _sync_dirs(dirs.volume, dirs.previous)
    for name in marker.staged_entries:
        if _exists(dirs.staged / name):
            _move(dirs.staged / name, dirs.volume / name)
    _write_truncate_checkpoint(dirs, marker.uid, marker.gid)
    _sync_dirs(dirs.volume, dirs.staged)
    _write_marker(dirs, dataclasses.replace(marker, phase=Phase.SWAPPED))


def _finish_roll_back(dirs: RestoreDirs, marker: Marker) -> None:
    """Carry a `rolling-back` marker's roll back through from wherever it stopped."""
    live = set(marker.live_entries)
    dirs.rejected.mkdir(exist_ok=True)
    for name in sorted(_data_entries(dirs.volume)):
        old_and_back = name in live and not _exists(dirs.previous / name)
        if not old_and_back:
            _move(dirs.volume / name, dirs.rejected / name)
    _sync_dirs(dirs.volume, dirs.rejected)
    if dirs.previous.exists():
        for name in sorted(os.listdir(dirs.previous)):
            _move(dirs.previous / name, dirs.volume / name)
    _sync_dirs(dirs.volume, dirs.previous)


def _write_truncate_checkpoint(dirs: RestoreDirs, uid: int, gid: int) -> None:
    """`truncate.chk` := `chaser.chk`, atomically, owned by the workload user."""
    chaser = dirs.volume / CHASER_CHECKPOINT
    temporary = dirs.work / f"{TRUNCATE_CHECKPOINT}.tmp"
    data = chaser.read_bytes()
    _write_synced(temporary, data, mode=os.stat(chaser).st_mode & 0o777)
    os.chown(temporary, uid, gid)
    os.replace(temporary, dirs.volume / TRUNCATE_CHECKPOINT)


def _remove_restore(dirs: RestoreDirs) -> None:
    """Delete the restore's directory and its marker.

    The directory is first renamed out of the way, in one step, so that a marker whose
    directory is half deleted never exists: a crash leaves the marker with no directory
    at all (which `recover` finishes removing) or the trash (which it empties).
    """
    if dirs.work.exists():
        os.rename(dirs.work, dirs.trash)
        _sync_dirs(dirs.base)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dirs.marker)
    _sync_dirs(dirs.base)
    _empty_trash(dirs.base)
    with contextlib.suppress(OSError):  # only once nothing is left in it
        os.rmdir(dirs.base)


def _empty_trash(base: Path) -> None:
    if base.exists():
        for name in os.listdir(base):
            if name.startswith(TRASH_PREFIX):
                shutil.rmtree(base / name)


# -- helpers -----------------------------------------------------------------------------


def _current(volume: Path | str, restore_id: str, *phases: Phase) -> tuple[RestoreDirs, Marker]:
    dirs = RestoreDirs(Path(volume), validate_restore_id(restore_id))
    marker = read_marker(dirs.volume)
    if marker is None:
        raise SwapError(f"restore {restore_id} is not on this volume")
    _same_restore(marker, restore_id)
    if marker.phase not in phases:
        allowed = " or ".join(p.value for p in phases)
        raise SwapError(f"restore {restore_id} is {marker.phase.value}, not {allowed}")
    return dirs, marker


def _same_restore(marker: Marker, restore_id: str) -> None:
    if marker.restore_id != restore_id:
        raise SwapError(
            f"the volume holds restore {marker.restore_id} ({marker.phase.value}), not {restore_id}"
        )


def _data_entries(volume: Path) -> list[str]:
    """The volume root's entries that are KurrentDB's data."""
    return [name for name in os.listdir(volume) if name not in UNTOUCHED]


def _is_entry_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
    )


def _exists(path: Path) -> bool:
    """Whether anything is there, a dangling symlink included."""
    return os.path.lexists(path)


def _move(source: Path, target: Path) -> None:
    # os.rename replaces an existing file without a word; the rules above never aim at one.
    if _exists(target):
        raise SwapError(f"cannot move {source.name}: {target} already exists")
    os.rename(source, target)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    for directory, subdirectories, files in os.walk(top):
        os.chown(directory, uid, gid)
        for name in (*subdirectories, *files):
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def _tree_bytes(top: Path) -> int:
    total = 0
    for directory, _, files in os.walk(top):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _write_marker(dirs: RestoreDirs, marker: Marker) -> None:
    """Replace the marker atomically: a reader sees the old one or the new one, whole."""
    dirs.base.mkdir(mode=0o700, exist_ok=True)
    temporary = dirs.base / f"{MARKER_NAME}.tmp"
    _write_synced(temporary, marker.to_json().encode(), mode=0o600)
    os.replace(temporary, dirs.marker)
    _sync_dirs(dirs.base)


def _write_synced(path: Path, data: bytes, *, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dirs(*directories: Path) -> None:
    """Make the renames into and out of these directories durable."""
    for directory in directories:
        if not directory.exists():
            continue
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
