"""The restore state machine: the Juju leader's plan, each unit's report and next step.

Pure decisions (no Juju, no Pebble, no files): the charm reads the databags and the
volume's marker (`swap.recover`), asks this module what to do, does it, and writes back.

The Juju leader keeps one `RestorePlan` in the peer app databag (key ``restore``); every
unit publishes a `UnitRestoreReport` in its peer unit databag (same key). The plan lives
in the app databag, not in the leader's memory, so a new leader simply continues it. The
phases, and why each waits for what it waits for::

    stage -> swap -> start -> commit -> done (restored)
      |        |        |
      v        v        v
    abort    roll-back (any failure once live data may have moved aside)
      |        |
      v        v
    done (failed)

- ``stage``: every participant downloads the backup into a staging directory on its own
  volume and verifies every checksum (`engine.download_and_verify`, `swap.mark_staged`)
  while its node keeps serving the old data. Nothing live is touched, so a failure here
  only aborts: each unit throws its staging away.
- ``swap``: every node stops and moves its live data aside for the staged files
  (`swap.swap_in`). Every node is stopped before any starts again, so no cluster ever
  mixes nodes running the old history with nodes running the restored one: KurrentDB
  would make the nodes with the shorter epoch history truncate to the leader's, which
  loses data on one side.
- ``start``: the nodes start on the restored data; the first start truncates the log to
  the chaser checkpoint and exits (ClusterVNode.cs l.1638-1663, v26.1.0), and may need a
  raised ``MaxTruncation`` once (`start_max_truncation`).
- ``commit``: only once every participant started and the cluster serves does any unit
  delete its moved-aside data (`swap.commit`), the point of no return.
- ``roll-back``: any failure after a swap may have begun puts every unit back on its old
  data (`swap.roll_back`). When nodes may already run the restored data (the failure came
  in ``start``), every node stays stopped until every participant rolled back.

Rules that are easy to get wrong, and the answers here:

- Bad plan data is no plan: the leader then knows of no running restore. But a unit
  whose volume marker shows live data moved aside still finishes or rolls back from the
  marker alone: it deletes moved-aside data only when a readable plan says commit for
  that very restore id (`_plan_commits`), or, with no plan at all, a peer reports it
  committed that id (which it did only on the plan's word); otherwise it rolls back,
  and once back on its old data keeps its node stopped while a peer still reports
  swapped or started for that id (`_lost_plan_hold`), so no cluster mixes histories.
- A participant that departs cannot finish: before commit every unit rolls back; in
  commit the others go on (they may already have deleted their old data), and departed
  units are excused from the phases that only wait for clean-up.
- Timeouts (the caller's clock): staging `STAGE_TIMEOUT`, swap and start
  `SWAP_TIMEOUT`/`START_TIMEOUT`, an abort `ABORT_TIMEOUT` (nothing live is at stake).
  Roll-back and commit never time out: finishing either early would let nodes start on
  a mix of histories; their status names the units still awaited, and removing a stuck
  unit (`juju remove-unit`) excuses it.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from backup.manifest import Manifest, is_backup_id
from backup.swap import DEFAULT_MAX_TRUNCATION, Phase, Recovery, Truncation, validate_restore_id
from backup.swap import SwapError as _SwapError
from cluster import unit_list
from config import parse_version

DATABAG_KEY = "restore"
PLAN_FORMAT = 1
REPORT_FORMAT = 1

STAGE_TIMEOUT = 6 * 3600.0  # a download of a large backup at tens of MB/s
SWAP_TIMEOUT = 30 * 60.0  # renames only, plus a node stop each
START_TIMEOUT = 30 * 60.0  # truncation, index rebuild and the first election
ABORT_TIMEOUT = 30 * 60.0  # discarding staging deletes files only

_MAX_DATABAG_VALUE = 64 << 10
_MAX_REASON = 300
# An error code a unit publishes: a storage error code or one of the charm's own. No
# spaces, so an exception's text (which may quote a URL with a key in it) never fits.
_ERROR_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# A reason the leader writes is built from unit names, codes and this module's words.
_REASON = re.compile(f"[ -~]{{1,{_MAX_REASON}}}")
_MAX_POSITION = 1 << 62
_MAX_TIME = 1e11  # seconds since the epoch: year 5138, far beyond any real clock

# The charm's own error codes for steps that find the volume not as the plan expects.
NOT_STAGED = "not-staged"  # asked to swap, but the volume holds no verified backup
NOT_SWAPPED = "not-swapped"  # asked to start, but the live data is not the restored one
UNKNOWN_ERROR = "error"  # what an invalid code is published as
# Rolled back while the plan was lost, but a peer committed: the node holds old data in
# a cluster that now runs the restored data, and only a person can choose.
ROLLED_BACK_AFTER_COMMIT = "rolled-back-after-commit"


class PlanPhase(str, enum.Enum):
    """Where the leader's restore stands."""

    STAGE = "stage"
    SWAP = "swap"
    START = "start"
    COMMIT = "commit"
    DONE = "done"
    ABORT = "abort"  # a failure before any live data moved
    ROLL_BACK = "roll-back"  # a failure once live data may have moved aside


class Outcome(str, enum.Enum):
    """How a finished restore ended."""

    RESTORED = "restored"
    FAILED = "failed"


class UnitPhase(str, enum.Enum):
    """The last restore step a unit completed."""

    STAGED = "staged"
    SWAPPED = "swapped"
    STARTED = "started"
    COMMITTED = "committed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled-back"


# How far along the forward path each unit phase is: "at least swapped" counts started.
_PROGRESS = {
    UnitPhase.STAGED: 1,
    UnitPhase.SWAPPED: 2,
    UnitPhase.STARTED: 3,
    UnitPhase.COMMITTED: 4,
}
_GAVE_UP = (UnitPhase.ABORTED, UnitPhase.ROLLED_BACK)
# Marker phases in which the live data is (or may be) moved aside.
_MOVED_ASIDE = (Phase.SWAPPING, Phase.SWAPPED, Phase.ROLLING_BACK)
_RUNNING = (PlanPhase.STAGE, PlanPhase.SWAP, PlanPhase.START, PlanPhase.COMMIT)


@dataclass(frozen=True)
class RestorePlan:
    """The leader's restore, in the peer app databag under `DATABAG_KEY`."""

    restore_id: str
    backup_id: str
    participants: tuple[str, ...]  # every member when the restore was initiated
    phase: PlanPhase
    started_at: float  # seconds since the epoch, the initiating leader's clock
    phase_since: float  # when the current phase began (for its timeout)
    outcome: Outcome | None = None  # set once done
    reason: str = ""  # why it failed (or what was excused), for statuses and logs
    failed_in: PlanPhase | None = None  # the phase a failure came in
    fresh_backup_needed: bool = True
    finished_at: float | None = None

    @property
    def running(self) -> bool:
        """Whether the restore is under way (not done): backups, restores and resizes wait."""
        return self.phase is not PlanPhase.DONE

    def to_databag(self) -> dict[str, str]:
        """The app databag form: one JSON value."""
        body = {
            "format": PLAN_FORMAT,
            "restore-id": self.restore_id,
            "backup-id": self.backup_id,
            "participants": list(self.participants),
            "phase": self.phase.value,
            "started-at": self.started_at,
            "phase-since": self.phase_since,
            "outcome": self.outcome.value if self.outcome else None,
            "reason": self.reason,
            "failed-in": self.failed_in.value if self.failed_in else None,
            "fresh-backup-needed": self.fresh_backup_needed,
            "finished-at": self.finished_at,
        }
        return {DATABAG_KEY: json.dumps(body, separators=(",", ":"))}

    @classmethod
    def from_databag(cls, data: Mapping[str, Any]) -> RestorePlan | None:
        """The plan in an app databag, or None when there is none or it is unusable.

        Another revision's format, a hand edit or a truncated write is no plan at all:
        a half-understood plan could tell a unit to commit.
        """
        body = _json_object(data, PLAN_FORMAT)
        if body is None:
            return None
        try:
            plan = cls(
                restore_id=_restore_id(body.get("restore-id")),
                backup_id=_backup_id(body.get("backup-id")),
                participants=_participants(body.get("participants")),
                phase=PlanPhase(body.get("phase")),
                started_at=_time(body.get("started-at")),
                phase_since=_time(body.get("phase-since")),
                outcome=_optional(Outcome, body.get("outcome")),
                reason=_reason(body.get("reason")),
                failed_in=_optional(PlanPhase, body.get("failed-in")),
                fresh_backup_needed=_boolean(body.get("fresh-backup-needed")),
                finished_at=_optional(_time, body.get("finished-at")),
            )
        except (ValueError, TypeError):
            return None
        done = plan.phase is PlanPhase.DONE
        if done != (plan.outcome is not None) or done != (plan.finished_at is not None):
            return None  # an outcome and an end time belong to a finished restore only
        failing = plan.phase in (PlanPhase.ABORT, PlanPhase.ROLL_BACK) or (
            plan.outcome is Outcome.FAILED
        )
        if failing != (plan.failed_in is not None):
            return None
        return plan


@dataclass(frozen=True)
class UnitRestoreReport:
    """What a unit says about its part in a restore, in its unit databag under `DATABAG_KEY`."""

    restore_id: str
    completed: UnitPhase | None = None  # the last step this unit completed
    error: str | None = None  # a code (storage error code or this module's), never text
    truncation: Truncation | None = None  # what swap_in said the first start truncates

    @property
    def gave_up(self) -> bool:
        """Whether this unit failed, or already went back to its old data."""
        return self.error is not None or self.completed in _GAVE_UP

    def reached(self, phase: UnitPhase) -> bool:
        """Whether this unit got at least as far as ``phase`` on the forward path."""
        done = _PROGRESS.get(self.completed) if self.completed else None
        return done is not None and done >= _PROGRESS[phase] and self.error is None

    def to_databag(self) -> dict[str, str]:
        """The unit databag form: one JSON value."""
        body: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "restore-id": self.restore_id,
            "completed": self.completed.value if self.completed else None,
            "error": self.error,
        }
        if self.truncation is not None:
            body["writer"], body["chaser"] = self.truncation.writer, self.truncation.chaser
        return {DATABAG_KEY: json.dumps(body, separators=(",", ":"))}

    @classmethod
    def from_databag(cls, data: Mapping[str, Any]) -> UnitRestoreReport | None:
        """The report in a unit databag, or None when there is none or it is unusable."""
        body = _json_object(data, REPORT_FORMAT)
        if body is None:
            return None
        try:
            error = body.get("error")
            if error is not None and not (isinstance(error, str) and _ERROR_CODE.fullmatch(error)):
                raise ValueError("not an error code")
            truncation = None
            if "writer" in body or "chaser" in body:
                writer, chaser = _position(body.get("writer")), _position(body.get("chaser"))
                if chaser > writer:
                    raise ValueError("chaser ahead of writer")
                truncation = Truncation(writer, chaser)
            return cls(
                restore_id=_restore_id(body.get("restore-id")),
                completed=_optional(UnitPhase, body.get("completed")),
                error=error,
                truncation=truncation,
            )
        except (ValueError, TypeError):
            return None


# -- the leader ---------------------------------------------------------------------------


def advance(
    plan: RestorePlan | None,
    reports: Mapping[str, UnitRestoreReport | None],
    serving: Mapping[str, bool],
    now: float,
) -> RestorePlan | None:
    """The leader's next plan from every present unit's report (its own included).

    ``reports`` has a key for each unit still in the peer relation (None: no usable
    report); a participant without a key departed. ``serving`` says whose node serves
    in a cluster with one leader (e.g. its gossip role is Leader or Follower), as the
    leader's own fresh view. Returns the plan unchanged when nothing is due.
    """
    if plan is None or plan.phase is PlanPhase.DONE:
        return plan
    present = [u for u in plan.participants if u in reports]
    departed = [u for u in plan.participants if u not in reports]
    mine = {u: _own(plan, reports[u]) for u in present}
    gave_up = [u for u in present if (r := mine[u]) is not None and r.gave_up]
    failure = _failure_reason(plan, mine, gave_up, departed)

    def waiting(phase: UnitPhase) -> list[str]:
        return [u for u in present if not ((r := mine[u]) and r.reached(phase))]

    if plan.phase is PlanPhase.STAGE:
        if failure:
            return _fail(plan, PlanPhase.ABORT, failure, now)
        pending = waiting(UnitPhase.STAGED)
        if not pending:
            return _enter(plan, PlanPhase.SWAP, now)
        return _timed_out(plan, PlanPhase.ABORT, STAGE_TIMEOUT, pending, now)
    if plan.phase in (PlanPhase.SWAP, PlanPhase.START):
        if failure:
            return _fail(plan, PlanPhase.ROLL_BACK, failure, now)
        if plan.phase is PlanPhase.SWAP:
            pending = waiting(UnitPhase.SWAPPED)
            if not pending:
                return _enter(plan, PlanPhase.START, now)
            return _timed_out(plan, PlanPhase.ROLL_BACK, SWAP_TIMEOUT, pending, now)
        pending = waiting(UnitPhase.STARTED) or [u for u in present if not serving.get(u)]
        if not pending:
            return _enter(plan, PlanPhase.COMMIT, now)
        return _timed_out(plan, PlanPhase.ROLL_BACK, START_TIMEOUT, pending, now)
    if plan.phase is PlanPhase.COMMIT:
        if waiting(UnitPhase.COMMITTED):
            return plan
        excused = f"{_names(departed)} left before committing" if departed else ""
        return _finish(plan, Outcome.RESTORED, excused, now)
    # abort or roll-back: done once every present participant is back on its old data
    back: tuple[UnitPhase, ...] = (UnitPhase.ABORTED, UnitPhase.ROLLED_BACK)
    if plan.phase is PlanPhase.ROLL_BACK:
        back = (UnitPhase.ROLLED_BACK,)
    pending = [u for u in present if not ((r := mine[u]) and r.completed in back)]
    if not pending:
        return _finish(plan, Outcome.FAILED, plan.reason, now)
    if plan.phase is PlanPhase.ABORT and _elapsed(plan, now) > ABORT_TIMEOUT:
        # Aborting deletes staging only: a unit that has not yet will on a later hook
        # (its marker names a restore that is done, `unit_step`), its live data untouched.
        note = f"; {_names(pending)} had not discarded its staging"
        return _finish(plan, Outcome.FAILED, _bounded(plan.reason + note), now)
    return plan


def _failure_reason(
    plan: RestorePlan,
    mine: Mapping[str, UnitRestoreReport | None],
    gave_up: list[str],
    departed: list[str],
) -> str:
    """Why the running phase fails, or "" when nothing failed."""
    if gave_up:
        unit = gave_up[0]
        report = mine[unit]
        assert report is not None
        if report.error is not None:
            return f"{unit} failed during {plan.phase.value}: {report.error}"
        return f"{unit} went back to its old data during {plan.phase.value}"
    if departed:
        return f"{_names(departed)} left the relation during {plan.phase.value}"
    return ""


def _timed_out(
    plan: RestorePlan, failed: PlanPhase, bound: float, pending: list[str], now: float
) -> RestorePlan:
    if _elapsed(plan, now) <= bound:
        return plan
    reason = f"{plan.phase.value} did not finish within {_duration(bound)}: waiting for"
    return _fail(plan, failed, f"{reason} {_names(pending)}", now)


def _elapsed(plan: RestorePlan, now: float) -> float:
    # A clock that went back (a new leader's, a few seconds off) never shortens a phase.
    return max(0.0, now - plan.phase_since)


def _enter(plan: RestorePlan, phase: PlanPhase, now: float) -> RestorePlan:
    return dataclasses.replace(plan, phase=phase, phase_since=now)


def _fail(plan: RestorePlan, phase: PlanPhase, reason: str, now: float) -> RestorePlan:
    return dataclasses.replace(
        plan, phase=phase, phase_since=now, reason=_bounded(reason), failed_in=plan.phase
    )


def _finish(plan: RestorePlan, outcome: Outcome, reason: str, now: float) -> RestorePlan:
    return dataclasses.replace(
        plan,
        phase=PlanPhase.DONE,
        phase_since=now,
        outcome=outcome,
        reason=_bounded(reason),
        finished_at=now,
    )


def _own(plan: RestorePlan, report: UnitRestoreReport | None) -> UnitRestoreReport | None:
    """The report if it is about this restore (one about an earlier restore says nothing)."""
    return report if report is not None and report.restore_id == plan.restore_id else None


# -- each unit ----------------------------------------------------------------------------


class Action(str, enum.Enum):
    """What a unit does in this hook for the restore."""

    NOTHING = "nothing"
    STAGE = "stage"  # swap.prepare_staging, engine.download_and_verify, swap.mark_staged
    SWAP = "swap"  # stop the node, swap.swap_in (again: it only re-reads the checkpoints)
    START = "start"  # start the node on the restored data (`Step.truncation`)
    COMMIT = "commit"  # swap.commit: delete the moved-aside data
    ABORT = "abort"  # swap.discard_staging
    ROLL_BACK = "roll-back"  # swap.roll_back, swap.discard_staging (see holds_node_stopped)
    REPORT_ONLY = "report-only"  # the volume is already there: publish the report


@dataclass(frozen=True)
class Step:
    """What this unit must do now, and what it may not do meanwhile.

    ``holds_node_stopped``: KurrentDB must not run (stop it if it does) and nothing may
    start or restart it, so a node never runs on half-swapped data, nor on old data while
    other nodes may run restored data (or the other way round). ``pauses_schedule``: no
    rolling restart, resize or backup while the restore runs. After the action succeeds
    the charm publishes `succeeded`, after it fails `failed` (with a code, never text).
    """

    action: Action
    restore_id: str | None = None  # the restore the action is about (a marker's own id)
    report: UnitPhase | None = None  # what this unit completes with the action
    error: str | None = None  # REPORT_ONLY: the failure to publish
    holds_node_stopped: bool = False
    pauses_schedule: bool = False
    truncation: Truncation | None = None  # START: what the first start truncates
    previous: UnitRestoreReport | None = dataclasses.field(default=None, compare=False)

    def succeeded(self, truncation: Truncation | None = None) -> UnitRestoreReport | None:
        """The report to publish once the action succeeded (None: leave the report as is)."""
        if self.restore_id is None or (self.report is None and self.error is None):
            return None
        if self.error is not None:
            return self.failed(self.error)
        if truncation is None and self.report in (UnitPhase.SWAPPED, UnitPhase.STARTED):
            truncation = self.truncation or (self.previous.truncation if self.previous else None)
        return UnitRestoreReport(self.restore_id, self.report, None, truncation)

    def failed(self, code: str) -> UnitRestoreReport | None:
        """The report to publish when the action failed with ``code`` (kept only if a code)."""
        if self.restore_id is None:
            return None
        if not (isinstance(code, str) and _ERROR_CODE.fullmatch(code)):
            code = UNKNOWN_ERROR  # never publish what may be an exception's text
        previous = self.previous if _same_id(self.previous, self.restore_id) else None
        return UnitRestoreReport(
            self.restore_id,
            previous.completed if previous else None,
            code,
            previous.truncation if previous else None,
        )


def unit_step(
    plan: RestorePlan | None,
    unit: str,
    report: UnitRestoreReport | None,
    marker: Recovery | None,
    peers: Mapping[str, UnitRestoreReport | None] | None = None,
) -> Step:
    """What ``unit`` must do now, from the plan, its own report and its volume's marker.

    ``marker`` is what `swap.recover` returned (it finished any half-done step first);
    None when no restore is on the volume. ``peers`` holds the other units' reports; they
    matter only when the plan is gone (`_orphan`, `_lost_plan_hold`). ``plan`` is None
    only when the peer app databag was read and holds no usable plan: a hook that cannot
    read the peer relation at all must not call this (the volume's moved-aside data
    would be rolled back on a guess). A marker that cannot be read is the charm's to
    report: the node stays stopped and the status says to check the volume.
    """
    peers = peers or {}
    volume = marker if marker is not None and marker.phase is not None else None
    if plan is None or not plan.running:
        if volume is not None:
            return _orphan(plan, volume, report, peers)
        return _lost_plan_hold(plan, report, peers) or Step(Action.NOTHING)
    if unit not in plan.participants:
        # A unit that joined during the restore has no data to restore; it starts once
        # the restore is done, as any new unit does (the cluster schedule admits it).
        if volume is not None and volume.restore_id != plan.restore_id:
            return _held(_orphan(plan, volume, report, peers))
        return Step(Action.NOTHING, holds_node_stopped=True, pauses_schedule=True)
    mine = _own(plan, report)
    if volume is not None and volume.restore_id != plan.restore_id:
        # Another restore's leftovers go first (staging refuses while they are there);
        # meanwhile the node obeys what the running plan asks of a unit with no marker.
        orphan = _orphan(plan, volume, report, peers)
        if _participant_step(plan, mine, None).holds_node_stopped:
            return _held(orphan)
        return orphan
    return _participant_step(plan, mine, volume.phase if volume is not None else None)


def _held(step: Step) -> Step:
    return dataclasses.replace(step, holds_node_stopped=True, pauses_schedule=True)


def _participant_step(
    plan: RestorePlan, mine: UnitRestoreReport | None, phase: Phase | None
) -> Step:
    rid = plan.restore_id
    moved_aside = phase in _MOVED_ASIDE

    def step(action: Action, done: UnitPhase | None = None, **kw: Any) -> Step:
        published = mine is not None and mine.completed is done and mine.error is None
        if action is Action.REPORT_ONLY and published:
            action, done = Action.NOTHING, None
        return Step(action, rid, done, previous=mine, pauses_schedule=True, **kw)

    def report_error(code: str, **kw: Any) -> Step:
        if mine is not None and mine.error is not None:
            return step(Action.NOTHING, **kw)  # already said; the leader decides
        return step(Action.REPORT_ONLY, error=code, **kw)

    if plan.phase is PlanPhase.STAGE:
        if mine is not None and mine.gave_up:
            return step(Action.NOTHING, holds_node_stopped=moved_aside)
        if phase in (None, Phase.STAGING):
            return step(Action.STAGE, UnitPhase.STAGED)
        if phase is Phase.STAGED:
            return step(Action.REPORT_ONLY, UnitPhase.STAGED)
        if phase is Phase.ROLLED_BACK:
            return step(Action.REPORT_ONLY, UnitPhase.ROLLED_BACK)
        # Live data moved aside before the plan said swap: only a roll back is safe.
        return step(Action.ROLL_BACK, UnitPhase.ROLLED_BACK, holds_node_stopped=True)
    if plan.phase in (PlanPhase.SWAP, PlanPhase.START) and mine is not None and mine.gave_up:
        return step(Action.NOTHING, holds_node_stopped=True)  # the leader rolls back
    if plan.phase is PlanPhase.SWAP:
        if phase in (Phase.STAGED, Phase.SWAPPING) or (
            phase is Phase.SWAPPED and not (mine and mine.reached(UnitPhase.SWAPPED))
        ):
            return step(Action.SWAP, UnitPhase.SWAPPED, holds_node_stopped=True)
        if phase is Phase.SWAPPED:
            return step(Action.NOTHING, holds_node_stopped=True)
        return _off_path(step, report_error, phase, NOT_STAGED)
    if plan.phase is PlanPhase.START:
        if phase is Phase.SWAPPED:
            if mine is not None and mine.reached(UnitPhase.STARTED):
                return step(Action.NOTHING)
            if mine is None or mine.truncation is None:
                # The report with the truncation facts is gone: swap_in says them again.
                return step(Action.SWAP, UnitPhase.SWAPPED, holds_node_stopped=True)
            return step(Action.START, UnitPhase.STARTED, truncation=mine.truncation)
        return _off_path(step, report_error, phase, NOT_SWAPPED)
    if plan.phase is PlanPhase.COMMIT:
        if phase is Phase.SWAPPED:
            return step(Action.COMMIT, UnitPhase.COMMITTED)
        if phase is None:
            return step(Action.REPORT_ONLY, UnitPhase.COMMITTED)
        # Old data back in place while the others committed: a person must look.
        return report_error(NOT_SWAPPED, holds_node_stopped=True)
    if plan.phase is PlanPhase.ABORT:
        if moved_aside:
            return step(Action.ROLL_BACK, UnitPhase.ROLLED_BACK, holds_node_stopped=True)
        if phase is None:
            return step(Action.REPORT_ONLY, UnitPhase.ABORTED)
        return step(Action.ABORT, UnitPhase.ABORTED)
    # roll-back: if nodes may run the restored data, none starts on old data until all
    # rolled back (then the plan is done); otherwise only the moved-aside data holds it.
    hold = moved_aside or plan.failed_in is PlanPhase.START
    if phase is None:
        return step(Action.REPORT_ONLY, UnitPhase.ROLLED_BACK, holds_node_stopped=hold)
    return step(Action.ROLL_BACK, UnitPhase.ROLLED_BACK, holds_node_stopped=hold)


def _off_path(step: Any, report_error: Any, phase: Phase | None, code: str) -> Step:
    """A swap or start step on a volume that is not where the plan expects."""
    if phase is Phase.ROLLED_BACK:
        return step(Action.REPORT_ONLY, UnitPhase.ROLLED_BACK, holds_node_stopped=True)
    if phase is Phase.ROLLING_BACK:
        return step(Action.ROLL_BACK, UnitPhase.ROLLED_BACK, holds_node_stopped=True)
    # No verified backup (or no restored data) here: the leader must roll everyone back,
    # and this node must not join the others meanwhile.
    return report_error(code, holds_node_stopped=True)


def _orphan(
    plan: RestorePlan | None,
    volume: Recovery,
    report: UnitRestoreReport | None,
    peers: Mapping[str, UnitRestoreReport | None],
) -> Step:
    """A marker no running step of the plan accounts for: finish it safely.

    Moved-aside data is deleted only when a plan commits that very restore: the plan in
    the databag, or a lost one a peer's report proves (a unit reports committed only
    after the plan said commit). Otherwise it is rolled back. A staging or a rolled-back
    restore is simply discarded.
    """
    rid = volume.restore_id
    previous = report if _same_id(report, rid) else None
    running = plan is not None and plan.running
    if volume.phase in _MOVED_ASIDE:
        if _plan_commits(plan, rid) or (plan is None and _peer_reached(peers, rid, _COMMITTED)):
            return Step(Action.COMMIT, rid, UnitPhase.COMMITTED, previous=previous)
        return Step(
            Action.ROLL_BACK,
            rid,
            UnitPhase.ROLLED_BACK,
            holds_node_stopped=True,
            pauses_schedule=True,
            previous=previous,
        )
    # A rolled-back volume keeps saying so (`_lost_plan_hold` reads it) while discarded.
    done = UnitPhase.ROLLED_BACK if volume.phase is Phase.ROLLED_BACK else UnitPhase.ABORTED
    step = Step(Action.ABORT, rid, done, pauses_schedule=running, previous=previous)
    return (
        _held(step)
        if done is UnitPhase.ROLLED_BACK
        and _lost_plan_hold(plan, UnitRestoreReport(rid, done), peers)
        else step
    )


def _lost_plan_hold(
    plan: RestorePlan | None,
    report: UnitRestoreReport | None,
    peers: Mapping[str, UnitRestoreReport | None],
) -> Step | None:
    """Keep a node that rolled back without a plan stopped while peers may run restored data.

    With the plan gone no leader coordinates, so the peers' reports must: a node back on
    its old data starts only once no peer reports swapped or started for that restore
    (each rolls back on its own). If a peer committed, the cluster now holds the restored
    data and this node the old: a person must decide, so it stays stopped and says so.
    """
    if report is None or report.completed is not UnitPhase.ROLLED_BACK:
        return None
    rid = report.restore_id
    if plan is not None and plan.restore_id == rid:
        return None  # a finished plan for it: every participant reported the end
    if _peer_reached(peers, rid, _COMMITTED):
        error = report.error == ROLLED_BACK_AFTER_COMMIT
        action = Action.NOTHING if error else Action.REPORT_ONLY
        return Step(
            action,
            rid,
            error=None if error else ROLLED_BACK_AFTER_COMMIT,
            holds_node_stopped=True,
            pauses_schedule=True,
            previous=report,
        )
    if _peer_reached(peers, rid, (UnitPhase.SWAPPED, UnitPhase.STARTED)):
        return Step(Action.NOTHING, rid, holds_node_stopped=True, pauses_schedule=True)
    return None


_COMMITTED = (UnitPhase.COMMITTED,)


def _peer_reached(
    peers: Mapping[str, UnitRestoreReport | None], restore_id: str, phases: tuple[UnitPhase, ...]
) -> bool:
    return any(r is not None and r.restore_id == restore_id and r.completed in phases
               for r in peers.values())  # fmt: skip


def _plan_commits(plan: RestorePlan | None, restore_id: str) -> bool:
    """Whether a readable plan says the restore ``restore_id`` keeps the restored data."""
    return (
        plan is not None
        and plan.restore_id == restore_id
        and (plan.phase is PlanPhase.COMMIT or plan.outcome is Outcome.RESTORED)
    )


def _same_id(report: UnitRestoreReport | None, restore_id: str) -> bool:
    return report is not None and report.restore_id == restore_id


def start_max_truncation(
    truncation: Truncation | None, configured: int = DEFAULT_MAX_TRUNCATION
) -> int | None:
    """The MaxTruncation the first start after a swap needs, or None to keep ``configured``.

    KurrentDB refuses to start when `writer - truncate` exceeds MaxTruncation
    (TFChunkDbTruncator.cs l.33-42, v26.1.0) and resets `truncate.chk` to -1 once it has
    truncated (l.151-153), so the raised limit matters for that first start only: later
    starts find nothing to truncate. The value is exactly what this truncation needs, so
    a wrong checkpoint cannot make it cut more.
    """
    if truncation is None or not truncation.needs_raised_limit(configured):
        return None
    return truncation.requested


# -- the restore action ------------------------------------------------------------------


@dataclass(frozen=True)
class BackupFacts:
    """What the restore action needs to know of a complete backup (its manifest)."""

    backup_id: str
    kurrentdb_version: str
    bytes_total: int

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> BackupFacts:
        """The facts of a manifest `engine.load_manifest` returned (so, a complete backup)."""
        return cls(manifest.backup_id, manifest.source.kurrentdb_version, manifest.bytes_total)


@dataclass(frozen=True)
class Refusal:
    """Why the restore action refuses; the message says what to do."""

    message: str


def restore_id_for(now: float, token: str) -> str:
    """A restore id: the UTC time to the second, then the caller's random ``token``."""
    moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return f"restore-{moment:%Y%m%dT%H%M%SZ}-{token}"


def initiate(
    backup: BackupFacts,
    members: Collection[str],
    present: Collection[str],
    image_version: str | None,
    running_restore: RestorePlan | None,
    running_backup: str | None,
    now: float,
    token: str,
    reports: Mapping[str, UnitRestoreReport | None] | None = None,
) -> RestorePlan | Refusal:
    """The restore action's checks: the new plan, or why not.

    ``members`` is the cluster plan's membership (every one of them takes part),
    ``present`` the units in the peer relation, ``running_backup`` the unit whose backup
    runs (None: none), ``reports`` the units' restore reports: one still swapped or
    started (a lost plan's restore, still rolling back) also refuses.

    Every restore sets `fresh_backup_needed`: it replaces every node, any node may have
    been a backup source (create-backup runs on any unit), and KurrentDB requires a full
    backup after restoring a backup source (docs/server/operations/backup.md, v26.1.0);
    a new cluster has no backup of its own yet either.
    """
    if running_restore is not None and running_restore.running:
        return Refusal(
            f"restore {running_restore.restore_id} is still running"
            f" ({running_restore.phase.value}); wait for it to finish"
        )
    unfinished = [
        u
        for u, r in (reports or {}).items()
        if r is not None and r.completed in (UnitPhase.SWAPPED, UnitPhase.STARTED)
    ]
    if unfinished and (running_restore is None or running_restore.running):
        return Refusal(
            f"{_names(unfinished)} has not finished an earlier restore; wait for it to roll back"
        )
    if running_backup is not None:
        return Refusal(f"a backup is running on {running_backup}; wait for it to finish")
    if not is_backup_id(backup.backup_id):
        return Refusal(f"{backup.backup_id!r} is not a backup id; see list-backups")
    backup_major, image_major = _major(backup.kurrentdb_version), _major(image_version)
    if backup_major is None:
        return Refusal(f"backup {backup.backup_id} names no KurrentDB version it was written by")
    if image_major is None:
        return Refusal("the image's KurrentDB version is not known yet; try again shortly")
    if backup_major > image_major:
        return Refusal(
            f"backup {backup.backup_id} was written by KurrentDB {backup.kurrentdb_version},"
            f" newer than this image's {image_version}: refresh to a {backup_major}.x image first"
        )
    participants = unit_list(json.dumps(list(members)))
    if not participants:
        return Refusal("the cluster has no members yet; wait for the units to start")
    missing = [u for u in participants if u not in present]
    if missing:
        return Refusal(
            f"{_names(missing)} is a member but not in the relation; wait for the units to settle"
        )
    if not math.isfinite(now) or not 0 <= now < _MAX_TIME:
        return Refusal("the clock is wrong")
    try:
        restore_id = validate_restore_id(restore_id_for(now, token))
    except _SwapError:
        return Refusal("cannot make a restore id from this token")
    return RestorePlan(
        restore_id=restore_id,
        backup_id=backup.backup_id,
        participants=participants,
        phase=PlanPhase.STAGE,
        started_at=now,
        phase_since=now,
    )


def fresh_backup_taken(plan: RestorePlan | None, backup_started_at: float) -> RestorePlan | None:
    """The plan without its fresh-backup request, once a backup began after it restored."""
    if (
        plan is None
        or plan.outcome is not Outcome.RESTORED
        or not plan.fresh_backup_needed
        or plan.finished_at is None
        or backup_started_at < plan.finished_at
    ):
        return plan
    return dataclasses.replace(plan, fresh_backup_needed=False)


# -- strict parsing -----------------------------------------------------------------------


def _json_object(data: Mapping[str, Any], version: int) -> dict[str, Any] | None:
    try:
        raw = data.get(DATABAG_KEY)
        if not isinstance(raw, str) or not raw or len(raw) > _MAX_DATABAG_VALUE:
            return None
        body = json.loads(raw)
    except (ValueError, RecursionError, AttributeError, TypeError):
        return None
    if not isinstance(body, dict) or body.get("format") != version:
        return None
    if isinstance(body.get("format"), bool):
        return None  # True == 1 in Python; a format is a number
    return body


def _restore_id(value: Any) -> str:
    try:
        return validate_restore_id(value)
    except _SwapError:
        raise ValueError("not a restore id") from None


def _backup_id(value: Any) -> str:
    if not isinstance(value, str) or not is_backup_id(value):
        raise ValueError("not a backup id")
    return value


def _participants(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("not a list")
    units = unit_list(json.dumps(value))
    if not units or len(units) != len(value):
        raise ValueError("not a list of distinct unit names")
    return units


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    if not math.isfinite(value) or not 0 <= value < _MAX_TIME:
        raise ValueError("not a time")
    return float(value)


def _position(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_POSITION:
        raise ValueError("not a log position")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")
    return value


def _reason(value: Any) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not _REASON.fullmatch(value):
        raise ValueError("not a short printable reason")
    return value


def _optional(parse: Any, value: Any) -> Any:
    return None if value is None else parse(value)


def _major(version: Any) -> int | None:
    if not isinstance(version, str) or len(version) > 64:
        return None
    parsed = parse_version(version)
    return parsed[0] if parsed else None


def _bounded(reason: str) -> str:
    printable = "".join(c if " " <= c <= "~" else "?" for c in reason)
    return printable if len(printable) <= _MAX_REASON else printable[: _MAX_REASON - 3] + "..."


def _names(units: Collection[str]) -> str:
    return ", ".join(units)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"
