"""Which history each unit's data volume holds, for simulations with backups and restores.

The simulated nodes keep their log as segments (`kurrentdb_cluster.Log`), while a unit's
volume holds real files (a synthetic KurrentDB data directory) that the charm backs up,
downloads, swaps and rolls back. `VolumeHistories` ties the two together: a volume's
data set is told apart by its checkpoints and index map (`data_identity`), and whenever
a node starts on another data set than it last ran, its log becomes that data set's:
its own earlier log (a roll back put the old data back), or the log the backed-up node
held when the backup was taken (a restore swapped the backup in), in a history of its
own, so that writes acknowledged after the backup count as dropped by the restore, not
lost (invariant c). A volume with a truncate checkpoint makes the node's first start
truncate, reset it and exit, as KurrentDB does (`truncation`).

The harness checks two invariants with it, next to the cluster model's:

- (f) KurrentDB never starts on a volume whose data is half moved (a restore marker in
  ``swapping`` or ``rolling-back``), nor on data the model cannot account for;
- (g) no volume's data changes under a running node (every move happens while stopped).

The tests must write to the volumes after a backup (`Simulation.grow_data`): data sets
are told apart by content, so a backup identical to the live data would be the same set.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.kurrentdb_cluster import Log, SimCluster

# The files a data set is recognised by: they change with every write (the checkpoints)
# and with every index table (the index map).
IDENTITY_FILES = ("writer.chk", "chaser.chk", "epoch.chk", "index/indexmap")
MARKER = pathlib.Path(".restore") / "marker.json"
MOVING_PHASES = ("swapping", "rolling-back")  # swap.Phase values with live data half moved
DEFAULT_MAX_TRUNCATION = 256 * 2**20  # ClusterVNodeOptions.cs l.429, v26.1.0


def data_identity(volume: pathlib.Path) -> str | None:
    """A short name for the data set live at the volume's root; None while it is half moved."""
    marker = volume / MARKER
    if marker.exists():
        try:
            phase = json.loads(marker.read_text()).get("phase")
        except (ValueError, AttributeError):
            return None  # a marker nobody can read: nobody knows what is live
        if phase in MOVING_PHASES:
            return None
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = volume / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"-"))
    return digest.hexdigest()[:12]


@dataclass
class VolumeHistories:
    """The data sets each unit's node has run, and the backups taken."""

    cluster: SimCluster
    # The data set each node last started on (or was told about, `regrown`).
    running: dict[str, str] = field(default_factory=dict)
    # What each unit's node held of each data set it ran: (history, log).
    held: dict[tuple[str, str], tuple[str, Log]] = field(default_factory=dict)
    # The log behind each backed-up data set: what the source node held at the time.
    backups: dict[str, Log] = field(default_factory=dict)
    truncations: list[tuple[str, int]] = field(default_factory=list)  # (unit, to position)

    def backed_up(self, unit: str, volume: pathlib.Path) -> str:
        """A backup of ``unit``'s volume was just taken; returns its data set's name."""
        key = data_identity(volume)
        assert key is not None, f"{unit} backed up a half-moved volume"
        self.backups[key] = self.cluster.node(unit).log
        return key

    def regrown(self, unit: str, before: str | None, after: str | None) -> None:
        """The test wrote to a unit's volume (data set ``before`` became ``after``)."""
        if after is not None and self.running.get(unit) == before:
            self.running[unit] = after

    def before_start(self, unit: str, volume: pathlib.Path) -> None:
        """KurrentDB is about to start on ``unit``: give its node the volume's history."""
        key = data_identity(volume)
        if key is None:
            self.cluster.report_breach(
                "f: KurrentDB started on a half-moved volume", f"{unit}: {volume / MARKER}"
            )
            return
        node = self.cluster.node(unit)
        last = self.running.get(unit)
        self.running[unit] = key
        if last is None or last == key:
            return  # its first start, or the data it ran before
        self.held[(unit, last)] = (node.lineage, node.log)
        if (unit, key) in self.held:
            lineage, log = self.held[(unit, key)]
        elif key in self.backups:
            lineage, log = f"restored:{key}", self.backups[key]
        else:
            self.cluster.report_breach(
                "f: KurrentDB started on data the model does not know", f"{unit}: {key}"
            )
            return
        self.cluster.load_data(unit, lineage, log)

    def truncation(
        self, unit: str, volume: pathlib.Path, config: Mapping[str, Any]
    ) -> Callable[[], str | None] | None:
        """What KurrentDB does first on a volume with a truncate checkpoint, or None.

        With `truncate.chk` not -1 the node truncates the log to it, resets it to -1 and
        exits ("Truncation successful. Shutting down.", ClusterVNode.cs l.1638-1663,
        v26.1.0), for Pebble to start it again; it refuses instead, and exits, when the
        writer is more than MaxTruncation ahead (TFChunkDbTruncator.cs l.33-42, reset at
        l.151-153). The log's bytes are not cut here: the synthetic data's chaser is its
        writer, so a restore truncates nothing.
        """
        truncate, writer = volume / "truncate.chk", volume / "writer.chk"
        if not truncate.exists() or not writer.exists() or _checkpoint(truncate) == -1:
            return None
        limit = int(config.get("MaxTruncation", DEFAULT_MAX_TRUNCATION))

        def truncate_and_exit() -> str:
            position, requested = _checkpoint(truncate), _checkpoint(writer) - _checkpoint(truncate)
            if 0 <= limit < requested:
                return f"MaxTruncation is set ({limit}) and truncate checkpoint is out of bounds"
            truncate.write_bytes(struct.pack("<q", -1))
            self.truncations.append((unit, position))
            return "Truncation successful. Shutting down."

        return truncate_and_exit

    def check_running(self, volumes: dict[str, pathlib.Path]) -> None:
        """Invariant (g): no running node's data changed since it started."""
        for unit, volume in volumes.items():
            if unit not in self.cluster.nodes or not self.cluster.process_running(unit):
                continue
            key = data_identity(volume)
            if unit in self.running and key != self.running[unit]:
                self.cluster.report_breach(
                    "g: data changed under a running node",
                    f"{unit}: {self.running[unit]} -> {key}",
                )


def _checkpoint(path: pathlib.Path) -> int:
    return int(struct.unpack("<q", path.read_bytes()[:8])[0])
