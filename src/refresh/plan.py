"""The refresh's decisions, pure: which units run what, and which pod Kubernetes may replace.

`juju refresh` (a new charm, a new `kurrentdb-image`, a model upgrade) changes the app's
StatefulSet: Kubernetes gives it a new controller revision and replaces the pods from the
highest ordinal down, but only those at or above `spec.updateStrategy.rollingUpdate.partition`.
The leader moves that partition down one unit at a time (`assess`):

- units refresh highest number first (the order Kubernetes uses; it cannot be changed);
- the next unit may go only when every refreshed unit serves (a Follower or the Leader,
  caught up), every other unit serves too (never two nodes down at once), the cluster is not
  busy with anything else (a restart grant, a restore), the user's `pause-after-unit-refresh`
  lets it, and its own node does not lead (it is asked to resign first);
- once a unit was let go, it stays let go until its new pod is up: Kubernetes may already be
  replacing it, and a partition raised then would strand the refresh;
- a rollback (the StatefulSet back on the revision the refresh started from) skips the pause
  but not the health checks: it goes one unit at a time, as fast as they come back.

Unit numbers are pod ordinals (a sidecar app's unit `kurrentdb/2` runs in pod `kurrentdb-2`).
Everything read from databags is untrusted: an unreadable record is an empty one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster import _UNIT_NAME, unit_number

PAUSE_VALUES = ("all", "first", "none")
MOST_CAUTIOUS_PAUSE = "all"
RECORD_KEY = "refresh"  # the leader's record, in the peer app databag
_TEXT_LIMIT = 300  # characters of any string read back from the record


@dataclass(frozen=True)
class UnitFacts:
    """What one unit says about itself (its peer report and refresh keys)."""

    revision: str | None  # its pod's controller revision; None until it could tell
    version: str | None  # the KurrentDB version its image holds
    serving: bool  # a serving role and caught up
    leading: bool  # its node is the KurrentDB leader (or resigning)
    role: str | None = None


@dataclass(frozen=True)
class Original:
    """What the app ran before the refresh: the rollback target."""

    revision: str  # the pods' controller revision
    charm: str = ""  # the charm revision, for the rollback command ("" unknown)
    image: str = ""  # the workload image, for the rollback command ("" unknown)
    kurrentdb: str = ""  # the KurrentDB version ("" unknown)


@dataclass(frozen=True)
class RefreshRecord:
    """The leader's record of the refresh, in the peer app databag."""

    original: Original | None = None
    data_version: str | None = None  # the newest KurrentDB every node has run on this data
    allowed: str | None = None  # the unit Kubernetes was last let replace
    resumed: int = 0  # how many units were refreshed when resume-refresh last ran
    health_waived: int = -1  # likewise, when it ran with check-health-of-refreshed-units=false
    prepared: bool = False  # pre-refresh-check passed since the last refresh
    target: str | None = None  # the revision a refresh under way moves the pods to
    # The unit a refresh starting now replaces first (the highest): the one that runs the
    # pre-refresh checks again once its pod is new. Kept while a refresh runs, so a unit
    # added meanwhile, higher but new, is not taken for it.
    first: str | None = None

    def to_json(self) -> str:
        """The databag form."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> RefreshRecord:
        """The record a databag holds; anything unusable reads as absent."""
        try:
            raw = json.loads(text or "{}")
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        original = raw.get("original")
        return cls(
            original=_original(original) if isinstance(original, dict) else None,
            data_version=_text(raw.get("data_version")),
            allowed=_unit_name(raw.get("allowed")),
            resumed=_count(raw.get("resumed"), 0),
            health_waived=_count(raw.get("health_waived"), -1),
            prepared=raw.get("prepared") is True,
            target=_text(raw.get("target")),
            first=_unit_name(raw.get("first")),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= _TEXT_LIMIT else None


def _unit_name(value: Any) -> str | None:
    text = _text(value)
    return text if text is not None and _UNIT_NAME.match(text) else None


def _count(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= 10_000:
        return default
    return value


def _original(raw: dict[str, Any]) -> Original | None:
    revision = _text(raw.get("revision"))
    if revision is None:
        return None
    return Original(
        revision=revision,
        charm=_text(raw.get("charm")) or "",
        image=_text(raw.get("image")) or "",
        kurrentdb=_text(raw.get("kurrentdb")) or "",
    )


@dataclass(frozen=True)
class StatefulSetView:
    """What the StatefulSet says: the revision pods are moving to, and the partition."""

    update_revision: str
    partition: int


@dataclass(frozen=True)
class Progress:
    """Where a refresh stands, and what the leader does about it."""

    in_progress: bool
    refreshed: tuple[str, ...] = ()  # highest number first
    pending: tuple[str, ...] = ()  # not refreshed yet, highest number first
    partition: int = 0
    rollback: bool = False
    resign: str | None = None  # a unit whose node must resign before its pod may go
    paused: bool = False  # waiting for resume-refresh
    waiting: str | None = None  # why the next unit may not go yet
    record: RefreshRecord = RefreshRecord()

    @property
    def next_unit(self) -> str | None:
        """The unit whose pod goes next."""
        return self.pending[0] if self.pending else None


def highest_first(units: Mapping[str, Any]) -> list[str]:
    """Unit names in refresh order: Kubernetes replaces the highest ordinal first."""
    return sorted(units, key=unit_number, reverse=True)


def maybe_in_progress(record: RefreshRecord, units: Mapping[str, UnitFacts]) -> bool:
    """Whether a refresh may be under way, from peer data alone (no Kubernetes call).

    False when every unit reports the revision the record holds and nothing is let go:
    the common case, where a hook must cost nothing more.
    """
    revisions = {facts.revision for facts in units.values()}
    if len(revisions) > 1 or record.allowed is not None:
        return True
    if record.target is not None and revisions != {record.target}:
        return True  # every refreshed unit may have been removed since
    return record.original is not None and revisions != {record.original.revision}


def steady_record(
    record: RefreshRecord, units: Mapping[str, UnitFacts], charm: str, image: str
) -> RefreshRecord:
    """With no refresh under way: what a refresh starting now would roll back to.

    The data counts as written by a version once every unit runs it. A pre-refresh check
    holds until the revision changes (the refresh it prepared has then run).
    """
    from refresh.versions import newest

    revisions = {facts.revision for facts in units.values()}
    versions = {facts.version for facts in units.values()}
    if len(revisions) != 1 or None in revisions:
        return record
    (revision,) = revisions
    version = next(iter(versions)) if len(versions) == 1 else None
    data_version = record.data_version
    if version is not None:
        data_version = newest(record.data_version, version)
    assert revision is not None
    same = record.original is not None and record.original.revision == revision
    return RefreshRecord(
        original=Original(revision, charm=charm, image=image, kurrentdb=version or ""),
        data_version=data_version,
        prepared=record.prepared and same,
        first=highest_first(units)[0] if units else None,
    )


def effective_pause(value: str) -> str:
    """The pause setting in force: an unknown value counts as the most cautious one."""
    return value if value in PAUSE_VALUES else MOST_CAUTIOUS_PAUSE


def assess(
    record: RefreshRecord,
    view: StatefulSetView,
    units: Mapping[str, UnitFacts],
    pause: str,
    busy: str | None = None,
) -> Progress:
    """The leader's view of the refresh and its next partition.

    ``units`` are the units in the relation (the leader's own included), ``pause`` the
    `pause-after-unit-refresh` value, ``busy`` why the cluster may not lose a node now for
    another reason (a restart grant held, a restore), or None.
    """
    order = highest_first(units)
    refreshed = tuple(u for u in order if units[u].revision == view.update_revision)
    pending = tuple(u for u in order if u not in refreshed)
    if not pending:
        return Progress(in_progress=False, refreshed=refreshed, partition=0, record=record)
    rollback = record.original is not None and view.update_revision == record.original.revision
    following = pending[0]
    record = dataclasses.replace(record, target=view.update_revision)
    # Not letting the next unit go: hold the partition just above it once a unit above it
    # is refreshed; before that the next unit is the highest, which Kubernetes replaces
    # first whatever the partition (as it does as soon as the StatefulSet changes).
    above = any(unit_number(u) > unit_number(following) for u in refreshed)
    hold = unit_number(following) + 1 if above else unit_number(following)
    progress = Progress(
        in_progress=True,
        refreshed=refreshed,
        pending=pending,
        rollback=rollback,
        record=record,
        partition=hold,
    )
    if record.allowed == following:
        return dataclasses.replace(
            progress,
            partition=unit_number(following),
            waiting=f"Kubernetes is replacing the pod of {following}",
        )
    waiting, resign, paused = _why_not(record, units, pause, busy, refreshed, pending, rollback)
    if waiting is not None:
        return dataclasses.replace(progress, waiting=waiting, resign=resign, paused=paused)
    return dataclasses.replace(
        progress,
        partition=unit_number(following),
        record=dataclasses.replace(record, allowed=following),
        waiting=f"Kubernetes is replacing the pod of {following}",
    )


def _why_not(
    record: RefreshRecord,
    units: Mapping[str, UnitFacts],
    pause: str,
    busy: str | None,
    refreshed: tuple[str, ...],
    pending: tuple[str, ...],
    rollback: bool,
) -> tuple[str | None, str | None, bool]:
    """Why the next unit may not go yet (None if it may), whom to ask to resign, paused."""
    following = pending[0]
    if busy is not None:
        return f"{busy}", None, False
    if record.health_waived != len(refreshed):
        for unit in refreshed:
            if not units[unit].serving:
                why = f"{unit} does not serve since its refresh ({_role(units[unit])})"
                return why, None, False
    for unit in pending:
        if not units[unit].serving:
            return f"{unit} does not serve ({_role(units[unit])})", None, False
    if not rollback and _paused(effective_pause(pause), record, len(refreshed)):
        return "paused until resume-refresh", None, True
    if units[following].leading:
        return f"{following} leads KurrentDB; it resigns before its pod goes", following, False
    return None, None, False


def _paused(pause: str, record: RefreshRecord, refreshed: int) -> bool:
    if pause == "none" or refreshed == 0:
        return False
    if pause == "first":
        return record.resumed == 0
    return record.resumed < refreshed  # all: a resume for every unit


def _role(facts: UnitFacts) -> str:
    if facts.role is None:
        return "not running"
    return f"{facts.role}, not caught up" if facts.role in ("Follower", "Leader") else facts.role


def resumed(record: RefreshRecord, progress: Progress, *, check_health: bool) -> RefreshRecord:
    """The record after resume-refresh: the paused refresh may go on."""
    count = len(progress.refreshed)
    return dataclasses.replace(
        record, resumed=count, health_waived=record.health_waived if check_health else count
    )
